"""What the core counts, checked against the corpus manifest, the reference decoder and Mimir's
remote write 2.0 metadata rule (docs/research-mimir.md, point 1).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import cramjam
import pytest

import mimir_edge
from mimir_edge import (
    CONTENT_TYPE_V1,
    CONTENT_TYPE_V2,
    MalformedProtobufError,
    WriteStats,
    scan_remote_write,
)
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Metadata,
    MetricType,
    Sample,
    Series,
    compress,
    encode_v1,
    encode_v2,
    varint,
)
from tests.conftest import CorpusFile, corpus_dir
from tests.test_encode import series_from_v1

#: WriteStats attribute for each count key of the corpus manifest.
MANIFEST_TO_STATS = {
    "series": "series",
    "samples": "samples",
    "exemplars": "exemplars",
    "histograms": "histograms",
    "metadata": "metadata",
    "label_pairs": "label_pairs",
    "max_labels_per_series": "max_labels_per_series",
    "max_label_name_len": "max_label_name_length",
    "max_label_value_len": "max_label_value_length",
}
COUNTS = list(MANIFEST_TO_STATS.values())
#: What survives re-encoding a 1.0 request as 2.0 (2.0 has no top-level metadata).
SERIES_COUNTS = [k for k in COUNTS if k != "metadata"]

CORPUS_NAMES = [e["file"] for e in json.loads((corpus_dir() / "manifest.json").read_text())]


def counts(stats: WriteStats) -> dict[str, int]:
    return {k: getattr(stats, k) for k in COUNTS}


# --- independent counts from a reference-decoder parse ----------------------------------------


def _label_counts(label_sets: Sequence[Sequence[tuple[str, str]]]) -> dict[str, int]:
    names = [len(n.encode()) for labels in label_sets for n, _ in labels]
    values = [len(v.encode()) for labels in label_sets for _, v in labels]
    return {
        "series": len(label_sets),
        "label_pairs": sum(len(labels) for labels in label_sets),
        "max_labels_per_series": max((len(labels) for labels in label_sets), default=0),
        "max_label_name_length": max(names, default=0),
        "max_label_value_length": max(values, default=0),
    }


def reference_counts_v1(msg: Any) -> dict[str, int]:
    """Counts of a parsed ``prometheus.WriteRequest``."""
    return {
        **_label_counts([[(lb.name, lb.value) for lb in ts.labels] for ts in msg.timeseries]),
        "samples": sum(len(ts.samples) for ts in msg.timeseries),
        "exemplars": sum(len(ts.exemplars) for ts in msg.timeseries),
        "histograms": sum(len(ts.histograms) for ts in msg.timeseries),
        "metadata": len(msg.metadata),
    }


#: Suffixes Mimir's normalizeMetricName strips, by metric type (at most one, first match).
_FAMILY_SUFFIXES = {
    3: ("_bucket", "_count", "_sum"),  # HISTOGRAM
    4: ("_bucket", "_gcount", "_gsum"),  # GAUGEHISTOGRAM
    5: ("_count", "_sum"),  # SUMMARY
}


def reference_counts_v2(msg: Any) -> dict[str, int]:
    """Counts of a parsed ``io.prometheus.write.v2.Request``; metadata by Mimir's rule."""
    sym = list(msg.symbols)
    label_sets: list[list[tuple[str, str]]] = []
    families: set[str] = set()
    for ts in msg.timeseries:
        refs = list(ts.labels_refs)
        labels = [(sym[refs[i]], sym[refs[i + 1]]) for i in range(0, len(refs), 2)]
        label_sets.append(labels)
        md = ts.metadata
        # An absent ref (0 on a canonical wire) is "": Mimir resolves only refs it reads.
        help_, unit = (
            (sym[md.help_ref] if md.help_ref else ""),
            (sym[md.unit_ref] if md.unit_ref else ""),
        )
        if not ts.HasField("metadata") or not (md.type != 0 or help_ or unit):
            continue
        name = ""
        for n, v in labels:
            if n == "__name__":
                name = v
        for suffix in _FAMILY_SUFFIXES.get(md.type, ()):
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        if name:
            families.add(name)
    return {
        **_label_counts(label_sets),
        "samples": sum(len(ts.samples) for ts in msg.timeseries),
        "exemplars": sum(len(ts.exemplars) for ts in msg.timeseries),
        "histograms": sum(len(ts.histograms) for ts in msg.timeseries),
        "metadata": len(families),
    }


