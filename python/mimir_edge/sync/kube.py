"""The Kubernetes API side of overrides-sync: the overrides ConfigMap and the RLS replicas.

- :func:`configmap_source` lists and then watches ONE ConfigMap and emits a
  :class:`~mimir_edge.sync.base.Snapshot` for its initial state and every change.
- :func:`endpoints_targets` lists the ready replicas of the RLS Service from its
  EndpointSlices (core/v1 Endpoints on clusters without discovery.k8s.io/v1).

Both use the official ``kubernetes`` client; without an explicit ``api_client`` they use the
pod's service account (in-cluster config), or the local kubeconfig when run outside a cluster.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client, config, watch
from kubernetes.client import ApiClient
from kubernetes.client.exceptions import ApiException

from mimir_edge.sync.base import Snapshot

__all__ = [
    "Backoff",
    "ConfigMapSource",
    "EndpointsTargets",
    "KubeConfigError",
    "configmap_source",
    "default_api_client",
    "endpoints_targets",
]

log = logging.getLogger(__name__)

HTTP_NOT_FOUND = 404
HTTP_GONE = 410
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CONNECT_TIMEOUT_SECONDS = 5.0
REQUEST_TIMEOUT_SECONDS = 10.0
# A watch read that hears nothing for this long past the server-side timeout is a dead
# connection (e.g. half-open after a node failure): give up on it rather than wait forever.
WATCH_READ_GRACE_SECONDS = 10.0
# Preference when a dual-stack Service has one slice per family: push to each pod once.
ADDRESS_TYPES = ("IPv4", "IPv6", "FQDN")


# Typed views of the parts of the client it leaves unannotated (mypy --strict forbids calling
# untyped functions; a view keeps working if a later client adds annotations).
class _Watch(Protocol):
    def stream(
        self, func: Callable[..., Any], *args: Any, **kwargs: Any
    ) -> Generator[dict[str, Any], None, None]: ...
    def stop(self) -> None: ...


_new_watch: Callable[[], _Watch] = watch.Watch
_load_incluster_config: Callable[..., None] = config.load_incluster_config
_load_kube_config: Callable[..., None] = config.load_kube_config


def close_client(api_client: ApiClient) -> None:
    """Close the client's connection pool."""
    close: Callable[[], None] = api_client.close
    close()


class KubeConfigError(ValueError):
    """Neither in-cluster nor kubeconfig credentials could be loaded.

    A ValueError so that ``overrides-sync`` reports it as a bad setting and exits 2.
    """


def default_api_client() -> ApiClient:
    """The pod's service account, else the local kubeconfig (running outside a cluster)."""
    cfg = client.Configuration()
    try:
        _load_incluster_config(client_configuration=cfg)
    except config.ConfigException as in_cluster:
        try:
            _load_kube_config(client_configuration=cfg)
        except (config.ConfigException, OSError) as e:
            raise KubeConfigError(
                f"no Kubernetes credentials: not in a pod ({in_cluster}) and no kubeconfig ({e})"
            ) from e
    return ApiClient(cfg)


class Backoff:
    """Exponential backoff with jitter: ``initial`` doubling up to ``maximum``.

    Each delay is drawn from [d/2, d] ("equal jitter"), so replicas that lost the API server at
    the same moment do not come back in lockstep, yet the wait stays bounded by ``maximum``.
    """

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        *,
        rng: Callable[[], float] = random.random,
    ) -> None:
        if not 0 < initial <= maximum:
            raise ValueError("need 0 < initial <= maximum")
        self.initial = initial
        self.maximum = maximum
        self._rng = rng
        self._current = initial

    def next_delay(self) -> float:
        d = self._current
        self._current = min(self.maximum, d * 2)
        return d / 2 + d / 2 * self._rng()

    def reset(self) -> None:
        self._current = self.initial


@dataclass
class _WatchState:
    """Where one ``run`` is: the version to watch from and what was emitted last."""

    rv: str | None = None  # None: (re-)list first
    # (exists, object resourceVersion) of the last emitted snapshot, to skip a re-list that
    # finds nothing new (after 410 Gone the list usually repeats what was already sent).
    last: tuple[bool, str | None] | None = None
    gone_streak: int = 0  # 410s in a row with nothing else in between
    progressed: bool = False  # the current attempt has handled at least one watch event


