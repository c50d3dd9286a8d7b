"""The replica count through the RLS admin API: ``PUT /api/v1/limits?instances=N`` makes every
worker of the instance enforce 1/N of every rate, ``GET /api/v1/limits`` and ``/metrics`` show
the count in force, and an RLS that is never sent one keeps ``--instances``.

In process: the admin API of one worker on 127.0.0.1 over the real engine and shared table,
plus a second worker on the same table that follows publications as a worker process does
(the process-level path is tested end to end in tests/sync/test_instances.py). Checks carry
their own time, so every Retry-After is exact.
"""

from __future__ import annotations

import http.client
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from mimir_edge._native import Engine
from mimir_edge.limits import LimitSet
from mimir_edge.rls.http_api import INSTANCES_HEADER, AdminServer
from mimir_edge.rls.settings import Settings
from mimir_edge.rls.worker import WorkerState, limits_path_for, read_published, write_limits
from tests.e2e.harness import free_port
from tests.rls.test_engine import SEC, T0, check_request, decide, headers_of
from tests.rls.test_service import BODY

TOKEN = "t0ken"
FLAG_INSTANCES = 4
#: 8 items/s for each tenant as a whole, a burst of 100: one push of BODY (100 samples)
#: empties a bucket.
LIMITS = {"ingestion_rate": 8, "ingestion_burst_size": 100}
SET = {"defaults": LIMITS, "overrides": {"t": LIMITS}}


@dataclass
class Rls:
    url: str
    workers: list[WorkerState]
    supervisor: Engine

    def request(
        self, method: str, path: str, doc: object = None, token: str | None = TOKEN
    ) -> tuple[int, dict[str, str], Any]:
        data = None if doc is None else json.dumps(doc).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method)
        if token is not None:
            req.add_header("Authorization", f"Bearer {token}")
        try:
            with urllib.request.urlopen(req, timeout=5) as r:
                return r.status, dict(r.headers), json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), json.loads(e.read())

    def put(self, query: str = "", doc: object = SET) -> tuple[int, Any]:
        status, _, body = self.request("PUT", "/api/v1/limits" + query, doc)
        return status, body

    def held_count(self) -> int:
        status, headers, _ = self.request("GET", "/api/v1/limits", token=None)
        assert status == 200
        return int(headers[INSTANCES_HEADER])

    def follow(self) -> None:
        """Every worker picks up the latest publication (a worker process's 0.2 s tick)."""
        for w in self.workers:
            w.tick()

    def retry_after(self, worker: int, tenant: str, now_ns: int) -> int | None:
        """Push BODY as ``tenant`` at ``now_ns`` through one worker: None if allowed, else
        the Retry-After of the 429 (seconds until the tokens are there at this worker's
        rate)."""
        resp = decide(self.workers[worker].engine, check_request(tenant, BODY), now_ns)
        if resp.status.code == 0:
            return None
        assert resp.denied_response.status.code == 429
        return int(headers_of(resp)["retry-after"])


@pytest.fixture
def rls(tmp_path: Path) -> Iterator[Rls]:
    """An RLS instance with ``--instances 4``: the table and first publication as the
    supervisor makes them, two workers, the admin API of worker 0."""
    table = str(tmp_path / "table")
    settings = Settings(
        http_listen=f"127.0.0.1:{free_port()}",
        workers=2,
        instances=FLAG_INSTANCES,
        admin_token=TOKEN,
        table_path=table,
    )
    supervisor = Engine(table, create=True, capacity=1024)
    write_limits(limits_path_for(table), LimitSet.from_json(json.dumps(SET)))
    supervisor.publish_generation(unix_ns=time.time_ns())
    log = logging.getLogger("test.rls")
    workers = [WorkerState(settings, Engine(table, worker=i), i, log) for i in range(2)]
    for w in workers:
        w.reload_if_changed(force=True)
    server = AdminServer(settings.http_listen, workers[0])
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield Rls(f"http://{settings.http_listen}", workers, supervisor)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def instances_gauge(rls: Rls) -> float:
    with urllib.request.urlopen(rls.url + "/metrics", timeout=5) as r:
        text = r.read().decode()
    (family,) = [f for f in text_string_to_metric_families(text) if f.name == "rls_instances"]
    assert family.type == "gauge"
    (sample,) = family.samples
    return float(sample.value)


