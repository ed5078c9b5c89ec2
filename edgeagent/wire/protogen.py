"""Generate ``proto/edgeagent/v1/*.proto`` from the wire schema.

The schema in ``edgeagent.wire`` is the single source of truth; the .proto
files are its cross-language rendering (one package, ``edgeagent.v1``, one file
per message family). ``scripts/gen_proto.py`` writes them and runs protoc; a
test checks the committed files equal what this module renders.
"""

from __future__ import annotations

import re
from collections import defaultdict
from typing import Any

from .envelope import ENVELOPE_FIELDS
from .schema import REGISTRY, STRUCTS, Kind, Opt, Rep, StrMap, Struct, StructKind

__all__ = ["render_all", "snake"]

PACKAGE = "edgeagent.v1"

_COMMON = """// A dynamically typed value (operation arguments, results, hyper-parameters).
// CBOR carries these natively; object references use CBOR tag 39.
message Value {
  oneof kind {
    NullValue null_value = 1;
    bool bool_value = 2;
    sint64 int_value = 3;
    double double_value = 4;
    string text_value = 5;
    bytes bytes_value = 6;
    Tensor tensor_value = 7;
    // id of an object held in the worker's store
    string ref = 8;
    ValueList list_value = 9;
    ValueMap map_value = 10;
  }
}

enum NullValue {
  NULL_VALUE = 0;
}

message ValueList {
  repeated Value items = 1;
}

message ValueMap {
  map<string, Value> entries = 1;
}

// A dense tensor: prod(shape) * itemsize little-endian bytes, row-major.
// CBOR form: RFC 8746 tag 40 over [shape, little-endian typed array].
message Tensor {
  // uint8 uint16 uint32 uint64 int8 int16 int32 int64 float16 float32 float64
  string dtype = 1;
  repeated uint64 shape = 2;
  bytes data = 3;
}
"""


def snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _file_of(cls: type[Struct]) -> str:
    return cls.__module__.rsplit(".", 1)[-1] + ".proto"


def _deps(kind: Kind) -> set[str]:
    if isinstance(kind, (Opt, Rep, StrMap)):
        return _deps(kind.inner)
    if isinstance(kind, StructKind):
        return {_file_of(kind.cls)}
    if kind.proto in ("Value", "Tensor"):
        return {"common.proto"}
    return set()


def _field_line(kind: Kind, name: str, number: int) -> str:
    if isinstance(kind, Rep):
        return f"repeated {kind.inner.proto} {name} = {number};"
    if isinstance(kind, StrMap):
        return f"{kind.proto} {name} = {number};"
    if kind.scalar:
        return f"optional {kind.proto} {name} = {number};"
    return f"{kind.proto} {name} = {number};"


def _doc(cls: type) -> list[str]:
    text = (cls.__doc__ or "").strip().split("\n\n")[0]
    return ["// " + line.strip() for line in text.splitlines() if line.strip()]


def _presence(f: Any) -> str:
    if f.required:
        return "required"
    if isinstance(f.kind, (Rep, StrMap)):
        return "may be empty"
    if f.default is None:
        return "optional"
    d = f.default
    if isinstance(d, bool):
        text = "true" if d else "false"
    elif isinstance(d, bytes):
        text = "empty" if not d else d.hex()
    elif isinstance(d, str):
        text = "empty" if not d else f'"{d}"'
    elif isinstance(d, (int, float)):
        text = repr(d)
    else:
        return "optional"
    return f"default {text}"


def _render_struct(cls: type[Struct]) -> tuple[str, set[str]]:
    lines = _doc(cls)
    code = REGISTRY.get(getattr(cls, "TYPE_CODE", 0))
    if code is cls:
        lines.append(f"// Type code {code.TYPE_CODE} (its field number in Envelope.body).")
    lines.append(f"message {cls.__name__} {{")
    deps: set[str] = set()
    if cls.RESERVED:
        lines.append(f"  reserved {', '.join(str(n) for n in cls.RESERVED)};")
    for f in cls.WIRE_FIELDS:
        lines.append(f"  // {f.doc} ({_presence(f)})")
        lines.append("  " + _field_line(f.kind, f.name, f.number))
        deps |= _deps(f.kind)
    lines.append("}")
    return "\n".join(lines) + "\n", deps


def _render_envelope() -> str:
    lines = [
        "// Every frame is one Envelope. The body's type code is the number of the",
        "// oneof field that is set. CBOR form: a map {1: version, 2: type code,",
        "// 3: msg_id, 4: source, 5: destination, 6: route, 7: reply_to, 8: ttl, 9: body, 10: proof}.",
        "message Envelope {",
        "  // 2: the type code, implied here by the body field number; 9: the CBOR body key.",
        "  reserved 2, 9;",
    ]
    for number, name, ptype, doc in ENVELOPE_FIELDS:
        if number == 2:
            continue
        lines.append(f"  // {doc}")
        prefix = "" if ptype == "Route" else "optional "
        lines.append(f"  {prefix}{ptype} {name} = {number};")
    lines.append("  oneof body {")
    for code in sorted(REGISTRY):
        cls = REGISTRY[code]
        lines.append(f"    {cls.__name__} {snake(cls.__name__)} = {code};")
    lines.append("  }")
    lines.append("}")
    return "\n".join(lines) + "\n"


def _header(name: str, imports: set[str]) -> str:
    out = [
        "// Generated from the edgeagent.wire schema by scripts/gen_proto.py: do not edit.",
        "// Field numbers are never reused; retired numbers are listed as reserved.",
        'syntax = "proto3";',
        "",
        f"package {PACKAGE};",
        "",
    ]
    for imp in sorted(imports - {name}):
        out.append(f'import "edgeagent/v1/{imp}";')
    if imports - {name}:
        out.append("")
    return "\n".join(out) + "\n"


def render_all() -> dict[str, str]:
    """File name -> text of every .proto file."""
    from . import messages  # noqa: F401  (registers every message)

    bodies: dict[str, list[str]] = defaultdict(list)
    deps: dict[str, set[str]] = defaultdict(set)
    bodies["common.proto"].append(_COMMON)
    for name in sorted(STRUCTS, key=lambda n: (_file_of(STRUCTS[n]), getattr(STRUCTS[n], "TYPE_CODE", 0), n)):
        cls = STRUCTS[name]
        text, d = _render_struct(cls)
        bodies[_file_of(cls)].append(text)
        deps[_file_of(cls)] |= d
    env_deps = {"route.proto"} | {_file_of(c) for c in REGISTRY.values()}
    bodies["envelope.proto"].append(_render_envelope())
    deps["envelope.proto"] = env_deps
    return {name: _header(name, deps[name]) + "\n".join(parts) for name, parts in sorted(bodies.items())}
