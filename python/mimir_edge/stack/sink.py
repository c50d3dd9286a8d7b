"""The built-in upstream of ``mimir-edge up``: a remote-write sink standing in for Mimir.

It answers pushes as Mimir's distributor does (200 with an empty body; 400 and the reason for
a body it cannot decode; 401 ``no org id`` without a tenant) and keeps per-tenant totals of
what it decoded with the core (:func:`mimir_edge.scan_remote_write`), so what arrived behind
the edge can be compared with what was sent. It stores nothing else.

HTTP: ``POST /api/v1/push``, ``GET /api/v1/totals`` (JSON), ``GET /metrics`` (Prometheus
text), ``GET /ready``.
"""

from __future__ import annotations

import json
import threading
from dataclasses import asdict, dataclass, fields
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mimir_edge import CONTENT_TYPE_V2, RemoteWriteError, WriteStats, scan_remote_write
from mimir_edge._http import parse_content_length
from mimir_edge.envoy_config import PUSH_PATH, EnvoyConfig

__all__ = ["MAX_BODY_BYTES", "RemoteWriteSink", "TenantTotals"]

#: Mimir's default ``-distributor.max-recv-msg-size``.
MAX_BODY_BYTES = 100 << 20
#: Mimir's tenant header (the RLS and Envoy take theirs from settings; the sink is Mimir).
TENANT_HEADER = EnvoyConfig.tenant_header


@dataclass
class TenantTotals:
    """What one tenant's pushes held, as decoded by the core; ``bad_bodies`` were refused."""

    pushes: int = 0
    series: int = 0
    samples: int = 0
    histograms: int = 0
    exemplars: int = 0
    metadata: int = 0
    bytes: int = 0
    bad_bodies: int = 0


_METRIC_HELP = {
    "pushes": "Pushes the sink accepted.",
    "series": "Series in accepted pushes.",
    "samples": "Float samples in accepted pushes.",
    "histograms": "Native histogram samples in accepted pushes.",
    "exemplars": "Exemplars in accepted pushes.",
    "metadata": "Metadata entries in accepted pushes.",
    "bytes": "Compressed body bytes of accepted pushes.",
    "bad_bodies": "Pushes refused because the body could not be decoded.",
}