def test_without_a_count_the_flag_is_in_force(rls: Rls) -> None:
    status, headers, doc = rls.request("GET", "/api/v1/limits", token=None)
    assert status == 200
    assert headers[INSTANCES_HEADER] == "4"
    assert instances_gauge(rls) == 4
    # The body is the limit set as it was, with no key added.
    assert doc == json.loads(LimitSet.from_json(json.dumps(SET)).to_json())
    # Rate 8/s shared by 4: 2/s here. A full bucket lets one push of 100 through; the next
    # needs 100 tokens at 2/s. The burst is the tenant's whole burst (not divided, as Mimir).
    for w in (0, 1):
        assert rls.retry_after(w, f"fresh-{w}", T0) is None
        assert rls.retry_after(w, f"fresh-{w}", T0) == 50


def test_a_count_reaches_every_worker_and_buckets_keep_their_tokens(rls: Rls) -> None:
    assert rls.retry_after(1, "t", T0) is None  # t's bucket: 0 of 100 tokens left
    status, doc = rls.put("?instances=2")
    assert status == 200
    assert doc["instances"] == 2
    rls.follow()
    assert [w.in_force()[1] for w in rls.workers] == [2, 2]
    assert rls.held_count() == 2
    assert instances_gauge(rls) == 2
    # Worker 1 (not the one PUT to) enforces 8/2 = 4/s. t's bucket was not refilled by the
    # new share: 5 s at the old 2/s earned 10 tokens, and the other 90 take 22.5 s at 4/s.
    assert rls.retry_after(1, "t", T0 + 5 * SEC) == 23
    for w in (0, 1):
        assert rls.retry_after(w, f"new-{w}", T0) is None
        assert rls.retry_after(w, f"new-{w}", T0) == 25


def test_the_count_in_force_again_only_marks_limits_fresh(rls: Rls) -> None:
    engine = rls.workers[0].engine

    def confirmed() -> int:
        return engine.limits_updated_unix_ns

    first = engine.limits_generation
    before = confirmed()
    # The set and count in force (the flag's 4): no new generation, limits marked fresh.
    assert rls.put("?instances=4") == (200, {"generation": first, "tenants": 1, "instances": 4})
    assert confirmed() > before
    # A new count alone: a new generation (every worker must switch), but the set was not
    # confirmed by it, so its freshness stays where it was.
    before = confirmed()
    status, doc = rls.put("?instances=3")
    assert (status, doc["generation"], doc["instances"]) == (200, first + 1, 3)
    assert confirmed() == before
    # The same count again: nothing republished, fresh.
    assert rls.put("?instances=3")[1]["generation"] == first + 1
    assert confirmed() > before
    # A set without a count keeps the count in force.
    other = {"defaults": LIMITS, "overrides": {"t": {**LIMITS, "ingestion_burst_size": 300}}}
    status, doc = rls.put("", other)
    assert (status, doc["generation"], doc["instances"]) == (200, first + 2, 3)
    rls.follow()
    assert [w.in_force()[1] for w in rls.workers] == [3, 3]
    # The published file carries the count: a worker that (re)starts picks it up.
    assert read_published(limits_path_for(rls.workers[0].settings.table_path or "")) == (
        LimitSet.from_json(json.dumps(other)),
        3,
        True,
    )