def reference_counts(msg: Any) -> dict[str, int]:
    """Counts of a parsed 1.0 or 2.0 request."""
    if msg.DESCRIPTOR.full_name == "io.prometheus.write.v2.Request":
        return reference_counts_v2(msg)
    return reference_counts_v1(msg)


# --- the corpus -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus_by_name(corpus: list[CorpusFile]) -> dict[str, CorpusFile]:
    return {f.name: f for f in corpus}


def _decompress(body: bytes) -> bytes:
    return bytes(cramjam.snappy.decompress_raw(body))


def test_corpus_is_complete(corpus: list[CorpusFile]) -> None:
    assert [f.name for f in corpus] == CORPUS_NAMES
    assert len(CORPUS_NAMES) > 0


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_counts_match_the_manifest(
    name: str, corpus_by_name: dict[str, CorpusFile], pb: Any
) -> None:
    f = corpus_by_name[name]
    expected = {MANIFEST_TO_STATS[k]: f.expected[k] for k in MANIFEST_TO_STATS}
    assert len(f.body) == f.expected["compressed_bytes"]

    stats = scan_remote_write(f.body)
    assert counts(stats) == expected
    assert stats.ingested == stats.samples + stats.histograms + stats.exemplars + stats.metadata
    assert stats.decoded_bytes == f.expected["raw_bytes"]
    assert stats.as_dict() == {
        **expected,
        "decoded_bytes": stats.decoded_bytes,
        "ingested": stats.ingested,
    }
    assert scan_remote_write(f.body, content_type=CONTENT_TYPE_V1) == stats

    raw = _decompress(f.body)
    assert len(raw) == f.expected["raw_bytes"]
    assert reference_counts(pb.WriteRequest.FromString(raw)) == expected
    assert scan_remote_write(raw, content_encoding="identity") == stats


@pytest.mark.parametrize("name", CORPUS_NAMES)
def test_corpus_reencoded_as_v2_counts_the_same(
    name: str, corpus_by_name: dict[str, CorpusFile], pb: Any
) -> None:
    f = corpus_by_name[name]
    series, _ = series_from_v1(pb.WriteRequest.FromString(_decompress(f.body)))
    raw = encode_v2(series)
    v1 = scan_remote_write(f.body)
    v2 = scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)
    assert {k: getattr(v2, k) for k in SERIES_COUNTS} == {k: getattr(v1, k) for k in SERIES_COUNTS}
    assert v2.metadata == 0
    assert v2.decoded_bytes == len(raw)
    assert reference_counts(pb.v2.Request.FromString(raw)) == counts(v2)
    # And back to 1.0 with our encoder: the same request, the same counts.
    assert counts(scan_remote_write(compress(encode_v1(series)))) == {**counts(v1), "metadata": 0}


# --- remote write 2.0 metadata ----------------------------------------------------------------


def named(name: str, md: Metadata | None, *extra: tuple[str, str]) -> Series:
    return Series((("__name__", name), *extra), samples=(Sample(1.0, 1),), metadata=md)


H = Metadata(MetricType.HISTOGRAM, "Latency.", "seconds")
S = Metadata(MetricType.SUMMARY)
GH = Metadata(MetricType.GAUGEHISTOGRAM)
C = Metadata(MetricType.COUNTER)
G = Metadata(MetricType.GAUGE)

