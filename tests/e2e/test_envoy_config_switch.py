"""Switches of ``EnvoyConfig`` that change the bootstrap's shape, with real Envoy.

``ext_authz_enabled=False``: the same bootstrap without the ext_authz filter. The edge-latency
benchmark compares Envoy with and without ext_authz, so the two bootstraps must differ in
exactly that filter (and its per-route switch), nothing else.

``mirror_mode=True`` (the rollout's mirror phase, servers/nginx/mirror.conf): a push carrying
``MIRROR_HEADER`` (NGINX's mark of a copy) is answered 204 by Envoy itself (``direct_response``)
once the RLS allowed it; a push without it is forwarded as in the normal mode. The real RLS
(``mimir-edge rls``) answers Envoy, or :class:`StandInRls` (tests/e2e/test_harness.py) where a
test needs Envoy's calls recorded exactly; the upstream is a :class:`RecordingUpstream`.

``admin_proxy_address`` (the chart's admin port): a second listener that serves only
``GET /ready`` and ``GET /stats/prometheus`` from the loopback admin; the admin API's other
endpoints (``/quitquitquit``, ``/healthcheck/fail``, ``/config_dump``...) are not reachable
through it.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from mimir_edge.encode import Sample, Series, compress, encode_v1
from mimir_edge.envoy_config import (
    ADMIN_CLUSTER,
    ADMIN_PROXY_LISTENER,
    MIRROR_HEADER,
    MIRROR_STATUS,
    PUSH_PATH,
    UPSTREAM_CLUSTER,
    EnvoyConfig,
    render_bootstrap,
)
from tests.e2e import harness
from tests.e2e.harness import (
    EnvoyProcess,
    HttpResponse,
    RecordingUpstream,
    free_port,
    http_request,
    validate,
)
from tests.e2e.rls_process import RlsProcess
from tests.e2e.test_harness import (
    GOOD,
    PUSH_BODY,
    StandInRls,
    config,
    push_headers,
)

EXT_AUTHZ = "envoy.filters.http.ext_authz"
RATELIMIT = "envoy.filters.http.ratelimit"


def _hcm(bootstrap: dict[str, Any]) -> dict[str, Any]:
    (listener,) = bootstrap["static_resources"]["listeners"]
    (chain,) = listener["filter_chains"]
    (hcm,) = chain["filters"]
    typed: dict[str, Any] = hcm["typed_config"]
    return typed


@pytest.mark.parametrize("rate_limit_enabled", [False, True])
def test_only_the_ext_authz_filter_and_its_route_switch_go(rate_limit_enabled: bool) -> None:
    base = EnvoyConfig(
        upstream_host="distributor",
        upstream_port=8080,
        rls_host="rls",
        rls_port=9,
        rate_limit_enabled=rate_limit_enabled,
    )
    assert base.ext_authz_enabled  # the default
    on = render_bootstrap(base)
    off = render_bootstrap(dataclasses.replace(base, ext_authz_enabled=False))

    names_on = [f["name"] for f in _hcm(on)["http_filters"]]
    names_off = [f["name"] for f in _hcm(off)["http_filters"]]
    assert EXT_AUTHZ in names_on
    assert names_off == [n for n in names_on if n != EXT_AUTHZ]  # ratelimit, router kept

    expected = copy.deepcopy(on)
    hcm = _hcm(expected)
    hcm["http_filters"] = [f for f in hcm["http_filters"] if f["name"] != EXT_AUTHZ]
    for host in hcm["route_config"]["virtual_hosts"]:
        for route in host["routes"]:
            route.pop("typed_per_filter_config", None)
    assert off == expected


def test_envoy_accepts_the_bootstrap_without_ext_authz() -> None:
    validate(config(1, 2, ext_authz_enabled=False))
    validate(config(1, 2, ext_authz_enabled=False, rate_limit_enabled=True))


def test_without_ext_authz_pushes_pass_unchecked() -> None:
    """Nothing listens on the RLS port: with ext_authz that is a 503 (failing closed),
    without it the push reaches the upstream as sent."""
    with RecordingUpstream() as up:
        rls_port = free_port()
        for enabled, expected in ((True, 503), (False, 200)):
            up.clear()
            with EnvoyProcess(config(up.port, rls_port, ext_authz_enabled=enabled)) as envoy:
                resp = http_request(envoy.url, "POST", PUSH_PATH, PUSH_BODY, push_headers("t"))
            assert resp.status == expected, (enabled, resp)
            assert [r.body for r in up.requests] == ([PUSH_BODY] if expected == 200 else [])


# -- mirror_mode ---------------------------------------------------------------------------------

COPY = {MIRROR_HEADER: "1"}  # what servers/nginx/mirror.conf adds to its copies
#: The real RLS's limits: ``tight`` has a burst of 1000 samples; every other tenant has room.
TIGHT_OVERRIDES = "overrides:\n  tight:\n    ingestion_rate: 1\n    ingestion_burst_size: 1000\n"
ROOMY = ("--default-ingestion-rate", "1000000", "--default-ingestion-burst-size", "100000000")
#: A request limit of 2 pushes (then one per 1000 s) for the tenant ``t``.
TWO_REQUESTS = "overrides:\n  t:\n    request_rate: 0.001\n    request_burst_size: 2\n"


def _routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = _hcm(bootstrap)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


def _body(seq: int, samples: int = 10) -> bytes:
    """A valid remote-write 1.0 body, unique per ``seq``, for the real RLS."""
    series = [
        Series((("__name__", "m"), ("i", str(i))), samples=(Sample(float(seq), 1_000 + seq),))
        for i in range(samples)
    ]
    return compress(encode_v1(series))


def _push(envoy: EnvoyProcess, tenant: str, body: bytes, *, copy: bool) -> HttpResponse:
    headers = push_headers(tenant) | (COPY if copy else {})
    return http_request(envoy.url, "POST", PUSH_PATH, body, headers)


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ext_authz_send_body": False},
        {"ext_authz_failure_mode_allow": True, "ext_authz_status_on_error": None},
        {"rate_limit_enabled": True, "push_path_rewrite": "/api/v1/write"},
    ],
)
def test_mirror_mode_only_adds_the_copy_route(overrides: dict[str, Any]) -> None:
    """Off by default; on, one route goes in front of the others: the push path WITH the
    mirror header, answered 204 by Envoy. The push route (to the distributor, rate limited and
    rewritten as configured), the catch-all, the filters and the clusters are unchanged."""
    base = EnvoyConfig(
        upstream_host="distributor", upstream_port=8080, rls_host="rls", rls_port=9, **overrides
    )
    assert not base.mirror_mode  # the default
    normal = render_bootstrap(base)
    mirror = render_bootstrap(dataclasses.replace(base, mirror_mode=True))

    push, passthrough = _routes(normal)
    assert push["match"] == {"path": PUSH_PATH}
    assert push["route"]["cluster"] == UPSTREAM_CLUSTER
    assert passthrough["route"]["cluster"] == UPSTREAM_CLUSTER
    expected = copy.deepcopy(normal)
    copy_route = {
        "name": "mirror_copy",
        "match": {"path": PUSH_PATH, "headers": [{"name": MIRROR_HEADER, "present_match": True}]},
        "direct_response": {"status": MIRROR_STATUS},
    }
    _routes(expected).insert(0, copy_route)
    assert mirror == expected
    assert MIRROR_STATUS == 204


@pytest.mark.parametrize("mirror_mode", [False, True])
def test_envoy_removes_the_mirror_header_before_forwarding(mirror_mode: bool) -> None:
    route_config = _hcm(render_bootstrap(config(1, 2, mirror_mode=mirror_mode)))["route_config"]
    assert route_config["request_headers_to_remove"] == [MIRROR_HEADER]


def test_mirror_mode_refuses_to_run_without_ext_authz() -> None:
    """Every copy would be answered 204 unjudged: the mirror phase would measure nothing."""
    with pytest.raises(ValueError, match="mirror_mode needs ext_authz_enabled"):
        config(1, 2, mirror_mode=True, ext_authz_enabled=False)
    config(1, 2, ext_authz_enabled=False)  # fine without mirror_mode


def test_envoy_accepts_the_mirror_bootstrap() -> None:
    """Including the ratelimit filter and the path rewrite, which act on the pushes mirror
    mode forwards (those without the mark)."""
    validate(config(1, 2, mirror_mode=True))
    validate(config(1, 2, mirror_mode=True, ext_authz_send_body=False))
    validate(
        config(1, 2, mirror_mode=True, rate_limit_enabled=True, push_path_rewrite="/api/v1/write")
    )


def test_mirror_mode_answers_only_marked_copies_itself(tmp_path: Path) -> None:
    """With the real RLS: a marked copy it allows gets Envoy's own 204 and reaches nobody; a
    marked copy it denies gets its 429 with Retry-After; a push WITHOUT the mark reaches the
    upstream byte-identical, with its headers, as in the normal mode (a denied one gets the
    429 and reaches nobody); other paths are proxied; the mark never reaches the upstream."""
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(TIGHT_OVERRIDES)
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(overrides), *ROOMY) as rls,
        EnvoyProcess(config(up.port, rls.grpc_port, mirror_mode=True)) as envoy,
    ):
        copies = [_push(envoy, "t", _body(i), copy=True) for i in range(3)]
        pushes = [_push(envoy, "t", _body(10 + i), copy=False) for i in range(3)]
        # 1000 samples against a burst of 1000: the first copy passes, the rest are denied.
        tight_copies = [_push(envoy, "tight", _body(20, 1000), copy=True) for _ in range(2)]
        tight_push = _push(envoy, "tight", _body(21), copy=False)
        query = http_request(envoy.url, "GET", "/prometheus/api/v1/query?query=up", headers=COPY)

        assert [(a.status, a.body) for a in copies] == [(MIRROR_STATUS, b"")] * 3, envoy.stderr()
        assert [a.status for a in pushes] == [200] * 3
        assert [a.status for a in tight_copies] == [MIRROR_STATUS, 429]
        assert tight_copies[1].header("retry-after") is not None
        assert b"ingestion rate limit" in tight_copies[1].body
        assert tight_push.status == 429
        assert query.status == 200
        got = up.requests
        assert [(r.path, r.body) for r in got] == [
            *((PUSH_PATH, _body(10 + i)) for i in range(3)),
            ("/prometheus/api/v1/query?query=up", b""),
        ]
        for r in got[:3]:
            assert r.header("x-scope-orgid") == "t"
            assert r.header("content-encoding") == "snappy"
            assert r.header("content-type") == "application/x-protobuf"
            assert r.header("x-prometheus-remote-write-version") == "0.1.0"
        assert [r.header(MIRROR_HEADER) for r in got] == [None] * 4
        # The RLS judged every push, marked or not.
        assert rls.metric('rls_tenant_requests_total{tenant="t",decision="allow"}') == 6
        assert rls.metric('rls_tenant_requests_total{tenant="tight",decision="allow"}') == 1
        assert rls.metric('rls_tenant_requests_total{tenant="tight",decision="deny"}') == 2
        stats = envoy.stats()
        assert stats["http.ingress.rq_direct_response"] == 4
        assert stats["cluster.mimir_distributor.upstream_rq_total"] == 4


def test_the_mark_means_nothing_to_a_normal_envoy() -> None:
    """Without mirror mode a marked push is an ordinary push: forwarded, without the mark
    (Envoy removes it in every mode). Behind NGINX's mirror.conf that would ingest every copy
    a second time: the reason the mirror phase needs mirror mode."""
    with (
        StandInRls() as rls,
        RecordingUpstream() as up,
        EnvoyProcess(config(up.port, rls.port)) as envoy,
    ):
        resp = _push(envoy, GOOD, PUSH_BODY, copy=True)
        assert resp.status == 200, envoy.stderr()
        (got,) = up.requests
        assert got.body == PUSH_BODY
        assert got.header(MIRROR_HEADER) is None
        assert envoy.stats()["http.ingress.rq_direct_response"] == 0
        # The RLS is sent every header, the mark included, and ignores it.
        (check,) = rls.checks
        assert check.attributes.request.http.headers.get(MIRROR_HEADER.lower()) == "1"


def test_mirror_mode_still_counts_request_rate_denials_in_check(tmp_path: Path) -> None:
    """The request limit of copies, charged by the real RLS in Check (``--request-rate-via
    authz``, the default): with a burst of 2 requests, the third copy is denied and counted
    as a request-rate denial; no copy reaches the upstream."""
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(TWO_REQUESTS)
    body = compress(encode_v1([Series((("__name__", "m"),), samples=(Sample(1.0, 1),))]))
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(overrides)) as rls,
        EnvoyProcess(config(up.port, rls.grpc_port, mirror_mode=True)) as envoy,
    ):
        answers = [_push(envoy, "t", body, copy=True) for _ in range(3)]
        assert [a.status for a in answers] == [204, 204, 429], rls.log()
        assert answers[2].header("retry-after") is not None
        assert up.requests == []
        assert rls.metric('rls_decisions_total{decision="deny",reason="request_rate"}') == 1
        assert rls.metric('rls_tenant_requests_total{tenant="t",decision="allow"}') == 2


def test_mirror_mode_with_the_ratelimit_filter_limits_the_forwarded_pushes(
    tmp_path: Path,
) -> None:
    """``rate_limit_enabled`` with mirror mode, the real RLS charging the request limit in
    ShouldRateLimit (``--request-rate-via ratelimit``; burst 2 requests): unmarked pushes are
    limited by Envoy's ratelimit filter as in the normal mode (the third gets 429 before its
    body goes to the RLS) and the allowed ones reach the upstream at the rewritten path.
    Marked copies never call ShouldRateLimit (the filter does nothing on a direct_response
    route), so in this setup their request limit is not charged: all four get 204."""
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(TWO_REQUESTS)
    rls_args = ("--overrides", str(overrides), "--request-rate-via", "ratelimit")
    with RecordingUpstream() as up, RlsProcess(tmp_path, *rls_args) as rls:
        cfg = config(
            up.port,
            rls.grpc_port,
            mirror_mode=True,
            rate_limit_enabled=True,
            push_path_rewrite="/api/v1/write",
        )
        with EnvoyProcess(cfg) as envoy:
            pushes = [_push(envoy, "t", _body(i), copy=False) for i in range(3)]
            copies = [_push(envoy, "t", _body(10 + i), copy=True) for i in range(4)]
            stats = envoy.stats()
        assert [a.status for a in pushes] == [200, 200, 429], rls.log()
        assert pushes[2].header("x-envoy-ratelimited") == "true"
        assert [a.status for a in copies] == [MIRROR_STATUS] * 4
        assert [(r.path, r.body) for r in up.requests] == [
            ("/api/v1/write", _body(0)),
            ("/api/v1/write", _body(1)),
        ]
        # Three ShouldRateLimit calls, all for the unmarked pushes; the limited push was
        # never sent to ext_authz.
        assert stats["cluster.mimir_distributor.ratelimit.ok"] == 2
        assert stats["cluster.mimir_distributor.ratelimit.over_limit"] == 1
        assert stats["http.ingress.ext_authz.ok"] == 2 + 4


def test_envoys_ratelimit_filter_skips_a_direct_response_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why marked copies are not charged by Envoy's ratelimit filter. The push route made a
    direct_response by hand, with the tenant descriptor in every place Envoy 1.40 offers (the
    virtual host, the route's RateLimitPerRoute, the filter's own rate_limits):
    ShouldRateLimit is never called for the push, while the catch-all route (a route action)
    in the same Envoy does call it."""
    with StandInRls() as rls, RecordingUpstream() as up:
        bootstrap = render_bootstrap(config(up.port, rls.port, rate_limit_enabled=True))
        hcm = _hcm(bootstrap)
        (host,) = hcm["route_config"]["virtual_hosts"]
        push = host["routes"][0]
        rate_limits = push.pop("route")["rate_limits"]
        push["direct_response"] = {"status": MIRROR_STATUS}
        host["rate_limits"] = rate_limits
        push["typed_per_filter_config"] = {
            RATELIMIT: {
                "@type": "type.googleapis.com/"
                "envoy.extensions.filters.http.ratelimit.v3.RateLimitPerRoute",
                "rate_limits": rate_limits,
            }
        }
        (ratelimit,) = (f for f in hcm["http_filters"] if f["name"] == RATELIMIT)
        ratelimit["typed_config"]["rate_limits"] = rate_limits
        # EnvoyProcess renders its EnvoyConfig; here it runs the hand-edited bootstrap instead.
        monkeypatch.setattr(harness, "dump", lambda _cfg: json.dumps(bootstrap))
        with EnvoyProcess(config(up.port, rls.port)) as envoy:
            pushed = http_request(envoy.url, "POST", PUSH_PATH, PUSH_BODY, push_headers(GOOD))
            assert pushed.status == MIRROR_STATUS, envoy.stderr()
            assert len(rls.checks) == 1
            assert rls.rate_limit_requests == []
            other = http_request(envoy.url, "GET", "/ready", headers={"X-Scope-OrgID": GOOD})
            assert other.status == 200
            assert len(rls.rate_limit_requests) == 1  # the control: the descriptor works


