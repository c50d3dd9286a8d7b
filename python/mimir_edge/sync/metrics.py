"""The overrides sync's metrics, in the Prometheus text format (0.0.4).

A handful of counters and gauges do not need a client library: this module keeps them in a
dict under a lock and formats them on a scrape.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Sequence

__all__ = ["ERROR_REASONS", "Counter", "Gauge", "Registry", "SyncMetrics"]

#: Every ``overrides_sync_errors_total{reason}`` (all exported from the start, at 0).
ERROR_REASONS = (
    "parse",  # the source's document does not parse or has invalid limits
    "source_deleted",  # the source is gone (ConfigMap deleted, file removed)
    "source_empty",  # the source has no document at all
    "source_failed",  # the source's watch/poll loop failed and was restarted
    "targets",  # the replicas could not be listed (DNS, Kubernetes API)
    "no_targets",  # the replicas were listed and there are none
    "push_unreachable",  # a replica did not answer (per replica and attempt)
    "push_rejected",  # a replica refused the set (per replica and attempt)
)


def _fmt(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == int(v) and abs(v) < 2**53:
        return str(int(v))
    return repr(v)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Metric:
    kind = ""

    def __init__(self, name: str, help: str, labelnames: Sequence[str], lock: threading.Lock):
        self.name = name
        self.help = help
        self.labelnames = tuple(labelnames)
        self._lock = lock
        self._values: dict[tuple[str, ...], float] = {}
        self._fn: Callable[[], float] | None = None
        if not self.labelnames:
            self._values[()] = 0.0

    def _key(self, labels: dict[str, str]) -> tuple[str, ...]:
        if set(labels) != set(self.labelnames):
            raise ValueError(f"{self.name}: labels {sorted(labels)} != {list(self.labelnames)}")
        return tuple(str(labels[n]) for n in self.labelnames)

    def value(self, **labels: str) -> float:
        if self._fn is not None:
            return self._fn()
        with self._lock:
            return self._values.get(self._key(labels), 0.0)

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]
        if self._fn is not None:
            lines.append(f"{self.name} {_fmt(self._fn())}")
            return lines
        with self._lock:
            items = sorted(self._values.items())
        for key, v in items:
            if key:
                pairs = ",".join(
                    f'{n}="{_escape(x)}"' for n, x in zip(self.labelnames, key, strict=True)
                )
                lines.append(f"{self.name}{{{pairs}}} {_fmt(v)}")
            else:
                lines.append(f"{self.name} {_fmt(v)}")
        return lines


class Counter(_Metric):
    kind = "counter"

    def inc(self, amount: float = 1.0, **labels: str) -> None:
        if amount < 0:
            raise ValueError("counters only go up")
        key = self._key(labels)
        with self._lock:
            self._values[key] = self._values.get(key, 0.0) + amount


class Gauge(_Metric):
    kind = "gauge"

    def set(self, value: float, **labels: str) -> None:
        key = self._key(labels)
        with self._lock:
            self._values[key] = float(value)

    def set_function(self, fn: Callable[[], float]) -> None:
        """Compute the (unlabelled) value on every scrape."""
        self._fn = fn


class Registry:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._metrics: list[_Metric] = []

    def counter(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Counter:
        m = Counter(name, help, labelnames, self._lock)
        self._metrics.append(m)
        return m

    def gauge(self, name: str, help: str, labelnames: Sequence[str] = ()) -> Gauge:
        m = Gauge(name, help, labelnames, self._lock)
        self._metrics.append(m)
        return m

    def render(self) -> str:
        return "".join(line + "\n" for m in self._metrics for line in m.render())


class SyncMetrics:
    """The metrics of one ``overrides-sync`` process."""

    def __init__(self, registry: Registry | None = None) -> None:
        r = self.registry = registry or Registry()
        self.errors = r.counter(
            "overrides_sync_errors_total",
            "Sync errors by reason; the last good limit set stays in force through every one.",
            ("reason",),
        )
        for reason in ERROR_REASONS:
            self.errors.inc(0, reason=reason)
        self.last_success = r.gauge(
            "overrides_sync_last_success_timestamp_seconds",
            "Unix time of the last sync that left every replica holding the limit set of a "
            "healthy source (0: never).",
        )
        self.stale = r.gauge(
            "overrides_sync_stale_seconds",
            "Seconds since the source last gave a good limit set while it is deleted, empty "
            "or fails to parse (0 while it is healthy).",
        )
        self.pushes = r.counter(
            "overrides_sync_pushes_total",
            "Limit sets accepted by a replica (PUTs; replicas already holding the set get none).",
        )
        self.targets = r.gauge("overrides_sync_targets", "RLS replicas found at the last sync.")
        self.targets_in_sync = r.gauge(
            "overrides_sync_targets_in_sync",
            "RLS replicas holding the limit set after the last sync.",
        )
        self.tenants = r.gauge(
            "overrides_sync_tenants", "Tenants with overrides in the limit set in force."
        )
        self.leader = r.gauge(
            "overrides_sync_leader", "1 when this replica is the one that pushes, else 0."
        )

    def render(self) -> str:
        return self.registry.render()
