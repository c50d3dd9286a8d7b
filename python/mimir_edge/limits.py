"""Mimir's per-tenant limits as the edge reads and enforces them.

The source is a Mimir runtime-config document (the file ``-runtime-config.file`` points at:
``runtime.yaml`` in Mimir's Helm chart, ``overrides.yaml`` in its jsonnet). Its ``overrides:``
map is read with Mimir's field names, defaults and YAML typing (gopkg.in/yaml.v3, so ``1e4``
is a number and ``"1000"`` is a string); every key the edge does not read is carried through
unchanged. A ConfigMap's data may instead hold the flat ``tenant:limit`` form.

Edge-only settings (``dry_run``, ``enforce``) never go into Mimir's document: Mimir decodes
it with unknown fields fatal, so one would stop Mimir reloading its limits. They live in their
own key, ``mimir-edge.yaml``, which Mimir never reads. ``docs/limits.md`` has the details and
the citations.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

try:  # libyaml's parser: about six times faster on a large runtime config
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]

__all__ = [
    "EDGE_DEFAULTS",
    "EDGE_SETTINGS_KEY",
    "ENFORCED_KEYS",
    "FLAT_ALIASES",
    "LIMIT_DEFAULTS",
    "MIMIR_DEFAULTS",
    "MIMIR_LIMIT_KEYS",
    "REFUSED_ALIASES",
    "RUNTIME_CONFIG_KEYS",
    "EdgeSettings",
    "Finding",
    "LimitSet",
    "LimitsError",
    "from_configmap_data",
    "limits_from_mimir_config",
    "parse_edge_settings",
    "parse_runtime_config",
    "resolve_plain_scalar",
    "tenant_id_error",
]

#: Mimir's defaults for the limits the edge enforces (pkg/util/validation/limits.go).
MIMIR_DEFAULTS: dict[str, float | int] = {
    "request_rate": 0.0,
    "request_burst_size": 0,
    "ingestion_rate": 10_000.0,
    "ingestion_burst_size": 200_000,
}

#: Every limit the edge reads, with Mimir's default (``Limits.RegisterFlags``). The first four
#: are enforced; the others are validated and reported (``check-config``) but Mimir enforces them.
LIMIT_DEFAULTS: dict[str, float | int] = {
    **MIMIR_DEFAULTS,
    "ingestion_burst_factor": 0.0,
    "max_label_names_per_series": 30,
    "max_label_names_per_info_series": 80,
    "max_label_name_length": 1024,
    "max_label_value_length": 2048,
    "max_metadata_length": 1024,
    "max_global_series_per_user": 150_000,
}
_FLOAT_LIMITS = frozenset({"request_rate", "ingestion_rate", "ingestion_burst_factor"})
_MAX_INT = 2**63 - 1

#: Edge-only settings per tenant and their defaults.
EDGE_DEFAULTS: dict[str, bool] = {"dry_run": False, "enforce": True}

#: Keys the engine reads; ``ingestion_burst_factor`` is folded into the burst first.
ENFORCED_KEYS = (*MIMIR_DEFAULTS, *EDGE_DEFAULTS)

#: ConfigMap keys that hold Mimir's runtime config: Helm chart, then jsonnet.
RUNTIME_CONFIG_KEYS = ("runtime.yaml", "overrides.yaml")

#: The ConfigMap key (or file name) of the edge-only settings.
EDGE_SETTINGS_KEY = "mimir-edge.yaml"

#: The top-level keys of Mimir's runtime config (pkg/mimir/runtime_config.go).
_RUNTIME_CONFIG_FIELDS = frozenset(
    {
        "overrides",
        "multi_kv_config",
        "ingester_stream_chunks_when_using_blocks",
        "ingester_limits",
        "distributor_limits",
        "active_series_custom_trackers_overrides",
    }
)

#: Every per-tenant limit Mimir knows (the yaml tags of ``validation.Limits`` in the versions
#: cited in docs/limits.md). A key outside this set is kept but reported: Mimir refuses unknown
#: fields, so it is either a newer Mimir's key or a typo that stops Mimir loading the file.
MIMIR_LIMIT_KEYS: frozenset[str] = frozenset(
    {
        "request_rate",
        "request_burst_size",
        "ingestion_rate",
        "ingestion_burst_size",
        "ingestion_burst_factor",
        "max_active_series_per_user",
        "accept_ha_samples",
        "ha_cluster_label",
        "ha_replica_label",
        "ha_max_clusters",
        "ha_tracker_update_timeout",
        "ha_tracker_update_timeout_jitter_max",
        "ha_tracker_failover_timeout",
        "ha_tracker_sample_failover_timeout",
        "drop_labels",
        "max_label_name_length",
        "max_label_value_length",
        "label_value_length_over_limit_strategy",
        "max_label_names_per_series",
        "max_label_names_per_info_series",
        "max_metadata_length",
        "max_native_histogram_buckets",
        "max_exemplars_per_series_per_request",
        "reduce_native_histogram_over_max_buckets",
        "creation_grace_period",
        "past_grace_period",
        "enforce_metadata_metric_name",
        "ingestion_tenant_shard_size",
        "metric_relabel_configs",
        "metric_relabeling_enabled",
        "service_overload_status_code_on_rate_limit_enabled",
        "ingestion_artificial_delay",
        "max_global_series_per_user",
        "max_global_series_per_metric",
        "max_global_metadata_per_user",
        "max_global_metadata_per_metric",
        "max_global_exemplars_per_user",
        "ignore_ooo_exemplars",
        "early_head_compaction_owned_series_threshold",
        "early_head_compaction_min_estimated_series_reduction_percentage",
        "native_histograms_ingestion_enabled",
        "ooo_native_histograms_ingestion_enabled",
        "active_series_custom_trackers",
        "active_series_additional_custom_trackers",
        "out_of_order_time_window",
        "out_of_order_blocks_external_label_enabled",
        "separate_metrics_group_label",
        "max_fetched_chunks_per_query",
        "max_estimated_fetched_chunks_per_query_multiplier",
        "max_fetched_series_per_query",
        "max_fetched_chunk_bytes_per_query",
        "max_estimated_memory_consumption_per_query",
        "max_query_lookback",
        "max_query_length",
        "max_partial_query_length",
        "max_query_parallelism",
        "max_labels_query_length",
        "max_series_query_limit",
        "max_label_names_limit",
        "max_label_values_limit",
        "max_cache_freshness",
        "max_queriers_per_tenant",
        "query_sharding_total_shards",
        "query_sharding_max_sharded_queries",
        "query_sharding_max_regexp_size_bytes",
        "split_instant_queries_by_interval",
        "query_ingesters_within",
        "enable_delayed_name_removal",
        "max_total_query_length",
        "results_cache_ttl",
        "results_cache_ttl_for_out_of_order_time_window",
        "results_cache_ttl_for_cardinality_query",
        "results_cache_ttl_for_labels_query",
        "results_cache_ttl_for_errors",
        "cache_unaligned_requests",
        "max_query_expression_size_bytes",
        "blocked_queries",
        "limited_queries",
        "blocked_requests",
        "align_queries_with_step",
        "enabled_promql_experimental_functions",
        "enabled_promql_extended_range_selectors",
        "prom2_range_compat",
        "subquery_spin_off_enabled",
        "labels_query_optimizer_enabled",
        "cardinality_analysis_enabled",
        "label_names_and_values_results_max_size_bytes",
        "label_values_max_cardinality_label_names_per_request",
        "cardinality_analysis_max_results",
        "active_series_results_max_size_bytes",
        "cost_attribution_labels_structured",
        "max_cost_attribution_cardinality",
        "cost_attribution_cooldown",
        "ruler_evaluation_delay_duration",
        "ruler_evaluation_consistency_max_delay",
        "ruler_tenant_shard_size",
        "ruler_max_rules_per_rule_group",
        "ruler_max_rule_groups_per_tenant",
        "ruler_recording_rules_evaluation_enabled",
        "ruler_alerting_rules_evaluation_enabled",
        "ruler_sync_rules_on_changes_enabled",
        "ruler_max_rules_per_rule_group_by_namespace",
        "ruler_max_rule_groups_per_tenant_by_namespace",
        "ruler_protected_namespaces",
        "ruler_max_rule_evaluation_concurrency_per_tenant",
        "ruler_max_independent_rule_evaluation_concurrency_per_tenant",
        "ruler_alertmanager_client_config",
        "ruler_min_rule_evaluation_interval",
        "ruler_max_rule_evaluation_results",
        "store_gateway_tenant_shard_size",
        "store_gateway_tenant_shard_size_per_zone",
        "compactor_blocks_retention_period",
        "compactor_split_and_merge_shards",
        "compactor_split_groups",
        "compactor_tenant_shard_size",
        "compactor_partial_block_deletion_delay",
        "compactor_block_upload_enabled",
        "compactor_block_upload_validation_enabled",
        "compactor_block_upload_verify_chunks",
        "compactor_block_upload_max_block_size_bytes",
        "compactor_in_memory_tenant_meta_cache_size",
        "compactor_max_lookback",
        "compactor_max_per_block_upload_concurrency",
        "s3_sse_type",
        "s3_sse_kms_key_id",
        "s3_sse_kms_encryption_context",
        "alertmanager_receivers_firewall_block_cidr_networks",
        "alertmanager_receivers_firewall_block_private_addresses",
        "alertmanager_notification_rate_limit",
        "alertmanager_notification_rate_limit_per_integration",
        "alertmanager_max_grafana_config_size_bytes",
        "alertmanager_max_config_size_bytes",
        "alertmanager_max_grafana_state_size_bytes",
        "alertmanager_max_silences_count",
        "alertmanager_max_silence_size_bytes",
        "alertmanager_max_templates_count",
        "alertmanager_max_template_size_bytes",
        "alertmanager_max_dispatcher_aggregation_groups",
        "alertmanager_max_alerts_count",
        "alertmanager_max_alerts_size_bytes",
        "alertmanager_notify_hook_url",
        "alertmanager_notify_hook_receivers",
        "alertmanager_notify_hook_timeout",
        "forwarding_endpoint",
        "forwarding_drop_older_than",
        "forwarding_rules",
        "otel_metric_suffixes_enabled",
        "otel_created_timestamp_zero_ingestion_enabled",
        "promote_otel_resource_attributes",
        "otel_keep_identifying_resource_attributes",
        "otel_convert_histograms_to_nhcb",
        "otel_promote_scope_metadata",
        "otel_native_delta_ingestion",
        "otel_translation_strategy",
        "otel_label_name_underscore_sanitization",
        "otel_label_name_preserve_multiple_underscores",
        "ingest_storage_read_consistency",
        "ingestion_partitions_tenant_shard_size",
        "name_validation_scheme",
    }
)

#: Flat-form names (``tenant:name``) and the Mimir limit each one sets. Mimir's own names of
#: the limits the edge reads are accepted too, and so is any other name in MIMIR_LIMIT_KEYS.
FLAT_ALIASES: dict[str, str] = {
    **{name: name for name in LIMIT_DEFAULTS},
    "samples_per_second": "ingestion_rate",
    "samples_per_sec": "ingestion_rate",
    "sps": "ingestion_rate",
    "ingestion_rate_limit": "ingestion_rate",  # -distributor.ingestion-rate-limit
    "ingestion_burst": "ingestion_burst_size",
    "burst_factor": "ingestion_burst_factor",  # Mimir has no request burst factor
    "requests_per_second": "request_rate",
    "request_burst": "request_burst_size",
    "max_labels_per_series": "max_label_names_per_series",
    "max_length_label_name": "max_label_name_length",  # -validation.max-length-label-name
    "max_length_label_value": "max_label_value_length",  # -validation.max-length-label-value
    "max_series_per_user": "max_global_series_per_user",
    "max_series_per_tenant": "max_global_series_per_user",
    "max_global_series_per_tenant": "max_global_series_per_user",
}

_EITHER_BURST = "ambiguous: ingestion_burst_size (samples) or request_burst_size (requests)"
_EITHER_RATE = "ambiguous: ingestion_rate (samples/s) or request_rate (requests/s)"
_PERCENT = (
    "ambiguous: a percentage of what? Mimir has ingestion_burst_size (samples) and "
    "ingestion_burst_factor (a multiple of ingestion_rate, at least 1)"
)
_NO_BODY_LIMIT = (
    "not a per-tenant Mimir limit (the request size limit is the distributor's "
    "-distributor.max-recv-msg-size, for every tenant)"
)

#: Flat-form names that are refused, with the reason: each could mean more than one limit (an
#: alias that is ambiguous is an error, not a guess) or is not a Mimir per-tenant limit.
REFUSED_ALIASES: dict[str, str] = {
    "rate": _EITHER_RATE,
    "rate_limit": _EITHER_RATE,
    "limit": _EITHER_RATE,
    "burst": _EITHER_BURST,
    "burst_size": _EITHER_BURST,
    "request_rate_limit": (
        "ambiguous: Mimir's -distributor.request-rate-limit is request_rate, but guides also "
        "use request_rate_limit for a request size limit"
    ),
    "burst_percent": _PERCENT,
    "burst_pct": _PERCENT,
    "burst_percentage": _PERCENT,
    "max_series": "ambiguous: max_global_series_per_user or max_global_series_per_metric",
    "series_limit": (
        "ambiguous: max_global_series_per_user, max_global_series_per_metric or "
        "max_fetched_series_per_query"
    ),
    "max_labels": "ambiguous: max_label_names_per_series or max_label_names_per_info_series",
    "labels_limit": "ambiguous: max_label_names_per_series or max_label_names_per_info_series",
    "max_label_length": "ambiguous: max_label_name_length or max_label_value_length",
    "label_length_limit": "ambiguous: max_label_name_length or max_label_value_length",
    "max_body_bytes": _NO_BODY_LIMIT,
    "max_request_size": _NO_BODY_LIMIT,
    "max_request_body_size": _NO_BODY_LIMIT,
}


# -- errors and findings -------------------------------------------------------------------


def _locate(source: str | None, line: int | None) -> str:
    if source and line:
        return f"{source}:{line}: "
    if source:
        return f"{source}: "
    if line:
        return f"line {line}: "
    return ""


class LimitsError(ValueError):
    """A limits document that cannot be enforced (the message says where and why).

    ``source`` is the ConfigMap key or file, ``line`` the line in it (1-based) when known, and
    ``reason`` the message without them, for callers that print their own location.
    """

    def __init__(self, reason: str, *, source: str | None = None, line: int | None = None):
        super().__init__(_locate(source, line) + reason)
        self.reason = reason
        self.source = source
        self.line = line


@dataclass(frozen=True)
class Finding:
    """Something worth a warning that does not stop the set being enforced."""

    message: str
    source: str | None = None
    line: int | None = None

    def __str__(self) -> str:
        return _locate(self.source, self.line) + self.message


# -- tenant IDs ----------------------------------------------------------------------------

_TENANT_CHARS = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!-_.*'()")
MAX_TENANT_ID_LENGTH = 150


def tenant_id_error(tenant: str) -> str | None:
    """Why Mimir refuses ``tenant`` as a tenant ID (dskit ``tenant.ValidTenantID``), or None.

    Checked in dskit's order (characters, length, dots) with its messages. The empty ID is
    refused too: dskit leaves it to the missing-header check, but it can never push.
    """
    raw = tenant.encode("utf-8", "surrogateescape")
    if not raw:
        return "tenant ID is empty"
    for i, byte in enumerate(raw):
        if byte not in _TENANT_CHARS:
            char = chr(byte) if byte < 0x80 else raw[i:].decode("utf-8", "replace")[0]
            return f"tenant ID '{tenant}' contains unsupported character '{char}'"
    if len(raw) > MAX_TENANT_ID_LENGTH:
        return f"tenant ID is too long: max {MAX_TENANT_ID_LENGTH} characters"
    if tenant in (".", ".."):
        return "tenant ID is '.' or '..'"
    return None


# -- YAML as Mimir reads it ----------------------------------------------------------------

_PLAIN = "!mimir-edge/plain"
_SPECIAL_SCALARS: dict[str, Any] = {
    **dict.fromkeys(("true", "True", "TRUE"), True),
    **dict.fromkeys(("false", "False", "FALSE"), False),
    **dict.fromkeys(("", "~", "null", "Null", "NULL"), None),
    **dict.fromkeys((".nan", ".NaN", ".NAN"), math.nan),
    **dict.fromkeys((".inf", ".Inf", ".INF", "+.inf", "+.Inf", "+.INF"), math.inf),
    **dict.fromkeys(("-.inf", "-.Inf", "-.INF"), -math.inf),
}
_GO_INT = re.compile(r"[-+]?(?:0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)")
_GO_FLOAT = re.compile(r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?")
_TIMESTAMP = re.compile(r"[0-9]{4}-")
_MAX_NODES = 1_000_000


def _go_int(text: str) -> int:
    sign = -1 if text[0] == "-" else 1
    body = text.lstrip("+-")
    prefix = body[:2].lower()
    if prefix in ("0x", "0o", "0b"):
        return sign * int(body[2:], {"0x": 16, "0o": 8, "0b": 2}[prefix])
    if len(body) > 1 and body[0] == "0":
        return sign * int(body, 8)  # YAML 1.1 octal, still read by yaml.v3
    return sign * int(body)


def resolve_plain_scalar(text: str) -> Any:
    """A plain (unquoted) scalar as gopkg.in/yaml.v3 resolves it (``resolve.go``).

    PyYAML follows YAML 1.1, where ``1e4`` is a string, ``yes`` is true and ``0123`` a tenant
    named 83; Mimir's YAML library does not, and the edge must read what Mimir reads.
    """
    if text in _SPECIAL_SCALARS:
        return _SPECIAL_SCALARS[text]
    if text[0] in "+-0123456789":
        if _TIMESTAMP.match(text):
            return text  # a timestamp to yaml.v3; no limit takes one
        plain = text.replace("_", "")
        if _GO_INT.fullmatch(plain):
            value = _go_int(plain)
            if -(2**63) <= value < 2**64:
                return value
        if _GO_FLOAT.fullmatch(plain):
            return float(plain)
    elif text[0] == "." and _GO_FLOAT.fullmatch(text):
        return float(text)
    return text


class _Loader(_SafeLoader):
    """Composes nodes and marks plain scalars, which :func:`resolve_plain_scalar` types."""

    def resolve(self, kind: Any, value: Any, implicit: Any) -> Any:
        if kind is yaml.ScalarNode and implicit[0]:
            return _PLAIN
        return super().resolve(kind, value, implicit)  # type: ignore[no-untyped-call]


_SCALAR_TAGS = {
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}

_Path = tuple[str, ...]


@dataclass
class _Ctx:
    """Where values came from (for messages) and how strictly to read them."""

    source: str | None = None
    #: Values came from YAML: a string is a string to Mimir, not a number.
    yaml: bool = False
    #: Refuse what Mimir refuses (a ConfigMap shared with Mimir); otherwise only warn.
    strict: bool = False
    lines: dict[_Path, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    nodes: int = 0

    def line(self, path: _Path) -> int | None:
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return self.lines.get(())

    def error(self, path: _Path, reason: str) -> LimitsError:
        return LimitsError(reason, source=self.source, line=self.line(path))

    def warn(self, path: _Path, message: str) -> None:
        self.findings.append(Finding(message, self.source, self.line(path)))

    def mimir_refuses(self, path: _Path, reason: str) -> None:
        """Mimir would refuse the file: an error when strict, else a warning."""
        if self.strict:
            raise self.error(path, reason)
        self.warn(path, reason)


def _compose(text: str, ctx: _Ctx) -> yaml.Node | None:
    try:
        return yaml.compose(text, Loader=_Loader)
    except yaml.composer.ComposerError as e:
        if "expected a single document" in str(e.problem or "") + str(e.context or ""):
            mark = e.problem_mark
            raise LimitsError(
                "more than one YAML document; Mimir reads a runtime config as one document",
                source=ctx.source,
                line=mark.line + 1 if mark else None,
            ) from None
        raise _yaml_error(e, ctx) from None
    except yaml.YAMLError as e:
        raise _yaml_error(e, ctx) from None


def _yaml_error(e: yaml.YAMLError, ctx: _Ctx) -> LimitsError:
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e)
    context = getattr(e, "context", None)
    reason = f"invalid YAML: {problem}" + (f" ({context})" if context else "")
    return LimitsError(reason, source=ctx.source, line=mark.line + 1 if mark else None)


def _value(node: yaml.Node, path: _Path, ctx: _Ctx, active: frozenset[int] = frozenset()) -> Any:
    """The Python value of ``node`` as Mimir reads it, recording the line of every value."""
    ctx.nodes += 1
    if ctx.nodes > _MAX_NODES:
        raise ctx.error(path, f"the document expands to more than {_MAX_NODES} values")
    if id(node) in active:
        raise LimitsError("a YAML alias refers to itself", source=ctx.source, line=_line(node))
    ctx.lines.setdefault(path, _line(node))
    if isinstance(node, yaml.ScalarNode):
        if node.tag == _PLAIN:
            return resolve_plain_scalar(node.value)
        if node.tag in _SCALAR_TAGS:  # explicit !!int and the like
            return resolve_plain_scalar(node.value)
        return node.value  # quoted, block, !!str or an application tag
    active = active | {id(node)}
    if isinstance(node, yaml.SequenceNode):
        return [_value(item, (*path, str(i)), ctx, active) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.MappingNode)
    return _mapping(node, path, ctx, active)


def _line(node: yaml.Node) -> int:
    return int(node.start_mark.line) + 1


def _key(node: yaml.Node, path: _Path, ctx: _Ctx) -> str:
    if not isinstance(node, yaml.ScalarNode):
        raise LimitsError(
            f"{_dotted(path) or 'the document'}: a key must be a scalar",
            source=ctx.source,
            line=_line(node),
        )
    return str(node.value)  # yaml.v3 decodes a key into a string field as its text


def _mapping(
    node: yaml.MappingNode, path: _Path, ctx: _Ctx, active: frozenset[int]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    seen: dict[str, int] = {}
    merges: list[yaml.Node] = []
    for key_node, value_node in node.value:
        if (
            isinstance(key_node, yaml.ScalarNode)
            and key_node.value == "<<"
            and (key_node.tag in (_PLAIN, "tag:yaml.org,2002:merge"))
        ):
            merges.append(value_node)
            continue
        key = _key(key_node, path, ctx)
        if key in seen:
            raise LimitsError(
                f"{_dotted((*path, key))}: the key appears twice (first on line {seen[key]}); "
                "Mimir refuses duplicate keys",
                source=ctx.source,
                line=_line(key_node),
            )
        seen[key] = _line(key_node)
        ctx.lines[(*path, key)] = _line(key_node)  # errors about a key point at the key
        out[key] = _value(value_node, (*path, key), ctx, active)
    for merge in merges:  # YAML merge keys: explicit keys win, then earlier merges
        sources = merge.value if isinstance(merge, yaml.SequenceNode) else [merge]
        for src in sources:
            if not isinstance(src, yaml.MappingNode):
                raise LimitsError(
                    "a merge key (<<) needs a mapping or a list of mappings",
                    source=ctx.source,
                    line=_line(src),
                )
            for key, value in _mapping(src, path, ctx, active).items():
                out.setdefault(key, value)
    return out


def _dotted(path: _Path) -> str:
    return ".".join(path)


def _document(text: str, ctx: _Ctx) -> tuple[yaml.Node | None, Any]:
    node = _compose(text, ctx)
    if node is None:
        return None, None
    ctx.lines[()] = _line(node)
    return node, _value(node, (), ctx)


# -- values --------------------------------------------------------------------------------


def _show(value: object) -> str:
    """``value`` as it reads in YAML (true, null), for messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "null"
    return repr(value)


