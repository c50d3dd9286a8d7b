"""The public surface: names, immutability, the error hierarchy and the CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import mimir_edge
from mimir_edge import errors
from mimir_edge.cli import main as cli_main
from tests.conftest import CorpusFile


def test_all_is_complete_and_exact() -> None:
    public = {
        name
        for name, value in vars(mimir_edge).items()
        if not name.startswith("_") and not isinstance(value, types.ModuleType)
    }
    assert public | {"__version__"} == set(mimir_edge.__all__)
    for name in mimir_edge.__all__:
        assert hasattr(mimir_edge, name), name


def test_errors_module_all_matches_its_classes() -> None:
    classes = {
        n
        for n, v in vars(errors).items()
        if isinstance(v, type) and v.__module__ == errors.__name__
    }
    assert classes == set(errors.__all__)
    assert set(errors.__all__) <= set(mimir_edge.__all__)


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (mimir_edge.CompressionError, 400),
        (mimir_edge.DecodedTooLargeError, 400),
        (mimir_edge.MalformedProtobufError, 400),
        (mimir_edge.UnsupportedFormatError, 415),
    ],
)
def test_error_hierarchy(cls: type[mimir_edge.RemoteWriteError], status: int) -> None:
    assert issubclass(cls, mimir_edge.RemoteWriteError)
    assert issubclass(cls, ValueError)
    assert cls.http_status == status


def test_write_stats_is_immutable_and_comparable(corpus: list[CorpusFile]) -> None:
    body = corpus[0].body
    a = mimir_edge.scan_remote_write(body)
    b = mimir_edge.scan_remote_write(body)
    assert a == b
    assert hash(a) == hash(b)
    with pytest.raises(AttributeError):
        a.samples = 0  # type: ignore[misc]
    assert repr(a).startswith("WriteStats(series=")
    d = a.as_dict()
    assert d["ingested"] == a.samples + a.histograms + a.exemplars + a.metadata
    assert set(d) == {
        "series",
        "samples",
        "histograms",
        "exemplars",
        "metadata",
        "label_pairs",
        "max_labels_per_series",
        "max_label_name_length",
        "max_label_value_length",
        "decoded_bytes",
        "ingested",
    }


def test_body_must_be_bytes() -> None:
    with pytest.raises(TypeError):
        mimir_edge.scan_remote_write("not bytes")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        mimir_edge.scan_remote_write(b"", b"positional options are refused")  # type: ignore[call-arg, arg-type]


def test_cli_scan_matches_manifest(
    corpus: list[CorpusFile], tmp_path: pytest.TempPathFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    files = []
    for c in corpus[:4]:
        p = tmp_path / c.name  # type: ignore[operator]
        p.write_bytes(c.body)
        files.append(str(p))
    assert cli_main(["scan", "--json", *files]) == 0
    rows = json.loads(capsys.readouterr().out)
    for row, c in zip(rows, corpus[:4], strict=True):
        assert row["samples"] == c.expected["samples"]
        assert row["series"] == c.expected["series"]
        assert row["decoded_bytes"] == c.expected["raw_bytes"]


def test_cli_scan_reports_bad_bodies_and_exits_1() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mimir_edge.cli", "scan", "-"],
        input=b"\xff\xff\xff\xff\x0fnot snappy",
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 1
    assert b"decoded body too large:" in proc.stderr


def test_demo_counts_and_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "remote write 2.0" in out
    assert "HTTP 429" in out
    assert "Retry-After on denies" in out
