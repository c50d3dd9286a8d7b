"""Every chart, for every ci/ scenario and every `--set` line of the rollout guide: Helm lints
it clean, every object is valid for the newest and the oldest Kubernetes that
kubernetes-validate ships (1.37 and 1.25), the objects refer to each other correctly, every
value is read, and bad values are refused."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as kv_utils

from tests.charts.helm_render import (
    CHART_NAMES,
    CHARTS,
    GUIDE_SETS,
    NAMESPACE,
    RELEASES,
    Rendered,
    deep_merge,
    leaf_paths,
    render,
    scenario_files,
    scenario_values,
    set_values,
)

KUBE_VERSION = kv_utils.latest_version()
#: The guide asks for Kubernetes 1.24+; the oldest schemas kubernetes-validate ships are 1.25's.
OLDEST_KUBE_VERSION = kv_utils.all_versions()[0]
#: Custom resources kubernetes-validate has no schema for: checked structurally below.
CRDS = {"ServiceMonitor", "PrometheusRule"}

CASES = [
    pytest.param(chart, scenario_values(path), (), id=f"{chart}-{path.name}")
    for chart in CHART_NAMES
    for path in scenario_files(chart)
] + [
    pytest.param(chart, {}, sets, id=f"{chart}-guide-{i}")
    for chart in CHART_NAMES
    for i, sets in enumerate(GUIDE_SETS[chart])
]


def test_every_chart_has_the_required_scenarios() -> None:
    for chart in CHART_NAMES:
        names = {p.name for p in scenario_files(chart)}
        assert {"default-values.yaml", "production-values.yaml"} <= names, chart
    rls = {p.name for p in scenario_files("mimir-rls")}
    assert {"dry-run-values.yaml", "no-body-parsing-values.yaml"} <= rls


@pytest.mark.parametrize(("chart", "values", "sets"), CASES)
def test_lint_is_clean(chart: str, values: dict[str, Any], sets: tuple[str, ...]) -> None:
    merged = deep_merge(dict(values), set_values(sets))
    report = helm.lint(
        CHARTS / chart, merged, strict=True, namespace=NAMESPACE, kube_version=f"v{KUBE_VERSION}"
    )
    assert report["errors"] == []
    assert report["messages"] == []


@pytest.mark.parametrize(("chart", "values", "sets"), CASES)
def test_every_object_is_valid(chart: str, values: dict[str, Any], sets: tuple[str, ...]) -> None:
    out = render(chart, values, sets=sets)
    assert out.objects
    for obj in out.objects:
        assert obj["metadata"]["namespace"], obj["metadata"]
        if obj["kind"] in CRDS:
            check_custom_resource(obj, out)
        else:
            for version in (OLDEST_KUBE_VERSION, KUBE_VERSION):
                kubernetes_validate.validate(obj, version, strict=True)
    check_references(out)


def check_custom_resource(obj: dict[str, Any], out: Rendered) -> None:
    """What the Prometheus Operator's CRDs require (kubernetes-validate has no schema for
    them): the fields used, their types, and that they point at real objects."""
    assert obj["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
    spec = obj["spec"]
    if obj["kind"] == "ServiceMonitor":
        assert set(spec) <= {"namespaceSelector", "selector", "endpoints", "jobLabel"}
        assert spec["namespaceSelector"] == {"matchNames": [NAMESPACE]}
        services = [s for s in out.all("Service") if selects(spec["selector"], s["metadata"])]
        assert len(services) == 1, "a ServiceMonitor must scrape each pod once, via one Service"
        port_names = {p["name"] for p in services[0]["spec"]["ports"]}
        for ep in spec["endpoints"]:
            assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "relabelings"}
            assert ep["port"] in port_names
            assert ep["path"].startswith("/")
            for key in ("interval", "scrapeTimeout"):
                assert re.fullmatch(r"([0-9]+(ms|s|m|h))+", ep[key]), ep[key]
            for r in ep.get("relabelings", []):
                assert r["action"] in {"replace", "keep", "drop", "labelmap"}
                assert isinstance(r["targetLabel"], str)
    elif obj["kind"] == "PrometheusRule":
        assert set(spec) == {"groups"}
        for group in spec["groups"]:
            assert isinstance(group["name"], str)
            for rule in group["rules"]:
                assert ("alert" in rule) != ("record" in rule)
                assert isinstance(rule["expr"], str)
        check_rules_with_promtool(spec)


def check_rules_with_promtool(spec: dict[str, Any]) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        return  # structure checked above; promtool is a Debian package the CI installs
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "rules.yaml"
        path.write_text(yaml.safe_dump(spec))
        proc = subprocess.run(
            [promtool, "check", "rules", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def selects(selector: dict[str, Any], metadata: dict[str, Any]) -> bool:
    """Kubernetes label-selector semantics (matchLabels and matchExpressions)."""
    labels = metadata.get("labels") or {}
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for e in selector.get("matchExpressions") or []:
        has, value = e["key"] in labels, labels.get(e["key"])
        ok = {
            "In": has and value in e.get("values", []),
            "NotIn": not has or value not in e.get("values", []),
            "Exists": has,
            "DoesNotExist": not has,
        }[e["operator"]]
        if not ok:
            return False
    return True


def check_references(out: Rendered) -> None:
    """Selectors select the pods, targets exist, named ports exist."""
    deploy = out.one("Deployment")
    pod = deploy["spec"]["template"]
    assert selects(deploy["spec"]["selector"], pod["metadata"])
    container_ports = {p["name"]: p["containerPort"] for p in out.container()["ports"]}
    for svc in out.all("Service"):
        assert selects({"matchLabels": svc["spec"]["selector"]}, pod["metadata"])
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in container_ports
            assert port["port"] == container_ports[port["targetPort"]]
    for pdb in out.all("PodDisruptionBudget"):
        assert selects(pdb["spec"]["selector"], pod["metadata"])
    for hpa in out.all("HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] == deploy["metadata"]["name"]
    sa = pod["spec"]["serviceAccountName"]
    if out.all("ServiceAccount"):
        assert out.one("ServiceAccount")["metadata"]["name"] == sa
    for binding in out.all("RoleBinding"):
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa, "namespace": NAMESPACE}
        ]
        role = out.one("Role", binding["roleRef"]["name"])
        assert role["metadata"]["namespace"] == binding["metadata"]["namespace"]
    mounts = {m["name"] for m in out.container().get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["spec"].get("volumes", [])}
    assert mounts == set(volumes)
    for v in volumes.values():
        if "configMap" in v and out.maybe("ConfigMap", v["configMap"]["name"]) is None:
            assert v["configMap"].get("optional") or out.chart == "mimir-rls"
    for probe in ("readinessProbe", "livenessProbe"):
        spec = out.container()[probe]
        port = (spec.get("httpGet") or spec.get("tcpSocket"))["port"]
        assert port in container_ports


# -- values ------------------------------------------------------------------------------------


def template_text(chart: str) -> str:
    """Everything the chart evaluates: templates, helpers and files/*.tpl (tpl'd)."""
    root = CHARTS / chart
    paths = [*(root / "templates").iterdir(), *(root / "files").glob("*.tpl")]
    return "\n".join(p.read_text() for p in paths if p.is_file())


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_every_value_is_read_by_the_templates(chart: str) -> None:
    """A value no template reads is a knob that silently does nothing."""
    defaults = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    text = template_text(chart)
    unread = []
    for path in leaf_paths(defaults):
        parts = path.split(".")
        prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
        if not any(re.search(rf"\.Values\.{re.escape(p)}(?![\w.])", text) for p in prefixes):
            unread.append(path)
    assert unread == []


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_schema_and_values_have_the_same_keys(chart: str) -> None:
    """values.schema.json refuses unknown keys, so it must know exactly values.yaml's."""
    schema = json.loads((CHARTS / chart / "values.schema.json").read_text())
    defaults = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())

    def walk(node: dict[str, Any], values: dict[str, Any], where: str) -> None:
        props = node.get("properties")
        if props is None or node.get("additionalProperties") is not False:
            return  # a free-form map (resources, affinity, labels...)
        assert set(props) - {"global"} == set(values), where
        for key, sub in props.items():
            if key in values and isinstance(values[key], dict):
                walk(sub, values[key], f"{where}.{key}")

    walk(schema, defaults, chart)


@pytest.mark.parametrize(
    ("chart", "sets", "message"),
    [
        ("mimir-rls", ["hpa.maxReplica=10"], "additional properties 'maxReplica'"),
        ("mimir-rls", ["replicaCount=three"], "/replicaCount"),
        ("mimir-rls", ["limits.enforceBodyParsing=flase"], "/limits/enforceBodyParsing"),
        ("mimir-rls", ["limits.requestRateVia=envoy"], "/limits/requestRateVia"),
        ("overrides-sync", ["mimir.namespace=Mimir_NS"], "/mimir/namespace"),
        ("envoy", ["extAuthz.failureModeAllow=no"], "/extAuthz/failureModeAllow"),
        ("envoy", ["extAuthz.timeout=250ms"], "/extAuthz/timeout"),
        ("envoy", ["upstream.host=mimir distributor"], "/upstream/host"),
        ("envoy", ["extAuthz.statusOnError=200"], "/extAuthz/statusOnError"),
    ],
)
def test_bad_values_are_refused_naming_the_key(chart: str, sets: list[str], message: str) -> None:
    # A typo'd boolean would otherwise be a non-empty string, i.e. true in a template:
    # `failureModeAllow=no` would open the gate.
    with pytest.raises(helm.HelmValuesError, match=re.escape(message)):
        render(chart, sets=sets)


def test_hpa_bounds_that_cannot_hold_are_refused() -> None:
    for chart in ("mimir-rls", "envoy"):
        with pytest.raises(helm.HelmError, match=r"hpa.maxReplicas \(2\) is below"):
            render(chart, sets=["hpa.enabled=true", "replicaCount=3", "hpa.maxReplicas=2"])


# -- chart metadata ----------------------------------------------------------------------------


@pytest.mark.parametrize("chart", CHART_NAMES)
def test_chart_versions_follow_the_package(chart: str) -> None:
    """appVersion is the release whose images the chart runs: `v` + the package version."""
    import tomllib

    version = tomllib.loads((CHARTS.parent / "pyproject.toml").read_text())["project"]["version"]
    meta = yaml.safe_load((CHARTS / chart / "Chart.yaml").read_text())
    assert meta["name"] == chart
    assert meta["version"] == version
    assert meta["appVersion"] == f"v{version}"
    out = render(chart)
    assert out.container()["image"].endswith(f":v{version}")


def test_the_guide_image_tag_names_the_image_of_every_chart() -> None:
    registries = set()
    for chart in CHART_NAMES:
        image = render(chart, sets=["image.tag=v0.1.0"]).container()["image"]
        registry, _, rest = image.rpartition("/")
        assert rest.endswith(":v0.1.0")
        registries.add(registry)
    assert len(registries) == 1, "one registry value for every mimir-edge image"


def test_release_names_are_the_guides_object_names() -> None:
    """`kubectl logs deployment/mimir-rls`, `.../mimir-envoy`, `.../overrides-sync`; curl
    mimir-rls...:9090 and mimir-envoy...:8080 / :9901."""
    for chart, release in RELEASES.items():
        out = render(chart)
        assert out.one("Deployment")["metadata"]["name"] == release
        assert out.one("Service", release)
    assert {
        p["port"] for p in render("mimir-rls").one("Service", "mimir-rls")["spec"]["ports"]
    } >= {9090}
    envoy_ports = {
        p["port"] for p in render("envoy").one("Service", "mimir-envoy")["spec"]["ports"]
    }
    assert envoy_ports == {8080, 9901}
