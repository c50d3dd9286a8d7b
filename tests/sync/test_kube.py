"""The ConfigMap source and the EndpointSlice targets against the stand-in API server."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from mimir_edge.sync import kube
from mimir_edge.sync.base import Snapshot, Source, TargetSource
from tests.sync.k8s_standin import StandinApiServer, endpoint_slice, endpoints_subset

NS = "mimir"
CM = "mimir-overrides"
WAIT = 5.0  # generous bound for anything that should happen "at once" on loopback


@pytest.fixture
def standin() -> Iterator[StandinApiServer]:
    with StandinApiServer() as server:
        yield server


def wait_until(pred: Callable[[], bool], timeout: float = WAIT) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return pred()


class Recorder:
    """The ``emit`` callback: keeps every snapshot, lets a test wait for one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.snapshots: list[Snapshot] = []

    def __call__(self, snapshot: Snapshot) -> None:
        with self._cond:
            self.snapshots.append(snapshot)
            self._cond.notify_all()

    def wait_for(self, pred: Callable[[Snapshot], bool], timeout: float = WAIT) -> Snapshot:
        with self._cond:
            found: list[Snapshot] = []

            def seen() -> bool:
                found[:] = [s for s in self.snapshots if pred(s)]
                return bool(found)

            assert self._cond.wait_for(seen, timeout), f"not emitted; got {self.snapshots}"
            return found[0]

    def wait_data(self, data: dict[str, str] | None, timeout: float = WAIT) -> Snapshot:
        return self.wait_for(lambda s: s.data == data, timeout)

    def datas(self) -> list[dict[str, str] | None]:
        with self._cond:
            return [None if s.data is None else dict(s.data) for s in self.snapshots]


@contextmanager
def running(source: Source, emit: Recorder) -> Iterator[threading.Event]:
    """Run ``source`` in a thread; on exit stop it and check that it stopped promptly."""
    stop = threading.Event()
    t = threading.Thread(target=source.run, args=(emit, stop), daemon=True)
    t.start()
    try:
        yield stop
    finally:
        stop.set()
        t.join(timeout=2)
        assert not t.is_alive(), "source did not stop within 2 s"


def source_for(
    standin: StandinApiServer,
    *,
    watch_timeout_seconds: int = 5,
    backoff_initial: float = 0.5,
    backoff_max: float = 30.0,
) -> kube.ConfigMapSource:
    return kube.configmap_source(
        NS,
        CM,
        api_client=standin.api_client(),
        watch_timeout_seconds=watch_timeout_seconds,
        backoff_initial=backoff_initial,
        backoff_max=backoff_max,
    )


# -- ConfigMap source --------------------------------------------------------------------------


def test_initial_list_emits_current_state(standin: StandinApiServer) -> None:
    rv = standin.put_configmap(NS, CM, {"overrides.yaml": "a: 1"})
    standin.put_configmap(NS, "other", {"x": "y"})  # filtered out by the field selector
    rec = Recorder()
    source: Source = source_for(standin)  # conforms to the interface
    with running(source, rec):
        rec.wait_data({"overrides.yaml": "a: 1"})
        assert wait_until(lambda: standin.open_watches() == 1)
    assert rec.snapshots == [Snapshot({"overrides.yaml": "a: 1"}, rv)]


def test_absent_configmap_is_none_then_added(standin: StandinApiServer) -> None:
    rec = Recorder()
    with running(source_for(standin), rec):
        first = rec.wait_for(lambda s: True)
        assert first.data is None
        assert wait_until(lambda: standin.open_watches() == 1)
        rv = standin.put_configmap(NS, CM, {"k": "v"})
        assert rec.wait_data({"k": "v"}) == Snapshot({"k": "v"}, rv)


def test_modified_deleted_recreated(standin: StandinApiServer) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        rv2 = standin.put_configmap(NS, CM, {"k": "2"})
        assert rec.wait_data({"k": "2"}).version == rv2
        rv_del = standin.delete_configmap(NS, CM)
        assert rec.wait_data(None) == Snapshot(None, rv_del)
        standin.put_configmap(NS, "other", {"x": "y"})  # another name: no event
        rv3 = standin.put_configmap(NS, CM, {"k": "3"})
        assert rec.wait_data({"k": "3"}).version == rv3
    assert rec.datas() == [{"k": "1"}, {"k": "2"}, None, {"k": "3"}]
    assert standin.stats["configmap_list"] == 1  # one list, then the watch carried everything


