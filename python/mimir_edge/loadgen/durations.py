"""Durations as Go's ``time.ParseDuration`` reads them (``30s``, ``5m``, ``1h30m``, ``500ms``),
plus a plain number of seconds (``2.5``), so the rollout guide's ``-duration=5m`` works as is."""

from __future__ import annotations

import re

__all__ = ["parse_duration"]

_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,  # U+00B5 micro sign
    "μs": 1e-6,  # U+03BC Greek mu: Go accepts both
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_PLAIN = re.compile(r"\d+\.?\d*|\.\d+")


def parse_duration(text: str) -> float:
    """Seconds in ``text``: a Go duration (``1h30m``, ``1.5s``, ``250ms``) or a plain number of
    seconds. Raises ``ValueError`` with the accepted forms for anything else, including a
    negative duration (a load run cannot last less than nothing)."""
    s = text.strip()
    if s.startswith("-"):
        raise ValueError(f"invalid duration {text!r}: must not be negative")
    s = s.removeprefix("+")
    if _PLAIN.fullmatch(s):
        return float(s)
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            break
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    if not s or pos != len(s):
        raise ValueError(
            f"invalid duration {text!r}: use a number of seconds or Go's form "
            "such as 500ms, 30s, 5m, 1h30m"
        )
    return total
