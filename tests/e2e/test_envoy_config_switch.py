"""``EnvoyConfig(ext_authz_enabled=False)``: the same bootstrap without the ext_authz filter.

The edge-latency benchmark compares Envoy with and without ext_authz, so the two bootstraps
must differ in exactly that filter (and its per-route switch), nothing else.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any

import pytest

from mimir_edge.envoy_config import PUSH_PATH, EnvoyConfig, render_bootstrap
from tests.e2e.harness import EnvoyProcess, RecordingUpstream, free_port, http_request, validate
from tests.e2e.test_harness import PUSH_BODY, config, push_headers

EXT_AUTHZ = "envoy.filters.http.ext_authz"


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
