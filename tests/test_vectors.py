"""Golden vectors: committed, reproducible, and readable by generic CBOR and protobuf readers."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import cbor2
import pytest

from edgeagent.wire import REGISTRY, decode
from edgeagent.wire.protogen import snake

ROOT = Path(__file__).resolve().parent.parent
VECTORS = sorted((ROOT / "tests" / "vectors").glob("*.json"))


def test_one_vector_per_message_type() -> None:
    names = {p.stem for p in VECTORS}
    assert names == {cls.__name__ for cls in REGISTRY.values()}


def test_vectors_match_the_current_code() -> None:
    script = str(ROOT / "scripts" / "gen_vectors.py")
    run = subprocess.run([sys.executable, script, "--check"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr


@pytest.fixture(scope="module")
def fresh_pb(tmp_path_factory: pytest.TempPathFactory) -> ModuleType:
    """The envelope module, generated now by protoc from proto/ (not the committed code)."""
    protoc = pytest.importorskip("grpc_tools.protoc", reason="grpcio-tools (dev extra) not installed")
    out = tmp_path_factory.mktemp("pbgen")
    files = [str(p.relative_to(ROOT / "proto")) for p in (ROOT / "proto" / "edgeagent" / "v1").glob("*.proto")]
    assert protoc.main(["protoc", f"-I{ROOT / 'proto'}", f"--python_out={out}", *files]) == 0
    # load under a private package name so the committed edgeagent.v1 is not touched
    pkg = out / "freshpb"
    (out / "edgeagent" / "v1").rename(pkg) if not pkg.exists() else None
    for f in pkg.glob("*_pb2.py"):
        f.write_text(f.read_text().replace("from edgeagent.v1 import", "from freshpb import"))
    (pkg / "__init__.py").write_text("")
    sys.path.insert(0, str(out))
    try:
        # a separate descriptor pool: the committed modules already registered these file names
        from google.protobuf import descriptor_pool, symbol_database

        pool = descriptor_pool.DescriptorPool()
        original = descriptor_pool.Default
        descriptor_pool.Default = lambda: pool  # type: ignore[assignment]
        symbol_database._DEFAULT = symbol_database.SymbolDatabase(pool=pool)  # type: ignore[attr-defined]
        try:
            return importlib.import_module("freshpb.envelope_pb2")
        finally:
            descriptor_pool.Default = original  # type: ignore[assignment]
    finally:
        sys.path.remove(str(out))


def _no_unknown_fields(msg: Any) -> None:
    from google.protobuf.unknown_fields import UnknownFieldSet

    assert len(UnknownFieldSet(msg)) == 0, f"unknown fields in {msg.DESCRIPTOR.full_name}"
    for field, value in msg.ListFields():
        if field.message_type is None:
            continue
        if field.message_type.GetOptions().map_entry:
            for v in value.values():
                if hasattr(v, "ListFields"):
                    _no_unknown_fields(v)
        elif field.is_repeated:
            for v in value:
                _no_unknown_fields(v)
        else:
            _no_unknown_fields(value)


@pytest.mark.parametrize("path", VECTORS, ids=[p.stem for p in VECTORS])
def test_vector(path: Path, fresh_pb: ModuleType) -> None:
    v = json.loads(path.read_text())
    assert set(v) >= {"message", "type_code", "proto_message", "cbor_hex", "protobuf_hex"}
    cls = REGISTRY[v["type_code"]]
    assert cls.__name__ == v["message"]
    assert v["proto_message"] == f"edgeagent.v1.{cls.__name__}"
    cbor_frame = bytes.fromhex(v["cbor_hex"])
    pb_frame = bytes.fromhex(v["protobuf_hex"])

    # our codecs: both frames carry the same envelope
    env = decode(cbor_frame, "cbor")
    assert type(env.body) is cls
    assert decode(pb_frame, "protobuf") == env

    # a generic CBOR reader sees a map with small integer keys and the type code under key 2
    plain = cbor2.loads(cbor_frame)
    assert isinstance(plain, dict) and plain[2] == v["type_code"]
    assert all(isinstance(k, int) and 1 <= k <= 9 for k in plain)

    # protobuf generated from proto/ at test time parses it with no unknown fields
    msg = fresh_pb.Envelope()
    msg.ParseFromString(pb_frame)
    assert msg.WhichOneof("body") == snake(cls.__name__)
    body = getattr(msg, snake(cls.__name__))
    assert body.DESCRIPTOR.full_name == v["proto_message"]
    _no_unknown_fields(msg)
    assert msg.SerializeToString() == pb_frame or len(msg.SerializeToString()) == len(pb_frame)
