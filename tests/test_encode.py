"""The hand-written remote-write encoder against the protoc-generated reference decoder.

The reference decoder (``pb`` fixture) parses what ``mimir_edge.encode`` writes; the parse,
converted back to the encoder's dataclasses, must equal the input (floats compared by their
bits, so NaN and -0.0 count). The converters here are shared with the other test modules.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import astuple, replace
from typing import Any

import cramjam
import pytest

from mimir_edge import (
    CONTENT_TYPE_V2,
    WriteStats,
    scan_remote_write,
    snappy_decompress,
)
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Labels,
    Metadata,
    MetricMetadata,
    MetricType,
    ResetHint,
    Sample,
    Series,
    compress,
    encode_v1,
    encode_v2,
)

# --- reference message -> encoder dataclasses ------------------------------------------------


def _histogram_from_pb(h: Any) -> Histogram:
    # The encoder writes integer histograms only; a float one would not round-trip.
    assert h.WhichOneof("count") == "count_int"
    assert h.WhichOneof("zero_count") == "zero_count_int"
    assert not h.positive_counts
    assert not h.negative_counts
    return Histogram(
        count=h.count_int,
        sum=h.sum,
        schema=h.schema,
        zero_threshold=h.zero_threshold,
        zero_count=h.zero_count_int,
        positive_spans=tuple((s.offset, s.length) for s in h.positive_spans),
        positive_deltas=tuple(h.positive_deltas),
        negative_spans=tuple((s.offset, s.length) for s in h.negative_spans),
        negative_deltas=tuple(h.negative_deltas),
        reset_hint=h.reset_hint,
        timestamp_ms=h.timestamp,
    )


def series_from_v1(msg: Any) -> tuple[list[Series], list[MetricMetadata]]:
    """A parsed ``prometheus.WriteRequest`` as encoder input."""
    series = [
        Series(
            labels=tuple((lb.name, lb.value) for lb in ts.labels),
            samples=tuple(Sample(s.value, s.timestamp) for s in ts.samples),
            histograms=tuple(_histogram_from_pb(h) for h in ts.histograms),
            exemplars=tuple(
                Exemplar(tuple((lb.name, lb.value) for lb in e.labels), e.value, e.timestamp)
                for e in ts.exemplars
            ),
        )
        for ts in msg.timeseries
    ]
    metadata = [MetricMetadata(m.type, m.metric_family_name, m.help, m.unit) for m in msg.metadata]
    return series, metadata


def _resolve(symbols: Sequence[str], refs: Sequence[int]) -> Labels:
    assert len(refs) % 2 == 0
    return tuple((symbols[refs[i]], symbols[refs[i + 1]]) for i in range(0, len(refs), 2))


def series_from_v2(msg: Any) -> list[Series]:
    """A parsed ``io.prometheus.write.v2.Request`` as encoder input (symbols resolved)."""
    sym = list(msg.symbols)
    return [
        Series(
            labels=_resolve(sym, ts.labels_refs),
            samples=tuple(Sample(s.value, s.timestamp) for s in ts.samples),
            histograms=tuple(_histogram_from_pb(h) for h in ts.histograms),
            exemplars=tuple(
                Exemplar(_resolve(sym, e.labels_refs), e.value, e.timestamp) for e in ts.exemplars
            ),
            metadata=(
                Metadata(ts.metadata.type, sym[ts.metadata.help_ref], sym[ts.metadata.unit_ref])
                if ts.HasField("metadata")
                else None
            ),
        )
        for ts in msg.timeseries
    ]


def _bits(x: object) -> object:
    if isinstance(x, float):
        return ("float", struct.pack("<d", x))
    if isinstance(x, tuple | list):
        return tuple(_bits(v) for v in x)
    return x


def canonical(items: Sequence[Any]) -> object:
    """Dataclasses as nested tuples with every float replaced by its bit pattern."""
    return tuple(_bits(astuple(x)) for x in items)


def without_metadata(series: Sequence[Series]) -> list[Series]:
    return [replace(s, metadata=None) for s in series]


def scan_v1(raw: bytes) -> WriteStats:
    return scan_remote_write(compress(raw))


def scan_v2(raw: bytes) -> WriteStats:
    return scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)


# --- examples ---------------------------------------------------------------------------------

NATIVE = Histogram(
    count=17,
    sum=-3.25,
    schema=-4,
    zero_threshold=1e-128,
    zero_count=2,
    positive_spans=((-3, 2), (5, 1)),
    positive_deltas=(4, -1, 2**40),
    negative_spans=((0, 1),),
    negative_deltas=(-(2**62),),
    reset_hint=ResetHint.GAUGE,
    timestamp_ms=1_700_000_000_123,
)

EXAMPLE: tuple[Series, ...] = (
    Series(
        (("__name__", "http_requests_total"), ("job", "api"), ("path", "/v1/é🎉")),
        samples=(Sample(1.5, 1_700_000_000_000), Sample(0.0, 0), Sample(-0.0, -1)),
        exemplars=(Exemplar((("trace_id", "abc123"),), 0.25, 1_700_000_000_001),),
        metadata=Metadata(MetricType.COUNTER, "Requests.", "requests"),
    ),
    Series(
        (("__name__", "latency_seconds"), ("", ""), ("empty", "")),
        histograms=(NATIVE, Histogram()),
        exemplars=(Exemplar((), float("nan"), 0), Exemplar((("", "v"),), float("-inf"), -5)),
        metadata=Metadata(MetricType.HISTOGRAM),
    ),
    Series(()),
    Series(
        (("__name__", "up"),),
        samples=(Sample(float("inf"), 2**63 - 1), Sample(5e-324, -(2**63))),
        metadata=Metadata(0),
    ),
)

EXAMPLE_METADATA = (
    MetricMetadata(MetricType.COUNTER, "http_requests_total", "Requests.", "requests"),
    MetricMetadata(0, ""),
    MetricMetadata(MetricType.STATESET, "ünïcode", "", "bytes"),
)


def test_v1_round_trip(pb: Any) -> None:
    raw = encode_v1(EXAMPLE, EXAMPLE_METADATA)
    msg = pb.WriteRequest.FromString(raw)
    series, metadata = series_from_v1(msg)
    assert canonical(series) == canonical(without_metadata(EXAMPLE))
    assert metadata == list(EXAMPLE_METADATA)
    # Oneof members are written even when zero, as Prometheus does.
    empty = msg.timeseries[1].histograms[1]
    assert empty.WhichOneof("count") == "count_int"
    assert empty.WhichOneof("zero_count") == "zero_count_int"


def test_v2_round_trip(pb: Any) -> None:
    raw = encode_v2(EXAMPLE)
    msg = pb.v2.Request.FromString(raw)
    assert canonical(series_from_v2(msg)) == canonical(EXAMPLE)
    symbols = list(msg.symbols)
    assert symbols[0] == ""
    assert len(set(symbols)) == len(symbols), "symbols are deduplicated"
    assert set(symbols) == {x for s in EXAMPLE for pair in s.labels for x in pair} | {
        x for s in EXAMPLE for e in s.exemplars for pair in e.labels for x in pair
    } | {
        "Requests.",
        "requests",
        "",
    }
    # Metadata(0) is written (empty), None is not.
    assert [ts.HasField("metadata") for ts in msg.timeseries] == [True, True, False, True]
    h = msg.timeseries[1].histograms[0]
    assert list(h.positive_deltas) == [4, -1, 2**40]
    assert list(h.negative_deltas) == [-(2**62)]
    assert h.reset_hint == ResetHint.GAUGE


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_output_is_what_the_reference_serializer_writes(pb: Any, version: str) -> None:
    """Field order, packing and default omission all match protoc's serializer byte for byte."""
    if version == "v1":
        raw = encode_v1(EXAMPLE, EXAMPLE_METADATA)
        assert pb.WriteRequest.FromString(raw).SerializeToString(deterministic=True) == raw
    else:
        raw = encode_v2(EXAMPLE)
        assert pb.v2.Request.FromString(raw).SerializeToString(deterministic=True) == raw