METADATA_CASES: list[tuple[str, list[Series], int]] = [
    ("histogram_family", [named("x_bucket", H), named("x_sum", H), named("x_count", H)], 1),
    (
        "classic_histogram_with_buckets",
        [named("x_bucket", H, ("le", le)) for le in ("0.1", "1", "+Inf")]
        + [named("x_sum", H), named("x_count", H)],
        1,
    ),
    ("type_0_empty_help_unit", [named("x", Metadata(0)), named("y", Metadata(0, "", ""))], 0),
    ("no_metadata_field", [named("x", None)], 0),
    ("help_only", [named("x", Metadata(0, help="Help."))], 1),
    ("unit_only", [named("x", Metadata(0, unit="bytes"))], 1),
    ("counter_keeps_total", [named("foo_total", C), named("foo", C)], 2),
    ("distinct_families", [named("a", G), named("b", G), named("c", C), named("a", G)], 3),
    ("same_family_many_series", [named("a", G, ("i", str(i))) for i in range(5)], 1),
    ("no_metric_name", [Series((("job", "x"),), samples=(Sample(1.0, 1),), metadata=C)], 0),
    ("no_labels", [Series((), metadata=H)], 0),
    ("empty_metric_name", [named("", C)], 0),
    ("suffix_only_name", [named("_count", H), named("_sum", S), named("_bucket", GH)], 0),
    ("untyped_bucket_is_its_own_family", [named("x_bucket", Metadata(0, "h")), named("x", H)], 2),
    ("summary", [named("x", S, ("quantile", "0.5")), named("x_count", S), named("x_sum", S)], 1),
    ("summary_keeps_bucket", [named("x_bucket", S), named("x", S)], 2),
    (
        "gauge_histogram",
        [named("x_bucket", GH), named("x_gcount", GH), named("x_gsum", GH), named("x", GH)],
        1,
    ),
    ("histogram_keeps_gsum", [named("x_gsum", H), named("x", H)], 2),
    ("one_suffix_only", [named("x_count_sum", H), named("x_count", H)], 2),
    ("info_keeps_info", [named("build_info", Metadata(MetricType.INFO)), named("build", G)], 2),
    ("counter_count", [named("x_count", C), named("x", C)], 2),
    ("types_dedupe_by_family", [named("x_count", H), named("x", G)], 1),
    ("unknown_type_not_stripped", [named("x_count", Metadata(42)), named("x", Metadata(42))], 2),
    ("negative_type_counts", [named("x", Metadata(-1))], 1),
    ("last_name_label_wins", [named("a", C, ("__name__", "b")), named("b", C)], 1),
    (
        "native_histogram_family",
        [Series((("__name__", "lat"),), histograms=(Histogram(),), metadata=H)],
        1,
    ),
]


@pytest.mark.parametrize(
    ("series", "expected"),
    [pytest.param(s, n, id=i) for i, s, n in METADATA_CASES],
)
def test_v2_metadata_counts_families(pb: Any, series: list[Series], expected: int) -> None:
    raw = encode_v2(series)
    stats = scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)
    assert stats.metadata == expected
    assert stats.ingested == stats.samples + stats.histograms + expected
    # The reference helper agrees on the whole count set.
    assert reference_counts(pb.v2.Request.FromString(raw)) == counts(stats)


def _v2_request(symbols: Sequence[str], series_bodies: Sequence[bytes]) -> bytes:
    out = bytearray()
    for s in symbols:
        b = s.encode()
        out += b"\x22" + bytes([len(b)]) + b
    for body in series_bodies:
        out += b"\x2a" + bytes([len(body)]) + body
    return bytes(out)


def scan_raw_v2(raw: bytes) -> WriteStats:
    return scan_remote_write(raw, content_encoding="identity", content_type=CONTENT_TYPE_V2)


def test_v2_metadata_before_the_name_is_dropped() -> None:
    """Mimir reads the name as it goes: metadata on the wire before labels_refs has no name."""
    symbols = ["", "__name__", "foo", "Help."]
    labels = b"\x0a\x02\x01\x02"
    md = b"\x2a\x04\x08\x01\x18\x03"  # Metadata{type COUNTER, help_ref 3}
    assert scan_raw_v2(_v2_request(symbols, [labels + md])).metadata == 1
    assert scan_raw_v2(_v2_request(symbols, [md + labels])).metadata == 0


def test_v2_repeated_help_ref_last_one_wins(pb: Any) -> None:
    symbols = ["", "__name__", "foo", "Help."]
    md = b"\x18\x03\x18\x00"  # Metadata{help_ref 3, help_ref 0}: help is "" after merging
    raw = _v2_request(symbols, [b"\x0a\x02\x01\x02" + b"\x2a" + bytes([len(md)]) + md])
    assert pb.v2.Request.FromString(raw).timeseries[0].metadata.help_ref == 0
    assert scan_raw_v2(raw).metadata == 0


