"""Structured JSON logs, and a deny logger that a flood of denies cannot flood."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

__all__ = ["DenyLogger", "setup"]


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            out.update(fields)
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def setup(level: str, worker: int | None = None) -> logging.Logger:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    name = "mimir_edge.rls" if worker is None else f"mimir_edge.rls.worker{worker}"
    return logging.getLogger(name)


class DenyLogger:
    """Logs each deny with tenant, limit and counts, at most ``per_second`` lines a second;
    the rest are counted and reported in one summary line per second."""

    def __init__(self, log: logging.Logger, per_second: int) -> None:
        self._log = log
        self._per_second = max(0, per_second)
        self._window = 0
        self._logged = 0
        self._suppressed = 0

    def log(self, events: list[dict[str, Any]], now: float | None = None) -> None:
        second = int(time.time() if now is None else now)
        if second != self._window:
            self._flush()
            self._window, self._logged = second, 0
        for e in events:
            if self._logged < self._per_second:
                self._logged += 1
                verb = "denied" if e.get("decision") == "deny" else "would deny (dry run)"
                self._log.warning(f"push {verb}", extra={"fields": e})
            else:
                self._suppressed += 1

    def _flush(self) -> None:
        if self._suppressed:
            self._log.warning(
                "deny log lines suppressed",
                extra={"fields": {"suppressed": self._suppressed, "window_s": 1}},
            )
            self._suppressed = 0
