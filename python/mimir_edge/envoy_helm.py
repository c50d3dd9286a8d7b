"""The Envoy chart's bootstrap template, generated from ``envoy_config.render_bootstrap``.

``render_bootstrap`` is the one source of Envoy configuration. The chart (``charts/envoy``) must
not carry a second, hand-written copy that could drift, so this module derives the chart's
template from it::

    python -m mimir_edge.envoy_helm            # (re)write charts/envoy/files/bootstrap.json.tpl
    python -m mimir_edge.envoy_helm --check    # exit 1 if the committed file is out of date

How: every :class:`~mimir_edge.envoy_config.EnvoyConfig` field the chart controls is a *knob*
(:data:`KNOBS`) tied to a values path. A scalar knob is rendered with two different sample
values; the leaves that change are where the chart's value goes, and become a Helm expression
(``{{ .Values.upstream.port | int64 }}``). A boolean knob (or a derived condition such as
"the host is an IP literal", which switches a cluster from ``STRICT_DNS`` to ``STATIC``) is
rendered both ways and the two trees are merged: what differs becomes ``{{ if }}`` blocks, so
one template covers every structural variant. The generator then evaluates its template for
every combination and checks it gives back ``render_bootstrap``'s output, and
``tests/charts`` renders the chart with real Helm and compares it with
``render_bootstrap(config_for_values(values))``.
"""

from __future__ import annotations

import argparse
import difflib
import ipaddress
import itertools
import json
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from mimir_edge.envoy_config import EnvoyConfig, render_bootstrap

__all__ = [
    "FIXED",
    "KNOBS",
    "TEMPLATE_NAME",
    "GenerationError",
    "Knob",
    "config_for_values",
    "generate",
    "main",
    "rls_host",
]

#: The generated file, relative to the chart directory.
TEMPLATE_NAME: Final = "files/bootstrap.json.tpl"

#: Fields the chart pins: in a pod the listener is on every interface (the Service reaches
#: it); the admin API stays on loopback (the preStop hook uses it) and only its admin proxy,
#: GET /ready and /stats/prometheus, is on every interface (probes, the ServiceMonitor).
FIXED: Final[Mapping[str, Any]] = {
    "listen_address": "0.0.0.0",
    "admin_address": "127.0.0.1",
    "admin_proxy_address": "0.0.0.0",
}

Kind = Literal["bool", "int", "duration", "host"]


@dataclass(frozen=True)
class Knob:
    """One chart value and the :class:`EnvoyConfig` field it sets."""

    #: Path under ``.Values``, e.g. ``extAuthz.timeout``.
    path: str
    field: str
    #: ``duration``: a protobuf JSON duration string in values (``"1s"``, ``"0.25s"``), a float
    #: of seconds in :class:`EnvoyConfig`. ``host``: a DNS name or an IP literal.
    kind: Kind
    #: The Go template expression giving the value, when it is not just ``.Values.<path>``.
    source: str | None = None

    @property
    def value(self) -> str:
        return self.source or f".Values.{self.path}"


#: What the chart controls. The rest of :class:`EnvoyConfig` keeps its defaults.
KNOBS: Final[tuple[Knob, ...]] = (
    Knob("upstream.host", "upstream_host", "host"),
    Knob("upstream.port", "upstream_port", "int"),
    Knob("upstream.timeout", "upstream_timeout_s", "duration"),
    Knob("rls.host", "rls_host", "host", source='include "mimir-edge-envoy.rlsHost" .'),
    Knob("rls.port", "rls_port", "int"),
    Knob("ports.http", "listen_port", "int"),
    # The port the Service, probes and ServiceMonitor use: the admin proxy, not the admin.
    Knob("ports.admin", "admin_proxy_port", "int"),
    Knob("ports.adminLoopback", "admin_port", "int"),
    # False: no ext_authz filter, pushes pass unchecked (e.g. to measure the edge's latency).
    Knob("extAuthz.enabled", "ext_authz_enabled", "bool"),
    Knob("extAuthz.failureModeAllow", "ext_authz_failure_mode_allow", "bool"),
    Knob("extAuthz.statusOnError", "ext_authz_status_on_error", "int"),
    Knob("extAuthz.maxRequestBytes", "ext_authz_max_request_bytes", "int"),
    Knob("extAuthz.withRequestBody", "ext_authz_send_body", "bool"),
    Knob("extAuthz.timeout", "ext_authz_timeout_s", "duration"),
    # NGINX's marked mirror copies are answered 204 by Envoy, never forwarded.
    Knob("mirrorMode", "mirror_mode", "bool"),
    Knob("rateLimit.enabled", "rate_limit_enabled", "bool"),
    Knob("rateLimit.failureModeDeny", "rate_limit_failure_mode_deny", "bool"),
    Knob("rateLimit.timeout", "rate_limit_timeout_s", "duration"),
    Knob("maxDownstreamConnections", "max_downstream_connections", "int"),
    Knob("accessLog.enabled", "access_log", "bool"),
)


