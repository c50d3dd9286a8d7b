"""The open-loop clock and the closed-loop budget, with the time passed in."""

from __future__ import annotations

import pytest

from mimir_edge.loadgen.pacing import Schedule, Tickets


def test_sends_due_while_every_worker_was_busy_are_skipped_not_bunched() -> None:
    s = Schedule(rate=10, start=0.0, duration_s=1.0, limit=None)  # due at 0.0, 0.1, ... 0.9
    assert s.claim(0.0) == 0.0
    assert s.claim(0.0) == pytest.approx(0.1)  # a second idle worker waits for the next one
    # Nobody was free from 0.2 to 0.5: those sends are skipped, the next is on time.
    assert s.claim(0.5) == pytest.approx(0.5)
    assert s.skipped == 3
    # A send a little late (within the grace) is still sent.
    assert s.claim(0.61) == pytest.approx(0.6)
    # The run ends at 1.0 with 0.7, 0.8 and 0.9 never claimed: skipped too.
    s.close(1.0)
    assert (s.claimed, s.skipped) == (4, 6)
    assert s.claim(1.0) is None  # nothing is due after the end


def test_request_limit_counts_sends_not_skips() -> None:
    s = Schedule(rate=100, start=0.0, duration_s=10.0, limit=3)
    assert [s.claim(0.0) is not None for _ in range(4)] == [True, True, True, False]
    s.close(5.0)
    assert s.skipped == 0  # the limit, not the workers, ended the run


def test_tickets_are_exact() -> None:
    t = Tickets(2)
    assert [t.take() for _ in range(4)] == [True, True, False, False]
    assert all(Tickets(None).take() for _ in range(100))
