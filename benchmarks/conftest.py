"""Fixtures for the benchmarks and the ratio table printed at the end of the session.

The corpus and the reference decoder come from ``tests/conftest.py`` (one loader for both
suites; ``tests`` is a package, importable from the checkout's root). Every ratio a
benchmark measures goes into the session's :class:`Report`, printed after pytest-benchmark's
tables and saved to ``.benchmarks/ratios.json``.
"""

from __future__ import annotations

from typing import Any

import pytest

from benchmarks._harness import RATIOS_JSON, STRICT, STRICT_ENV, Report
from tests.conftest import CorpusFile, generate_reference_decoder, load_corpus

_REPORT = pytest.StashKey[Report]()


def _report(config: pytest.Config) -> Report:
    return config.stash.setdefault(_REPORT, Report())


@pytest.fixture(scope="session")
def report(pytestconfig: pytest.Config) -> Report:
    """Where benchmarks record their measured ratios and targets."""
    return _report(pytestconfig)


@pytest.fixture(scope="session")
def corpus() -> list[CorpusFile]:
    """``name``, ``body`` (snappy) and ``expected`` (the manifest's counts) of each file."""
    return load_corpus()


@pytest.fixture(scope="session")
def bodies(corpus: list[CorpusFile]) -> list[bytes]:
    """Every corpus body (snappy-compressed remote write 1.0), in manifest order."""
    return [entry.body for entry in corpus]


@pytest.fixture(scope="session")
def pb() -> Any:
    """Reference decoder: ``pb.WriteRequest`` (1.0), ``pb.v2.Request`` (2.0)."""
    return generate_reference_decoder()


def pytest_terminal_summary(
    terminalreporter: pytest.TerminalReporter, exitstatus: int, config: pytest.Config
) -> None:
    report = config.stash.get(_REPORT, None)
    if report is None or not report.metrics:
        return
    tr = terminalreporter
    mode = f"{STRICT_ENV}=1: all targets asserted" if STRICT else f"{STRICT_ENV} unset"
    tr.write_sep("=", f"mimir-edge benchmark ratios ({mode})")
    for line in report.lines():
        tr.write_line(line)
    report.write_json()
    tr.write_line(f"saved to {RATIOS_JSON}")
