"""Mimir's per-tenant limits as the edge enforces them.

Reads the ``overrides:`` map of a Mimir runtime-config file (the document Mimir's
``-runtime-config.file`` points at) with Mimir's field names and defaults, and turns it into
the set the engine enforces. Only the rate limits are enforced at the edge; every other key
Mimir knows is kept, unchanged, for whoever reads the set (``LimitSet.raw``).

Edge-only settings per tenant (``dry_run``, ``enforce``) are not Mimir keys: Mimir parses its
runtime config strictly, so they never go into Mimir's file; they come from the RLS flags
and the admin API.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import yaml

__all__ = [
    "ENFORCED_KEYS",
    "MIMIR_DEFAULTS",
    "LimitSet",
    "LimitsError",
    "parse_runtime_config",
]

#: Mimir's defaults for the limits the edge enforces (pkg/util/validation/limits.go).
MIMIR_DEFAULTS: dict[str, float | int] = {
    "request_rate": 0.0,
    "request_burst_size": 0,
    "ingestion_rate": 10_000.0,
    "ingestion_burst_size": 200_000,
}

#: Keys the engine reads; ``ingestion_burst_factor`` is folded into the burst first.
ENFORCED_KEYS = (*MIMIR_DEFAULTS, "dry_run", "enforce")
_EDGE_KEYS = ("dry_run", "enforce")
_INT_KEYS = ("request_burst_size", "ingestion_burst_size")


class LimitsError(ValueError):
    """A limits document that cannot be enforced (the message says where and why)."""


def _number(where: str, key: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise LimitsError(f"{where}: {key} must be a number, got {value!r}")
    try:
        v = float(value)
    except ValueError:
        raise LimitsError(f"{where}: {key} must be a number, got {value!r}") from None
    if math.isnan(v) or v < 0:
        raise LimitsError(f"{where}: {key} must be >= 0, got {value!r}")
    return v


def _resolve(where: str, raw: Mapping[str, Any], base: Mapping[str, Any]) -> dict[str, Any]:
    """The enforced limits of one tenant: ``base`` overridden by ``raw``'s known keys."""
    out: dict[str, Any] = dict(base)
    for key in MIMIR_DEFAULTS:
        if key in raw and raw[key] is not None:
            v = _number(where, key, raw[key])
            if key in _INT_KEYS:
                if not math.isinf(v) and v != int(v):
                    raise LimitsError(f"{where}: {key} must be a whole number, got {raw[key]!r}")
                out[key] = int(min(v, 2**63 - 1))
            else:
                out[key] = v
    factor = raw.get("ingestion_burst_factor")
    if factor is not None and _number(where, "ingestion_burst_factor", factor) > 0:
        # Mimir: "If this is set it will override the ingestion-burst-size option."
        out["ingestion_burst_size"] = int(out["ingestion_rate"] * float(factor))
    for key in _EDGE_KEYS:
        if key in raw:
            if not isinstance(raw[key], bool):
                raise LimitsError(f"{where}: {key} must be true or false, got {raw[key]!r}")
            out[key] = raw[key]
    return out


@dataclass(frozen=True)
class LimitSet:
    """Defaults plus per-tenant overrides, resolved (every tenant dict is complete)."""

    defaults: dict[str, Any] = field(
        default_factory=lambda: {**MIMIR_DEFAULTS, "dry_run": False, "enforce": True}
    )
    tenants: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Each tenant's overrides as written, every Mimir key kept.
    raw: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def build(
        cls,
        overrides: Mapping[str, Mapping[str, Any]],
        defaults: Mapping[str, Any] | None = None,
    ) -> LimitSet:
        base = _resolve("defaults", defaults or {}, cls().defaults)
        tenants: dict[str, dict[str, Any]] = {}
        for tenant, raw in overrides.items():
            if not isinstance(raw, Mapping):
                raise LimitsError(f"overrides.{tenant}: must be a mapping, got {raw!r}")
            tenants[str(tenant)] = _resolve(f"overrides.{tenant}", raw, base)
        return cls(base, tenants, {str(t): dict(r) for t, r in overrides.items()})

    def for_tenant(self, tenant: str) -> dict[str, Any]:
        return self.tenants.get(tenant, self.defaults)

    def to_json(self) -> str:
        return json.dumps({"defaults": self.defaults, "overrides": self.raw}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> LimitSet:
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as e:
            raise LimitsError(f"invalid JSON: {e}") from None
        if not isinstance(doc, dict):
            raise LimitsError("the limit set must be a JSON object")
        return cls.build(doc.get("overrides") or {}, doc.get("defaults"))


def parse_runtime_config(text: str, defaults: Mapping[str, Any] | None = None) -> LimitSet:
    """Parse a Mimir runtime-config document (YAML); its ``overrides:`` map is the set."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise LimitsError(f"invalid YAML: {e}") from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise LimitsError("a runtime config must be a mapping with an `overrides:` key")
    overrides = doc.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise LimitsError("overrides: must be a mapping of tenant -> limits")
    return LimitSet.build(overrides, defaults)