# -- values -> EnvoyConfig (what the chart must render) ---------------------------------------


def _get(values: Mapping[str, Any], path: str) -> Any:
    node: Any = values
    for part in path.split("."):
        node = node[part]
    return node


def _seconds(duration: str) -> float:
    if not isinstance(duration, str) or not duration.endswith("s"):
        raise ValueError(f"expected a duration like '1s' or '0.25s', got {duration!r}")
    return float(duration[:-1])


def rls_host(values: Mapping[str, Any], namespace: str) -> str:
    """``rls.host``, or by default the mimir-rls chart's headless Service in ``rls.namespace``
    (the release's namespace when empty): Envoy resolves it (``STRICT_DNS``) to every ready RLS
    pod and spreads the checks over them, request by request."""
    host: str = values["rls"]["host"]
    if host:
        return host
    ns = values["rls"]["namespace"] or namespace
    return f"{values['rls']['service']}.{ns}.svc.{values['clusterDomain']}"


def config_for_values(values: Mapping[str, Any], *, namespace: str) -> EnvoyConfig:
    """The :class:`EnvoyConfig` the chart renders for ``values`` (merged with the chart's
    defaults) in ``namespace``."""
    kwargs: dict[str, Any] = dict(FIXED)
    for knob in KNOBS:
        raw = rls_host(values, namespace) if knob.path == "rls.host" else _get(values, knob.path)
        kwargs[knob.field] = _seconds(raw) if knob.kind == "duration" else raw
    return EnvoyConfig(**kwargs)


# -- template trees ----------------------------------------------------------------------------


class _Absent:
    """A dict member or list element that is not there (in one branch of a condition)."""

    def __repr__(self) -> str:
        return "ABSENT"


ABSENT: Final = _Absent()


@dataclass(frozen=True)
class _Expr:
    """A Go template action printing one JSON value."""

    text: str


@dataclass(frozen=True)
class _Cond:
    """``then`` where ``condition`` holds, else ``otherwise``."""

    condition: str
    then: Any
    otherwise: Any


@dataclass(frozen=True)
class _Flag:
    """A condition of the template and the :class:`EnvoyConfig` fields it switches."""

    condition: str
    apply: Callable[[bool], dict[str, Any]]


@dataclass(frozen=True)
class _Scalar:
    """A field whose value goes into the template; two samples find where."""

    field: str
    expression: str
    samples: Callable[[Mapping[str, Any]], tuple[Any, Any]]


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _switch(field: str, off: Any, on: Any) -> Callable[[bool], dict[str, Any]]:
    return lambda chosen: {field: on if chosen else off}


def _fixed_pair(a: Any, b: Any) -> Callable[[Mapping[str, Any]], tuple[Any, Any]]:
    return lambda _kwargs: (a, b)


def _host_pair(
    field: str, ips: tuple[str, str], names: tuple[str, str]
) -> Callable[[Mapping[str, Any]], tuple[Any, Any]]:
    """Two IPs where the flag chose an IP literal, two names elsewhere."""
    return lambda kwargs: ips if _is_ip(kwargs[field]) else names


