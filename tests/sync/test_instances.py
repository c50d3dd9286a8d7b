"""The replica count the sync sends with the set: each RLS replica enforces 1/count of every
rate, count = the replicas found this round, as each Mimir distributor divides a tenant's rate
by the healthy distributors in its ring.

End to end: real ``mimir-edge rls`` processes found through the RLS Service's EndpointSlices
(served by the stand-in Kubernetes API server, see tests/sync/k8s_standin.py), scaled 2 -> 3
-> 2; what each replica enforces is read from the Retry-After of its 429s (the seconds a push
waits for tokens at the replica's rate). Then the controller against recording replicas
(tests/sync/test_controller.py's FakeRls): when a count is sent, and when it is not.
Everything listens on 127.0.0.1; every process and server is stopped by its ``with``.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mimir_edge.limits import LimitSet
from mimir_edge.rls.http_api import INSTANCES_HEADER
from mimir_edge.sync import kube
from mimir_edge.sync.controller import Controller
from mimir_edge.sync.file_source import FileSource
from mimir_edge.sync.metrics import SyncMetrics
from mimir_edge.sync.targets import DnsTargets, Pusher, StaticTargets
from tests.e2e.harness import free_port
from tests.e2e.rls_process import RlsProcess
from tests.rls.test_service import check
from tests.sync.k8s_standin import StandinApiServer, endpoint_slice
from tests.sync.test_controller import TOKEN as FAKE_TOKEN
from tests.sync.test_controller import (
    FakeRls,
    ManualSource,
    parser,
    running,
    runtime,
    wait_until,
)

TOKEN = "sync-t0ken"
NS = "mimir-edge"
SERVICE = "mimir-rls"
INTERVAL = 0.5
#: Every tenant: 2 items/s in all, a burst of 100 (one push of the test body, 100 samples).
RATE, BURST = 2.0, 100
DEFAULTS = {"ingestion_rate": RATE, "ingestion_burst_size": BURST}


def held_count(rls: RlsProcess) -> int:
    """The count ``rls`` enforces, as its admin API reports it."""
    with urllib.request.urlopen(rls.http_url + "/api/v1/limits", timeout=5) as r:
        r.read()
        return int(r.headers[INSTANCES_HEADER])


class Tenants:
    """A fresh tenant name for every probe, so each starts with a full bucket."""

    def __init__(self) -> None:
        self.n = 0

    def fresh(self) -> str:
        self.n += 1
        return f"probe-{self.n}"


def assert_share(rls: RlsProcess, count: int, tenants: Tenants) -> None:
    """``rls`` enforces RATE / count: a fresh tenant's first push (BURST items) passes, its
    second waits BURST / (RATE / count) seconds for the tokens (a little less if the machine
    was slow between the two). The burst itself is the tenant's whole burst, as in Mimir."""
    for _ in range(3):  # new connections: whichever worker takes them
        tenant = tenants.fresh()
        assert check(rls, tenant).status.code == 0
        denied = check(rls, tenant)
        assert denied.denied_response.status.code == 429
        retry_after = {h.header.key: h.header.value for h in denied.denied_response.headers}
        wait = BURST / (RATE / count)
        assert wait - 3 <= int(retry_after["retry-after"]) <= wait, (count, retry_after)


def settle() -> None:
    """Let every worker follow the last publication (each checks every 0.2 s); the admin API
    answers for the latest at once, but a Check may reach a worker that has not looked yet."""
    time.sleep(0.6)


def slice_of(rls: RlsProcess, ready: bool = True) -> dict[str, Any]:
    """One EndpointSlice per replica: all on 127.0.0.1, so each has its own port."""
    return endpoint_slice(
        f"{SERVICE}-{rls.http_port}", [("127.0.0.1", ready)], [("http", rls.http_port)]
    )


def loaded_lines(rls: RlsProcess) -> int:
    """Publications its second worker followed (the PUT's own worker applies silently)."""
    return rls.log().count('"limits loaded"')


@pytest.fixture
def standin() -> Iterator[StandinApiServer]:
    with StandinApiServer() as server:
        yield server


