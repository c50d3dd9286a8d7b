"""The settings of one load run, checked when built: a bad value is a :class:`ConfigError`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mimir_edge.loadgen.client import Target, parse_url

__all__ = [
    "DEFAULT_URL",
    "MAX_CONCURRENCY",
    "MAX_DURATION_S",
    "MAX_RATE",
    "MAX_REQUESTS",
    "MAX_SAMPLES_PER_REQUEST",
    "MAX_SERIES",
    "MAX_TENANTS",
    "ConfigError",
    "LoadConfig",
    "synthetic_tenants",
]

DEFAULT_URL = "http://127.0.0.1:8080/api/v1/push"
# Hard caps: a typo (an extra zero, ``5h`` for ``5m``) is refused instead of running for days
# or building gigabytes of bodies.
MAX_DURATION_S = 24 * 3600.0
MAX_REQUESTS = 1_000_000_000
MAX_CONCURRENCY = 1024
MAX_RATE = 1_000_000.0
MAX_SERIES = 1_000_000
MAX_SAMPLES_PER_REQUEST = 100_000
MAX_TENANTS = 10_000


class ConfigError(ValueError):
    """A setting that cannot be used (the command exits 2 with this message)."""


def synthetic_tenants(n: int) -> tuple[str, ...]:
    """``load-tenant-1`` ... ``load-tenant-N``."""
    return tuple(f"load-tenant-{i}" for i in range(1, n + 1))


@dataclass(frozen=True, slots=True)
class LoadConfig:
    """One load run.

    ``rate`` ``None`` is a closed loop: each of the ``concurrency`` workers sends its next
    request as soon as the previous one is answered. A ``rate`` (requests per second, all
    workers together) is an open loop: sends are due on a fixed clock whatever the answers; a
    send whose time comes while every worker is busy is *skipped* (counted, never sent late
    in a burst), so a slow server shows up as skipped sends and latency, not as a lower rate
    quietly measured. The run ends after ``duration_s`` or ``requests`` sends, whichever comes
    first. ``series`` and ``samples_per_request`` shape synthetic bodies; ``corpus`` replays
    the files of a directory instead (``series``/``exemplars``/``histograms`` then unused).
    """

    url: str = DEFAULT_URL
    tenants: tuple[str, ...] = ("load-tenant-1",)
    concurrency: int = 10
    duration_s: float = 10.0
    requests: int | None = None
    rate: float | None = None
    series: int = 10_000
    samples_per_request: int = 500
    protocol: int = 1
    exemplars: bool = False
    histograms: bool = False
    corpus: Path | None = None
    timeout_s: float = 10.0

    def __post_init__(self) -> None:
        try:
            parse_url(self.url)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if not self.tenants:
            raise ConfigError("at least one tenant is needed")
        if len(self.tenants) > MAX_TENANTS:
            raise ConfigError(f"at most {MAX_TENANTS} tenants")
        if len(set(self.tenants)) != len(self.tenants):
            raise ConfigError("a tenant is given twice")
        for t in self.tenants:
            if not t or not t.isascii() or not t.isprintable() or t != t.strip():
                raise ConfigError(f"tenant {t!r} cannot be sent as an X-Scope-OrgID header")
        _within("concurrency", self.concurrency, 1, MAX_CONCURRENCY)
        if not 0 < self.duration_s <= MAX_DURATION_S:
            raise ConfigError(f"duration must be more than 0 and at most {MAX_DURATION_S:g}s")
        if self.requests is not None:
            _within("requests", self.requests, 1, MAX_REQUESTS)
        if self.rate is not None and not 0 < self.rate <= MAX_RATE:
            raise ConfigError(f"rate must be more than 0 and at most {MAX_RATE:g} requests/s")
        _within("series", self.series, 1, MAX_SERIES)
        _within("samples per request", self.samples_per_request, 1, MAX_SAMPLES_PER_REQUEST)
        if self.protocol not in (1, 2):
            raise ConfigError(
                f"protocol must be 1 (remote write 1.0) or 2 (2.0), not {self.protocol}"
            )
        if not 0 < self.timeout_s <= 3600:
            raise ConfigError("timeout must be more than 0 and at most 1h")
        if self.corpus is None and self.series < self.concurrency:
            # Each series belongs to one worker, as each belongs to one of Prometheus' shards,
            # so that its samples arrive in timestamp order.
            raise ConfigError(
                f"series ({self.series}) must be at least concurrency ({self.concurrency}): "
                "every worker sends series of its own, so their timestamps stay in order"
            )

    @property
    def target(self) -> Target:
        return parse_url(self.url)


def _within(name: str, value: int, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ConfigError(f"{name} must be a whole number from {lo} to {hi}, not {value!r}")
