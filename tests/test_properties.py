"""Property tests: random requests through the encoder, the core and the reference decoder.

Counts are computed straight from the Python input (the 2.0 metadata rule re-implemented here
from docs/research-mimir.md point 1). Every test bounds its examples so the file runs in well
under a minute on two cores.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cramjam
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from mimir_edge import (
    CONTENT_TYPE_V2,
    RemoteWriteError,
    WriteStats,
    scan_remote_write,
    snappy_compress,
    snappy_decompress,
)
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Labels,
    Metadata,
    MetricMetadata,
    Sample,
    Series,
    compress,
    encode_v1,
    encode_v2,
)
from tests.test_encode import canonical, series_from_v1, series_from_v2, without_metadata
from tests.test_scan_counts import COUNTS, reference_counts_v1, reference_counts_v2

FAST = settings(max_examples=300, deadline=None)
MEDIUM = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- strategies -------------------------------------------------------------------------------

INT32 = st.integers(-(2**31), 2**31 - 1)
INT64 = st.integers(-(2**63), 2**63 - 1)
DOUBLES = st.floats()  # NaN, infinities, -0.0 and subnormals included
TEXT = st.text(max_size=12)  # any code point but lone surrogates, empty included

METRIC_NAMES = st.one_of(
    st.builds(
        str.__add__,
        st.sampled_from(["x", "y", "", "x_count", "é"]),
        st.sampled_from(["", "_bucket", "_sum", "_count", "_gsum", "_gcount", "_total", "_info"]),
    ),
    TEXT,
)
LABEL_NAMES = st.one_of(st.sampled_from(["__name__", "job", "le", ""]), TEXT)
PAIRS = st.tuples(LABEL_NAMES, TEXT)


@st.composite
def labels(draw: st.DrawFn, max_size: int = 5) -> Labels:
    rest = tuple(draw(st.lists(PAIRS, max_size=max_size)))
    name = draw(st.none() | METRIC_NAMES)
    return rest if name is None else (("__name__", name), *rest)


SAMPLES = st.builds(Sample, DOUBLES, INT64)
SPANS = st.lists(st.tuples(INT32, st.integers(0, 2**32 - 1)), max_size=3).map(tuple)
DELTAS = st.lists(INT64, max_size=4).map(tuple)
HISTOGRAMS = st.builds(
    Histogram,
    count=st.integers(0, 2**64 - 1),
    sum=DOUBLES,
    schema=INT32,
    zero_threshold=DOUBLES,
    zero_count=st.integers(0, 2**64 - 1),
    positive_spans=SPANS,
    positive_deltas=DELTAS,
    negative_spans=SPANS,
    negative_deltas=DELTAS,
    reset_hint=st.integers(0, 3) | INT32,
    timestamp_ms=INT64,
)
EXEMPLARS = st.builds(Exemplar, labels(max_size=3), DOUBLES, INT64)
METRIC_TYPES = st.integers(0, 7) | INT32
SHORT_TEXT = st.just("") | st.text(max_size=6)
METADATA = st.none() | st.builds(Metadata, METRIC_TYPES, SHORT_TEXT, SHORT_TEXT)
SERIES = st.builds(
    Series,
    labels(),
    samples=st.lists(SAMPLES, max_size=4).map(tuple),
    histograms=st.lists(HISTOGRAMS, max_size=2).map(tuple),
    exemplars=st.lists(EXEMPLARS, max_size=2).map(tuple),
    metadata=METADATA,
)
REQUESTS = st.lists(SERIES, max_size=6)
V1_METADATA = st.lists(
    st.builds(MetricMetadata, METRIC_TYPES, TEXT, SHORT_TEXT, SHORT_TEXT), max_size=3
)

# --- counts straight from the input -----------------------------------------------------------

_STRIP = {
    3: ("_bucket", "_count", "_sum"),
    4: ("_bucket", "_gcount", "_gsum"),
    5: ("_count", "_sum"),
}


def metadata_families(series: Sequence[Series]) -> set[str]:
    """Mimir's remote write 2.0 metadata: distinct normalized names of described series."""
    families = set()
    for s in series:
        md = s.metadata
        if md is None or (md.type == 0 and md.help == "" and md.unit == ""):
            continue
        names = [v for n, v in s.labels if n == "__name__"]
        family = names[-1] if names else ""
        stripped = [family[: -len(x)] for x in _STRIP.get(md.type, ()) if family.endswith(x)]
        family = stripped[0] if stripped else family
        if family != "":
            families.add(family)
    return families


def input_counts(series: Sequence[Series], metadata: int) -> dict[str, int]:
    sizes = [len(s.labels) for s in series]
    return {
        "series": len(series),
        "samples": sum(len(s.samples) for s in series),
        "histograms": sum(len(s.histograms) for s in series),
        "exemplars": sum(len(s.exemplars) for s in series),
        "metadata": metadata,
        "label_pairs": sum(sizes),
        "max_labels_per_series": max(sizes, default=0),
        "max_label_name_length": max(
            (len(n.encode()) for s in series for n, _ in s.labels), default=0
        ),
        "max_label_value_length": max(
            (len(v.encode()) for s in series for _, v in s.labels), default=0
        ),
    }


def stats_counts(stats: WriteStats) -> dict[str, int]:
    return {k: getattr(stats, k) for k in COUNTS}


def check_stats(stats: WriteStats, raw: bytes, expected: dict[str, int]) -> None:
    assert stats_counts(stats) == expected
    assert stats.decoded_bytes == len(raw)
    assert stats.ingested == stats.samples + stats.histograms + stats.exemplars + stats.metadata


# --- encoder -> core --------------------------------------------------------------------------


