"""How fast ``scan_remote_write`` counts a request, against what Python can do without it.

Candidates, each run over the whole corpus per call (per body = per call / bodies):

(a) python way: ``cramjam.snappy.decompress_raw`` + the protoc-generated decoder (upb) +
    counting in Python; what a limiter would do without the compiled core.
(b) decompression alone: ``cramjam.snappy.decompress_raw``; a floor no scanner can beat by
    much, since it must decompress too.
(c) ``mimir_edge.scan_remote_write``.

Targets: c at least 15x faster than a (asserted); c at most 1.3x the time of b (reported;
asserted with ``MIMIR_EDGE_STRICT_BENCH=1``); scanning in two threads at most 0.8x the wall
time of scanning the same work in one (asserted: the GIL is released).
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cramjam
import pytest

from benchmarks._harness import (
    STRICT,
    Benchmark,
    NeighbourLoad,
    Report,
    Timings,
    interleaved,
)
from mimir_edge import WriteStats, scan_remote_write
from tests.conftest import CorpusFile

pytestmark = pytest.mark.benchmark(group="scan")

MIN_SPEEDUP_VS_PYTHON = 15.0
MAX_RATIO_VS_DECOMPRESS = 1.3
# Always asserted: the measured ratio is ~1.65x; past 2x the scanner has regressed.
GUARD_RATIO_VS_DECOMPRESS = 2.0
MAX_PARALLEL_OVER_SERIAL = 0.8
#: Interleaved repetitions; each times every candidate for about one pass of (a), ~0.2 s.
REPS = 15
#: GIL experiment: clean repetitions wanted, fewest to conclude anything, most to try.
GIL_REPS, GIL_MIN_CLEAN, GIL_MAX_REPS = 7, 3, 30
#: A repetition is clean if other processes kept fewer CPUs than this busy meanwhile.
MAX_NEIGHBOUR_CORES = 0.35
#: Serial work per GIL repetition (the parallel run takes about half of it).
GIL_SERIAL_NS = 240e6


# --- the candidates -------------------------------------------------------------------


def python_way_counts(pb: Any, body: bytes) -> dict[str, int]:
    """Decode a remote write 1.0 body with the reference decoder and count it in Python.

    Same definitions as the core: label counts and lengths (in bytes) are over the series'
    labels, not the exemplars'; every sample, histogram, exemplar and metadata entry is
    ingested.
    """
    raw = bytes(cramjam.snappy.decompress_raw(body))
    req = pb.WriteRequest.FromString(raw)
    samples = histograms = exemplars = label_pairs = 0
    max_labels = max_name = max_value = 0
    for ts in req.timeseries:
        labels = ts.labels
        n = len(labels)
        label_pairs += n
        max_labels = max(max_labels, n)
        for label in labels:
            max_name = max(max_name, len(label.name.encode()))
            max_value = max(max_value, len(label.value.encode()))
        samples += len(ts.samples)
        histograms += len(ts.histograms)
        exemplars += len(ts.exemplars)
    metadata = len(req.metadata)
    return {
        "series": len(req.timeseries),
        "samples": samples,
        "histograms": histograms,
        "exemplars": exemplars,
        "metadata": metadata,
        "label_pairs": label_pairs,
        "max_labels_per_series": max_labels,
        "max_label_name_length": max_name,
        "max_label_value_length": max_value,
        "decoded_bytes": len(raw),
        "ingested": samples + histograms + exemplars + metadata,
    }


@pytest.fixture(scope="module")
def run_python_way(pb: Any, bodies: list[bytes]) -> Callable[[], list[dict[str, int]]]:
    def run() -> list[dict[str, int]]:
        return [python_way_counts(pb, body) for body in bodies]

    return run


@pytest.fixture(scope="module")
def run_decompress(bodies: list[bytes]) -> Callable[[], list[int]]:
    decompress = cramjam.snappy.decompress_raw

    def run() -> list[int]:
        # Each buffer is dropped before the next is made, as (a) and (c) do: holding all of
        # them (7 MB) would make every allocation fresh pages and (b) 2.5x slower.
        return [len(decompress(body)) for body in bodies]

    return run


@pytest.fixture(scope="module")
def run_scan(bodies: list[bytes]) -> Callable[[], list[WriteStats]]:
    def run() -> list[WriteStats]:
        return [scan_remote_write(body) for body in bodies]

    return run


@pytest.fixture(scope="module")
def native_counts(run_scan: Callable[[], list[WriteStats]]) -> list[dict[str, int]]:
    return [stats.as_dict() for stats in run_scan()]


@pytest.fixture(scope="module")
def scan_timing(
    run_python_way: Callable[[], object],
    run_decompress: Callable[[], object],
    run_scan: Callable[[], object],
    bodies: list[bytes],
    native_counts: list[dict[str, int]],
    report: Report,
) -> Timings:
    """(a), (b), (c) timed interleaved in the same run; per-body times and MB/s recorded."""
    timing = interleaved({"a": run_python_way, "b": run_decompress, "c": run_scan}, reps=REPS)
    decoded = sum(c["decoded_bytes"] for c in native_counts)
    labels = {
        "a": "python way (cramjam + upb + count)",
        "b": "decompress alone (cramjam)",
        "c": "scan_remote_write",
    }
    for key, label in labels.items():
        per_pass = timing.min(key)
        report.info(
            f"scan {key}: {label}",
            per_pass / len(bodies) / 1e3,
            "us/body",
            f"median {timing.median(key) / len(bodies) / 1e3:.1f} us/body; "
            f"{decoded / per_pass * 1e3:.0f} MB/s decoded",
        )
    return timing


# --- the benchmarks -------------------------------------------------------------------


def test_python_way_counts_match_scan(
    benchmark: Benchmark,
    run_python_way: Callable[[], list[dict[str, int]]],
    native_counts: list[dict[str, int]],
    corpus: list[CorpusFile],
) -> None:
    """(a) Baseline; its counts must equal the core's for every body, or it is no baseline."""
    benchmark.extra_info["bodies"] = len(corpus)
    result = benchmark(run_python_way)
    assert len(result) == len(native_counts) == len(corpus)
    mismatched = {
        entry.name: (python, native)
        for entry, python, native in zip(corpus, result, native_counts, strict=True)
        if python != native
    }
    assert not mismatched, f"python way and scan_remote_write disagree: {mismatched}"
    assert sum(c["ingested"] for c in result) > 0


