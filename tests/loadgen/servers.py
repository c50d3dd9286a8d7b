"""Servers the load-generator tests push to, all on 127.0.0.1 and stopped on exit.

:class:`StatusServer` answers remote-write pushes like a push endpoint under limits: each
request gets the next status of a fixed cycle (``200, 429, ...``), optionally after a delay,
and every request is recorded with the status it got, so a test can compare the load
generator's report with what the server actually saw and said. :class:`ClosingServer`
accepts connections and closes them without answering.
"""

from __future__ import annotations

import itertools
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.e2e.harness import LOCALHOST
from tests.e2e.processes import Fixture


@dataclass(frozen=True)
class Answered:
    status: int
    headers: dict[str, str]
    body: bytes


class _Server(ThreadingHTTPServer):
    # The default listen backlog (5) drops the SYNs of 50 workers connecting at once, and
    # each dropped SYN costs the client a 1 s retransmit.
    request_queue_size = 128


class StatusServer(Fixture):
    """HTTP/1.1 keep-alive server answering ``statuses`` in turn (with a short reason body)."""

    def __init__(
        self, statuses: Sequence[int] = (200,), *, delay_s: float = 0.0, close_every: int = 0
    ) -> None:
        self._cycle = itertools.cycle(statuses)
        self.delay_s = delay_s
        #: Close every Nth connection after answering, without saying so (no
        #: ``Connection: close``), as a server does when an idle keep-alive connection times out.
        self.close_every = close_every
        self._lock = threading.Lock()
        self._answered: list[Answered] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            timeout = 30
            # Buffered: head and body leave in one write (flushed after each request), as
            # real servers send them; two small writes would meet Nagle + delayed ACK.
            wbufsize = 65536

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if owner.delay_s:
                    time.sleep(owner.delay_s)
                with owner._lock:
                    status = next(owner._cycle)
                    owner._answered.append(Answered(status, dict(self.headers.items()), body))
                    n = len(owner._answered)
                if owner.close_every and n % owner.close_every == 0:
                    self.close_connection = True
                reason = b"" if status < 300 else b"refused with %d by the test server" % status
                self.send_response(status)
                self.send_header("Content-Length", str(len(reason)))
                self.end_headers()
                self.wfile.write(reason)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = _Server((LOCALHOST, 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://{LOCALHOST}:{self._server.server_address[1]}/api/v1/push"

    @property
    def answered(self) -> list[Answered]:
        with self._lock:
            return list(self._answered)


class ClosingServer(Fixture):
    """Accepts TCP connections and closes each one at once (no HTTP answer, ever)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._sock.bind((LOCALHOST, 0))
        self._sock.listen(64)
        self._sock.settimeout(0.05)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self._sock.close()

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self._sock.getsockname()[1]}/api/v1/push"
