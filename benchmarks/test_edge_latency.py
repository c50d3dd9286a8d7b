"""Latency the edge adds to a push: Envoy with ext_authz -> RLS vs the same Envoy without it.

Two Envoys run side by side from one ``EnvoyConfig``, differing only in ``ext_authz_enabled``:
(A) ext_authz to ``mimir-edge rls`` (2 workers, full enforcement: every push is decoded,
counted and charged; the limits are high enough that nothing is denied) and (B) no ext_authz.
Both proxy to the same upstream, a minimal asyncio HTTP server in its own process that reads
the body and answers 200. An open-loop client (asyncio, keep-alive connections, in this
process) sends a real ~10 KB corpus push at a fixed rate, well below saturation, in
interleaved rounds (A B B A A B ...) so the machine's noise hits both; latency is measured
client-side, from writing a request to reading its whole response. Each candidate's p50 and
p99 are the medians over its rounds of the round's percentile (one round hit by another
process's stall cannot decide them alone); the pooled percentiles are reported beside.

Target: p99(A) - p99(B) < 5 ms, asserted (the product promise); < 2 ms reported, asserted
with MIMIR_EDGE_STRICT_BENCH=1. Every push must be answered 200, reach the upstream
byte-identical, and (A) be counted by the RLS as an allow of its samples.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
import socket
import statistics
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path

from benchmarks._harness import STRICT, Report
from mimir_edge.envoy_config import PUSH_PATH, EnvoyConfig
from tests.conftest import CorpusFile
from tests.e2e.harness import LOCALHOST, EnvoyProcess, free_port
from tests.e2e.rls_process import RlsProcess

RATE = 300  # requests/s; well below saturation (the RLS alone answers ~8,000 checks/s here)
ROUND_S = 3.0
ROUNDS = 7  # per candidate
WARMUP_S = 1.0
POOL = 8  # keep-alive connections opened before each round (more open if all are busy)
TENANT = "bench"
WITH, WITHOUT = "with ext_authz", "without ext_authz"


# --- the upstream: a separate process, so it does not share the client's GIL -------------


class _UpstreamProtocol(asyncio.Protocol):
    """HTTP/1.1 keep-alive, Content-Length bodies only: reads the body, answers 200."""

    def __init__(self, expected: bytes, received: Synchronized[int], wrong: Synchronized[int]):
        self.expected = expected
        self.received = received
        self.wrong = wrong
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            length = None
            for line in bytes(self.buf[:end]).split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if length is None:  # chunked or no length: not what Envoy sends here
                assert self.transport is not None
                self.transport.write(b"HTTP/1.1 411 Length Required\r\ncontent-length: 0\r\n\r\n")
                self.transport.close()
                return
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            self.received.value += 1
            if body != self.expected:
                self.wrong.value += 1
            assert self.transport is not None
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")


def serve_upstream(
    port: int, expected: bytes, received: Synchronized[int], wrong: Synchronized[int]
) -> None:
    """The upstream's process: serve until terminated."""

    async def main() -> None:
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: _UpstreamProtocol(expected, received, wrong), LOCALHOST, port
        )
        async with server:
            await server.serve_forever()

    asyncio.run(main())


@dataclass
class Upstream:
    port: int
    received: Synchronized[int]
    wrong: Synchronized[int]
    pid: int


@contextmanager
def upstream(expected: bytes) -> Iterator[Upstream]:
    ctx = multiprocessing.get_context("spawn")  # no fork of a process with threads
    received, wrong = ctx.Value("q", 0), ctx.Value("q", 0)
    port = free_port()
    proc = ctx.Process(target=serve_upstream, args=(port, expected, received, wrong), daemon=True)
    proc.start()
    try:
        deadline = time.monotonic() + 20
        while not _listening(port):
            assert proc.is_alive(), "upstream exited"
            assert time.monotonic() < deadline, "upstream not listening after 20 s"
            time.sleep(0.05)
        assert proc.pid is not None
        yield Upstream(port, received, wrong, proc.pid)
    finally:
        proc.terminate()
        proc.join(10)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((LOCALHOST, port)) == 0


# --- the open-loop client ------------------------------------------------------------


@dataclass
class Round:
    latencies_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    late_ms: list[float] = field(default_factory=list)  # send time minus scheduled time
    new_connections: int = 0
    others_cpus: float = 0.0  # CPUs other processes than the client and the stack kept busy


