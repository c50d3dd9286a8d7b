"""A small protobuf encoder for Prometheus remote write 1.0 and 2.0 request bodies.

Pure Python, no protobuf library: it is used by the tests (as an encoder independent of the
protoc-generated reference decoder) and by the load generator. Output is what a real sender
(Prometheus' gogoproto code) writes: fields in field-number order, proto3 defaults (zero
scalars, empty strings, empty repeated fields) omitted, oneof members always written, repeated
scalars packed. It is byte-identical to ``protoc``'s Python serializer. One difference from
gogoproto: a ``-0.0`` double is written (as upb and protobuf-go do), so its sign survives.

Wire layout (field number, wire type; ``LEN`` = length-delimited, ``I64`` = 8-byte fixed)::

    remote write 1.0: prometheus.WriteRequest (Content-Type ...;proto=prometheus.WriteRequest)
      WriteRequest   1 timeseries LEN (repeated TimeSeries)   3 metadata LEN (repeated)
      TimeSeries     1 labels LEN (Label)   2 samples LEN (Sample)   3 exemplars LEN (Exemplar)
                     4 histograms LEN (Histogram)
      Label          1 name LEN   2 value LEN
      Sample         1 value I64 (double)   2 timestamp VARINT (int64, ms)
      Exemplar       1 labels LEN (Label)   2 value I64   3 timestamp VARINT
      MetricMetadata 1 type VARINT   2 metric_family_name LEN   4 help LEN   5 unit LEN

    remote write 2.0: io.prometheus.write.v2.Request (...;proto=io.prometheus.write.v2.Request)
      Request        4 symbols LEN (repeated string; symbols[0] == "")
                     5 timeseries LEN (repeated TimeSeries)
      TimeSeries     1 labels_refs LEN (packed uint32: name, value, name, value, ...)
                     2 samples LEN   3 histograms LEN   4 exemplars LEN   5 metadata LEN
      Exemplar       1 labels_refs LEN (packed uint32)   2 value I64   3 timestamp VARINT
      Metadata       1 type VARINT   3 help_ref VARINT   4 unit_ref VARINT

    both versions:
      Histogram      1 count_int VARINT (oneof, always written)   3 sum I64
                     4 schema VARINT (sint32, zigzag)   5 zero_threshold I64
                     6 zero_count_int VARINT (oneof, always written)
                     8 negative_spans LEN   9 negative_deltas LEN (packed sint64, zigzag)
                     11 positive_spans LEN   12 positive_deltas LEN (packed sint64, zigzag)
                     14 reset_hint VARINT   15 timestamp VARINT (int64, ms)
      BucketSpan     1 offset VARINT (sint32, zigzag)   2 length VARINT (uint32)

Integers out of their protobuf type's range raise ``ValueError``; strings are encoded as
UTF-8 (strings with lone surrogates raise ``UnicodeEncodeError``). In 2.0 the symbol table
starts with ``""`` and holds each distinct string once, in order of first use (series labels,
exemplar labels, help, unit), as Prometheus builds it; an empty string is always ref 0.
``Series.metadata`` is ``None`` to leave field 5 out, or a :class:`Metadata` to write it even
when it is all defaults (Prometheus always writes it).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import IntEnum
from math import copysign

from mimir_edge._native import snappy_compress

__all__ = [
    "Exemplar",
    "Histogram",
    "Labels",
    "Metadata",
    "MetricMetadata",
    "MetricType",
    "ResetHint",
    "Sample",
    "Series",
    "compress",
    "encode_v1",
    "encode_v2",
    "varint",
]

#: Label pairs ``((name, value), ...)`` in the order they go on the wire.
Labels = tuple[tuple[str, str], ...]


class MetricType(IntEnum):
    """``MetricMetadata.MetricType`` (1.0) / ``Metadata.MetricType`` (2.0): same numbers."""

    UNKNOWN = 0
    COUNTER = 1
    GAUGE = 2
    HISTOGRAM = 3
    GAUGEHISTOGRAM = 4
    SUMMARY = 5
    INFO = 6
    STATESET = 7


class ResetHint(IntEnum):
    """``Histogram.ResetHint``."""

    UNKNOWN = 0
    YES = 1
    NO = 2
    GAUGE = 3


@dataclass(frozen=True, slots=True)
class Sample:
    value: float
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Exemplar:
    labels: Labels
    value: float
    timestamp_ms: int


@dataclass(frozen=True, slots=True)
class Histogram:
    """A native histogram with integer counts. Spans are ``(offset, length)`` pairs; deltas are
    bucket-count differences (the first relative to zero), as Prometheus sends them."""

    count: int = 0
    sum: float = 0.0
    schema: int = 0
    zero_threshold: float = 0.0
    zero_count: int = 0
    positive_spans: tuple[tuple[int, int], ...] = ()
    positive_deltas: tuple[int, ...] = ()
    negative_spans: tuple[tuple[int, int], ...] = ()
    negative_deltas: tuple[int, ...] = ()
    reset_hint: int = 0
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Metadata:
    """Per-series metadata (2.0 only). ``type`` is a :class:`MetricType` value."""

    type: int
    help: str = ""
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Series:
    labels: Labels
    samples: tuple[Sample, ...] = ()
    histograms: tuple[Histogram, ...] = ()
    exemplars: tuple[Exemplar, ...] = ()
    #: Written in 2.0 only; ignored by :func:`encode_v1`.
    metadata: Metadata | None = None


@dataclass(frozen=True, slots=True)
class MetricMetadata:
    """A 1.0 top-level ``WriteRequest.metadata`` entry."""

    type: int
    metric_family_name: str
    help: str = ""
    unit: str = ""


# --- wire primitives -------------------------------------------------------------------------

_U32 = 1 << 32
_U64 = 1 << 64
_I32 = 1 << 31
_I64 = 1 << 63
_MASK64 = _U64 - 1
_BYTE = tuple(bytes((i,)) for i in range(0x80))
_pack_double: Callable[[float], bytes] = struct.Struct("<d").pack


def varint(v: int) -> bytes:
    """Unsigned varint of ``0 <= v < 2**64`` (callers check the range)."""
    if v < 0x80:
        return _BYTE[v]
    if v < 0x4000:
        return bytes(((v & 0x7F) | 0x80, v >> 7))
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def _check(v: int, lo: int, hi: int, what: str) -> int:
    if not lo <= v < hi:
        raise ValueError(f"{what} {v} out of range [{lo}, {hi})")
    return v


def _uint64(v: int, what: str) -> bytes:
    return varint(_check(v, 0, _U64, what))


def _uint32(v: int, what: str) -> bytes:
    return varint(_check(v, 0, _U32, what))


def _int64(v: int, what: str) -> bytes:
    """int64 (and int32/enum, sign-extended to 10 bytes when negative, as protobuf does)."""
    return varint(_check(v, -_I64, _I64, what) & _MASK64)


def _int32(v: int, what: str) -> bytes:
    return varint(_check(v, -_I32, _I32, what) & _MASK64)


def _zigzag(v: int) -> int:
    return v << 1 if v >= 0 else ((-v) << 1) - 1


def _sint64(v: int, what: str) -> bytes:
    return varint(_zigzag(_check(v, -_I64, _I64, what)))


def _sint32(v: int, what: str) -> bytes:
    return varint(_zigzag(_check(v, -_I32, _I32, what)))


def _nonzero_double(v: float) -> bool:
    """Whether a proto3 double is written: any value whose bits are not all zero."""
    return bool(v) or copysign(1.0, v) < 0.0


def _put_len(out: bytearray, key: bytes, body: bytes | bytearray) -> None:
    out += key
    out += varint(len(body))
    out += body


def _put_str(out: bytearray, key: bytes, s: str) -> None:
    """A proto3 string field: left out when empty."""
    if s:
        b = s.encode()
        out += key
        out += varint(len(b))
        out += b


# --- messages shared by 1.0 and 2.0 ----------------------------------------------------------


def _sample(v: float, ts: int) -> bytes:
    """The body of a ``Sample`` message."""
    if ts:
        ts_bytes = b"\x10" + _int64(ts, "timestamp_ms")
        if _nonzero_double(v):
            return b"\x09" + _pack_double(v) + ts_bytes
        return ts_bytes
    return b"\x09" + _pack_double(v) if _nonzero_double(v) else b""


def _put_samples(out: bytearray, samples: Iterable[Sample]) -> None:
    for s in samples:
        _put_len(out, b"\x12", _sample(s.value, s.timestamp_ms))


def _spans(out: bytearray, key: bytes, spans: Iterable[tuple[int, int]]) -> None:
    for offset, length in spans:
        body = bytearray()
        if offset:
            body += b"\x08"
            body += _sint32(offset, "span offset")
        if length:
            body += b"\x10"
            body += _uint32(length, "span length")
        _put_len(out, key, body)


def _deltas(out: bytearray, key: bytes, deltas: Sequence[int]) -> None:
    if deltas:
        _put_len(out, key, b"".join([_sint64(d, "bucket delta") for d in deltas]))


def _histogram(h: Histogram) -> bytearray:
    b = bytearray(b"\x08")
    b += _uint64(h.count, "histogram count")
    if _nonzero_double(h.sum):
        b += b"\x19"
        b += _pack_double(h.sum)
    if h.schema:
        b += b"\x20"
        b += _sint32(h.schema, "histogram schema")
    if _nonzero_double(h.zero_threshold):
        b += b"\x29"
        b += _pack_double(h.zero_threshold)
    b += b"\x30"
    b += _uint64(h.zero_count, "histogram zero_count")
    _spans(b, b"\x42", h.negative_spans)
    _deltas(b, b"\x4a", h.negative_deltas)
    _spans(b, b"\x5a", h.positive_spans)
    _deltas(b, b"\x62", h.positive_deltas)
    if h.reset_hint:
        b += b"\x70"
        b += _int32(h.reset_hint, "histogram reset_hint")
    if h.timestamp_ms:
        b += b"\x78"
        b += _int64(h.timestamp_ms, "timestamp_ms")
    return b


def _put_histograms(out: bytearray, key: bytes, histograms: Iterable[Histogram]) -> None:
    for h in histograms:
        _put_len(out, key, _histogram(h))


def _exemplar_tail(out: bytearray, e: Exemplar) -> None:
    """Exemplar fields 2 (value) and 3 (timestamp)."""
    if _nonzero_double(e.value):
        out += b"\x11"
        out += _pack_double(e.value)
    if e.timestamp_ms:
        out += b"\x18"
        out += _int64(e.timestamp_ms, "timestamp_ms")


# --- remote write 1.0 ------------------------------------------------------------------------


def _v1_label(name: str, value: str) -> bytes:
    body = bytearray()
    _put_str(body, b"\x0a", name)
    _put_str(body, b"\x12", value)
    return b"\x0a" + varint(len(body)) + body


def encode_v1(series: Sequence[Series], metadata: Sequence[MetricMetadata] = ()) -> bytes:
    """Serialize a ``prometheus.WriteRequest`` (uncompressed). ``Series.metadata`` is ignored."""
    out = bytearray()
    cache: dict[tuple[str, str], bytes] = {}
    for s in series:
        ts = bytearray()
        for pair in s.labels:
            label = cache.get(pair)
            if label is None:
                label = cache[pair] = _v1_label(*pair)
            ts += label
        _put_samples(ts, s.samples)
        for e in s.exemplars:
            body = bytearray()
            for pair in e.labels:
                label = cache.get(pair)
                if label is None:
                    label = cache[pair] = _v1_label(*pair)
                body += label
            _exemplar_tail(body, e)
            _put_len(ts, b"\x1a", body)
        _put_histograms(ts, b"\x22", s.histograms)
        _put_len(out, b"\x0a", ts)
    for m in metadata:
        body = bytearray()
        if m.type:
            body += b"\x08"
            body += _int32(m.type, "metadata type")
        _put_str(body, b"\x12", m.metric_family_name)
        _put_str(body, b"\x22", m.help)
        _put_str(body, b"\x2a", m.unit)
        _put_len(out, b"\x1a", body)
    return bytes(out)


# --- remote write 2.0 ------------------------------------------------------------------------


def encode_v2(series: Sequence[Series]) -> bytes:
    """Serialize an ``io.prometheus.write.v2.Request`` (uncompressed)."""
    symbols: dict[str, int] = {"": 0}

    def ref(s: str) -> bytes:
        i = symbols.get(s)
        if i is None:
            i = symbols[s] = len(symbols)
        return varint(i)

    def refs(labels: Labels) -> bytes:
        return b"".join([ref(x) for pair in labels for x in pair])

    timeseries = bytearray()
    for s in series:
        ts = bytearray()
        if s.labels:
            _put_len(ts, b"\x0a", refs(s.labels))
        _put_samples(ts, s.samples)
        _put_histograms(ts, b"\x1a", s.histograms)
        for e in s.exemplars:
            body = bytearray()
            if e.labels:
                _put_len(body, b"\x0a", refs(e.labels))
            _exemplar_tail(body, e)
            _put_len(ts, b"\x22", body)
        m = s.metadata
        if m is not None:
            body = bytearray()
            if m.type:
                body += b"\x08"
                body += _int32(m.type, "metadata type")
            if m.help:
                body += b"\x18"
                body += ref(m.help)
            if m.unit:
                body += b"\x20"
                body += ref(m.unit)
            _put_len(ts, b"\x2a", body)
        _put_len(timeseries, b"\x2a", ts)

    out = bytearray()
    for sym in symbols:  # dicts keep insertion order: index order
        b = sym.encode()
        out += b"\x22"
        out += varint(len(b))
        out += b
    out += timeseries
    return bytes(out)


def compress(raw: bytes) -> bytes:
    """Snappy block compression, as remote write sends bodies (``Content-Encoding: snappy``)."""
    return snappy_compress(raw)
