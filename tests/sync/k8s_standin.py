"""A STAND-IN for the Kubernetes API server, for the overrides-sync tests.

A real kube-apiserver (with its etcd) cannot run here, so the tests talk to this instead: a
threaded HTTP/1.1 server on 127.0.0.1 with an in-memory store, speaking just enough of the
Kubernetes REST API for the official ``kubernetes`` client. It is not a faithful apiserver; it
models the behaviours the sync code depends on:

* ConfigMaps (``/api/v1/namespaces/{ns}/configmaps``): list with ``fieldSelector``
  (``metadata.name=X``) answering with the store's resourceVersion; ``?watch=true`` streams
  ``{"type","object"}`` JSON lines as chunked HTTP from the given ``resourceVersion`` (replaying
  the retained history first, as the apiserver's watch cache does), honours ``timeoutSeconds``
  and, with ``allowWatchBookmarks``, ends with a BOOKMARK carrying the current version.
* EndpointSlices (``/apis/discovery.k8s.io/v1/namespaces/{ns}/endpointslices``): list with
  ``labelSelector`` equality terms; ``endpoint_slices_available = False`` answers 404 as a cluster
  without discovery.k8s.io/v1 does. Endpoints (``/api/v1/namespaces/{ns}/endpoints/{name}``): get.
* Leases (``/apis/coordination.k8s.io/v1/namespaces/{ns}/leases``): get, create (409
  AlreadyExists) and replace with optimistic concurrency (409 Conflict on a stale
  resourceVersion); MicroTime fields are checked with the apiserver's strict six-digit format.

One global resourceVersion counter is shared by all kinds, like etcd's revision. Test controls:
``put_configmap``/``delete_configmap`` (watch events), ``compact`` (watches from older versions
get 410 Gone, as an HTTP 410 or as an ERROR event: ``gone_mode``), ``force_gone_next_watch``,
``expire_open_watches`` (ERROR 410 on open streams), ``drop_watches`` (abrupt close, no final
chunk), ``hold`` (ConfigMap requests wait until released), ``stop``/``start`` (the whole server
down and back on the same port), ``put_lease``/``get_lease``/``lease_write_hook`` and ``stats``.
"""

from __future__ import annotations

import bisect
import copy
import json
import re
import socket
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

from kubernetes.client import ApiClient, Configuration

JSON = dict[str, Any]
GoneMode = Literal["http", "event"]

MAX_WATCH_SECONDS = 30  # cap for a watch without timeoutSeconds (the apiserver uses 30-60 min)
HOLD_LIMIT_SECONDS = 10.0  # a held request never waits longer than this, so a test cannot hang
# The apiserver parses MicroTime with Go's "2006-01-02T15:04:05.000000Z07:00": exactly six digits.
MICROTIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}(Z|[+-]\d\d:\d\d)$")
SERVICE_NAME_LABEL = "kubernetes.io/service-name"