def request_bytes(body: bytes) -> bytes:
    head = (
        f"POST {PUSH_PATH} HTTP/1.1\r\n"
        f"Host: {LOCALHOST}\r\n"
        "Content-Type: application/x-protobuf\r\n"
        "Content-Encoding: snappy\r\n"
        "X-Prometheus-Remote-Write-Version: 0.1.0\r\n"
        f"X-Scope-OrgID: {TENANT}\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


Conn = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def _exchange(conn: Conn, request: bytes) -> int:
    reader, writer = conn
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def open_loop(port: int, request: bytes, rate: float, duration_s: float) -> Round:
    """Send ``rate * duration_s`` requests at fixed times, each on an idle keep-alive
    connection (a new one if all are busy), never waiting for earlier responses."""
    result = Round()
    idle: list[Conn] = [await asyncio.open_connection(LOCALHOST, port) for _ in range(POOL)]
    every: list[Conn] = list(idle)

    async def one(scheduled: float) -> None:
        if idle:
            conn = idle.pop()
        else:
            conn = await asyncio.open_connection(LOCALHOST, port)
            every.append(conn)
            result.new_connections += 1
        sent = time.perf_counter()
        result.late_ms.append((sent - scheduled) * 1000)
        status = await asyncio.wait_for(_exchange(conn, request), timeout=10)
        result.latencies_ms.append((time.perf_counter() - sent) * 1000)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        idle.append(conn)

    tasks = []
    start = time.perf_counter() + 0.02
    try:
        for i in range(round(rate * duration_s)):
            scheduled = start + i / rate
            if (wait := scheduled - time.perf_counter()) > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.create_task(one(scheduled)))
        await asyncio.gather(*tasks)
    finally:
        for _, writer in every:
            writer.close()
    return result


# --- measurements ---------------------------------------------------------------------


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes and their reaped children (/proc)."""
    hz = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += sum(int(x) for x in fields[11:15])  # utime stime cutime cstime
    return total / hz


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (the RLS supervisor's workers)."""
    out = [pid]
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            out += tree(int(child))
    return out


