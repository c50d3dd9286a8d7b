"""The file source, alone and end to end: a runtime-config file followed by the sync and
enforced by real ``mimir-edge rls`` processes (Checks over gRPC, as Envoy sends them).
Everything listens on 127.0.0.1; every process is stopped by its ``with`` or ``finally``."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimir_edge.sync.base import Snapshot
from mimir_edge.sync.controller import Controller
from mimir_edge.sync.file_source import ABSENT, FileSource
from mimir_edge.sync.metrics import SyncMetrics
from mimir_edge.sync.targets import Pusher, StaticTargets
from tests.e2e.harness import free_port
from tests.e2e.rls_process import RlsProcess
from tests.rls.test_service import check, request, tenants
from tests.sync.test_controller import running

TOKEN = "sync-t0ken"
POLL = 0.2
INTERVAL = 0.5


def runtime(**bursts: int) -> str:
    return "overrides:\n" + "".join(
        f"  {t}:\n    ingestion_rate: 0.001\n    ingestion_burst_size: {b}\n"
        for t, b in bursts.items()
    )


def wait_until(cond: Callable[[], object], timeout: float, what: str) -> float:
    """Seconds it took."""
    start = time.monotonic()
    while not cond():
        if time.monotonic() - start > timeout:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.05)
    return time.monotonic() - start


class Emits:
    """Runs a source in a thread and keeps what it emits."""

    def __init__(self, source: FileSource) -> None:
        self.got: list[Snapshot] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=source.run, args=(self.got.append, self.stop))

    def __enter__(self) -> Emits:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def wait(self, n: int) -> Snapshot:
        wait_until(lambda: len(self.got) >= n, 3, f"{n} snapshots")
        return self.got[n - 1]


# -- the source ------------------------------------------------------------------------------


def test_a_file_is_emitted_on_every_change_and_none_when_deleted(tmp_path: Path) -> None:
    f = tmp_path / "runtime.yaml"
    f.write_text(runtime(a=1))
    with Emits(FileSource(f, POLL)) as e:
        first = e.wait(1)
        assert first.data == {"runtime.yaml": runtime(a=1)}
        time.sleep(POLL * 3)
        assert len(e.got) == 1  # unchanged: nothing emitted
        f.write_text(runtime(a=2))
        assert e.wait(2).data == {"runtime.yaml": runtime(a=2)}
        f.unlink()
        gone = e.wait(3)
        assert (gone.data, gone.version) == (None, ABSENT)
        f.write_text(runtime(a=1))
        back = e.wait(4)
        assert back == first  # same content, same version
        time.sleep(POLL * 2)
    assert len(e.got) == 4


def _mount(d: Path, stamp: str, files: dict[str, str]) -> None:
    """What kubelet does on a ConfigMap update: a new timestamped directory, then one atomic
    swap of the ``..data`` symlink; the key files are symlinks through ``..data``."""
    ts = d / f"..{stamp}"
    ts.mkdir()
    for name, text in files.items():
        (ts / name).write_text(text)
        if not (d / name).is_symlink():
            (d / name).symlink_to(f"..data/{name}")
    tmp = d / "..data_tmp"
    tmp.symlink_to(ts.name)
    tmp.replace(d / "..data")


def test_a_mounted_configmap_directory_is_read_through_its_data_link(tmp_path: Path) -> None:
    d = tmp_path / "overrides"
    d.mkdir()
    _mount(d, "2024_01_01_00_00_00.1", {"runtime.yaml": runtime(a=1), "extra.yaml": "x: 1\n"})
    (d / "subdir").mkdir()  # not a regular file: skipped
    source = FileSource(d, POLL)
    snap = source.read()
    assert snap.data == {"extra.yaml": "x: 1\n", "runtime.yaml": runtime(a=1)}
    with Emits(source) as e:
        assert e.wait(1) == snap
        _mount(d, "2024_01_01_00_01_00.2", {"runtime.yaml": runtime(a=5), "extra.yaml": "x: 1\n"})
        assert e.wait(2).data == {"extra.yaml": "x: 1\n", "runtime.yaml": runtime(a=5)}


def test_a_plain_directory_and_an_unreadable_path(tmp_path: Path) -> None:
    d = tmp_path / "plain"
    d.mkdir()
    assert FileSource(d).read().data == {}
    (d / "b.yaml").write_text("b")
    (d / "a.yaml").write_text("a")
    (d / "..hidden").write_text("kubelet's")
    assert FileSource(d).read().data == {"a.yaml": "a", "b.yaml": "b"}
    with pytest.raises(ValueError, match="poll_seconds"):
        FileSource(d, 0)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="neither a regular file nor a directory"):
        FileSource(fifo).read()
    # Unreadable is not deleted: nothing is emitted until it can be read.
    with Emits(FileSource(fifo, POLL)) as e:
        time.sleep(POLL * 2)
        assert e.got == []
        fifo.unlink()
        fifo.write_text(runtime(a=3))
        assert e.wait(1).data == {"fifo": runtime(a=3)}


# -- end to end with real RLS processes ------------------------------------------------------


def limits_of(rls: RlsProcess) -> dict[str, Any]:
    status, doc = request(rls, "GET", "/api/v1/limits")
    assert status == 200
    result: dict[str, Any] = doc
    return result


def burst_of(rls: RlsProcess, tenant: str) -> Any:
    return limits_of(rls)["overrides"].get(tenant, {}).get("ingestion_burst_size")


def test_file_edits_are_enforced_by_every_rls_replica(tmp_path: Path) -> None:
    f = tmp_path / "runtime.yaml"
    f.write_text(runtime(a=1000, b=1000))
    later = RlsProcess(tmp_path, "--admin-token", TOKEN, workers=1)  # its ports, not started
    with RlsProcess(tmp_path, "--admin-token", TOKEN) as rls:
        metrics = SyncMetrics()
        ctl = Controller(
            FileSource(f, POLL),
            StaticTargets([rls.http_url, later.http_url]),
            Pusher(TOKEN, timeout_seconds=2),
            push_interval_seconds=INTERVAL,
            metrics=metrics,
        )
        with running(ctl):
            wait_until(lambda: burst_of(rls, "b") == 1000, POLL + INTERVAL + 2, "first set")
            time.sleep(0.6)  # every worker follows the published generation
            assert check(rls, "a").status.code == 0
            assert check(rls, "b").status.code == 0
            assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(900, abs=1)

            f.write_text(runtime(a=1000, b=100))
            took = wait_until(lambda: burst_of(rls, "b") == 100, POLL + INTERVAL + 2, "edit")
            assert took < POLL + INTERVAL + 1
            time.sleep(0.6)
            # b: 900 tokens capped at the new burst of 100, so one push of 100 passes.
            assert check(rls, "b").status.code == 0
            assert check(rls, "b").status.code == 8
            assert tenants(rls)["b"]["limits"]["ingestion_burst_size"] == 100
            # a was untouched: its bucket kept its tokens through the new set.
            assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(900, abs=1)
            assert limits_of(rls)["overrides"]["a"]["ingestion_burst_size"] == 1000

            # A replica that starts later (down until now) gets the set within one interval.
            assert metrics.errors.value(reason="push_unreachable") >= 1
            with later:
                wait_until(lambda: burst_of(later, "b") == 100, INTERVAL + 1, "late replica")
                assert limits_of(later) == limits_of(rls)
                wait_until(lambda: metrics.targets_in_sync.value() == 2, INTERVAL + 1, "synced")
                assert check(later, "b").status.code == 0  # its own bucket, full at 100
                assert check(later, "b").status.code == 8

            # The file is deleted: the replica keeps the set; staleness grows.
            f.unlink()
            wait_until(lambda: metrics.errors.value(reason="source_deleted") == 1, 2, "deleted")
            time.sleep(INTERVAL * 3)
            assert limits_of(rls)["overrides"]["b"]["ingestion_burst_size"] == 100
            assert metrics.stale.value() >= INTERVAL * 3
            # Nothing was re-published since the edit, so the replica's own gauge grows too.
            assert rls.metric("rls_limits_stale_seconds") >= INTERVAL * 3
            assert check(rls, "b").status.code == 8
            assert tenants(rls)["a"]["ingestion_tokens"] == pytest.approx(900, abs=1)
    assert '"limits loaded"' in rls.log()


def test_the_command_follows_the_file_with_flags_from_the_environment(tmp_path: Path) -> None:
    f = tmp_path / "runtime.yaml"
    f.write_text(runtime(a=300))
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    port = free_port()
    with RlsProcess(tmp_path, "--admin-token", TOKEN, workers=1) as rls:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MIMIR_EDGE_")}
        env.update(
            MIMIR_EDGE_FILE=str(f),
            MIMIR_EDGE_TARGETS=f"127.0.0.1:{rls.http_port}",
            MIMIR_EDGE_ADMIN_TOKEN_FILE=str(token_file),
            MIMIR_EDGE_POLL_SECONDS=str(POLL),
            MIMIR_EDGE_PUSH_INTERVAL_SECONDS=str(INTERVAL),
            MIMIR_EDGE_HTTP_LISTEN=f"127.0.0.1:{port}",
        )
        log_path = tmp_path / "sync.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "mimir_edge.sync.cli", "overrides-sync"],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        base = f"http://127.0.0.1:{port}"

        def get(path: str) -> tuple[int, str]:
            try:
                with urllib.request.urlopen(base + path, timeout=2) as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as e:
                return e.code, e.read().decode()
            except OSError:
                return 0, ""

        def metric(name: str, **labels: str) -> float:
            for fam in text_string_to_metric_families(get("/metrics")[1]):
                for s in fam.samples:
                    if s.name == name and s.labels == labels:
                        return float(s.value)
            raise KeyError(name)

        try:
            wait_until(lambda: get("/readyz")[0] == 200, 10, f"sync ready:\n{log_path.read_text()}")
            assert get("/healthz") == (200, "ok\n")
            wait_until(lambda: burst_of(rls, "a") == 300, 3, "pushed by the command")
            wait_until(lambda: metric("overrides_sync_last_success_timestamp_seconds") > 0, 3, "ok")
            assert metric("overrides_sync_targets_in_sync") == 1
            assert metric("overrides_sync_leader") == 1
            assert metric("overrides_sync_pushes_total") == 1
            assert metric("overrides_sync_tenants") == 1

            f.write_text("overrides:\n  a: [broken\n")
            wait_until(
                lambda: metric("overrides_sync_errors_total", reason="parse") == 1, 3, "counted"
            )
            assert metric("overrides_sync_stale_seconds") > 0
            assert burst_of(rls, "a") == 300
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                rc = proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
                raise
        assert rc == 0
        lines = [json.loads(line) for line in log_path.read_text().splitlines()]
        msgs = [line["msg"] for line in lines]
        assert "limit set pushed" in msgs
        assert "the overrides do not parse; keeping the last good limit set" in msgs
        assert msgs[-1] == "overrides-sync stopped"
        assert TOKEN not in log_path.read_text()