def test_a_publication_without_a_count_falls_back_to_the_flag(rls: Rls) -> None:
    assert rls.put("?instances=2")[0] == 200
    rls.follow()
    # The supervisor re-publishes (its --overrides file changed): no count in its file.
    table = rls.workers[0].settings.table_path or ""
    write_limits(limits_path_for(table), LimitSet.from_json(json.dumps(SET)))
    rls.supervisor.publish_generation(unix_ns=time.time_ns())
    rls.follow()
    assert [w.in_force()[1] for w in rls.workers] == [4, 4]
    assert rls.held_count() == 4


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("?instances=0", "instances must be an integer from 1 to 10000, got '0'"),
        ("?instances=-2", "instances must be an integer from 1 to 10000, got '-2'"),
        ("?instances=1.5", "instances must be an integer from 1 to 10000, got '1.5'"),
        ("?instances=", "instances must be an integer from 1 to 10000, got ''"),
        ("?instances=10001", "got '10001'"),
        ("?instances=%D9%A3", "got '\u0663'"),  # an Arabic-Indic 3: a digit, not ASCII
        ("?instances=2&instances=3", "instances given 2 times"),
        ("?instance=2", "unknown query parameter 'instance' (only 'instances')"),
    ],
)
def test_a_bad_count_is_refused_and_changes_nothing(rls: Rls, query: str, error: str) -> None:
    generation = rls.workers[0].engine.limits_generation
    status, doc = rls.put(query)
    assert status == 400
    assert error in doc["error"]
    assert rls.workers[0].engine.limits_generation == generation
    assert rls.held_count() == FLAG_INSTANCES


def test_a_count_without_the_token_is_refused(rls: Rls) -> None:
    status, _, _ = rls.request("PUT", "/api/v1/limits?instances=2", SET, token="wrong")
    assert status == 401
    assert rls.held_count() == FLAG_INSTANCES


def test_a_bad_content_length_is_refused_not_waited_for(rls: Rls) -> None:
    host, port = rls.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=5)
    try:
        conn.putrequest("PUT", "/api/v1/limits?instances=2")
        conn.putheader("Authorization", f"Bearer {TOKEN}")
        conn.putheader("Content-Length", "-1")
        conn.endheaders()
        r = conn.getresponse()
        assert r.status == 400
        assert r.getheader("Connection") == "close"
        assert json.loads(r.read())["error"] == "bad Content-Length '-1'"
    finally:
        conn.close()
    assert rls.held_count() == FLAG_INSTANCES


def test_post_is_refused_without_taking_its_body_for_a_request(rls: Rls) -> None:
    host, port = rls.url.removeprefix("http://").split(":")
    smuggled = b"GET /api/v1/limits HTTP/1.1\r\nHost: x\r\n\r\n"
    head = b"POST /api/v1/limits HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(smuggled)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.sendall(head + smuggled)
        answer = b""
        while chunk := s.recv(65536):  # the server closes after its one answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.0 405 ") or answer.startswith(b"HTTP/1.1 405 ")
    assert answer.count(b"HTTP/1.") == 1


def test_a_publication_is_loaded_once_when_two_threads_race(
    rls: Rls, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The tick thread and a GET both see a new generation; the one that loses must neither
    apply it again nor log it again."""
    worker = rls.workers[1]
    write_limits(worker.limits_path, LimitSet.from_json(json.dumps({"defaults": LIMITS})))
    rls.supervisor.publish_generation(unix_ns=time.time_ns())
    real_apply = worker.apply
    racing = [True]

    def lose_the_race(*args: Any, **kw: Any) -> bool:
        if racing:
            racing.clear()
            worker.reload_if_changed()  # the other thread, between the read and this apply
        return real_apply(*args, **kw)

    monkeypatch.setattr(worker, "apply", lose_the_race)
    with caplog.at_level(logging.INFO, logger="test.rls"):
        worker.reload_if_changed()
    assert [r.getMessage() for r in caplog.records] == ["limits loaded"]
    assert worker.engine.limits_generation == rls.supervisor.shared_generation
    assert worker.in_force()[0].tenants == {}