def machine_busy_s() -> float:
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    ticks = [int(x) for x in fields[1:9]]
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def test_added_latency_of_ext_authz(
    tmp_path: Path, corpus: list[CorpusFile], report: Report
) -> None:
    body = next(c for c in corpus if c.name.startswith("scrape-500") and c.expected["samples"])
    samples = body.expected["samples"]
    request = request_bytes(body.body)
    overrides = tmp_path / "o.yaml"
    overrides.write_text(
        f"overrides:\n  {TENANT}:\n    ingestion_rate: 1e15\n"
        "    ingestion_burst_size: 1000000000000\n"
    )

    rounds: dict[str, list[Round]] = {WITH: [], WITHOUT: []}
    with (
        upstream(body.body) as up,
        RlsProcess(
            tmp_path, "--overrides", str(overrides), "--log-level", "warning", workers=2
        ) as rls,
    ):
        base = EnvoyConfig(
            upstream_host=LOCALHOST,
            upstream_port=up.port,
            rls_host=LOCALHOST,
            rls_port=rls.grpc_port,
            listen_port=0,
            admin_port=0,
            access_log=False,  # both alike; keeps disk writes out of the timings
        )
        with (
            EnvoyProcess(base) as with_authz,
            EnvoyProcess(dataclasses.replace(base, ext_authz_enabled=False)) as without,
        ):
            ports = {WITH: with_authz.listen_port, WITHOUT: without.listen_port}
            assert rls.proc is not None
            ours = [os.getpid(), up.pid, with_authz.pid, without.pid, *tree(rls.proc.pid)]
            for name, port in ports.items():  # warm-up: connections, caches, first checks
                warm = asyncio.run(open_loop(port, request, RATE, WARMUP_S))
                assert warm.statuses == {200: len(warm.latencies_ms)}, (name, warm.statuses)
            checks_before = rls.metric('rls_decisions_total{decision="allow",reason="ok"}')
            received_before = up.received.value
            for i in range(ROUNDS):
                for name in [WITH, WITHOUT] if i % 2 == 0 else [WITHOUT, WITH]:
                    cpu0, busy0, wall0 = cpu_seconds(ours), machine_busy_s(), time.monotonic()
                    r = asyncio.run(open_loop(ports[name], request, RATE, ROUND_S))
                    r.others_cpus = (machine_busy_s() - busy0 - (cpu_seconds(ours) - cpu0)) / (
                        time.monotonic() - wall0
                    )
                    rounds[name].append(r)
            allowed = rls.metric('rls_decisions_total{decision="allow",reason="ok"}')
            tenant_samples = rls.metric(
                f'rls_tenant_samples_total{{tenant="{TENANT}",decision="allow"}}'
            )

    # Correctness: every push answered 200, reached the upstream intact, and (A) was checked.
    sent = {name: sum(len(r.latencies_ms) for r in rs) for name, rs in rounds.items()}
    for name, rs in rounds.items():
        statuses = sum((Counter(r.statuses) for r in rs), Counter[int]())
        assert statuses == {200: sent[name]}, (name, statuses)
    assert up.received.value - received_before == sent[WITH] + sent[WITHOUT]
    assert up.wrong.value == 0
    assert allowed - checks_before == sent[WITH]
    assert tenant_samples == allowed * samples  # warm-up included: every check counted the body

    # The estimate: the median over rounds of each round's percentile. One round hit by a
    # stall of another process (a 50 ms pause puts ~15 requests of a round past its p99)
    # would otherwise decide the pooled p99 alone; the pooled figures are reported beside.
    est: dict[str, dict[str, float]] = {}
    for name, rs in rounds.items():
        pooled = [x for r in rs for x in r.latencies_ms]
        est[name] = {
            "p50": statistics.median(percentile(r.latencies_ms, 0.50) for r in rs),
            "p99": statistics.median(percentile(r.latencies_ms, 0.99) for r in rs),
            "pooled_p50": percentile(pooled, 0.50),
            "pooled_p99": percentile(pooled, 0.99),
        }
    a, b = est[WITH], est[WITHOUT]
    added_p50, added_p99 = a["p50"] - b["p50"], a["p99"] - b["p99"]
    every = [r for rs in rounds.values() for r in rs]
    late = [x for r in every for x in r.late_ms]
    others = "; ".join(
        f"{name} " + " ".join(f"{r.others_cpus:.2f}" for r in rs) for name, rs in rounds.items()
    )
    load = f"{RATE} req/s open loop, {ROUNDS} rounds of {ROUND_S:g} s, body {len(body.body)} B"
    for name in (WITHOUT, WITH):
        per_round = " ".join(f"{percentile(r.latencies_ms, 0.99):.2f}" for r in rounds[name])
        report.info(f"edge: p50 {name}", est[name]["p50"], "ms", load)
        report.info(f"edge: p99 {name}", est[name]["p99"], "ms", f"per round: {per_round}")
        report.info(
            f"edge: pooled p99 {name}",
            est[name]["pooled_p99"],
            "ms",
            f"all {sent[name]} requests of the rounds; pooled p50 {est[name]['pooled_p50']:.2f} ms",
        )
    report.info("edge: added p50", added_p50, "ms", "with - without ext_authz, same run")
    report.info(
        "edge: added pooled p99",
        a["pooled_p99"] - b["pooled_p99"],
        "ms",
        f"p99 with / without: {a['p99'] / b['p99']:.2f}x (medians of rounds)",
    )
    report.info(
        "edge: client send lateness p99",
        percentile(late, 0.99),
        "ms",
        f"open-loop fidelity; {sum(r.new_connections for r in every)} extra connections; "
        f"CPUs other processes used per round: {others}",
    )
    detail = f"p99 {a['p99']:.2f} vs {b['p99']:.2f} ms, medians of {ROUNDS} rounds"
    ok_aim = report.check(
        "edge: added p99 (aim)", added_p99, at_most=2.0, enforced=STRICT, unit="ms", detail=detail
    )
    ok = report.check(
        "edge: added p99", added_p99, at_most=5.0, enforced=True, unit="ms", detail=detail
    )
    print(
        f"\nedge latency (medians of {ROUNDS} rounds): p50 {b['p50']:.2f} -> {a['p50']:.2f} ms "
        f"(+{added_p50:.2f}), p99 {b['p99']:.2f} -> {a['p99']:.2f} ms (+{added_p99:.2f}); "
        f"pooled p99 {b['pooled_p99']:.2f} -> {a['pooled_p99']:.2f} ms"
    )
    if STRICT:
        assert ok_aim, f"added p99 {added_p99:.2f} ms: {detail}"
    assert ok, f"added p99 {added_p99:.2f} ms: {detail}"
