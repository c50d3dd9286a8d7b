"""``mimir-edge up`` end to end: the real command, real RLS, real Envoy, on free ports.

Each test starts the command as a user would (a subprocess, ``--ephemeral-ports``), pushes
through the address it printed, and stops it with a signal, ``--duration`` or a failure; it
then checks that no process the stack started survives.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimir_edge import CONTENT_TYPE_V2, scan_remote_write
from mimir_edge.encode import (
    Exemplar,
    Histogram,
    Metadata,
    MetricMetadata,
    MetricType,
    Sample,
    Series,
    compress,
    encode_v1,
    encode_v2,
)
from tests.conftest import CorpusFile
from tests.e2e.harness import HttpResponse, RecordingUpstream, http_request
from tests.e2e.test_harness import push_headers
from tests.stack.up_process import UpProcess, alive, descendants, get, get_json, table_rows

OVERRIDES = """\
overrides:
  roomy:
    ingestion_rate: 1000000
    ingestion_burst_size: 10000000
  tight:
    ingestion_rate: 1
    ingestion_burst_size: 2500
"""
CORPUS_FILES = (
    "scrape-500-00.snappy",
    "scrape-500-02.snappy",  # metadata only
    "app-2000-00.snappy",  # exemplars
    "app-2000-04.snappy",
)
FINAL = "final per-tenant totals:"


@pytest.fixture
def overrides(tmp_path: Path) -> Path:
    path = tmp_path / "overrides.yaml"
    path.write_text(OVERRIDES)
    return path


def encoded_bodies() -> list[tuple[bytes, str | None]]:
    """Pushes with what the corpus lacks: native histograms, both protocols, 1.0 metadata."""
    series = [
        Series(
            (("__name__", "rpc_duration_seconds"), ("job", "enc"), ("shard", str(i))),
            samples=(Sample(1.5, 1_700_000_000_000),),
            histograms=(
                Histogram(count=3, sum=2.0, positive_spans=((0, 2),), positive_deltas=(1, 1)),
            ),
            exemplars=(Exemplar((("trace_id", f"t{i}"),), 0.5, 1_700_000_000_000),),
            metadata=Metadata(MetricType.HISTOGRAM, help="RPC latency", unit="seconds"),
        )
        for i in range(20)
    ]
    meta = [MetricMetadata(MetricType.HISTOGRAM, "rpc_duration_seconds", "RPC latency")]
    return [
        (compress(encode_v1(series, meta)), None),
        (compress(encode_v2(series)), CONTENT_TYPE_V2),
    ]


def push(
    url: str, tenant: str | None, body: bytes, content_type: str | None = None
) -> HttpResponse:
    headers = push_headers(tenant)
    if content_type is not None:
        headers["Content-Type"] = content_type
        headers["X-Prometheus-Remote-Write-Version"] = "2.0.0"
    base, _, path = url.partition("/api/")
    return http_request(base, "POST", "/api/" + path, body, headers)


def the_stack(up: UpProcess) -> set[int]:
    """Envoy, the RLS and everything below them (its workers)."""
    return {up.envoy_pid, up.rls_pid} | descendants(up.rls_pid) | descendants(up.envoy_pid)


def test_two_tenants_pushed_through_the_stack(
    tmp_path: Path, overrides: Path, corpus: list[CorpusFile]
) -> None:
    bodies = [(c.body, None) for c in corpus if c.name in CORPUS_FILES] + encoded_bodies()
    app = next(c.body for c in corpus if c.name == "app-2000-04.snappy")  # 2000 samples
    with UpProcess(tmp_path, "--overrides", str(overrides)) as up:
        started = the_stack(up)
        assert len(started) >= 3  # envoy, the RLS supervisor, its worker
        for body, ctype in bodies:
            r = push(up.push_url, "roomy", body, ctype)
            assert r.status == 200, r
        assert push(up.push_url, "tight", app).status == 200  # 2000 of a 2500 burst
        over = push(up.push_url, "tight", app)
        assert over.status == 429
        assert int(over.header("retry-after") or 0) > 0
        assert b"exceeded the ingestion rate limit, set to 1 items/s" in over.body
        bad = push(up.push_url, "roomy", b"\x05not snappy")
        assert bad.status == 400

        # What arrived upstream is what was sent, counted by the core; refused pushes
        # (over the limit, or a bad body) never arrived.
        stats = [scan_remote_write(b, content_type=ct) for b, ct in bodies]
        totals = get_json(up.sink_url + "/api/v1/totals")["tenants"]
        assert totals["roomy"] == {
            "pushes": len(bodies),
            "series": sum(s.series for s in stats),
            "samples": sum(s.samples for s in stats),
            "histograms": sum(s.histograms for s in stats),
            "exemplars": sum(s.exemplars for s in stats),
            "metadata": sum(s.metadata for s in stats),
            "bytes": sum(len(b) for b, _ in bodies),
            "bad_bodies": 0,
        }
        assert totals["roomy"]["histograms"] > 0
        assert totals["tight"]["pushes"] == 1
        assert totals["tight"]["samples"] == scan_remote_write(app).samples

        # The printed metric URLs answer.
        stdout = up.stdout()
        for url in (
            up.rls_admin + "/metrics",
            up.envoy_admin + "/stats/prometheus",
            up.sink_url + "/api/v1/totals",
        ):
            assert url in stdout
        status, text = get(up.rls_admin + "/metrics")
        assert status == 200
        assert b'rls_decisions_total{decision="deny",reason="ingestion_rate"} 1' in text
        assert get(up.envoy_admin + "/stats/prometheus")[0] == 200
        assert "curl -i --data-binary @" in stdout
        assert "retry_on_http_429: true" in stdout

        assert up.stop(signal.SIGINT) == 0
    final = table_rows(up.stdout(), FINAL)
    # pushes, 2xx, 429, other (as the clients saw them, from Envoy's access log)
    assert final["tight"][:4] == ["2", "1", "1", "0"]
    assert final["roomy"][:4] == [str(len(bodies) + 1), str(len(bodies)), "0", "1"]
    assert [pid for pid in started if alive(pid)] == []


def test_a_part_that_dies_is_reported_and_the_rest_stopped(tmp_path: Path) -> None:
    with UpProcess(tmp_path) as up:
        started = the_stack(up)
        os.kill(up.envoy_pid, signal.SIGKILL)
        assert up.wait(30) == 1
    stderr = up.stderr()
    assert f"envoy (pid {up.envoy_pid}) was killed by SIGKILL" in stderr
    assert "stopping the other parts" in stderr
    assert FINAL in up.stdout()
    assert [pid for pid in started if alive(pid)] == []


def test_sigterm_stops_cleanly(tmp_path: Path) -> None:
    with UpProcess(tmp_path) as up:
        started = the_stack(up)
        assert up.stop(signal.SIGTERM) == 0
    assert "stopped: rls (exit 0), envoy (exit 0)" in up.stdout()
    assert [pid for pid in started if alive(pid)] == []


def test_killing_up_itself_leaves_no_orphans(tmp_path: Path) -> None:
    """Even SIGKILL (no chance to clean up): every child was started asking Linux to SIGTERM
    it when ``up`` dies, so each stops on its own."""
    with UpProcess(tmp_path) as up:
        started = the_stack(up)
        assert up.stop(signal.SIGKILL) == -signal.SIGKILL
    deadline = time.monotonic() + 30
    while any(alive(pid) for pid in started) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [pid for pid in started if alive(pid)] == []


def test_upstream_gets_the_pushes_byte_identical(tmp_path: Path, corpus: list[CorpusFile]) -> None:
    bodies = [c.body for c in corpus if c.name in CORPUS_FILES]
    with RecordingUpstream() as upstream:
        # A path other than /api/v1/push replaces it (a Prometheus receiver's path here).
        with UpProcess(tmp_path, "--upstream", upstream.url + "/api/v1/write") as up:
            assert f"upstream  {upstream.url}/api/v1/write" in up.stdout()
            assert "built-in remote-write sink" not in up.stdout()
            for body in bodies:
                assert push(up.push_url, "team-a", body).status == 200
        assert [r.body for r in upstream.requests] == bodies
        assert {r.path for r in upstream.requests} == {"/api/v1/write"}
        assert {r.header("x-scope-orgid") for r in upstream.requests} == {"team-a"}


@pytest.fixture
def taken_port() -> Iterator[tuple[socket.socket, int]]:
    """A port something listens on (with SO_REUSEPORT, as another RLS would)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s, s.getsockname()[1]


