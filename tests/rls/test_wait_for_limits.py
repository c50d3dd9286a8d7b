"""``--wait-for-limits``: a replica fed by overrides-sync takes no traffic before it has the
real limits. Until a set arrives through the admin API, /readyz answers 503 "waiting for
limits" and gRPC health NOT_SERVING, on every worker; one PUT, taken by any worker, makes
them all ready. Without the flag, or with ``--overrides``, a replica is ready at once.

The real ``mimir-edge rls`` with 2 workers on 127.0.0.1. Every HTTP request and gRPC channel
opens its own connection, so SO_REUSEPORT spreads them over both workers.
"""

from __future__ import annotations

import json
import time
import urllib.request
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.e2e.rls_process import RlsProcess

TOKEN = "t0ken"
#: Fresh connections per probe: with 2 workers, all of them land on one worker with
#: probability 2**-19.
PROBES = 20
WAIT_S = 20.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class WaitingRls(RlsProcess):
    """An RLS that may not turn ready by itself: started once every worker serves
    (the log says so), whatever /readyz answers."""

    def wait_ready(self) -> None:
        assert self.proc is not None
        workers = int(self.args[self.args.index("--workers") + 1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rls exited {self.proc.returncode}:\n{self.log()}")
            if self.log().count("worker serving") >= workers:
                return
            time.sleep(0.1)
        raise RuntimeError(f"rls workers not serving in 30 s:\n{self.log()}")


def readyz(rls: RlsProcess) -> list[tuple[int, str]]:
    return [rls.get("/readyz") for _ in range(PROBES)]


def grpc_health(rls: RlsProcess) -> list[int]:
    """The gRPC health of the authz service, each over a connection of its own."""
    out = []
    for _ in range(PROBES):
        # A local subchannel pool: a new channel does not reuse the last one's connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        with grpc.insecure_channel(f"127.0.0.1:{rls.grpc_port}", options=options) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            req = health_pb2.HealthCheckRequest(service="envoy.service.auth.v3.Authorization")
            out.append(stub.Check(req, timeout=5).status)
    return out


def put_limits(rls: RlsProcess, doc: object) -> int:
    req = urllib.request.Request(
        rls.http_url + "/api/v1/limits", data=json.dumps(doc).encode(), method="PUT"
    )
    req.add_header("Authorization", f"Bearer {TOKEN}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


def all_ready_soon(rls: RlsProcess) -> bool:
    """Whether every probe of /readyz and gRPC health succeeds within WAIT_S (workers notice
    another worker's PUT on their next request or tick)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if all(s == 200 for s, _ in readyz(rls)) and set(grpc_health(rls)) == {SERVING}:
            return True
        time.sleep(0.2)
    return False


def test_not_ready_until_one_put_then_every_worker_is(tmp_path: Path) -> None:
    with WaitingRls(tmp_path, "--wait-for-limits", "--admin-token", TOKEN) as rls:
        assert readyz(rls) == [(503, "waiting for limits\n")] * PROBES
        assert grpc_health(rls) == [NOT_SERVING] * PROBES
        # Liveness is not readiness: the pod is not restarted while it waits.
        assert rls.get("/healthz")[0] == 200
        # A refused PUT is not a limit set.
        req = urllib.request.Request(rls.http_url + "/api/v1/limits", data=b"{}", method="PUT")
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(req, timeout=5)
        assert refused.value.code == 401
        assert {s for s, _ in readyz(rls)} == {503}

        assert put_limits(rls, {"overrides": {"big": {"ingestion_rate": 1_000_000}}}) == 200
        assert all_ready_soon(rls), rls.log()
        assert readyz(rls) == [(200, "ready\n")] * PROBES


def test_the_set_it_already_holds_counts_as_received(tmp_path: Path) -> None:
    """overrides-sync may send exactly the defaults the replica started with."""
    with WaitingRls(tmp_path, "--wait-for-limits", "--admin-token", TOKEN) as rls:
        status, held = rls.get("/api/v1/limits")
        assert status == 200
        assert put_limits(rls, json.loads(held)) == 200
        assert all_ready_soon(rls), rls.log()


def test_timeout_makes_it_ready_with_the_defaults_and_says_so(tmp_path: Path) -> None:
    args = ("--wait-for-limits", "--wait-for-limits-timeout-seconds", "1")
    with WaitingRls(tmp_path, *args) as rls:
        assert all_ready_soon(rls), rls.log()
        assert "no limit set received in time; ready with the default limits" in rls.log()


def test_without_the_flag_ready_at_once(tmp_path: Path) -> None:
    with RlsProcess(tmp_path) as rls:
        assert readyz(rls) == [(200, "ready\n")] * PROBES
        assert grpc_health(rls) == [SERVING] * PROBES


def test_overrides_count_as_limits(tmp_path: Path) -> None:
    overrides = tmp_path / "runtime.yaml"
    overrides.write_text("overrides:\n  big:\n    ingestion_rate: 1000000\n")
    with RlsProcess(tmp_path, "--wait-for-limits", "--overrides", str(overrides)) as rls:
        assert readyz(rls) == [(200, "ready\n")] * PROBES
        assert grpc_health(rls) == [SERVING] * PROBES
