"""`mimir-edge rls` as a process: admin API, worker restarts, limit reloads, gRPC health,
settings from the environment. Checks are sent straight over gRPC (raw bytes, as Envoy
sends them); everything listens on 127.0.0.1 and is stopped by its ``with`` block."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2 as ea
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mimir_edge.cli import build_parser
from mimir_edge.encode import Sample, Series, compress, encode_v1
from mimir_edge.rls.logs import DenyLogger
from tests.e2e.rls_process import RlsProcess
from tests.rls.test_engine import check_request

BODY = compress(
    encode_v1([Series((("__name__", f"m{i}"),), samples=(Sample(1.0, 1),)) for i in range(100)])
)
TOKEN = "t0ken"


def check(rls: RlsProcess, tenant: str, header: str = "x-scope-orgid") -> Any:
    req = check_request(None, BODY, extra={header: tenant})
    with grpc.insecure_channel(f"127.0.0.1:{rls.grpc_port}") as ch:
        call = ch.unary_unary("/envoy.service.auth.v3.Authorization/Check")
        return ea.CheckResponse.FromString(call(req, timeout=5))


def request(
    rls: RlsProcess, method: str, path: str, body: bytes = b"", token: str | None = None
) -> tuple[int, Any]:
    req = urllib.request.Request(rls.http_url + path, data=body or None, method=method)
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def tenants(rls: RlsProcess) -> dict[str, dict[str, Any]]:
    return {r["tenant"]: r for r in request(rls, "GET", "/api/v1/tenants")[1]}


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    p = tmp_path / "runtime.yaml"
    p.write_text(
        "overrides:\n  a:\n    ingestion_rate: 0.001\n    ingestion_burst_size: 1000\n"
        "  b:\n    ingestion_rate: 0.001\n    ingestion_burst_size: 1000\n"
    )
    return p


def test_admin_api(tmp_path: Path, overrides: Path) -> None:
    with RlsProcess(tmp_path, "--overrides", str(overrides), "--admin-token", TOKEN) as rls:
        status, doc = request(rls, "GET", "/api/v1/limits")
        assert status == 200
        assert doc["overrides"]["a"]["ingestion_burst_size"] == 1000
        new = json.dumps(
            {"overrides": {"a": {"ingestion_rate": 0.001, "ingestion_burst_size": 150}}}
        ).encode()
        assert request(rls, "PUT", "/api/v1/limits", new)[0] == 401
        assert request(rls, "PUT", "/api/v1/limits", new, token="wrong")[0] == 401
        assert request(rls, "PUT", "/api/v1/limits", b"{nope", token=TOKEN)[0] == 400
        bad = json.dumps({"overrides": {"a": {"ingestion_rate": -1}}}).encode()
        status, doc = request(rls, "PUT", "/api/v1/limits", bad, token=TOKEN)
        assert (status, doc["error"]) == (400, "overrides.a: ingestion_rate must be >= 0, got -1")
        status, doc = request(rls, "PUT", "/api/v1/limits", new, token=TOKEN)
        assert status == 200
        time.sleep(0.6)  # every worker follows the published generation
        # Whichever worker answers, "a" now has a burst of 150: one push of 100 passes.
        assert [check(rls, "a").status.code for _ in range(2)] == [0, 8]
        row = tenants(rls)["a"]
        assert row["limits"]["ingestion_burst_size"] == 150
        assert row["ingestion_fill"] == pytest.approx(50 / 150, abs=0.01)
        assert row["denied_requests"] == 1
        assert request(rls, "GET", "/api/v1/tenants/a")[1]["tenant"] == "a"
        assert request(rls, "GET", "/api/v1/tenants/zzz")[0] == 404


def test_admin_writes_refused_without_a_token(tmp_path: Path) -> None:
    with RlsProcess(tmp_path) as rls:
        assert request(rls, "PUT", "/api/v1/limits", b"{}", token="x")[0] == 403


def test_dead_worker_is_restarted_and_tokens_survive(tmp_path: Path, overrides: Path) -> None:
    with RlsProcess(tmp_path, "--overrides", str(overrides)) as rls:
        assert rls.proc is not None
        for _ in range(3):
            assert check(rls, "a").status.code == 0
        assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(700, abs=1)
        children = Path(f"/proc/{rls.proc.pid}/task/{rls.proc.pid}/children")
        before = set(children.read_text().split())
        os.kill(int(sorted(before)[0]), signal.SIGKILL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(children.read_text().split())
            if len(now) == 2 and now != before and rls.get("/readyz")[0] == 200:
                break
            time.sleep(0.1)
        else:
            pytest.fail(f"worker not restarted: {before} -> {now}")
        time.sleep(0.5)
        # The table lives in shared memory: the tenant's tokens are where they were.
        assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(700, abs=1)
        assert [check(rls, "a").status.code for _ in range(8)] == [0] * 7 + [8]
        assert '"worker exited; restarting"' in rls.log()


def test_overrides_file_is_followed(tmp_path: Path, overrides: Path) -> None:
    with RlsProcess(
        tmp_path, "--overrides", str(overrides), "--overrides-poll-seconds", "0.2"
    ) as rls:
        assert check(rls, "a").status.code == 0
        assert check(rls, "b").status.code == 0
        overrides.write_text(
            "overrides:\n  a:\n    ingestion_rate: 0.001\n"
            "    ingestion_burst_size: 1000\n"
            "  b:\n    ingestion_rate: 0.001\n    ingestion_burst_size: 100\n"
        )
        deadline = time.monotonic() + 5
        while (
            request(rls, "GET", "/api/v1/limits")[1]["overrides"]["b"]["ingestion_burst_size"]
            != 100
        ):
            assert time.monotonic() < deadline, "overrides change not applied"
            time.sleep(0.1)
        time.sleep(0.5)
        assert check(rls, "b").status.code == 0  # 900 tokens earned, capped at the new 100
        assert check(rls, "b").status.code == 8
        # "a" is untouched: its bucket was not reset (900 left before, still 900).
        assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(900, abs=1)
        # A broken file keeps the last good set.
        overrides.write_text("overrides: [not, a, map]\n")
        time.sleep(1)
        assert (
            request(rls, "GET", "/api/v1/limits")[1]["overrides"]["b"]["ingestion_burst_size"]
            == 100
        )
        assert "cannot be loaded; keeping the last good set" in rls.log()


def test_an_unchanged_overrides_file_keeps_limits_fresh(tmp_path: Path, overrides: Path) -> None:
    """Each poll that reads the same, valid file confirms the limits (LimitsStale stays quiet
    for an RLS that follows a file or a mounted ConfigMap); a broken file does not."""
    with RlsProcess(
        tmp_path, "--overrides", str(overrides), "--overrides-poll-seconds", "0.2"
    ) as rls:
        time.sleep(2)
        assert rls.metric("rls_limits_stale_seconds") < 1
        overrides.write_text("overrides: [not, a, map]\n")
        time.sleep(2)
        assert rls.metric("rls_limits_stale_seconds") >= 1.5
        overrides.unlink()
        time.sleep(0.5)
        assert rls.metric("rls_limits_stale_seconds") >= 2


def test_grpc_health_and_settings_from_environment(tmp_path: Path) -> None:
    env = {"MIMIR_EDGE_TENANT_HEADER": "X-Tenant", "MIMIR_EDGE_DEFAULT_INGESTION_BURST_SIZE": "50"}
    os.environ.update(env)
    try:
        with RlsProcess(tmp_path) as rls:
            with grpc.insecure_channel(f"127.0.0.1:{rls.grpc_port}") as ch:
                stub = health_pb2_grpc.HealthStub(ch)
                for service in ("", "envoy.service.auth.v3.Authorization"):
                    resp = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
                    assert resp.status == health_pb2.HealthCheckResponse.SERVING
            r = check(rls, "t", header="x-tenant")
            assert r.denied_response.status.code == 429  # 100 items > the default burst 50
            assert check(rls, "t", header="x-scope-orgid").denied_response.status.code == 401
    finally:
        for k in env:
            del os.environ[k]


def test_help_documents_every_flag_and_its_environment_variable() -> None:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    rls = sub.choices["rls"]
    text = rls.format_help()
    for action in rls._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            assert "MIMIR_EDGE_" in action.help, action.dest
    assert "--dry-run" in text
    assert "--no-body-parsing" in text


def test_deny_log_is_rate_limited(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    log = logging.getLogger("test.deny")
    dl = DenyLogger(log, per_second=3)
    with caplog.at_level(logging.WARNING, logger="test.deny"):
        dl.log([{"tenant": "t", "decision": "deny"}] * 10, now=100.2)
        dl.log([{"tenant": "t", "decision": "would_deny"}], now=101.0)
    messages = [r.getMessage() for r in caplog.records]
    assert messages == ["push denied"] * 3 + [
        "deny log lines suppressed",
        "push would deny (dry run)",
    ]
    assert caplog.records[3].fields == {"suppressed": 7, "window_s": 1}  # type: ignore[attr-defined]


def test_cli_rls_exits_2_on_bad_overrides(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("overrides:\n  a:\n    ingestion_rate: lots\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mimir_edge.cli", "rls", "--overrides", str(bad), "--workers", "1"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert b"ingestion_rate must be a number" in proc.stderr


def test_cli_rls_exits_2_on_a_foreign_table_file(tmp_path: Path) -> None:
    table = tmp_path / "not-a-table"
    table.write_bytes(b"hello")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mimir_edge.cli",
            "rls",
            "--table-path",
            str(table),
            "--workers",
            "1",
        ],
        capture_output=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 2
    assert b"cannot create or open the tenant table" in proc.stderr


def test_overrides_from_a_mounted_configmap_directory(tmp_path: Path) -> None:
    """--overrides may be the directory a ConfigMap is mounted at: the runtime-config key
    plus the edge settings key (dry run for one tenant)."""
    d = tmp_path / "cm"
    d.mkdir()
    (d / "runtime.yaml").write_text(
        "overrides:\n  a:\n    ingestion_rate: 0.001\n    ingestion_burst_size: 150\n"
    )
    (d / "mimir-edge.yaml").write_text("tenants:\n  a:\n    dry_run: true\n")
    with RlsProcess(tmp_path, "--overrides", str(d)) as rls:
        # 100 items each: the second push is over the 150 burst, but a is in dry run.
        assert [check(rls, "a").status.code for _ in range(2)] == [0, 0]
        assert tenants(rls)["a"]["would_deny_requests"] == 1


def test_the_same_set_again_only_marks_limits_fresh(tmp_path: Path, overrides: Path) -> None:
    with RlsProcess(tmp_path, "--overrides", str(overrides), "--admin-token", TOKEN) as rls:
        body = json.dumps({"overrides": {"a": {"ingestion_burst_size": 150}}}).encode()
        first = request(rls, "PUT", "/api/v1/limits", body, token=TOKEN)[1]["generation"]
        time.sleep(1.2)
        assert rls.metric("rls_limits_stale_seconds") >= 1
        again = request(rls, "PUT", "/api/v1/limits", body, token=TOKEN)[1]["generation"]
        assert again == first  # nothing republished
        assert rls.metric("rls_limits_stale_seconds") < 1
