"""``mimir-edge check-config``: validate a Mimir runtime config the way the edge reads it.

It reads what the overrides sync reads (a runtime-config file, a ConfigMap manifest or its
``data:`` map, a mounted ConfigMap directory), prints every tenant's effective limits as a
table, and on bad input prints ``FILE:LINE: reason`` and exits 1: a check before ``kubectl
apply`` stops a config that would break the edge, or Mimir, before either reads it.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mimir_edge.limits import (
    EDGE_SETTINGS_KEY,
    LimitsError,
    LimitSet,
    from_configmap_data,
    limits_from_mimir_config,
    resolve_plain_scalar,
)

__all__ = ["COLUMNS", "add_parser", "run"]

#: The table's columns: the limits the edge reads (Mimir's names), then the edge settings.
COLUMNS = (
    "ingestion_rate",
    "ingestion_burst_size",
    "request_rate",
    "request_burst_size",
    "max_label_names_per_series",
    "max_label_name_length",
    "max_label_value_length",
    "max_metadata_length",
    "max_global_series_per_user",
    "dry_run",
    "enforce",
)

# k8s.io/apimachinery/pkg/util/validation IsConfigMapKey.
_CONFIGMAP_KEY = re.compile(r"[-._a-zA-Z0-9]+")


def add_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``check-config`` on the ``mimir-edge`` command's subparsers."""
    p = subparsers.add_parser(
        "check-config",
        help="validate a Mimir runtime config and print every tenant's effective limits",
        description="Validate a Mimir runtime config as the edge reads it and print each "
        "tenant's effective limits. FILE is a runtime config (runtime.yaml, overrides.yaml), "
        f"the edge settings ({EDGE_SETTINGS_KEY}), a ConfigMap manifest or a `data:` map, or "
        "a mounted ConfigMap directory; - reads standard input. Exits 1 with FILE:LINE: reason "
        "on bad input, 2 if FILE cannot be read.",
    )
    p.add_argument("file", metavar="FILE|-", help="the config to check; - for stdin")
    p.add_argument(
        "--key",
        help="the ConfigMap key holding the runtime config (default: runtime.yaml, "
        "overrides.yaml, else the one key whose document has overrides:)",
    )
    p.add_argument(
        "--defaults-from",
        metavar="MIMIR_CONFIG",
        help="Mimir's main config file: its limits: block is every tenant's defaults "
        "(default: Mimir's built-in defaults)",
    )
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


@dataclass
class _Input:
    """What was read, and how to point back into it."""

    name: str
    data: dict[str, str]
    key: str | None = None
    #: A single document given as a file: its key is the file.
    single: bool = False
    directory: bool = False
    #: ConfigMap key -> line of the key in FILE.
    key_lines: dict[str, int] = field(default_factory=dict)
    #: ConfigMap key -> FILE line before the first line of its literal block (``|``) value.
    offsets: dict[str, int] = field(default_factory=dict)
    notes: list[tuple[str, int | None, str]] = field(default_factory=list)

    def where(self, source: str | None, line: int | None) -> str:
        """``FILE:LINE`` for a location inside one of the data's documents."""
        if self.directory and source:
            return f"{self.name}/{source}" + (f":{line}" if line else "")
        if self.single or source is None:
            return self.name + (f":{line}" if line else "")
        if line and source in self.offsets:
            return f"{self.name}:{self.offsets[source] + line}"
        if source in self.key_lines:
            inner = f" ({source}, line {line})" if line else ""
            return f"{self.name}:{self.key_lines[source]}{inner}"
        return f"{self.name} ({source}" + (f", line {line})" if line else ")")


def run(args: argparse.Namespace) -> int:
    """Check ``args.file``; 0 when it is valid, 1 when it is not, 2 when it cannot be read."""
    try:
        inp = _read(args.file, args.key)
        defaults = None
        if args.defaults_from:
            text = Path(args.defaults_from).read_text(encoding="utf-8")
            defaults = limits_from_mimir_config(text, source=args.defaults_from)
    except (OSError, UnicodeDecodeError) as e:
        print(f"{args.file}: cannot read: {e}", file=sys.stderr)
        return 2
    except LimitsError as e:  # the --defaults-from file
        print(f"{e}", file=sys.stderr)
        return 1
    for source, line, message in inp.notes:
        print(f"{inp.where(source, line)}: warning: {message}", file=sys.stderr)
    try:
        limit_set = from_configmap_data(inp.data, key=inp.key, defaults=defaults)
    except LimitsError as e:
        print(f"{inp.where(e.source, e.line)}: {e.reason}", file=sys.stderr)
        return 1
    for w in limit_set.warnings:
        print(f"{inp.where(w.source, w.line)}: warning: {w.message}", file=sys.stderr)
    if args.json:
        json.dump(_as_json(limit_set), sys.stdout, indent=1, sort_keys=True, default=str)
        sys.stdout.write("\n")
    else:
        _print_table(inp.name, limit_set)
    return 0


