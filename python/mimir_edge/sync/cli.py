"""``mimir-edge overrides-sync``: flags, wiring, and the process (HTTP for metrics and probes).

Every flag ``--some-flag`` can also be set as ``MIMIR_EDGE_SOME_FLAG``; a flag on the command
line wins over the environment. The Kubernetes pieces (ConfigMap source, Endpoints targets,
Lease leadership) are imported only when asked for.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any

from mimir_edge.limits import LimitSet
from mimir_edge.rls import logs
from mimir_edge.sync.base import Leadership, Source, TargetSource
from mimir_edge.sync.controller import Controller
from mimir_edge.sync.file_source import FileSource
from mimir_edge.sync.metrics import SyncMetrics
from mimir_edge.sync.targets import DnsTargets, Pusher, StaticTargets

__all__ = ["add_parser", "main", "make_leadership", "make_source", "make_targets", "run"]

ENV_PREFIX = "MIMIR_EDGE_"
_DEFAULT_KEYS = (
    ("ingestion-rate", float),
    ("ingestion-burst-size", int),
    ("request-rate", float),
    ("request-burst-size", int),
)


def _env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").upper().replace("-", "_")


def add_parser(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Register ``overrides-sync`` (its ``func`` is :func:`run`)."""
    p = subparsers.add_parser(
        "overrides-sync",
        help="push Mimir's runtime-config overrides to every RLS replica",
        description="Follow Mimir's runtime config (a mounted file or directory, or a "
        "ConfigMap through the Kubernetes API) and push its limit set whole to every RLS "
        "replica through the admin API, on every change and every push interval. A source "
        "that is deleted or fails to parse keeps the last good set in force. Serves "
        "/metrics, /healthz and /readyz. Every flag can also be set in the environment as "
        "MIMIR_EDGE_<FLAG>.",
    )

    def opt(flag: str, help: str, default: Any, *, secret: bool = False, **kw: Any) -> None:
        env = _env_name(flag)
        raw = os.environ.get(env)
        if raw is not None:
            default = kw.get("type", str)(raw)
        # A secret from the environment must not show up in --help.
        shown = "" if secret else " (default: %(default)s)"
        p.add_argument(flag, default=default, help=f"{help} [env {env}]{shown}", **kw)

    def flag(flag: str, help: str, default: bool) -> None:
        env = _env_name(flag)
        raw = os.environ.get(env)
        if raw is not None:
            default = raw.strip().lower() in ("1", "true", "yes", "on")
        p.add_argument(
            flag, action=argparse.BooleanOptionalAction, default=default, help=f"{help} [env {env}]"
        )

    opt("--source", "where the overrides come from", "file", choices=("file", "kubernetes"))
    opt(
        "--file",
        "with --source file: Mimir's runtime-config file, or a mounted ConfigMap directory",
        None,
    )
    opt("--poll-seconds", "how often --file is read (as Mimir polls it)", 10.0, type=float)
    opt("--namespace", "with --source kubernetes: the ConfigMap's namespace", "mimir")
    opt("--configmap", "with --source kubernetes: the ConfigMap's name", "mimir-overrides")
    opt(
        "--key",
        "the ConfigMap key (or file of the directory) holding the runtime config; "
        "unset: the only one",
        None,
    )
    opt(
        "--targets",
        "RLS replicas, comma-separated host:port or URLs of their HTTP ports (the replica "
        "count sent is the number that answered in the last round)",
        None,
    )
    opt(
        "--targets-dns",
        "host:port of a headless Service: every A/AAAA record is a replica, re-resolved "
        "every push interval",
        None,
    )
    opt(
        "--targets-endpoints",
        "a Kubernetes Service of the RLS: every ready endpoint is a replica",
        None,
    )
    opt("--targets-endpoints-port", "with --targets-endpoints: the HTTP port's name", "http")
    opt(
        "--targets-namespace",
        "with --targets-endpoints: the Service's namespace (unset: --namespace)",
        None,
    )
    opt("--admin-token", "bearer token of the RLS admin API", None, secret=True)
    opt(
        "--admin-token-file",
        "file holding the bearer token (re-read every push, so a rotated Secret is followed)",
        None,
    )
    opt(
        "--push-interval-seconds", "how often every replica is checked and synced", 10.0, type=float
    )
    opt("--push-timeout-seconds", "timeout of each request to a replica", 5.0, type=float)
    flag(
        "--push-instances",
        "send each replica the number of replicas found (PUT ?instances=N), so each enforces "
        "1/N of every rate as the replica count changes; --no-push-instances leaves each on "
        "its own --instances",
        True,
    )
    opt("--http-listen", "host:port for /metrics, /healthz and /readyz", "0.0.0.0:9091")
    flag(
        "--leader-elect",
        "run as one active replica of several: only the holder of a Kubernetes Lease pushes",
        False,
    )
    opt("--leader-elect-lease-name", "the Lease's name", "mimir-edge-overrides-sync")
    opt("--leader-elect-lease-namespace", "the Lease's namespace (unset: --namespace)", None)
    opt(
        "--leader-elect-identity",
        "this replica's name in the Lease (unset: the host name, a Pod's name)",
        None,
    )
    for key, typ in _DEFAULT_KEYS:
        opt(
            f"--default-{key}",
            f"default {key.replace('-', '_')} of the pushed set, for tenants without "
            "overrides; set it as on the RLS (Mimir's default when unset)",
            None,
            type=typ,
        )
    opt("--log-level", "debug, info, warning or error", "info")
    p.set_defaults(func=run)
    return p