def test_scan_close_to_decompression(
    benchmark: Benchmark,
    run_decompress: Callable[[], list[int]],
    native_counts: list[dict[str, int]],
    scan_timing: Timings,
    report: Report,
) -> None:
    """(b) Decompression alone; c/b is what the protobuf walk adds on top of snappy."""
    result = benchmark(run_decompress)
    assert result == [c["decoded_bytes"] for c in native_counts]

    ratio = scan_timing.ratio("c", "b")
    ok = report.check(
        "scan c/b: scan_remote_write / decompress alone",
        ratio,
        at_most=MAX_RATIO_VS_DECOMPRESS,
        enforced=STRICT,
        detail=f"paired median {scan_timing.paired_ratio('c', 'b'):.2f}x",
    )
    benchmark.extra_info["c_over_b"] = ratio
    if STRICT:  # otherwise reported only (the summary table shows met/MISSED)
        assert ok, f"scan takes {ratio:.2f}x decompression (> {MAX_RATIO_VS_DECOMPRESS}x)"
    guard = report.check(
        "scan c/b regression guard",
        ratio,
        at_most=GUARD_RATIO_VS_DECOMPRESS,
        enforced=True,
    )
    assert guard, (
        f"scan takes {ratio:.2f}x decompression: regression (> {GUARD_RATIO_VS_DECOMPRESS}x)"
    )


