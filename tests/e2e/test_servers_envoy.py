"""The committed Envoy bootstraps (servers/envoy/*.json) are what ``render_bootstrap`` gives
and real Envoy accepts them (``envoy --mode validate``)."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from mimir_edge.envoy_config import MIRROR_HEADER, MIRROR_STATUS, render_bootstrap
from tests.e2e.harness import envoy_binary

ENVOY_DIR = Path(__file__).resolve().parents[2] / "servers" / "envoy"


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "servers_envoy_generate", ENVOY_DIR / "generate.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GENERATOR = _generator()


def test_every_committed_bootstrap_is_generated() -> None:
    assert sorted(p.name for p in ENVOY_DIR.glob("*.json")) == sorted(GENERATOR.BOOTSTRAPS)


@pytest.mark.parametrize("name", sorted(GENERATOR.BOOTSTRAPS))
def test_committed_bootstrap_is_the_rendering_and_envoy_accepts_it(name: str) -> None:
    path = ENVOY_DIR / name
    assert json.loads(path.read_text()) == render_bootstrap(GENERATOR.BOOTSTRAPS[name])
    proc = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr + proc.stdout


def test_generator_check_mode() -> None:
    proc = subprocess.run(
        [sys.executable, str(ENVOY_DIR / "generate.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_mirror_bootstrap_is_the_full_one_in_mirror_mode() -> None:
    """The mirror phase needs nothing beside NGINX's mirror.conf: Envoy's upstream is the
    distributor as in the other phases, and the only difference is the route that answers
    NGINX's marked copies itself; every other push is routed as in envoy.json."""
    mirror = GENERATOR.BOOTSTRAPS["envoy-mirror.json"]
    full = GENERATOR.BOOTSTRAPS["envoy.json"]
    assert not full.mirror_mode
    assert mirror == dataclasses.replace(full, mirror_mode=True)
    assert not (ENVOY_DIR.parent / "nginx" / "mirror-sink-listen.conf").exists()

    def routes(name: str) -> list[dict[str, Any]]:
        (listener,) = json.loads((ENVOY_DIR / name).read_text())["static_resources"]["listeners"]
        route_config = listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
        assert route_config["request_headers_to_remove"] == [MIRROR_HEADER]
        (host,) = route_config["virtual_hosts"]
        found: list[dict[str, Any]] = host["routes"]
        return found

    copy, *rest = routes("envoy-mirror.json")
    assert rest == routes("envoy.json")
    assert copy["match"]["headers"] == [{"name": MIRROR_HEADER, "present_match": True}]
    assert copy["direct_response"] == {"status": MIRROR_STATUS}