def test_golden_bytes() -> None:
    """Hand-checked wire bytes for the smallest interesting requests."""
    one = [Series((("a", "b"),), samples=(Sample(1.0, 2),))]
    sample = "120b" + "09" + "000000000000f03f" + "1002"
    # TimeSeries{Label{name "a", value "b"}, Sample{1.0, 2}}
    assert encode_v1(one).hex() == "0a15" + "0a06" + "0a0161" + "120162" + sample
    # symbols "", "a", "b"; TimeSeries{labels_refs packed [1, 2], Sample{1.0, 2}}
    assert encode_v2(one).hex() == "2200" + "220161" + "220162" + "2a11" + "0a020102" + sample
    assert encode_v1([]) == b""
    assert encode_v2([]) == b"\x22\x00"
    # Zero doubles are left out, negative zero is not; negative timestamps are 10 bytes.
    assert encode_v1([Series((), samples=(Sample(0.0, 0),))]).hex() == "0a021200"
    assert encode_v1([Series((), samples=(Sample(-0.0, -1),))]).hex() == (
        "0a16" + "1214" + "09" + "0000000000000080" + "10" + "ffffffffffffffffff01"
    )
    # Metadata: type, then help_ref (field 3) and unit_ref (field 4).
    md = [Series((), metadata=Metadata(MetricType.SUMMARY, "h", "u"))]
    assert encode_v2(md).hex() == (
        "2200" + "220168" + "220175" + "2a08" + "2a06" + "0805" + "1801" + "2002"
    )