class RemoteWriteSink:
    """The sink on ``host:port`` (0: any free port), served from a thread; a context manager.

    The socket is bound in the constructor, so the port is known (and taken) before anything
    else starts; requests are served once :meth:`start` is called.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()
        self._totals: dict[str, TenantTotals] = {}
        self._server = _Server((host, port), self)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    def start(self) -> None:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sink",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> RemoteWriteSink:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- totals ------------------------------------------------------------------------------

    def totals(self) -> dict[str, TenantTotals]:
        """A copy of the per-tenant totals."""
        with self._lock:
            return {t: TenantTotals(**asdict(v)) for t, v in self._totals.items()}

    def _tenant(self, tenant: str) -> TenantTotals:
        # Called with the lock held.
        if tenant not in self._totals:
            self._totals[tenant] = TenantTotals()
        return self._totals[tenant]

    def record_bad(self, tenant: str) -> None:
        with self._lock:
            self._tenant(tenant).bad_bodies += 1

    def record(self, tenant: str, stats: WriteStats, size: int) -> None:
        with self._lock:
            t = self._tenant(tenant)
            t.pushes += 1
            t.series += stats.series
            t.samples += stats.samples
            t.histograms += stats.histograms
            t.exemplars += stats.exemplars
            t.metadata += stats.metadata
            t.bytes += size

    def totals_json(self) -> dict[str, Any]:
        return {"tenants": {t: asdict(v) for t, v in sorted(self.totals().items())}}

    def metrics_text(self) -> str:
        totals = sorted(self.totals().items())
        lines: list[str] = []
        for f in fields(TenantTotals):
            name = f"sink_{f.name}_total"
            lines += [f"# HELP {name} {_METRIC_HELP[f.name]}", f"# TYPE {name} counter"]
            lines += [f'{name}{{tenant="{_escape(t)}"}} {getattr(v, f.name)}' for t, v in totals]
        return "\n".join(lines) + "\n"


def _chunk_size(line: bytes) -> int:
    """The size on a chunk-size line; a malformed one ends the body (the scan then refuses
    what was read, as a truncated body)."""
    try:
        return int(line.split(b";")[0].strip(), 16)
    except ValueError:
        return 0


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sink: RemoteWriteSink) -> None:
        self.sink = sink
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    timeout = 60

    def log_message(self, format: str, *args: Any) -> None:  # totals say what arrived
        pass

    def _send(
        self,
        status: int,
        body: str = "",
        ctype: str = "text/plain; charset=utf-8",
        headers: dict[str, str] | None = None,
    ) -> None:
        data = body.encode()
        self.send_response(status)
        if data:
            self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        sink = self.server.sink
        if path == "/ready":
            self._send(200, "ready\n")
        elif path == "/metrics":
            self._send(200, sink.metrics_text(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/api/v1/totals":
            self._send(200, json.dumps(sink.totals_json(), indent=1) + "\n", "application/json")
        else:
            self._send(404, "404 page not found\n")

    def do_POST(self) -> None:
        if self.path.split("?", 1)[0] != PUSH_PATH:
            if self._drain_body():
                self._send(404, "404 page not found\n")
            return
        body = self._read_body()
        if body is None:
            return
        tenant = self.headers.get(TENANT_HEADER, "")
        if not tenant:
            self._send(401, "no org id\n")
            return
        ctype = self.headers.get("Content-Type")
        try:
            stats = scan_remote_write(
                body,
                content_encoding=(self.headers.get("Content-Encoding") or "snappy").lower(),
                content_type=ctype,
            )
        except RemoteWriteError as e:
            self.server.sink.record_bad(tenant)
            self._send(e.http_status, f"{e}\n")
            return
        self.server.sink.record(tenant, stats, len(body))
        headers: dict[str, str] = {}
        if ctype is not None and CONTENT_TYPE_V2 in ctype.replace(" ", ""):
            # Remote write 2.0 senders read what was written from these headers.
            headers = {
                "X-Prometheus-Remote-Write-Samples-Written": str(stats.samples),
                "X-Prometheus-Remote-Write-Histograms-Written": str(stats.histograms),
                "X-Prometheus-Remote-Write-Exemplars-Written": str(stats.exemplars),
            }
        self._send(200, headers=headers)

    def _drain_body(self) -> bool:
        """Read and drop the body of a request refused anyway. False when it cannot be (a bad
        or too large Content-Length): then 400/413 is answered. A body left unread closes the
        connection, so it is never taken for the next request."""
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            return True
        raw = self.headers.get("Content-Length")
        length = 0 if raw is None else parse_content_length(raw)
        if length is None or length > MAX_BODY_BYTES:
            self.close_connection = True
            if length is None:
                self._send(400, f"bad Content-Length {raw!r}\n")
            else:
                self._send(413, f"request body larger than {MAX_BODY_BYTES} bytes\n")
            return False
        while length > 0:
            chunk = self.rfile.read(min(length, 64 * 1024))
            if not chunk:
                self.close_connection = True
                break
            length -= len(chunk)
        return True

    def _read_body(self) -> bytes | None:
        """The whole body (Content-Length or chunked); else answers 400/411/413 and returns
        None."""
        too_large = f"request body larger than {MAX_BODY_BYTES} bytes\n"
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            body = self._read_chunked()
            if body is None:
                self.close_connection = True
                self._send(413, too_large)
            return body
        raw = self.headers.get("Content-Length")
        length = parse_content_length(raw)
        if length is None:
            self.close_connection = True
            if raw is None:
                self._send(411, "length required\n")
            else:
                self._send(400, f"bad Content-Length {raw!r}\n")
            return None
        if length > MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413, too_large)
            return None
        return self.rfile.read(length)

    def _read_chunked(self) -> bytes | None:
        chunks: list[bytes] = []
        read = 0
        while size := _chunk_size(self.rfile.readline()):
            read += size
            if read > MAX_BODY_BYTES:
                return None
            chunks.append(self.rfile.read(size))
            self.rfile.readline()
        while self.rfile.readline().strip():  # trailers, then the empty line
            pass
        return b"".join(chunks)
