"""One RLS worker process: gRPC + HTTP on the shared ports, the engine, limit reloads.

Started by the supervisor as ``python -m mimir_edge.rls.worker`` with its settings in the
environment. It opens the shared tenant table, loads the limit set the supervisor (or an
admin call on any worker) published, and follows later publications by generation.

The published file also carries the replica count overrides-sync sent with the set (how many
RLS replicas share the traffic; each enforces 1/count of every rate). A file without one (the
supervisor's, at start or after an ``--overrides`` reload) means ``--instances``.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from mimir_edge._native import Engine
from mimir_edge._process import die_with_parent
from mimir_edge.limits import LimitSet
from mimir_edge.rls import logs
from mimir_edge.rls.grpc_service import build_server, set_not_serving, set_serving
from mimir_edge.rls.http_api import AdminServer
from mimir_edge.rls.settings import Settings

__all__ = [
    "WorkerState",
    "limits_path_for",
    "main",
    "read_published",
    "run",
    "write_limits",
]

RATE_WINDOW_S = 60.0
SNAPSHOT_EVERY_S = 5.0
#: The published file's key for the replica count, beside the limit set's own keys (which
#: ``LimitSet.from_json`` reads; it ignores this one).
INSTANCES_KEY = "instances"
#: The published file's mark of a set received through the admin API (overrides-sync's push),
#: as opposed to the supervisor's defaults: with --wait-for-limits, every worker of the
#: instance turns ready once any of them took a PUT.
RECEIVED_KEY = "received"
#: A gauge beside the engine's metrics: the replica count this worker shares rates with.
INSTANCES_METRIC = "rls_instances"
_INSTANCES_HELP = (
    "RLS replicas sharing the traffic: this one enforces 1/N of every tenant's rate "
    "(the count overrides-sync sends, else --instances)."
)


def limits_path_for(table_path: str) -> Path:
    return Path(table_path + ".limits.json")


def engine_limits(limit_set: LimitSet, settings: Settings) -> tuple[dict[str, Any], dict[str, Any]]:
    """The (defaults, tenants) dicts the engine takes: the set plus per-tenant dry runs."""
    defaults = dict(limit_set.defaults)
    tenants = {t: dict(v) for t, v in limit_set.tenants.items()}
    for t in settings.dry_run_tenants:
        tenants.setdefault(t, dict(defaults))["dry_run"] = True
    return defaults, tenants


def write_limits(
    path: Path, limit_set: LimitSet, *, instances: int | None = None, received: bool = False
) -> None:
    """Atomically replace the published limit set (readers never see half a file), with the
    replica count in force (None: each worker's ``--instances``); ``received``: the set came
    through the admin API."""
    text = limit_set.to_json()
    if instances is not None or received:
        doc = json.loads(text)
        if instances is not None:
            doc[INSTANCES_KEY] = instances
        if received:
            doc[RECEIVED_KEY] = True
        text = json.dumps(doc, sort_keys=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)


def read_published(path: Path) -> tuple[LimitSet, int | None, bool]:
    """The published limit set, the replica count (None: not given) and whether the set came
    through the admin API. Raises OSError or ValueError (LimitsError is one)."""
    text = path.read_text()
    limit_set = LimitSet.from_json(text)
    doc = json.loads(text)
    count = doc.get(INSTANCES_KEY)
    if count is not None and (type(count) is not int or count < 1):
        raise ValueError(f"{path}: {INSTANCES_KEY} must be an integer >= 1, got {count!r}")
    return limit_set, count, doc.get(RECEIVED_KEY) is True


class WorkerState:
    """What the HTTP handlers and the background loop share."""

    def __init__(self, settings: Settings, engine: Engine, index: int, log: Any) -> None:
        assert settings.table_path is not None
        self.settings = settings
        self.engine = engine
        self.index = index
        self.log = log
        self.limits_path = limits_path_for(settings.table_path)
        self.limit_set = LimitSet()
        #: RLS replicas sharing the traffic, in force: this worker enforces 1/instances of
        #: every rate.
        self.instances = settings.instances
        self.ready = False
        self.draining = False
        #: A set came through the admin API (here or on another worker); never reset.
        self.limits_received = False
        #: --wait-for-limits-timeout-seconds counts from the supervisor's publication of the
        #: defaults (the file's mtime), so a restarted worker does not wait afresh.
        self._waiting_since = _mtime(self.limits_path)
        self._gave_up_waiting = False
        self._lock = threading.Lock()
        self._history: collections.deque[tuple[float, dict[str, dict[str, Any]]]] = (
            collections.deque()
        )
        self._deny_log = logs.DenyLogger(log, settings.deny_log_per_second)

    def apply(
        self,
        limit_set: LimitSet,
        generation: int,
        instances: int | None = None,
        *,
        force: bool = False,
    ) -> bool:
        """Enforce ``limit_set`` as ``generation``, sharing every rate with ``instances``
        replicas (None: ``--instances``). False (nothing done) when that generation or a newer
        one is in force already, unless ``force``: the HTTP and tick threads may both load
        the same publication."""
        count = instances or self.settings.instances
        defaults, tenants = engine_limits(limit_set, self.settings)
        with self._lock:
            in_force = self.engine.limits_generation
            if generation < in_force or (generation == in_force and not force):
                return False
            self.engine.set_limits(defaults, tenants, generation=generation, share=1.0 / count)
            self.limit_set = limit_set
            self.instances = count
        return True

    def in_force(self) -> tuple[LimitSet, int]:
        """The limit set and replica count this worker enforces, read together."""
        with self._lock:
            return self.limit_set, self.instances

    def reload_if_changed(self, force: bool = False) -> None:
        generation = self.engine.shared_generation
        if not force and generation == self.engine.limits_generation:
            return
        try:
            limit_set, instances, received = read_published(self.limits_path)
        except (OSError, ValueError) as e:
            self.log.error("cannot load published limits", extra={"fields": {"error": str(e)}})
            return
        applied = self.apply(limit_set, generation, instances, force=force)
        self.limits_received = self.limits_received or received
        if not applied:
            return  # another thread loaded it meanwhile (and said so)
        self.log.info(
            "limits loaded",
            extra={
                "fields": {
                    "generation": generation,
                    "tenants": len(limit_set.tenants),
                    "instances": self.instances,
                }
            },
        )

    def publish(self, limit_set: LimitSet, instances: int | None = None) -> int:
        """Make ``limit_set`` the set of every worker of this instance, shared among
        ``instances`` replicas (None: keep the count in force). The set and count in force,
        sent again, only mark the limits fresh: no reload, no bucket touched. A new count
        alone is published like a new set (each tenant's buckets switch to the new share,
        keeping their tokens) but does not mark the set fresh: it confirms nothing about it."""
        # Compare with the newest publication (another worker may have taken the last PUT).
        self.reload_if_changed()
        with self._lock:
            count = self.instances if instances is None else instances
            same_set = limit_set.to_json() == self.limit_set.to_json()
            # A replica waiting for limits publishes even the set it holds (the defaults
            # overrides-sync happens to send): the mark is what wakes the other workers.
            first = self.settings.wait_for_limits and not self.limits_received
            if same_set and count == self.instances and not first:
                self.engine.touch_limits(unix_ns=time.time_ns())
                return self.engine.limits_generation
            confirmed_ns = self.engine.limits_updated_unix_ns
            write_limits(self.limits_path, limit_set, instances=count, received=True)
            generation = self.engine.publish_generation(unix_ns=time.time_ns())
            if same_set and not first:
                self.engine.touch_limits(unix_ns=confirmed_ns)
        self.apply(limit_set, generation, count)
        self.limits_received = True
        return generation

    def readiness(self) -> tuple[bool, str]:
        if self.draining:
            return False, "draining"
        if not self.ready:
            return False, "starting"
        if not self.has_limits():
            return False, "waiting for limits"
        return True, "ready"

    def has_limits(self) -> bool:
        """Whether this instance may take traffic as far as limits go: always, unless
        --wait-for-limits and no set came yet (--overrides counts as one), nor did the
        --wait-for-limits-timeout-seconds pass."""
        s = self.settings
        if not s.wait_for_limits or s.overrides or self.limits_received or self._gave_up_waiting:
            return True
        waited = time.time() - self._waiting_since
        if 0 < s.wait_for_limits_timeout_seconds <= waited:
            self._gave_up_waiting = True
            self.log.warning(
                "no limit set received in time; ready with the default limits",
                extra={"fields": {"waited_s": round(waited, 1)}},
            )
            return True
        return False

    def metrics(self) -> str:
        text = self.engine.render_metrics(workers=self.settings.workers, unix_ns=time.time_ns())
        name = INSTANCES_METRIC
        gauge = f"# HELP {name} {_INSTANCES_HELP}\n# TYPE {name} gauge\n{name} {self.instances}\n"
        return text + gauge

    def tick(self) -> None:
        self.reload_if_changed()
        events = self.engine.drain_events()
        self._deny_log.log(events)
        now = time.monotonic()
        if not self._history or now - self._history[-1][0] >= SNAPSHOT_EVERY_S:
            snap = {r["tenant"]: r for r in self.engine.tenants()}
            self._history.append((now, snap))
            while self._history and now - self._history[0][0] > RATE_WINDOW_S + SNAPSHOT_EVERY_S:
                self._history.popleft()

    def tenant_report(self) -> list[dict[str, Any]]:
        """Tenants with limits, bucket fill, counters and per-second rates over ~1 minute."""
        rows = self.engine.tenants()
        now = time.monotonic()
        past = next((h for h in self._history if now - h[0] <= RATE_WINDOW_S), None)
        for r in rows:
            burst = r["ingestion_burst"]
            r["ingestion_fill"] = r["ingestion_tokens"] / burst if burst else 1.0
            rates: dict[str, float] = {}
            if past is not None and now - past[0] > 0:
                old = past[1].get(r["tenant"], {})
                for key in (
                    "allowed_requests",
                    "denied_requests",
                    "allowed_samples",
                    "denied_samples",
                ):
                    rates[key + "_per_s"] = round((r[key] - old.get(key, 0)) / (now - past[0]), 3)
                rates["window_s"] = round(now - past[0], 1)
            r["recent"] = rates
        return rows


def run(settings: Settings, index: int) -> int:
    log = logs.setup(settings.log_level, worker=index)
    assert settings.table_path is not None
    engine = Engine(
        settings.table_path,
        tenant_header=settings.tenant_header,
        dry_run=settings.dry_run,
        body_parsing=settings.body_parsing,
        bytes_per_sample=settings.bytes_per_sample,
        max_decoded_bytes=settings.max_decoded_bytes,
        charge_request_rate=settings.request_rate_via == "authz",
        worker=index,
    )
    state = WorkerState(settings, engine, index, log)
    state.reload_if_changed(force=True)
    server, health = build_server(
        engine,
        settings.grpc_listen,
        threads=settings.grpc_threads,
        max_message_bytes=settings.max_message_bytes,
    )
    # gRPC health follows /readyz: NOT_SERVING while waiting for limits.
    grpc_serving = state.has_limits()
    if not grpc_serving:
        set_not_serving(health)
    http = AdminServer(settings.http_listen, state)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    threading.Thread(target=http.serve_forever, name="http", daemon=True).start()
    state.ready = True
    log.info(
        "worker serving",
        extra={
            "fields": {
                "pid": os.getpid(),
                "grpc": settings.grpc_listen,
                "http": settings.http_listen,
            }
        },
    )
    while not stop.wait(0.2):
        state.tick()
        if not grpc_serving and state.has_limits():
            set_serving(health)
            grpc_serving = True
            log.info("ready: no longer waiting for limits")

    # Drain: fail readiness first so load balancers stop sending, then let in-flight
    # checks finish within the grace period.
    started = time.monotonic()
    state.draining = True
    set_not_serving(health)
    time.sleep(min(settings.drain_delay_seconds, settings.grace_period_seconds / 2))
    remaining = settings.grace_period_seconds - (time.monotonic() - started) - 0.5
    server.stop(grace=max(0.0, remaining)).wait()
    http.shutdown()
    state.tick()
    log.info("worker stopped", extra={"fields": {"pid": os.getpid()}})
    return 0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return time.time()


def _die_with_parent() -> None:
    """SIGTERM this worker if the supervisor dies, so no orphan keeps serving on the port."""
    supervisor = os.environ.get("MIMIR_EDGE_SUPERVISOR_PID")
    if not die_with_parent(int(supervisor) if supervisor else None):
        os.kill(os.getpid(), signal.SIGTERM)


def main() -> int:
    _die_with_parent()
    settings = Settings.from_json(os.environ["MIMIR_EDGE_WORKER_SETTINGS"])
    return run(settings, int(os.environ.get("MIMIR_EDGE_WORKER_INDEX", "0")))


if __name__ == "__main__":
    sys.exit(main())
