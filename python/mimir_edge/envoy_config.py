"""The Envoy bootstrap in front of the Mimir distributor: one source for every deployment.

``mimir-edge up`` (the local stack) and the Envoy Helm chart both render their Envoy
configuration with :func:`render_bootstrap` / :func:`dump`, so what the end-to-end tests run
is what ships. The bootstrap is plain JSON (a subset of YAML); Envoy reads it with
``envoy -c bootstrap.json``.

What it sets up::

    client ──► listener ──► [ratelimit] ──► ext_authz ──► router ──► distributor
                               │               │
                               └──── RLS ◄─────┘   (one gRPC cluster, HTTP/2)

* Only Mimir's push path (``/api/v1/push``, exact) goes through ``ext_authz``: Envoy buffers
  the whole body and sends it to the RLS as raw bytes, which decodes and counts it and allows
  or denies the push. Every other route (``/otlp/v1/metrics``, ``/ready``, queries...) turns
  ``ext_authz`` off per route and is proxied as is.
* Optionally the ``ratelimit`` filter runs first, header-only: one descriptor
  ``{tenant: <tenant header>}`` in domain ``mimir-edge``. It runs before ``ext_authz`` so that
  a tenant already over its request limit is refused before its body is shipped to the RLS.
* Paths are normalised (RFC 3986, merged slashes, ``%2F`` unescaped) before routing so that
  ``//api/v1/push`` or ``/api%2Fv1%2Fpush`` cannot reach the distributor's push handler
  (Go routers clean and unescape paths) on the unscanned catch-all route.
* Nothing depends on Envoy's ``--concurrency``.

Mirror mode (``mirror_mode=True``, the rollout's mirror phase, where NGINX copies every push
to Envoy and ignores Envoy's answer) adds one route in front of the push route. NGINX marks its
copies with the header ``X-Mimir-Edge-Mirror`` (:data:`MIRROR_HEADER`); a push carrying it is
judged by ``ext_authz`` and, if allowed, answered 204 by Envoy itself (a ``direct_response``
route), so a copy never reaches the distributor, which already has the original. A push
without the header takes the normal push route and is forwarded::

    NGINX ──copy (header)──► listener ──► ext_authz ──► router: 204 (denied: the RLS's 429)
    NGINX ──push──────────►    (same)  ──► ext_authz ──► router ──► distributor

Why this is safe: only a marked copy is ever answered without being forwarded, and the mark is
NGINX's alone. Every NGINX mode file (``servers/nginx/proxy.conf``) clears a client's
``X-Mimir-Edge-Mirror`` before proxying, except the internal mirror location that sets it on
the copy; Envoy removes it before forwarding anything (``request_headers_to_remove``, in every
mode), so it never reaches Mimir. An Envoy left in mirror mode behind ``canary.conf`` or
``edge.conf`` therefore forwards every push exactly as a normal one does.

The admin API can stop Envoy (``POST /quitquitquit``, ``/healthcheck/fail``,
``/drain_listeners``) and rewrite its runtime, so it must not be reachable from the network.
With ``admin_proxy_address`` set, the admin stays on its loopback address and a second
listener (:data:`ADMIN_PROXY_LISTENER`) on the proxy address serves only what probes and
Prometheus need: ``GET /ready`` and ``GET /stats/prometheus`` (any query string), forwarded to
the loopback admin; everything else is answered 404 by Envoy itself::

    kubelet, Prometheus ──► admin proxy :9901 ──GET /ready, /stats/prometheus──► admin 127.0.0.1
                                    └── anything else: 404
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from typing import Any

__all__ = [
    "ADMIN_CLUSTER",
    "ADMIN_PROXY_LISTENER",
    "ADMIN_PROXY_PATHS",
    "DEFAULT_MAX_REQUEST_BYTES",
    "MIRROR_HEADER",
    "MIRROR_STATUS",
    "PUSH_PATH",
    "RATE_LIMIT_DOMAIN",
    "RLS_CLUSTER",
    "UPSTREAM_CLUSTER",
    "EnvoyConfig",
    "dump",
    "render_bootstrap",
]

#: Mimir's remote-write push path; the only path whose bodies the RLS scans.
PUSH_PATH = "/api/v1/push"
#: The mark of NGINX's mirror copies (``servers/nginx/mirror.conf`` sets it; every other NGINX
#: location clears it). In mirror mode a push carrying it is answered by Envoy, never forwarded.
MIRROR_HEADER = "X-Mimir-Edge-Mirror"
#: Envoy's own answer to an allowed copy in mirror mode (``EnvoyConfig.mirror_mode``).
MIRROR_STATUS = 204
#: Domain of the ratelimit filter's descriptors.
RATE_LIMIT_DOMAIN = "mimir-edge"
#: Cluster names in the bootstrap (they show up in Envoy's stats as ``cluster.<name>.*``).
RLS_CLUSTER = "mimir_edge_rls"
UPSTREAM_CLUSTER = "mimir_distributor"
#: With ``EnvoyConfig.admin_proxy_address``: the listener in front of the loopback admin (its
#: stats carry ``http.admin_proxy.*``) and the cluster it forwards to.
ADMIN_PROXY_LISTENER = "admin_proxy"
ADMIN_CLUSTER = "envoy_admin"
#: The only admin paths the admin proxy forwards (``GET`` only, exact path, any query string):
#: the readiness probe and the Prometheus scrape.
ADMIN_PROXY_PATHS = ("/ready", "/stats/prometheus")
#: Largest push Envoy buffers for the RLS. Mimir's own default
#: ``-distributor.max-recv-msg-size`` is 100 MiB, but Prometheus sends far smaller batches
#: (``max_samples_per_send`` 2000 by default: tens of KiB compressed); 10 MiB leaves a wide margin.
DEFAULT_MAX_REQUEST_BYTES = 10 * 1024 * 1024

_EXT_AUTHZ = "envoy.filters.http.ext_authz"
_RATELIMIT = "envoy.filters.http.ratelimit"
_ROUTER = "envoy.filters.http.router"
_TYPE = "type.googleapis.com/"


@dataclass(frozen=True, kw_only=True)
class EnvoyConfig:
    """Everything that varies between deployments. Hosts may be IPs or DNS names."""

    #: The distributor (or, locally, a Prometheus receiver standing in for it).
    upstream_host: str
    upstream_port: int
    #: The Rate Limit Service: serves both ``ext_authz`` Check and ``ShouldRateLimit``.
    rls_host: str
    rls_port: int

    listen_address: str = "127.0.0.1"
    listen_port: int = 8080
    admin_address: str = "127.0.0.1"
    admin_port: int = 9901
    #: Serve ``GET /ready`` and ``GET /stats/prometheus`` (and nothing else of the admin API) on
    #: this address and ``admin_proxy_port``, forwarded to the admin, which then must listen on
    #: a loopback address (see the module docstring). ``None``: no proxy; the admin itself is
    #: wherever ``admin_address`` puts it. The ports must differ (the chart: proxy on 9901,
    #: the port its Service, probes and ServiceMonitor use; admin on 127.0.0.1:9902).
    admin_proxy_address: str | None = None
    admin_proxy_port: int = 9902

    #: Rewrite the push path on its way upstream, e.g. ``/api/v1/write`` for a Prometheus
    #: receiver (``--web.enable-remote-write-receiver``) standing in for Mimir. ``None``: as is.
    push_path_rewrite: str | None = None
    #: The header that names the tenant; Mimir's is ``X-Scope-OrgID``.
    tenant_header: str = "X-Scope-OrgID"
    #: Route timeout upstream. Envoy's default (15 s) is below Prometheus' default
    #: ``remote_timeout`` (30 s); a slow distributor should time out at the sender, not here.
    upstream_timeout_s: float = 30.0

    #: ``False``: no ``ext_authz`` filter at all, pushes go to the distributor unchecked;
    #: everything else is rendered as with ``True``. The baseline of the edge-latency
    #: benchmark ("the same Envoy without ext_authz"), and a way to take the checks out of
    #: the path without changing anything else.
    ext_authz_enabled: bool = True
    #: ``False`` (fail closed): if the RLS cannot be asked, the push is refused with
    #: ``ext_authz_status_on_error``. ``True``: it goes through, marked with the header
    #: ``x-envoy-auth-failure-mode-allowed: true``.
    ext_authz_failure_mode_allow: bool = False
    #: Status when the RLS errs or times out and failing closed. Prometheus drops a batch
    #: answered with a 4xx (429 aside) and retries a 5xx, so 503 (the default here) turns an
    #: RLS outage into back-pressure instead of data loss. ``None``: Envoy's own 403.
    ext_authz_status_on_error: int | None = 503
    #: Bodies above this are answered 413 by Envoy itself (``allow_partial_message`` is
    #: false: the RLS never judges a truncated body). The RLS's gRPC server must accept
    #: messages this big plus the headers (grpcio's default receive limit is 4 MiB).
    ext_authz_max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    #: Send the body to the RLS (the default). ``False`` goes with ``mimir-edge rls
    #: --no-body-parsing`` (chart ``limits.enforceBodyParsing=false``): the RLS estimates
    #: items from Content-Length and Envoy does not buffer the push.
    ext_authz_send_body: bool = True
    #: Deadline of one Check, counted from when the whole body is buffered. Envoy's default
    #: (200 ms) is meant for header-only checks; ours ships up to 10 MiB over gRPC and the
    #: RLS decompresses and scans it (tens of ms for the largest bodies). A timeout fails the
    #: push (or lets it through unchecked), so 1 s leaves a wide margin for pauses and load
    #: while still bounding a hung RLS far below the sender's 30 s ``remote_timeout``.
    ext_authz_timeout_s: float = 1.0

    #: The mirror phase: ``True`` makes Envoy answer an allowed push that carries
    #: :data:`MIRROR_HEADER` (a copy from NGINX's ``servers/nginx/mirror.conf``) with 204
    #: itself (route ``direct_response``) instead of forwarding it; a denied copy still gets
    #: the RLS's 429 (or ``ext_authz_status_on_error``), which NGINX throws away. The
    #: distributor already has the original, so no copy is ingested twice, and the RLS counts
    #: and decides on every push. A push WITHOUT the header is treated exactly as with
    #: ``False`` (checked, rate limited if enabled, rewritten if set, forwarded), so an Envoy
    #: left in mirror mode behind ``canary.conf``/``edge.conf`` loses nothing. Needs
    #: ``ext_authz_enabled`` (without it every copy would be answered 204 unjudged). With
    #: ``rate_limit_enabled``, copies are not charged by Envoy's ratelimit filter (it does
    #: nothing on a ``direct_response`` route); the RLS charges the request limit of a copy
    #: only in Check (``mimir-edge rls --request-rate-via authz``, its default).
    mirror_mode: bool = False

    #: Add the ``ratelimit`` filter (request-count limits per tenant, header-only).
    rate_limit_enabled: bool = False
    #: ``False``: if the RLS cannot be asked, the request goes on (to ``ext_authz``).
    rate_limit_failure_mode_deny: bool = False
    #: Deadline of one ShouldRateLimit. Envoy's default is 20 ms, tight for a loaded
    #: Python gRPC server; the call is header-only, so 100 ms is still short.
    rate_limit_timeout_s: float = 0.1

    #: Envoy multiplexes all gRPC calls of a worker onto one HTTP/2 connection per upstream
    #: host. With the RLS running as several processes on one ``SO_REUSEPORT`` port, the
    #: kernel spreads *connections*, not calls, so one or two RLS processes would get all
    #: the traffic. Capping the streams per connection makes Envoy open more connections
    #: under load, and recycling connections after a number of requests lets the kernel
    #: rebalance them over time (e.g. after an RLS process restarts). ``None``: Envoy's
    #: default (unlimited, no recycling).
    rls_max_concurrent_streams: int | None = 16
    rls_max_requests_per_connection: int | None = 2000

    #: Global cap on open downstream connections (Envoy's overload manager); Envoy warns at
    #: start-up without one. Remote-write senders keep a few long-lived connections each.
    max_downstream_connections: int = 50_000
    #: JSON access log on stdout, one line per request.
    access_log: bool = True

    def __post_init__(self) -> None:
        for name in ("upstream_port", "rls_port", "listen_port", "admin_port", "admin_proxy_port"):
            port = getattr(self, name)
            if not 0 <= port <= 65535:
                raise ValueError(f"{name} must be in 0..65535, got {port}")
        for name in ("upstream_timeout_s", "ext_authz_timeout_s", "rate_limit_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if not 0 < self.ext_authz_max_request_bytes < 2**32:
            raise ValueError("ext_authz_max_request_bytes must be in 1..2**32-1 (uint32)")
        if self.push_path_rewrite is not None and not self.push_path_rewrite.startswith("/"):
            raise ValueError(f"push_path_rewrite must start with '/': {self.push_path_rewrite!r}")
        if not self.tenant_header or any(c.isspace() or c == ":" for c in self.tenant_header):
            raise ValueError(f"invalid tenant_header: {self.tenant_header!r}")
        status = self.ext_authz_status_on_error
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"ext_authz_status_on_error must be 4xx or 5xx, got {status}")
        if self.max_downstream_connections < 1:
            raise ValueError("max_downstream_connections must be >= 1")
        for name in ("rls_max_concurrent_streams", "rls_max_requests_per_connection"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be >= 1 or None, got {value}")
        if self.mirror_mode:
            self._check_mirror_mode()
        if self.admin_proxy_address is not None:
            self._check_admin_proxy(self.admin_proxy_address)

    def _check_admin_proxy(self, address: str) -> None:
        try:
            ipaddress.ip_address(address)
        except ValueError:
            raise ValueError(
                f"admin_proxy_address must be an IP address, got {address!r}"
            ) from None
        try:
            loopback = ipaddress.ip_address(self.admin_address).is_loopback
        except ValueError:
            loopback = False
        if not loopback:
            # The point of the proxy is an admin nobody else can reach.
            raise ValueError(
                "with admin_proxy_address, admin_address must be a loopback IP, "
                f"got {self.admin_address!r}"
            )
        if self.admin_port == 0:
            raise ValueError("with admin_proxy_address, admin_port must be fixed (not 0)")
        for name in ("admin_port", "listen_port"):
            if self.admin_proxy_port != 0 and getattr(self, name) == self.admin_proxy_port:
                raise ValueError(
                    f"admin_proxy_port and {name} must differ, both are {self.admin_proxy_port}"
                )

    def _check_mirror_mode(self) -> None:
        # Without ext_authz the mirror phase would silently judge nothing. rate_limit_enabled
        # and push_path_rewrite are allowed: they act on the pushes Envoy forwards (those
        # without the mirror header), as without mirror_mode.
        if not self.ext_authz_enabled:
            raise ValueError(
                "mirror_mode needs ext_authz_enabled: without it Envoy answers 204 to every "
                "copy and nothing is judged"
            )


def render_bootstrap(cfg: EnvoyConfig) -> dict[str, Any]:
    """The Envoy v3 bootstrap for ``cfg`` as JSON-serialisable data."""
    listeners = [_listener(cfg)]
    clusters = [_rls_cluster(cfg), _upstream_cluster(cfg)]
    if cfg.admin_proxy_address is not None:
        listeners.append(_admin_proxy_listener(cfg.admin_proxy_address, cfg.admin_proxy_port))
        clusters.append(_endpoint_cluster(ADMIN_CLUSTER, cfg.admin_address, cfg.admin_port))
    return {
        "node": {"id": "mimir-edge", "cluster": "mimir-edge"},
        "admin": {"address": _socket_address(cfg.admin_address, cfg.admin_port)},
        "static_resources": {"listeners": listeners, "clusters": clusters},
        "overload_manager": {
            "resource_monitors": [
                {
                    "name": "envoy.resource_monitors.global_downstream_max_connections",
                    "typed_config": {
                        "@type": _TYPE + "envoy.extensions.resource_monitors."
                        "downstream_connections.v3.DownstreamConnectionsConfig",
                        "max_active_downstream_connections": cfg.max_downstream_connections,
                    },
                }
            ]
        },
    }


def dump(cfg: EnvoyConfig) -> str:
    """The bootstrap as indented JSON text (valid YAML too), ending in a newline."""
    return json.dumps(render_bootstrap(cfg), indent=2) + "\n"


def _duration(seconds: float) -> str:
    """A protobuf JSON Duration: ``0.25`` -> ``"0.25s"``, ``30.0`` -> ``"30s"``."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def _socket_address(host: str, port: int) -> dict[str, Any]:
    return {"socket_address": {"address": host, "port_value": port}}


