"""TokenBucket through Python: Mimir's (golang.org/x/time/rate) semantics, time injected."""

from __future__ import annotations

import math
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mimir_edge import MAX_BURST, TokenBucket

SEC = 1_000_000_000


def test_starts_full_then_refills_at_rate() -> None:
    b = TokenBucket(10_000, 200_000, now_ns=0)
    assert b.tokens(now_ns=0) == 200_000
    assert b.allow(200_000, now_ns=0)
    assert not b.allow(1, now_ns=0)
    assert b.allow(10_000, now_ns=SEC)
    assert not b.allow(1, now_ns=SEC)


def test_denied_request_takes_nothing() -> None:
    b = TokenBucket(1, 10, now_ns=0)
    assert not b.allow(11, now_ns=0)
    assert b.tokens(now_ns=0) == 10


def test_more_than_burst_never_passes() -> None:
    b = TokenBucket(1e6, 100, now_ns=0)
    assert b.wait_ns(101, now_ns=0) is None
    assert not b.allow(101, now_ns=10**18)


def test_wait_ns_is_exact_and_never_early() -> None:
    b = TokenBucket(100, 100, now_ns=0)
    assert b.allow(100, now_ns=0)
    wait = b.wait_ns(50, now_ns=0)
    assert wait == SEC // 2
    assert not b.allow(50, now_ns=wait - 1)
    assert b.allow(50, now_ns=wait)


def test_unlimited_and_zero_rate() -> None:
    inf = TokenBucket(math.inf, 0, now_ns=0)
    assert inf.allow(10**12, now_ns=0)
    assert inf.wait_ns(10**12, now_ns=0) == 0
    assert inf.rate == math.inf
    zero = TokenBucket(0, 5, now_ns=0)
    assert zero.allow(5, now_ns=0)
    assert zero.wait_ns(1, now_ns=10**15) is None


def test_set_limits_keeps_tokens() -> None:
    b = TokenBucket(10, 100, now_ns=0)
    assert b.allow(60, now_ns=0)
    b.set_limits(100, 1000, now_ns=0)
    assert (b.rate, b.burst) == (100.0, 1000)
    assert b.tokens(now_ns=0) == 40
    assert b.tokens(now_ns=SEC) == 140


@pytest.mark.parametrize("rate", [-1.0, math.nan])
def test_bad_rate_is_a_value_error(rate: float) -> None:
    with pytest.raises(ValueError, match="invalid rate"):
        TokenBucket(rate, 1, now_ns=0)


def test_negative_inputs_are_refused() -> None:
    with pytest.raises(OverflowError):
        TokenBucket(1, -1, now_ns=0)
    b = TokenBucket(1, 1, now_ns=0)
    with pytest.raises(OverflowError):
        b.allow(-1, now_ns=0)
    with pytest.raises(OverflowError):
        b.allow(1, now_ns=-5)


def test_huge_burst_is_clamped() -> None:
    assert TokenBucket(1, 10**15, now_ns=0).burst == MAX_BURST


def test_immutable_from_python() -> None:
    b = TokenBucket(1, 1, now_ns=0)
    with pytest.raises(AttributeError):
        b.rate = 5  # type: ignore[misc]


def test_thread_safe_under_contention() -> None:
    """8 threads hammering one bucket at a frozen instant take exactly the burst."""
    b = TokenBucket(1, 5_000, now_ns=0)
    allowed = [0] * 8

    def worker(i: int) -> None:
        for _ in range(2_000):
            if b.allow(1, now_ns=0):
                allowed[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(allowed) == 5_000


@settings(max_examples=200, deadline=None)
@given(
    rate=st.integers(1, 1_000_000),
    burst=st.integers(1, 1_000_000),
    steps=st.lists(st.tuples(st.integers(0, 2 * SEC), st.integers(0, 1_200_000)), max_size=60),
)
def test_allowed_total_never_exceeds_budget(
    rate: int, burst: int, steps: list[tuple[int, int]]
) -> None:
    """Over any window, allowed tokens <= burst + rate * elapsed (the limit's budget)."""
    b = TokenBucket(rate, burst, now_ns=0)
    now = 0
    allowed = 0
    for dt, n in steps:
        now += dt
        if b.allow(n, now_ns=now):
            allowed += n
            assert n <= burst
        else:
            wait = b.wait_ns(n, now_ns=now)
            assert (wait is None) == (n > burst)
            assert wait is None or wait > 0
    assert allowed <= burst + rate * now / SEC + 1e-6
