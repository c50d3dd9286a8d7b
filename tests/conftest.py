"""Shared fixtures: the captured corpus and a reference protobuf decoder.

The reference decoder is generated at session start with ``grpc_tools.protoc`` from the
upstream .proto files vendored in ``tests/proto`` (gogoproto options stripped), into
``tests/_generated`` (not committed). It is independent of the Rust scanner: a different
parser, written by other people, from the schema itself.
"""

from __future__ import annotations

import json
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
PROTO_DIR = HERE / "proto"
GENERATED = HERE / "_generated"
PROTO_FILES = [
    "prompb/types.proto",
    "prompb/remote.proto",
    "prompb/io/prometheus/write/v2/types.proto",
]


def corpus_dir() -> Path:
    """``$MIMIR_EDGE_CORPUS`` or ``../shared/corpus/prometheus-2.42`` beside the checkout."""
    env = os.environ.get("MIMIR_EDGE_CORPUS")
    path = Path(env) if env else ROOT.parent / "shared" / "corpus" / "prometheus-2.42"
    if not (path / "manifest.json").is_file():
        raise RuntimeError(f"remote-write corpus not found at {path} (set MIMIR_EDGE_CORPUS)")
    return path


@dataclass(frozen=True)
class CorpusFile:
    name: str
    body: bytes
    expected: dict[str, int]


def load_corpus() -> list[CorpusFile]:
    d = corpus_dir()
    manifest = json.loads((d / "manifest.json").read_text())
    return [
        CorpusFile(
            e["file"], (d / e["file"]).read_bytes(), {k: v for k, v in e.items() if k != "file"}
        )
        for e in manifest
    ]


def generate_reference_decoder() -> types.SimpleNamespace:
    """Compile the vendored .proto files and import the generated modules."""
    from grpc_tools import protoc  # imported here: only tests need it

    GENERATED.mkdir(exist_ok=True)
    args = [
        "protoc",
        f"-I{PROTO_DIR}",
        f"--python_out={GENERATED}",
        *(str(PROTO_DIR / p) for p in PROTO_FILES),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed: {' '.join(args)}")
    if str(GENERATED) not in sys.path:
        sys.path.insert(0, str(GENERATED))
    import importlib

    v1_types = importlib.import_module("prompb.types_pb2")
    v1_remote = importlib.import_module("prompb.remote_pb2")
    v2 = importlib.import_module("prompb.io.prometheus.write.v2.types_pb2")
    return types.SimpleNamespace(types=v1_types, WriteRequest=v1_remote.WriteRequest, v2=v2)


@pytest.fixture(scope="session")
def corpus() -> list[CorpusFile]:
    return load_corpus()


@pytest.fixture(scope="session")
def pb() -> Any:
    """Reference decoder: ``pb.WriteRequest`` (1.0), ``pb.types``, ``pb.v2.Request`` (2.0)."""
    return generate_reference_decoder()
