"""The HTTP side of a worker: /metrics, /healthz, /readyz and the admin API.

Every worker serves the same port (SO_REUSEPORT) and answers from the shared table, so
whichever worker a scrape or an admin call reaches, it sees the whole instance.

Admin API: ``GET /api/v1/limits`` (the limit set), ``PUT /api/v1/limits`` (replace it whole;
``Authorization: Bearer <--admin-token>`` required), ``GET /api/v1/tenants`` and
``GET /api/v1/tenants/<id>`` (limits, bucket fill, counters, recent rates).
"""

from __future__ import annotations

import hmac
import json
import socket
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

from mimir_edge.limits import LimitsError, LimitSet

if TYPE_CHECKING:
    from mimir_edge.rls.worker import WorkerState

__all__ = ["AdminServer"]

MAX_ADMIN_BODY = 16 << 20


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
        self, status: int, body: bytes | str, ctype: str = "text/plain; charset=utf-8"
    ) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _json(self, status: int, doc: object) -> None:
        self._send(status, json.dumps(doc, indent=1, default=str) + "\n", "application/json")

    def do_GET(self) -> None:
        st = self.server.state
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(200, st.metrics(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, "ok\n")
        elif path == "/readyz":
            ready, why = st.readiness()
            self._send(200 if ready else 503, why + "\n")
        elif path == "/api/v1/limits":
            self._json(200, json.loads(st.limit_set.to_json()))
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
        if self.path.split("?", 1)[0] != "/api/v1/limits":
            self._json(404, {"error": f"no route {self.path}"})
            return
        token = st.settings.admin_token
        given = self.headers.get("Authorization", "")
        if not token:
            self._json(
                403, {"error": "admin writes are disabled: start the RLS with --admin-token"}
            )
            return
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            self._json(401, {"error": "a valid `Authorization: Bearer <token>` is required"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_ADMIN_BODY:
            self._json(413, {"error": f"limit set larger than {MAX_ADMIN_BODY} bytes"})
            return
        try:
            new = LimitSet.from_json(self.rfile.read(length))
        except LimitsError as e:
            self._json(400, {"error": str(e)})
            return
        generation = st.publish(new)
        self._json(200, {"generation": generation, "tenants": len(new.tenants)})

    def do_POST(self) -> None:
        self._json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "use GET or PUT"})
