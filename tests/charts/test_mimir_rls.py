"""The mimir-rls chart runs `mimir-edge rls` with the settings its values ask for.

The container's arguments and environment are fed to the RLS's own argument parser
(mimir_edge.rls.settings), so a flag the RLS does not have, or a value it would read
differently, fails here rather than in a crash-looping pod.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir_edge.rls import settings as rls_settings
from mimir_edge.rls.settings import Settings
from tests.charts.helm_render import CHARTS, GUIDE_SETS, ROOT, Rendered, render, set_values
from tests.charts.test_charts import selects

CHART = "mimir-rls"


def parser() -> argparse.ArgumentParser:
    # No abbreviations: the chart must spell every flag out.
    p = argparse.ArgumentParser(prog="mimir-edge rls", allow_abbrev=False)
    rls_settings.add_arguments(p)
    return p


def env_of(out: Rendered) -> dict[str, str]:
    """The container's environment, Secret references resolved from the render."""
    env = {}
    for e in out.container().get("env", []):
        if "value" in e:
            env[e["name"]] = e["value"]
            continue
        ref = e["valueFrom"]["secretKeyRef"]
        secret = out.maybe("Secret", ref["name"])
        if secret is not None:
            env[e["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()
    return env


def settings_of(out: Rendered, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """What `mimir-edge rls` would run with in this pod (flags and MIMIR_EDGE_* env)."""
    for name in [k for k in os.environ if k.startswith("MIMIR_EDGE_")]:
        monkeypatch.delenv(name)
    for name, value in env_of(out).items():
        monkeypatch.setenv(name, value)
    return rls_settings.from_args(parser().parse_args(out.container()["args"]))


def test_default_pod_runs_the_rls_as_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART)
    s = settings_of(out, monkeypatch)
    assert s.grpc_listen == "0.0.0.0:8081"
    assert s.http_listen == "0.0.0.0:9090"
    assert s.workers == 2  # not the node's core count
    assert s.instances == 2  # = replicas: each enforces half of every rate
    assert s.body_parsing is True
    assert s.dry_run is False
    assert s.dry_run_tenants == ()
    assert s.defaults() == {}  # Mimir's defaults
    assert s.overrides is None  # limits come from overrides-sync
    assert s.admin_token is not None
    assert len(s.admin_token) >= 32
    assert s.table_path is None  # the supervisor makes a fresh table in /dev/shm
    assert out.one("Deployment")["spec"]["replicas"] == 2


def test_probes_and_ports() -> None:
    c = render(CHART).container()
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert {p["name"]: p["containerPort"] for p in c["ports"]} == {"grpc": 8081, "http": 9090}


def test_shutdown_drains_before_sigkill(monkeypatch: pytest.MonkeyPatch) -> None:
    for values in ({}, {"shutdown": {"preStopSleepSeconds": 4, "gracePeriodSeconds": 40.5}}):
        out = render(CHART, values)
        s = settings_of(out, monkeypatch)
        pod = out.one("Deployment")["spec"]["template"]["spec"]
        sleep = float(out.container()["lifecycle"]["preStop"]["exec"]["command"][1])
        # Kubernetes counts the preStop hook in the grace period: SIGKILL must come after the
        # hook, the drain delay and the RLS's own grace period.
        assert pod["terminationGracePeriodSeconds"] > (
            sleep + s.drain_delay_seconds + s.grace_period_seconds
        )
        assert out.container()["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"


def test_runs_as_non_root_on_a_read_only_root() -> None:
    out = render(CHART)
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    c = out.container()
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["allowPrivilegeEscalation"] is False
    assert c["securityContext"]["capabilities"] == {"drop": ["ALL"]}
    # The tenant table is a file in /dev/shm (the RLS's default, see --help): give it a
    # writable memory-backed volume of a known size.
    help_text = parser()._option_string_actions["--table-path"].help or ""
    assert "/dev/shm" in help_text
    mounts = {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes[mounts["/dev/shm"]]["emptyDir"] == {"medium": "Memory", "sizeLimit": "256Mi"}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert pod["automountServiceAccountToken"] is False  # the RLS never calls the API


def test_hpa_owns_the_replica_count(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART, sets=GUIDE_SETS[CHART][0])  # image.tag, replicaCount=2, hpa.enabled
    assert "replicas" not in out.one("Deployment")["spec"]
    hpa = out.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["metrics"] == [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": 70},
            },
        }
    ]
    assert settings_of(out, monkeypatch).instances == 2
    out = render(
        CHART,
        {"hpa": {"enabled": True, "minReplicas": 4, "maxReplicas": 7}},
        sets=["hpa.targetCPUUtilizationPercentage=55"],
    )
    hpa = out.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (4, 7)
    assert hpa["metrics"][0]["resource"]["target"]["averageUtilization"] == 55
    assert settings_of(out, monkeypatch).instances == 4


def test_guide_phases_with_reused_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """`helm upgrade --set ...` without --reuse-values resets every other value to the chart's
    defaults. With the values kept (--reuse-values), phase 3's `replicaCount=3
    hpa.maxReplicas=10` on top of phase 1's `hpa.enabled=true` gives an HPA 3..10."""
    install, scale, body = (set_values(s) for s in GUIDE_SETS[CHART][:3])
    out = render(CHART, {**install, **scale, "hpa": {**install["hpa"], **scale["hpa"]}})
    hpa = out.one("HorizontalPodAutoscaler")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (3, 10)
    assert settings_of(out, monkeypatch).instances == 3
    # Without --reuse-values the scale-up line alone: HPA off (the default), 3 replicas.
    alone = render(CHART, sets=GUIDE_SETS[CHART][1])
    assert alone.maybe("HorizontalPodAutoscaler") is None
    assert alone.one("Deployment")["spec"]["replicas"] == 3
    assert settings_of(render(CHART, body), monkeypatch).body_parsing is True


def test_body_parsing_off_is_no_body_parsing(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART, {"limits": {"enforceBodyParsing": False, "bytesPerSample": 20}})
    assert "--no-body-parsing" in out.container()["args"]
    s = settings_of(out, monkeypatch)
    assert (s.body_parsing, s.bytes_per_sample) == (False, 20)


def test_dry_run_global_and_per_tenant(monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load((CHARTS / CHART / "ci" / "dry-run-values.yaml").read_text())
    s = settings_of(render(CHART, values), monkeypatch)
    assert s.dry_run is True
    assert s.dry_run_tenants == ("tenant-a", "team.b(prod)")
    values["limits"]["dryRun"] = False
    s = settings_of(render(CHART, values), monkeypatch)
    assert (s.dry_run, s.dry_run_tenants) == (False, ("tenant-a", "team.b(prod)"))


def test_default_limits_and_tuning_reach_the_rls(monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load((CHARTS / CHART / "ci" / "production-values.yaml").read_text())
    values["limits"]["defaults"]["ingestionRate"] = 1_500_000.5
    values["limits"]["requestRateVia"] = "ratelimit"
    values.update(
        tenantHeader="X-Tenant",
        logLevel="debug",
        grpcThreads=8,
        maxMessageBytes=33554432,
        maxDecodedBytes=67108864,
        tableCapacity=100000,
        denyLogPerSecond=5,
    )
    s = settings_of(render(CHART, values), monkeypatch)
    assert s.defaults() == {
        "ingestion_rate": 1_500_000.5,
        "ingestion_burst_size": 500_000,
        "request_rate": 1.5,
        "request_burst_size": 30,
    }
    assert (s.workers, s.instances, s.request_rate_via) == (4, 3, "ratelimit")
    assert (s.tenant_header, s.log_level, s.grpc_threads) == ("X-Tenant", "debug", 8)
    assert (s.max_message_bytes, s.max_decoded_bytes) == (33554432, 67108864)
    assert (s.table_capacity, s.deny_log_per_second) == (100000, 5)
    # Big integers are not printed in Helm's float notation (1e+06).
    out = render(CHART, {"limits": {"defaults": {"ingestionBurstSize": 2_000_000}}})
    assert "--default-ingestion-burst-size=2000000" in out.container()["args"]


def test_explicit_instances_win(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART, {"limits": {"instances": 6}}, sets=["replicaCount=3"])
    assert settings_of(out, monkeypatch).instances == 6


def test_overrides_configmap_mounted_in_mimirs_namespace(monkeypatch: pytest.MonkeyPatch) -> None:
    values = yaml.safe_load((CHARTS / CHART / "ci" / "mimir-namespace-values.yaml").read_text())
    out = render(CHART, values, namespace="mimir")
    s = settings_of(out, monkeypatch)
    mounts = {m["name"]: m for m in out.container()["volumeMounts"]}
    volumes = {v["name"]: v for v in out.one("Deployment")["spec"]["template"]["spec"]["volumes"]}
    assert s.overrides == mounts["overrides"]["mountPath"]
    assert s.overrides_poll_seconds == 5
    assert volumes["overrides"]["configMap"] == {"name": "mimir-overrides", "optional": True}
    # The token comes from the existing Secret; the chart makes none.
    assert out.maybe("Secret") is None
    token = next(e for e in out.container()["env"] if e["name"] == "MIMIR_EDGE_ADMIN_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "mimir-edge-admin", "key": "admin-token"}
    # Without a ConfigMap there is no mount and no --overrides.
    assert settings_of(render(CHART), monkeypatch).overrides is None


def test_admin_token_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = render(CHART), render(CHART)
    token_a = settings_of(a, monkeypatch).admin_token
    assert token_a != settings_of(b, monkeypatch).admin_token  # generated (no cluster to look up)
    assert re.fullmatch(r"[A-Za-z0-9]{40}", token_a or "")
    secret = a.one("Secret", "mimir-rls-admin-token")
    assert set(secret["data"]) == {"token"}
    given = render(CHART, {"adminToken": {"value": "s3cret-token"}})
    assert settings_of(given, monkeypatch).admin_token == "s3cret-token"
    # A token change rolls the pods (they read it at start).
    annotations = [
        r.one("Deployment")["spec"]["template"]["metadata"]["annotations"] for r in (a, given)
    ]
    assert annotations[0]["checksum/admin-token"] != annotations[1]["checksum/admin-token"]


def test_services() -> None:
    out = render(CHART)
    main, headless = out.one("Service", "mimir-rls"), out.one("Service", "mimir-rls-headless")
    assert main["spec"]["type"] == "ClusterIP"
    assert headless["spec"]["clusterIP"] == "None"
    for svc in (main, headless):
        assert {p["name"]: p["port"] for p in svc["spec"]["ports"]} == {"grpc": 8081, "http": 9090}
        # Envoy resolves the headless one: a pod not ready (waiting for limits) is not listed.
        assert "publishNotReadyAddresses" not in svc["spec"]
    assert {s["metadata"]["name"] for s in out.all("Service")} == {
        "mimir-rls",
        "mimir-rls-headless",
        "mimir-rls-sync",
    }


def test_sync_service_lists_starting_pods() -> None:
    """overrides-sync pushes through it, so a new pod gets the limits before it is ready."""
    svc = render(CHART).one("Service", "mimir-rls-sync")
    assert svc["spec"]["clusterIP"] == "None"
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert svc["spec"]["ports"] == [
        {"name": "http", "port": 9090, "targetPort": "http", "protocol": "TCP"}
    ]
    # Not scraped: the ServiceMonitor goes through the main Service only.
    assert svc["metadata"]["labels"]["prometheus.io/service-monitor"] == "false"


def test_pods_wait_for_limits_exactly_when_overrides_sync_feeds_them(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    synced = settings_of(render(CHART), monkeypatch)
    assert (synced.wait_for_limits, synced.wait_for_limits_timeout_seconds) == (True, 0)
    assert synced.overrides is None
    mounted = settings_of(
        render(CHART, {"overrides": {"configMap": "mimir-overrides"}}), monkeypatch
    )
    assert (mounted.wait_for_limits, mounted.overrides) == (False, "/etc/mimir-edge/overrides")
    timed = render(CHART, sets=["overrides.waitForSync.timeoutSeconds=120"])
    assert settings_of(timed, monkeypatch).wait_for_limits_timeout_seconds == 120
    off = render(CHART, sets=["overrides.waitForSync.enabled=false"])
    assert settings_of(off, monkeypatch).wait_for_limits is False


def test_service_monitor_job_is_what_the_alerts_select() -> None:
    out = render(CHART, sets=["serviceMonitor.enabled=true"], release="edge-rls")
    sm = out.one("ServiceMonitor")
    (endpoint,) = sm["spec"]["endpoints"]
    assert (endpoint["port"], endpoint["path"]) == ("http", "/metrics")
    (relabel,) = endpoint["relabelings"]
    assert relabel == {"action": "replace", "targetLabel": "job", "replacement": "mimir-rls"}
    alerts = (ROOT / "monitoring" / "alerts.yaml").read_text()
    jobs = set(re.findall(r'job="([^"]+)"', alerts))
    assert jobs <= {"mimir-rls", "mimir-envoy"}, jobs


def test_network_policy_admits_the_envoy_and_sync_pods() -> None:
    values = yaml.safe_load((CHARTS / CHART / "ci" / "production-values.yaml").read_text())
    policy = render(CHART, values).one("NetworkPolicy")["spec"]
    grpc, http = policy["ingress"]
    assert grpc["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert http["ports"] == [{"port": "http", "protocol": "TCP"}]
    envoy_pod = render("envoy").one("Deployment")["spec"]["template"]["metadata"]
    sync_pod = render("overrides-sync").one("Deployment")["spec"]["template"]["metadata"]
    rls_pod = render(CHART).one("Deployment")["spec"]["template"]["metadata"]

    def admitted(peers: list[dict[str, Any]], pod: dict[str, Any]) -> bool:
        return any(
            "podSelector" in p and "namespaceSelector" not in p and selects(p["podSelector"], pod)
            for p in peers
        )

    assert admitted(grpc["from"], envoy_pod)
    assert not admitted(grpc["from"], sync_pod)
    assert not admitted(grpc["from"], rls_pod)
    assert admitted(http["from"], sync_pod)


# -- monitoring files: the chart renders with and without them ---------------------------------


@pytest.fixture
def chart_copy(tmp_path: Path) -> Path:
    """The chart with its own files/ (the real one links to monitoring/)."""
    dest = tmp_path / CHART
    shutil.copytree(CHARTS / CHART, dest, symlinks=False, ignore=shutil.ignore_patterns("files"))
    return dest


def test_monitoring_objects_are_skipped_without_their_files(chart_copy: Path) -> None:
    out = render(
        CHART,
        {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}},
        chart_dir=chart_copy,
    )
    assert out.maybe("PrometheusRule") is None
    assert out.maybe("ConfigMap") is None


def test_monitoring_objects_carry_the_files(chart_copy: Path) -> None:
    files = chart_copy / "files"
    (files / "dashboards").mkdir(parents=True)
    rules = {
        "groups": [{"name": "g", "rules": [{"alert": "A", "expr": 'up{job="mimir-rls"} == 0'}]}]
    }
    (files / "alerts.yaml").write_text(
        "# {{ $labels.instance }} stays a Prometheus template\n" + yaml.safe_dump(rules)
    )
    dashboards = {"edge-overview": {"title": "Edge", "panels": [{"expr": "{{ not helm }}"}]}}
    for name, doc in dashboards.items():
        (files / "dashboards" / f"{name}.json").write_text(json.dumps(doc, indent=2))
    out = render(
        CHART,
        {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}},
        chart_dir=chart_copy,
    )
    assert out.one("PrometheusRule")["spec"] == rules
    (cm,) = out.all("ConfigMap")
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(cm["data"]["edge-overview.json"]) == dashboards["edge-overview"]
    off = render(CHART, chart_dir=chart_copy)
    assert off.maybe("PrometheusRule") is None
    assert off.maybe("ConfigMap") is None


def test_the_shipped_monitoring_files() -> None:
    """The real files/ (links to monitoring/), when the other half of the repo has them."""
    alerts = CHARTS / CHART / "files" / "alerts.yaml"
    dashboards = sorted((CHARTS / CHART / "files" / "dashboards").glob("*.json"))
    if not alerts.is_file() and not dashboards:
        pytest.skip("monitoring files not there")
    out = render(CHART, {"prometheusRule": {"enabled": True}, "dashboards": {"enabled": True}})
    if alerts.is_file():
        assert (
            out.one("PrometheusRule")["spec"]["groups"]
            == yaml.safe_load(alerts.read_text())["groups"]
        )
    by_file = {
        key: json.loads(text) for cm in out.all("ConfigMap") for key, text in cm["data"].items()
    }
    assert by_file == {p.name: json.loads(p.read_text()) for p in dashboards}


def test_shm_volume_holds_the_tenant_table(tmp_path: Path) -> None:
    """The table the RLS creates for the chart's tableCapacity, twice over (a container
    killed with SIGKILL leaves its table behind in the pod's /dev/shm)."""
    from mimir_edge._native import Engine

    values = yaml.safe_load((CHARTS / CHART / "values.yaml").read_text())
    Engine(str(tmp_path / "table"), create=True, capacity=values["tableCapacity"])
    size = (tmp_path / "table").stat().st_size
    limit = values["shm"]["sizeLimit"]
    assert limit.endswith("Mi")
    assert 2 * size <= int(limit.removesuffix("Mi")) << 20
