"""``mimir-edge load`` as a user runs it: flags (Go-style too), output, exit codes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mimir_edge.cli import build_parser, main
from tests.conftest import corpus_dir
from tests.e2e.harness import RecordingUpstream, free_port
from tests.loadgen.servers import ClosingServer, StatusServer

JSON_KEYS = {
    "version",
    "config",
    "elapsed_s",
    "interrupted",
    "requests",
    "status",
    "errors",
    "sent",
    "accepted",
    "bytes_sent",
    "throughput",
    "latency_ms",
    "tenants",
    "examples",
}


def test_the_rollout_guides_go_style_flags_parse() -> None:
    args = build_parser().parse_args(
        [
            "load",
            "-url=http://nginx.example/api/v1/push",
            "-tenant=load-test-tenant",
            "-concurrency=50",
            "-duration=5m",
            "-rate=200",
            "-protocol=2",
            "-exemplars",
            "-histograms=false",
            "-json=true",
        ]
    )
    assert args.url == "http://nginx.example/api/v1/push"
    assert args.tenant == ["load-test-tenant"]
    assert (args.concurrency, args.duration, args.rate, args.protocol) == (50, 300.0, 200.0, 2)
    assert (args.exemplars, args.histograms, args.json) == (True, False, True)


def test_go_style_run_prints_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    with StatusServer([200, 200, 429]) as server:
        code = main(
            ["load", f"-url={server.url}", "-tenant=load-test-tenant", "-concurrency=50",
             "-duration=30s", "-requests=90", "-quiet"]
        )  # fmt: skip
        answered = server.answered
    out = capsys.readouterr().out
    assert code == 0
    assert len(answered) == 90
    assert {a.headers["X-Scope-OrgID"] for a in answered} == {"load-test-tenant"}
    for row, n in (("requests", "90"), ("200", "60"), ("429", "30"), ("connection errors", "0")):
        assert any(line.split()[:-2] == row.split() and n in line for line in out.splitlines())
    assert "latency ms" in out
    assert "p99" in out
    assert "answer 429: refused with 429 by the test server" in out


def test_json_document(capsys: pytest.CaptureFixture[str]) -> None:
    with StatusServer([200, 429]) as server:
        code = main(
            ["load", "--url", server.url, "--tenants", "2", "--requests", "8",
             "--concurrency", "2", "--series", "100", "--json", "--quiet"]
        )  # fmt: skip
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == JSON_KEYS
    assert doc["version"] == 1
    assert doc["requests"] == {
        "total": 8, "answered": 8, "ok": 4, "connection_errors": 0, "skipped": 0
    }  # fmt: skip
    assert doc["status"] == {"200": 4, "429": 4}
    assert doc["errors"] == {}
    assert set(doc["sent"]) == {"samples", "histograms", "exemplars", "metadata", "ingested"}
    assert doc["accepted"]["samples"] * 2 == doc["sent"]["samples"]
    assert set(doc["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}
    assert set(doc["throughput"]) == {
        "requests_per_s", "samples_per_s", "ingested_per_s", "accepted_ingested_per_s"
    }  # fmt: skip
    assert set(doc["tenants"]) == {"load-tenant-1", "load-tenant-2"}
    assert doc["config"]["tenants"] == ["load-tenant-1", "load-tenant-2"]


def test_unreachable_url_exits_1_with_the_reason(capsys: pytest.CaptureFixture[str]) -> None:
    port = free_port()  # nothing listens there
    code = main(["load", "--url", f"http://127.0.0.1:{port}/api/v1/push", "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"cannot connect to 127.0.0.1:{port}: connection refused" in err


def test_every_request_failing_exits_1(capsys: pytest.CaptureFixture[str]) -> None:
    with ClosingServer() as server:
        code = main(["load", "--url", server.url, "--requests", "6", "--json", "--quiet"])
    assert code == 1
    captured = capsys.readouterr()
    doc = json.loads(captured.out)
    assert doc["requests"]["connection_errors"] == 6
    # Closing with the request unread may reset the connection instead of closing it.
    reasons = {"connection closed before an answer", "connection reset by peer"}
    assert set(doc["errors"]) <= reasons
    assert sum(doc["errors"].values()) == 6
    assert "every request failed to connect" in captured.err
    assert any(r in captured.err for r in reasons)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--duration", "5x"], "invalid duration '5x'"),
        (["--duration", "0s"], "duration must be more than 0"),
        (["--duration", "48h"], "at most 86400s"),
        (["--url", "ftp://example/push"], "scheme must be http or https"),
        (["--url", "http://"], "no host"),
        (["--tenant", "a", "--tenants", "3"], "not both"),
        (["--tenants", "0"], "at least 1"),
        (["--concurrency", "0"], "concurrency must be"),
        (["--samples-per-request", "0"], "samples per request must be"),
        (["--series", "5", "--concurrency", "10"], "series (5) must be at least concurrency"),
        (["--rate", "-1"], "rate must be more than 0"),
        (["--protocol", "3"], "invalid choice"),
        (["--requests", "many"], "expected a whole number"),
        (["--corpus", "/nonexistent/corpus"], "not a directory"),
        (["--exemplars=maybe"], "expected true or false"),
    ],
)
def test_bad_input_exits_2_with_a_clear_message(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["load", "--quiet", *argv])
    except SystemExit as e:  # argparse's own errors
        code = e.code  # type: ignore[assignment]
    assert code == 2
    assert message in capsys.readouterr().err


def test_corpus_with_synthetic_flags_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["load", "--corpus", str(corpus_dir()), "--series", "10", "--exemplars"])
    assert code == 2
    assert "--series, --exemplars cannot apply" in capsys.readouterr().err


def test_unreadable_corpus_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "junk.snappy").write_bytes(b"\xff\xff\xff\xff\x0fnot snappy")
    with RecordingUpstream() as up:
        code = main(["load", "--url", up.url, "--corpus", str(tmp_path), "--quiet"])
        assert up.requests == []
    assert code == 2
    assert "junk.snappy is not a remote write 1.0 body" in capsys.readouterr().err


def test_sigterm_stops_the_run_and_the_report_is_still_printed() -> None:
    with RecordingUpstream() as up:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mimir_edge.cli", "load", "--url", up.url, "--rate", "50",
             "--duration", "60s", "--series", "100", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 20
            while not up.requests and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        received = len(up.requests)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert doc["interrupted"] is True
    assert doc["requests"]["total"] == received > 0
