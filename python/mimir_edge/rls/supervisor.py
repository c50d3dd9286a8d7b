"""``mimir-edge rls``: the supervisor of N worker processes.

It creates the shared tenant table, publishes the limit set (from ``--overrides``, re-read
when the file changes), starts the workers, restarts any that dies (the table, in shared
memory, survives it), and on SIGTERM or SIGINT drains them within the grace period.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from mimir_edge._native import Engine
from mimir_edge.limits import LimitsError, LimitSet, from_configmap_data, parse_runtime_config
from mimir_edge.rls import logs
from mimir_edge.rls.settings import Settings
from mimir_edge.rls.worker import limits_path_for, write_limits
from mimir_edge.sync.file_source import FileSource

__all__ = ["load_overrides", "run"]

#: A worker that dies sooner than this after its start counts as crash-looping.
CRASH_LOOP_S = 2.0
MAX_QUICK_RESTARTS = 5


def load_overrides(settings: Settings) -> LimitSet:
    """The limit set from ``--overrides``: a Mimir runtime-config file, or a mounted
    ConfigMap directory (its runtime-config key, or the flat form, plus ``mimir-edge.yaml``),
    so a replica in Mimir's namespace can read the ConfigMap itself, without the sync."""
    if not settings.overrides:
        return LimitSet.build({}, settings.defaults())
    path = Path(settings.overrides)
    if path.is_dir():
        data = FileSource(path).read().data
        if data is None:
            raise OSError(f"{path}: no such directory")
        return from_configmap_data(data, defaults=settings.defaults())
    return parse_runtime_config(path.read_text(), settings.defaults())


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.quick_restarts = 0


def run(settings: Settings) -> int:
    log = logs.setup(settings.log_level)
    created = settings.table_path is None
    table_path = settings.table_path or (
        f"/dev/shm/mimir-edge-{os.getpid()}-{secrets.token_hex(4)}.table"
    )
    settings = dataclasses.replace(settings, table_path=table_path)
    # The version of the overrides last loaded (taken first: a change while loading is
    # picked up by the next poll), and the last one seen, loaded or not.
    loaded_digest = seen_digest = _digest(settings.overrides)
    try:
        limit_set = load_overrides(settings)
    except (OSError, LimitsError) as e:
        log.error("cannot load --overrides", extra={"fields": {"error": str(e)}})
        return 2
    try:
        engine = Engine(
            table_path,
            create=created or not Path(table_path).exists(),
            capacity=settings.table_capacity,
        )
    except OSError as e:
        log.error("cannot create or open the tenant table", extra={"fields": {"error": str(e)}})
        return 2
    limits_path = limits_path_for(table_path)
    write_limits(limits_path, limit_set)
    engine.publish_generation(unix_ns=time.time_ns())
    log.info(
        "limits published",
        extra={
            "fields": {
                "tenants": len(limit_set.tenants),
                "source": settings.overrides or "defaults",
            }
        },
    )

    stopping = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stopping.set())

    env = dict(
        os.environ,
        MIMIR_EDGE_WORKER_SETTINGS=settings.to_json(),
        MIMIR_EDGE_SUPERVISOR_PID=str(os.getpid()),
    )
    workers = [_Worker(i) for i in range(settings.workers)]

    def start(w: _Worker) -> None:
        w.proc = subprocess.Popen(
            [sys.executable, "-m", "mimir_edge.rls.worker"],
            env={**env, "MIMIR_EDGE_WORKER_INDEX": str(w.index)},
        )
        w.started = time.monotonic()

    for w in workers:
        start(w)
    log.info(
        "rls started",
        extra={
            "fields": {
                "workers": settings.workers,
                "table": table_path,
                "grpc": settings.grpc_listen,
                "http": settings.http_listen,
            }
        },
    )
    next_poll = time.monotonic() + settings.overrides_poll_seconds
    status = 0
    while not stopping.wait(0.25):
        for w in workers:
            assert w.proc is not None
            rc = w.proc.poll()
            if rc is None:
                continue
            quick = time.monotonic() - w.started < CRASH_LOOP_S
            w.quick_restarts = w.quick_restarts + 1 if quick else 0
            log.error(
                "worker exited; restarting",
                extra={"fields": {"worker": w.index, "pid": w.proc.pid, "exit_code": rc}},
            )
            if w.quick_restarts > MAX_QUICK_RESTARTS:
                log.error(
                    "worker is crash-looping; stopping", extra={"fields": {"worker": w.index}}
                )
                status = 1
                stopping.set()
                break
            start(w)
        if settings.overrides and time.monotonic() >= next_poll:
            next_poll = time.monotonic() + settings.overrides_poll_seconds
            new_digest = _digest(settings.overrides)
            if new_digest is not None and new_digest == loaded_digest:
                # The set in force is confirmed by its source: fresh, nothing reloaded.
                # A missing or broken file is not a confirmation: staleness grows.
                engine.touch_limits(unix_ns=time.time_ns())
            elif new_digest != seen_digest:
                try:
                    limit_set = load_overrides(settings)
                except (OSError, LimitsError) as e:
                    # Keep enforcing the last good set; staleness grows in the metrics.
                    log.error(
                        "overrides changed but cannot be loaded; keeping the last good set",
                        extra={"fields": {"error": str(e)}},
                    )
                else:
                    write_limits(limits_path, limit_set)
                    generation = engine.publish_generation(unix_ns=time.time_ns())
                    loaded_digest = new_digest
                    log.info(
                        "overrides reloaded",
                        extra={
                            "fields": {"generation": generation, "tenants": len(limit_set.tenants)}
                        },
                    )
            seen_digest = new_digest

    _drain(workers, settings.grace_period_seconds, log)
    if created:
        for p in (Path(table_path), limits_path):
            p.unlink(missing_ok=True)
    log.info("rls stopped")
    return status


def _digest(path: str | None) -> str | None:
    """A version of the file's or directory's content (None when absent)."""
    if not path:
        return None
    try:
        return FileSource(Path(path)).read().version
    except OSError:
        return None


def _drain(workers: list[_Worker], grace: float, log: logging.Logger) -> None:
    procs = [w.proc for w in workers if w.proc is not None and w.proc.poll() is None]
    for p in procs:
        p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.error(
                "worker did not stop within the grace period; killed",
                extra={"fields": {"pid": p.pid, "grace_s": grace}},
            )
            p.kill()
            p.wait()