def _plan() -> tuple[list[_Flag], list[_Scalar]]:
    """The knobs as template conditions (flags) and template values (scalars), each with
    sample values far from anything render_bootstrap writes on its own."""
    flags: list[_Flag] = []
    scalars: list[_Scalar] = []
    numbers = itertools.count(40001)
    for knob in KNOBS:
        if knob.kind == "bool":
            flags.append(_Flag(knob.value, _switch(knob.field, False, True)))
        elif knob.kind == "host":
            # An IP literal makes a STATIC cluster, a name a STRICT_DNS one (render_bootstrap).
            stem = knob.field.replace("_", "-")
            ips = (f"192.0.2.{next(numbers) % 250}", f"192.0.2.{next(numbers) % 250}")
            names = (f"{stem}-a.invalid", f"{stem}-b.invalid")
            source = knob.value if knob.source is None else f"({knob.value})"
            condition = f'include "mimir-edge-envoy.isIP" {source}'
            flags.append(_Flag(condition, _switch(knob.field, names[0], ips[0])))
            scalars.append(
                _Scalar(
                    knob.field,
                    f"{{{{ {knob.value} | toJson }}}}",
                    _host_pair(knob.field, ips, names),
                )
            )
        elif knob.kind == "int":
            pair = (
                (431, 432)
                if knob.field == "ext_authz_status_on_error"
                else (
                    next(numbers),
                    next(numbers),
                )
            )
            scalars.append(
                _Scalar(knob.field, f"{{{{ {knob.value} | int64 }}}}", _fixed_pair(*pair))
            )
        else:  # a duration: a float of seconds in EnvoyConfig, a string in values and JSON
            a, b = next(numbers) + 0.5, next(numbers) + 0.5
            scalars.append(
                _Scalar(knob.field, f"{{{{ {knob.value} | toJson }}}}", _fixed_pair(a, b))
            )
    return flags, scalars


class GenerationError(RuntimeError):
    """The bootstrap cannot be expressed as one template (a new shape the generator lacks)."""


