"""Leader election over a coordination.k8s.io/v1 Lease: one overrides-sync replica pushes.

A background thread reads the Lease every ``renew_seconds`` and

- creates it, holding it, when it does not exist;
- renews it (``renewTime``) while this identity holds it;
- takes it over when it is free (no holder) or expired (``renewTime + leaseDurationSeconds``
  is past; the replicas' clocks are assumed roughly in sync, as with client-go);
- otherwise waits.

Every write carries the resourceVersion that was read, so of two candidates racing for the same
Lease one gets 409 Conflict: it lost. :meth:`LeaseLeadership.is_leader` is true only while the
Lease is held and was renewed less than ``lease_seconds`` ago (measured from before the renewal
request, so a replica never believes it leads after the others may have taken over).
:meth:`LeaseLeadership.stop` (also ``close``) gives the Lease up so a successor takes over
without waiting for it to expire.
"""

from __future__ import annotations

import logging
import math
import random
import threading
import time
from datetime import UTC, datetime, timedelta

from kubernetes import client
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from mimir_edge.sync.kube import close_client, default_api_client

__all__ = ["LeaseLeadership", "lease_leadership"]

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
HTTP_CONFLICT = 409


def _utcnow() -> datetime:
    now = datetime.now(UTC)
    # The client writes datetimes with isoformat(), which drops a zero fraction, while the API
    # server parses MicroTime with exactly six digits: avoid the one-in-a-million rejection.
    return now.replace(microsecond=1) if now.microsecond == 0 else now


def _expired(spec: client.V1LeaseSpec, now: datetime) -> bool:
    renewed = spec.renew_time or spec.acquire_time
    if renewed is None or not spec.lease_duration_seconds:
        return True  # a holder that never stated a term holds nothing
    if renewed.tzinfo is None:
        renewed = renewed.replace(tzinfo=UTC)  # MicroTime is UTC
    return renewed + timedelta(seconds=spec.lease_duration_seconds) < now