def status(code: int, reason: str, message: str) -> JSON:
    """A ``Status`` object, the body of every API error."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def endpoint_slice(
    name: str,
    endpoints: list[tuple[str, bool | None]],
    ports: Sequence[tuple[str | None, int]],
    *,
    address_type: str = "IPv4",
) -> JSON:
    """An EndpointSlice body: ``endpoints`` as (address, ready; None = condition unset)."""
    eps: list[JSON] = []
    for address, ready in endpoints:
        conditions: JSON = {} if ready is None else {"ready": ready}
        eps.append({"addresses": [address], "conditions": conditions})
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name},
        "addressType": address_type,
        "endpoints": eps,
        "ports": [
            {"port": port, "protocol": "TCP", **({} if pname is None else {"name": pname})}
            for pname, port in ports
        ],
    }


def endpoints_subset(
    ready: list[str], not_ready: list[str], ports: Sequence[tuple[str | None, int]]
) -> JSON:
    """One subset of a core/v1 Endpoints object."""
    return {
        "addresses": [{"ip": ip} for ip in ready],
        "notReadyAddresses": [{"ip": ip} for ip in not_ready],
        "ports": [
            {"port": port, "protocol": "TCP", **({} if pname is None else {"name": pname})}
            for pname, port in ports
        ],
    }


@dataclass(eq=False)
class _Watch:
    """One open watch stream, so controls can end it."""

    sock: socket.socket
    namespace: str
    name: str | None
    dropped: bool = False
    expired: bool = False


@dataclass
class _Event:
    rv: int
    type: str
    obj: JSON


@dataclass(eq=False)
class _Store:
    """Everything that survives a stop/start of the server."""

    rv: int = 1
    configmaps: dict[tuple[str, str], JSON] = field(default_factory=dict)
    history: list[_Event] = field(default_factory=list)
    horizon: int = 0  # a watch from a resourceVersion below this has been compacted away: 410
    slices: dict[str, list[JSON]] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], JSON] = field(default_factory=dict)
    leases: dict[tuple[str, str], JSON] = field(default_factory=dict)


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # watch handlers must not keep the process (or server_close) waiting
    standin: StandinApiServer


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked streaming, as the client expects
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests assert on behaviour, not on access logs

    def setup(self) -> None:
        super().setup()
        self.server.standin._track(self.connection, add=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.standin._track(self.connection, add=False)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def _dispatch(self, method: str) -> None:
        url = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body: JSON | None = json.loads(self.rfile.read(length)) if length else None
        parts = [p for p in url.path.split("/") if p]
        try:
            self.server.standin._route(self, method, parts, query, body)
        except OSError:
            self.close_connection = True  # the peer went away or a control dropped it

    def send_json(self, code: int, obj: JSON) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def start_stream(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

    def send_chunk(self, obj: JSON) -> None:
        line = json.dumps(obj).encode() + b"\n"
        self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))

    def end_stream(self) -> None:
        self.wfile.write(b"0\r\n\r\n")


class StandinApiServer:
    """Stand-in Kubernetes API server (see the module docstring); starts listening at once."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._store = _Store()
        self._watches: set[_Watch] = set()
        self._conns: set[socket.socket] = set()
        self._held = False
        self._closing = False
        self._force_gone: GoneMode | None = None
        self.gone_mode: GoneMode = "http"  # how a watch from a compacted version is refused
        self.endpoint_slices_available = True
        # Called (once, then cleared) just before a Lease create or replace is applied: lets a
        # test land a competing write between the client's read and its write.
        self.lease_write_hook: Callable[[], None] | None = None
        self.stats: Counter[str] = Counter()
        self.port = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self.start()

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api_client(self) -> ApiClient:
        """A ``kubernetes`` ApiClient pointed at this stand-in."""
        return ApiClient(Configuration(host=self.url))

    def start(self) -> None:
        """Listen (again) on 127.0.0.1; after a ``stop`` on the same port, with the same store."""
        with self._cond:
            self._closing = False
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.standin = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        """Go down: stop listening and cut every open connection (idle keep-alive ones too)."""
        server, self._server = self._server, None
        if server is None:
            return
        with self._cond:
            self._closing = True
            self._held = False
            for w in self._watches:
                w.dropped = True
            conns = list(self._conns)
            self._cond.notify_all()
        server.shutdown()
        server.server_close()
        for sock in conns:
            _shutdown(sock)
        if self._thread is not None:
            self._thread.join(5)

    def __enter__(self) -> StandinApiServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _track(self, sock: socket.socket, *, add: bool) -> None:
        with self._cond:
            if add:
                self._conns.add(sock)
            else:
                self._conns.discard(sock)

    # -- test controls: ConfigMaps -------------------------------------------------------------

    def put_configmap(self, namespace: str, name: str, data: dict[str, str]) -> str:
        """Create or update a ConfigMap (ADDED / MODIFIED event); returns its resourceVersion."""
        with self._cond:
            key = (namespace, name)
            old = self._store.configmaps.get(key)
            rv = self._next_rv()
            meta: JSON = {
                "name": name,
                "namespace": namespace,
                "uid": old["metadata"]["uid"] if old else str(uuid.uuid4()),
                "creationTimestamp": old["metadata"]["creationTimestamp"] if old else _now(),
                "resourceVersion": str(rv),
            }
            obj = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": dict(data)}
            self._store.configmaps[key] = obj
            self._record(rv, "MODIFIED" if old else "ADDED", obj)
            return str(rv)

    def delete_configmap(self, namespace: str, name: str) -> str:
        """Delete a ConfigMap (DELETED event); returns the deletion's resourceVersion."""
        with self._cond:
            obj = self._store.configmaps.pop((namespace, name))
            rv = self._next_rv()
            gone = copy.deepcopy(obj)
            gone["metadata"]["resourceVersion"] = str(rv)
            self._record(rv, "DELETED", gone)
            return str(rv)

    def compact(self) -> None:
        """Forget history: a watch from any version older than the current one gets 410."""
        with self._cond:
            self._store.horizon = self._store.rv

    def force_gone_next_watch(self, mode: GoneMode) -> None:
        """The next ConfigMap watch request is refused with 410, whatever its version."""
        with self._cond:
            self._force_gone = mode

    def expire_open_watches(self) -> int:
        """Compact, then send an ERROR 410 event on every open watch and end it."""
        with self._cond:
            self._store.horizon = self._store.rv
            for w in self._watches:
                w.expired = True
            self._cond.notify_all()
            return len(self._watches)

    def drop_watches(self) -> int:
        """Cut every open watch connection abruptly (no terminating chunk)."""
        with self._cond:
            watches = list(self._watches)
            for w in watches:
                w.dropped = True
            self._cond.notify_all()
        for w in watches:
            _shutdown(w.sock)
        return len(watches)

    def open_watches(self) -> int:
        with self._cond:
            return len(self._watches)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """ConfigMap list and watch requests arriving inside the block wait until it exits."""
        with self._cond:
            self._held = True
        try:
            yield
        finally:
            with self._cond:
                self._held = False
                self._cond.notify_all()

    # -- test controls: endpoints and leases ---------------------------------------------------

    def set_endpoint_slices(self, namespace: str, service: str, slices: list[JSON]) -> None:
        """Replace the EndpointSlices of ``service`` (labelled kubernetes.io/service-name)."""
        with self._cond:
            others = [
                s
                for s in self._store.slices.get(namespace, [])
                if s["metadata"]["labels"].get(SERVICE_NAME_LABEL) != service
            ]
            for s in slices:
                s = copy.deepcopy(s)
                s["metadata"].setdefault("labels", {})[SERVICE_NAME_LABEL] = service
                s["metadata"].update(namespace=namespace, resourceVersion=str(self._next_rv()))
                others.append(s)
            self._store.slices[namespace] = others

    def set_endpoints(self, namespace: str, name: str, subsets: list[JSON]) -> None:
        with self._cond:
            self._store.endpoints[(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "Endpoints",
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "resourceVersion": str(self._next_rv()),
                },
                "subsets": copy.deepcopy(subsets),
            }

    def put_lease(self, namespace: str, name: str, spec: JSON) -> str:
        """Write a Lease directly (as another client would); returns its new resourceVersion."""
        with self._cond:
            return self._store_lease(namespace, name, {"metadata": {"name": name}, "spec": spec})

    def get_lease(self, namespace: str, name: str) -> JSON | None:
        with self._cond:
            lease = self._store.leases.get((namespace, name))
            return copy.deepcopy(lease)

    # -- internals -----------------------------------------------------------------------------

    def _next_rv(self) -> int:
        self._store.rv += 1
        return self._store.rv

    def _record(self, rv: int, kind: str, obj: JSON) -> None:
        self._store.history.append(_Event(rv, kind, copy.deepcopy(obj)))
        self._cond.notify_all()

    def _store_lease(self, namespace: str, name: str, body: JSON) -> str:
        key = (namespace, name)
        old = self._store.leases.get(key)
        rv = str(self._next_rv())
        meta = dict(body.get("metadata") or {})
        meta.update(
            name=name,
            namespace=namespace,
            resourceVersion=rv,
            uid=old["metadata"]["uid"] if old else str(uuid.uuid4()),
            creationTimestamp=old["metadata"]["creationTimestamp"] if old else _now(),
        )
        self._store.leases[key] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": meta,
            "spec": copy.deepcopy(body.get("spec") or {}),
        }
        return rv

    def _route(
        self, h: _Handler, method: str, parts: list[str], q: dict[str, str], body: JSON | None
    ) -> None:
        match method, parts:
            case "GET", ["api", "v1", "namespaces", ns, "configmaps"]:
                if q.get("watch", "").lower() in ("true", "1"):
                    self._watch_configmaps(h, ns, q)
                else:
                    self._list_configmaps(h, ns, q)
            case "GET", ["api", "v1", "namespaces", ns, "endpoints", name]:
                self._get(h, "endpoints", self._store.endpoints, ns, name)
            case "GET", ["apis", "discovery.k8s.io", "v1", "namespaces", ns, "endpointslices"]:
                self._list_slices(h, ns, q)
            case "GET", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]:
                self._get(h, "leases.coordination.k8s.io", self._store.leases, ns, name)
            case "POST", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"]:
                self._create_lease(h, ns, body or {})
            case "PUT", ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]:
                self._replace_lease(h, ns, name, body or {})
            case _:
                self.stats["not_found"] += 1
                h.send_json(404, status(404, "NotFound", "the server could not find the resource"))

    def _wait_unheld(self) -> None:
        """Under the lock: block while a test holds ConfigMap requests."""
        deadline = time.monotonic() + HOLD_LIMIT_SECONDS
        while self._held and not self._closing and time.monotonic() < deadline:
            self._cond.wait(deadline - time.monotonic())

    def _list_configmaps(self, h: _Handler, ns: str, q: dict[str, str]) -> None:
        name = _field_name(q.get("fieldSelector"))
        with self._cond:
            self._wait_unheld()
            self.stats["configmap_list"] += 1
            items = [
                copy.deepcopy(obj)
                for (n, cm_name), obj in sorted(self._store.configmaps.items())
                if n == ns and name in (None, cm_name)
            ]
            rv = str(self._store.rv)
        h.send_json(
            200,
            {
                "apiVersion": "v1",
                "kind": "ConfigMapList",
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _watch_configmaps(self, h: _Handler, ns: str, q: dict[str, str]) -> None:
        name = _field_name(q.get("fieldSelector"))
        timeout = min(int(q.get("timeoutSeconds") or MAX_WATCH_SECONDS), MAX_WATCH_SECONDS)
        bookmarks = q.get("allowWatchBookmarks", "").lower() in ("true", "1")
        since = q.get("resourceVersion") or "0"
        with self._cond:
            self._wait_unheld()
            self.stats["configmap_watch"] += 1
            start = int(since) if since != "0" else self._store.rv  # "0" means "from now"
            gone: GoneMode | None = self._force_gone
            self._force_gone = None
            if gone is None and start < self._store.horizon:
                gone = self.gone_mode
            w = _Watch(h.connection, ns, name)
            cursor = bisect.bisect_right([e.rv for e in self._store.history], start)
            if gone is None:
                self._watches.add(w)
        if gone is not None:
            self.stats["gone"] += 1
            expired = status(410, "Expired", f"too old resource version: {since}")
            if gone == "http":
                h.send_json(410, expired)
            else:
                h.start_stream()
                h.send_chunk({"type": "ERROR", "object": expired})
                h.end_stream()
            return
        try:
            h.start_stream()
            self._stream(h, w, cursor, time.monotonic() + timeout, bookmarks)
        finally:
            with self._cond:
                self._watches.discard(w)

    def _stream(
        self, h: _Handler, w: _Watch, cursor: int, deadline: float, bookmarks: bool
    ) -> None:
        while True:
            with self._cond:
                while True:
                    history = self._store.history
                    pending = [
                        e
                        for e in history[cursor:]
                        if e.obj["metadata"]["namespace"] == w.namespace
                        and w.name in (None, e.obj["metadata"]["name"])
                    ]
                    cursor = len(history)
                    timed_out = time.monotonic() >= deadline
                    if pending or w.dropped or w.expired or self._closing or timed_out:
                        break
                    self._cond.wait(deadline - time.monotonic())
                current = self._store.rv
            if w.dropped or self._closing:
                h.close_connection = True  # abrupt: no terminating chunk
                _shutdown(w.sock)
                return
            if w.expired:  # what happened since is compacted away: not delivered
                pending = []
            for e in pending:
                h.send_chunk({"type": e.type, "object": e.obj})
            if w.expired:
                self.stats["gone"] += 1
                expired = status(410, "Expired", "too old resource version")
                h.send_chunk({"type": "ERROR", "object": expired})
                h.end_stream()
                return
            if timed_out:
                if bookmarks:
                    meta = {"resourceVersion": str(current)}
                    h.send_chunk(
                        {
                            "type": "BOOKMARK",
                            "object": {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta},
                        }
                    )
                h.end_stream()
                return

    def _list_slices(self, h: _Handler, ns: str, q: dict[str, str]) -> None:
        if not self.endpoint_slices_available:
            self.stats["endpointslices_404"] += 1
            h.send_json(404, status(404, "NotFound", "the server could not find the resource"))
            return
        want = _label_terms(q.get("labelSelector"))
        with self._cond:
            self.stats["endpointslice_list"] += 1
            items = [
                copy.deepcopy(s)
                for s in self._store.slices.get(ns, [])
                if all(s["metadata"]["labels"].get(k) == v for k, v in want.items())
            ]
            rv = str(self._store.rv)
        h.send_json(
            200,
            {
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": rv},
                "items": items,
            },
        )

    def _get(
        self, h: _Handler, kind: str, table: dict[tuple[str, str], JSON], ns: str, name: str
    ) -> None:
        with self._cond:
            self.stats[f"get_{kind}"] += 1
            obj = copy.deepcopy(table.get((ns, name)))
        if obj is None:
            h.send_json(404, status(404, "NotFound", f'{kind} "{name}" not found'))
        else:
            h.send_json(200, obj)

    def _create_lease(self, h: _Handler, ns: str, body: JSON) -> None:
        name = str((body.get("metadata") or {}).get("name") or "")
        problem = _invalid_lease(body)
        if problem:
            h.send_json(400, status(400, "BadRequest", problem))
            return
        self._run_write_hook()
        with self._cond:
            self.stats["lease_create"] += 1
            if (ns, name) in self._store.leases:
                self.stats["lease_conflict"] += 1
                msg = f'leases.coordination.k8s.io "{name}" already exists'
                reply = (409, status(409, "AlreadyExists", msg))
            else:
                self._store_lease(ns, name, body)
                reply = (201, copy.deepcopy(self._store.leases[(ns, name)]))
        h.send_json(*reply)

    def _run_write_hook(self) -> None:
        hook, self.lease_write_hook = self.lease_write_hook, None
        if hook is not None:
            hook()

    def _replace_lease(self, h: _Handler, ns: str, name: str, body: JSON) -> None:
        problem = _invalid_lease(body)
        if problem:
            h.send_json(400, status(400, "BadRequest", problem))
            return
        self._run_write_hook()
        with self._cond:
            self.stats["lease_replace"] += 1
            old = self._store.leases.get((ns, name))
            sent_rv = (body.get("metadata") or {}).get("resourceVersion")
            if old is None:
                reply = (404, status(404, "NotFound", f'leases.coordination.k8s.io "{name}"'))
            elif sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
                self.stats["lease_conflict"] += 1
                msg = (
                    f'Operation cannot be fulfilled on leases.coordination.k8s.io "{name}": the '
                    "object has been modified; please apply your changes to the latest version"
                )
                reply = (409, status(409, "Conflict", msg))
            else:
                self._store_lease(ns, name, body)
                reply = (200, copy.deepcopy(self._store.leases[(ns, name)]))
        h.send_json(*reply)


def _invalid_lease(body: JSON) -> str | None:
    """Validation the real apiserver would do on the fields the leader code writes."""
    spec = body.get("spec") or {}
    for key in ("acquireTime", "renewTime"):
        value = spec.get(key)
        if value is not None and not MICROTIME.match(str(value)):
            return f"spec.{key}: {value!r} is not RFC3339 with microseconds"
    duration = spec.get("leaseDurationSeconds")
    if duration is not None and (not isinstance(duration, int) or duration <= 0):
        return f"spec.leaseDurationSeconds: {duration!r} must be a positive integer"
    return None


def _field_name(selector: str | None) -> str | None:
    """The name in a ``metadata.name=X`` (or ``==``) field selector; None = no name filter."""
    for term in (selector or "").split(","):
        key, _, value = term.partition("=")
        if key.strip() == "metadata.name":
            return value.lstrip("=").strip()
    return None


def _label_terms(selector: str | None) -> dict[str, str]:
    terms: dict[str, str] = {}
    for term in (selector or "").split(","):
        if "=" in term:
            key, _, value = term.partition("=")
            terms[key.strip()] = value.lstrip("=").strip()
    return terms


def _shutdown(sock: socket.socket) -> None:
    with suppress(OSError):  # already closed
        sock.shutdown(socket.SHUT_RDWR)
