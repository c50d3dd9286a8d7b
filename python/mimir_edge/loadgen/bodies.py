"""Request bodies for the load generator: synthetic ones built up front, or a corpus replayed.

Synthetic bodies are laid out as Prometheus sends them: one entry per sample (or native
histogram), an exemplar in an entry of its own after its series' sample, and in remote write
2.0 each series' metadata beside it. Every timestamp in one body is the same (one scrape), so
a body is kept as a :class:`Template`: the uncompressed protobuf cut at that timestamp's
varint. Re-stamping is a ``bytes.join`` plus snappy (about 20 µs for 500 samples), so each send
carries a fresh, strictly increasing timestamp per series without re-encoding — Mimir refuses
samples older than the newest it has for a series, so replaying a fixed body would measure
its out-of-order errors instead of the edge.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from mimir_edge import (
    CONTENT_TYPE_V2,
    RemoteWriteError,
    WriteStats,
    scan_remote_write,
    snappy_compress,
)
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Metadata,
    MetricType,
    Sample,
    Series,
    encode_v1,
    encode_v2,
    varint,
)
from mimir_edge.loadgen.series import Kind, SeriesSpec, realistic_series

__all__ = [
    "Body",
    "CorpusError",
    "Template",
    "build_templates",
    "content_type",
    "load_corpus",
    "make_bodies",
    "version_header",
]

# Prometheus sends plain ``application/x-protobuf`` for 1.0 (storage/remote/client.go,
# remoteWriteContentTypeHeaders) and the ``proto=`` form for 2.0.
_CONTENT_TYPES = {1: "application/x-protobuf", 2: CONTENT_TYPE_V2}
_VERSION_HEADERS = {1: "0.1.0", 2: "2.0.0"}

# Millisecond timestamps between these encode to exactly 6 varint bytes (1971 to 2109), so a
# new stamp never changes any length field.
_STAMP_MIN, _STAMP_MAX = 1 << 35, 1 << 42

_TYPES = {
    Kind.COUNTER: MetricType.COUNTER,
    Kind.GAUGE: MetricType.GAUGE,
    Kind.HISTOGRAM_PART: MetricType.HISTOGRAM,
    Kind.NATIVE_HISTOGRAM: MetricType.HISTOGRAM,
}


def content_type(protocol: int) -> str:
    """The Content-Type Prometheus sends for remote write ``protocol`` (1 or 2)."""
    return _CONTENT_TYPES[protocol]


def version_header(protocol: int) -> str:
    """``X-Prometheus-Remote-Write-Version`` for ``protocol``: ``0.1.0`` or ``2.0.0``."""
    return _VERSION_HEADERS[protocol]


class CorpusError(ValueError):
    """A corpus directory that cannot be replayed: unreadable, empty, or a body that does not
    decode as the chosen protocol."""


@dataclass(frozen=True, slots=True)
class Body:
    """A ready-to-send request body (snappy-compressed) and its counts."""

    name: str
    data: bytes
    stats: WriteStats


@dataclass(frozen=True, slots=True)
class Template:
    """One body's uncompressed protobuf cut wherever its (single) timestamp goes."""

    parts: tuple[bytes, ...]
    stats: WriteStats

    def stamped(self, timestamp_ms: int) -> bytes:
        """The snappy-compressed body with every timestamp set to ``timestamp_ms``."""
        return snappy_compress(varint(timestamp_ms).join(self.parts))


# -- synthetic bodies -------------------------------------------------------------------------


def _native_histogram(ts: int, seed: int) -> Histogram:
    # Schema 3 (8 buckets per power of two), two spans covering ~5 ms to 1 s: the shape of a
    # request-latency histogram from client_golang.
    counts = [1 + (seed * 7 + i * 13) % 40 for i in range(14)]
    deltas, prev = [], 0
    for c in counts:
        deltas.append(c - prev)
        prev = c
    zero_count = seed % 3
    return Histogram(
        count=sum(counts) + zero_count,
        sum=round(sum(counts) * 0.087, 3),
        schema=3,
        zero_threshold=2.0**-128,
        zero_count=zero_count,
        positive_spans=((-60, 6), (4, 8)),
        positive_deltas=tuple(deltas),
        timestamp_ms=ts,
    )


def _entries(spec: SeriesSpec, n: int, ts: int, exemplars: bool, v2: bool) -> list[Series]:
    meta = Metadata(_TYPES[spec.kind], spec.help, spec.unit) if v2 else None
    if spec.kind is Kind.NATIVE_HISTOGRAM:
        first = Series(spec.labels, histograms=(_native_histogram(ts, n),), metadata=meta)
    else:
        first = Series(spec.labels, samples=(Sample(spec.value, ts),), metadata=meta)
    if not (exemplars and spec.takes_exemplars):
        return [first]
    trace_id = f"{(n * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % (1 << 128):032x}"
    value = 1.0 if spec.kind is Kind.COUNTER else 0.042
    exemplar = Exemplar((("trace_id", trace_id),), value, ts)
    return [first, Series(spec.labels, exemplars=(exemplar,), metadata=meta)]


def _chunks(
    specs: Sequence[SeriesSpec], limit: int, ts: int, exemplars: bool, v2: bool
) -> Iterable[list[Series]]:
    """Entries in requests of at most ``limit`` samples + histograms + exemplars (a series'
    sample and its exemplar travel together, so a request can exceed a limit of 1)."""
    chunk: list[Series] = []
    for n, spec in enumerate(specs):
        entries = _entries(spec, n, ts, exemplars, v2)
        if chunk and len(chunk) + len(entries) > limit:
            yield chunk
            chunk = []
        chunk.extend(entries)
    if chunk:
        yield chunk


