"""The live per-tenant table of ``mimir-edge up``: its rows, its text, and how it is shown.

On a terminal the table is redrawn in place every second; otherwise (a pipe, a file, CI) it is
printed only when something changed, at most every ``interval_s`` seconds, so a log stays
readable.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from mimir_edge.stack.sink import TenantTotals

__all__ = ["LiveTable", "TenantRow", "build_rows", "render"]


@dataclass(frozen=True)
class TenantRow:
    tenant: str
    #: What clients got back through Envoy (from its access log).
    pushes: int = 0
    ok: int = 0
    limited: int = 0
    other: int = 0
    #: What the RLS decided (items: samples + histograms + exemplars + metadata).
    limit_per_s: float | None = None
    allowed_items: int = 0
    denied_items: int = 0
    would_deny: int = 0
    #: What arrived upstream (the built-in sink only).
    sink: TenantTotals | None = None


def build_rows(
    statuses: Mapping[str, Counter[int]],
    rls_tenants: Sequence[Mapping[str, Any]] | None,
    sink: Mapping[str, TenantTotals] | None,
) -> list[TenantRow]:
    """One row per tenant seen by any part, sorted by tenant."""
    rls = {str(r.get("tenant")): r for r in rls_tenants or ()}
    names = sorted(set(statuses) | set(rls) | set(sink or {}))
    rows = []
    for name in names:
        codes = statuses.get(name, Counter())
        r = rls.get(name, {})
        limit = (r.get("limits") or {}).get("ingestion_rate")
        rows.append(
            TenantRow(
                tenant=name,
                pushes=sum(codes.values()),
                ok=sum(n for c, n in codes.items() if 200 <= c < 300),
                limited=codes.get(429, 0),
                other=sum(n for c, n in codes.items() if c != 429 and not 200 <= c < 300),
                limit_per_s=float(limit) if isinstance(limit, int | float) else None,
                allowed_items=int(r.get("allowed_samples", 0)),
                denied_items=int(r.get("denied_samples", 0)),
                would_deny=int(r.get("would_deny_requests", 0)),
                sink=(sink or {}).get(name) if sink is not None else None,
            )
        )
    return rows


def _num(n: float | None) -> str:
    if n is None:
        return "-"
    if math.isinf(n):
        return "no limit"
    return f"{n:,.0f}" if n == int(n) else f"{n:,.2f}"


_Column = tuple[str, str, Callable[[TenantRow], str]]


def _sink_value(name: str) -> Callable[[TenantRow], str]:
    return lambda r: _num(getattr(r.sink, name)) if r.sink is not None else "0"


def _columns(with_sink: bool, with_would_deny: bool) -> list[_Column]:
    cols: list[_Column] = [
        ("", "tenant", lambda r: r.tenant),
        ("clients got", "pushes", lambda r: _num(r.pushes)),
        ("clients got", "2xx", lambda r: _num(r.ok)),
        ("clients got", "429", lambda r: _num(r.limited)),
        ("clients got", "other", lambda r: _num(r.other)),
        ("RLS (items)", "limit/s", lambda r: _num(r.limit_per_s)),
        ("RLS (items)", "allowed", lambda r: _num(r.allowed_items)),
        ("RLS (items)", "denied", lambda r: _num(r.denied_items)),
    ]
    if with_would_deny:
        cols.append(("RLS (items)", "would deny", lambda r: _num(r.would_deny)))
    if with_sink:
        group = "sink received"
        cols += [
            (group, "pushes", _sink_value("pushes")),
            (group, "series", _sink_value("series")),
            (group, "samples", _sink_value("samples")),
            (group, "histograms", _sink_value("histograms")),
            (group, "exemplars", _sink_value("exemplars")),
            (group, "bad", _sink_value("bad_bodies")),
        ]
    return cols


def render(rows: Sequence[TenantRow], *, with_sink: bool) -> list[str]:
    """The table as lines of text (no trailing newlines)."""
    if not rows:
        return ["no pushes yet"]
    cols = _columns(with_sink, any(r.would_deny for r in rows))
    cells = [[get(r) for _, _, get in cols] for r in rows]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, (_, h, _) in enumerate(cols)]
    # Group titles over their columns, drawn as "── title ─────"; a title wider than its
    # columns widens the group's last column.
    spans: list[tuple[str, int, int]] = []  # title, first column, last column
    for k, (title, _, _) in enumerate(cols):
        if spans and spans[-1][0] == title:
            spans[-1] = (title, spans[-1][1], k)
        else:
            spans.append((title, k, k))
    groups: list[str] = []
    for title, first, last in spans:
        label = f"── {title} " if title else ""
        span = sum(widths[first : last + 1]) + 2 * (last - first)
        widths[last] += max(0, len(label) + 2 - span)
        span = sum(widths[first : last + 1]) + 2 * (last - first)
        groups.append(label.ljust(span, "─" if title else " "))
    lines = ["  ".join(groups).rstrip()]
    lines.append(
        "  ".join(
            _align(h, w, k) for k, ((_, h, _), w) in enumerate(zip(cols, widths, strict=True))
        )
    )
    lines += [
        "  ".join(_align(c, w, k) for k, (c, w) in enumerate(zip(row, widths, strict=True)))
        for row in cells
    ]
    return lines


def _align(text: str, width: int, index: int) -> str:
    return text.ljust(width) if index == 0 else text.rjust(width)


class LiveTable:
    """Shows successive versions of the table on ``out``.

    ``tty``: redrawn in place (the previous version is erased with ANSI cursor movement).
    Otherwise: a version is printed when it differs from the last one printed and at least
    ``interval_s`` has passed since then. Messages printed with :meth:`message` appear above
    the table in both modes.
    """

    def __init__(
        self,
        out: TextIO,
        *,
        tty: bool,
        interval_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.out = out
        self.tty = tty
        self.interval_s = interval_s
        self.clock = clock
        self._drawn = 0  # lines of the table currently on screen (tty)
        self._last_lines: list[str] | None = None
        self._last_shown: list[str] | None = None
        self._last_time = -math.inf

    def _erase(self) -> None:
        if self.tty and self._drawn:
            self.out.write(f"\x1b[{self._drawn}A\r\x1b[J")
            self._drawn = 0

    def clear(self) -> None:
        """Take the live table off the screen (tty) before other output, such as an error."""
        self._erase()
        self._last_lines = None

    def message(self, text: str) -> None:
        self._erase()
        self.out.write(text.rstrip("\n") + "\n")
        if self.tty and self._last_lines is not None:
            self._draw(self._last_lines)
        self.out.flush()

    def _draw(self, lines: Sequence[str]) -> None:
        self.out.write("".join(line + "\n" for line in lines))
        self._drawn = len(lines)

    def update(self, lines: Sequence[str], status: str) -> None:
        """A new version of the table; ``status`` is a line shown under it on a terminal."""
        self._last_lines = [*lines, status] if self.tty else list(lines)
        if self.tty:
            self._erase()
            self._draw(self._last_lines)
            self.out.flush()
            return
        now = self.clock()
        if list(lines) == self._last_shown or now - self._last_time < self.interval_s:
            return
        self._last_shown = list(lines)
        self._last_time = now
        self.out.write(f"--- per-tenant totals at {time.strftime('%H:%M:%S')} ---\n")
        self._draw(lines)
        self.out.flush()

    def final(self, lines: Sequence[str], title: str) -> None:
        """The last version, always printed (below the live one on a terminal)."""
        self._erase()
        self._last_lines = None
        self.out.write(f"{title}\n")
        self._draw(lines)
        self._drawn = 0
        self.out.flush()
