"""The committed .proto files and generated Python are exactly what the schema and protoc produce."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_regenerating_from_proto_gives_committed_code() -> None:
    pytest.importorskip("grpc_tools", reason="grpcio-tools (dev extra) not installed")
    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_proto.py"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_proto_files_document_every_field() -> None:
    for path in (ROOT / "proto" / "edgeagent" / "v1").glob("*.proto"):
        lines = path.read_text().splitlines()
        for i, line in enumerate(lines):
            s = line.strip()
            if s.startswith(("optional ", "repeated ", "map<")) and path.name != "common.proto":
                assert lines[i - 1].strip().startswith("//"), f"{path.name}:{i + 1} has no doc comment"


def test_envelope_body_field_numbers_are_type_codes() -> None:
    from edgeagent.v1 import envelope_pb2
    from edgeagent.wire import REGISTRY
    from edgeagent.wire.protogen import snake

    oneof = envelope_pb2.Envelope.DESCRIPTOR.oneofs_by_name["body"]
    numbers = {f.name: f.number for f in oneof.fields}
    assert numbers == {snake(cls.__name__): code for code, cls in REGISTRY.items()}
