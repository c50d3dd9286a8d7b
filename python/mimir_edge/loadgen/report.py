"""What a load run measured: :class:`LoadReport`, its JSON document and its table."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from mimir_edge import WriteStats
from mimir_edge.loadgen.config import LoadConfig

__all__ = [
    "JSON_VERSION",
    "Counts",
    "LatencyHistogram",
    "LoadReport",
    "TenantReport",
    "format_table",
]

#: Version of the ``--json`` document; bumped only if a key changes meaning or goes away.
JSON_VERSION = 1

# Latencies go into log-spaced buckets 2 % wide (1 µs to ~1000 s in about 1000 buckets): a
# run of any length keeps constant memory, and a percentile is within 1 % of the truth.
_GROWTH = 1.02
_INV_LOG = 1.0 / math.log(_GROWTH)
_MIN_S = 1e-6
_BUCKETS = int(math.log(1e3 / _MIN_S) * _INV_LOG) + 2


class LatencyHistogram:
    """Request latencies in seconds; one per worker (no locking), merged at the end."""

    __slots__ = ("count", "counts", "max", "total")

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def add(self, seconds: float) -> None:
        i = int(math.log(seconds / _MIN_S) * _INV_LOG) + 1 if seconds > _MIN_S else 0
        self.counts[min(i, _BUCKETS - 1)] += 1
        self.count += 1
        self.total += seconds
        if seconds > self.max:
            self.max = seconds

    def merge(self, others: Iterable[LatencyHistogram]) -> None:
        for o in others:
            for i, c in enumerate(o.counts):
                if c:
                    self.counts[i] += c
            self.count += o.count
            self.total += o.total
            self.max = max(self.max, o.max)

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q <= 1) in seconds; 0.0 without any latency."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(q * self.count))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                if i == 0:
                    return min(_MIN_S, self.max)
                # Geometric middle of the bucket; never above the largest latency seen.
                middle: float = _MIN_S * _GROWTH ** (i - 0.5)
                return min(middle, self.max)
        return self.max

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else 0.0


@dataclass(frozen=True, slots=True)
class Counts:
    """What a set of requests carried, as :func:`mimir_edge.scan_remote_write` counts it."""

    samples: int = 0
    histograms: int = 0
    exemplars: int = 0
    metadata: int = 0
    #: samples + histograms + exemplars + metadata: what Mimir's ingestion limit charges.
    ingested: int = 0

    @staticmethod
    def of(stats: WriteStats, times: int = 1) -> Counts:
        return Counts(
            stats.samples * times,
            stats.histograms * times,
            stats.exemplars * times,
            stats.metadata * times,
            stats.ingested * times,
        )

    def __add__(self, o: Counts) -> Counts:
        return Counts(
            self.samples + o.samples,
            self.histograms + o.histograms,
            self.exemplars + o.exemplars,
            self.metadata + o.metadata,
            self.ingested + o.ingested,
        )

    def as_dict(self) -> dict[str, int]:
        return {
            "samples": self.samples,
            "histograms": self.histograms,
            "exemplars": self.exemplars,
            "metadata": self.metadata,
            "ingested": self.ingested,
        }


@dataclass(frozen=True, slots=True)
class TenantReport:
    requests: int = 0
    status: Mapping[int, int] = field(default_factory=dict)
    connection_errors: int = 0
    sent: Counts = Counts()
    accepted: Counts = Counts()


@dataclass(frozen=True, slots=True)
class LoadReport:
    """The outcome of :func:`mimir_edge.loadgen.run`.

    ``requests`` counts every send attempted; each ends either with an HTTP answer (counted in
    ``status`` by code) or as a connection error (counted in ``errors`` by reason). ``sent``
    counts what the answered requests carried (the server got those bodies); ``accepted`` the
    part answered 2xx. ``skipped`` (open loop only) counts sends that came due while every
    worker was busy. Latencies are of answered requests, send to end of answer.
    """

    config: LoadConfig
    elapsed_s: float
    interrupted: bool
    requests: int
    skipped: int
    status: Mapping[int, int]
    errors: Mapping[str, int]
    sent: Counts
    accepted: Counts
    bytes_sent: int
    latency: LatencyHistogram
    tenants: Mapping[str, TenantReport]
    #: The start of one response body per non-2xx status (why requests were refused).
    examples: Mapping[int, str]

    @property
    def answered(self) -> int:
        return sum(self.status.values())

    @property
    def ok(self) -> int:
        return sum(n for code, n in self.status.items() if 200 <= code < 300)

    @property
    def connection_errors(self) -> int:
        return sum(self.errors.values())

    def _per_s(self, n: float) -> float:
        return round(n / self.elapsed_s, 2) if self.elapsed_s > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` document (keys described in :mod:`mimir_edge.loadgen`)."""
        c = self.config
        ms = 1000.0
        return {
            "version": JSON_VERSION,
            "config": {
                "url": c.url,
                "protocol": c.protocol,
                "tenants": list(c.tenants),
                "concurrency": c.concurrency,
                "rate": c.rate,
                "duration_s": c.duration_s,
                "requests": c.requests,
                "series": None if c.corpus else c.series,
                "samples_per_request": None if c.corpus else c.samples_per_request,
                "exemplars": c.exemplars,
                "histograms": c.histograms,
                "corpus": str(c.corpus) if c.corpus else None,
            },
            "elapsed_s": round(self.elapsed_s, 3),
            "interrupted": self.interrupted,
            "requests": {
                "total": self.requests,
                "answered": self.answered,
                "ok": self.ok,
                "connection_errors": self.connection_errors,
                "skipped": self.skipped,
            },
            "status": {str(k): v for k, v in sorted(self.status.items())},
            "errors": dict(sorted(self.errors.items())),
            "sent": self.sent.as_dict(),
            "accepted": self.accepted.as_dict(),
            "bytes_sent": self.bytes_sent,
            "throughput": {
                "requests_per_s": self._per_s(self.requests),
                "samples_per_s": self._per_s(self.sent.samples),
                "ingested_per_s": self._per_s(self.sent.ingested),
                "accepted_ingested_per_s": self._per_s(self.accepted.ingested),
            },
            "latency_ms": {
                "p50": round(self.latency.quantile(0.50) * ms, 3),
                "p90": round(self.latency.quantile(0.90) * ms, 3),
                "p99": round(self.latency.quantile(0.99) * ms, 3),
                "max": round(self.latency.max * ms, 3),
                "mean": round(self.latency.mean * ms, 3),
            },
            "tenants": {
                name: {
                    "requests": t.requests,
                    "status": {str(k): v for k, v in sorted(t.status.items())},
                    "connection_errors": t.connection_errors,
                    "sent": t.sent.as_dict(),
                    "accepted": t.accepted.as_dict(),
                }
                for name, t in self.tenants.items()
            },
            "examples": {str(k): v for k, v in sorted(self.examples.items())},
        }