def test_scan_15x_faster_than_python_way(
    benchmark: Benchmark,
    run_scan: Callable[[], list[WriteStats]],
    native_counts: list[dict[str, int]],
    scan_timing: Timings,
    report: Report,
    corpus: list[CorpusFile],
) -> None:
    """(c) ``scan_remote_write`` over the corpus; at least 15x faster than (a)."""
    benchmark.extra_info["bodies"] = len(corpus)
    result = benchmark(run_scan)
    assert [s.as_dict() for s in result] == native_counts
    assert [s.ingested for s in result] == [
        e.expected["samples"]
        + e.expected["histograms"]
        + e.expected["exemplars"]
        + e.expected["metadata"]
        for e in corpus
    ]

    speedup = scan_timing.ratio("a", "c")
    ok = report.check(
        "scan a/c: python way / scan_remote_write",
        speedup,
        at_least=MIN_SPEEDUP_VS_PYTHON,
        enforced=True,
        detail=f"paired median {scan_timing.paired_ratio('a', 'c'):.1f}x",
    )
    benchmark.extra_info["a_over_c"] = speedup
    assert ok, f"scan_remote_write only {speedup:.1f}x faster than the python way"


# --- GIL release ----------------------------------------------------------------------


def _in_threads(work: Callable[[int], int], n_each: int, threads: int) -> tuple[float, list[int]]:
    """Run ``work(n_each)`` in ``threads`` threads released together; wall ns and results."""
    results = [0] * threads
    errors: list[BaseException] = []
    start = threading.Barrier(threads + 1)

    def target(i: int) -> None:
        start.wait()
        try:
            results[i] = work(n_each)
        except BaseException as e:  # re-raised in the caller's thread
            errors.append(e)

    pool = [threading.Thread(target=target, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    start.wait()
    t0 = time.perf_counter_ns()
    for t in pool:
        t.join()
    elapsed = time.perf_counter_ns() - t0
    if errors:
        raise errors[0]
    return elapsed, results


def _serial(work: Callable[[int], int], n: int) -> tuple[float, int]:
    t0 = time.perf_counter_ns()
    result = work(n)
    return time.perf_counter_ns() - t0, result


@dataclass(frozen=True)
class ThreadScaling:
    """Two threads doing ``n`` each vs one thread doing ``2n``."""

    ratio: float  # min parallel / min serial, over the clean repetitions (all if none)
    paired: float  # median of the per-repetition ratios, same repetitions
    reps: int
    clean: int  # repetitions whose parallel run had the machine to itself
    max_neighbour: float  # most CPUs other processes took during a clean parallel run


def _parallel_over_serial(
    work: Callable[[int], int], n: int, *, clean: int, max_reps: int
) -> ThreadScaling:
    """Serial and parallel runs alternate (which goes first too) until ``clean`` repetitions
    ran their parallel half with other processes using < MAX_NEIGHBOUR_CORES, or
    ``max_reps``.

    On a 2-core machine a neighbour's build or test run takes the second core away from
    the parallel run, which then cannot beat the serial one whatever the GIL does: such
    repetitions are left out, not averaged in. A workload that holds the GIL stays at
    ~1.0x in clean repetitions too (see the control), so this hides no real failure.
    """
    serial: list[float] = []
    parallel: list[float] = []
    neighbour: list[float] = []
    rep = 0
    while rep < max_reps and sum(c < MAX_NEIGHBOUR_CORES for c in neighbour) < clean:
        for kind in ("s", "p") if rep % 2 == 0 else ("p", "s"):
            if kind == "s":
                serial.append(_serial(work, 2 * n)[0])
            else:
                with NeighbourLoad() as load:
                    parallel.append(_in_threads(work, n, 2)[0])
                neighbour.append(load.cores)
        rep += 1
    good = [i for i, c in enumerate(neighbour) if c < MAX_NEIGHBOUR_CORES] or list(range(rep))
    return ThreadScaling(
        ratio=min(parallel[i] for i in good) / min(serial),
        paired=statistics.median(parallel[i] / serial[i] for i in good),
        reps=rep,
        clean=sum(c < MAX_NEIGHBOUR_CORES for c in neighbour),
        max_neighbour=max(neighbour[i] for i in good),
    )


@pytest.fixture(scope="module")
def scan_work(bodies: list[bytes]) -> Callable[[int], int]:
    def work(passes: int) -> int:
        ingested = 0
        for _ in range(passes):
            for body in bodies:
                ingested += scan_remote_write(body).ingested
        return ingested

    return work


@pytest.fixture(scope="module")
def gil_passes(scan_work: Callable[[int], int]) -> int:
    """Corpus passes per thread in the GIL experiment (serial run ~ GIL_SERIAL_NS)."""
    scan_work(1)
    one = min(_serial(scan_work, 1)[0] for _ in range(5))
    return max(4, round(GIL_SERIAL_NS / 2 / one))


@pytest.mark.benchmark(group="scan-gil")
def test_scan_releases_gil(
    benchmark: Benchmark,
    scan_work: Callable[[int], int],
    gil_passes: int,
    native_counts: list[dict[str, int]],
    report: Report,
) -> None:
    """Two threads scanning at once finish in < 0.8x the time of one thread doing both."""
    per_pass = sum(c["ingested"] for c in native_counts)
    _, results = benchmark.pedantic(_in_threads, args=(scan_work, gil_passes, 2), rounds=3)
    assert results == [gil_passes * per_pass] * 2

    name = "GIL: scan, 2 threads / 1 thread (same work)"
    m = _parallel_over_serial(scan_work, gil_passes, clean=GIL_REPS, max_reps=GIL_MAX_REPS)
    detail = (
        f"paired median {m.paired:.2f}; {m.clean}/{m.reps} reps clean (other processes "
        f"< {MAX_NEIGHBOUR_CORES} CPU), others' load in reps used <= {m.max_neighbour:.2f} CPU; "
        f"{gil_passes} corpus passes/thread"
    )
    if m.clean < GIL_MIN_CLEAN and not STRICT:
        report.inconclusive(name, m.ratio, f"<= {MAX_PARALLEL_OVER_SERIAL:g}", detail)
        pytest.skip(f"machine too busy to measure thread scaling: {detail}")
    ok = report.check(name, m.ratio, at_most=MAX_PARALLEL_OVER_SERIAL, enforced=True, detail=detail)
    benchmark.extra_info["parallel_over_serial"] = m.ratio
    assert ok, f"2 threads took {m.ratio:.2f}x the serial time: is the GIL released? {detail}"


@pytest.mark.benchmark(group="scan-gil")
def test_gil_control_pure_python(
    benchmark: Benchmark,
    scan_work: Callable[[int], int],
    report: Report,
) -> None:
    """Control: a GIL-holding pure-Python workload of similar length does not speed up.

    Reported, not asserted: it shows the experiment can tell the two cases apart.
    """
    one_scan = min(_serial(scan_work, 1)[0] for _ in range(5))
    spins = 200_000
    spin_ns = min(_serial(_spin, spins)[0] for _ in range(3))
    per_unit = max(1, round(spins * one_scan / spin_ns))  # one unit ~ one corpus scan

    def work(units: int) -> int:
        return _spin(units * per_unit)

    n = max(4, round(GIL_SERIAL_NS / 2 / one_scan))
    m = _parallel_over_serial(work, n, clean=3, max_reps=8)
    report.info(
        "GIL control: pure Python, 2 threads / 1 thread",
        m.ratio,
        "x",
        f"paired median {m.paired:.2f}; {m.clean}/{m.reps} clean reps; "
        "expected >= ~1.0 (GIL held), not asserted",
    )
    _, results = benchmark.pedantic(_in_threads, args=(work, n, 2), rounds=1)
    assert results == [_spin(n * per_unit)] * 2
    benchmark.extra_info["parallel_over_serial"] = m.ratio


def _spin(iterations: int) -> int:
    acc = 0
    for i in range(iterations):
        acc ^= i
    return acc
