"""Synthetic bodies, corpus loading, durations and the latency histogram (no network)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from mimir_edge import (
    CONTENT_TYPE_V2,
    MalformedProtobufError,
    scan_remote_write,
    snappy_decompress,
)
from mimir_edge.loadgen import (
    CorpusError,
    LatencyHistogram,
    load_corpus,
    make_bodies,
    parse_duration,
)
from mimir_edge.loadgen.bodies import build_templates
from mimir_edge.loadgen.series import realistic_series
from tests.conftest import CorpusFile, corpus_dir


def test_one_scrape_of_realistic_series_in_requests_of_the_asked_size(pb: Any) -> None:
    bodies = make_bodies(series=1200, samples_per_request=500, timestamp_ms=1_700_000_000_000)
    assert [b.stats.samples for b in bodies] == [500, 500, 200]
    names: set[str] = set()
    seen: set[tuple[tuple[str, str], ...]] = set()
    for body in bodies:
        assert scan_remote_write(body.data) == body.stats
        req = pb.WriteRequest.FromString(snappy_decompress(body.data))
        for ts in req.timeseries:
            labels = tuple((lb.name, lb.value) for lb in ts.labels)
            assert labels[0][0] == "__name__"
            assert list(labels) == sorted(labels), "labels sorted as Prometheus sends them"
            assert {"job", "instance"} <= {n for n, _ in labels}
            assert [s.timestamp for s in ts.samples] == [1_700_000_000_000]
            names.add(labels[0][1])
            seen.add(labels)
    assert len(seen) == 1200, "every series distinct"
    # node_exporter, kube-state-metrics and application series
    assert {"node_cpu_seconds_total", "kube_pod_status_phase", "http_requests_total"} <= names


def test_exemplars_and_native_histograms_when_asked(pb: Any) -> None:
    plain = make_bodies(series=2000)
    assert sum(b.stats.exemplars + b.stats.histograms for b in plain) == 0
    rich = make_bodies(series=2000, exemplars=True, histograms=True)
    assert sum(b.stats.exemplars for b in rich) > 0
    assert sum(b.stats.histograms for b in rich) > 0
    # Prometheus counts a request's exemplars against max_samples_per_send too.
    assert all(b.stats.samples + b.stats.histograms + b.stats.exemplars <= 500 for b in rich)
    req = pb.WriteRequest.FromString(snappy_decompress(rich[0].data))
    exemplar_labels = {lb.name for ts in req.timeseries for e in ts.exemplars for lb in e.labels}
    assert exemplar_labels == {"trace_id"}
    assert any(h.schema == 3 for ts in req.timeseries for h in ts.histograms)


def test_remote_write_2_bodies_are_2_0_with_metadata(pb: Any) -> None:
    bodies = make_bodies(series=800, protocol=2, exemplars=True, histograms=True)
    for body in bodies:
        stats = scan_remote_write(body.data, content_type=CONTENT_TYPE_V2)
        assert stats == body.stats
        assert stats.metadata > 0
        with pytest.raises(MalformedProtobufError):
            scan_remote_write(body.data)  # not a 1.0 body
        req = pb.v2.Request.FromString(snappy_decompress(body.data))
        assert req.symbols[0] == ""
        assert req.symbols[1] == "__name__"


def test_restamping_changes_only_timestamps(pb: Any) -> None:
    specs = realistic_series(300, native_histograms=True)
    (template,) = build_templates(specs, samples_per_request=1000, exemplars=True)
    a = pb.WriteRequest.FromString(snappy_decompress(template.stamped(1_800_000_000_000)))
    b = pb.WriteRequest.FromString(snappy_decompress(template.stamped(1_800_000_000_123)))
    stamps = {s.timestamp for ts in b.timeseries for s in ts.samples}
    stamps |= {h.timestamp for ts in b.timeseries for h in ts.histograms}
    stamps |= {e.timestamp for ts in b.timeseries for e in ts.exemplars}
    assert stamps == {1_800_000_000_123}
    for x, y in zip(a.timeseries, b.timeseries, strict=True):
        assert x.labels == y.labels
        assert [s.value for s in x.samples] == [s.value for s in y.samples]


def test_corpus_counts_equal_its_manifest(corpus: list[CorpusFile]) -> None:
    bodies = load_corpus(corpus_dir())
    assert [b.name for b in bodies] == [c.name for c in corpus]
    for body, c in zip(bodies, corpus, strict=True):
        assert body.data == c.body
        for key in ("series", "samples", "exemplars", "histograms", "metadata"):
            assert getattr(body.stats, key) == c.expected[key], (c.name, key)


def test_corpus_problems_are_named(tmp_path: Path) -> None:
    with pytest.raises(CorpusError, match="not a directory"):
        load_corpus(tmp_path / "missing")
    with pytest.raises(CorpusError, match="no body files"):
        load_corpus(tmp_path)
    (tmp_path / "bad.snappy").write_bytes(b"\xff\xff\xff\xff\x0fnot snappy")
    with pytest.raises(CorpusError, match=r"bad\.snappy is not a remote write 1\.0 body"):
        load_corpus(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps([{"file": "gone.snappy"}]))
    with pytest.raises(CorpusError, match=r"gone\.snappy"):
        load_corpus(tmp_path)
    with pytest.raises(CorpusError, match=r"not a remote write 2\.0 body"):
        load_corpus(corpus_dir(), protocol=2)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("500ms", 0.5),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("2m30s", 150.0),
        ("250us", 0.00025),
        ("10", 10.0),
        ("2.5", 2.5),
    ],
)
def test_durations_go_style_and_plain_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5x", "s", "-5s", "5 m", "1h-5m", "ten"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_latency_percentiles_within_two_percent() -> None:
    h = LatencyHistogram()
    for i in range(1, 1001):
        h.add(i / 1000.0)  # 1 ms .. 1 s
    assert h.quantile(0.5) == pytest.approx(0.5, rel=0.02)
    assert h.quantile(0.99) == pytest.approx(0.99, rel=0.02)
    assert h.max == 1.0
    assert LatencyHistogram().quantile(0.5) == 0.0