def test_each_replica_enforces_its_share_as_the_replicas_scale(
    tmp_path: Path, standin: StandinApiServer
) -> None:
    f = tmp_path / "runtime.yaml"
    f.write_text("overrides: {}\n")
    flags = ["--admin-token", TOKEN, "--default-ingestion-rate", "2"]
    flags += ["--default-ingestion-burst-size", str(BURST)]
    tenants = Tenants()
    a = RlsProcess(tmp_path, *flags, "--instances", "2")
    b = RlsProcess(tmp_path, *flags, "--instances", "2")
    c = RlsProcess(tmp_path, *flags, "--instances", "5", workers=1)
    with a, b, c:
        # Not found by any sync yet: c keeps its --instances.
        assert held_count(c) == 5
        assert c.metric("rls_instances") == 5
        assert_share(c, 5, tenants)

        standin.set_endpoint_slices(NS, SERVICE, [slice_of(a), slice_of(b)])
        targets = kube.endpoints_targets(NS, SERVICE, "http", api_client=standin.api_client())
        metrics = SyncMetrics()
        ctl = Controller(
            FileSource(f, 0.2),
            targets,
            Pusher(TOKEN, timeout_seconds=2),
            push_interval_seconds=INTERVAL,
            defaults=DEFAULTS,
            metrics=metrics,
        )
        try:
            with running(ctl):
                wait_until(lambda: metrics.targets_in_sync.value() == 2, 10, "2 replicas synced")
                assert [held_count(r) for r in (a, b)] == [2, 2]
                settle()
                assert a.metric("rls_instances") == b.metric("rls_instances") == 2
                assert_share(a, 2, tenants)
                assert_share(b, 2, tenants)
                # The same count every interval: nothing republished (no worker reloads).
                time.sleep(0.5)
                loaded = [loaded_lines(r) for r in (a, b)]
                time.sleep(INTERVAL * 4)
                assert [loaded_lines(r) for r in (a, b)] == loaded
                assert a.metric("rls_limits_stale_seconds") < INTERVAL * 3  # but confirmed

                # Scale-out: c's endpoint becomes ready; within one interval all hold 3.
                standin.set_endpoint_slices(NS, SERVICE, [slice_of(a), slice_of(b), slice_of(c)])
                wait_until(
                    lambda: [held_count(r) for r in (a, b, c)] == [3, 3, 3],
                    INTERVAL + 2,
                    "3 everywhere within one interval (and slack for a loaded machine)",
                )
                assert metrics.targets.value() == 3
                settle()
                for r in (a, b, c):
                    assert r.metric("rls_instances") == 3
                    assert_share(r, 3, tenants)

                # Scale-in: b is terminating (not ready): the other two go back to 2.
                standin.set_endpoint_slices(
                    NS, SERVICE, [slice_of(a), slice_of(b, ready=False), slice_of(c)]
                )
                wait_until(
                    lambda: [held_count(r) for r in (a, c)] == [2, 2], INTERVAL + 2, "back to 2"
                )
                settle()
                assert_share(c, 2, tenants)
        finally:
            targets.close()


# -- the controller against recording replicas ----------------------------------------------


