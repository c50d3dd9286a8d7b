"""The overrides-sync loop: source snapshots → the last good limit set → every RLS replica.

- Every snapshot is parsed as it arrives. One that parses becomes the set in force; one that
  does not (or a deleted or empty source) is logged and counted by reason, and the last good
  set stays in force: limits are never wiped by a broken or missing source.
- The leader syncs every replica when the set changes and again every push interval, so a
  replica that restarts (with its own defaults) or is added gets the set within one
  interval. Replicas already holding it are only read, not written.
- A replica that is not the leader parses too (it takes over with a current set) but never
  pushes.
- With the set goes the replica count: the number of replicas found this round, so each
  enforces 1/count of every rate, as each Mimir distributor enforces its tenant's rate divided
  by the healthy distributors in its ring. A new count reaches every replica within one
  interval of the scale-out or scale-in being visible in the targets.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from mimir_edge import limits
from mimir_edge.limits import LimitsError, LimitSet, parse_runtime_config
from mimir_edge.sync.base import Leadership, Snapshot, Source, TargetSource
from mimir_edge.sync.metrics import SyncMetrics
from mimir_edge.sync.targets import UNREACHABLE, Pusher, StaticTargets, TargetResult

__all__ = ["AlwaysLeader", "Controller", "parse_snapshot_data"]

# limits.from_configmap_data (key selection, merging) is being added; until it is there the
# single document of the snapshot is parsed as a runtime config.
_from_configmap_data: Callable[..., LimitSet] | None = (
    limits.from_configmap_data if hasattr(limits, "from_configmap_data") else None
)


def parse_snapshot_data(
    data: Mapping[str, str],
    *,
    key: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> LimitSet:
    """The limit set of a ConfigMap's data (or ``{filename: content}`` of a mounted path)."""
    if _from_configmap_data is not None:
        return _from_configmap_data(data, key=key, defaults=defaults)
    if key is not None:
        if key not in data:
            raise LimitsError(f"key {key!r} not found (keys: {', '.join(sorted(data)) or 'none'})")
        text = data[key]
    elif len(data) == 1:
        (text,) = data.values()
    else:
        raise LimitsError(
            f"{len(data)} documents ({', '.join(sorted(data))}); choose one with --key"
        )
    return parse_runtime_config(text, defaults)


class AlwaysLeader:
    """The leadership of a controller that runs alone (no leader election)."""

    def is_leader(self) -> bool:
        return True


@dataclass(frozen=True)
class _Good:
    limit_set: LimitSet
    body: str  # its to_json(): what is pushed and compared
    version: str