@MEDIUM
@given(series=REQUESTS, metadata=V1_METADATA)
def test_v1_counts_match_the_input(series: list[Series], metadata: list[MetricMetadata]) -> None:
    raw = encode_v1(series, metadata)
    stats = scan_remote_write(compress(raw))
    check_stats(stats, raw, input_counts(series, len(metadata)))


@MEDIUM
@given(series=REQUESTS)
def test_v2_counts_match_the_input(series: list[Series]) -> None:
    raw = encode_v2(series)
    stats = scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)
    check_stats(stats, raw, input_counts(series, len(metadata_families(series))))


# --- encoder -> reference decoder -------------------------------------------------------------


@MEDIUM
@given(series=REQUESTS, metadata=V1_METADATA)
def test_reference_decoder_round_trips_v1(
    pb: Any, series: list[Series], metadata: list[MetricMetadata]
) -> None:
    raw = encode_v1(series, metadata)
    msg = pb.WriteRequest.FromString(raw)
    got, got_metadata = series_from_v1(msg)
    assert canonical(got) == canonical(without_metadata(series))
    assert got_metadata == metadata
    assert msg.SerializeToString() == raw
    assert reference_counts_v1(msg) == input_counts(series, len(metadata))


@MEDIUM
@given(series=REQUESTS)
def test_reference_decoder_round_trips_v2(pb: Any, series: list[Series]) -> None:
    raw = encode_v2(series)
    msg = pb.v2.Request.FromString(raw)
    assert canonical(series_from_v2(msg)) == canonical(series)
    symbols = list(msg.symbols)
    assert symbols[0] == ""
    assert len(set(symbols)) == len(symbols)
    assert msg.SerializeToString() == raw
    assert reference_counts_v2(msg) == input_counts(series, len(metadata_families(series)))


# --- snappy -----------------------------------------------------------------------------------


@FAST
@given(data=st.binary(max_size=4096) | st.binary(max_size=64).map(lambda b: b * 50))
def test_snappy_round_trip(data: bytes) -> None:
    body = snappy_compress(data)
    assert snappy_decompress(body) == data
    assert bytes(cramjam.snappy.decompress_raw(body)) == data
    assert snappy_decompress(bytes(cramjam.snappy.compress_raw(data))) == data


# --- anything in: WriteStats or RemoteWriteError out ------------------------------------------

CONTENT_TYPES = st.sampled_from([None, CONTENT_TYPE_V2])


def scan_or_error(body: bytes, encoding: str, content_type: str | None) -> WriteStats | None:
    """Scan; a RemoteWriteError is fine, anything else propagates and fails the test."""
    try:
        stats = scan_remote_write(body, content_encoding=encoding, content_type=content_type)
    except RemoteWriteError:
        return None
    assert isinstance(stats, WriteStats)
    return stats


@FAST
@given(
    body=st.binary(max_size=512),
    encoding=st.sampled_from(["identity", "snappy"]),
    content_type=CONTENT_TYPES,
)
def test_random_bytes_never_crash(body: bytes, encoding: str, content_type: str | None) -> None:
    scan_or_error(body, encoding, content_type)


@FAST
@given(body=st.binary(max_size=512), content_type=CONTENT_TYPES)
def test_random_snappy_payloads_never_crash(body: bytes, content_type: str | None) -> None:
    """Valid snappy around random bytes, so the protobuf scanner sees them."""
    scan_or_error(snappy_compress(body), "snappy", content_type)


MUTATIONS = st.lists(
    st.tuples(
        st.sampled_from(["flip", "set", "delete", "insert", "truncate"]),
        st.integers(0, 2**16),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=3,
)


def mutate(raw: bytes, mutations: Sequence[tuple[str, int, int]]) -> bytes:
    b = bytearray(raw)
    for kind, where, byte in mutations:
        i = where % (len(b) + 1)
        if kind == "insert":
            b.insert(i, byte)
        elif kind == "truncate":
            del b[i:]
        elif i < len(b):
            if kind == "flip":
                b[i] ^= 1 << (byte % 8)
            elif kind == "set":
                b[i] = byte
            else:
                del b[i]
    return bytes(b)


@MEDIUM
@given(series=REQUESTS, metadata=V1_METADATA, mutations=MUTATIONS)
def test_mutated_v1_bodies(
    pb: Any, series: list[Series], metadata: list[MetricMetadata], mutations: list[Any]
) -> None:
    """Never crashes; whenever both the core and the reference decoder accept the body,
    they count the same."""
    raw = mutate(encode_v1(series, metadata), mutations)
    stats = scan_or_error(raw, "identity", None)
    if stats is None:
        event("core refused")
        return
    try:
        msg = pb.WriteRequest.FromString(raw)
    except DecodeError:  # e.g. invalid UTF-8, which the core (like Mimir) does not check
        event("only the core accepted")
        return
    event("compared")
    assert stats_counts(stats) == reference_counts_v1(msg)


@MEDIUM
@given(series=REQUESTS, mutations=MUTATIONS)
def test_mutated_v2_bodies(pb: Any, series: list[Series], mutations: list[Any]) -> None:
    """Never crashes; when the mutated body is still canonical (the reference serializer
    writes it back byte for byte: no repeated or reordered fields) and the core accepts it,
    the counts agree with the reference decoder."""
    raw = mutate(encode_v2(series), mutations)
    stats = scan_or_error(raw, "identity", CONTENT_TYPE_V2)
    if stats is None:
        event("core refused")
        return
    try:
        msg = pb.v2.Request.FromString(raw)
    except DecodeError:
        event("only the core accepted")
        return
    if msg.SerializeToString() != raw:
        event("not canonical")
        return
    event("compared")
    assert stats_counts(stats) == reference_counts_v2(msg)
