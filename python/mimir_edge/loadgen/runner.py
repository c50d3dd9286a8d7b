"""Running a load: worker threads, each with its own keep-alive connection and its own bodies.

Each worker owns a share of every tenant's series (as each series belongs to one of
Prometheus' remote-write shards), so per series the timestamps a server sees only go up. A
closed loop sends back to back; an open loop (``rate``) takes send times from one clock
(:mod:`mimir_edge.loadgen.pacing`). Per-request bookkeeping is a few dict and list updates
in the worker's own counters; everything is added up once, at the end.
"""

from __future__ import annotations

import threading
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass

from mimir_edge import WriteStats
from mimir_edge.loadgen.bodies import (
    Body,
    Template,
    build_templates,
    content_type,
    load_corpus,
    version_header,
)
from mimir_edge.loadgen.client import Connection, Target, error_reason
from mimir_edge.loadgen.config import LoadConfig
from mimir_edge.loadgen.pacing import Schedule, Tickets
from mimir_edge.loadgen.report import Counts, LatencyHistogram, LoadReport, TenantReport
from mimir_edge.loadgen.series import realistic_series

__all__ = ["Progress", "TargetUnreachable", "run"]

# Pause after a connection error, so an unreachable server does not spin a worker at 100 %.
_ERROR_PAUSE_S = 0.01
# Status key for a request that ended in a connection error (no HTTP status).
_NO_ANSWER = 0


class TargetUnreachable(ConnectionError):
    """No connection could be opened to the URL before the run (the command exits 1)."""


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot while running, for a progress line."""

    elapsed_s: float
    duration_s: float
    requests: int
    status: dict[int, int]
    connection_errors: int
    skipped: int


@dataclass(frozen=True, slots=True)
class _Pool:
    """What one worker sends, in turn: each of its bodies once for every tenant.

    Slot ``k`` is body ``k // tenants`` for tenant ``k % tenants``, so consecutive sends go to
    different tenants. Exactly one of ``bodies`` (sent as they are) and ``templates``
    (re-stamped per send) is non-empty.
    """

    heads: tuple[bytes, ...]
    bodies: tuple[Body, ...] = ()
    templates: tuple[Template, ...] = ()

    @property
    def slots(self) -> int:
        return len(self.heads) * (len(self.bodies) or len(self.templates))

    def stats(self, slot: int) -> WriteStats:
        i = slot // len(self.heads)
        return self.bodies[i].stats if self.bodies else self.templates[i].stats


class _Worker:
    def __init__(self, pool: _Pool, target: Target, timeout_s: float, start: int = 0) -> None:
        self.pool = pool
        self.start = start % pool.slots
        self.conn = Connection(target, timeout_s=timeout_s)
        #: (slot, status or _NO_ANSWER) -> requests
        self.counts: dict[tuple[int, int], int] = {}
        self.errors: dict[str, int] = {}
        self.examples: dict[int, str] = {}
        self.latency = LatencyHistogram()
        self.bytes_sent = 0
        self.finished_at = 0.0

    def loop(
        self,
        go: threading.Event,
        halt: threading.Event,
        schedule: Schedule | None,
        tickets: Tickets,
        done: Callable[[], None],
    ) -> None:
        counts, latency, conn = self.counts, self.latency, self.conn
        heads, bodies, templates = self.pool.heads, self.pool.bodies, self.pool.templates
        tenants, size = len(heads), self.pool.slots
        # Per slot (a tenant's series in one template), the last timestamp sent.
        last_ts = array("q", bytes(8 * size)) if templates else array("q")
        clock = time.perf_counter
        slot = self.start
        go.wait()
        try:
            while not halt.is_set():
                if schedule is not None:
                    due = schedule.claim(clock())
                    if due is None:
                        break
                    delay = due - clock()
                    if delay > 0 and halt.wait(delay):
                        break
                elif not tickets.take():
                    break
                key = slot
                slot = slot + 1 if slot + 1 < size else 0
                if templates:
                    ts = time.time_ns() // 1_000_000
                    if ts <= last_ts[key]:
                        ts = last_ts[key] + 1
                    last_ts[key] = ts
                    data = templates[key // tenants].stamped(ts)
                else:
                    data = bodies[key // tenants].data
                t0 = clock()
                try:
                    status = conn.post(heads[key % tenants], data)
                except OSError as e:
                    reason = error_reason(e)
                    self.errors[reason] = self.errors.get(reason, 0) + 1
                    counts[key, _NO_ANSWER] = counts.get((key, _NO_ANSWER), 0) + 1
                    halt.wait(_ERROR_PAUSE_S)
                    continue
                latency.add(clock() - t0)
                self.bytes_sent += len(data)
                counts[key, status] = counts.get((key, status), 0) + 1
                if status >= 300 and status not in self.examples:
                    text = conn.last_body.decode("utf-8", "replace")
                    self.examples[status] = " ".join(text.split())[:200]
        finally:
            conn.close()
            self.finished_at = clock()
            done()


def _pools(config: LoadConfig, target: Target) -> list[_Pool]:
    """Each worker's pool: its share of the series (or the corpus, from its own start)."""
    heads = tuple(
        target.head(
            tenant=t,
            content_type=content_type(config.protocol),
            version=version_header(config.protocol),
        )
        for t in config.tenants
    )
    c = config.concurrency
    if config.corpus is not None:
        bodies = load_corpus(config.corpus, protocol=config.protocol)
        # Workers start at different files.
        starts = [w % len(bodies) for w in range(c)]
        return [_Pool(heads, bodies=(*bodies[k:], *bodies[:k])) for k in starts]
    specs = realistic_series(config.series, native_histograms=config.histograms)
    return [
        _Pool(
            heads,
            templates=tuple(
                build_templates(
                    specs[w::c],
                    samples_per_request=config.samples_per_request,
                    protocol=config.protocol,
                    exemplars=config.exemplars,
                )
            ),
        )
        for w in range(c)
    ]