_MAX_TENANT_ROWS = 20


def _n(v: float) -> str:
    return f"{v:,.0f}" if float(v).is_integer() else f"{v:,.1f}"


def format_table(report: LoadReport) -> str:
    """The human-readable end-of-run report."""
    c, r = report.config, report
    loop = f"open loop at {c.rate:g} req/s" if c.rate else "closed loop"
    source = f"corpus {c.corpus}" if c.corpus else f"{c.series:,} series per tenant"
    lines = [
        f"mimir-edge load: {c.url}",
        f"  remote write {c.protocol}.0, {len(c.tenants)} tenant(s), {c.concurrency} workers, "
        f"{loop}, {source}; ran {r.elapsed_s:.2f} s" + (" (interrupted)" if r.interrupted else ""),
        "",
        f"{'':<24}{'total':>14}{'per second':>14}",
    ]

    def row(label: str, total: float, per_s: bool = True) -> None:
        rate = _n(total / r.elapsed_s) if per_s and r.elapsed_s > 0 else ""
        lines.append(f"{label:<24}{_n(total):>14}{rate:>14}")

    row("requests", r.requests)
    for code, n in sorted(r.status.items()):
        row(f"  {code}", n)
    row("  connection errors", r.connection_errors)
    if c.rate:
        row("  skipped (late)", r.skipped)
    row("samples sent", r.sent.samples)
    if r.sent.histograms or r.sent.exemplars or r.sent.metadata:
        row("  histograms sent", r.sent.histograms)
        row("  exemplars sent", r.sent.exemplars)
        row("  metadata sent", r.sent.metadata)
    row("ingested sent", r.sent.ingested)
    row("samples accepted (2xx)", r.accepted.samples)
    row("ingested accepted (2xx)", r.accepted.ingested)
    row("MB sent", round(r.bytes_sent / 1e6, 1))
    lat = r.latency
    if lat.count:
        parts = [f"p{int(q * 100)} {lat.quantile(q) * 1000:.2f}" for q in (0.5, 0.9, 0.99)]
        lines.append(f"{'latency ms':<24}" + "   ".join([*parts, f"max {lat.max * 1000:.2f}"]))
    if len(r.tenants) > 1:
        lines.append("")
        lines.append("per tenant: requests, status codes, samples accepted")
        shown = list(r.tenants.items())[:_MAX_TENANT_ROWS]
        for name, t in shown:
            codes = " ".join(f"{k}:{v}" for k, v in sorted(t.status.items()))
            err = f" errors:{t.connection_errors}" if t.connection_errors else ""
            lines.append(f"  {name:<22}{t.requests:>10,}  {codes}{err}  {t.accepted.samples:,}")
        if len(r.tenants) > len(shown):
            lines.append(f"  ... and {len(r.tenants) - len(shown):,} more (all in --json)")
    for reason, n in sorted(r.errors.items(), key=lambda kv: -kv[1]):
        lines.append(f"connection error: {reason} ({n:,})")
    for code, text in sorted(r.examples.items()):
        lines.append(f"answer {code}: {text}")
    return "\n".join(lines)
