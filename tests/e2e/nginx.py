"""Real NGINX running the committed ``servers/nginx`` mode files, as a test fixture.

The mode files (``mirror.conf``, ``canary.conf``, ``edge.conf``, ``direct.conf``) and the shared
includes are used as committed: a temporary configuration directory links to them. Only the
files a user edits for a deployment are written by the test: ``upstream-distributor.conf`` and
``upstream-envoy.conf`` (the committed files with their Kubernetes address replaced by a
loopback port), ``listen.conf`` (a loopback port), and, when given, ``canary-split.conf`` (see
:func:`canary_split`, which edits the committed file the way the guide tells users to).

NGINX runs as the current user (``user`` is set only when that is root, so workers can use the
temporary directory), in the foreground (``daemon off``), with its pid file, error log, access
log and temporary paths in the temporary directory. Everything listens on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import re
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.e2e.harness import LOCALHOST, free_port
from tests.e2e.processes import Fixture, terminate

__all__ = [
    "MODES",
    "NGINX",
    "NGINX_DIR",
    "NginxError",
    "NginxProcess",
    "canary_split",
    "nginx_test",
    "write_conf_dir",
]

NGINX = "/usr/sbin/nginx"
NGINX_DIR = Path(__file__).resolve().parents[2] / "servers" / "nginx"
MODES = ("mirror", "canary", "edge", "direct")
#: The addresses in the committed upstream files (the rollout guide's Kubernetes Services).
DISTRIBUTOR_SERVICE = "mimir-distributor.mimir.svc.cluster.local:8080"
ENVOY_SERVICE = "mimir-envoy.mimir-edge-enforcement.svc.cluster.local:8080"
DISTRIBUTOR_UPSTREAM = "upstream-distributor.conf"
ENVOY_UPSTREAM = "upstream-envoy.conf"
#: The files a user edits; everything else in servers/nginx is used as committed.
_USER_FILES = (DISTRIBUTOR_UPSTREAM, ENVOY_UPSTREAM, "listen.conf", "canary-split.conf")
_ENVOY_LINE = re.compile(r"^(\s*)[0-9.]+%(\s+mimir_envoy;)", re.MULTILINE)


class NginxError(RuntimeError):
    """NGINX rejected its configuration or did not start."""


def canary_split(percent: float, *, key: str | None = None) -> str:
    """The committed ``canary-split.conf`` with its Envoy share set to ``percent``, as a user
    edits it: the number changed, or for 0 the ``mimir_envoy`` line commented out (NGINX
    refuses ``0%``). ``key`` replaces the split key (e.g. ``"${http_x_scope_orgid}"``)."""
    text = (NGINX_DIR / "canary-split.conf").read_text()
    if len(_ENVOY_LINE.findall(text)) != 1:
        raise NginxError("canary-split.conf must have exactly one `N% mimir_envoy;` line")
    if percent == 0:
        text = _ENVOY_LINE.sub(r"\1# 0%\2", text)
    else:
        text = _ENVOY_LINE.sub(rf"\g<1>{percent:g}%\2", text)
    if key is not None:
        text, n = re.subn(r'split_clients\s+"[^"]*"', f'split_clients "{key}"', text)
        if n != 1:
            raise NginxError("canary-split.conf must have exactly one split_clients block")
    return text


def _edited_upstream(name: str, service: str, address: str) -> str:
    """The committed upstream file ``name`` with its ``server`` set to ``address``."""
    text = (NGINX_DIR / name).read_text()
    if text.count(f"server {service};") != 1:
        raise NginxError(f"{name} should name `server {service};` once")
    return text.replace(f"server {service};", f"server {address};")


def write_conf_dir(
    root: Path,
    mode: str,
    *,
    listen_port: int,
    distributor_port: int,
    envoy_port: int,
    canary: str | None = None,
    extra_http: str = "",
    worker_processes: int = 1,
    envoy_address: str | None = None,
) -> Path:
    """Write ``root/conf/nginx.conf`` (a minimal main file including ``mimir-edge/<mode>.conf``)
    and ``root/conf/mimir-edge/`` (links to the committed files, loopback user files).
    ``extra_http`` is added to the main file's ``http`` block (test-only servers).
    ``envoy_address`` replaces Envoy's ``127.0.0.1:<envoy_port>`` in upstream-envoy.conf
    (e.g. a name that does not resolve). Returns the path of nginx.conf."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    conf = root / "conf"
    edge_dir = conf / "mimir-edge"
    edge_dir.mkdir(parents=True, exist_ok=True)
    for path in NGINX_DIR.glob("*.conf"):
        if path.name not in _USER_FILES:
            (edge_dir / path.name).symlink_to(path)
    (edge_dir / DISTRIBUTOR_UPSTREAM).write_text(
        _edited_upstream(
            DISTRIBUTOR_UPSTREAM, DISTRIBUTOR_SERVICE, f"{LOCALHOST}:{distributor_port}"
        )
    )
    envoy = envoy_address if envoy_address is not None else f"{LOCALHOST}:{envoy_port}"
    (edge_dir / ENVOY_UPSTREAM).write_text(_edited_upstream(ENVOY_UPSTREAM, ENVOY_SERVICE, envoy))
    (edge_dir / "listen.conf").write_text(f"listen {LOCALHOST}:{listen_port};\n")
    split = NGINX_DIR / "canary-split.conf"
    if canary is None:
        (edge_dir / "canary-split.conf").symlink_to(split)
    else:
        (edge_dir / "canary-split.conf").write_text(canary)
    temp = root / "temp"
    for sub in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (temp / sub).mkdir(parents=True, exist_ok=True)
    # Workers of a root master would run as `nobody`, which cannot use the temp directory.
    user = f"user {pwd.getpwuid(os.geteuid()).pw_name};\n" if os.geteuid() == 0 else ""
    main = conf / "nginx.conf"
    main.write_text(
        f"""{user}daemon off;
worker_processes {worker_processes};
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{
    worker_connections 1024;
}}
http {{
    client_body_temp_path {temp}/client_body;
    proxy_temp_path {temp}/proxy;
    fastcgi_temp_path {temp}/fastcgi;
    uwsgi_temp_path {temp}/uwsgi;
    scgi_temp_path {temp}/scgi;
    include mimir-edge/{mode}.conf;
    access_log {root}/access.log mimir_edge;
{extra_http}
}}
"""
    )
    return main


