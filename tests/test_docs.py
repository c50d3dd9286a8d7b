"""The operator docs cannot drift from what ships.

Every ``--set key=value`` in ``docs/*.md`` names a key of the chart's ``values.yaml``, and
every documented ``helm install``/``upgrade`` renders with real Helm; every repository path
and relative link exists (anchors too); every alert the docs name is in
``monitoring/alerts.yaml`` and every alert there has its runbook heading in
``docs/operations.md``; every ``mimir-edge <subcommand> --flag`` exists; every ``rls_*`` and
``overrides_sync_*`` metric (with the labels and label values a selector uses) is one the code
exports; every ``envoy_*`` metric is one a real Envoy with the shipped bootstrap exports; every
```promql``` block parses (promtool).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shlex
import shutil
import subprocess
import urllib.request
from collections import defaultdict
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from mimir_edge.cli import build_parser
from mimir_edge.envoy_config import EnvoyConfig

ROOT = Path(__file__).resolve().parents[1]
DOCS_DIR = ROOT / "docs"
OPERATIONS = DOCS_DIR / "operations.md"
ALERTS = ROOT / "monitoring" / "alerts.yaml"


def doc_files() -> list[Path]:
    return sorted(DOCS_DIR.glob("*.md"))


def rel(p: Path) -> str:
    return str(p.relative_to(ROOT))


# -- markdown --------------------------------------------------------------------------------

_FENCE = re.compile(r"^([ \t]*)(```+|~~~+)[ \t]*([\w+-]*)[^\n]*\n(.*?)^\1\2[ \t]*$", re.M | re.S)


def fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced code block."""
    return [(m.group(3).lower(), m.group(4)) for m in _FENCE.finditer(text)]