def _preflight(target: Target, timeout_s: float) -> None:
    conn = Connection(target, timeout_s=min(timeout_s, 5.0))
    try:
        conn.connect()
    except OSError as e:
        raise TargetUnreachable(
            f"cannot connect to {target.host}:{target.port}: {error_reason(e)}"
        ) from e
    finally:
        conn.close()


def run(
    config: LoadConfig,
    *,
    progress: Callable[[Progress], None] | None = None,
    progress_interval_s: float = 0.5,
    stop: threading.Event | None = None,
) -> LoadReport:
    """Run ``config`` and report. Blocks until the run ends: its duration or request count is
    reached, ``stop`` is set, or Ctrl-C (``KeyboardInterrupt`` in this thread) — the last two
    end it early with ``interrupted`` set; requests in flight finish (bounded by the timeout).

    Raises :class:`~mimir_edge.loadgen.bodies.CorpusError` for a corpus that cannot be read
    and :class:`TargetUnreachable` if not even one connection opens before the run.
    """
    target = config.target
    pools = _pools(config, target)
    _preflight(target, config.timeout_s)

    # Workers start at different tenants, so that a short run still spreads over them all.
    c = config.concurrency
    workers = [
        _Worker(pool, target, config.timeout_s, start=w * pool.slots // c)
        for w, pool in enumerate(pools)
    ]
    halt = threading.Event()
    all_done = threading.Event()
    remaining = [len(workers)]
    lock = threading.Lock()

    def done() -> None:
        with lock:
            remaining[0] -= 1
            if remaining[0] == 0:
                all_done.set()

    schedule = (
        Schedule(config.rate, 0.0, config.duration_s, config.requests) if config.rate else None
    )
    tickets = Tickets(config.requests)
    go = threading.Event()
    threads = [
        threading.Thread(
            target=w.loop,
            args=(go, halt, schedule, tickets, done),
            name=f"load-worker-{n}",
            daemon=True,  # a worker stuck in a send must not keep the process alive
        )
        for n, w in enumerate(workers)
    ]
    for t in threads:
        t.start()
    # The clock starts once every thread exists (starting a thousand takes a while).
    start = time.perf_counter()
    deadline = start + config.duration_s
    if schedule is not None:
        schedule.start = start
    go.set()

    interrupted = False
    next_progress = start + progress_interval_s
    try:
        while True:
            now = time.perf_counter()
            if now >= deadline or all_done.is_set():
                break
            if stop is not None and stop.is_set():
                interrupted = True
                break
            if progress is not None and now >= next_progress:
                progress(_progress(workers, schedule, now - start, config.duration_s))
                next_progress = now + progress_interval_s
            all_done.wait(min(deadline - now, 0.1))
    except KeyboardInterrupt:
        interrupted = True
    halt.set()
    if schedule is not None:
        schedule.close(min(time.perf_counter(), deadline))
    try:
        join_deadline = time.monotonic() + config.timeout_s + 1.0
        for t in threads:
            t.join(max(0.0, join_deadline - time.monotonic()))
    except KeyboardInterrupt:  # a second Ctrl-C: report what is known now
        interrupted = True
    end = max([w.finished_at for w in workers] + [start])
    if any(t.is_alive() for t in threads):
        end = time.perf_counter()
    return _report(config, workers, schedule, end - start, interrupted)


def _progress(
    workers: list[_Worker], schedule: Schedule | None, elapsed: float, duration: float
) -> Progress:
    status: dict[int, int] = {}
    errors = 0
    for w in workers:
        for (_, code), n in w.counts.copy().items():
            if code == _NO_ANSWER:
                errors += n
            else:
                status[code] = status.get(code, 0) + n
    requests = sum(status.values()) + errors
    skipped = schedule.skipped if schedule else 0
    return Progress(elapsed, duration, requests, status, errors, skipped)


def _report(
    config: LoadConfig,
    workers: list[_Worker],
    schedule: Schedule | None,
    elapsed: float,
    interrupted: bool,
) -> LoadReport:
    names = config.tenants
    t_requests = [0] * len(names)
    t_status: list[dict[int, int]] = [{} for _ in names]
    t_errors = [0] * len(names)
    t_sent = [Counts()] * len(names)
    t_accepted = [Counts()] * len(names)
    errors: dict[str, int] = {}
    examples: dict[int, str] = {}
    latency = LatencyHistogram()
    latency.merge(w.latency for w in workers)
    for w in workers:
        tenants = len(w.pool.heads)
        for (key, code), n in w.counts.copy().items():
            t = key % tenants
            t_requests[t] += n
            if code == _NO_ANSWER:
                t_errors[t] += n
                continue
            t_status[t][code] = t_status[t].get(code, 0) + n
            carried = Counts.of(w.pool.stats(key), n)
            t_sent[t] += carried
            if 200 <= code < 300:
                t_accepted[t] += carried
        for reason, n in w.errors.items():
            errors[reason] = errors.get(reason, 0) + n
        for code, text in w.examples.items():
            examples.setdefault(code, text)
    status: dict[int, int] = {}
    for s in t_status:
        for code, n in s.items():
            status[code] = status.get(code, 0) + n
    return LoadReport(
        config=config,
        elapsed_s=elapsed,
        interrupted=interrupted,
        requests=sum(t_requests),
        skipped=schedule.skipped if schedule else 0,
        status=status,
        errors=errors,
        sent=sum(t_sent, Counts()),
        accepted=sum(t_accepted, Counts()),
        bytes_sent=sum(w.bytes_sent for w in workers),
        latency=latency,
        tenants={
            name: TenantReport(t_requests[i], t_status[i], t_errors[i], t_sent[i], t_accepted[i])
            for i, name in enumerate(names)
        },
        examples=examples,
    )
