"""The overrides-sync controller against real HTTP replicas (a small admin API on 127.0.0.1
that records what it is sent), with sources and leadership driven by the test."""

from __future__ import annotations

import argparse
import json
import logging
import os
import queue
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimir_edge.limits import MIMIR_DEFAULTS, LimitsError, LimitSet
from mimir_edge.sync import cli as sync_cli
from mimir_edge.sync import controller as controller_module
from mimir_edge.sync.base import Snapshot
from mimir_edge.sync.controller import Controller, parse_snapshot_data
from mimir_edge.sync.metrics import ERROR_REASONS, Registry, SyncMetrics
from mimir_edge.sync.targets import DnsTargets, Pusher, StaticTargets

TOKEN = "s3cret"
INTERVAL = 0.3


def runtime(**bursts: int) -> dict[str, str]:
    """A ConfigMap's data: one runtime config with an ingestion burst per tenant."""
    doc = "overrides:\n" + "".join(
        f"  {t}:\n    ingestion_rate: 1\n    ingestion_burst_size: {b}\n" for t, b in bursts.items()
    )
    return {"runtime.yaml": doc if bursts else "overrides: {}\n"}


def wait_until(cond: Callable[[], object], timeout: float = 5.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout} s: {what}")
        time.sleep(0.02)


class FakeRls:
    """The RLS admin API (GET/PUT /api/v1/limits, bearer token) on 127.0.0.1, recording
    every PUT. ``restart()`` brings it back on the same port with a fresh (default) set, as a
    restarted replica. ``instances``: its replica count (``--instances``), reported in the
    ``X-Mimir-Edge-Instances`` header and replaced by a PUT's ``?instances=N``; None plays an
    RLS from before the count (no header, the parameter ignored)."""

    def __init__(self, token: str = TOKEN, instances: int | None = 1) -> None:
        self.token = token
        self.puts: list[dict[str, Any]] = []
        self.put_queries: list[str] = []
        self.gets = 0
        self.flag_instances = instances
        self.instances = instances
        self.limits = json.loads(LimitSet().to_json())
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _json(self, status: int, doc: object) -> None:
                data = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if fake.instances is not None:
                    self.send_header("X-Mimir-Edge-Instances", str(fake.instances))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                fake.gets += 1
                self._json(200, fake.limits)

            def do_PUT(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    self._json(401, {"error": "bad token"})
                    return
                new = LimitSet.from_json(body)  # as the RLS: parsed, then served back
                fake.limits = json.loads(new.to_json())
                fake.puts.append(json.loads(body))
                query = urllib.parse.urlsplit(self.path).query
                fake.put_queries.append(query)
                count = urllib.parse.parse_qs(query).get("instances")
                if count and fake.instances is not None:
                    fake.instances = int(count[0])
                self._json(200, {"tenants": len(new.tenants)})

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def restart(self) -> None:
        self.stop()
        self.limits = json.loads(LimitSet().to_json())
        self.instances = self.flag_instances
        self.start()

    def burst(self, tenant: str) -> Any:
        return self.limits["overrides"].get(tenant, {}).get("ingestion_burst_size")


class ManualSource:
    """A source the test drives: ``put`` a snapshot, the controller receives it."""

    def __init__(self, *, fail_first: bool = False) -> None:
        self._q: queue.Queue[Snapshot] = queue.Queue()
        self.fail_first = fail_first
        self.runs = 0

    def put(self, data: dict[str, str] | None) -> None:
        self._q.put(Snapshot(data, f"v{time.monotonic_ns()}"))

    def run(self, emit: Callable[[Snapshot], None], stop: threading.Event) -> None:
        self.runs += 1
        if self.fail_first and self.runs == 1:
            raise RuntimeError("watch broke")
        while not stop.is_set():
            with suppress(queue.Empty):
                emit(self._q.get(timeout=0.02))


class Leader:
    def __init__(self, leading: bool) -> None:
        self.leading = leading

    def is_leader(self) -> bool:
        return self.leading


class FlakyTargets:
    """Listing fails ``failures`` times, then gives ``urls``."""

    def __init__(self, urls: list[str], failures: int) -> None:
        self.urls = urls
        self.failures = failures

    def targets(self) -> list[str]:
        if self.failures > 0:
            self.failures -= 1
            raise OSError("Name or service not known")
        return list(self.urls)


@pytest.fixture
def replicas() -> Iterator[list[FakeRls]]:
    rs = [FakeRls(), FakeRls()]
    yield rs
    for r in rs:
        r.stop()


@contextmanager
def running(ctl: Controller) -> Iterator[Controller]:
    stop = threading.Event()
    t = threading.Thread(target=ctl.run, args=(stop,), daemon=True)
    t.start()
    try:
        yield ctl
    finally:
        stop.set()
        t.join(timeout=5)
        ctl.pusher.close()
        assert not t.is_alive(), "controller did not stop"


def controller(
    source: Any, targets: Any, *, leadership: Any = None, token: str = TOKEN
) -> Controller:
    return Controller(
        source,
        targets,
        Pusher(token, timeout_seconds=1.0),
        leadership=leadership,
        push_interval_seconds=INTERVAL,
        metrics=SyncMetrics(),
    )


def test_every_replica_gets_the_whole_set_and_a_removed_tenant_falls_back_to_defaults(
    replicas: list[FakeRls],
) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([r.url for r in replicas]))
    with running(ctl):
        src.put(runtime(a=100, b=200))
        wait_until(lambda: all(r.burst("b") == 200 for r in replicas), what="set everywhere")
        src.put(runtime(a=100))
        wait_until(lambda: all(r.burst("b") is None for r in replicas), what="b removed")
        for r in replicas:
            held = LimitSet.from_json(json.dumps(r.limits))
            assert held.for_tenant("b") == held.defaults
            assert (
                held.for_tenant("b")["ingestion_burst_size"]
                == MIMIR_DEFAULTS["ingestion_burst_size"]
            )
            assert held.for_tenant("a")["ingestion_burst_size"] == 100
            assert [sorted(p["overrides"]) for p in r.puts] == [["a", "b"], ["a"]]
    m = ctl.metrics
    assert m.pushes.value() == 4
    assert m.targets.value() == m.targets_in_sync.value() == 2
    assert m.tenants.value() == 1
    assert m.last_success.value() == pytest.approx(time.time(), abs=5)