# -- admin_proxy_address -------------------------------------------------------------------------


def _proxied(**overrides: Any) -> EnvoyConfig:
    fields: dict[str, Any] = {
        "admin_address": "127.0.0.1",
        "admin_port": free_port(),
        "admin_proxy_address": "127.0.0.1",
        "admin_proxy_port": free_port(),
        **overrides,
    }
    return config(1, 2, **fields)


def test_the_admin_proxy_only_adds_its_listener_and_cluster() -> None:
    """Off by default (the bootstrap is unchanged); on, the rest of the bootstrap is as without."""
    cfg = _proxied()
    default = EnvoyConfig(upstream_host="u", upstream_port=1, rls_host="r", rls_port=2)
    assert default.admin_proxy_address is None
    off = render_bootstrap(dataclasses.replace(cfg, admin_proxy_address=None))
    on = render_bootstrap(cfg)
    resources = on["static_resources"]
    assert [x["name"] for x in resources["listeners"]] == ["ingress", ADMIN_PROXY_LISTENER]
    assert resources["clusters"][-1]["name"] == ADMIN_CLUSTER
    resources["listeners"].pop()
    resources["clusters"].pop()
    assert on == off


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"admin_address": "0.0.0.0"}, "admin_address must be a loopback IP"),
        ({"admin_address": "localhost"}, "admin_address must be a loopback IP"),
        ({"admin_port": 0}, "admin_port must be fixed"),
        ({"admin_proxy_address": "admin.example"}, "admin_proxy_address must be an IP"),
        ({"admin_port": 9901, "admin_proxy_port": 9901}, "admin_proxy_port and admin_port"),
        ({"listen_port": 9901, "admin_proxy_port": 9901}, "admin_proxy_port and listen_port"),
    ],
)
def test_the_admin_proxy_refuses_a_reachable_or_clashing_admin(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        _proxied(**overrides)


def test_envoy_accepts_the_admin_proxy_bootstrap() -> None:
    validate(_proxied())
    validate(_proxied(mirror_mode=True, rate_limit_enabled=True, access_log=False))


#: Admin endpoints that change or stop Envoy, or show its configuration: never through the proxy.
REFUSED = [
    ("POST", "/quitquitquit"),
    ("POST", "/healthcheck/fail"),
    ("POST", "/drain_listeners?graceful"),
    ("POST", "/runtime_modify?x=1"),
    ("POST", "/logging?level=trace"),
    ("GET", "/config_dump"),
    ("GET", "/clusters"),
    ("GET", "/stats"),
    ("GET", "/"),
    ("POST", "/ready"),
    ("POST", "/stats/prometheus"),
    ("GET", "/ready/../config_dump"),
    ("GET", "//quitquitquit"),
    ("GET", "/stats/prometheus/../../quitquitquit"),
]


def test_the_admin_proxy_serves_probes_and_scrapes_only() -> None:
    """Through the proxy port: the readiness answer and the metrics (with query strings);
    everything else of the admin API is a 404 from Envoy itself that never reaches the
    admin, and Envoy goes on serving pushes."""
    with RecordingUpstream() as up:
        cfg = dataclasses.replace(_proxied(ext_authz_enabled=False), upstream_port=up.port)
        with EnvoyProcess(cfg) as envoy:
            # The admin API itself listens on loopback only, on its own port.
            assert envoy.admin_url == f"http://127.0.0.1:{cfg.admin_port}"
            proxy = f"http://127.0.0.1:{cfg.admin_proxy_port}"
            ready = http_request(proxy, "GET", "/ready")
            assert (ready.status, ready.body) == (200, b"LIVE\n")
            metrics = http_request(proxy, "GET", "/stats/prometheus")
            assert metrics.status == 200
            assert b"# TYPE envoy_server_live gauge" in metrics.body
            used = http_request(proxy, "GET", "/stats/prometheus?usedonly&filter=server")
            assert used.status == 200
            assert b"envoy_server_live" in used.body
            assert b"envoy_cluster_" not in used.body  # the query string reached the admin
            for method, path in REFUSED:
                resp = http_request(proxy, method, path)
                assert resp.status == 404, (method, path, resp)
                assert b"not exposed" in resp.body, (method, path)
            # Nothing refused reached the admin: it answered the three requests above only.
            assert envoy.stats()[f"cluster.{ADMIN_CLUSTER}.upstream_rq_total"] == 3
            # Still running, still live, not draining, still forwarding.
            assert envoy.admin_json("/server_info")["state"] == "LIVE"
            assert http_request(proxy, "GET", "/ready").status == 200
            push = http_request(envoy.url, "POST", PUSH_PATH, PUSH_BODY, push_headers("t"))
            assert push.status == 200
            assert push.header("connection") != "close"  # no drain started
            assert len(up.requests) == 1
        # Probes and scrapes stay out of the access log (complete once Envoy has stopped).
        assert [e["path"] for e in envoy.access_log()] == [PUSH_PATH]