class ConfigMapSource:
    """List + watch of one ConfigMap; ``run`` emits its initial state and every change.

    ADDED/MODIFIED emit ``Snapshot(data, resourceVersion)``; DELETED emits
    ``Snapshot(None, resourceVersion)`` (so does an initial list that finds no ConfigMap). A 410
    Gone (the watched version was compacted away) re-lists, emitting the state if it changed;
    any other failure retries the watch from the last seen version with exponential backoff.
    Delivery is at least once: if ``emit`` raises, the same event is delivered again.
    """

    def __init__(
        self,
        namespace: str,
        name: str,
        api_client: ApiClient,
        *,
        watch_timeout_seconds: int = 5,
        backoff_initial: float = 0.5,
        backoff_max: float = 30.0,
        owns_client: bool = False,
    ) -> None:
        self.namespace = namespace
        self.name = name
        self._api_client = api_client
        self._owns_client = owns_client
        self._core = client.CoreV1Api(api_client)
        self._selector = f"metadata.name={name}"
        self._watch_timeout = int(watch_timeout_seconds)
        self._backoff = (backoff_initial, backoff_max)

    def close(self) -> None:
        """Release the connection pool of a client this source created itself."""
        if self._owns_client:
            close_client(self._api_client)

    def run(self, emit: Callable[[Snapshot], None], stop: threading.Event) -> None:
        state = _WatchState()
        backoff = Backoff(*self._backoff)
        w = _new_watch()
        done = threading.Event()
        interrupter = threading.Thread(
            target=_interrupt_on_stop,
            args=(w, stop, done),
            name=f"configmap-watch-stop-{self.name}",
            daemon=True,
        )
        interrupter.start()
        try:
            while not stop.is_set():
                state.progressed = False
                try:
                    if state.rv is None:
                        self._relist(state, emit)
                    self._watch(w, state, emit, stop)
                except Exception as e:
                    if stop.is_set():
                        break
                    self._failed(e, state, backoff, stop)
                else:  # the watch ran its term: the connection is good
                    state.gone_streak = 0
                    backoff.reset()
        finally:
            done.set()
            interrupter.join()

    def _failed(
        self, e: Exception, state: _WatchState, backoff: Backoff, stop: threading.Event
    ) -> None:
        if state.progressed:  # events came through before the failure: start small again
            state.gone_streak = 0
            backoff.reset()
        if isinstance(e, ApiException) and e.status == HTTP_GONE:
            # Our version was compacted away: only a fresh list is consistent.
            state.rv = None
            state.gone_streak += 1
            if state.gone_streak == 1:
                log.info("configmap watch expired (410 Gone); re-listing")
                return  # the usual case: re-list at once (in a loop of 410s, back off)
        else:
            state.gone_streak = 0
        delay = backoff.next_delay()
        log.warning(
            "configmap watch failed; retrying in %.2fs: %s",
            delay,
            e,
            extra={"fields": {"configmap": f"{self.namespace}/{self.name}"}},
        )
        stop.wait(delay)

    def _relist(self, state: _WatchState, emit: Callable[[Snapshot], None]) -> None:
        listed = self._core.list_namespaced_config_map(
            self.namespace,
            field_selector=self._selector,
            _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS),
        )
        list_rv = (listed.metadata.resource_version if listed.metadata else None) or "0"
        found = next(
            (cm for cm in listed.items if cm.metadata and cm.metadata.name == self.name), None
        )
        if found is None:
            key: tuple[bool, str | None] = (False, None)
            snapshot = Snapshot(None, list_rv)
        else:
            obj_rv = (found.metadata.resource_version if found.metadata else None) or list_rv
            key = (True, obj_rv)
            snapshot = Snapshot(dict(found.data or {}), obj_rv)
        if key != state.last:
            emit(snapshot)
            state.last = key
        state.rv = list_rv  # watch from the list's version: nothing in between is missed

    def _watch(
        self,
        w: _Watch,
        state: _WatchState,
        emit: Callable[[Snapshot], None],
        stop: threading.Event,
    ) -> None:
        """One watch request, until its server-side timeout (or ``stop``)."""
        stream = w.stream(
            self._core.list_namespaced_config_map,
            self.namespace,
            field_selector=self._selector,
            resource_version=state.rv,
            allow_watch_bookmarks=True,
            # Server-side end of each watch: bounds how long a stop can go unnoticed even when
            # the client cannot interrupt the read.
            timeout_seconds=self._watch_timeout,
            _request_timeout=(
                CONNECT_TIMEOUT_SECONDS,
                self._watch_timeout + WATCH_READ_GRACE_SECONDS,
            ),
        )
        try:
            for event in stream:
                if stop.is_set():
                    return
                self._handle(event, state, emit)
                state.progressed = True
        finally:
            stream.close()  # runs the generator's cleanup: the response is closed / released

    def _handle(
        self, event: dict[str, Any], state: _WatchState, emit: Callable[[Snapshot], None]
    ) -> None:
        kind = event.get("type")
        raw = event.get("raw_object")
        obj: dict[str, Any] = raw if isinstance(raw, dict) else {}
        meta: dict[str, Any] = obj.get("metadata") or {}
        rv = meta.get("resourceVersion")
        if kind in ("ADDED", "MODIFIED") and meta.get("name") == self.name:
            data = obj.get("data") or {}
            emit(Snapshot({str(k): str(v) for k, v in data.items()}, str(rv)))
            state.last = (True, rv)
        elif kind == "DELETED" and meta.get("name") == self.name:
            emit(Snapshot(None, str(rv)))
            state.last = (False, None)
        # Bookmarks and anything else only move the version on. Advance after emit: if emit
        # raised, the retry watches from before this event and delivers it again.
        if rv:
            state.rv = str(rv)