def _template(entries: list[Series], protocol: int, ts: int) -> Template | None:
    raw = encode_v2(entries) if protocol == 2 else encode_v1(entries)
    stamp = varint(ts)
    parts = raw.split(stamp)
    stats = scan_remote_write(snappy_compress(raw), content_type=content_type(protocol))
    if len(parts) - 1 != stats.samples + stats.histograms + stats.exemplars:
        return None  # the stamp's bytes also occur inside a float value: try another stamp
    return Template(tuple(parts), stats)


def build_templates(
    specs: Sequence[SeriesSpec],
    *,
    samples_per_request: int,
    protocol: int = 1,
    exemplars: bool = False,
    timestamp_ms: int | None = None,
) -> list[Template]:
    """Templates covering ``specs`` once, at most ``samples_per_request`` samples each."""
    if protocol not in _CONTENT_TYPES:
        raise ValueError(f"remote write protocol must be 1 or 2, not {protocol}")
    if samples_per_request < 1:
        raise ValueError("samples_per_request must be at least 1")
    ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    if not _STAMP_MIN <= ts < _STAMP_MAX - 1000:
        raise ValueError(f"timestamp_ms {ts} outside the years 1971-2109")
    out = []
    for entries in _chunks(specs, samples_per_request, ts, exemplars, protocol == 2):
        for shift in range(16):
            # The stamp's 6 bytes must occur only as timestamps, never inside a float value
            # (odds about 2**-48 per value): on a collision, move the first stamp by 1 ms.
            moved = _restamped(entries, ts + shift) if shift else entries
            template = _template(moved, protocol, ts + shift)
            if template is not None:
                out.append(template)
                break
        else:  # pragma: no cover - needs 16 collisions in a row
            raise RuntimeError("could not find a timestamp that occurs only as a timestamp")
    return out


def _restamped(entries: list[Series], ts: int) -> list[Series]:
    """``entries`` with every timestamp set to ``ts``."""
    return [
        Series(
            s.labels,
            samples=tuple(Sample(x.value, ts) for x in s.samples),
            histograms=tuple(replace(h, timestamp_ms=ts) for h in s.histograms),
            exemplars=tuple(Exemplar(e.labels, e.value, ts) for e in s.exemplars),
            metadata=s.metadata,
        )
        for s in entries
    ]


def make_bodies(
    *,
    series: int = 1000,
    samples_per_request: int = 500,
    protocol: int = 1,
    exemplars: bool = False,
    histograms: bool = False,
    timestamp_ms: int | None = None,
) -> list[Body]:
    """One scrape of ``series`` realistic series as snappy-compressed remote-write bodies.

    ``histograms`` makes request latencies native histograms; ``exemplars`` adds a trace
    exemplar to request counters and latency histograms. Each :class:`Body` carries the counts
    :func:`mimir_edge.scan_remote_write` finds in it.
    """
    specs = realistic_series(series, native_histograms=histograms)
    templates = build_templates(
        specs,
        samples_per_request=samples_per_request,
        protocol=protocol,
        exemplars=exemplars,
        timestamp_ms=timestamp_ms,
    )
    ts = time.time_ns() // 1_000_000 if timestamp_ms is None else timestamp_ms
    return [Body(f"synthetic-{i}", t.stamped(ts), t.stats) for i, t in enumerate(templates)]


# -- corpus -----------------------------------------------------------------------------------


def _corpus_files(directory: Path) -> list[Path]:
    manifest = directory / "manifest.json"
    if manifest.is_file():
        try:
            entries = json.loads(manifest.read_text())
            return [directory / str(e["file"]) for e in entries]
        except (OSError, ValueError, TypeError, KeyError) as e:
            raise CorpusError(f"{manifest}: not a list of {{'file': ...}} entries ({e})") from e
    return sorted(
        p for p in directory.iterdir() if p.is_file() and p.suffix not in (".json", ".md", ".txt")
    )


def load_corpus(directory: str | Path, *, protocol: int = 1) -> list[Body]:
    """Every body in ``directory`` (raw HTTP bodies, snappy block format), counted with
    :func:`scan_remote_write` as ``protocol``. The files are those its ``manifest.json``
    lists (the layout of the captured Prometheus corpus), else every file but ``*.json``,
    ``*.md`` and ``*.txt``, in name order."""
    d = Path(directory)
    if not d.is_dir():
        raise CorpusError(f"corpus {d}: not a directory")
    try:
        files = _corpus_files(d)
    except OSError as e:
        raise CorpusError(f"corpus {d}: {e.strerror or e}") from e
    if not files:
        raise CorpusError(f"corpus {d}: no body files")
    bodies = []
    for path in files:
        try:
            data = path.read_bytes()
        except OSError as e:
            raise CorpusError(f"corpus file {path}: {e.strerror or e}") from e
        try:
            stats = scan_remote_write(data, content_type=content_type(protocol))
        except RemoteWriteError as e:
            raise CorpusError(
                f"corpus file {path} is not a remote write {protocol}.0 body: {e}"
            ) from e
        bodies.append(Body(path.name, data, stats))
    return bodies
