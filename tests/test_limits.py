"""Mimir runtime-config parsing: names, defaults, YAML forms, ConfigMaps, the flat form,
edge settings, errors with their lines, and what the RLS needs of the set."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir_edge._native import Engine
from mimir_edge.limits import (
    ENFORCED_KEYS,
    FLAT_ALIASES,
    LIMIT_DEFAULTS,
    MIMIR_DEFAULTS,
    REFUSED_ALIASES,
    EdgeSettings,
    LimitsError,
    LimitSet,
    from_configmap_data,
    limits_from_mimir_config,
    parse_edge_settings,
    parse_runtime_config,
    resolve_plain_scalar,
    tenant_id_error,
)

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


# -- Mimir's YAML, as Mimir's YAML library reads it -------------------------------------------

DATA = Path(__file__).parent / "data" / "limits"


def fixture(name: str) -> str:
    return (DATA / name).read_text()


def configmap_data(name: str) -> dict[str, str]:
    """The ``data:`` of a ConfigMap manifest fixture (the last document)."""
    *_, doc = yaml.safe_load_all(fixture(name))
    return {str(k): str(v) for k, v in doc["data"].items()}


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1e4", 10_000.0),
        ("10000.0", 10_000.0),
        ("3.5e+06", 3_500_000.0),
        ("15000", 15_000),
        ("1_000", 1_000),
        ("0x10", 16),
        ("0o17", 15),
        ("017", 15),  # YAML 1.1 octal, still read by yaml.v3
        ("09", 9.0),  # not octal, so a float
        ("-7", -7),
        (".5", 0.5),
        (".inf", math.inf),
        ("-.Inf", -math.inf),
        ("true", True),
        ("FALSE", False),
        ("~", None),
        ("null", None),
        ("yes", "yes"),  # YAML 1.1 booleans are strings in YAML 1.2
        ("on", "on"),
        ("1:30", "1:30"),  # no sexagesimal numbers either
        ("2024-01-02", "2024-01-02"),
        ("10m", "10m"),
    ],
)
def test_plain_scalars_resolve_as_in_mimir(text: str, value: object) -> None:
    got = resolve_plain_scalar(text)
    assert got == value
    assert type(got) is type(value)


def test_tenant_keys_are_their_text() -> None:
    # PyYAML alone would read 0123 as 83 and yes as True; Mimir's map keys are the text.
    s = parse_runtime_config('overrides:\n  0123: {}\n  yes: {}\n  1e3: {}\n  "007": {}\n')
    assert sorted(s.tenants) == ["007", "0123", "1e3", "yes"]


@pytest.mark.parametrize(
    ("tenant", "problem"),
    [
        ("team-a_1.prod", None),
        ("!-_.*'()", None),
        ("a" * 150, None),
        ("a/b", "tenant ID 'a/b' contains unsupported character '/'"),
        ("a:b", "tenant ID 'a:b' contains unsupported character ':'"),
        ("a b", "tenant ID 'a b' contains unsupported character ' '"),
        ("é", "tenant ID 'é' contains unsupported character 'é'"),
        ("a" * 151, "tenant ID is too long: max 150 characters"),
        (".", "tenant ID is '.' or '..'"),
        ("..", "tenant ID is '.' or '..'"),
        ("", "tenant ID is empty"),
    ],
)
def test_tenant_ids_follow_dskit(tenant: str, problem: str | None) -> None:
    assert tenant_id_error(tenant) == problem


def test_mimir_docs_example() -> None:
    s = parse_runtime_config(fixture("mimir-docs-runtime-config.yaml"))
    assert s.for_tenant("tenant1")["ingestion_rate"] == 50_000
    assert s.for_tenant("tenant2")["ingestion_rate"] == 75_000
    assert s.for_tenant("tenant2")["ingestion_burst_size"] == 200_000
    assert s.for_tenant("tenant3") == s.defaults
    assert s.warnings == ()
    full = parse_runtime_config(fixture("mimir-docs-runtime-config-full.yaml"))
    assert full.tenants == s.tenants
    assert full.warnings == ()  # ingester_limits and distributor_limits are Mimir's


def test_every_limit_the_edge_reads() -> None:
    s = from_configmap_data({"runtime.yaml": fixture("every-limit.yaml")})
    assert s.warnings == ()  # every key is one Mimir knows
    mimir = s.limits_for("every-limit")
    assert {k: mimir[k] for k in LIMIT_DEFAULTS} == {
        "request_rate": 50.0,
        "request_burst_size": 100,
        "ingestion_rate": 25_000.0,
        "ingestion_burst_size": 500_000,
        "ingestion_burst_factor": 0.0,
        "max_label_names_per_series": 40,
        "max_label_names_per_info_series": 90,
        "max_label_name_length": 512,
        "max_label_value_length": 4096,
        "max_metadata_length": 2048,
        "max_global_series_per_user": 3_000_000,
    }
    assert s.for_tenant("every-limit") == {
        "request_rate": 50.0,
        "request_burst_size": 100,
        "ingestion_rate": 25_000.0,
        "ingestion_burst_size": 500_000,
        "dry_run": False,
        "enforce": True,
    }
    # The rest of Mimir's limits are carried through as written.
    raw = s.raw["every-limit"]
    assert raw["metric_relabel_configs"] == [
        {"source_labels": ["__name__"], "regex": "go_.*", "action": "drop"}
    ]
    assert raw["alertmanager_notification_rate_limit_per_integration"] == {
        "email": 1,
        "webhook": 10,
    }
    assert (raw["results_cache_ttl"], raw["max_fetched_chunks_per_query"]) == ("7d", 2e6)
    assert mimir["drop_labels"] == ["pod", "instance_id"]
    forms = s.for_tenant("number-forms")
    assert (forms["ingestion_rate"], forms["ingestion_burst_size"]) == (10_000.0, 200_000)
    assert (forms["request_rate"], forms["request_burst_size"]) == (16.0, 1000)
    assert s.limits_for("number-forms")["max_global_series_per_user"] == 3_000_000
    assert s.for_tenant("burst-factor")["ingestion_burst_size"] == 2500
    assert s.for_tenant("unlimited")["ingestion_rate"] == math.inf
    assert s.for_tenant("defaults-only") == s.for_tenant("empty") == s.defaults


def test_helm_and_jsonnet_configmaps() -> None:
    assert from_configmap_data(configmap_data("helm-runtime-configmap-default.yaml")).tenants == {}
    helm = from_configmap_data(configmap_data("helm-runtime-configmap.yaml"))
    assert helm.source == "runtime.yaml"
    assert sorted(helm.tenants) == ["123456", "tenant-1", "tenant-2"]
    assert helm.for_tenant("tenant-1")["ingestion_burst_size"] == 1_000_000
    assert helm.for_tenant("tenant-2")["request_burst_size"] == 20
    jsonnet = from_configmap_data(configmap_data("jsonnet-overrides-configmap.yaml"))
    assert jsonnet.source == "overrides.yaml"
    medium = jsonnet.for_tenant("medium-tenant")
    assert (medium["ingestion_rate"], medium["ingestion_burst_size"]) == (350_000, 3_500_000)
    assert isinstance(medium["ingestion_burst_size"], int)
    assert jsonnet.limits_for("super-tenant")["max_global_series_per_user"] == 12_000_000
    assert jsonnet.raw["123456"]["compactor_blocks_retention_period"] == "0"
    assert jsonnet.warnings == ()


def test_burst_factor_as_mimir_applies_it() -> None:
    s = parse_runtime_config(
        "overrides:\n"
        "  own: {ingestion_rate: 333.3, ingestion_burst_factor: 2}\n"
        "  inherits: {ingestion_rate: 100}\n"
        "  switched-off: {ingestion_rate: 100, ingestion_burst_factor: 0}\n"
        "  below-one: {ingestion_rate: 100, ingestion_burst_factor: 0.5}\n"
        "  huge: {ingestion_rate: .inf, ingestion_burst_factor: 2}\n",
        {"ingestion_burst_factor": 3, "ingestion_burst_size": 7},
    )
    burst = {t: v["ingestion_burst_size"] for t, v in s.tenants.items()}
    # ceil(rate x factor); the factor of the defaults applies to the tenant's own rate.
    assert burst == {
        "own": 667,
        "inherits": 300,
        "switched-off": 7,
        "below-one": 7,  # a factor below 1 is no factor
        "huge": 2**63 - 1,
    }
    assert s.defaults["ingestion_burst_size"] == 30_000
    assert [str(w) for w in s.warnings] == [
        "line 5: overrides.below-one: ingestion_burst_factor 0.5 is below 1, so Mimir (and the "
        "edge) ignore it and use ingestion_burst_size"
    ]


def test_nulls_keep_the_defaults() -> None:
    s = parse_runtime_config("overrides:\n  a:\n  b:\n    ingestion_rate:\n    request_rate: ~\n")
    assert s.for_tenant("a") == s.for_tenant("b") == s.defaults
    assert parse_runtime_config("").tenants == parse_runtime_config("overrides:\n").tenants == {}


def test_unknown_keys_are_kept_and_reported() -> None:
    s = parse_runtime_config(
        "overrides:\n  t:\n    max_global_series_per_tenant: 5\n    ingestion_rate: 1\n"
        "  __mimir_cluster: {}\nsomething_new: {a: 1}\n"
    )
    assert s.raw["t"]["max_global_series_per_tenant"] == 5
    assert s.limits_for("t")["max_global_series_per_tenant"] == 5
    assert [w.line for w in s.warnings] == [6, 3, 5]
    assert "max_global_series_per_tenant is not a limit Mimir knows" in str(s.warnings[1])
    assert "something_new: not a runtime-config key Mimir knows" in str(s.warnings[0])
    assert "__mimir_cluster internally" in str(s.warnings[2])


MIMIR_REFUSES = [
    ("overrides:\n  t:\n    dry_run: true\n", "dry_run is an edge setting"),
    ("overrides:\n  t:\n    ingestion_rate: '5'\n", "is the string '5', not a number"),
    ("overrides:\n  t:\n    ingestion_burst_size: .inf\n", "Mimir cannot read infinity"),
]


@pytest.mark.parametrize(("doc", "message"), MIMIR_REFUSES)
def test_what_mimir_refuses_is_an_error_in_a_configmap(doc: str, message: str) -> None:
    # The RLS's --overrides file (parse_runtime_config) is read as before, with a warning...
    lenient = parse_runtime_config(doc)
    assert len(lenient.warnings) == 1
    assert message in lenient.warnings[0].message
    assert lenient.warnings[0].line == 3
    # ...but a ConfigMap Mimir reads too must not hold what stops Mimir loading it.
    with pytest.raises(LimitsError, match=message) as e:
        from_configmap_data({"runtime.yaml": doc})
    assert (e.value.source, e.value.line) == ("runtime.yaml", 3)


@pytest.mark.parametrize(
    ("doc", "line", "message"),
    [
        ("overrides:\n  a: {}\n  b: {}\n  a: {}\n", 4, "overrides.a: the key appears twice"),
        ("overrides:\n  a: {ingestion_rate: 1, ingestion_rate: 2}\n", 2, "appears twice"),
        ("overrides: {}\n---\noverrides: {}\n", 2, "more than one YAML document"),
        ("overrides:\n  t:\n    ingestion_rate: true\n", 3, "must be a number, got true"),
        ("overrides:\n  t:\n    ingestion_rate: [1]\n", 3, "must be a number, got [1]"),
        ("overrides:\n  t:\n    request_burst_size: -1\n", 3, "must be >= 0, got -1"),
        ("overrides:\n  t:\n    ingestion_rate: -.inf\n", 3, "must be >= 0, got -inf"),
        ("overrides:\n  ok: {}\n  bad/one: {}\n", 3, "unsupported character '/'"),
        ("overrides:\n  '': {}\n", 2, "tenant ID is empty"),
        ("overrides:\n  t: [1]\n", 2, "overrides.t: must be a mapping, got [1]"),
        ("overrides:\n  ? [a]\n  : {}\n", 2, "a key must be a scalar"),
        ("a: &x [*x]\n", 1, "a YAML alias refers to itself"),
        ("overrides:\n  t: {<<: 5}\n", 2, "a merge key (<<) needs a mapping"),
        ("overrides:\n\tt: {}\n", 2, "invalid YAML"),
    ],
)
def test_errors_say_line_and_reason(doc: str, line: int, message: str) -> None:
    with pytest.raises(LimitsError) as e:
        from_configmap_data({"runtime.yaml": doc})
    assert message in e.value.reason
    assert (e.value.source, e.value.line) == ("runtime.yaml", line)
    assert str(e.value) == f"runtime.yaml:{line}: {e.value.reason}"


def test_anchors_and_merge_keys() -> None:
    s = parse_runtime_config(
        "classes:\n  big: &big {ingestion_rate: 5000, ingestion_burst_size: 50000}\n"
        "overrides:\n  a: *big\n  b:\n    <<: *big\n    ingestion_burst_size: 9\n"
    )
    assert s.for_tenant("a")["ingestion_burst_size"] == 50_000
    assert (s.for_tenant("b")["ingestion_rate"], s.for_tenant("b")["ingestion_burst_size"]) == (
        5000,
        9,
    )


# -- ConfigMap data --------------------------------------------------------------------------

DOC_A = "overrides:\n  a: {ingestion_rate: 1}\n"
DOC_B = "overrides:\n  b: {ingestion_rate: 2}\n"


@pytest.mark.parametrize(
    ("data", "key", "source"),
    [
        ({"runtime.yaml": DOC_A, "other.yaml": DOC_B}, None, "runtime.yaml"),
        ({"overrides.yaml": DOC_A, "other.yaml": DOC_B}, None, "overrides.yaml"),
        ({"x.yaml": DOC_A, "mimir.yaml": "target: all\n", "notes": "- a\n"}, None, "x.yaml"),
        ({"runtime.yaml": DOC_B, "other.yaml": DOC_A}, "other.yaml", "other.yaml"),
        ({"runtime.yaml": DOC_B, "overrides.yaml": DOC_A}, "overrides.yaml", "overrides.yaml"),
        ({"x": "{{ not yaml", "y": DOC_A}, None, "y"),
    ],
)
def test_configmap_document_selection(data: dict[str, str], key: str | None, source: str) -> None:
    s = from_configmap_data(data, key=key)
    assert s.source == source
    assert list(s.tenants) == ["a"]


@pytest.mark.parametrize(
    ("data", "key", "message"),
    [
        ({"runtime.yaml": DOC_A, "overrides.yaml": DOC_B}, None, "both runtime.yaml and"),
        ({"x.yaml": DOC_A, "y.yaml": DOC_B}, None, r"2 keys hold a runtime config .*x\.yaml"),
        ({"runtime.yaml": DOC_A}, "nope", "key 'nope' not found"),
        ({"mimir-edge.yaml": ""}, "mimir-edge.yaml", "holds the edge settings"),
        ({"mimir.yaml": "target: all\n"}, None, r"no runtime config .*keys: mimir\.yaml"),
        ({"bad.yaml": "overrides: {a: 1\n"}, None, r"bad\.yaml:2: invalid YAML"),
        ({"runtime.yaml": DOC_A, "t:sps": "1"}, None, "use one form"),
        ({"runtime.yaml": DOC_A, "t:sps": "1"}, "runtime.yaml", "use one form"),
        ({"runtime.yaml": 5}, None, "values must be text"),
    ],
)
def test_configmap_errors(data: dict[str, Any], key: str | None, message: str) -> None:
    with pytest.raises(LimitsError, match=message):
        from_configmap_data(data, key=key)


def test_configmap_defaults_and_empty_data() -> None:
    assert from_configmap_data({}).tenants == {}
    s = from_configmap_data({"runtime.yaml": DOC_A}, defaults={"ingestion_burst_size": 7})
    assert s.for_tenant("a")["ingestion_burst_size"] == s.defaults["ingestion_burst_size"] == 7


# -- the flat form ---------------------------------------------------------------------------


def test_the_guides_flat_form() -> None:
    data = yaml.safe_load(fixture("flat-guide.yaml"))["data"]
    s = from_configmap_data(data)
    assert s.source == "flat tenant:limit keys"
    assert s.for_tenant("tenant-1")["ingestion_rate"] == 15_000
    assert s.for_tenant("tenant-1")["ingestion_burst_size"] == 30_000  # burst_factor 2
    assert s.for_tenant("tenant-2")["ingestion_burst_size"] == 200_000
    assert s.raw["tenant-3"] == {
        "request_rate": 10.0,
        "request_burst_size": 20,
        "max_label_names_per_series": 40,
        "max_global_series_per_user": 3_000_000,
    }
    # The set carries Mimir's names, so it round-trips like any other.
    assert LimitSet.from_json(s.to_json()) == s


@pytest.mark.parametrize(("alias", "name"), sorted(FLAT_ALIASES.items()))
def test_every_flat_alias_sets_one_mimir_limit(alias: str, name: str) -> None:
    s = from_configmap_data({f"t:{alias}": "7"})
    assert s.raw == {"t": {name: 7.0 if name in ("request_rate", "ingestion_rate") else 7}}
    assert name in LIMIT_DEFAULTS


@pytest.mark.parametrize("alias", sorted(REFUSED_ALIASES))
def test_refused_flat_aliases_are_errors(alias: str) -> None:
    with pytest.raises(LimitsError, match=re.escape(REFUSED_ALIASES[alias])) as e:
        from_configmap_data({f"t:{alias}": "7"})
    assert e.value.source == f"t:{alias}"


def test_flat_form_details() -> None:
    s = from_configmap_data(
        {
            "t:cardinality_analysis_enabled": "true",  # any Mimir limit, typed as YAML
            "t:out_of_order_time_window": "1h",
            "mimir.yaml": "target: all\n",
        }
    )
    assert s.raw["t"] == {"cardinality_analysis_enabled": True, "out_of_order_time_window": "1h"}
    assert [str(w) for w in s.warnings] == ["mimir.yaml: ignored: not a tenant:limit key"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"t:sps": "1", "t:ingestion_rate": "2"}, "t:sps: sets ingestion_rate of t again"),
        ({"t:samples": "1"}, "unknown limit 'samples'"),
        ({"t:dry_run": "true"}, "dry_run is an edge setting"),
        ({"t:sps": "-1"}, "t:sps: ingestion_rate must be >= 0, got -1"),
        ({"t:sps": "fast"}, "must be a number, got 'fast'"),
        ({"t:sps": ""}, "ingestion_rate has no value"),
        ({"t:ingestion_burst_size": "1.5"}, "must be a whole number"),
        ({"a/b:sps": "1"}, "tenant ID 'a/b' contains unsupported character '/'"),
        ({":sps": "1"}, "tenant ID is empty"),
    ],
)
def test_flat_form_errors(data: dict[str, str], message: str) -> None:
    with pytest.raises(LimitsError, match=re.escape(message)):
        from_configmap_data(data)


# -- edge settings ---------------------------------------------------------------------------


def test_edge_settings_live_beside_mimirs_document() -> None:
    s = from_configmap_data(configmap_data("configmap-with-edge-settings.yaml"))
    assert s.defaults["dry_run"] is True
    assert s.for_tenant("tenant-1")["dry_run"] is False
    assert s.for_tenant("tenant-2")["dry_run"] is True
    assert s.for_tenant("tenant-9")["enforce"] is False  # no Mimir overrides of its own
    assert s.limits_for("tenant-9") == s.default_limits
    assert s.edge == {"tenant-1": {"dry_run": False}, "tenant-9": {"enforce": False}}
    assert "tenant-9" not in s.raw  # Mimir's document is untouched
    back = LimitSet.from_json(s.to_json())
    assert back == s
    assert back.to_json() == s.to_json()


def test_edge_settings_win_over_legacy_keys_in_overrides() -> None:
    s = LimitSet.build({"t": {"dry_run": True}}, edge={"t": {"dry_run": False}})
    assert s.for_tenant("t")["dry_run"] is False
    # The admin API's form, dry_run inside overrides, is still read without warnings.
    assert LimitSet.from_json('{"overrides": {"t": {"dry_run": true}}}').warnings == ()


def test_parse_edge_settings() -> None:
    e = parse_edge_settings(fixture("mimir-edge.yaml"))
    assert e.defaults == {"dry_run": False, "enforce": True}
    assert e.tenants == {"tenant-1": {"dry_run": True}, "tenant-2": {"enforce": False}}
    assert parse_edge_settings("") == parse_edge_settings("tenants:\n") == EdgeSettings()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tenant:\n  a: {}\n", "mimir-edge.yaml:1: tenant: unknown key"),
        ("tenants:\n  a: {dry-run: true}\n", "mimir-edge.yaml:2: tenants.a: dry-run is not"),
        ("tenants:\n  a: {dry_run: yes}\n", "tenants.a: dry_run must be true or false, got 'yes'"),
        ("defaults: {enforce: 1}\n", "defaults: enforce must be true or false, got 1"),
        ("tenants:\n  a/b: {}\n", "mimir-edge.yaml:2: tenants.a/b: tenant ID 'a/b'"),
        ("tenants: [a]\n", "tenants: must be a mapping"),
        ("- a\n", "must be a mapping with defaults: and tenants:"),
    ],
)
def test_edge_settings_errors(text: str, message: str) -> None:
    with pytest.raises(LimitsError, match=re.escape(message)):
        from_configmap_data({"runtime.yaml": "", "mimir-edge.yaml": text})


# -- the RLS's side ----------------------------------------------------------------------------


def test_limits_from_mimir_config() -> None:
    defaults = limits_from_mimir_config(fixture("mimir-config.yaml"))
    assert defaults["ingestion_rate"] == 25_000
    s = from_configmap_data({"runtime.yaml": DOC_A}, defaults=defaults)
    assert s.defaults["ingestion_burst_size"] == 500_000
    assert s.default_limits["max_total_query_length"] == "12000h"
    with pytest.raises(LimitsError, match="limits: ingestion_rate must be >= 0"):
        limits_from_mimir_config("limits:\n  ingestion_rate: -1\n")


def test_json_round_trip_is_exact_and_stable() -> None:
    s = from_configmap_data({"runtime.yaml": fixture("every-limit.yaml")})
    text = s.to_json()
    back = LimitSet.from_json(text)
    assert back == s
    assert back.to_json() == text  # what a sync compares against what a replica serves
    assert LimitSet().to_json() == LimitSet.from_json(LimitSet().to_json()).to_json()
    assert LimitSet() == LimitSet.build({})  # what a worker holds before the first set


def test_the_engine_takes_every_enforced_dict(tmp_path: Path) -> None:
    s = from_configmap_data(
        {"runtime.yaml": fixture("every-limit.yaml"), "mimir-edge.yaml": fixture("mimir-edge.yaml")}
    )
    assert all(set(v) == set(ENFORCED_KEYS) for v in (s.defaults, *s.tenants.values()))
    engine = Engine(str(tmp_path / "table"), create=True)
    engine.set_limits(s.defaults, s.tenants, generation=1)
    assert engine.tenant_limits("every-limit")["ingestion_burst_size"] == 500_000
    assert engine.tenant_limits("tenant-2")["enforce"] is False


def test_admin_api_messages_are_unchanged() -> None:
    with pytest.raises(LimitsError) as e:
        LimitSet.from_json('{"overrides": {"a": {"ingestion_rate": -1}}}')
    assert str(e.value) == "overrides.a: ingestion_rate must be >= 0, got -1"
    with pytest.raises(LimitsError, match=re.escape("overrides.a/b: tenant ID 'a/b'")):
        LimitSet.from_json('{"overrides": {"a/b": {}}}')
