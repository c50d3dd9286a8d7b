"""The overrides-sync chart: its flags, as `mimir-edge overrides-sync` parses them, and its RBAC,
checked against every request the sync's Kubernetes code actually makes.

The requests go to the stand-in API server of tests/sync (a real kube-apiserver cannot run
here); each is turned into the attributes the apiserver's RBAC authorizer sees (verb, group,
resource, namespace, name, with a list/watch's `fieldSelector=metadata.name=X` giving the name,
as in k8s.io/apiserver's RequestInfo) and authorized against the rendered Roles.
"""

from __future__ import annotations

import argparse
import base64
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from mimir_edge.sync import cli as sync_cli
from mimir_edge.sync import kube, leader
from mimir_edge.sync.base import Snapshot
from tests.charts.helm_render import GUIDE_SETS, NAMESPACE, Rendered, render
from tests.sync.k8s_standin import StandinApiServer, endpoint_slice, endpoints_subset

CHART = "overrides-sync"
GUIDE = GUIDE_SETS[CHART][0]  # image.tag, mimir.namespace=mimir, mimir.overridesConfigMap


def parse(out: Rendered, monkeypatch: pytest.MonkeyPatch) -> argparse.Namespace:
    """The pod's command line and environment through `mimir-edge overrides-sync`'s parser."""
    for name in [k for k in os.environ if k.startswith("MIMIR_EDGE_")]:
        monkeypatch.delenv(name)
    for e in out.container().get("env", []):
        if "value" in e:
            monkeypatch.setenv(e["name"], e["value"])
        elif e["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.name":
            monkeypatch.setenv(e["name"], "overrides-sync-7d9f-abcde")  # the downward API
    parser = argparse.ArgumentParser(prog="mimir-edge", allow_abbrev=False)
    sync_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["overrides-sync", *out.container()["args"]])


def test_flags_follow_the_guide(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART, sets=GUIDE)
    args = parse(out, monkeypatch)
    assert (args.source, args.namespace, args.configmap) == (
        "kubernetes",
        "mimir",
        "mimir-overrides",
    )
    assert args.key is None
    # Targets: the mimir-rls chart's replicas, found through its Service's EndpointSlices.
    assert (args.targets, args.targets_dns) == (None, None)
    assert args.targets_endpoints == "mimir-rls-sync"
    assert args.targets_namespace == NAMESPACE
    assert args.targets_endpoints_port == "http"
    # Two replicas, one pushing: the Lease is in this namespace (the flag's default would be
    # Mimir's, where the chart grants nothing).
    assert out.one("Deployment")["spec"]["replicas"] == 2
    assert args.leader_elect is True
    assert args.leader_elect_lease_namespace == NAMESPACE
    assert args.leader_elect_lease_name == "overrides-sync"
    assert args.leader_elect_identity == "overrides-sync-7d9f-abcde"
    assert (args.push_interval_seconds, args.push_timeout_seconds) == (10.0, 5.0)
    assert args.http_listen == "0.0.0.0:9091"
    assert args.admin_token is None


def test_admin_token_is_the_rls_charts_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    out = render(CHART, sets=GUIDE)
    args = parse(out, monkeypatch)
    pod = out.one("Deployment")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    (mount,) = [m for m in out.container()["volumeMounts"] if m["name"] == "admin-token"]
    secret_volume = volumes["admin-token"]["secret"]
    (item,) = secret_volume["items"]
    assert args.admin_token_file == f"{mount['mountPath']}/{item['path']}"
    rls_secret = render("mimir-rls").one("Secret")
    assert secret_volume["secretName"] == rls_secret["metadata"]["name"]
    assert item["key"] in rls_secret["data"]
    assert base64.b64decode(rls_secret["data"][item["key"]])