def _listener(cfg: EnvoyConfig) -> dict[str, Any]:
    hcm: dict[str, Any] = {
        "@type": _TYPE
        + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": "ingress",
        "codec_type": "AUTO",
        # Route on the path the distributor will see (see the module docstring).
        "normalize_path": True,
        "merge_slashes": True,
        "path_with_escaped_slashes_action": "UNESCAPE_AND_FORWARD",
        "route_config": _route_config(cfg),
        "http_filters": _http_filters(cfg),
    }
    if cfg.access_log:
        hcm["access_log"] = [_access_log(cfg)]
    return {
        "name": "ingress",
        "address": _socket_address(cfg.listen_address, cfg.listen_port),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _admin_proxy_listener(address: str, port: int) -> dict[str, Any]:
    """``GET`` of :data:`ADMIN_PROXY_PATHS` to the loopback admin, 404 for anything else.

    An exact ``path`` match ignores the query string (``?usedonly``, ``?filter=``), and the
    path forwarded is the one matched. No access log: probes and scrapes every few seconds."""
    get = {"name": ":method", "string_match": {"exact": "GET"}}
    routes: list[dict[str, Any]] = [
        {
            "name": path.strip("/").replace("/", "_"),
            "match": {"path": path, "headers": [get]},
            "route": {"cluster": ADMIN_CLUSTER},
        }
        for path in ADMIN_PROXY_PATHS
    ]
    routes.append(
        {
            "name": "not_exposed",
            "match": {"prefix": "/"},
            "direct_response": {
                "status": 404,
                "body": {"inline_string": "not exposed: only GET /ready and /stats/prometheus\n"},
            },
        }
    )
    hcm = {
        "@type": _TYPE
        + "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
        "stat_prefix": ADMIN_PROXY_LISTENER,
        "codec_type": "AUTO",
        "route_config": {
            "name": ADMIN_PROXY_LISTENER,
            "virtual_hosts": [{"name": ADMIN_PROXY_LISTENER, "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": _ROUTER,
                "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
            }
        ],
    }
    return {
        "name": ADMIN_PROXY_LISTENER,
        "address": _socket_address(address, port),
        "filter_chains": [
            {
                "filters": [
                    {"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}
                ]
            }
        ],
    }


def _route_config(cfg: EnvoyConfig) -> dict[str, Any]:
    """In mirror mode the copies' route (scanned, answered by Envoy itself), then the push
    route (scanned; rate limited if enabled) and a catch-all (not scanned)."""
    push_action: dict[str, Any] = {
        "cluster": UPSTREAM_CLUSTER,
        "timeout": _duration(cfg.upstream_timeout_s),
    }
    if cfg.push_path_rewrite is not None:
        # With an exact ``path`` match, the whole path is replaced; the query string is kept.
        push_action["prefix_rewrite"] = cfg.push_path_rewrite
    if cfg.rate_limit_enabled:
        # A push without the tenant header yields no descriptor, hence no ShouldRateLimit call;
        # ext_authz (the RLS) still sees it and decides.
        push_action["rate_limits"] = [
            {
                "actions": [
                    {
                        "request_headers": {
                            "header_name": cfg.tenant_header,
                            "descriptor_key": "tenant",
                        }
                    }
                ]
            }
        ]
    passthrough: dict[str, Any] = {
        "name": "passthrough",
        "match": {"prefix": "/"},
        "route": {"cluster": UPSTREAM_CLUSTER, "timeout": _duration(cfg.upstream_timeout_s)},
    }
    if cfg.ext_authz_enabled:
        # OTLP, queries, /ready...: no body buffering, no RLS call.
        passthrough["typed_per_filter_config"] = {
            _EXT_AUTHZ: {
                "@type": _TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthzPerRoute",
                "disabled": True,
            }
        }
    push: dict[str, Any] = {"name": "push", "match": {"path": PUSH_PATH}, "route": push_action}
    routes = [push, passthrough]
    if cfg.mirror_mode:
        # NGINX's copies only (see the module docstring); the HTTP filters (ext_authz with the
        # whole body) run before the router produces this answer, so a denied copy never
        # gets here. Every other push falls through to the normal push route.
        copy: dict[str, Any] = {
            "name": "mirror_copy",
            "match": {
                "path": PUSH_PATH,
                "headers": [{"name": MIRROR_HEADER, "present_match": True}],
            },
            "direct_response": {"status": MIRROR_STATUS},
        }
        routes.insert(0, copy)
    return {
        "name": "mimir",
        # In every mode: the mark of a copy is between NGINX and Envoy, never for Mimir.
        "request_headers_to_remove": [MIRROR_HEADER],
        "virtual_hosts": [{"name": "mimir", "domains": ["*"], "routes": routes}],
    }


def _http_filters(cfg: EnvoyConfig) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = []
    if cfg.rate_limit_enabled:
        filters.append(
            {
                "name": _RATELIMIT,
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.filters.http.ratelimit.v3.RateLimit",
                    "domain": RATE_LIMIT_DOMAIN,
                    "failure_mode_deny": cfg.rate_limit_failure_mode_deny,
                    "timeout": _duration(cfg.rate_limit_timeout_s),
                    "rate_limit_service": {
                        "grpc_service": {"envoy_grpc": {"cluster_name": RLS_CLUSTER}},
                        "transport_api_version": "V3",
                    },
                },
            }
        )
    if cfg.ext_authz_enabled:
        filters.append({"name": _EXT_AUTHZ, "typed_config": _ext_authz(cfg)})
    filters.append(
        {
            "name": _ROUTER,
            "typed_config": {"@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router"},
        }
    )
    return filters


def _ext_authz(cfg: EnvoyConfig) -> dict[str, Any]:
    ext_authz: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.filters.http.ext_authz.v3.ExtAuthz",
        "transport_api_version": "V3",
        "grpc_service": {
            "envoy_grpc": {"cluster_name": RLS_CLUSTER},
            "timeout": _duration(cfg.ext_authz_timeout_s),
        },
        "failure_mode_allow": cfg.ext_authz_failure_mode_allow,
    }
    if cfg.ext_authz_send_body:
        # The RLS judges the whole body, as bytes (not a UTF-8 string): remote-write bodies
        # are snappy-compressed protobuf. No ``allowed_headers``: Envoy sends all headers.
        ext_authz["with_request_body"] = {
            "max_request_bytes": cfg.ext_authz_max_request_bytes,
            "allow_partial_message": False,
            "pack_as_bytes": True,
        }
    if cfg.ext_authz_failure_mode_allow:
        ext_authz["failure_mode_allow_header_add"] = True
    if cfg.ext_authz_status_on_error is not None:
        ext_authz["status_on_error"] = {"code": cfg.ext_authz_status_on_error}
    return ext_authz


def _access_log(cfg: EnvoyConfig) -> dict[str, Any]:
    # A format string that is a single command keeps its type (numbers stay numbers).
    fields = {
        "start_time": "%START_TIME%",
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "tenant": f"%REQ({cfg.tenant_header})%",
        "response_code": "%RESPONSE_CODE%",
        "response_code_details": "%RESPONSE_CODE_DETAILS%",
        "response_flags": "%RESPONSE_FLAGS%",
        "bytes_received": "%BYTES_RECEIVED%",
        "bytes_sent": "%BYTES_SENT%",
        "duration_ms": "%DURATION%",
        "upstream_host": "%UPSTREAM_HOST%",
        "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
        "user_agent": "%REQ(USER-AGENT)%",
        "request_id": "%REQ(X-REQUEST-ID)%",
    }
    return {
        "name": "envoy.access_loggers.stdout",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
            "log_format": {"json_format": fields},
        },
    }