def _limit(ctx: _Ctx, where: str, path: _Path, key: str, value: object) -> float | int | None:
    """One limit the edge reads, checked and typed as Mimir types it (None: not set)."""
    at = f"{where}: " if where else ""
    if value is None:
        return None  # yaml.v3 leaves the field at its default
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ctx.error(path, f"{at}{key} must be a number, got {_show(value)}")
    number: float | int
    if isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            raise ctx.error(path, f"{at}{key} must be a number, got {_show(value)}") from None
        if ctx.yaml:
            ctx.mimir_refuses(
                path,
                f"{at}{key} is the string {_show(value)}, not a number: "
                "Mimir refuses to read a string into a number (remove the quotes)",
            )
    else:
        number = value
    if math.isnan(number) or number < 0:
        raise ctx.error(path, f"{at}{key} must be >= 0, got {_show(value)}")
    if key in _FLOAT_LIMITS:
        return float(number)
    if math.isinf(number):
        if ctx.yaml:
            ctx.mimir_refuses(
                path, f"{at}{key} is infinite; Mimir cannot read infinity into an integer"
            )
        return _MAX_INT
    if number != int(number):
        raise ctx.error(path, f"{at}{key} must be a whole number, got {_show(value)}")
    whole = int(number)
    if whole > _MAX_INT:
        ctx.mimir_refuses(path, f"{at}{key} is larger than Mimir's integers ({_MAX_INT})")
        return _MAX_INT
    return whole


