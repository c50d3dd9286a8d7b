"""Switches of ``EnvoyConfig`` that change the bootstrap's shape, with real Envoy.

``ext_authz_enabled=False``: the same bootstrap without the ext_authz filter. The edge-latency
benchmark compares Envoy with and without ext_authz, so the two bootstraps must differ in
exactly that filter (and its per-route switch), nothing else.

``mirror_mode=True`` (the rollout's mirror phase, servers/nginx/mirror.conf): the push route
answers an allowed push with 204 itself (``direct_response``) instead of forwarding it.
:class:`StandInRls` (tests/e2e/test_harness.py) or the real RLS answers Envoy; the upstream is
a :class:`RecordingUpstream`.
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
    MIRROR_STATUS,
    PUSH_PATH,
    UPSTREAM_CLUSTER,
    EnvoyConfig,
    render_bootstrap,
)
from tests.e2e import harness
from tests.e2e.harness import EnvoyProcess, RecordingUpstream, free_port, http_request, validate
from tests.e2e.rls_process import RlsProcess
from tests.e2e.test_harness import (
    DENIED_BODY,
    GOOD,
    PUSH_BODY,
    RETRY_AFTER,
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


def _routes(bootstrap: dict[str, Any]) -> list[dict[str, Any]]:
    (host,) = _hcm(bootstrap)["route_config"]["virtual_hosts"]
    routes: list[dict[str, Any]] = host["routes"]
    return routes


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"ext_authz_send_body": False},
        {"ext_authz_failure_mode_allow": True, "ext_authz_status_on_error": None},
    ],
)
def test_mirror_mode_replaces_only_the_push_routes_action(overrides: dict[str, Any]) -> None:
    """Off by default; on, the push route answers 204 itself instead of going to the
    distributor, and everything else (filters, the catch-all route, clusters) is unchanged."""
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
    expected_push = _routes(expected)[0]
    del expected_push["route"]
    expected_push["direct_response"] = {"status": MIRROR_STATUS}
    assert mirror == expected
    assert MIRROR_STATUS == 204


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"ext_authz_enabled": False}, "mirror_mode needs ext_authz_enabled"),
        ({"rate_limit_enabled": True}, "mirror_mode excludes rate_limit_enabled"),
        ({"push_path_rewrite": "/api/v1/write"}, "push_path_rewrite has no effect"),
    ],
)
def test_mirror_mode_refuses_settings_it_cannot_honour(
    overrides: dict[str, Any], message: str
) -> None:
    """Each would make the mirror phase silently judge less than it claims."""
    with pytest.raises(ValueError, match=message):
        config(1, 2, mirror_mode=True, **overrides)
    config(1, 2, **overrides)  # each is fine without mirror_mode


def test_envoy_accepts_the_mirror_bootstrap() -> None:
    validate(config(1, 2, mirror_mode=True))
    validate(config(1, 2, mirror_mode=True, ext_authz_send_body=False))


def test_mirror_mode_answers_allowed_pushes_itself() -> None:
    """An allowed push gets Envoy's own 204 and never reaches the upstream; a denied one gets
    the RLS's 429 with Retry-After; the RLS judged each whole body; other paths still reach
    the upstream."""
    with (
        StandInRls() as rls,
        RecordingUpstream() as up,
        EnvoyProcess(config(up.port, rls.port, mirror_mode=True)) as envoy,
    ):
        allowed = [
            http_request(envoy.url, "POST", PUSH_PATH, PUSH_BODY, push_headers(GOOD))
            for _ in range(3)
        ]
        denied = http_request(envoy.url, "POST", PUSH_PATH, PUSH_BODY, push_headers("other"))
        query = http_request(envoy.url, "GET", "/prometheus/api/v1/query?query=up")
        assert [(r.status, r.body) for r in allowed] == [(204, b"")] * 3, envoy.stderr()
        assert denied.status == 429
        assert denied.header("retry-after") == RETRY_AFTER
        assert denied.body == DENIED_BODY.encode()
        assert query.status == 200
        assert [r.path for r in up.requests] == ["/prometheus/api/v1/query?query=up"]
        assert [c.attributes.request.http.raw_body for c in rls.checks] == [PUSH_BODY] * 4
        assert envoy.stats()["http.ingress.rq_direct_response"] == 3


def test_mirror_mode_still_counts_request_rate_denials_in_check(tmp_path: Path) -> None:
    """The request limit, charged by the real RLS in Check (``--request-rate-via authz``, the
    default, as mirror mode needs): with a burst of 2 requests, the third push is denied and
    counted as a request-rate denial; no push reaches the upstream."""
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text("overrides:\n  t:\n    request_rate: 0.001\n    request_burst_size: 2\n")
    body = compress(encode_v1([Series((("__name__", "m"),), samples=(Sample(1.0, 1),))]))
    with (
        RecordingUpstream() as up,
        RlsProcess(tmp_path, "--overrides", str(overrides)) as rls,
        EnvoyProcess(config(up.port, rls.grpc_port, mirror_mode=True)) as envoy,
    ):
        answers = [
            http_request(envoy.url, "POST", PUSH_PATH, body, push_headers("t")) for _ in range(3)
        ]
        assert [a.status for a in answers] == [204, 204, 429], rls.log()
        assert answers[2].header("retry-after") is not None
        assert up.requests == []
        assert rls.metric('rls_decisions_total{decision="deny",reason="request_rate"}') == 1
        assert rls.metric('rls_tenant_requests_total{tenant="t",decision="allow"}') == 2


def test_envoys_ratelimit_filter_skips_a_direct_response_route(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Why mirror_mode refuses rate_limit_enabled. The push route made a direct_response by
    hand, with the tenant descriptor in every place Envoy 1.40 offers (the virtual host, the
    route's RateLimitPerRoute, the filter's own rate_limits): ShouldRateLimit is never called
    for the push, while the catch-all route (a route action) in the same Envoy does call it."""
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