def test_multi_byte_symbol_refs(pb: Any) -> None:
    """Refs past 127 and 16383 take 2 and 3 varint bytes."""
    series = [
        Series((("__name__", "m"), ("i", str(i))), samples=(Sample(i, i),)) for i in range(20_000)
    ]
    raw = encode_v2(series)
    msg = pb.v2.Request.FromString(raw)
    assert len(msg.symbols) == 4 + 20_000  # "", "__name__", "m", "i", then the values
    assert series_from_v2(msg) == series
    stats = scan_v2(raw)
    assert (stats.series, stats.samples, stats.label_pairs) == (20_000, 20_000, 40_000)


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_reference_reserialization_scans_the_same(pb: Any, version: str) -> None:
    if version == "v1":
        raw = encode_v1(EXAMPLE, EXAMPLE_METADATA)
        again = pb.WriteRequest.FromString(raw).SerializeToString()
        ours, theirs = scan_v1(raw), scan_v1(again)
    else:
        raw = encode_v2(EXAMPLE)
        again = pb.v2.Request.FromString(raw).SerializeToString()
        ours, theirs = scan_v2(raw), scan_v2(again)
    assert ours == theirs
    assert ours.decoded_bytes == len(raw)
    expected = {
        "series": 4,
        "samples": 5,
        "histograms": 2,
        "exemplars": 3,
        # v1: the three top-level entries; v2: the families http_requests_total and
        # latency_seconds (the third series has no name, the fourth all-zero metadata).
        "metadata": 3 if version == "v1" else 2,
        "label_pairs": 7,
        "max_labels_per_series": 3,
        "max_label_name_length": 8,
        "max_label_value_length": 19,
    }
    assert {k: getattr(ours, k) for k in expected} == expected
    assert ours.ingested == 5 + 2 + 3 + expected["metadata"]


def test_compress_is_a_raw_snappy_block() -> None:
    raw = encode_v1(EXAMPLE, EXAMPLE_METADATA)
    body = compress(raw)
    assert bytes(cramjam.snappy.decompress_raw(body)) == raw
    assert snappy_decompress(body) == raw
    assert compress(b"") == b"\x00"
    assert scan_remote_write(compress(b"")) == scan_remote_write(b"", content_encoding="identity")


@pytest.mark.parametrize(
    "bad",
    [
        Series((), samples=(Sample(1.0, 2**63),)),
        Series((), samples=(Sample(1.0, -(2**63) - 1),)),
        Series((), histograms=(Histogram(count=-1),)),
        Series((), histograms=(Histogram(zero_count=2**64),)),
        Series((), histograms=(Histogram(schema=2**31),)),
        Series((), histograms=(Histogram(positive_spans=((0, -1),)),)),
        Series((), histograms=(Histogram(negative_deltas=(2**63,)),)),
        Series((), exemplars=(Exemplar((), 1.0, 2**64),)),
    ],
)
def test_out_of_range_integers_are_refused(bad: Series) -> None:
    for encode in (encode_v1, encode_v2):
        with pytest.raises(ValueError, match="out of range"):
            encode([bad])


def test_type_out_of_range_is_refused() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode_v1([], [MetricMetadata(2**31, "x")])
    with pytest.raises(ValueError, match="out of range"):
        encode_v2([Series((("__name__", "x"),), metadata=Metadata(-(2**31) - 1))])


def test_lone_surrogates_are_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        encode_v1([Series((("a", "\ud800"),))])
    with pytest.raises(UnicodeEncodeError):
        encode_v2([Series((("\udfff", "a"),))])