@pytest.mark.parametrize("flag", ["--listen", "--rls-grpc", "--sink-listen"])
def test_a_port_in_use_exits_2_naming_it(
    tmp_path: Path, taken_port: tuple[socket.socket, int], flag: str
) -> None:
    _, port = taken_port
    log_dir = tmp_path / "logs"
    cmd = [sys.executable, "-m", "mimir_edge.cli", "up", "--ephemeral-ports"]
    cmd += [flag, f"127.0.0.1:{port}", "--log-dir", str(log_dir)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2, proc
    assert f"port {port} is already in use ({flag}" in proc.stderr
    assert not log_dir.exists()  # nothing was started


def _fake_envoy(tmp_path: Path, script: str) -> Path:
    path = tmp_path / "fake-envoy"
    path.write_text(f"#!/bin/sh\n{script}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "echo 'error initializing configuration: bad bootstrap' >&2; exit 1",
            "exited with code 1",
        ),
        ("exec sleep 60", "envoy did not become ready"),
    ],
    ids=["exits", "hangs"],
)
def test_a_part_that_does_not_come_up_is_named(tmp_path: Path, script: str, expected: str) -> None:
    """Stand-ins for a broken Envoy (a shell script: a real Envoy with a rejected config or a
    hang is hard to produce on purpose): ``up`` names it, shows its log, stops the RLS."""
    envoy = _fake_envoy(tmp_path, script)
    up = UpProcess(tmp_path, "--envoy", str(envoy), "--startup-timeout", "3").start()
    assert up.wait(60) == 1
    stderr = up.stderr()
    assert expected in stderr
    if "exit 1" in script:
        assert "bad bootstrap" in stderr  # the end of its log
    stdout = up.stdout()
    assert "the edge is ready" not in stdout
    m = re.search(r"stopping envoy \(pid (\d+)\), rls \(pid (\d+)\)", stdout)
    assert m is not None, stdout
    assert not alive(int(m.group(1)))
    assert not alive(int(m.group(2)))