def test_a_healthy_source_confirms_every_interval_and_a_drifted_replica_is_restored(
    replicas: list[FakeRls],
) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([r.url for r in replicas]))
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: all(r.burst("a") == 100 for r in replicas))
        pushes = ctl.metrics.pushes.value()
        puts = len(replicas[0].puts)
        time.sleep(INTERVAL * 4)
        # The same set is PUT again every interval (the RLS then only marks its limits
        # fresh), but nothing changed: no push is counted.
        assert len(replicas[0].puts) >= puts + 2
        assert ctl.metrics.pushes.value() == pushes
        # Someone PUTs another set on one replica: the next interval puts the source's back.
        replicas[1].limits = json.loads(LimitSet().to_json())
        wait_until(lambda: replicas[1].burst("a") == 100, INTERVAL + 2, "drift repaired")
        wait_until(lambda: ctl.metrics.pushes.value() == pushes + 1, INTERVAL + 2, "push counted")


def test_a_parse_error_keeps_the_last_good_set_and_counts_the_reason(
    replicas: list[FakeRls], caplog: pytest.LogCaptureFixture
) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([replicas[0].url]))
    m = ctl.metrics
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: replicas[0].burst("a") == 100)
        wait_until(lambda: m.last_success.value() > 0)
        src.put({"runtime.yaml": "overrides: [not, a, map]\n"})
        wait_until(lambda: m.errors.value(reason="parse") == 1, what="parse error counted")
        src.put({"runtime.yaml": "overrides:\n  a:\n    ingestion_rate: -5\n"})
        wait_until(lambda: m.errors.value(reason="parse") == 2, what="invalid limit counted")
        success_while_broken = m.last_success.value()
        time.sleep(INTERVAL * 3)
        assert replicas[0].burst("a") == 100
        assert len(replicas[0].puts) == 1
        assert ctl.limit_set is not None
        assert ctl.limit_set.tenants["a"]["ingestion_burst_size"] == 100
        # Broken source: the sync does not count as a success, and staleness grows.
        assert m.last_success.value() == success_while_broken
        assert m.stale.value() >= INTERVAL * 3
        # A good document again: pushed, healthy.
        src.put(runtime(a=50))
        wait_until(lambda: replicas[0].burst("a") == 50)
        wait_until(lambda: m.last_success.value() > success_while_broken)
        assert m.stale.value() == 0
    messages = [r.getMessage() for r in caplog.records]
    assert "the overrides do not parse; keeping the last good limit set" in messages
    errors = " | ".join(str(getattr(r, "fields", {}).get("error")) for r in caplog.records)
    assert "overrides: must be a mapping of tenant -> limits" in errors
    assert "overrides.a: ingestion_rate must be >= 0, got -5" in errors
    for reason in set(ERROR_REASONS) - {"parse"}:
        assert m.errors.value(reason=reason) == 0, reason


