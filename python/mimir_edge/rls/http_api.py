"""The HTTP side of a worker: /metrics, /healthz, /readyz and the admin API.

Every worker serves the same port (SO_REUSEPORT) and answers from the shared table, so
whichever worker a scrape or an admin call reaches, it sees the whole instance.

Admin API: ``GET /api/v1/limits`` (the limit set), ``PUT /api/v1/limits`` (replace it whole;
``Authorization: Bearer <--admin-token>`` required), ``GET /api/v1/tenants`` and
``GET /api/v1/tenants/<id>`` (limits, bucket fill, counters, recent rates).

The replica count travels beside the set, not in it, so the set's JSON stays what
``LimitSet.to_json`` writes (and an older overrides-sync, comparing bodies, still sees "same
set"): ``PUT /api/v1/limits?instances=N`` makes this replica enforce 1/N of every rate (no
parameter: the count in force stays), and ``GET /api/v1/limits`` answers the count in force in
the ``X-Mimir-Edge-Instances`` header.
"""

from __future__ import annotations

import hmac
import json
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

from mimir_edge._http import parse_content_length
from mimir_edge.limits import LimitSet

if TYPE_CHECKING:
    from mimir_edge.rls.worker import WorkerState

__all__ = ["INSTANCES_HEADER", "INSTANCES_PARAM", "MAX_INSTANCES", "AdminServer", "parse_instances"]

MAX_ADMIN_BODY = 16 << 20
#: ``PUT /api/v1/limits?instances=N``: the replicas sharing the traffic (overrides-sync sends it).
INSTANCES_PARAM = "instances"
#: The count in force, on ``GET /api/v1/limits`` and ``PUT`` answers.
INSTANCES_HEADER = "X-Mimir-Edge-Instances"
#: Far above any real replica count; a larger one is a mistake, not a deployment.
MAX_INSTANCES = 10_000


def parse_instances(query: str) -> int | None:
    """The replica count of a PUT's query string (None: not given). Raises ValueError with
    the message a client gets (400) for anything else, unknown parameters included."""
    params = parse_qs(query, keep_blank_values=True)
    unknown = sorted(set(params) - {INSTANCES_PARAM})
    if unknown:
        raise ValueError(f"unknown query parameter {unknown[0]!r} (only {INSTANCES_PARAM!r})")
    values = params.get(INSTANCES_PARAM)
    if values is None:
        return None
    if len(values) != 1:
        raise ValueError(f"{INSTANCES_PARAM} given {len(values)} times")
    raw = values[0].strip()
    if not raw.isascii() or not raw.isdigit() or not 1 <= int(raw) <= MAX_INSTANCES:
        raise ValueError(
            f"{INSTANCES_PARAM} must be an integer from 1 to {MAX_INSTANCES}, got {values[0]!r}"
        )
    return int(raw)


class AdminServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: str, state: WorkerState) -> None:
        host, _, port = listen.rpartition(":")
        self.state = state
        super().__init__(
            (host.strip("[]") or "0.0.0.0", int(port)), _Handler, bind_and_activate=False
        )
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        self.server_bind()
        self.server_activate()


class _Handler(BaseHTTPRequestHandler):
    server: AdminServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: metrics cover it
        pass

    def _send(
        self,
        status: int,
        body: bytes | str,
        ctype: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: object, headers: dict[str, str] | None = None) -> None:
        body = json.dumps(doc, indent=1, default=str) + "\n"
        self._send(status, body, "application/json", headers)

    def _refuse(self, status: int, doc: object) -> None:
        """An error answered before the body is read: the connection is closed, so the
        unread body is never taken for the next request."""
        self._json(status, doc, {"Connection": "close"})

    def do_GET(self) -> None:
        st = self.server.state
        path = self.path.split("?", 1)[0]
        # This worker may not have ticked since another one took a PUT: answer for the
        # latest publication (two atomic reads when nothing changed).
        st.reload_if_changed()
        if path == "/metrics":
            self._send(200, st.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, "ok\n")
        elif path == "/readyz":
            ready, why = st.readiness()
            self._send(200 if ready else 503, why + "\n")
        elif path == "/api/v1/limits":
            limit_set, count = st.in_force()
            self._json(200, json.loads(limit_set.to_json()), {INSTANCES_HEADER: str(count)})
        elif path == "/api/v1/tenants":
            self._json(200, st.tenant_report())
        elif path.startswith("/api/v1/tenants/"):
            tenant = path.removeprefix("/api/v1/tenants/")
            rows = [r for r in st.tenant_report() if r["tenant"] == tenant]
            if rows:
                self._json(200, rows[0])
            else:
                limits = st.engine.tenant_limits(tenant) if tenant else None
                self._json(404, {"error": "tenant not seen yet", "limits": limits})
        else:
            self._json(404, {"error": f"no route {path}"})

    def do_PUT(self) -> None:
        st = self.server.state
        path, _, query = self.path.partition("?")
        if path != "/api/v1/limits":
            self._refuse(404, {"error": f"no route {path}"})
            return
        token = st.settings.admin_token
        given = self.headers.get("Authorization", "")
        if not token:
            self._refuse(
                403, {"error": "admin writes are disabled: start the RLS with --admin-token"}
            )
            return
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._refuse(401, {"error": "a valid `Authorization: Bearer <token>` is required"})
            return
        raw_length = self.headers.get("Content-Length")
        # Negative would read to EOF (a hang); anything else is not a length.
        length = 0 if raw_length is None else parse_content_length(raw_length)
        if length is None:
            self._refuse(400, {"error": f"bad Content-Length {raw_length!r}"})
            return
        if length > MAX_ADMIN_BODY:
            self._refuse(413, {"error": f"limit set larger than {MAX_ADMIN_BODY} bytes"})
            return
        body = self.rfile.read(length)
        try:
            instances = parse_instances(query)
            new = LimitSet.from_json(body)
        except ValueError as e:  # LimitsError is one
            self._json(400, {"error": str(e)})
            return
        generation = st.publish(new, instances)
        count = st.in_force()[1]
        self._json(
            200,
            {"generation": generation, "tenants": len(new.tenants), "instances": count},
            {INSTANCES_HEADER: str(count)},
        )

    def do_POST(self) -> None:
        # The body is not read: the connection closes, so it is never taken for a request.
        self._refuse(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET or PUT"})