@pytest.mark.parametrize("how", ["http", "event", "midstream"])
def test_gone_relists_and_loses_no_change(standin: StandinApiServer, how: str) -> None:
    """410 Gone (as an HTTP 410, an ERROR event, or an ERROR on the open stream) → re-list.

    The change is made while the source's version is compacted away and no watch can deliver
    it, so only the re-list can find it.
    """
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        with standin.hold():  # the source's next list or watch waits for the block to end
            if how == "midstream":
                assert standin.expire_open_watches() == 1
            else:
                standin.gone_mode = "http" if how == "http" else "event"
                assert standin.drop_watches() == 1
            standin.put_configmap(NS, CM, {"k": "2"})
            standin.compact()
        assert rec.wait_data({"k": "2"})
        assert standin.stats["gone"] >= 1
        assert standin.stats["configmap_list"] == 2
        # ...and the watch goes on from the new list.
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.put_configmap(NS, CM, {"k": "3"})
        rec.wait_data({"k": "3"})
    assert rec.datas() == [{"k": "1"}, {"k": "2"}, {"k": "3"}]


@pytest.mark.parametrize("mode", ["http", "event"])
def test_forced_gone_relists_without_duplicate(standin: StandinApiServer, mode: str) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin, backoff_initial=0.05), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.force_gone_next_watch("http" if mode == "http" else "event")
        standin.drop_watches()
        assert wait_until(lambda: standin.stats["configmap_list"] == 2)
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.put_configmap(NS, CM, {"k": "2"})
        rec.wait_data({"k": "2"})
    assert standin.stats["gone"] == 1
    # The re-list found what had been emitted already: not emitted twice.
    assert rec.datas() == [{"k": "1"}, {"k": "2"}]


def test_dropped_connection_resumes_from_last_version(standin: StandinApiServer) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin, backoff_initial=0.05), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        assert standin.drop_watches() == 1
        standin.put_configmap(NS, CM, {"k": "2"})  # likely before the source reconnects
        rec.wait_data({"k": "2"})
        assert wait_until(lambda: standin.open_watches() == 1)
        assert standin.drop_watches() == 1
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.put_configmap(NS, CM, {"k": "3"})  # after the reconnect
        rec.wait_data({"k": "3"})
    assert rec.datas() == [{"k": "1"}, {"k": "2"}, {"k": "3"}]
    assert standin.stats["configmap_list"] == 1  # resumed from its version: no re-list
    assert standin.stats["configmap_watch"] >= 3


def test_recovers_after_api_server_outage(standin: StandinApiServer) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin, backoff_initial=0.05, backoff_max=0.4), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.stop()  # down: connections cut, new ones refused
        standin.put_configmap(NS, CM, {"k": "2"})  # the store outlives the outage
        time.sleep(1.0)  # several failed attempts, the backoff reaching its bound
        watches_while_down = standin.stats["configmap_watch"]
        standin.start()
        t0 = time.monotonic()
        rec.wait_data({"k": "2"}, timeout=3.0)
        # Capped at 0.4 s: back within about one backoff period.
        assert time.monotonic() - t0 < 2.0
    assert standin.stats["configmap_watch"] > watches_while_down
    assert rec.datas() == [{"k": "1"}, {"k": "2"}]


def test_bookmark_moves_the_version_on(standin: StandinApiServer) -> None:
    """A BOOKMARK at the end of a quiet watch lets the next one start past later compactions."""
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    with running(source_for(standin, watch_timeout_seconds=1), rec):
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.put_configmap(NS, "unrelated", {"x": "1"})  # moves the store's version only
        first = standin.stats["configmap_watch"]
        assert wait_until(lambda: standin.stats["configmap_watch"] > first, timeout=3)
        standin.compact()  # the ConfigMap's own version is now too old to watch from
        second = standin.stats["configmap_watch"]
        assert wait_until(lambda: standin.stats["configmap_watch"] > second, timeout=3)
    assert standin.stats["gone"] == 0
    assert standin.stats["configmap_list"] == 1