def _nginx_cmd(root: Path, main: Path, *extra: str) -> list[str]:
    return [NGINX, "-p", f"{root}/", "-c", str(main), "-e", str(root / "error.log"), *extra]


def nginx_test(root: Path, main: Path, *, timeout_s: float = 30.0) -> str:
    """``nginx -t`` on ``main``; returns NGINX's output, raises :class:`NginxError` if it fails."""
    proc = subprocess.run(
        _nginx_cmd(root, main, "-t"),
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    output = proc.stderr + proc.stdout
    if proc.returncode != 0:
        raise NginxError(f"nginx -t failed (exit {proc.returncode}):\n{output}")
    return output


class NginxProcess(Fixture):
    """NGINX in ``mode`` on free loopback ports, as a context manager.

    On entry: writes the configuration (:func:`write_conf_dir`), runs ``nginx -t``, starts
    NGINX and waits until its listening ports accept connections. On exit: SIGTERM (fast
    shutdown), then SIGKILL of its process group if it has not exited after ``stop_timeout_s``.
    ``extra_http`` adds test-only servers (see :func:`write_conf_dir`); NGINX is ready when
    ``extra_ports`` accept connections too.
    """

    def __init__(
        self,
        mode: str,
        *,
        distributor_port: int,
        envoy_port: int,
        canary: str | None = None,
        listen_port: int | None = None,
        extra_http: str = "",
        extra_ports: Sequence[int] = (),
        ready_timeout_s: float = 15.0,
        stop_timeout_s: float = 10.0,
    ) -> None:
        self.mode = mode
        self.distributor_port = distributor_port
        self.envoy_port = envoy_port
        self.listen_port = listen_port if listen_port is not None else free_port()
        self.canary = canary
        self.extra_http = extra_http
        self.extra_ports = tuple(extra_ports)
        self.ready_timeout_s = ready_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._last = {"error.log": "", "access.log": "", "stderr": ""}

    @property
    def url(self) -> str:
        return f"http://{LOCALHOST}:{self.listen_port}"

    @property
    def root(self) -> Path:
        if self._tmp is None:
            raise NginxError("nginx is not running")
        return Path(self._tmp.name)

    def start(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="mimir-edge-nginx-")
        root = self.root
        main = write_conf_dir(
            root,
            self.mode,
            listen_port=self.listen_port,
            distributor_port=self.distributor_port,
            envoy_port=self.envoy_port,
            canary=self.canary,
            extra_http=self.extra_http,
        )
        nginx_test(root, main)
        with (root / "stderr").open("wb") as err:
            # Its own session: the process group id is NGINX's pid, for a last-resort SIGKILL
            # that reaches its workers too.
            self._proc = subprocess.Popen(
                _nginx_cmd(root, main),
                stdout=err,
                stderr=err,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ports = [self.listen_port, *self.extra_ports]
        deadline = time.monotonic() + self.ready_timeout_s
        while not all(_accepts(port) for port in ports):
            if self._proc.poll() is not None:
                raise NginxError(f"nginx exited with {self._proc.returncode}:\n{self.logs()}")
            if time.monotonic() > deadline:
                raise NginxError(f"nginx not listening after {self.ready_timeout_s} s")
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            terminate(proc, self.stop_timeout_s, kill_group=True)
        if self._tmp is not None:
            self._last = {name: self._read(name) for name in self._last}
            self._tmp.cleanup()
            self._tmp = None

    def _read(self, name: str) -> str:
        if self._tmp is None:
            return self._last[name]
        path = Path(self._tmp.name) / name
        return path.read_text(errors="replace") if path.is_file() else ""

    def error_log(self) -> str:
        return self._read("error.log")

    def logs(self) -> str:
        """NGINX's stderr and error log, for failure messages."""
        return f"--- nginx stderr\n{self._read('stderr')}--- nginx error.log\n{self.error_log()}"

    def access_log(self) -> list[dict[str, Any]]:
        """The access-log entries so far (the ``mimir_edge`` JSON format of log-format.conf)."""
        entries: list[dict[str, Any]] = []
        for line in self._read("access.log").splitlines():
            with contextlib.suppress(ValueError):
                entry = json.loads(line)
                if isinstance(entry, dict):
                    entries.append(entry)
        return entries


def _accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex((LOCALHOST, port)) == 0
