"""Mimir runtime-config parsing: names, defaults, YAML number forms, errors."""

from __future__ import annotations

import pytest

from mimir_edge.limits import MIMIR_DEFAULTS, LimitsError, LimitSet, parse_runtime_config

DOC = """
overrides:
  tenant-a:
    ingestion_rate: 1e4
    ingestion_burst_size: 200000.0
    max_global_series_per_user: 150000
  tenant-b:
    request_rate: 10
    ingestion_rate: 500
    ingestion_burst_factor: 4
  tenant-c: {}
"""


def test_mimir_names_defaults_and_number_forms() -> None:
    s = parse_runtime_config(DOC)
    a, b, c = (s.for_tenant(t) for t in ("tenant-a", "tenant-b", "tenant-c"))
    assert (a["ingestion_rate"], a["ingestion_burst_size"]) == (10_000.0, 200_000)
    assert isinstance(a["ingestion_burst_size"], int)
    # The burst factor overrides the burst size, as in Mimir.
    assert (b["ingestion_rate"], b["ingestion_burst_size"], b["request_rate"]) == (500, 2000, 10)
    assert {k: c[k] for k in MIMIR_DEFAULTS} == MIMIR_DEFAULTS
    assert s.for_tenant("unknown") == s.defaults
    # Mimir's other keys are carried through unchanged.
    assert s.raw["tenant-a"]["max_global_series_per_user"] == 150000


def test_flag_defaults_apply_under_overrides() -> None:
    s = parse_runtime_config(DOC, {"ingestion_rate": 42})
    assert s.defaults["ingestion_rate"] == 42
    assert s.for_tenant("tenant-c")["ingestion_rate"] == 42
    assert s.for_tenant("tenant-a")["ingestion_rate"] == 10_000


def test_json_round_trip() -> None:
    s = parse_runtime_config(DOC)
    assert LimitSet.from_json(s.to_json()).tenants == s.tenants


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ("overrides:\n  t:\n    ingestion_rate: -5\n", "overrides.t: ingestion_rate must be >= 0"),
        ("overrides:\n  t:\n    ingestion_rate: lots\n", "must be a number"),
        ("overrides:\n  t:\n    ingestion_burst_size: 1.5\n", "must be a whole number"),
        ("overrides:\n  t:\n    ingestion_rate: .nan\n", "must be >= 0"),
        ("overrides:\n  t: 5\n", "must be a mapping"),
        ("overrides: [a]\n", "must be a mapping of tenant"),
        ("- just a list\n", "must be a mapping"),
        ("overrides:\n  t:\n    dry_run: maybe\n", "dry_run must be true or false"),
        ("overrides: {t: {ingestion_rate: 1}\n", "invalid YAML"),
    ],
)
def test_bad_documents_say_where_and_why(doc: str, message: str) -> None:
    with pytest.raises(LimitsError, match=message):
        parse_runtime_config(doc)


def test_infinite_values_are_accepted() -> None:
    s = parse_runtime_config(
        "overrides:\n  t:\n    ingestion_rate: .inf\n    ingestion_burst_size: .inf\n"
    )
    assert s.for_tenant("t")["ingestion_rate"] == float("inf")
    assert s.for_tenant("t")["ingestion_burst_size"] == 2**63 - 1