@pytest.mark.parametrize(
    ("metric_type", "names", "expected"),
    [
        pytest.param(2**32, ["foo"], 0, id="type_2_32_is_unspecified"),
        pytest.param(2**32 + 3, ["x_count", "x_bucket"], 1, id="type_2_32_plus_3_is_histogram"),
    ],
)
def test_v2_metadata_type_is_int32(
    pb: Any, metric_type: int, names: list[str], expected: int
) -> None:
    symbols = ["", "__name__", *names]
    md = b"\x08" + varint(metric_type)
    bodies = [
        b"\x0a\x02\x01" + bytes([2 + i]) + b"\x2a" + bytes([len(md)]) + md
        for i in range(len(names))
    ]
    raw = _v2_request(symbols, bodies)
    assert reference_counts(pb.v2.Request.FromString(raw))["metadata"] == expected
    assert scan_raw_v2(raw).metadata == expected


# --- native histograms ------------------------------------------------------------------------

NATIVE_SERIES = [
    Series(
        (("__name__", "rpc_latency_seconds"), ("job", "api")),
        histograms=(
            Histogram(
                count=3,
                sum=1.5,
                schema=3,
                positive_spans=((0, 2),),
                positive_deltas=(1, 1),
                timestamp_ms=1000,
            ),
            Histogram(
                count=9,
                sum=4.0,
                schema=3,
                zero_count=1,
                positive_spans=((0, 3),),
                positive_deltas=(2, 1, 1),
                timestamp_ms=2000,
            ),
        ),
        exemplars=(Exemplar((("trace_id", "t1"),), 0.7, 1500),),
        metadata=Metadata(MetricType.HISTOGRAM, "RPC latency."),
    ),
    Series(
        (("__name__", "queue_depth"),),
        samples=(Sample(4.0, 1000), Sample(5.0, 2000)),
        histograms=(Histogram(count=1, timestamp_ms=3000),),
        metadata=Metadata(MetricType.GAUGE),
    ),
]


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_native_histograms_count_one_each(pb: Any, version: str) -> None:
    if version == "v1":
        raw = encode_v1(NATIVE_SERIES)
        stats = scan_remote_write(compress(raw))
        ref = reference_counts(pb.WriteRequest.FromString(raw))
        metadata = 0
    else:
        raw = encode_v2(NATIVE_SERIES)
        stats = scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)
        ref = reference_counts(pb.v2.Request.FromString(raw))
        metadata = 2
    assert (stats.series, stats.samples, stats.histograms, stats.exemplars) == (2, 2, 3, 1)
    assert stats.metadata == metadata
    assert stats.ingested == 2 + 3 + 1 + metadata
    assert ref == counts(stats)


# --- content type and encoding routing --------------------------------------------------------


def test_v2_body_sent_as_v1_is_refused() -> None:
    body = compress(encode_v2(NATIVE_SERIES))
    for content_type in (None, "", CONTENT_TYPE_V1, "application/x-protobuf"):
        with pytest.raises(MalformedProtobufError) as err:
            scan_remote_write(body, content_type=content_type)
        assert err.value.reason == "wrong_protocol"
        assert isinstance(err.value, mimir_edge.RemoteWriteError)


def test_v1_body_sent_as_v2_is_refused() -> None:
    for raw in (encode_v1(NATIVE_SERIES), encode_v1([Series((("a", "b"),))])):
        with pytest.raises(MalformedProtobufError) as err:
            scan_remote_write(compress(raw), content_type=CONTENT_TYPE_V2)
        assert err.value.reason == "wrong_protocol"


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_identity_encoding_counts_the_same(version: str) -> None:
    raw = encode_v1(NATIVE_SERIES) if version == "v1" else encode_v2(NATIVE_SERIES)
    content_type = CONTENT_TYPE_V1 if version == "v1" else CONTENT_TYPE_V2
    snappy = scan_remote_write(compress(raw), content_type=content_type)
    identity = scan_remote_write(raw, content_encoding="identity", content_type=content_type)
    assert identity == snappy
    assert identity.decoded_bytes == len(raw)
