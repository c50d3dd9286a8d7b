"""Shared pieces of the benchmarks: interleaved timing, other processes' load, the report.

Fixtures and pytest hooks live in ``conftest.py``; everything a test module needs to import
lives here (test modules should not import a conftest).
"""

from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

ROOT = Path(__file__).resolve().parent.parent
RATIOS_JSON = ROOT / ".benchmarks" / "ratios.json"

#: ``MIMIR_EDGE_STRICT_BENCH=1`` turns report-only targets into assertions.
STRICT_ENV = "MIMIR_EDGE_STRICT_BENCH"
STRICT = os.environ.get(STRICT_ENV) == "1"

T = TypeVar("T")


# --- pytest-benchmark's fixture, typed --------------------------------------------------


class Benchmark(Protocol):
    """The part of ``pytest_benchmark.fixture.BenchmarkFixture`` used here (it is untyped)."""

    extra_info: dict[str, Any]

    def __call__(self, function_to_benchmark: Callable[..., T], *args: Any, **kwargs: Any) -> T: ...

    def pedantic(
        self,
        target: Callable[..., T],
        args: tuple[Any, ...] = ...,
        kwargs: dict[str, Any] | None = ...,
        setup: Callable[[], Any] | None = ...,
        teardown: Callable[..., Any] | None = ...,
        rounds: int = ...,
        warmup_rounds: int = ...,
        iterations: int = ...,
    ) -> T: ...


# --- interleaved timing -----------------------------------------------------------------


@dataclass(frozen=True)
class Timings:
    """Nanoseconds per call of each candidate, one sample per repetition.

    Sample ``i`` of every candidate comes from the same repetition, so the candidates saw
    the same machine state within a few milliseconds of each other.
    """

    samples: dict[str, list[float]]
    loops: dict[str, int]

    def min(self, name: str) -> float:
        return min(self.samples[name])

    def median(self, name: str) -> float:
        return statistics.median(self.samples[name])

    def ratio(self, num: str, den: str) -> float:
        """Ratio of the fastest repetitions: the estimator the assertions use."""
        return self.min(num) / self.min(den)

    def paired_ratio(self, num: str, den: str) -> float:
        """Median over repetitions of the within-repetition ratio (a cross-check)."""
        pairs = zip(self.samples[num], self.samples[den], strict=True)
        return statistics.median(n / d for n, d in pairs)


def _time_calls(fn: Callable[[], object], loops: int) -> float:
    gc.collect()
    enabled = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        elapsed = time.perf_counter_ns() - start
    finally:
        if enabled:
            gc.enable()
    return elapsed / loops


def interleaved(
    candidates: Mapping[str, Callable[[], object]],
    *,
    reps: int,
    min_sample_ns: float = 5e6,
) -> Timings:
    """Time every candidate ``reps`` times, interleaved, rotating the order each repetition.

    Every sample lasts about as long for every candidate: at least ``min_sample_ns`` and at
    least one call of the slowest candidate (fast candidates are looped, calibrated after a
    warm-up call). Equal lengths matter for the min: a short sample can fit between two
    disturbances where a long one cannot, which would favour the fast candidate. The
    garbage collector is off while a sample runs (collected just before).
    """
    names = list(candidates)
    once: dict[str, float] = {}
    for name in names:
        candidates[name]()  # warm-up: caches, lazy imports, allocator pools
        once[name] = max(min(_time_calls(candidates[name], 1) for _ in range(3)), 1.0)
    sample_ns = max(min_sample_ns, *once.values())
    loops = {name: max(1, round(sample_ns / once[name])) for name in names}
    samples: dict[str, list[float]] = {name: [] for name in names}
    for rep in range(reps):
        shift = rep % len(names)
        order = names[shift:] + names[:shift]
        if (rep // len(names)) % 2:
            order.reverse()  # so no candidate always follows the same one
        for name in order:
            samples[name].append(_time_calls(candidates[name], loops[name]))
    return Timings(samples, loops)


# --- other processes' load -----------------------------------------------------------

_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_s() -> float | None:
    """CPU seconds all CPUs spent not idle since boot (``/proc/stat``; None elsewhere).

    Steal time counts as busy: in a VM it is CPU the hypervisor gave to someone else.
    """
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(x) for x in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / _CLK_TCK


class NeighbourLoad:
    """Context manager: how many CPUs other processes kept busy while the block ran.

    Machine-wide busy time (tick-sampled, so +-0.01 s per CPU) minus this process's CPU
    time, over the wall time. 0.0 where ``/proc/stat`` does not exist.
    """

    cores: float = 0.0

    def __enter__(self) -> NeighbourLoad:
        self._busy = _machine_busy_s()
        self._own = time.process_time()
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        busy = _machine_busy_s()
        wall = time.perf_counter() - self._wall
        if busy is None or self._busy is None or wall <= 0:
            return
        own = time.process_time() - self._own
        self.cores = max(0.0, (busy - self._busy - own) / wall)


# --- the ratio report -----------------------------------------------------------------


@dataclass
class Metric:
    name: str
    value: float
    unit: str
    target: str = ""
    #: PASS / FAIL (asserted), met / MISSED (reported only), "" (information)
    status: str = ""
    detail: str = ""


@dataclass
class Report:
    """Everything the benchmarks measured, printed at the end and saved as JSON."""

    metrics: list[Metric] = field(default_factory=list)

    def info(self, name: str, value: float, unit: str, detail: str = "") -> None:
        self.metrics.append(Metric(name, value, unit, detail=detail))

    def inconclusive(self, name: str, value: float, target: str, detail: str) -> None:
        """A target the run could not measure (the machine was too busy)."""
        self.metrics.append(Metric(name, value, "x", target, "INCONCLUSIVE", detail))

    def check(
        self,
        name: str,
        value: float,
        *,
        at_most: float | None = None,
        at_least: float | None = None,
        enforced: bool,
        unit: str = "x",
        detail: str = "",
    ) -> bool:
        """Record ``value`` against its target; returns whether the target is met.

        The caller asserts the result when ``enforced`` (so the report shows FAIL/PASS) and
        only reports it otherwise (met/MISSED).
        """
        ok = True
        bounds = []
        if at_most is not None:
            ok = ok and value <= at_most
            bounds.append(f"<= {at_most:g}")
        if at_least is not None:
            ok = ok and value >= at_least
            bounds.append(f">= {at_least:g}")
        status = ("PASS" if ok else "FAIL") if enforced else ("met" if ok else "MISSED")
        target = " and ".join(bounds) + ("" if enforced else f" (asserted if {STRICT_ENV}=1)")
        self.metrics.append(Metric(name, value, unit, target, status, detail))
        return ok

    def lines(self) -> list[str]:
        rows = [("metric", "value", "target", "status", "detail")]
        rows += [
            (m.name, f"{_fmt(m.value)} {m.unit}", m.target, m.status, m.detail)
            for m in self.metrics
        ]
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        out = []
        for i, row in enumerate(rows):
            cells = [c.ljust(w) for c, w in zip(row[:4], widths, strict=True)]
            out.append("  ".join([*cells, row[4]]).rstrip())
            if i == 0:
                out.append("  ".join("-" * w for w in widths))
        return out

    def write_json(self, path: Path = RATIOS_JSON) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "generated_unix": int(time.time()),
            "strict": STRICT,
            "python": platform.python_version(),
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "metrics": [asdict(m) for m in self.metrics],
        }
        path.write_text(json.dumps(doc, indent=1) + "\n")


def _fmt(v: float) -> str:
    if v != 0 and not 0.1 <= abs(v) < 1e4:
        return f"{v:.3g}"
    return f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"