class LeaseLeadership:
    """A :class:`~mimir_edge.sync.base.Leadership` backed by a Lease (see the module doc)."""

    def __init__(
        self,
        namespace: str,
        name: str,
        identity: str,
        api_client: ApiClient,
        *,
        lease_seconds: float = 15,
        renew_seconds: float = 5,
        owns_client: bool = False,
    ) -> None:
        if not 0 < renew_seconds < lease_seconds:
            raise ValueError("need 0 < renew_seconds < lease_seconds")
        if not identity:
            raise ValueError("the leader identity must not be empty")
        self.namespace = namespace
        self.name = name
        self.identity = identity
        self.lease_seconds = float(lease_seconds)
        self.renew_seconds = float(renew_seconds)
        # The Lease stores whole seconds: round up, so others wait at least as long as we lead.
        self._duration = max(1, math.ceil(lease_seconds))
        # A request slower than this is no use: the lease would lapse while it hangs.
        self._timeout = max(self.renew_seconds, self.lease_seconds / 2)
        self._api_client = api_client
        self._owns_client = owns_client
        self._closed = False
        self._api = client.CoordinationV1Api(api_client)
        self._lock = threading.Lock()
        self._valid_until = 0.0  # time.monotonic() until which we lead; 0 = not leading
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"lease-{name}", daemon=True)

    def start(self) -> LeaseLeadership:
        self._thread.start()
        return self

    def is_leader(self) -> bool:
        with self._lock:
            return time.monotonic() < self._valid_until

    def stop(self, timeout: float = 5.0) -> None:
        """Stop campaigning and release the Lease if held, so a successor need not wait."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        self._lose()  # stop acting as leader before anyone else can start
        try:
            self._release()
        except Exception as e:  # the successor then waits for the Lease to expire instead
            log.warning("could not release the leader lease: %s", e)
        if self._owns_client and not self._closed:
            self._closed = True
            close_client(self._api_client)

    close = stop  # what overrides-sync calls on shutdown

    # -- the loop --------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                leading = self._try_acquire_or_renew(started)
            except Exception as e:  # API unreachable: keep what we have until it runs out
                log.warning("leader lease %s/%s: %s", self.namespace, self.name, e)
                leading = self.is_leader()
            # Followers poll with a little jitter so candidates do not move in lockstep.
            period = self.renew_seconds * (1.0 if leading else random.uniform(1.0, 1.2))
            self._stopping.wait(max(0.0, started + period - time.monotonic()))

    def _try_acquire_or_renew(self, started: float) -> bool:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status != HTTP_NOT_FOUND:
                raise
            return self._create(started)
        now = _utcnow()
        spec = lease.spec or client.V1LeaseSpec()
        holder = spec.holder_identity
        if holder != self.identity and holder and not _expired(spec, now):
            self._lose()
            return False
        if holder != self.identity:
            spec.holder_identity = self.identity
            spec.acquire_time = now
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        spec.renew_time = now
        spec.lease_duration_seconds = self._duration
        lease.spec = spec
        try:
            # ``lease`` carries the resourceVersion read above: a concurrent write makes it 409.
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status != HTTP_CONFLICT:
                raise
            self._lose("someone else wrote the lease first")
            return False
        self._hold(started, took_over=holder != self.identity, previous=holder)
        return True

    def _create(self, started: float) -> bool:
        now = _utcnow()
        lease = client.V1Lease(
            metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace),
            spec=client.V1LeaseSpec(
                holder_identity=self.identity,
                acquire_time=now,
                renew_time=now,
                lease_duration_seconds=self._duration,
                lease_transitions=0,
            ),
        )
        try:
            self._api.create_namespaced_lease(self.namespace, lease, _request_timeout=self._timeout)
        except ApiException as e:
            if e.status != HTTP_CONFLICT:
                raise
            self._lose("another candidate created the lease first")
            return False
        self._hold(started, took_over=True, previous=None)
        return True

    def _release(self) -> None:
        try:
            lease = self._api.read_namespaced_lease(
                self.name, self.namespace, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status == HTTP_NOT_FOUND:
                return
            raise
        if lease.spec is None or lease.spec.holder_identity != self.identity:
            return  # not ours (any more): leave it alone
        lease.spec.holder_identity = None  # free: the next candidate takes it without waiting
        lease.spec.renew_time = _utcnow()
        try:
            self._api.replace_namespaced_lease(
                self.name, self.namespace, lease, _request_timeout=self._timeout
            )
        except ApiException as e:
            if e.status != HTTP_CONFLICT:
                raise
            return  # someone else wrote it meanwhile: it is theirs
        log.info("released the leader lease %s/%s", self.namespace, self.name)

    # -- state -----------------------------------------------------------------------------

    def _hold(self, started: float, *, took_over: bool, previous: str | None) -> None:
        with self._lock:
            if self._stopping.is_set():
                return  # a renewal that outlived stop()'s wait must not make us lead again
            was = time.monotonic() < self._valid_until
            self._valid_until = started + self.lease_seconds
        if took_over or not was:
            log.info(
                "leading: holding lease %s/%s as %s (previous holder: %s)",
                self.namespace,
                self.name,
                self.identity,
                previous or "none",
            )

    def _lose(self, why: str = "") -> None:
        with self._lock:
            was = time.monotonic() < self._valid_until
            self._valid_until = 0.0
        if was:
            log.info("lost the leader lease %s/%s%s", self.namespace, self.name, why and f": {why}")


def lease_leadership(
    namespace: str,
    name: str,
    identity: str,
    *,
    lease_seconds: float = 15,
    renew_seconds: float = 5,
    api_client: ApiClient | None = None,
) -> LeaseLeadership:
    """Start campaigning for Lease ``namespace/name`` as ``identity``; ``stop()`` to give up."""
    owns = api_client is None
    return LeaseLeadership(
        namespace,
        name,
        identity,
        api_client if api_client is not None else default_api_client(),
        lease_seconds=lease_seconds,
        renew_seconds=renew_seconds,
        owns_client=owns,
    ).start()