def test_emit_failure_is_redelivered(standin: StandinApiServer) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    failed = threading.Event()

    def flaky(snapshot: Snapshot) -> None:
        if snapshot.data == {"k": "2"} and not failed.is_set():
            failed.set()
            raise RuntimeError("controller hiccup")
        rec(snapshot)

    src = source_for(standin, backoff_initial=0.05)
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(flaky, stop), daemon=True)
    t.start()
    try:
        rec.wait_data({"k": "1"})
        assert wait_until(lambda: standin.open_watches() == 1)
        standin.put_configmap(NS, CM, {"k": "2"})
        rec.wait_data({"k": "2"})
        assert failed.is_set()
    finally:
        stop.set()
        t.join(2)
    assert rec.datas() == [{"k": "1"}, {"k": "2"}]


def test_stop_is_prompt_during_a_long_watch(standin: StandinApiServer) -> None:
    standin.put_configmap(NS, CM, {"k": "1"})
    rec = Recorder()
    src = source_for(standin, watch_timeout_seconds=30)
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(rec, stop), daemon=True)
    t.start()
    rec.wait_data({"k": "1"})
    assert wait_until(lambda: standin.open_watches() == 1)
    t0 = time.monotonic()
    stop.set()
    t.join(2)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 1.0


def test_stop_is_prompt_while_backing_off(standin: StandinApiServer) -> None:
    standin.stop()
    src = source_for(standin, backoff_initial=5.0, backoff_max=5.0)
    stop = threading.Event()
    t = threading.Thread(target=src.run, args=(Recorder(), stop), daemon=True)
    t.start()
    time.sleep(0.3)  # the first list has failed; it is waiting out the backoff
    t0 = time.monotonic()
    stop.set()
    t.join(2)
    assert not t.is_alive()
    assert time.monotonic() - t0 < 1.0


def test_backoff_doubles_to_its_bound_with_jitter_and_resets() -> None:
    top = kube.Backoff(rng=lambda: 1.0)  # the upper end of each jitter range
    assert [top.next_delay() for _ in range(9)] == [0.5, 1, 2, 4, 8, 16, 30, 30, 30]
    top.reset()
    assert top.next_delay() == 0.5
    low = kube.Backoff(rng=lambda: 0.0)  # the lower end: half
    assert [low.next_delay() for _ in range(3)] == [0.25, 0.5, 1]
    real = kube.Backoff()
    delays = [real.next_delay() for _ in range(40)]
    assert all(0.25 <= d <= 30 for d in delays)
    assert len(set(delays)) > 1  # jittered
    with pytest.raises(ValueError, match="initial"):
        kube.Backoff(0, 1)


# -- credentials -------------------------------------------------------------------------------


def test_falls_back_to_kubeconfig_outside_a_cluster(
    standin: StandinApiServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(
        f"""apiVersion: v1
kind: Config
clusters: [{{name: standin, cluster: {{server: "{standin.url}"}}}}]
users: [{{name: me, user: {{token: abc}}}}]
contexts: [{{name: here, context: {{cluster: standin, user: me, namespace: {NS}}}}}]
current-context: here
"""
    )
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig)
    )
    standin.put_configmap(NS, CM, {"k": "v"})
    src = kube.configmap_source(NS, CM)
    rec = Recorder()
    try:
        with running(src, rec):
            rec.wait_data({"k": "v"})
    finally:
        src.close()


def test_no_credentials_is_a_clear_value_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_PORT", raising=False)
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", str(tmp_path / "missing")
    )
    with pytest.raises(kube.KubeConfigError, match="no Kubernetes credentials"):
        kube.configmap_source(NS, CM)
    assert issubclass(kube.KubeConfigError, ValueError)  # overrides-sync exits 2 on it


# -- targets ---------------------------------------------------------------------------------