def _endpoint_cluster(name: str, host: str, port: int) -> dict[str, Any]:
    """STATIC for an IP literal; STRICT_DNS otherwise (every resolved address is used, e.g.
    all pods behind a headless Service)."""
    try:
        ipaddress.ip_address(host)
        kind = "STATIC"
    except ValueError:
        kind = "STRICT_DNS"
    return {
        "name": name,
        "type": kind,
        "connect_timeout": "1s",
        "lb_policy": "ROUND_ROBIN",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [
                {"lb_endpoints": [{"endpoint": {"address": _socket_address(host, port)}}]}
            ],
        },
    }


def _rls_cluster(cfg: EnvoyConfig) -> dict[str, Any]:
    """gRPC needs HTTP/2; see ``EnvoyConfig.rls_max_concurrent_streams`` for the limits."""
    http2: dict[str, Any] = {}
    if cfg.rls_max_concurrent_streams is not None:
        http2["max_concurrent_streams"] = cfg.rls_max_concurrent_streams
    options: dict[str, Any] = {
        "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        "explicit_http_config": {"http2_protocol_options": http2},
    }
    if cfg.rls_max_requests_per_connection is not None:
        options["common_http_protocol_options"] = {
            "max_requests_per_connection": cfg.rls_max_requests_per_connection
        }
    cluster = _endpoint_cluster(RLS_CLUSTER, cfg.rls_host, cfg.rls_port)
    cluster["typed_extension_protocol_options"] = {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": options
    }
    return cluster


def _upstream_cluster(cfg: EnvoyConfig) -> dict[str, Any]:
    """The distributor over HTTP/1.1 (Envoy's default upstream protocol)."""
    return _endpoint_cluster(UPSTREAM_CLUSTER, cfg.upstream_host, cfg.upstream_port)