def _load_ready() -> bool:
    """``mimir-edge load`` exists with the flags ``--demo`` uses."""
    proc = subprocess.run(
        [sys.executable, "-m", "mimir_edge.cli", "load", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    flags = ("--url", "--tenant", "--rate", "--duration", "--json")
    return proc.returncode == 0 and all(f in proc.stdout for f in flags)


def test_demo_shows_allow_and_deny(tmp_path: Path) -> None:
    if not _load_ready():
        pytest.skip(
            "`mimir-edge load --help` fails or lacks --url/--tenant/--rate/--duration/--json"
        )
    overrides = tmp_path / "demo.yaml"
    # team-b's burst (1000 items) is soon spent.
    overrides.write_text(
        "overrides:\n  team-a:\n    ingestion_rate: 1000000\n    ingestion_burst_size: 10000000\n"
        "  team-b:\n    ingestion_rate: 1\n    ingestion_burst_size: 1000\n"
    )
    up = UpProcess(tmp_path, "--demo", "--duration", "5", "--overrides", str(overrides)).start()
    assert up.wait(90) == 0, up.output()  # runs for --duration, then stops by itself
    final = table_rows(up.stdout(), FINAL)
    a, b = ([int(c.replace(",", "")) for c in final[t]] for t in ("team-a", "team-b"))
    # pushes, 2xx, 429, other | limit/s, allowed, denied | sink pushes, ...
    assert a[1] > 0
    assert a[2] == 0
    assert b[2] > 0
    assert b[5] <= 1000 + 10  # the burst, plus 1 item/s
    assert (a[7], b[7]) == (a[1], b[1])  # what was refused never arrived
    assert "load team-a: 10 pushes/s" in up.stdout()
