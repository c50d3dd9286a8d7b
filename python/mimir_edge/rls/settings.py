"""RLS settings: one typed object, read from flags and the environment.

Every flag ``--some-flag`` can also be set as ``MIMIR_EDGE_SOME_FLAG``; a flag on the command
line wins over the environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
from dataclasses import dataclass
from typing import Any

__all__ = ["Settings", "add_arguments", "from_args"]

ENV_PREFIX = "MIMIR_EDGE_"


@dataclass(frozen=True)
class Settings:
    grpc_listen: str = "0.0.0.0:8081"
    http_listen: str = "0.0.0.0:9090"
    workers: int = os.cpu_count() or 1
    overrides: str | None = None
    overrides_poll_seconds: float = 10.0
    tenant_header: str = "X-Scope-OrgID"
    dry_run: bool = False
    dry_run_tenants: tuple[str, ...] = ()
    body_parsing: bool = True
    bytes_per_sample: int = 24
    max_decoded_bytes: int = 32 << 20
    max_message_bytes: int = 16 << 20
    request_rate_via: str = "authz"
    instances: int = 1
    default_ingestion_rate: float | None = None
    default_ingestion_burst_size: int | None = None
    default_request_rate: float | None = None
    default_request_burst_size: int | None = None
    admin_token: str | None = None
    table_path: str | None = None
    table_capacity: int = 65_536
    grace_period_seconds: float = 15.0
    drain_delay_seconds: float = 2.0
    grpc_threads: int = 4
    log_level: str = "info"
    deny_log_per_second: int = 20
    wait_for_limits: bool = False
    wait_for_limits_timeout_seconds: float = 0.0

    def defaults(self) -> dict[str, Any]:
        """Default limits given by flags (Mimir's defaults for the others)."""
        out: dict[str, Any] = {}
        for key in ("ingestion_rate", "ingestion_burst_size", "request_rate", "request_burst_size"):
            v = getattr(self, f"default_{key}")
            if v is not None:
                out[key] = v
        return out

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        d = json.loads(text)
        d["dry_run_tenants"] = tuple(d.get("dry_run_tenants") or ())
        return cls(**d)


def _env(name: str) -> str | None:
    return os.environ.get(ENV_PREFIX + name.upper().replace("-", "_"))


def _bool_env(name: str, default: bool) -> bool:
    v = _env(name)
    if v is None:
        return default
    return v.strip().lower() in ("1", "true", "yes", "on")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The RLS flags, each documented and readable from MIMIR_EDGE_<FLAG>."""
    d = Settings()

    def opt(flag: str, help: str, **kw: Any) -> None:
        name = flag.lstrip("-")
        env = ENV_PREFIX + name.upper().replace("-", "_")
        default = kw.pop("default")
        raw = _env(name)
        if raw is not None:
            default = kw.get("type", str)(raw)
        p.add_argument(
            flag, default=default, help=f"{help} [env {env}] (default: %(default)s)", **kw
        )

    def flag(name: str, help: str, default: bool) -> None:
        env = ENV_PREFIX + name.upper().replace("-", "_")
        p.add_argument(
            f"--{name}",
            action=argparse.BooleanOptionalAction,
            default=_bool_env(name, default),
            help=f"{help} [env {env}]",
        )

    opt("--grpc-listen", "host:port for Envoy's ext_authz/ratelimit gRPC", default=d.grpc_listen)
    opt(
        "--http-listen",
        "host:port for /metrics, /healthz, /readyz and the admin API",
        default=d.http_listen,
    )
    opt(
        "--workers",
        "worker processes sharing the gRPC port (SO_REUSEPORT) and one tenant table",
        default=d.workers,
        type=int,
    )
    opt(
        "--overrides",
        "Mimir runtime-config file (its overrides: map) with per-tenant limits; "
        "re-read when it changes",
        default=d.overrides,
    )
    opt(
        "--overrides-poll-seconds",
        "how often to check --overrides for changes",
        default=d.overrides_poll_seconds,
        type=float,
    )
    opt("--tenant-header", "header carrying the tenant ID, as Mimir's", default=d.tenant_header)
    flag("dry-run", "decide, count and log, but let every push through", d.dry_run)
    p.add_argument(
        "--dry-run-tenant",
        action="append",
        dest="dry_run_tenants",
        default=list(filter(None, (_env("dry-run-tenants") or "").split(","))),
        help="dry-run only this tenant (repeatable) [env MIMIR_EDGE_DRY_RUN_TENANTS, "
        "comma-separated]",
    )
    flag(
        "body-parsing",
        "count samples from the body; --no-body-parsing estimates them from "
        "Content-Length (Envoy then need not send the body)",
        d.body_parsing,
    )
    opt(
        "--bytes-per-sample",
        "compressed bytes per item when estimating without the body",
        default=d.bytes_per_sample,
        type=int,
    )
    opt(
        "--max-decoded-bytes",
        "refuse (400) bodies that decode to more than this",
        default=d.max_decoded_bytes,
        type=int,
    )
    opt(
        "--max-message-bytes",
        "largest gRPC message accepted (grpc's default is 4 MiB; keep it "
        "above Envoy's max_request_bytes)",
        default=d.max_message_bytes,
        type=int,
    )
    opt(
        "--request-rate-via",
        "where the request-rate limit is charged: authz (ext_authz Check) "
        "or ratelimit (Envoy's ratelimit filter)",
        default=d.request_rate_via,
        choices=("authz", "ratelimit"),
    )
    opt(
        "--instances",
        "RLS instances sharing the traffic: each enforces 1/N of every rate, as "
        "Mimir divides rates among distributors (a fallback: the live replica count "
        "overrides-sync sends with each push replaces it)",
        default=d.instances,
        type=int,
    )
    for key, typ in (
        ("ingestion-rate", float),
        ("ingestion-burst-size", int),
        ("request-rate", float),
        ("request-burst-size", int),
    ):
        opt(
            f"--default-{key}",
            f"default {key.replace('-', '_')} for tenants without overrides "
            "(Mimir's default when unset)",
            default=None,
            type=typ,
        )
    opt(
        "--admin-token",
        "bearer token required by admin writes (PUT /api/v1/limits); writes are refused when unset",
        default=d.admin_token,
    )
    opt(
        "--table-path",
        "shared-memory file of the tenant table (default: a new file in /dev/shm)",
        default=d.table_path,
    )
    opt("--table-capacity", "tenants the shared table holds", default=d.table_capacity, type=int)
    opt(
        "--grace-period-seconds",
        "on SIGTERM: time for in-flight checks before exit",
        default=d.grace_period_seconds,
        type=float,
    )
    opt(
        "--drain-delay-seconds",
        "on SIGTERM: /readyz answers 503 this long before the gRPC server stops accepting",
        default=d.drain_delay_seconds,
        type=float,
    )
    opt("--grpc-threads", "gRPC handler threads per worker", default=d.grpc_threads, type=int)
    opt("--log-level", "debug, info, warning or error", default=d.log_level)
    opt(
        "--deny-log-per-second",
        "most deny lines logged per second per worker (the rest are counted in one summary line)",
        default=d.deny_log_per_second,
        type=int,
    )
    flag(
        "wait-for-limits",
        "answer /readyz 503 (and gRPC health NOT_SERVING) until a limit set arrives through "
        "the admin API, so no traffic meets the defaults first (for replicas fed by "
        "overrides-sync; --overrides counts as having limits)",
        d.wait_for_limits,
    )
    opt(
        "--wait-for-limits-timeout-seconds",
        "with --wait-for-limits: become ready anyway, with the defaults, after this long "
        "without a limit set, and log a warning (0: wait indefinitely)",
        default=d.wait_for_limits_timeout_seconds,
        type=float,
    )


def from_args(ns: argparse.Namespace) -> Settings:
    fields = {f.name for f in dataclasses.fields(Settings)}
    values = {k: v for k, v in vars(ns).items() if k in fields}
    values["dry_run_tenants"] = tuple(values.get("dry_run_tenants") or ())
    s = Settings(**values)
    if s.workers < 1:
        raise SystemExit("--workers must be >= 1")
    if s.instances < 1:
        raise SystemExit("--instances must be >= 1")
    if s.bytes_per_sample < 1:
        raise SystemExit("--bytes-per-sample must be >= 1")
    if s.wait_for_limits_timeout_seconds < 0:
        raise SystemExit("--wait-for-limits-timeout-seconds must be >= 0")
    return s
