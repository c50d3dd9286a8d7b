"""When workers send: the open-loop clock (:class:`Schedule`) and the closed-loop request
budget (:class:`Tickets`), both shared by all workers of a run."""

from __future__ import annotations

import math
import threading

__all__ = ["LATE_GRACE_S", "Schedule", "Tickets"]

# An open-loop send may start this late and still count as on time; later, it is skipped.
# Wide enough for thread wake-up delays on a busy 2-core machine.
LATE_GRACE_S = 0.025


class Schedule:
    """Open-loop send times: slot ``n`` is due at ``start + n / rate``.

    An idle worker claims the earliest unclaimed slot and waits for its time. A slot already
    more than :data:`LATE_GRACE_S` overdue when claimed came due while every worker was busy:
    it is skipped (counted), not sent in a catch-up burst.
    """

    def __init__(self, rate: float, start: float, duration_s: float, limit: int | None) -> None:
        self.interval = 1.0 / rate
        self.start = start
        self.slots = math.ceil(duration_s * rate)  # slots due before the end of the run
        self.limit = limit
        self.next = 0
        self.claimed = 0
        self.skipped = 0
        self._lock = threading.Lock()

    def claim(self, now: float) -> float | None:
        with self._lock:
            if self.limit is not None and self.claimed >= self.limit:
                return None
            n = self.next
            late = now - LATE_GRACE_S - (self.start + n * self.interval)
            if late > 0:
                missed = min(int(late / self.interval) + 1, self.slots - n)
                self.skipped += max(missed, 0)
                n += max(missed, 0)
            if n >= self.slots:
                return None
            self.next = n + 1
            self.claimed += 1
            return self.start + n * self.interval

    def close(self, now: float) -> None:
        """At the end: slots that came due by ``now`` and were never claimed are skipped."""
        with self._lock:
            due = math.floor((now - LATE_GRACE_S - self.start) / self.interval) + 1
            unclaimed = min(due, self.slots) - self.next
            if unclaimed > 0 and (self.limit is None or self.claimed < self.limit):
                self.skipped += unclaimed
                self.next += unclaimed


class Tickets:
    """Closed-loop request budget (``--requests``), exact across workers."""

    def __init__(self, limit: int | None) -> None:
        self.left = limit
        self._lock = threading.Lock()

    def take(self) -> bool:
        if self.left is None:
            return True
        with self._lock:
            if self.left <= 0:
                return False
            self.left -= 1
            return True