def test_endpoint_slices_ready_addresses_named_port(standin: StandinApiServer) -> None:
    ports = [("http", 8080), ("grpc", 8081)]
    standin.set_endpoint_slices(
        NS,
        "rls",
        [
            endpoint_slice(
                "rls-a", [("10.0.0.1", True), ("10.0.0.2", False), ("10.0.0.3", None)], ports
            ),
            endpoint_slice("rls-b", [("10.0.0.4", True)], list(reversed(ports))),
        ],
    )
    standin.set_endpoint_slices(NS, "other", [endpoint_slice("o", [("10.9.9.9", True)], ports)])
    targets: TargetSource = kube.endpoints_targets(
        NS, "rls", "http", api_client=standin.api_client()
    )
    ready = ["10.0.0.1", "10.0.0.3", "10.0.0.4"]  # unset condition counts as ready
    assert targets.targets() == [f"http://{ip}:8080" for ip in ready]
    grpc = kube.endpoints_targets(NS, "rls", "grpc", api_client=standin.api_client())
    assert grpc.targets() == [f"http://{ip}:8081" for ip in ready]
    # Without a name: each slice's first port (one-port Services are the usual case).
    unnamed = kube.endpoints_targets(NS, "rls", api_client=standin.api_client())
    assert unnamed.targets() == [
        "http://10.0.0.1:8080",
        "http://10.0.0.3:8080",
        "http://10.0.0.4:8081",
    ]
    absent = kube.endpoints_targets(NS, "rls", "admin", api_client=standin.api_client())
    assert absent.targets() == []
    assert kube.endpoints_targets(NS, "nope", api_client=standin.api_client()).targets() == []
    # Called again (each push round): reads the current state.
    standin.set_endpoint_slices(NS, "rls", [endpoint_slice("rls-a", [("10.0.0.5", True)], ports)])
    assert targets.targets() == ["http://10.0.0.5:8080"]
    assert standin.stats["endpointslices_404"] == 0


def test_endpoint_slices_leave_out_terminating_pods(standin: StandinApiServer) -> None:
    """Behind a Service with publishNotReadyAddresses (the RLS chart's -sync Service) a pod
    being replaced is still listed as ready, but terminating: it is not a target, and not
    counted in the replica count each RLS divides its limits by."""
    slice_ = endpoint_slice("rls-a", [("10.0.0.1", True), ("10.0.0.2", True)], [("http", 9090)])
    slice_["endpoints"][1]["conditions"]["terminating"] = True
    standin.set_endpoint_slices(NS, "rls-sync", [slice_])
    targets = kube.endpoints_targets(NS, "rls-sync", "http", api_client=standin.api_client())
    assert targets.targets() == ["http://10.0.0.1:9090"]


def test_endpoint_slices_one_address_family(standin: StandinApiServer) -> None:
    ports: list[tuple[str | None, int]] = [(None, 9090)]
    v6 = endpoint_slice("rls-v6", [("fd00::1", True)], ports, address_type="IPv6")
    v4 = endpoint_slice("rls-v4", [("10.0.0.1", True)], ports)
    api = standin.api_client()
    standin.set_endpoint_slices(NS, "rls", [v6])
    assert kube.endpoints_targets(NS, "rls", api_client=api).targets() == ["http://[fd00::1]:9090"]
    # Dual-stack: each pod is in one slice per family; push to it once, over IPv4.
    standin.set_endpoint_slices(NS, "rls", [v6, v4])
    assert kube.endpoints_targets(NS, "rls", api_client=api).targets() == ["http://10.0.0.1:9090"]


def test_falls_back_to_endpoints_without_endpoint_slices(standin: StandinApiServer) -> None:
    standin.endpoint_slices_available = False
    standin.set_endpoints(
        NS,
        "rls",
        [
            endpoints_subset(["10.0.0.1", "10.0.0.2"], ["10.0.0.3"], [("http", 8080), ("x", 1)]),
            endpoints_subset(["10.0.0.4"], [], [("grpc", 8081)]),  # no "http" port here
        ],
    )
    targets = kube.endpoints_targets(NS, "rls", "http", api_client=standin.api_client())
    assert targets.targets() == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    assert standin.stats["endpointslices_404"] == 1
    assert standin.stats["get_endpoints"] == 1
    missing = kube.endpoints_targets(NS, "nope", api_client=standin.api_client())
    assert missing.targets() == []  # no Endpoints object: no replicas


def test_targets_errors_propagate(standin: StandinApiServer) -> None:
    """The controller logs a failed listing and retries next round; it must not see []."""
    targets = kube.endpoints_targets(NS, "rls", api_client=standin.api_client())
    standin.stop()
    with pytest.raises((ApiException, HTTPError)):
        targets.targets()