class Controller:
    """Follows ``source`` and keeps every replica of ``targets`` on the last good set."""

    def __init__(
        self,
        source: Source,
        targets: TargetSource,
        pusher: Pusher,
        *,
        leadership: Leadership | None = None,
        push_interval_seconds: float = 10.0,
        key: str | None = None,
        defaults: Mapping[str, Any] | None = None,
        metrics: SyncMetrics | None = None,
        log: logging.Logger | None = None,
        push_instances: bool = True,
    ) -> None:
        if push_interval_seconds <= 0:
            raise ValueError("push_interval_seconds must be > 0")
        self.source = source
        self.target_source = targets
        self.pusher = pusher
        self.leadership: Leadership = leadership or AlwaysLeader()
        self.push_interval_seconds = push_interval_seconds
        self.key = key
        self.defaults = dict(defaults or {})
        self.metrics = metrics or SyncMetrics()
        self.log = log or logging.getLogger("mimir_edge.sync")
        #: Send each replica the number of replicas found (else each keeps its --instances).
        self.push_instances = push_instances
        self._last_count: int | None = None
        #: A static list's replicas that answered in the last round (None: no round yet).
        self._answered: set[str] | None = None
        # Leadership is re-read at least this often, so a new leader pushes promptly.
        self._tick = min(1.0, push_interval_seconds)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._good: _Good | None = None
        self._stale_since: float | None = None
        self._seen_snapshot = False
        self._said_nothing_to_push = False
        self.metrics.stale.set_function(self.stale_seconds)

    # -- state ----------------------------------------------------------------------------

    @property
    def limit_set(self) -> LimitSet | None:
        """The last good set (None before the source gave one)."""
        with self._lock:
            return self._good.limit_set if self._good else None

    def stale_seconds(self) -> float:
        """0 while the source is healthy; else seconds since it stopped being so."""
        with self._lock:
            since = self._stale_since
        return 0.0 if since is None else time.monotonic() - since

    def readiness(self) -> tuple[bool, str]:
        with self._lock:
            if not self._seen_snapshot:
                return False, "waiting for the overrides source"
            if self._good is None:
                return True, "no good limit set yet (nothing is pushed)"
            return True, f"ready ({len(self._good.limit_set.tenants)} tenants)"

    # -- snapshots ------------------------------------------------------------------------

    def on_snapshot(self, snap: Snapshot) -> None:
        """Called by the source on every change; never raises."""
        with self._lock:
            self._seen_snapshot = True
        if snap.data is None:
            self._keep_last_good("source_deleted", "the overrides source is gone", snap)
            return
        if not any(text.strip() for text in snap.data.values()):
            # No document, or only blank ones (a failed template, a truncated write): an
            # accident far more often than a wish to drop every override.
            self._keep_last_good("source_empty", "the overrides source has no document", snap)
            return
        try:
            new = parse_snapshot_data(snap.data, key=self.key, defaults=self.defaults)
            body = new.to_json()
        except Exception as e:  # a broken document must never stop the sync
            self._keep_last_good("parse", "the overrides do not parse", snap, error=str(e))
            return
        with self._lock:
            changed = self._good is None or self._good.body != body
            self._good = _Good(new, body, snap.version)
            self._stale_since = None
        self.metrics.tenants.set(len(new.tenants))
        fields: dict[str, Any] = {"version": snap.version, "tenants": len(new.tenants)}
        if getattr(new, "source", ""):
            fields["document"] = new.source  # which key held it (limits.from_configmap_data)
        self.log.info(
            "limit set loaded" if changed else "overrides changed; limit set unchanged",
            extra={"fields": fields},
        )
        for warning in getattr(new, "warnings", ()):
            # Accepted, but worth a look (e.g. a key Mimir would read differently).
            self.log.warning("overrides warning", extra={"fields": {"warning": str(warning)}})
        self._wake.set()

    def _keep_last_good(
        self, reason: str, message: str, snap: Snapshot, error: str | None = None
    ) -> None:
        self.metrics.errors.inc(reason=reason)
        with self._lock:
            if self._stale_since is None:
                self._stale_since = time.monotonic()
            good = self._good
        fields: dict[str, Any] = {"reason": reason, "version": snap.version}
        if error is not None:
            fields["error"] = error
        if good is not None:
            fields.update(kept_version=good.version, kept_tenants=len(good.limit_set.tenants))
        self.log.error(f"{message}; keeping the last good limit set", extra={"fields": fields})

    # -- the loop -------------------------------------------------------------------------

    def run(self, stop: threading.Event) -> None:
        """Follow the source and sync the replicas until ``stop`` is set."""
        source = threading.Thread(
            target=self._run_source, args=(stop,), name="overrides-source", daemon=True
        )
        source.start()
        try:
            self._loop(stop)
        finally:
            stop.set()  # also stops the source if the loop failed
            source.join(timeout=5)

    def _run_source(self, stop: threading.Event) -> None:
        backoff = 0.5
        while not stop.is_set():
            started = time.monotonic()
            try:
                self.source.run(self.on_snapshot, stop)
            except Exception:
                self.log.exception("overrides source failed; restarting it")
            else:
                if stop.is_set():
                    return
                self.log.error("overrides source returned before stop; restarting it")
            self.metrics.errors.inc(reason="source_failed")
            if time.monotonic() - started > 60:
                backoff = 0.5  # it ran a good while: not a crash loop
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)

    def _is_leader(self) -> bool:
        try:
            return self.leadership.is_leader()
        except Exception:
            self.log.exception("leadership check failed; not pushing")
            return False

    def _loop(self, stop: threading.Event) -> None:
        was_leader = False
        next_round = 0.0
        while not stop.is_set():
            leader = self._is_leader()
            self.metrics.leader.set(1 if leader else 0)
            if leader != was_leader:
                self.log.info("leading: pushing limit sets" if leader else "not leading")
            if not leader:
                self._wake.clear()  # becoming leader syncs anyway
                was_leader = False
                stop.wait(self._tick)
                continue
            if not was_leader or self._wake.is_set() or time.monotonic() >= next_round:
                self._wake.clear()
                self.sync_once()
                next_round = time.monotonic() + self.push_interval_seconds
            was_leader = True
            self._wake.wait(min(self._tick, max(0.0, next_round - time.monotonic())))

    def _replica_count(self, targets: list[str]) -> int:
        """The replicas sharing the traffic. DNS and EndpointSlices list ready replicas only;
        a static ``--targets`` list names them whether or not they run, so there only those
        that answered in the last round count (all of them in the first): with one replica
        down the others must not enforce 1/N and refuse pushes within the limit."""
        if not isinstance(self.target_source, StaticTargets) or self._answered is None:
            return len(targets)
        return max(1, len(self._answered.intersection(targets)))

    def sync_once(self) -> list[TargetResult]:
        """One round: bring every replica to the last good set (nothing without one)."""
        with self._lock:
            good = self._good
            healthy = self._stale_since is None
        if good is None:
            if not self._said_nothing_to_push:
                self.log.warning("no good limit set yet; the replicas keep theirs")
                self._said_nothing_to_push = True
            return []
        try:
            targets = self.target_source.targets()
        except Exception as e:
            self.metrics.errors.inc(reason="targets")
            self.log.error("cannot list the RLS replicas", extra={"fields": {"error": str(e)}})
            return []
        self.metrics.targets.set(len(targets))
        if not targets:
            self.metrics.errors.inc(reason="no_targets")
            self.metrics.targets_in_sync.set(0)
            self.log.error("no RLS replicas found")
            return []
        count = self._replica_count(targets) if self.push_instances else None
        if count is not None and count != self._last_count:
            self.log.info(
                "replica count changed; each replica enforces 1/count of every rate",
                extra={"fields": {"count": count, "was": self._last_count}},
            )
            self._last_count = count
        # While the source is healthy every replica is confirmed each interval (its
        # staleness stays near 0); once the source is gone or broken, replicas that hold the
        # last good set are left alone, so their staleness grows as it should.
        results = self.pusher.push(good.body, targets, confirm=healthy, instances=count)
        in_sync = 0
        for r in results:
            if r.ok:
                in_sync += 1
                if r.pushed and r.changed:
                    self.metrics.pushes.inc()
                    self.log.info(
                        "limit set pushed",
                        extra={
                            "fields": {
                                "target": r.target,
                                "version": good.version,
                                "tenants": len(good.limit_set.tenants),
                                "instances": count,
                            }
                        },
                    )
                elif r.pushed and r.instances_changed:
                    self.log.info(
                        "replica count pushed",
                        extra={
                            "fields": {"target": r.target, "count": count, "was": r.held_instances}
                        },
                    )
            else:
                assert r.reason is not None
                self.metrics.errors.inc(reason=r.reason)
                self.log.warning(
                    "replica not synced; retrying next interval",
                    extra={"fields": {"target": r.target, "reason": r.reason, "error": r.error}},
                )
        self._answered = {r.target for r in results if r.reason != UNREACHABLE}
        self.metrics.targets_in_sync.set(in_sync)
        if healthy and in_sync == len(targets):
            self.metrics.last_success.set(time.time())
        return results
