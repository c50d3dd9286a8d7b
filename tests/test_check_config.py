"""``mimir-edge check-config``: tables for good configs, FILE:LINE: reason for bad ones."""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from mimir_edge import check_config

DATA = Path(__file__).parent / "data" / "limits"


def check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """Run ``mimir-edge check-config ARGV`` as the CLI will: exit code, stdout, stderr."""
    parser = argparse.ArgumentParser(prog="mimir-edge")
    check_config.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["check-config", *argv])
    code = args.func(args)
    out, err = capsys.readouterr()
    return code, out, err


def table(out: str) -> dict[str, dict[str, str]]:
    """The printed table as {tenant: {column: cell}}."""
    lines = [line.split() for line in out.splitlines()[1:] if not line.startswith("*")]
    header, *rows = lines
    assert header == ["tenant", *check_config.COLUMNS]
    return {row[0]: dict(zip(header[1:], row[1:], strict=True)) for row in rows}


GOOD = sorted(p.name for p in DATA.glob("*.yaml") if not p.name.startswith("broken-"))


@pytest.mark.parametrize("name", GOOD)
def test_good_configs_pass(capsys: pytest.CaptureFixture[str], name: str) -> None:
    code, out, _ = check(capsys, str(DATA / name))
    assert code == 0
    assert "(defaults)" in table(out)


def test_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = check(capsys, str(DATA / "mimir-docs-runtime-config.yaml"))
    assert (code, err) == (0, "")
    assert out.splitlines()[0] == f"{DATA / 'mimir-docs-runtime-config.yaml'}: 2 tenants"
    rows = table(out)
    assert rows["tenant1"]["ingestion_rate"] == "50000"
    assert rows["tenant2"]["ingestion_rate"] == "75000"
    assert rows["(defaults)"] == {
        "ingestion_rate": "10000",
        "ingestion_burst_size": "200000",
        "request_rate": "0",
        "request_burst_size": "0",
        "max_label_names_per_series": "30",
        "max_label_name_length": "1024",
        "max_label_value_length": "2048",
        "max_metadata_length": "1024",
        "max_global_series_per_user": "150000",
        "dry_run": "false",
        "enforce": "true",
    }