def test_a_deleted_source_keeps_the_last_good_set_and_staleness_grows(
    replicas: list[FakeRls],
) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([r.url for r in replicas]))
    m = ctl.metrics
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: all(r.burst("a") == 100 for r in replicas))
        src.put(None)
        wait_until(lambda: m.errors.value(reason="source_deleted") == 1)
        first = m.stale.value()
        time.sleep(INTERVAL * 2)
        assert m.stale.value() > first + INTERVAL
        assert all(r.burst("a") == 100 for r in replicas)
        # A replica restarting meanwhile still gets the last good set, not nothing.
        replicas[1].restart()
        assert replicas[1].burst("a") is None
        wait_until(lambda: replicas[1].burst("a") == 100, INTERVAL + 2, "restarted replica synced")
        # An empty source (no document, or blank ones) is treated as gone too.
        src.put({})
        src.put({"runtime.yaml": " \n"})
        wait_until(lambda: m.errors.value(reason="source_empty") == 2)
        time.sleep(INTERVAL * 2)
        assert all(r.burst("a") == 100 for r in replicas)
        assert m.stale.value() > INTERVAL * 4
        assert ctl.readiness()[0]


def test_a_replica_that_is_down_is_retried_and_gets_the_set_when_it_is_back(
    replicas: list[FakeRls],
) -> None:
    up, down = replicas
    down.stop()
    src = ManualSource()
    ctl = controller(src, StaticTargets([up.url, down.url]))
    m = ctl.metrics
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: up.burst("a") == 100)
        wait_until(lambda: m.errors.value(reason="push_unreachable") >= 2, what="retried")
        assert m.targets.value() == 2
        assert m.targets_in_sync.value() == 1
        assert m.last_success.value() == 0  # not every replica holds it
        down.start()  # same port, fresh set
        wait_until(lambda: down.burst("a") == 100, INTERVAL + 2, "replica back and synced")
        wait_until(lambda: m.last_success.value() > 0)
        assert m.targets_in_sync.value() == 2
    # The healthy replica was only ever confirmed the same set; two real pushes in all.
    assert all(p == up.puts[0] for p in up.puts)
    assert m.pushes.value() == 2


def test_a_replica_that_is_not_the_leader_never_pushes(replicas: list[FakeRls]) -> None:
    src = ManualSource()
    leadership = Leader(False)
    ctl = controller(src, StaticTargets([replicas[0].url]), leadership=leadership)
    m = ctl.metrics
    with running(ctl):
        src.put(runtime(a=100))
        src.put(runtime(a=70))
        wait_until(lambda: m.tenants.value() == 1)
        time.sleep(INTERVAL * 4)
        assert replicas[0].puts == []
        assert replicas[0].gets == 0
        assert m.leader.value() == 0
        assert m.last_success.value() == 0
        # It parsed all along: on becoming leader it pushes the current set at once.
        leadership.leading = True
        wait_until(lambda: replicas[0].burst("a") == 70, 2, "pushed on becoming leader")
        assert m.leader.value() == 1
        leadership.leading = False
        wait_until(lambda: m.leader.value() == 0)
        src.put(runtime(a=10))
        time.sleep(INTERVAL * 3)
        assert replicas[0].burst("a") == 70


def test_a_wrong_token_is_counted_as_rejected(replicas: list[FakeRls]) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([replicas[0].url]), token="wrong")
    with running(ctl):
        src.put(runtime(a=100))
        wait_until(lambda: ctl.metrics.errors.value(reason="push_rejected") >= 1)
    assert replicas[0].puts == []


def test_without_a_good_set_nothing_is_pushed(replicas: list[FakeRls]) -> None:
    src = ManualSource()
    ctl = controller(src, StaticTargets([replicas[0].url]))
    assert ctl.readiness() == (False, "waiting for the overrides source")
    with running(ctl):
        src.put(None)
        src.put({"runtime.yaml": "{{{"})
        wait_until(lambda: ctl.metrics.errors.value(reason="parse") == 1)
        time.sleep(INTERVAL * 2)
        assert ctl.readiness()[0]
    # The replicas keep whatever they had: a sync without a set never wipes theirs.
    assert replicas[0].puts == []
    assert replicas[0].gets == 0