class MutableTargets:
    """A target list the test changes (replicas added and removed)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls

    def targets(self) -> list[str]:
        return list(self.urls)


@pytest.fixture
def fakes() -> Iterator[list[FakeRls]]:
    rs = [FakeRls(), FakeRls(), FakeRls()]
    yield rs
    for r in rs:
        r.stop()


def controller(targets: Any, source: ManualSource, **kw: Any) -> Controller:
    return Controller(
        source,
        targets,
        Pusher(FAKE_TOKEN, timeout_seconds=1.0),
        push_interval_seconds=0.3,
        metrics=SyncMetrics(),
        **kw,
    )


def test_a_new_count_reaches_every_replica_even_while_the_source_is_broken(
    fakes: list[FakeRls], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="mimir_edge.sync")
    src = ManualSource()
    targets = MutableTargets([fakes[0].url, fakes[1].url])
    ctl = controller(targets, src)
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: [r.instances for r in fakes[:2]] == [2, 2], 5, "count 2")
        src.put(None)  # the source is gone: replicas holding set and count are left alone
        wait_until(lambda: ctl.stale_seconds() > 0, 5, "stale")
        time.sleep(0.5)
        puts = [len(r.puts) for r in fakes]
        time.sleep(0.3 * 3)
        assert [len(r.puts) for r in fakes] == puts
        # Scale-out meanwhile: the count still follows, with the last good set.
        targets.urls.append(fakes[2].url)
        wait_until(lambda: [r.instances for r in fakes] == [3, 3, 3], 5, "count 3")
        assert all(r.burst("a") == 100 for r in fakes)
        assert fakes[0].put_queries[-1] == "instances=3"
    # Two set pushes and one count-only push per first replica: only the sets are counted.
    assert ctl.metrics.pushes.value() == 3
    messages = [r.getMessage() for r in caplog.records]
    assert "replica count pushed" in messages
    assert "replica count changed; each replica enforces 1/count of every rate" in messages


def test_an_rls_that_reports_no_count_is_not_pushed_every_interval() -> None:
    """An RLS from before the count (no header) ignores it: the sync compares sets only."""
    old = FakeRls(instances=None)
    try:
        src = ManualSource()
        ctl = controller(StaticTargets([old.url]), src)
        with running(ctl):
            src.put(runtime(a=100))
            wait_until(lambda: old.burst("a") == 100, 5, "set pushed")
            src.put(None)
            wait_until(lambda: ctl.stale_seconds() > 0, 5, "stale")
            time.sleep(0.3 * 4)
        assert len(old.puts) == 1
        assert old.put_queries == ["instances=1"]
    finally:
        old.stop()


def test_without_push_instances_each_replica_keeps_its_own(fakes: list[FakeRls]) -> None:
    src = ManualSource()
    ctl = controller(StaticTargets([r.url for r in fakes]), src, push_instances=False)
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: all(r.burst("a") == 100 for r in fakes), 5, "set pushed")
    assert {q for r in fakes for q in r.put_queries} == {""}
    assert [r.instances for r in fakes] == [1, 1, 1]


def test_pusher_sends_the_count_only_where_it_differs(fakes: list[FakeRls]) -> None:
    fakes[1].instances = 3
    body = LimitSet.build({"a": {"ingestion_burst_size": 3}}).to_json()
    pusher = Pusher(FAKE_TOKEN, timeout_seconds=1)
    try:
        first = pusher.push(body, [r.url for r in fakes], instances=3)
        assert [(r.pushed, r.changed, r.instances_changed, r.held_instances) for r in first] == [
            (True, True, True, 1),
            (True, True, False, 3),
            (True, True, True, 1),
        ]
        # Set and count held everywhere: nothing to send (nor to confirm, unless asked).
        again = pusher.push(body, [r.url for r in fakes], instances=3)
        assert [r.pushed for r in again] == [False, False, False]
        confirmed = pusher.push(body, [fakes[0].url], instances=3, confirm=True)
        assert (confirmed[0].pushed, confirmed[0].changed) == (True, False)
        # Only the count differs: sent, the set unchanged.
        fakes[2].instances = 7
        count_only = pusher.push(body, [fakes[2].url], instances=3)[0]
        assert (count_only.pushed, count_only.changed, count_only.instances_changed) == (
            True,
            False,
            True,
        )
        assert fakes[2].instances == 3
    finally:
        pusher.close()


def test_dns_targets_count_a_dual_stack_replica_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A dual-stack headless Service answers an A and an AAAA record per replica; counting
    both would halve every replica's share. No dual-stack DNS here: getaddrinfo is stubbed
    with what such a Service answers."""
    records = [
        (socket.AF_INET6, "fd00::1"),
        (socket.AF_INET, "10.0.0.1"),
        (socket.AF_INET6, "fd00::2"),
        (socket.AF_INET, "10.0.0.2"),
    ]

    def getaddrinfo(host: str, port: int, *args: Any, **kw: Any) -> list[Any]:
        assert (host, port) == ("rls-headless", 9090)
        return [(fam, socket.SOCK_STREAM, 6, "", (addr, port)) for fam, addr in records]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    targets = DnsTargets("rls-headless:9090").targets()
    assert targets == ["http://10.0.0.1:9090", "http://10.0.0.2:9090"]
    records = [r for r in records if r[0] == socket.AF_INET6]  # an IPv6-only cluster
    assert DnsTargets("rls-headless:9090").targets() == [
        "http://[fd00::1]:9090",
        "http://[fd00::2]:9090",
    ]


def test_push_instances_is_on_unless_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    for k in [k for k in os.environ if k.startswith("MIMIR_EDGE_")]:
        monkeypatch.delenv(k)
    assert parser().parse_args(["overrides-sync"]).push_instances is True
    assert parser().parse_args(["overrides-sync", "--no-push-instances"]).push_instances is False
    monkeypatch.setenv("MIMIR_EDGE_PUSH_INSTANCES", "false")
    assert parser().parse_args(["overrides-sync"]).push_instances is False


def test_a_static_target_that_does_not_answer_is_not_counted(fakes: list[FakeRls]) -> None:
    """With one replica of a static --targets list down, the others share the traffic between
    themselves: enforcing 1/3 each would refuse pushes within the tenant's limit."""
    dead = f"127.0.0.1:{free_port()}"  # nothing listens there
    src = ManualSource()
    ctl = controller(StaticTargets([fakes[0].url, fakes[1].url, dead]), src)
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: [r.instances for r in fakes[:2]] == [2, 2], 5, "count 2")
        # A third replica that answers counts from the round after its first answer.
        targets = StaticTargets([r.url for r in fakes])
        ctl.target_source = targets
        wait_until(lambda: [r.instances for r in fakes] == [3, 3, 3], 5, "count 3")