def _leaf_paths(a: Any, b: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Where two same-shaped trees differ; each difference must be a leaf."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            raise GenerationError(f"a scalar changes the shape at {path}")
        return [p for k in a for p in _leaf_paths(a[k], b[k], (*path, k))]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            raise GenerationError(f"a scalar changes the shape at {path}")
        return [
            p
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for p in _leaf_paths(x, y, (*path, i))
        ]
    if isinstance(a, dict | list) or isinstance(b, dict | list):
        raise GenerationError(f"a scalar changes the shape at {path}")
    return [] if a == b else [path]


def _put(tree: Any, path: tuple[Any, ...], value: Any) -> None:
    for part in path[:-1]:
        tree = tree[part]
    tree[path[-1]] = value


def _variant(kwargs: Mapping[str, Any], scalars: Sequence[_Scalar]) -> Any:
    """``render_bootstrap`` for one combination of flags, chart values as expressions."""
    base = dict(kwargs)
    for s in scalars:
        base[s.field] = s.samples(kwargs)[0]
    tree = render_bootstrap(EnvoyConfig(**base))
    where: dict[tuple[Any, ...], _Scalar] = {}
    for s in scalars:
        other = render_bootstrap(EnvoyConfig(**{**base, s.field: s.samples(kwargs)[1]}))
        for p in _leaf_paths(tree, other):  # none: unused here (rateLimit.timeout w/o ratelimit)
            if p in where:
                raise GenerationError(f"{p} depends on both {where[p].field} and {s.field}")
            where[p] = s
    for p, s in where.items():
        _put(tree, p, _Expr(s.expression))
    return tree


def _canon(node: Any) -> str:
    return json.dumps(node, sort_keys=True, default=repr)


def _merge(a: Any, b: Any, condition: str) -> Any:
    """A tree that is ``b`` where ``condition`` holds and ``a`` elsewhere."""
    if isinstance(a, _Refused):
        return b
    if isinstance(b, _Refused):
        return a
    if _canon(a) == _canon(b):  # (JSON tells true from 1)
        return a
    if isinstance(a, dict) and isinstance(b, dict):
        keys = [*a, *(k for k in b if k not in a)]
        return {k: _merge(a.get(k, ABSENT), b.get(k, ABSENT), condition) for k in keys}
    if isinstance(a, list) and isinstance(b, list):
        out: list[Any] = []
        matcher = difflib.SequenceMatcher(
            None, [_canon(x) for x in a], [_canon(y) for y in b], autojunk=False
        )
        for tag, i1, i2, j1, j2 in matcher.get_opcodes():
            if tag == "equal":
                out += a[i1:i2]
            elif tag == "replace" and i2 - i1 == j2 - j1:
                out += [_merge(x, y, condition) for x, y in zip(a[i1:i2], b[j1:j2], strict=True)]
            else:
                out += [_Cond(condition, ABSENT, x) for x in a[i1:i2]]
                out += [_Cond(condition, y, ABSENT) for y in b[j1:j2]]
        return out
    return _Cond(condition, b, a)


class _Refused:
    """A combination EnvoyConfig refuses: the chart fails there (:func:`_guards`), so the
    template may hold anything in its place."""

    def __init__(self, reason: str) -> None:
        self.reason = reason


def _build(
    flags: Sequence[_Flag],
    scalars: Sequence[_Scalar],
    kwargs: Mapping[str, Any],
    chosen: Mapping[str, bool],
    refused: dict[tuple[tuple[str, bool], ...], str],
) -> Any:
    """The template for every combination of ``flags``: each flag's two subtrees merged."""
    if not flags:
        try:
            return _variant(kwargs, scalars)
        except ValueError as e:
            refused[tuple(sorted(chosen.items()))] = str(e)
            return _Refused(str(e))
    flag, rest = flags[0], flags[1:]
    off = _build(
        rest, scalars, {**kwargs, **flag.apply(False)}, {**chosen, flag.condition: False}, refused
    )
    on = _build(
        rest, scalars, {**kwargs, **flag.apply(True)}, {**chosen, flag.condition: True}, refused
    )
    return _merge(off, on, flag.condition)


def _guards(refused: Mapping[tuple[tuple[str, bool], ...], str]) -> str:
    """A ``fail`` for the combinations EnvoyConfig refuses, each narrowed to the conditions
    that matter (one is dropped when the combination stays refused either way)."""
    narrowed: dict[tuple[tuple[str, bool], ...], str] = {}
    for combination, reason in refused.items():
        cube = dict(combination)
        for condition in list(cube):
            rest = {c: v for c, v in cube.items() if c != condition}
            free = [c for c, _ in combination if c not in rest]
            if all(
                tuple(sorted({**rest, **dict(zip(free, vs, strict=True))}.items())) in refused
                for vs in itertools.product((False, True), repeat=len(free))
            ):
                cube = rest
        narrowed[tuple(sorted(cube.items()))] = reason
    lines = []
    for conditions, reason in narrowed.items():
        for knob in KNOBS:  # in the chart's words: mirror_mode -> mirrorMode
            reason = re.sub(rf"\b{knob.field}\b", knob.path, reason)
        test = " ".join(f"({c})" if on else f"(not {_paren(c)})" for c, on in conditions)
        lines.append(
            f"{{{{- if and {test} true }}}}{{{{ fail {json.dumps(reason)} }}}}{{{{ end }}}}\n"
        )
    return "".join(lines)


# -- evaluation (the generator's self-check) ---------------------------------------------------


def _evaluate(node: Any, truth: Mapping[str, bool]) -> Any:
    """The tree for one combination of conditions (expressions left in place)."""
    if isinstance(node, _Cond):
        return _evaluate(node.then if truth[node.condition] else node.otherwise, truth)
    if isinstance(node, dict):
        out = {k: _evaluate(v, truth) for k, v in node.items()}
        return {k: v for k, v in out.items() if v is not ABSENT}
    if isinstance(node, list):
        items = [_evaluate(v, truth) for v in node]
        return [v for v in items if v is not ABSENT]
    return node


# -- emission ----------------------------------------------------------------------------------


def _may_be_absent(node: Any) -> bool:
    if node is ABSENT:
        return True
    return isinstance(node, _Cond) and (_may_be_absent(node.then) or _may_be_absent(node.otherwise))


def _paren(condition: str) -> str:
    return f"({condition})" if " " in condition else condition


def _emit(node: Any, indent: int) -> str:
    pad = "  " * indent
    if isinstance(node, _Expr):
        return node.text
    if isinstance(node, _Cond):
        return (
            f"{{{{ if {node.condition} }}}}{_emit(node.then, indent)}"
            f"{{{{ else }}}}{_emit(node.otherwise, indent)}{{{{ end }}}}"
        )
    if isinstance(node, dict):
        if not node:
            return "{}"
        members = list(node.items())
        return _emit_members(
            [(json.dumps(k) + ": ", v) for k, v in members], "{", "}", pad, indent, ordered=False
        )
    if isinstance(node, list):
        if not node:
            return "[]"
        return _emit_members([("", v) for v in node], "[", "]", pad, indent, ordered=True)
    return json.dumps(node)


def _emit_members(
    members: list[tuple[str, Any]], open_: str, close: str, pad: str, indent: int, *, ordered: bool
) -> str:
    """JSON members where some exist only under a condition. An optional member carries its
    comma: after it when a required member follows, before it when one precedes. Object
    members may be reordered (JSON objects are unordered), so their optional ones go first."""
    inner = pad + "  "
    required = [i for i, (_, v) in enumerate(members) if not _may_be_absent(v)]
    if not required:
        raise GenerationError(f"every member of a {open_}{close} is conditional")
    if not ordered:
        members = [m for m in members if _may_be_absent(m[1])] + [
            m for m in members if not _may_be_absent(m[1])
        ]
        required = [i for i, (_, v) in enumerate(members) if not _may_be_absent(v)]
    first, last = required[0], required[-1]
    lines = [open_]
    for i, (prefix, value) in enumerate(members):
        if i in required:
            comma = "," if i < last else ""
            lines.append(f"{inner}{prefix}{_emit(value, indent + 1)}{comma}")
        else:
            before = i > first
            lines.append(_emit_optional(prefix, value, inner, indent + 1, before=before))
    lines.append(pad + close)
    return "\n".join(line for line in lines if line)


def _emit_optional(prefix: str, node: Any, pad: str, indent: int, *, before: bool) -> str:
    if node is ABSENT:
        return ""
    if isinstance(node, _Cond) and _may_be_absent(node):
        then = _emit_optional(prefix, node.then, pad, indent, before=before)
        otherwise = _emit_optional(prefix, node.otherwise, pad, indent, before=before)
        if then and otherwise:
            head = f"{pad}{{{{- if {node.condition} }}}}\n{then}\n{pad}{{{{- else }}}}\n{otherwise}"
        elif then:
            head = f"{pad}{{{{- if {node.condition} }}}}\n{then}"
        else:
            head = f"{pad}{{{{- if not {_paren(node.condition)} }}}}\n{otherwise}"
        return f"{head}\n{pad}{{{{- end }}}}"
    text = f"{prefix}{_emit(node, indent)}"
    return f"{pad}, {text}" if before else f"{pad}{text},"


HEADER: Final = (
    "{{- /* Generated by `python -m mimir_edge.envoy_helm` from "
    "mimir_edge.envoy_config.render_bootstrap: do not edit. */ -}}"
)


def generate() -> str:
    """The chart's bootstrap template (text of ``files/bootstrap.json.tpl``)."""
    flags, scalars = _plan()
    base = {**FIXED, "upstream_host": "-", "upstream_port": 1, "rls_host": "-", "rls_port": 1}
    refused: dict[tuple[tuple[str, bool], ...], str] = {}
    tree = _build(flags, scalars, base, {}, refused)
    if isinstance(tree, _Refused):
        raise GenerationError(f"EnvoyConfig refuses every combination: {tree.reason}")
    _self_check(tree, flags, scalars, base)
    return f"{HEADER}\n{_guards(refused)}{_emit(tree, 0)}\n"


def _self_check(
    tree: Any, flags: Sequence[_Flag], scalars: Sequence[_Scalar], base: Mapping[str, Any]
) -> None:
    """Evaluate the template for every combination of flags: it must give that combination's
    own rendering (with the same expressions in the same places)."""
    for choice in itertools.product((False, True), repeat=len(flags)):
        kwargs = dict(base)
        for flag, on in zip(flags, choice, strict=True):
            kwargs.update(flag.apply(on))
        try:
            want = _variant(kwargs, scalars)
        except ValueError:
            continue  # the chart fails there
        truth = {f.condition: on for f, on in zip(flags, choice, strict=True)}
        if _canon(_evaluate(tree, truth)) != _canon(want):
            raise GenerationError(f"the template does not reproduce render_bootstrap for {truth}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mimir_edge.envoy_helm",
        description="Write the Envoy chart's bootstrap template from render_bootstrap.",
    )
    parser.add_argument("--chart", default="charts/envoy", help="the chart directory")
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the file differs instead of writing it"
    )
    args = parser.parse_args(argv)
    path = Path(args.chart) / TEMPLATE_NAME
    text = generate()
    if args.check:
        try:
            current = path.read_text()
        except OSError as e:
            print(f"{path}: {e.strerror}", file=sys.stderr)
            return 1
        if current != text:
            print(f"{path} is out of date: run python -m mimir_edge.envoy_helm", file=sys.stderr)
            return 1
        return 0
    if not path.parent.is_dir():
        print(
            f"{path.parent}: no such directory (run from the repository root or pass --chart)",
            file=sys.stderr,
        )
        return 2
    path.write_text(text)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