def test_every_limit_and_the_burst_factor(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = check(capsys, str(DATA / "every-limit.yaml"))
    rows = table(out)
    assert rows["every-limit"]["max_label_value_length"] == "4096"
    assert rows["burst-factor"]["ingestion_burst_size"] == "2500*"
    assert rows["unlimited"]["ingestion_rate"] == "inf"
    assert out.splitlines()[-1].startswith("* ingestion_burst_size = ceil(")


def test_edge_settings_show_in_the_table(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, str(DATA / "configmap-with-edge-settings.yaml"))
    assert code == 0
    assert "3 tenants from runtime.yaml" in out.splitlines()[0]
    rows = table(out)
    assert (rows["(defaults)"]["dry_run"], rows["tenant-1"]["dry_run"]) == ("true", "false")
    assert rows["tenant-9"]["enforce"] == "false"


def test_the_flat_form_warns_that_kubernetes_refuses_its_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = DATA / "flat-guide.yaml"
    code, out, err = check(capsys, str(path))
    assert code == 0
    assert err == (
        f"{path}:5: warning: Kubernetes refuses the ConfigMap key 'tenant-1:samples_per_second' "
        "and 7 more: a valid config key must consist of alphanumeric characters, '-', '_' or '.' "
        "(so a ConfigMap cannot hold the flat tenant:limit form as written)\n"
    )
    assert table(out)["tenant-1"]["ingestion_burst_size"] == "30000*"


BROKEN = [
    ("broken-negative-rate.yaml", 6, "overrides.tenant-b: ingestion_rate must be >= 0, got -5"),
    ("broken-negative-burst.yaml", 5, "request_burst_size must be >= 0, got -1"),
    ("broken-quoted-number.yaml", 6, "ingestion_rate is the string '50000', not a number"),
    ("broken-wrong-type.yaml", 5, "ingestion_burst_size must be a number, got true"),
    ("broken-fractional-burst.yaml", 4, "must be a whole number, got 1500.5"),
    ("broken-tenant-id.yaml", 5, "tenant ID 'team/b' contains unsupported character '/'"),
    ("broken-duplicate-tenant.yaml", 7, "overrides.tenant-a: the key appears twice"),
    ("broken-two-documents.yaml", 5, "more than one YAML document"),
    ("broken-edge-setting-in-overrides.yaml", 6, "dry_run is an edge setting"),
    ("broken-syntax.yaml", 4, "invalid YAML"),
    ("broken-overrides-not-a-map.yaml", 2, "overrides: must be a mapping of tenant -> limits"),
    ("broken-flat-ambiguous.yaml", 4, "'burst' is ambiguous"),
    ("broken-both-forms.yaml", 7, "holds a runtime config, and 'tenant-2:samples_per_second'"),
    ("broken-configmap-negative-rate.yaml", 14, "request_rate must be >= 0, got -1"),
]


def test_every_broken_fixture_is_tested() -> None:
    assert sorted(name for name, _, _ in BROKEN) == sorted(p.name for p in DATA.glob("broken-*"))


@pytest.mark.parametrize(("name", "line", "reason"), BROKEN)
def test_bad_input_gives_line_and_reason(
    capsys: pytest.CaptureFixture[str], name: str, line: int, reason: str
) -> None:
    path = DATA / name
    code, out, err = check(capsys, str(path))
    assert code == 1
    assert out == ""
    error = err.splitlines()[-1]
    assert error.startswith(f"{path}:{line}: ")
    assert reason in error
    # The fixture's comment says where it is broken, and that is where the error points.
    comment = " ".join(x for x in path.read_text().splitlines() if x.startswith("#"))
    assert f"line {line}" in comment


def test_stdin(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("overrides:\n  t:\n    ingestion_rate: -1\n"))
    code, _, err = check(capsys, "-")
    assert (code, err) == (1, "<stdin>:3: overrides.t: ingestion_rate must be >= 0, got -1\n")
    monkeypatch.setattr(sys, "stdin", io.StringIO((DATA / "flat-guide.yaml").read_text()))
    code, out, _ = check(capsys, "-")
    assert code == 0
    assert "tenant-3" in table(out)


def test_a_mounted_configmap_directory(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    # What the kubelet mounts: the keys are links into a hidden, versioned directory.
    versioned = tmp_path / "..2024_01_01_00_00_00.000000001"
    versioned.mkdir()
    (versioned / "runtime.yaml").write_text("overrides:\n  a: {}\n  b:\n    request_rate: -2\n")
    (versioned / "mimir-edge.yaml").write_text("tenants:\n  a: {dry_run: true}\n")
    (tmp_path / "..data").symlink_to(versioned.name)
    for key in ("runtime.yaml", "mimir-edge.yaml"):
        (tmp_path / key).symlink_to(Path("..data") / key)
    code, _, err = check(capsys, str(tmp_path))
    assert (code, err) == (
        1,
        f"{tmp_path}/runtime.yaml:4: overrides.b: request_rate must be >= 0, got -2\n",
    )
    (versioned / "runtime.yaml").write_text("overrides:\n  a: {}\n")
    code, out, _ = check(capsys, str(tmp_path))
    assert code == 0
    assert table(out)["a"]["dry_run"] == "true"


def test_key_and_defaults_from(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    manifest = tmp_path / "cm.yaml"
    manifest.write_text(
        "data:\n"
        "  a.yaml: |\n    overrides:\n      a: {}\n"
        "  b.yaml: |\n    overrides:\n      b: {ingestion_rate: 5}\n"
    )
    code, _, err = check(capsys, str(manifest))
    assert code == 1
    assert "2 keys hold a runtime config with overrides: (a.yaml, b.yaml)" in err
    code, out, _ = check(
        capsys, str(manifest), "--key", "b.yaml", "--defaults-from", str(DATA / "mimir-config.yaml")
    )
    assert code == 0
    rows = table(out)
    assert list(rows) == ["(defaults)", "b"]
    assert rows["(defaults)"]["ingestion_rate"] == "25000"
    assert rows["b"]["ingestion_burst_size"] == "500000"  # from the defaults
    assert rows["b"]["max_global_series_per_user"] == "1000000"


def test_bad_defaults_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    bad = tmp_path / "mimir.yaml"
    bad.write_text("limits:\n  ingestion_burst_size: -3\n")
    code, _, err = check(capsys, str(DATA / "every-limit.yaml"), "--defaults-from", str(bad))
    assert (code, err) == (1, f"{bad}:2: limits: ingestion_burst_size must be >= 0, got -3\n")


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = check(capsys, str(DATA / "jsonnet-overrides-configmap.yaml"), "--json")
    assert code == 0
    doc = json.loads(out)
    assert doc["source"] == "overrides.yaml"
    medium = doc["tenants"]["medium-tenant"]
    assert medium["enforced"]["ingestion_burst_size"] == 3_500_000
    assert medium["limits"]["max_global_metadata_per_user"] == 600_000
    assert doc["defaults"]["enforced"]["ingestion_rate"] == 10_000
    assert doc["warnings"] == []


def test_warnings_do_not_fail_the_check(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "runtime.yaml"
    path.write_text("overrides:\n  t:\n    max_series_per_tenant: 5\n")
    code, out, err = check(capsys, str(path))
    assert code == 0
    assert err.startswith(f"{path}:3: warning: overrides.t: max_series_per_tenant is not a limit")
    assert "t" in table(out)


def test_configmap_values_must_be_strings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "cm.yaml"
    path.write_text("data:\n  t:sps: 5\n  runtime.yaml:\n    overrides: {}\n")
    code, _, err = check(capsys, str(path))
    assert code == 1
    assert err.splitlines()[-1] == (
        f"{path}:3: data.runtime.yaml: a ConfigMap value must be a string"
    )
    path.write_text("data:\n  t:sps: 5\n")
    code, _, err = check(capsys, str(path))
    assert code == 0
    assert "the value 5 is not quoted; Kubernetes requires strings" in err


def test_unreadable_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = check(capsys, str(tmp_path / "missing.yaml"))
    assert code == 2
    assert err.startswith(f"{tmp_path / 'missing.yaml'}: cannot read:")


def test_as_a_process() -> None:
    """The way the lead will wire it: a subparser whose ``func`` is :func:`run`."""
    script = (
        "import argparse, sys\n"
        "from mimir_edge import check_config\n"
        "p = argparse.ArgumentParser(prog='mimir-edge')\n"
        "check_config.add_parser(p.add_subparsers(dest='command', required=True))\n"
        "args = p.parse_args(sys.argv[1:])\n"
        "sys.exit(args.func(args))\n"
    )
    ok = subprocess.run(
        [sys.executable, "-c", script, "check-config", str(DATA / "helm-runtime-configmap.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert (ok.returncode, ok.stderr) == (0, "")
    assert "3 tenants from runtime.yaml" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-c", script, "check-config", str(DATA / "broken-negative-rate.yaml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert bad.returncode == 1
    assert bad.stderr.startswith(f"{DATA / 'broken-negative-rate.yaml'}:6: ")