def test_targets_are_the_rls_charts_replicas(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse(render(CHART, sets=GUIDE), monkeypatch)
    rls = render("mimir-rls")
    svc = rls.one("Service", args.targets_endpoints)
    assert args.targets_endpoints_port in {p["name"] for p in svc["spec"]["ports"]}
    (http,) = [p for p in svc["spec"]["ports"] if p["name"] == args.targets_endpoints_port]
    assert http["targetPort"] == "http"  # the admin API's port
    # Starting pods are listed too: they wait for the first push before turning ready.
    assert svc["spec"]["publishNotReadyAddresses"] is True
    assert "--wait-for-limits" in rls.container()["args"]
    # Envoy's Service is another one: it lists ready pods only.
    assert args.targets_endpoints != "mimir-rls-headless"
    assert "publishNotReadyAddresses" not in rls.one("Service", "mimir-rls-headless")["spec"]


def test_defaults_and_other_values_reach_the_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    values = {
        "mimir": {"namespace": "metrics", "overridesConfigMap": "runtime", "key": "runtime.yaml"},
        "defaults": {"ingestionRate": 25000, "ingestionBurstSize": 3_000_000, "requestRate": 2.5},
        "pushIntervalSeconds": 15,
        "pushTimeoutSeconds": 2.5,
        "logLevel": "debug",
        "ports": {"http": 19091},
        "leaderElection": {"leaseName": "edge-sync"},
    }
    args = parse(render(CHART, values), monkeypatch)
    assert (args.namespace, args.configmap, args.key) == ("metrics", "runtime", "runtime.yaml")
    assert (args.default_ingestion_rate, args.default_ingestion_burst_size) == (25000.0, 3_000_000)
    assert (args.default_request_rate, args.default_request_burst_size) == (2.5, None)
    assert (args.push_interval_seconds, args.push_timeout_seconds) == (15.0, 2.5)
    assert (args.log_level, args.http_listen) == ("debug", "0.0.0.0:19091")
    assert args.leader_elect_lease_name == "edge-sync"


def test_probes() -> None:
    c = render(CHART).container()
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}


# -- RBAC --------------------------------------------------------------------------------------


def rules_by_namespace(out: Rendered) -> dict[str, list[dict[str, Any]]]:
    assert not out.all("ClusterRole")
    assert not out.all("ClusterRoleBinding")
    rules: dict[str, list[dict[str, Any]]] = {}
    for role in out.all("Role"):
        rules.setdefault(role["metadata"]["namespace"], []).extend(role["rules"])
    return rules


def test_rbac_is_exactly_the_overrides_configmap_leases_and_endpoints() -> None:
    rules = rules_by_namespace(render(CHART, sets=GUIDE))
    assert rules["mimir"] == [
        {
            "apiGroups": [""],
            "resources": ["configmaps"],
            "resourceNames": ["mimir-overrides"],
            "verbs": ["get", "list", "watch"],
        }
    ]
    assert rules[NAMESPACE] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["overrides-sync"],
            "verbs": ["get", "update"],
        },
        {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list"]},
        {
            "apiGroups": [""],
            "resources": ["endpoints"],
            "resourceNames": ["mimir-rls-sync"],
            "verbs": ["get"],
        },
    ]
    single = rules_by_namespace(render(CHART, {"leaderElection": {"enabled": False}}))
    assert not [r for r in single[NAMESPACE] if r["resources"] == ["leases"]]
    assert len(render(CHART, {"rbac": {"create": False}}).all("Role")) == 0


@dataclass(frozen=True)
class Attributes:
    """What the RBAC authorizer sees of one request."""

    verb: str
    group: str
    resource: str
    namespace: str
    name: str

    @classmethod
    def of(cls, method: str, parts: list[str], query: dict[str, str]) -> Attributes:
        group = "" if parts[0] == "api" else parts[1]
        rest = parts[2:] if parts[0] == "api" else parts[3:]
        assert rest[0] == "namespaces", parts
        namespace, resource, name = rest[1], rest[2], (rest[3] if len(rest) > 3 else "")
        if method == "POST":
            verb = "create"
        elif method == "PUT":
            verb = "update"
        elif name:
            verb = "get"
        else:
            verb = "watch" if query.get("watch") in ("true", "1") else "list"
            selector = query.get("fieldSelector", "")
            if selector.startswith("metadata.name=") and "," not in selector:
                name = selector.removeprefix("metadata.name=")
        return cls(verb, group, resource, namespace, name)