def test_listing_failures_and_a_failing_source_are_counted_and_retried(
    replicas: list[FakeRls],
) -> None:
    src = ManualSource(fail_first=True)
    ctl = controller(src, FlakyTargets([replicas[0].url], failures=2))
    m = ctl.metrics
    with running(ctl):
        wait_until(lambda: src.runs == 2, 3, "source restarted")
        src.put(runtime(a=100))
        wait_until(lambda: replicas[0].burst("a") == 100, INTERVAL * 3 + 2)
    assert m.errors.value(reason="source_failed") == 1
    assert m.errors.value(reason="targets") == 2


def test_no_targets_is_an_error() -> None:
    src = ManualSource()
    ctl = controller(src, FlakyTargets([], failures=0))
    with running(ctl):
        src.put(runtime(a=1))
        wait_until(lambda: ctl.metrics.errors.value(reason="no_targets") >= 1)
    assert ctl.metrics.last_success.value() == 0


# -- parsing ---------------------------------------------------------------------------------


def test_parse_falls_back_to_one_document_or_the_chosen_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # What the adapter does when limits.from_configmap_data is not there.
    monkeypatch.setattr(controller_module, "_from_configmap_data", None)
    doc = runtime(a=5)["runtime.yaml"]
    assert parse_snapshot_data({"x.yaml": doc}).tenants["a"]["ingestion_burst_size"] == 5
    two = {"runtime.yaml": doc, "other.yaml": "overrides: {}\n"}
    assert parse_snapshot_data(two, key="runtime.yaml").tenants["a"]["ingestion_burst_size"] == 5
    assert parse_snapshot_data(two, key="other.yaml").tenants == {}
    with pytest.raises(LimitsError, match="2 documents"):
        parse_snapshot_data(two)
    with pytest.raises(LimitsError, match="key 'nope' not found"):
        parse_snapshot_data(two, key="nope")
    limits = parse_snapshot_data({"x": "overrides: {}\n"}, defaults={"ingestion_rate": 7})
    assert limits.defaults["ingestion_rate"] == 7


def test_parse_uses_limits_from_configmap_data_when_it_exists(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[dict[str, str], str | None, Any]] = []

    def from_configmap_data(
        data: dict[str, str], *, key: str | None = None, defaults: Any = None
    ) -> LimitSet:
        calls.append((dict(data), key, defaults))
        return LimitSet.build({"z": {}})

    monkeypatch.setattr(controller_module, "_from_configmap_data", from_configmap_data)
    got = parse_snapshot_data({"a": "b", "c": "d"}, key="a", defaults={"request_rate": 1})
    assert list(got.tenants) == ["z"]
    assert calls == [({"a": "b", "c": "d"}, "a", {"request_rate": 1})]


# -- targets ---------------------------------------------------------------------------------


def test_static_targets_are_normalized() -> None:
    t = StaticTargets(["10.0.0.2:9090", "http://10.0.0.1:9090/", " https://rls:9443 ", ""])
    assert t.targets() == ["http://10.0.0.1:9090", "http://10.0.0.2:9090", "https://rls:9443"]
    with pytest.raises(ValueError, match="no targets"):
        StaticTargets([" "])
    with pytest.raises(ValueError, match="not an http"):
        StaticTargets(["ftp://x:1"])


def test_dns_targets_resolve_on_each_call() -> None:
    got = DnsTargets("localhost:9090").targets()
    assert "http://127.0.0.1:9090" in got
    assert all(u.startswith(("http://127.", "http://[::1]")) for u in got)
    assert DnsTargets("127.0.0.1:1").targets() == ["http://127.0.0.1:1"]
    assert DnsTargets("[::1]:9090").targets() == ["http://[::1]:9090"]
    assert DnsTargets("[::1]:9090").host == "::1"
    with pytest.raises(ValueError, match="host:port"):
        DnsTargets("localhost")