def _read(name: str, key: str | None) -> _Input:
    if name == "-":
        return _from_text("<stdin>", "-", sys.stdin.read(), key)
    path = Path(name)
    if path.is_dir():
        data = {
            p.name: p.read_text(encoding="utf-8")
            for p in sorted(path.iterdir())
            if not p.name.startswith(".") and p.is_file()  # skip ..data and friends
        }
        return _Input(name, data, key, directory=True)
    return _from_text(name, path.name, path.read_text(encoding="utf-8"), key)


def _from_text(name: str, base: str, text: str, key: str | None) -> _Input:
    """A ConfigMap (manifest or ``data:`` map) becomes its data; anything else one document."""
    if base == EDGE_SETTINGS_KEY:
        return _Input(name, {EDGE_SETTINGS_KEY: text}, single=True)
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError:
        root = None  # from_configmap_data reports it, with the line
    data_node = _configmap_data(root)
    if data_node is None:
        return _Input(name, {base: text}, key=base, single=True)
    inp = _Input(name, {}, key)
    refused: list[str] = []
    for k, v in data_node.value:
        entry = str(k.value)
        line = int(k.start_mark.line) + 1
        inp.key_lines[entry] = line
        if not isinstance(v, yaml.ScalarNode):
            raise LimitsError(
                f"data.{entry}: a ConfigMap value must be a string", source=name, line=line
            )
        if not v.style and not isinstance(resolve_plain_scalar(v.value), str):  # plain: None or ""
            inp.notes.append(
                (entry, None, f"the value {v.value} is not quoted; Kubernetes requires strings")
            )
        if v.style == "|":
            inp.offsets[entry] = int(v.start_mark.line) + 1
        if not _CONFIGMAP_KEY.fullmatch(entry) or entry in (".", "..") or len(entry) > 253:
            refused.append(entry)
        inp.data[entry] = str(v.value)
    if refused:
        more = f" and {len(refused) - 1} more" if len(refused) > 1 else ""
        inp.notes.append(
            (
                refused[0],
                None,
                f"Kubernetes refuses the ConfigMap key {refused[0]!r}{more}: a valid config key "
                "must consist of alphanumeric characters, '-', '_' or '.' (so a ConfigMap cannot "
                "hold the flat tenant:limit form as written)",
            )
        )
    return inp


def _configmap_data(root: yaml.Node | None) -> yaml.MappingNode | None:
    """The ``data:`` of a ConfigMap manifest or snippet; a bare ``tenant:limit`` map itself."""
    if not isinstance(root, yaml.MappingNode):
        return None
    keys = {str(k.value): v for k, v in root.value if isinstance(k, yaml.ScalarNode)}
    if "overrides" in keys:
        return None
    data = keys.get("data")
    if isinstance(data, yaml.MappingNode):
        return data
    if any(":" in k for k in keys) and all(isinstance(v, yaml.ScalarNode) for v in keys.values()):
        return root
    return None


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        if math.isinf(value):
            return "inf"
        if value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return str(value)


def _row(limit_set: LimitSet, tenant: str | None) -> dict[str, Any]:
    """The effective limits of ``tenant`` (None: the defaults), enforced values winning."""
    if tenant is None:
        return {**limit_set.default_limits, **limit_set.defaults}
    return {**limit_set.limits_for(tenant), **limit_set.for_tenant(tenant)}


def _print_table(name: str, limit_set: LimitSet) -> None:
    count = len(limit_set.tenants)
    shown = limit_set.source and limit_set.source != Path(name).name
    origin = f" from {limit_set.source}" if shown else ""
    print(f"{name}: {count} tenant{'' if count == 1 else 's'}{origin}")
    rows: list[list[str]] = []
    by_factor = False
    for tenant in (None, *sorted(limit_set.tenants)):
        row = _row(limit_set, tenant)
        cells = [_fmt(row[c]) for c in COLUMNS]
        if float(row.get("ingestion_burst_factor") or 0) >= 1:
            cells[COLUMNS.index("ingestion_burst_size")] += "*"
            by_factor = True
        rows.append(["(defaults)" if tenant is None else tenant, *cells])
    table = [["tenant", *COLUMNS], *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    for r in table:
        cells = [r[0].ljust(widths[0])]
        cells += [c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)]
        print("  ".join(cells))
    if by_factor:
        print("* ingestion_burst_size = ceil(ingestion_rate x ingestion_burst_factor)")


def _as_json(limit_set: LimitSet) -> dict[str, Any]:
    def entry(tenant: str | None) -> dict[str, Any]:
        if tenant is None:
            return {"limits": limit_set.default_limits, "enforced": limit_set.defaults}
        return {"limits": limit_set.limits_for(tenant), "enforced": limit_set.for_tenant(tenant)}

    return {
        "source": limit_set.source,
        "defaults": entry(None),
        "tenants": {t: entry(t) for t in sorted(limit_set.tenants)},
        "warnings": [str(w) for w in limit_set.warnings],
    }