def allowing_rule(rules: list[dict[str, Any]], a: Attributes) -> int | None:
    """Index of the first rule that allows ``a`` (RBAC's PolicyRule matching)."""
    for i, r in enumerate(rules):
        if (
            a.verb in r["verbs"]
            and a.group in r["apiGroups"]
            and a.resource in r["resources"]
            and (not r.get("resourceNames") or a.name in r["resourceNames"])
        ):
            return i
    return None


@pytest.fixture
def recorded() -> Iterator[tuple[StandinApiServer, list[Attributes]]]:
    seen: list[Attributes] = []
    with StandinApiServer() as server:
        route = server._route

        def recording(h: Any, method: str, parts: list[str], q: dict[str, str], body: Any) -> None:
            seen.append(Attributes.of(method, parts, q))
            route(h, method, parts, q, body)

        server._route = recording  # type: ignore[method-assign]
        yield server, seen


def run_the_sync_calls(server: StandinApiServer, args: argparse.Namespace) -> None:
    """The sync's Kubernetes code with the chart's arguments: read the ConfigMap until its
    data arrives, list the replicas, take the Lease and give it back."""
    client = server.api_client()
    server.put_configmap(args.namespace, args.configmap, {"runtime.yaml": "overrides: {}\n"})
    server.set_endpoint_slices(
        args.targets_namespace,
        args.targets_endpoints,
        [endpoint_slice("rls-1", [("10.0.0.5", True)], [("http", 9090), ("grpc", 8081)])],
    )
    server.set_endpoints(
        args.targets_namespace,
        args.targets_endpoints,
        [endpoints_subset(["10.0.0.5"], [], [("http", 9090)])],
    )
    got = threading.Event()

    def emit(snapshot: Snapshot) -> None:
        if snapshot.data:
            got.set()

    source = kube.configmap_source(
        args.namespace, args.configmap, api_client=client, watch_timeout_seconds=1
    )
    stop = threading.Event()
    thread = threading.Thread(target=source.run, args=(emit, stop), daemon=True)
    thread.start()
    try:
        assert got.wait(5), "the ConfigMap never arrived"
        # Let the watch that follows the list go out.
        threading.Event().wait(0.3)
    finally:
        stop.set()
        thread.join(timeout=5)
    targets = kube.endpoints_targets(
        args.targets_namespace,
        args.targets_endpoints,
        args.targets_endpoints_port,
        api_client=client,
    )
    assert targets.targets() == ["http://10.0.0.5:9090"]
    server.endpoint_slices_available = False  # a cluster without discovery.k8s.io/v1
    assert targets.targets() == ["http://10.0.0.5:9090"]
    lease = leader.lease_leadership(
        args.leader_elect_lease_namespace,
        args.leader_elect_lease_name,
        "pod-a",
        api_client=client,
    )
    try:
        for _ in range(200):
            if lease.is_leader():
                break
            threading.Event().wait(0.025)
        assert lease.is_leader()
    finally:
        lease.stop()


def test_every_request_of_the_sync_is_allowed_and_every_rule_is_used(
    recorded: tuple[StandinApiServer, list[Attributes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    server, seen = recorded
    out = render(CHART, sets=GUIDE)
    args = parse(out, monkeypatch)
    run_the_sync_calls(server, args)
    rules = rules_by_namespace(out)
    used: set[tuple[str, int]] = set()
    denied = []
    verbs = {a.verb for a in seen}
    assert {"list", "watch", "get", "create", "update"} <= verbs, seen
    for a in seen:
        index = allowing_rule(rules.get(a.namespace, []), a)
        if index is None:
            denied.append(a)
        else:
            used.add((a.namespace, index))
    assert denied == []
    # The ConfigMap is read with its name as a field selector: that is what lets a rule
    # limited to resourceNames allow the list and the watch.
    for a in seen:
        if a.resource == "configmaps":
            assert a.name == "mimir-overrides"
    unused = [(ns, r) for ns, rs in rules.items() for i, r in enumerate(rs) if (ns, i) not in used]
    assert unused == []