def test_pusher_reports_each_target(replicas: list[FakeRls]) -> None:
    ok, gone = replicas
    gone.stop()
    pusher = Pusher(TOKEN, timeout_seconds=1)
    body = LimitSet.build({"a": {"ingestion_burst_size": 3}}).to_json()
    try:
        first = pusher.push(body, [ok.url, gone.url])
        assert [(r.target, r.ok, r.pushed, r.reason) for r in first] == [
            (ok.url, True, True, None),
            (gone.url, False, False, "push_unreachable"),
        ]
        again = pusher.push(body, [ok.url])
        assert (again[0].ok, again[0].pushed) == (True, False)
        forced = pusher.push(body, [ok.url], force=True)
        assert (forced[0].ok, forced[0].pushed) == (True, True)
        assert len(ok.puts) == 2
    finally:
        pusher.close()


# -- metrics and flags -----------------------------------------------------------------------


def test_metrics_are_valid_prometheus_text() -> None:
    m = SyncMetrics()
    m.errors.inc(reason="parse")
    m.stale.set_function(lambda: 1.5)
    m.last_success.set(1_700_000_000.25)
    families = {f.name: f for f in text_string_to_metric_families(m.render())}
    assert families["overrides_sync_errors"].type == "counter"
    reasons = {s.labels["reason"]: s.value for s in families["overrides_sync_errors"].samples}
    assert reasons == {r: (1.0 if r == "parse" else 0.0) for r in ERROR_REASONS}
    assert families["overrides_sync_stale_seconds"].samples[0].value == 1.5
    assert families["overrides_sync_last_success_timestamp_seconds"].samples[0].value == (
        1_700_000_000.25
    )
    assert {
        "overrides_sync_pushes",
        "overrides_sync_targets",
        "overrides_sync_targets_in_sync",
        "overrides_sync_tenants",
        "overrides_sync_leader",
    } <= set(families)
    r = Registry()
    g = r.gauge("x", "odd labels", ("v",))
    g.set(float("inf"), v='a"b\\c\nd')
    (fam,) = text_string_to_metric_families(r.render())
    assert fam.samples[0].labels == {"v": 'a"b\\c\nd'}
    assert fam.samples[0].value == float("inf")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="mimir-edge")
    sync_cli.add_parser(p.add_subparsers(dest="command", required=True))
    return p


def test_help_documents_every_flag_and_its_environment_variable() -> None:
    p = parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    cmd = sub.choices["overrides-sync"]
    for action in cmd._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, action.dest
            assert "MIMIR_EDGE_" in action.help, action.dest


def test_flags_come_from_the_environment_and_the_token_is_not_shown(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MIMIR_EDGE_TARGETS", "a:1,b:2")
    monkeypatch.setenv("MIMIR_EDGE_PUSH_INTERVAL_SECONDS", "2.5")
    monkeypatch.setenv("MIMIR_EDGE_LEADER_ELECT", "true")
    monkeypatch.setenv("MIMIR_EDGE_ADMIN_TOKEN", "hunter2")
    p = parser()
    args = p.parse_args(["overrides-sync", "--file", "/x"])
    assert (args.targets, args.push_interval_seconds, args.leader_elect) == ("a:1,b:2", 2.5, True)
    assert args.admin_token == "hunter2"
    assert args.func is sync_cli.run
    assert p.parse_args(["overrides-sync", "--targets", "c:3"]).targets == "c:3"  # flag wins
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    assert "hunter2" not in sub.choices["overrides-sync"].format_help()


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--file", "f", "--admin-token", "t"], "exactly one of --targets"),
        (["--file", "f", "--admin-token", "t", "--targets", "a:1", "--targets-dns", "b:2"],
         "exactly one of --targets"),
        (["--file", "f", "--targets", "a:1"], "exactly one of --admin-token"),
        (["--targets", "a:1", "--admin-token", "t"], "--source file needs --file"),
        (["--file", "f", "--targets", "a:1", "--admin-token-file", "/nonexistent/token"],
         "No such file"),
        (["--file", "f", "--targets", "a:1", "--admin-token", "t", "--default-ingestion-rate",
          "-1"], "ingestion_rate must be >= 0"),
        (["--file", "f", "--targets", "a:1", "--admin-token", "t", "--push-interval-seconds",
          "0"], "must be > 0"),
    ],
)  # fmt: skip
def test_configuration_errors_exit_2(
    argv: list[str], error: str, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for k in [k for k in os.environ if k.startswith("MIMIR_EDGE_")]:
        monkeypatch.delenv(k)  # only the flags given here
    args = parser().parse_args(["overrides-sync", "--http-listen", "127.0.0.1:0", *argv])
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        assert sync_cli.run(args) == 2
    finally:
        root.handlers[:], root.level = handlers, level  # run() installs its JSON log handler
    assert error in capfd.readouterr().err
