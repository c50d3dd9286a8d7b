"""Load runs against real local HTTP servers: what the report says equals what they saw."""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any

from mimir_edge import CONTENT_TYPE_V2, scan_remote_write, snappy_decompress
from mimir_edge.loadgen import LoadConfig, run
from tests.conftest import corpus_dir, load_corpus
from tests.e2e.harness import RecordingUpstream
from tests.loadgen.servers import StatusServer


def test_every_body_decodes_and_sent_samples_equal_what_the_server_counted(pb: Any) -> None:
    with RecordingUpstream() as up:
        cfg = LoadConfig(
            url=up.url + "/api/v1/push",
            tenants=("team-a", "team-b"),
            concurrency=4,
            requests=60,
            series=1000,
            samples_per_request=100,
        )
        report = run(cfg)
        got = up.requests
    assert len(got) == report.requests == 60
    per_tenant: Counter[str] = Counter()
    samples: Counter[str] = Counter()
    last_ts: dict[tuple[tuple[str, str], ...], int] = {}
    for r in got:
        assert r.method == "POST"
        assert r.path == "/api/v1/push"
        assert r.header("Content-Encoding") == "snappy"
        assert r.header("Content-Type") == "application/x-protobuf"
        assert r.header("X-Prometheus-Remote-Write-Version") == "0.1.0"
        tenant = r.header("X-Scope-OrgID")
        assert tenant is not None
        per_tenant[tenant] += 1
        samples[tenant] += scan_remote_write(r.body, content_type=r.header("Content-Type")).samples
        for ts in pb.WriteRequest.FromString(snappy_decompress(r.body)).timeseries:
            key = (("tenant", tenant), *((lb.name, lb.value) for lb in ts.labels))
            for s in ts.samples:  # per series, timestamps only go up
                assert s.timestamp > last_ts.get(key, 0)
                last_ts[key] = s.timestamp
    assert report.status == {200: 60}
    assert report.sent.samples == report.accepted.samples == sum(samples.values())
    for tenant in ("team-a", "team-b"):
        t = report.tenants[tenant]
        assert t.requests == per_tenant[tenant]
        assert abs(t.requests - 30) <= cfg.concurrency  # each worker alternates tenants
        assert t.sent.samples == samples[tenant]


def test_status_counts_match_the_server_and_only_2xx_is_accepted() -> None:
    with StatusServer([200, 429, 204, 503, 429, 400]) as server:
        report = run(LoadConfig(url=server.url, concurrency=3, requests=48, series=300))
        answered = server.answered
    assert report.status == dict(Counter(a.status for a in answered))
    assert report.status == {200: 8, 204: 8, 400: 8, 429: 16, 503: 8}
    ok = [a for a in answered if 200 <= a.status < 300]
    assert report.accepted.samples == sum(scan_remote_write(a.body).samples for a in ok)
    assert report.sent.samples == sum(scan_remote_write(a.body).samples for a in answered)
    assert report.accepted.samples < report.sent.samples
    assert report.examples[429] == "refused with 429 by the test server"
    assert report.connection_errors == 0


def test_a_keep_alive_connection_closed_by_the_server_is_reopened_not_counted_as_error() -> None:
    with StatusServer([200], close_every=3) as server:
        report = run(LoadConfig(url=server.url, concurrency=2, requests=30, series=100))
        answered = server.answered
    assert report.errors == {}
    assert report.status == {200: 30}
    assert len(answered) == 30


def test_requests_bound_is_exact_in_both_loops() -> None:
    with RecordingUpstream() as up:
        closed = run(LoadConfig(url=up.url, concurrency=8, requests=37, series=100))
        assert len(up.requests) == closed.requests == 37
        up.clear()
        opened = run(LoadConfig(url=up.url, concurrency=8, requests=25, rate=500, series=100))
        assert len(up.requests) == opened.requests == 25


def test_open_loop_sends_rate_times_duration() -> None:
    with RecordingUpstream() as up:
        cfg = LoadConfig(url=up.url, concurrency=4, rate=50, duration_s=2.0, series=100)
        report = run(cfg)
        received = len(up.requests)
    # 100 sends come due; a loaded machine may skip some, never send more.
    assert received == report.requests
    assert 100 - cfg.concurrency - 5 <= report.requests + report.skipped <= 100


def test_open_loop_counts_skipped_sends_instead_of_slowing_down() -> None:
    # 2 workers, each answer takes 0.2 s: at most ~10 sends/s can start, 40/s come due.
    with StatusServer([200], delay_s=0.2) as server:
        cfg = LoadConfig(url=server.url, concurrency=2, rate=40, duration_s=1.0, series=10)
        report = run(cfg)
    assert report.requests <= 14
    assert report.skipped >= 20
    assert report.requests + report.skipped <= 40


def test_remote_write_2_with_exemplars_and_histograms(pb: Any) -> None:
    with RecordingUpstream() as up:
        cfg = LoadConfig(
            url=up.url,
            protocol=2,
            exemplars=True,
            histograms=True,
            requests=10,
            concurrency=2,
            series=2000,
        )
        report = run(cfg)
        got = up.requests
    assert {r.header("Content-Type") for r in got} == {CONTENT_TYPE_V2}
    assert {r.header("X-Prometheus-Remote-Write-Version") for r in got} == {"2.0.0"}
    stats = [scan_remote_write(r.body, content_type=CONTENT_TYPE_V2) for r in got]
    assert sum(s.exemplars for s in stats) == report.sent.exemplars > 0
    assert sum(s.histograms for s in stats) == report.sent.histograms > 0
    assert sum(s.samples for s in stats) == report.sent.samples
    assert all(pb.v2.Request.FromString(snappy_decompress(r.body)).timeseries for r in got)


def test_corpus_replay_sends_the_real_files_with_their_manifest_counts() -> None:
    corpus = load_corpus()
    with RecordingUpstream() as up:
        cfg = LoadConfig(url=up.url, corpus=corpus_dir(), concurrency=1, requests=len(corpus))
        report = run(cfg)
        got = up.requests
    assert [r.body for r in got] == [c.body for c in corpus]
    for key in ("samples", "exemplars", "histograms", "metadata"):
        assert getattr(report.sent, key) == sum(c.expected[key] for c in corpus), key


def test_stop_ends_the_run_early_and_still_reports() -> None:
    stop = threading.Event()
    with RecordingUpstream() as up:
        timer = threading.Timer(0.5, stop.set)
        timer.start()
        report = run(LoadConfig(url=up.url, duration_s=60, series=100, rate=100), stop=stop)
        timer.cancel()
        received = len(up.requests)
    assert report.interrupted
    assert 0 < report.requests == received
    assert report.elapsed_s < 30