def _flag(ctx: _Ctx, where: str, path: _Path, key: str, value: object) -> bool:
    if not isinstance(value, bool):
        at = f"{where}: " if where else ""
        raise ctx.error(path, f"{at}{key} must be true or false, got {_show(value)}")
    return value


def _enforced(limits: Mapping[str, Any], edge: Mapping[str, bool]) -> dict[str, Any]:
    """What the engine enforces for one tenant, from Mimir's view of its limits.

    As Mimir's distributor: a burst factor of 1 or more replaces the burst size with
    ``ceil(rate * factor)`` (capped at the largest integer); a smaller factor is ignored.
    """
    rate = float(limits["ingestion_rate"])
    factor = float(limits["ingestion_burst_factor"])
    burst = int(limits["ingestion_burst_size"])
    if factor >= 1:
        by_factor = rate * factor
        burst = _MAX_INT if by_factor >= _MAX_INT else math.ceil(by_factor)
    return {
        "request_rate": float(limits["request_rate"]),
        "request_burst_size": int(limits["request_burst_size"]),
        "ingestion_rate": rate,
        "ingestion_burst_size": burst,
        "dry_run": edge["dry_run"],
        "enforce": edge["enforce"],
    }


# -- the limit set -------------------------------------------------------------------------


@dataclass(frozen=True)
class EdgeSettings:
    """Edge-only settings: ``defaults`` for every tenant and per-tenant ones (only those set)."""

    defaults: dict[str, bool] = field(default_factory=dict)
    tenants: dict[str, dict[str, bool]] = field(default_factory=dict)