# -- factories (the Kubernetes modules are imported only when used) --------------------------


def make_source(args: argparse.Namespace) -> Source:
    if args.source == "kubernetes":
        kube = importlib.import_module("mimir_edge.sync.kube")
        source: Source = kube.configmap_source(args.namespace, args.configmap)
        return source
    if not args.file:
        raise ValueError("--source file needs --file")
    return FileSource(args.file, args.poll_seconds)


def make_targets(args: argparse.Namespace) -> TargetSource:
    given = [f for f in ("targets", "targets_dns", "targets_endpoints") if getattr(args, f)]
    if len(given) != 1:
        raise ValueError("give exactly one of --targets, --targets-dns, --targets-endpoints")
    if args.targets:
        return StaticTargets(args.targets.split(","))
    if args.targets_dns:
        return DnsTargets(args.targets_dns)
    kube = importlib.import_module("mimir_edge.sync.kube")
    targets: TargetSource = kube.endpoints_targets(
        args.targets_namespace or args.namespace,
        args.targets_endpoints,
        args.targets_endpoints_port,
    )
    return targets


def make_leadership(args: argparse.Namespace) -> Leadership | None:
    if not args.leader_elect:
        return None
    leader = importlib.import_module("mimir_edge.sync.leader")
    leadership: Leadership = leader.lease_leadership(
        args.leader_elect_lease_namespace or args.namespace,
        args.leader_elect_lease_name,
        args.leader_elect_identity or socket.gethostname(),
    )
    return leadership


class _Token:
    """The admin token, from the flag or re-read from its file (the last good read is kept)."""

    def __init__(self, value: str | None, path: str | None, log: logging.Logger) -> None:
        if bool(value) == bool(path):
            raise ValueError("give exactly one of --admin-token, --admin-token-file")
        self._path = Path(path) if path else None
        self._log = log
        self._value = value or self._read()

    def _read(self) -> str:
        assert self._path is not None
        token = self._path.read_text().strip()
        if not token:
            raise ValueError(f"{self._path} is empty")
        return token

    def __call__(self) -> str:
        if self._path is not None:
            try:
                self._value = self._read()
            except (OSError, ValueError) as e:
                self._log.error(
                    "cannot re-read the admin token; using the last one",
                    extra={"fields": {"error": str(e)}},
                )
        return self._value


