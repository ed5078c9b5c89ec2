"""Deterministic example instances of every wire struct (for golden vectors and docs).

Every field gets a fixed, non-trivial value derived from its kind, so the
vectors exercise every field of every message.
"""

from __future__ import annotations

import hashlib
from typing import Any

from .messages.payload import Manifest
from .nodeid import NodeId
from .schema import (
    BOOL,
    BYTES,
    F64,
    I64,
    NODEID,
    STR,
    TENSOR,
    U32,
    U64,
    VALUE,
    Kind,
    ObjectRef,
    Opt,
    Rep,
    StrMap,
    Struct,
    StructKind,
)
from .tensor import Tensor

__all__ = ["example_message", "example_value"]

_NODE = NodeId.from_public_key(hashlib.sha256(b"edgeagent example node").digest())
_TENSOR = Tensor("float32", (2, 2), bytes.fromhex("0000803f000000400000404000008040"))  # [[1, 2], [3, 4]]


def example_value(kind: Kind, depth: int = 0) -> Any:
    if kind is U64:
        return 1_234_567_890_123
    if kind is U32:
        return 42
    if kind is I64:
        return -7
    if kind is F64:
        return 1.5
    if kind is BOOL:
        return True
    if kind is STR:
        return "example"
    if kind is BYTES:
        return b"\x01\x02\x03"
    if kind is NODEID:
        return _NODE
    if kind is TENSOR:
        return _TENSOR
    if kind is VALUE:
        return {"n": 3, "x": -0.25, "s": "text", "b": b"\xff", "t": _TENSOR, "r": ObjectRef("w1"), "l": [None, True]}
    if isinstance(kind, Opt):
        return example_value(kind.inner, depth)
    if isinstance(kind, Rep):
        return () if depth >= 2 else (example_value(kind.inner, depth + 1),)
    if isinstance(kind, StrMap):
        return {"k": example_value(kind.inner, depth + 1)}
    if isinstance(kind, StructKind):
        return example_struct(kind.cls, depth + 1)
    raise TypeError(f"no example for {kind!r}")


def example_struct(cls: type[Struct], depth: int = 0) -> Any:
    if cls is Manifest:
        data = b"edgeagent example payload, 40 bytes....."
        hashes = b"".join(hashlib.sha256(data[i : i + 16]).digest() for i in range(0, len(data), 16))
        return Manifest(len(data), 16, "sha256", hashes, _NODE, "example.bin", 1_700_000_000_000, b"\x00" * 64)
    return cls(**{f.name: example_value(f.kind, depth) for f in cls.WIRE_FIELDS})


def example_message(cls: type[Struct]) -> Any:
    """A deterministic instance of ``cls`` with every field set."""
    return example_struct(cls)