def _interrupt_on_stop(w: _Watch, stop: threading.Event, done: threading.Event) -> None:
    """Break a blocked watch read as soon as ``stop`` is set, until ``run`` has returned.

    ``Watch.stop()`` shuts the response's socket; it is repeated because a stop that lands
    between two watch requests is forgotten when the next one starts.
    """
    while not done.is_set():
        if stop.wait(0.2):
            w.stop()
            done.wait(0.05)


def configmap_source(
    namespace: str,
    name: str,
    *,
    api_client: ApiClient | None = None,
    watch_timeout_seconds: int = 5,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
) -> ConfigMapSource:
    """A :class:`~mimir_edge.sync.base.Source` watching ConfigMap ``namespace/name``."""
    owns = api_client is None
    return ConfigMapSource(
        namespace,
        name,
        api_client if api_client is not None else default_api_client(),
        watch_timeout_seconds=watch_timeout_seconds,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
        owns_client=owns,
    )


# -- targets -------------------------------------------------------------------------------


class _Port(Protocol):
    @property
    def name(self) -> str | None: ...
    @property
    def port(self) -> int | None: ...


def _pick_port(ports: Sequence[_Port] | None, port_name: str | None) -> int | None:
    """The named port, or without a name the first (usually only) one; None if absent."""
    for p in ports or []:
        if p.port is not None and (port_name is None or p.name == port_name):
            return p.port
    return None


def _url(address: str, port: int) -> str:
    host = f"[{address}]" if ":" in address else address  # IPv6 literals need brackets
    return f"http://{host}:{port}"


class EndpointsTargets:
    """The ready replicas of a Service, as ``http://<address>:<port>`` base URLs.

    Read from the Service's EndpointSlices (label ``kubernetes.io/service-name``); a cluster
    that answers 404 for discovery.k8s.io/v1 is read from core/v1 Endpoints instead. Each call
    is one list request; API errors propagate (the controller logs them and retries next round).
    """

    def __init__(
        self,
        namespace: str,
        service: str,
        port_name: str | None,
        api_client: ApiClient,
        *,
        owns_client: bool = False,
    ) -> None:
        self.namespace = namespace
        self.service = service
        self.port_name = port_name
        self._api_client = api_client
        self._owns_client = owns_client
        self._discovery = client.DiscoveryV1Api(api_client)
        self._core = client.CoreV1Api(api_client)

    def close(self) -> None:
        if self._owns_client:
            close_client(self._api_client)

    def targets(self) -> list[str]:
        try:
            slices = self._discovery.list_namespaced_endpoint_slice(
                self.namespace,
                label_selector=f"{SERVICE_NAME_LABEL}={self.service}",
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS),
            )
        except ApiException as e:
            if e.status != HTTP_NOT_FOUND:
                raise
            log.debug("no discovery.k8s.io/v1 EndpointSlices; reading core/v1 Endpoints")
            return self._from_endpoints()
        return self._from_slices(slices.items)

    def _from_slices(self, slices: Sequence[client.V1EndpointSlice]) -> list[str]:
        by_type: dict[str, set[str]] = {}
        for s in slices:
            port = _pick_port(s.ports, self.port_name)
            if port is None:
                continue
            urls = by_type.setdefault(s.address_type, set())
            for ep in s.endpoints or []:
                # An unset condition means "unknown", which the API says to treat as ready.
                ready = ep.conditions.ready if ep.conditions else None
                # A Service with publishNotReadyAddresses (the RLS chart's -sync Service, so
                # starting replicas get their limits) lists terminating pods as ready too:
                # they are leaving, and counting them would shrink every replica's share.
                terminating = ep.conditions.terminating if ep.conditions else None
                if ready is False or terminating or not ep.addresses:
                    continue
                # Only the first address has defined meaning (the controller writes exactly one).
                urls.add(_url(ep.addresses[0], port))
        for address_type in ADDRESS_TYPES:
            if by_type.get(address_type):
                return sorted(by_type[address_type])
        return sorted(next((u for u in by_type.values() if u), set()))

    def _from_endpoints(self) -> list[str]:
        try:
            eps = self._core.read_namespaced_endpoints(
                self.service,
                self.namespace,
                _request_timeout=(CONNECT_TIMEOUT_SECONDS, REQUEST_TIMEOUT_SECONDS),
            )
        except ApiException as e:
            if e.status == HTTP_NOT_FOUND:
                return []  # no Endpoints object (yet): no replicas
            raise
        urls: set[str] = set()
        for subset in eps.subsets or []:
            port = _pick_port(subset.ports, self.port_name)
            if port is None:
                continue
            # ``addresses`` holds the ready ones; ``notReadyAddresses`` is skipped.
            urls.update(_url(a.ip, port) for a in subset.addresses or [] if a.ip)
        return sorted(urls)


def endpoints_targets(
    namespace: str,
    service: str,
    port_name: str | None = None,
    *,
    api_client: ApiClient | None = None,
) -> EndpointsTargets:
    """A :class:`~mimir_edge.sync.base.TargetSource` of the RLS Service's ready replicas."""
    owns = api_client is None
    return EndpointsTargets(
        namespace,
        service,
        port_name,
        api_client if api_client is not None else default_api_client(),
        owns_client=owns,
    )
