"""Rendering the charts with the real Helm engine (helm-python-sdk) and looking at the result.

No cluster: ``lookup`` finds nothing (the admin token is generated) and ``.Capabilities`` are
Helm's defaults. Release names and namespace are the rollout guide's.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHARTS = ROOT / "charts"
CHART_NAMES = ("mimir-rls", "overrides-sync", "envoy")
#: The guide installs each chart under these release names, in this namespace.
RELEASES = {"mimir-rls": "mimir-rls", "overrides-sync": "overrides-sync", "envoy": "mimir-envoy"}
NAMESPACE = "mimir-edge-enforcement"

#: Every `helm install/upgrade` of the rollout guide, its `--set` arguments verbatim.
GUIDE_SETS: dict[str, list[tuple[str, ...]]] = {
    "mimir-rls": [
        ("image.tag=v0.1.0", "replicaCount=2", "hpa.enabled=true"),  # phase 1: install
        ("replicaCount=3", "hpa.maxReplicas=10"),  # phase 3: scale up
        ("limits.enforceBodyParsing=true",),  # phase 3: advanced features
        ("image.tag=v0.2.0",),  # maintenance: update images
    ],
    "overrides-sync": [
        (
            "image.tag=v0.1.0",
            "mimir.namespace=mimir",
            "mimir.overridesConfigMap=mimir-overrides",
        ),
    ],
    "envoy": [
        ("image.tag=v0.1.0", "replicaCount=2", "hpa.enabled=true"),
        ("replicaCount=3", "hpa.maxReplicas=10"),
        ("extAuthz.failureModeAllow=false", "rateLimit.failureModeDeny=true"),
    ],
}


def set_values(sets: Iterable[str]) -> dict[str, Any]:
    """Values from `--set` arguments, parsed and merged as Helm does."""
    out: dict[str, Any] = {}
    for expression in sets:
        deep_merge(out, helm.parse_set_string(expression))
    return out


def deep_merge(into: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def scenario_files(chart: str) -> list[Path]:
    return sorted((CHARTS / chart / "ci").glob("*-values.yaml"))


def scenario_values(path: Path) -> dict[str, Any]:
    return helm.values_from_yaml(path.read_text())


@functools.cache
def load_chart(path: Path) -> helm.Chart:
    return helm.Chart.load(path)


@dataclass(frozen=True)
class Rendered:
    """The objects of one render, in template order, and the NOTES."""

    chart: str
    objects: tuple[dict[str, Any], ...]
    notes: str

    def kinds(self) -> list[str]:
        return [o["kind"] for o in self.objects]

    def all(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def maybe(self, kind: str, name: str | None = None) -> dict[str, Any] | None:
        found = [o for o in self.all(kind) if name is None or o["metadata"]["name"] == name]
        if len(found) > 1:
            raise AssertionError(f"{len(found)} {kind} objects named {name}")
        return found[0] if found else None

    def one(self, kind: str, name: str | None = None) -> dict[str, Any]:
        found = self.maybe(kind, name)
        if found is None:
            raise AssertionError(f"no {kind} {name or ''} in {self.kinds()}")
        return found

    def container(self) -> dict[str, Any]:
        """The Deployment's only container."""
        containers = self.one("Deployment")["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        container: dict[str, Any] = containers[0]
        return container


def render(
    chart: str,
    values: Mapping[str, Any] | None = None,
    *,
    sets: Sequence[str] = (),
    release: str | None = None,
    namespace: str = NAMESPACE,
    chart_dir: Path | None = None,
) -> Rendered:
    """Render ``chart`` as `helm template` would with ``-f values`` then ``--set sets``."""
    merged = deep_merge(deep_merge({}, values or {}), set_values(sets))
    manifests = load_chart(chart_dir or CHARTS / chart).render(
        merged, name=release or RELEASES[chart], namespace=namespace
    )
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects.extend(d for d in yaml.safe_load_all(text) if d)
    return Rendered(chart, tuple(objects), notes)


def leaf_paths(values: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted paths of a values tree's leaves (an empty map or list is a leaf)."""
    for key, value in values.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from leaf_paths(value, f"{path}.")
        else:
            yield path