@dataclass(frozen=True)
class LimitSet:
    """Defaults plus per-tenant overrides, resolved (every tenant dict is complete).

    ``defaults``/``tenants`` are what the engine enforces (ENFORCED_KEYS). ``default_limits``/
    ``limits`` are Mimir's view: every limit the edge reads (LIMIT_DEFAULTS) as configured, plus
    every other key as written. ``raw`` is each tenant's overrides as written and ``edge`` each
    tenant's edge settings from the edge-settings key; both round-trip through ``to_json``.
    """

    defaults: dict[str, Any] = field(default_factory=lambda: {**MIMIR_DEFAULTS, **EDGE_DEFAULTS})
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each tenant's overrides as written, every Mimir key kept.
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_limits: dict[str, Any] = field(default_factory=lambda: dict(LIMIT_DEFAULTS))
    limits: dict[str, dict[str, Any]] = field(default_factory=dict)
    edge: dict[str, dict[str, bool]] = field(default_factory=dict)
    #: Where the set came from (a ConfigMap key, "flat keys", ...), for logs.
    source: str = field(default="", compare=False)
    warnings: tuple[Finding, ...] = field(default=(), compare=False)

    @classmethod
    def build(
        cls,
        overrides: Mapping[str, Mapping[str, Any] | None],
        defaults: Mapping[str, Any] | None = None,
        *,
        edge: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> LimitSet:
        """The set of ``overrides`` (tenant -> limits) over ``defaults`` (Mimir's ``limits:``
        block; ``dry_run``/``enforce`` there are the edge defaults), with per-tenant ``edge``
        settings on top."""
        settings = EdgeSettings()
        if edge:
            settings = EdgeSettings(tenants=_edge_tenants(edge, _Ctx(), "edge", ("edge",)))
        return _build(overrides, defaults, settings, _Ctx())

    def for_tenant(self, tenant: str) -> dict[str, Any]:
        """What the engine enforces for ``tenant`` (the defaults for a tenant not listed)."""
        return self.tenants.get(tenant, self.defaults)

    def limits_for(self, tenant: str) -> dict[str, Any]:
        """Mimir's view of ``tenant``'s limits (every key; the defaults for one not listed)."""
        return self.limits.get(tenant, self.default_limits)

    def to_json(self) -> str:
        edge_defaults = {k: self.defaults[k] for k in EDGE_DEFAULTS}
        return json.dumps(
            {
                "defaults": {**self.default_limits, **edge_defaults},
                "overrides": self.raw,
                "edge": self.edge,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> LimitSet:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise LimitsError(f"invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise LimitsError("the limit set must be a JSON object")
        overrides = doc.get("overrides") or {}
        defaults = doc.get("defaults")
        edge = doc.get("edge") or {}
        if not isinstance(overrides, dict):
            raise LimitsError("overrides: must be a mapping of tenant -> limits")
        if defaults is not None and not isinstance(defaults, dict):
            raise LimitsError("defaults: must be a mapping of limit -> value")
        if not isinstance(edge, dict):
            raise LimitsError("edge: must be a mapping of tenant -> settings")
        return cls.build(overrides, defaults, edge=edge)


def _build(
    overrides: Mapping[str, Any],
    defaults: Mapping[str, Any] | None,
    edge: EdgeSettings,
    ctx: _Ctx,
    source: str = "",
) -> LimitSet:
    default_limits: dict[str, Any] = dict(LIMIT_DEFAULTS)
    edge_defaults = dict(EDGE_DEFAULTS)
    plain = _Ctx()  # defaults come from the caller, not from the document
    for key, value in (defaults or {}).items():
        name = str(key)
        if name in LIMIT_DEFAULTS:
            checked = _limit(plain, "defaults", (), name, value)
            if checked is not None:
                default_limits[name] = checked
        elif name in EDGE_DEFAULTS:
            edge_defaults[name] = _flag(plain, "defaults", (), name, value)
        else:
            default_limits[name] = value
    edge_defaults.update(edge.defaults)

    tenants: dict[str, dict[str, Any]] = {}
    limits: dict[str, dict[str, Any]] = {}
    raw: dict[str, dict[str, Any]] = {}
    for key, given in overrides.items():
        tenant = str(key)
        where = f"overrides.{tenant}"
        path: _Path = ("overrides", tenant)
        _check_tenant(tenant, where, path, ctx)
        if given is None:
            given = {}  # Mimir: a tenant with a null entry gets the defaults
        if not isinstance(given, Mapping):
            raise ctx.error(path, f"{where}: must be a mapping, got {_show(given)}")
        mine = dict(default_limits)
        settings = dict(edge_defaults)
        for lkey, value in given.items():
            name = str(lkey)
            lpath = (*path, name)
            if name in LIMIT_DEFAULTS:
                checked = _limit(ctx, where, lpath, name, value)
                if checked is not None:
                    mine[name] = checked
            elif name in EDGE_DEFAULTS:
                if ctx.yaml:
                    ctx.mimir_refuses(
                        lpath,
                        f"{where}: {name} is an edge setting, not a Mimir limit: Mimir refuses "
                        f"unknown fields; set it under tenants: in {EDGE_SETTINGS_KEY}",
                    )
                settings[name] = _flag(ctx, where, lpath, name, value)
            else:
                if ctx.yaml and name not in MIMIR_LIMIT_KEYS:
                    ctx.warn(
                        lpath,
                        f"{where}: {name} is not a limit Mimir knows (kept; Mimir refuses "
                        "unknown fields, so check its name against your Mimir version)",
                    )
                mine[name] = value
        factor = mine["ingestion_burst_factor"]
        if ctx.yaml and 0 < factor < 1:
            ctx.warn(
                (*path, "ingestion_burst_factor"),
                f"{where}: ingestion_burst_factor {factor} is below 1, so Mimir (and the edge) "
                "ignore it and use ingestion_burst_size",
            )
        settings.update(edge.tenants.get(tenant, {}))
        limits[tenant] = mine
        raw[tenant] = dict(given)
        tenants[tenant] = _enforced(mine, settings)
    for tenant, own in edge.tenants.items():
        if tenant not in tenants:
            limits[tenant] = dict(default_limits)
            tenants[tenant] = _enforced(default_limits, {**edge_defaults, **own})
    return LimitSet(
        defaults=_enforced(default_limits, edge_defaults),
        tenants=tenants,
        raw=raw,
        default_limits=default_limits,
        limits=limits,
        edge={t: dict(s) for t, s in edge.tenants.items()},
        source=source,
        warnings=tuple(ctx.findings),
    )


def _check_tenant(tenant: str, where: str, path: _Path, ctx: _Ctx) -> None:
    problem = tenant_id_error(tenant)
    if problem:
        raise ctx.error(path, f"{where}: {problem}")
    if tenant == "__mimir_cluster":
        ctx.warn(path, f"{where}: Mimir uses __mimir_cluster internally; it is not a tenant")


# -- parsing -------------------------------------------------------------------------------


def parse_runtime_config(text: str, defaults: Mapping[str, Any] | None = None) -> LimitSet:
    """Parse a Mimir runtime-config document (YAML); its ``overrides:`` map is the set.

    What Mimir refuses but the edge can still enforce (an edge setting or a quoted number in
    ``overrides:``) is reported in ``warnings``; :func:`from_configmap_data` refuses it.
    """
    return _parse_document(text, defaults, EdgeSettings(), _Ctx(yaml=True))


def _parse_document(
    text: str, defaults: Mapping[str, Any] | None, edge: EdgeSettings, ctx: _Ctx
) -> LimitSet:
    _, doc = _document(text, ctx)
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ctx.error((), "a runtime config must be a mapping with an `overrides:` key")
    for key in doc:
        if key not in _RUNTIME_CONFIG_FIELDS:
            ctx.warn(
                (key,),
                f"{key}: not a runtime-config key Mimir knows (kept; Mimir refuses unknown "
                "fields, so check its name against your Mimir version)",
            )
    overrides = doc.get("overrides")
    if overrides is None:
        overrides = {}
    if not isinstance(overrides, dict):
        raise ctx.error(("overrides",), "overrides: must be a mapping of tenant -> limits")
    return _build(overrides, defaults, edge, ctx, source=ctx.source or "")


def parse_edge_settings(text: str, *, source: str = EDGE_SETTINGS_KEY) -> EdgeSettings:
    """Parse the edge-settings document::

        defaults: {dry_run: false, enforce: true}
        tenants:
          tenant-1: {dry_run: true}
          tenant-2: {enforce: false}

    Unknown keys are errors: this is the edge's own file, so a typo must not pass silently.
    """
    ctx = _Ctx(source=source, yaml=True, strict=True)
    _, doc = _document(text, ctx)
    if doc is None:
        return EdgeSettings()
    if not isinstance(doc, dict):
        raise ctx.error((), "the edge settings must be a mapping with defaults: and tenants:")
    for key in doc:
        if key not in ("defaults", "tenants"):
            raise ctx.error((key,), f"{key}: unknown key (expected defaults: and tenants:)")
    defaults = _edge_flags(doc.get("defaults"), ctx, "defaults", ("defaults",))
    tenants = doc.get("tenants")
    if tenants is None:
        tenants = {}
    if not isinstance(tenants, dict):
        raise ctx.error(("tenants",), "tenants: must be a mapping of tenant -> settings")
    return EdgeSettings(defaults, _edge_tenants(tenants, ctx, "tenants", ("tenants",)))


def _edge_tenants(
    tenants: Mapping[str, Any], ctx: _Ctx, where: str, path: _Path
) -> dict[str, dict[str, bool]]:
    out: dict[str, dict[str, bool]] = {}
    for key, value in tenants.items():
        tenant = str(key)
        _check_tenant(tenant, f"{where}.{tenant}", (*path, tenant), ctx)
        out[tenant] = _edge_flags(value, ctx, f"{where}.{tenant}", (*path, tenant))
    return out


def _edge_flags(value: object, ctx: _Ctx, where: str, path: _Path) -> dict[str, bool]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ctx.error(path, f"{where}: must be a mapping of setting -> true/false")
    out: dict[str, bool] = {}
    for key, flag in value.items():
        name = str(key)
        if name not in EDGE_DEFAULTS:
            raise ctx.error(
                (*path, name),
                f"{where}: {name} is not an edge setting (expected {', '.join(EDGE_DEFAULTS)})",
            )
        out[name] = _flag(ctx, where, (*path, name), name, flag)
    return out


def limits_from_mimir_config(text: str, *, source: str = "mimir.yaml") -> dict[str, Any]:
    """The ``limits:`` block of Mimir's main config: the defaults every tenant starts from."""
    ctx = _Ctx(source=source, yaml=True)
    _, doc = _document(text, ctx)
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ctx.error((), "a Mimir config must be a mapping")
    block = doc.get("limits")
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ctx.error(("limits",), "limits: must be a mapping")
    for key, value in block.items():
        if key in LIMIT_DEFAULTS:
            _limit(ctx, "limits", ("limits", key), key, value)
    return block


def from_configmap_data(
    data: Mapping[str, str],
    *,
    key: str | None = None,
    defaults: Mapping[str, Any] | None = None,
) -> LimitSet:
    """The limit set of a ConfigMap's data (or a mounted directory's ``{filename: content}``).

    The runtime config is the document under ``key`` if given; else the key ``runtime.yaml``
    (Helm chart) or ``overrides.yaml`` (jsonnet); else the one key whose document has an
    ``overrides:`` mapping; else the flat ``tenant:limit`` keys. A document and flat keys
    together are an error (Mimir reads only the document, so merging would enforce limits
    Mimir does not have). ``mimir-edge.yaml``, if present, holds the edge settings. Read
    strictly: what Mimir would refuse is an error, since the data is Mimir's too.
    """
    if not isinstance(data, Mapping):
        raise LimitsError("the ConfigMap data must be a mapping of key -> text")
    for name, text in data.items():
        if not isinstance(name, str) or not isinstance(text, str):
            raise LimitsError(f"{name}: ConfigMap data values must be text, got {text!r}")
    edge = EdgeSettings()
    if EDGE_SETTINGS_KEY in data:
        edge = parse_edge_settings(data[EDGE_SETTINGS_KEY])
    others = {k: v for k, v in data.items() if k != EDGE_SETTINGS_KEY}
    if key == EDGE_SETTINGS_KEY:
        raise LimitsError(f"{key} holds the edge settings, not a runtime config", source=key)
    if key is not None and key not in data:
        raise LimitsError(f"key {key!r} not found in the ConfigMap data (keys: {_keys(data)})")
    flat = sorted(k for k in others if ":" in k)
    broken: list[str] = []
    doc_key = key if key is not None else _find_document(others, broken)
    if doc_key is not None and flat:
        more = f" and {len(flat) - 1} more" if len(flat) > 1 else ""
        raise LimitsError(
            f"holds a runtime config, and {flat[0]!r}{more} are flat tenant:limit keys: use "
            "one form (Mimir reads only the document, so the flat keys would be limits it "
            "does not have); move them into the document's overrides:",
            source=doc_key,
        )
    if doc_key is not None:
        ctx = _Ctx(source=doc_key, yaml=True, strict=True)
        return _parse_document(others[doc_key], defaults, edge, ctx)
    if flat:
        return _parse_flat(others, defaults, edge)
    if not others:
        return _build({}, defaults, edge, _Ctx())
    detail = "; ".join(broken)
    raise LimitsError(
        f"no runtime config in the ConfigMap data (keys: {_keys(data)}): expected "
        f"{' or '.join(RUNTIME_CONFIG_KEYS)}, a key whose document has overrides:, or "
        "tenant:limit keys" + (f"; {detail}" if detail else "")
    )


def _keys(data: Mapping[str, str]) -> str:
    return ", ".join(sorted(data)) or "none"


def _find_document(others: Mapping[str, str], broken: list[str]) -> str | None:
    named = [k for k in RUNTIME_CONFIG_KEYS if k in others]
    if len(named) > 1:
        raise LimitsError(f"both {' and '.join(named)} hold a runtime config; choose one with key=")
    if named:
        return named[0]
    found: list[str] = []
    for name, text in others.items():
        if ":" in name:
            continue
        try:
            node = yaml.compose(text, Loader=_Loader)
        except yaml.YAMLError as e:
            broken.append(str(_yaml_error(e, _Ctx(source=name))))
            continue
        if isinstance(node, yaml.MappingNode) and any(
            isinstance(k, yaml.ScalarNode)
            and k.value == "overrides"
            and isinstance(v, yaml.MappingNode)
            for k, v in node.value
        ):
            found.append(name)
    if len(found) > 1:
        raise LimitsError(
            f"{len(found)} keys hold a runtime config with overrides: "
            f"({', '.join(sorted(found))}); choose one with key="
        )
    return found[0] if found else None


def _parse_flat(
    entries: Mapping[str, str], defaults: Mapping[str, Any] | None, edge: EdgeSettings
) -> LimitSet:
    """The flat form: one key per tenant and limit, ``tenant:name``, the value as text."""
    ctx = _Ctx(yaml=True, strict=True)
    overrides: dict[str, dict[str, Any]] = {}
    set_by: dict[tuple[str, str], str] = {}
    for entry, text in sorted(entries.items()):
        if ":" not in entry:
            ctx.findings.append(Finding("ignored: not a tenant:limit key", source=entry))
            continue
        tenant, name = entry.split(":", 1)
        here = _Ctx(source=entry, yaml=True, strict=True)
        problem = tenant_id_error(tenant)
        if problem:
            raise here.error((), problem)
        mimir_name = _flat_name(name, here)
        if (tenant, mimir_name) in set_by:
            first = set_by[tenant, mimir_name]
            raise here.error((), f"sets {mimir_name} of {tenant} again (already set by {first})")
        set_by[tenant, mimir_name] = entry
        value = resolve_plain_scalar(text.strip())
        if mimir_name in LIMIT_DEFAULTS:
            value = _limit(here, "", (), mimir_name, value)
            if value is None:
                raise here.error((), f"{mimir_name} has no value")
        overrides.setdefault(tenant, {})[mimir_name] = value
        ctx.findings.extend(here.findings)
    return _build(overrides, defaults, edge, ctx, source="flat tenant:limit keys")


def _flat_name(name: str, ctx: _Ctx) -> str:
    if name in FLAT_ALIASES:
        return FLAT_ALIASES[name]
    if name in REFUSED_ALIASES:
        reason = REFUSED_ALIASES[name]
        hint = "; write the Mimir name of the limit meant" if reason.startswith("ambiguous") else ""
        raise ctx.error((), f"{name!r} is {reason}{hint}")
    if name in EDGE_DEFAULTS:
        raise ctx.error(
            (), f"{name} is an edge setting: set it under tenants: in {EDGE_SETTINGS_KEY}"
        )
    if name in MIMIR_LIMIT_KEYS:
        return name
    raise ctx.error(
        (),
        f"unknown limit {name!r}: use a Mimir limit name or an alias from docs/limits.md",
    )
