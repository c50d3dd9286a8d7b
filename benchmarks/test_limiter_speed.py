"""Cost of one rate-limit decision: ``TokenBucket.allow`` against pure Python.

Candidates, each making the same fixed sequence of decisions through the same loop:

- core: ``mimir_edge.TokenBucket.allow``;
- python: :class:`PyTokenBucket`, the same golang.org/x/time/rate semantics (and the same
  integer nano-token arithmetic) in pure Python;
- floor: a Python method with the same signature that returns ``True``; the cost of the
  loop and of a call, which no implementation called from Python can go below.

Target: core <= python (ratio <= 1.0, asserted). The two buckets must make the same
decisions (asserted), or the comparison means nothing.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest

from benchmarks._harness import Benchmark, Report, Timings, interleaved
from mimir_edge import MAX_BURST, TokenBucket

pytestmark = pytest.mark.benchmark(group="limiter")

MAX_CORE_OVER_PYTHON = 1.0
REPS = 25
SEC = 1_000_000_000
_SCALE = 1_000_000_000  # nano-tokens per token
_U64_MAX = 2**64 - 1


class PyTokenBucket:
    """x/time/rate token bucket in pure Python, with the core's integer arithmetic."""

    __slots__ = ("_burst", "_burst_nt", "_last", "_rate", "_tokens")

    def __init__(self, rate: float, burst: int, *, now_ns: int) -> None:
        if math.isnan(rate) or rate < 0:
            raise ValueError(f"invalid rate {rate}")
        # Nano-tokens per second, rounded half away from zero and saturated like Rust's cast.
        self._rate = None if math.isinf(rate) else min(math.floor(rate * _SCALE + 0.5), _U64_MAX)
        self._burst = min(burst, MAX_BURST)
        self._burst_nt = self._burst * _SCALE
        self._tokens = self._burst_nt  # starts full
        self._last = now_ns

    def _available(self, now_ns: int) -> int:
        if self._rate is None:
            return self._burst_nt
        elapsed = max(now_ns - self._last, 0)  # time going backwards refills nothing
        return min(self._tokens + elapsed * self._rate // SEC, self._burst_nt)

    def allow(self, n: int, /, *, now_ns: int) -> bool:
        rate = self._rate
        if rate is None:
            return True
        # _available() inlined: this is the hot path being measured.
        elapsed = now_ns - self._last
        available = self._tokens + elapsed * rate // SEC if elapsed > 0 else self._tokens
        if available > self._burst_nt:
            available = self._burst_nt
        need = n * _SCALE
        if n <= self._burst and need <= available:
            self._tokens = available - need
            self._last = now_ns
            return True
        return False

    def wait_ns(self, n: int, /, *, now_ns: int) -> int | None:
        if self._rate is None:
            return 0
        if n > self._burst:
            return None
        deficit = n * _SCALE - self._available(now_ns)
        if deficit <= 0:
            return 0
        if self._rate == 0:
            return None
        return min(-(-deficit * SEC // self._rate), _U64_MAX)

    def tokens(self, *, now_ns: int) -> float:
        return float(self._available(now_ns)) / _SCALE


class Floor:
    """A trivial Python method call with ``allow``'s signature."""

    __slots__ = ()

    def allow(self, n: int, /, *, now_ns: int) -> bool:
        return True


def _steps(seed: int, count: int, max_n: int, max_dt: int, back: int = 0) -> list[tuple[int, int]]:
    """A fixed sequence of (n, now_ns), now starting at 10 s and stepping by [-back, max_dt]."""
    rng = random.Random(seed)
    now = 10 * SEC
    out = []
    for _ in range(count):
        now = max(0, now + rng.randint(-back, max_dt))
        out.append((rng.randint(0, max_n), now))
    return out


#: A tenant at 50k samples/s with a 100k burst, sent requests of up to 5k samples every
#: 0-50 ms: twice the rate it may send at, so about a third of the requests are denied.
RATE, BURST = 50_000.0, 100_000
DECISIONS = _steps(seed=1, count=20_000, max_n=5_000, max_dt=50_000_000)


def _decide_all(allow: Callable[..., bool]) -> int:
    """The timed loop: the same for every candidate. Returns how many were allowed."""
    allowed = 0
    for n, now in DECISIONS:
        if allow(n, now_ns=now):
            allowed += 1
    return allowed


def run_core() -> int:
    return _decide_all(TokenBucket(RATE, BURST, now_ns=0).allow)


def run_python() -> int:
    return _decide_all(PyTokenBucket(RATE, BURST, now_ns=0).allow)


def run_floor() -> int:
    return _decide_all(Floor().allow)


@pytest.fixture(scope="module")
def limiter_timing(report: Report) -> Timings:
    timing = interleaved({"core": run_core, "python": run_python, "floor": run_floor}, reps=REPS)
    n = len(DECISIONS)
    names = {
        "core": "TokenBucket.allow (core)",
        "python": "PyTokenBucket.allow (pure Python)",
        "floor": "trivial Python method call (floor)",
    }
    for key, label in names.items():
        report.info(
            f"limiter: {label}",
            timing.min(key) / n,
            "ns/decision",
            f"median {timing.median(key) / n:.0f} ns",
        )
    report.info(
        "limiter: core above floor",
        (timing.min("core") - timing.min("floor")) / n,
        "ns/decision",
        f"python above floor: {(timing.min('python') - timing.min('floor')) / n:.0f} ns",
    )
    report.info(
        "limiter: core/floor",
        timing.ratio("core", "floor"),
        "x",
        f"python/floor {timing.ratio('python', 'floor'):.2f}x",
    )
    return timing


# --- correctness of the baseline ------------------------------------------------------

CONFIGS = [
    (10.0, 100),
    (RATE, BURST),
    (0.5, 1),  # fractional rate: one token every 2 s
    (0.0, 5),  # zero rate: the burst, once
    (123.456, 1_000),
    (1e6, 50),
    (math.inf, 0),  # unlimited
]


def _compare_on_fixed_sequence(rate: float, burst: int) -> list[bool]:
    """Core and baseline side by side: same decisions, waits and token counts at every step."""
    max_dt = 3 * SEC if rate < 1 else max(1, int(2 * burst / max(rate, 1) * SEC))
    steps = _steps(seed=burst, count=2_000, max_n=burst + burst // 5 + 1, max_dt=max_dt, back=SEC)
    core = TokenBucket(rate, burst, now_ns=steps[0][1])
    py = PyTokenBucket(rate, burst, now_ns=steps[0][1])
    decisions = []
    for i, (n, now) in enumerate(steps):
        where = f"rate={rate} burst={burst} step {i}: n={n} now_ns={now}"
        assert py.wait_ns(n, now_ns=now) == core.wait_ns(n, now_ns=now), where
        assert py.tokens(now_ns=now) == core.tokens(now_ns=now), where
        decision = core.allow(n, now_ns=now)
        assert py.allow(n, now_ns=now) == decision, where
        decisions.append(decision)
    return decisions


# --- the benchmarks -------------------------------------------------------------------


def test_python_bucket(benchmark: Benchmark) -> None:
    """Baseline: pure-Python x/time/rate bucket over the timing sequence.

    First, that it is the core's semantics: on fixed sequences over several limits, both
    make the same decisions, waits and token counts (else the comparison means nothing).
    """
    for rate, burst in CONFIGS:
        decisions = _compare_on_fixed_sequence(rate, burst)
        if not math.isinf(rate):
            assert any(decisions), f"rate={rate} burst={burst}: never allows, tests nothing"
            assert not all(decisions), f"rate={rate} burst={burst}: never denies, tests nothing"

    benchmark.extra_info["decisions"] = len(DECISIONS)
    allowed = benchmark(run_python)
    assert allowed == run_core()
    assert 0 < allowed < len(DECISIONS)


def test_floor_method_call(benchmark: Benchmark) -> None:
    """Floor: loop + a trivial Python method call per decision."""
    benchmark.extra_info["decisions"] = len(DECISIONS)
    assert benchmark(run_floor) == len(DECISIONS)


def test_token_bucket_allow_beats_python(
    benchmark: Benchmark, limiter_timing: Timings, report: Report
) -> None:
    """``TokenBucket.allow``: at most the cost of the pure-Python bucket per decision."""
    benchmark.extra_info["decisions"] = len(DECISIONS)
    allowed = benchmark(run_core)
    assert allowed == run_python()

    ratio = limiter_timing.ratio("core", "python")
    ok = report.check(
        "limiter core/python: TokenBucket.allow / PyTokenBucket.allow",
        ratio,
        at_most=MAX_CORE_OVER_PYTHON,
        enforced=True,
        detail=f"paired median {limiter_timing.paired_ratio('core', 'python'):.2f}x; "
        f"{allowed}/{len(DECISIONS)} allowed",
    )
    benchmark.extra_info["core_over_python"] = ratio
    assert ok, f"TokenBucket.allow costs {ratio:.2f}x the pure-Python bucket"