# -- the process -------------------------------------------------------------------------


class _ProbeServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, listen: str, controller: Controller, metrics: SyncMetrics) -> None:
        host, sep, port = listen.rpartition(":")
        if not sep or not port.isdigit():
            raise ValueError(f"--http-listen: expected host:port, got {listen!r}")
        self.controller = controller
        self.metrics = metrics
        super().__init__((host.strip("[]") or "0.0.0.0", int(port)), _ProbeHandler)


class _ProbeHandler(BaseHTTPRequestHandler):
    server: _ProbeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet: probes every few seconds
        pass

    def _send(self, status: int, text: str, ctype: str = "text/plain; charset=utf-8") -> None:
        data = text.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._send(
                200, self.server.metrics.render(), "text/plain; version=0.0.4; charset=utf-8"
            )
        elif path == "/healthz":
            self._send(200, "ok\n")
        elif path == "/readyz":
            ready, why = self.server.controller.readiness()
            self._send(200 if ready else 503, why + "\n")
        else:
            self._send(404, f"no route {path}\n")


def run(args: argparse.Namespace, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop``); 2 on a configuration error."""
    logs.setup(args.log_level)
    log = logging.getLogger("mimir_edge.sync")
    stop = stop or threading.Event()
    defaults = {
        key.replace("-", "_"): getattr(args, f"default_{key.replace('-', '_')}")
        for key, _ in _DEFAULT_KEYS
        if getattr(args, f"default_{key.replace('-', '_')}") is not None
    }
    try:
        if args.poll_seconds <= 0 or args.push_interval_seconds <= 0:
            raise ValueError("--poll-seconds and --push-interval-seconds must be > 0")
        LimitSet.build({}, defaults)  # fail now on a bad --default-*, not at every snapshot
        token = _Token(args.admin_token, args.admin_token_file, log)
        targets = make_targets(args)
        source = make_source(args)
        leadership = make_leadership(args)
    except (ValueError, OSError, ImportError, AttributeError) as e:
        log.error("overrides-sync cannot start", extra={"fields": {"error": str(e)}})
        return 2

    metrics = SyncMetrics()
    pusher = Pusher(token, timeout_seconds=args.push_timeout_seconds)
    controller = Controller(
        source,
        targets,
        pusher,
        leadership=leadership,
        push_interval_seconds=args.push_interval_seconds,
        key=args.key,
        defaults=defaults,
        metrics=metrics,
        log=log,
        push_instances=args.push_instances,
    )
    try:
        server = _ProbeServer(args.http_listen, controller, metrics)
    except (OSError, ValueError) as e:
        log.error("cannot listen", extra={"fields": {"listen": args.http_listen, "error": str(e)}})
        pusher.close()
        return 2
    threading.Thread(target=server.serve_forever, name="overrides-http", daemon=True).start()

    previous: dict[int, Any] = {}
    if threading.current_thread() is threading.main_thread():

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, on_signal)

    log.info(
        "overrides-sync started",
        extra={
            "fields": {
                "source": args.file
                if args.source == "file"
                else f"{args.namespace}/{args.configmap}",
                "targets": args.targets or args.targets_dns or args.targets_endpoints,
                "http": "{}:{}".format(*server.server_address[:2]),
                "leader_elect": args.leader_elect,
                "push_instances": args.push_instances,
            }
        },
    )
    try:
        controller.run(stop)
    finally:
        server.shutdown()
        server.server_close()
        pusher.close()
        for obj in (leadership, targets, source):
            # e.g. the Lease released at once (leader.stop) rather than left to expire
            close = getattr(obj, "stop", None) or getattr(obj, "close", None)
            if callable(close):
                close()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
    log.info("overrides-sync stopped")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m mimir_edge.sync.cli overrides-sync ...`` (the same as ``mimir-edge``)."""
    parser = argparse.ArgumentParser(prog="mimir-edge")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
