#!/usr/bin/env python3
"""Write the golden vectors in tests/vectors/: one JSON file per message type.

Usage: python scripts/gen_vectors.py [--check]

Each file holds {"message", "type_code", "proto_message", "cbor_hex",
"protobuf_hex", "fields"}: one Envelope carrying a deterministic example of the
message (fixed keys, fixed ids), encoded in both codecs, so an implementation
in another language can test its codecs against them. ``--check`` exits 1 if a
committed vector differs from what the current code produces.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeagent.wire import REGISTRY, Envelope, NodeId, encode  # noqa: E402
from edgeagent.wire.examples import example_message  # noqa: E402
from edgeagent.wire.protogen import PACKAGE  # noqa: E402

OUT = ROOT / "tests" / "vectors"
SOURCE = NodeId.from_public_key(bytes(range(32)))
DEST = NodeId.from_public_key(bytes(range(32, 64)))


def vector(code: int) -> dict[str, Any]:
    cls = REGISTRY[code]
    env = Envelope(example_message(cls), SOURCE, destination=DEST, msg_id=0x0123456789ABCDEF, reply_to=None, ttl=16)
    return {
        "message": cls.__name__,
        "type_code": code,
        "proto_message": f"{PACKAGE}.{cls.__name__}",
        "proto_envelope": f"{PACKAGE}.Envelope",
        "cbor_hex": encode(env, "cbor").hex(),
        "protobuf_hex": encode(env, "protobuf").hex(),
        "envelope": {"source": str(SOURCE), "destination": str(DEST), "msg_id": env.msg_id, "ttl": env.ttl},
    }


def render() -> dict[str, str]:
    return {f"{REGISTRY[c].__name__}.json": json.dumps(vector(c), indent=2) + "\n" for c in sorted(REGISTRY)}


def main() -> int:
    files = render()
    if "--check" in sys.argv[1:]:
        bad = [n for n, t in files.items() if not (OUT / n).exists() or (OUT / n).read_text() != t]
        bad += [p.name for p in OUT.glob("*.json") if p.name not in files]
        if bad:
            print("vectors out of date: " + ", ".join(sorted(bad)), file=sys.stderr)
            return 1
        print(f"{len(files)} vectors up to date")
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for p in OUT.glob("*.json"):
        if p.name not in files:
            p.unlink()
    for name, text in files.items():
        (OUT / name).write_text(text)
    print(f"wrote {len(files)} vectors to {OUT.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