def prose(text: str) -> str:
    """The text with fenced code blocks blanked out (line numbers kept)."""
    return _FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def inline_code(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", prose(text))


def code_lines(text: str) -> Iterator[str]:
    """Logical lines of code: fenced lines (backslash continuations joined), then inline code."""
    for _, body in fenced_blocks(text):
        yield from body.replace("\\\n", " ").splitlines()
    yield from inline_code(text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def headings(text: str) -> list[tuple[int, str]]:
    """``(level, title)`` of every ATX heading outside code blocks."""
    return [
        (len(m.group(1)), m.group(2).strip())
        for m in re.finditer(r"^(#{1,6})\s+(.+?)\s*#*\s*$", prose(text), re.M)
    ]


def anchors(text: str) -> set[str]:
    seen: dict[str, int] = defaultdict(int)
    out = set()
    for _, title in headings(text):
        s = slug(title)
        out.add(s if seen[s] == 0 else f"{s}-{seen[s]}")
        seen[s] += 1
    return out


def section(text: str, title: str) -> str:
    """The body of the level-2 section ``## title`` (up to the next level-2 heading)."""
    m = re.search(rf"^## {re.escape(title)}\s*$(.*?)(?=^## |\Z)", prose(text), re.M | re.S)
    return m.group(1) if m else ""


def links(text: str) -> list[tuple[str, str]]:
    """``(text, target)`` of every inline markdown link outside code."""
    return re.findall(r"\[([^\]\n]+)\]\(([^)\s]+)\)", prose(text))


# -- helm --set ------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SetKey:
    doc: str
    chart: str | None  # None: written without a helm command around it
    key: str
    command: str


def _split_sets(value: str) -> list[str]:
    """``a=1,b.c=2`` -> keys ``a``, ``b.c`` (helm splits on unescaped commas)."""
    keys = []
    for part in re.split(r"(?<!\\),", value):
        if "=" in part:
            keys.append(part.split("=", 1)[0])
    return keys


def _tokens(line: str) -> list[str]:
    try:
        return shlex.split(line, comments=True)
    except ValueError:  # an unbalanced quote in an example
        return line.split()


def set_keys() -> list[SetKey]:
    out: list[SetKey] = []
    for doc in doc_files():
        text = doc.read_text()
        helm_lines = [
            line.split(" #")[0]
            for line in code_lines(text)
            if re.search(r"\bhelm\s+(install|upgrade|template)\b", line)
        ]
        for line in helm_lines:
            tokens = _tokens(line)
            chart = next(
                (m.group(1) for t in tokens if (m := re.fullmatch(r"\.?/?charts/([\w-]+)/?", t))),
                None,
            )
            for i, t in enumerate(tokens):
                if t in ("--set", "--set-string") and i + 1 < len(tokens):
                    values = tokens[i + 1]
                elif t.startswith(("--set=", "--set-string=")):
                    values = t.split("=", 1)[1]
                else:
                    continue
                out += [
                    SetKey(rel(doc), chart or "?", k, line.strip()) for k in _split_sets(values)
                ]
        for code in inline_code(text):
            if m := re.fullmatch(r"--set(?:-string)?[ =](\S+)", code.strip()):
                out += [SetKey(rel(doc), None, k, code) for k in _split_sets(m.group(1))]
    return out


def has_key(values: Any, key: str) -> bool:
    node = values
    for part in re.split(r"(?<!\\)\.", key):
        part = part.replace("\\.", ".")
        m = re.fullmatch(r"(.+?)((?:\[\d+\])*)", part)
        assert m is not None
        name, indexes = m.group(1), re.findall(r"\[(\d+)\]", m.group(2))
        if not isinstance(node, dict) or name not in node:
            return False
        node = node[name]
        for ix in indexes:
            if not isinstance(node, list):
                return False
            node = node[int(ix)] if int(ix) < len(node) else {}
    return True


def chart_values(chart: str) -> Any:
    return yaml.safe_load((ROOT / "charts" / chart / "values.yaml").read_text()) or {}


def charts_in_docs() -> list[str]:
    return sorted({k.chart for k in set_keys() if k.chart is not None})


def test_docs_set_some_chart_keys() -> None:
    """The parser finds the rollout guide's --set lines (a guard on the parser itself)."""
    keys = {(k.chart, k.key) for k in set_keys()}
    assert ("mimir-rls", "image.tag") in keys
    assert ("envoy", "extAuthz.failureModeAllow") in keys


@pytest.mark.parametrize("chart", charts_in_docs())
def test_set_keys_exist_in_chart_values(chart: str) -> None:
    keys = [k for k in set_keys() if k.chart == chart]
    if chart == "?":
        pytest.fail("helm commands without a charts/<name> path:\n" + _lines(keys, "command"))
    if not (ROOT / "charts" / chart / "values.yaml").is_file():
        pytest.skip(f"charts/{chart}/values.yaml does not exist yet: {len(keys)} keys unchecked")
    values = chart_values(chart)
    missing = [k for k in keys if not has_key(values, k.key)]
    assert not missing, f"keys not in charts/{chart}/values.yaml:\n" + _lines(missing, "key")


def test_inline_set_keys_exist_in_some_chart() -> None:
    keys = [k for k in set_keys() if k.chart is None]
    charts = sorted(p.parent.name for p in (ROOT / "charts").glob("*/values.yaml"))
    if not charts:
        pytest.skip("no charts/*/values.yaml yet")
    all_values = [chart_values(c) for c in charts]
    missing = [k for k in keys if not any(has_key(v, k.key) for v in all_values)]
    assert not missing, f"keys in none of {charts}:\n" + _lines(missing, "key")


@dataclasses.dataclass(frozen=True)
class HelmCommand:
    doc: str
    release: str
    chart: str
    sets: tuple[str, ...]
    reuse_values: bool
    line: str


def helm_commands() -> list[HelmCommand]:
    """Every ``helm install|upgrade RELEASE charts/CHART ...`` of the docs, in order."""
    out = []
    for doc in doc_files():
        for line in code_lines(doc.read_text()):
            tokens = _tokens(line.split(" #")[0])
            for i, tok in enumerate(tokens[:-2]):
                chart = re.fullmatch(r"\.?/?charts/([\w-]+)/?", tokens[i + 2])
                if tok not in ("install", "upgrade") or i == 0 or tokens[i - 1] != "helm":
                    continue
                if chart is None:
                    continue
                sets = tuple(
                    tokens[j + 1]
                    for j, t in enumerate(tokens[:-1])
                    if t in ("--set", "--set-string")
                )
                out.append(
                    HelmCommand(
                        rel(doc),
                        tokens[i + 1],
                        chart.group(1),
                        sets,
                        "--reuse-values" in tokens,
                        line.strip(),
                    )
                )
    return out


def test_docs_helm_commands_render() -> None:
    """Each documented install or upgrade renders with real Helm, its values being what the
    release would hold then: an upgrade with ``--reuse-values`` keeps the doc's earlier
    ``--set`` values of that release, one without starts from the chart's defaults."""
    helm_render = pytest.importorskip("tests.charts.helm_render")
    held: dict[tuple[str, str], tuple[str, ...]] = {}
    failures = []
    commands = helm_commands()
    assert commands, "no helm install/upgrade commands in docs/"
    for cmd in commands:
        if not (ROOT / "charts" / cmd.chart / "Chart.yaml").is_file():
            continue
        key = (cmd.doc, cmd.release)
        sets = (held.get(key, ()) if cmd.reuse_values else ()) + cmd.sets
        held[key] = sets
        try:
            helm_render.render(cmd.chart, sets=sets, release=cmd.release)
        except Exception as e:
            failures.append(f"  {cmd.doc}: {cmd.line}\n    {str(e).splitlines()[0]}")
    assert not failures, "helm commands that do not render:\n" + "\n".join(failures)


def _lines(items: list[SetKey], field: str) -> str:
    return "\n".join(f"  {k.doc}: {getattr(k, field)}" for k in items)


# -- paths and links -------------------------------------------------------------------------

# Repository paths the docs may name; `docs/` is covered by the link check (and `docs/...`
# also names files of other repositories in the research notes).
_PATH = re.compile(
    r"(?<![\w./@-])((?:servers|charts|monitoring|benchmarks|tests|python|native)"
    r"/[\w.*/-]*[\w*/])"
)


def test_repository_paths_exist() -> None:
    missing = []
    for doc in doc_files():
        for path in sorted(set(_PATH.findall(doc.read_text()))):
            found = any(ROOT.glob(path.rstrip("/"))) if "*" in path else (ROOT / path).exists()
            if not found:
                missing.append(f"  {rel(doc)}: {path}")
    assert not missing, "paths that do not exist:\n" + "\n".join(missing)


def test_relative_links_and_anchors_resolve() -> None:
    broken = []
    for doc in doc_files():
        for text, target in links(doc.read_text()):
            if re.match(r"[a-z][a-z+.-]*:", target):  # https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            dest = (doc.parent / file_part).resolve() if file_part else doc
            if not dest.exists():
                broken.append(f"  {rel(doc)}: [{text}]({target}): no such file")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                broken.append(f"  {rel(doc)}: [{text}]({target}): no heading #{anchor}")
    assert not broken, "broken links:\n" + "\n".join(broken)


# -- alerts ----------------------------------------------------------------------------------

# CamelCase words that may stand on a line about alerts without being alert names.
NOT_ALERTS = {"ConfigMap", "PromQL", "PrometheusRule", "ServiceMonitor", "PodMonitor"}
_CAMEL = re.compile(r"\b[A-Z][a-z0-9]*(?:[A-Z][a-z0-9]*)+\b")


@cache
def alert_rules() -> dict[str, dict[str, Any]]:
    if not ALERTS.is_file():
        pytest.skip("monitoring/alerts.yaml does not exist yet")
    doc = yaml.safe_load(ALERTS.read_text())
    groups = doc.get("groups", []) if isinstance(doc, dict) else []
    # A PrometheusRule manifest keeps its groups under spec.
    if not groups and isinstance(doc, dict):
        groups = (doc.get("spec") or {}).get("groups", [])
    return {r["alert"]: r for g in groups for r in g.get("rules", []) if "alert" in r}


def test_every_alert_has_its_runbook_heading() -> None:
    rules = alert_rules()
    assert rules, "monitoring/alerts.yaml has no alerts"
    ops = OPERATIONS.read_text()
    have = anchors(ops)
    problems = []
    for name, rule in sorted(rules.items()):
        url = (rule.get("annotations") or {}).get("runbook_url", "")
        file_part, _, anchor = url.partition("#")
        if not anchor:
            problems.append(f"  {name}: runbook_url {url!r} has no #anchor")
            continue
        if not file_part.endswith("docs/operations.md"):
            problems.append(f"  {name}: runbook_url {url!r} does not point at docs/operations.md")
        if anchor not in have:
            problems.append(f"  {name}: docs/operations.md has no heading for #{anchor}")
    alert_headings = {title for level, title in headings(section(ops, "Alerts")) if level == 3}
    problems += [f"  {n}: no '### {n}' heading" for n in sorted(set(rules) - alert_headings)]
    assert not problems, "\n".join(problems)


def test_alerts_named_in_docs_exist() -> None:
    rules = alert_rules()
    unknown = []
    for doc in doc_files():
        text = doc.read_text()
        named: set[str] = set()
        for line in text.splitlines():
            if re.search(r"\balert", line, re.I):
                named |= {w for w in _CAMEL.findall(line) if len(w) >= 6}
        for link_text, target in links(text):
            if "operations.md#" in target or (doc == OPERATIONS and target.startswith("#")):
                named |= {w for w in _CAMEL.findall(link_text) if w == link_text.strip("`")}
        if doc == OPERATIONS:
            named |= {t for lvl, t in headings(section(text, "Alerts")) if lvl == 3}
        unknown += [f"  {rel(doc)}: {n}" for n in sorted(named - NOT_ALERTS - set(rules))]
    assert not unknown, "alert names not in monitoring/alerts.yaml:\n" + "\n".join(unknown)


# -- the mimir-edge command ------------------------------------------------------------------


def subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("mimir-edge has no subcommands")


_SHELL_OPS = {"|", "||", "&&", ";", ">", ">>", "2>&1", "&"}


def test_commands_and_flags_exist() -> None:
    subs = subparsers()
    problems = []
    for doc in doc_files():
        for line in code_lines(doc.read_text()):
            for m in re.finditer(r"(?<![\w./-])mimir-edge\s+(?!\\)(\S+)", line):
                sub = m.group(1).strip("`'\",.;:)")
                if sub.startswith("-") or sub in ("<subcommand>", "..."):
                    continue
                if sub not in subs:
                    problems.append(f"  {rel(doc)}: mimir-edge {sub}: no such subcommand")
                    continue
                options = subs[sub]._option_string_actions
                tokens = _tokens(line[m.end() :])
                for tok in tokens:
                    if tok in _SHELL_OPS or tok.startswith(("|", ">", "$(")):
                        break
                    flag = tok.split("=", 1)[0]
                    if re.fullmatch(r"--?[a-z][a-z0-9-]*", flag) and flag not in options:
                        problems.append(f"  {rel(doc)}: mimir-edge {sub} {flag}: no such flag")
    assert not problems, "\n".join(problems)


# -- metrics ---------------------------------------------------------------------------------

_METRIC = re.compile(r"(?<![\w.])((?:rls|overrides_sync|envoy)_[a-z0-9_]*[a-z0-9])\b")
_SELECTOR = re.compile(r"(?<![\w.])((?:rls|overrides_sync|envoy)_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r"(\w+)\s*(=~|!~|!=|=)\s*\"([^\"]*)\"")
# Labels Prometheus adds from the scrape target, never the exporter's own.
TARGET_LABELS = {"job", "instance", "pod", "namespace", "container", "service", "node"}


@dataclasses.dataclass
class Exported:
    labels: dict[str, set[str]] = dataclasses.field(default_factory=lambda: defaultdict(set))


def parse_exposition(text: str) -> dict[str, Exported]:
    """Series names (as written: ``_bucket``, ``_sum``...) -> label names and values seen."""
    out: dict[str, Exported] = defaultdict(Exported)
    for line in text.splitlines():
        m = re.match(r"([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+\S+", line)
        if m is None or line.startswith("#"):
            continue
        exp = out[m.group(1)]
        for k, v in re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""):
            exp.labels[k].add(v)
    for name in [n for n in out if re.search(r"_(bucket|sum|count)$", n)]:
        # A histogram's family name, as the docs write it, with the series' labels but `le`.
        family = out[re.sub(r"_(bucket|sum|count)$", "", name)]
        for k, vs in out[name].labels.items():
            if k != "le":
                family.labels[k] |= vs
    return out


def _check_request(tenant: str | None, body: bytes) -> bytes:
    from envoy.service.auth.v3 import attribute_context_pb2 as ac
    from envoy.service.auth.v3 import external_auth_pb2 as ea

    headers = {"content-encoding": "snappy", "content-type": "application/x-protobuf"}
    if tenant is not None:
        headers["x-scope-orgid"] = tenant
    http = ac.AttributeContext.HttpRequest(
        method="POST", path="/api/v1/push", headers=headers, raw_body=body, size=len(body)
    )
    req = ea.CheckRequest(
        attributes=ac.AttributeContext(request=ac.AttributeContext.Request(http=http))
    )
    return bytes(req.SerializeToString())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """What the RLS engine and the overrides sync really render, after a few decisions
    (allow, deny, dry-run would-deny, bad body, no tenant), plus every ``rls_*`` name the
    RLS's Python code mentions (metrics it may add beside the engine's)."""
    from mimir_edge._native import Engine
    from mimir_edge.encode import Sample, Series, compress, encode_v1
    from mimir_edge.sync.metrics import SyncMetrics

    engine = Engine(str(tmp_path_factory.mktemp("docs") / "table"), create=True, capacity=64)
    engine.set_limits(
        {},
        {
            "ok": {},
            "small": {"ingestion_rate": 1, "ingestion_burst_size": 1, "request_rate": 1},
            "dry": {"ingestion_rate": 1, "ingestion_burst_size": 1, "dry_run": True},
        },
        generation=1,
    )
    series = Series((("__name__", "m"),), (Sample(1.0, 1), Sample(2.0, 2)))
    body = compress(encode_v1([series]))
    for tenant in ("ok", "small", "small", "dry", None):
        engine.check(_check_request(tenant, body), now_ns=10**12)
    engine.check(_check_request("ok", b"\xffnot snappy"), now_ns=10**12)
    out = parse_exposition(engine.render_metrics(workers=1, unix_ns=0))
    out.update(parse_exposition(SyncMetrics().render()))
    for py in (ROOT / "python" / "mimir_edge" / "rls").glob("*.py"):
        for name in re.findall(r"\"(rls_[a-z0-9_]+)\"", py.read_text()):
            out.setdefault(name, Exported())
    return out


def config_names() -> set[str]:
    """``rls_*`` words that are EnvoyConfig fields (configuration, not metrics)."""
    return {f.name for f in dataclasses.fields(EnvoyConfig)}


def doc_metric_names() -> dict[str, set[str]]:
    names: dict[str, set[str]] = defaultdict(set)
    for doc in doc_files():
        for name in _METRIC.findall(doc.read_text()):
            names[name].add(rel(doc))
    return names


def label_names(exported: dict[str, Exported]) -> set[str]:
    return {k for exp in exported.values() for k in exp.labels}


def test_rls_and_sync_metrics_exist(exported: dict[str, Exported]) -> None:
    skip = config_names() | label_names(exported)
    unknown = [
        f"  {n} ({', '.join(sorted(docs))})"
        for n, docs in sorted(doc_metric_names().items())
        if not n.startswith("envoy_") and n not in exported and n not in skip
    ]
    assert not unknown, "metrics the code does not export:\n" + "\n".join(unknown)


def _selector_problems(exported: dict[str, Exported], prefix: tuple[str, ...]) -> list[str]:
    problems = []
    for doc in doc_files():
        for name, body in _SELECTOR.findall(doc.read_text()):
            if not name.startswith(prefix) or name not in exported:
                continue
            labels = exported[name].labels
            for label, op, value in _MATCHER.findall(body):
                if label in TARGET_LABELS:
                    continue
                if label not in labels:
                    problems.append(f"  {rel(doc)}: {name} has no label {label!r}")
                    continue
                words = value.split("|") if op in ("=~", "!~") else [value]
                bad = [w for w in words if re.fullmatch(r"[\w-]+", w) and w not in labels[label]]
                if bad and label not in ("tenant", "worker", "envoy_listener_address"):
                    known = sorted(labels[label])
                    problems.append(f"  {rel(doc)}: {name}{{{label}}} has no {bad}; has {known}")
    return problems


def test_rls_and_sync_selectors_use_real_labels(exported: dict[str, Exported]) -> None:
    problems = _selector_problems(exported, ("rls_", "overrides_sync_"))
    assert not problems, "\n".join(problems)


# Envoy creates some stats only once they first count (the ratelimit filter's, per-code
# counters); these are checked by name shape in the test below.
LAZY_ENVOY = re.compile(r"envoy_cluster_ratelimit_(over_limit|error|failure_mode_allowed)")


@pytest.fixture(scope="module")
def envoy_exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """``/stats/prometheus`` of a real Envoy running the shipped bootstrap (ratelimit filter
    on) in front of a real RLS, after one push was allowed and one refused."""
    from mimir_edge.encode import Sample, Series, compress, encode_v1
    from tests.e2e.harness import EnvoyProcess, RecordingUpstream, envoy_binary, http_request
    from tests.e2e.rls_process import RlsProcess

    try:
        envoy_binary()
    except Exception as e:  # pragma: no cover - depends on the machine
        pytest.skip(f"no envoy binary: {e}")
    body = compress(encode_v1([Series((("__name__", "m"),), (Sample(1.0, 1),))]))
    headers = {"Content-Encoding": "snappy", "Content-Type": "application/x-protobuf"}
    with (
        RlsProcess(tmp_path_factory.mktemp("rls"), workers=1) as rls,
        RecordingUpstream() as up,
    ):
        cfg = EnvoyConfig(
            upstream_host="127.0.0.1",
            upstream_port=up.port,
            rls_host="127.0.0.1",
            rls_port=rls.grpc_port,
            listen_port=0,
            admin_port=0,
            rate_limit_enabled=True,
        )
        with EnvoyProcess(cfg, concurrency=1) as envoy:
            ok = http_request(
                envoy.url, "POST", "/api/v1/push", body, {**headers, "X-Scope-OrgID": "t"}
            )
            refused = http_request(envoy.url, "POST", "/api/v1/push", body, headers)
            assert (ok.status, refused.status) == (200, 401)
            with urllib.request.urlopen(envoy.admin_url + "/stats/prometheus") as r:
                text = r.read().decode()
    return parse_exposition(text)


def test_envoy_metrics_exist(envoy_exported: dict[str, Exported]) -> None:
    unknown = [
        f"  {n} ({', '.join(sorted(docs))})"
        for n, docs in sorted(doc_metric_names().items())
        if n.startswith("envoy_")
        and n not in envoy_exported
        and n not in label_names(envoy_exported)
        and not LAZY_ENVOY.fullmatch(n)
    ]
    assert not unknown, "Envoy does not export:\n" + "\n".join(unknown)


def test_envoy_selectors_use_real_labels(envoy_exported: dict[str, Exported]) -> None:
    # Label *values* Envoy shows only once they count (response codes) are not checked.
    for exp in envoy_exported.values():
        exp.labels.pop("envoy_response_code", None)
        exp.labels.pop("envoy_response_code_class", None)
    problems = [
        p for p in _selector_problems(envoy_exported, ("envoy_",)) if "envoy_response_code" not in p
    ]
    assert not problems, "\n".join(problems)


# -- PromQL ----------------------------------------------------------------------------------


def promql_expressions() -> list[tuple[str, str]]:
    """Each expression of every ```promql block: blank lines separate them, # comments out."""
    out = []
    for doc in doc_files():
        for lang, body in fenced_blocks(doc.read_text()):
            if lang != "promql":
                continue
            for chunk in re.split(r"\n\s*\n", body):
                expr = "\n".join(
                    line for line in chunk.splitlines() if not line.lstrip().startswith("#")
                ).strip()
                if expr:
                    out.append((rel(doc), expr))
    return out


def test_promql_blocks_parse(tmp_path: Path) -> None:
    exprs = promql_expressions()
    assert exprs, "no ```promql blocks in docs/"
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed")
    rules = [{"record": f"docs:expr_{i}", "expr": e} for i, (_, e) in enumerate(exprs)]
    path = tmp_path / "docs-rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "docs", "rules": rules}]}))
    r = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    detail = "\n".join(f"  expr_{i} ({doc}): {e}" for i, (doc, e) in enumerate(exprs))
    assert r.returncode == 0, f"{r.stdout}{r.stderr}\nexpressions:\n{detail}"
