"""The protobuf codec, over the classes protoc generated from ``proto/edgeagent/v1``.

Frames larger than ``Limits.max_collection`` or ``Limits.max_tensor_bytes``
bytes are walked once before parsing (:func:`_prescan`) so that no repeated
field or map exceeds the collection cap, no tensor the tensor cap and no
nesting the depth cap: the parser then allocates only what was checked.
Smaller frames cannot hold more elements than bytes nor a tensor above the
cap, so they are parsed directly; their nesting is capped by the parser's
recursion limit (100) and by the conversion (``Limits.max_depth``).

Chunk messages are encoded with their data appended after the serialised
header, so the payload bytes are copied once.

This module (and with it google.protobuf and the generated classes, about 4 MiB of a
process's memory) is imported by ``edgeagent.wire`` on first use only: the first frame
of a link that negotiated protobuf, or an explicit ``import edgeagent.wire.protobuf``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Final

from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError as _PbDecodeError
from google.protobuf.message import EncodeError as _PbEncodeError

from ..exceptions import DecodeError, EncodeError
from ..v1 import envelope_pb2
from .envelope import PROTOCOL_VERSION, Envelope
from .kinds import MAX_STRUCT_DEPTH, Splicer
from .limits import DEFAULT_LIMITS, Limits
from .messages.payload import Chunk
from .messages.stream import StreamData
from .nodeid import NodeId
from .protogen import snake
from .route import Route
from .schema import REGISTRY, Message, struct_from_pb, struct_to_pb

__all__ = ["decode", "encode"]

_PbEnvelope: Any = envelope_pb2.Envelope
#: messages whose large ``data`` field (the highest numbered) is spliced onto the frame
_SPLICED: Final[dict[type, int]] = {Chunk: 3, StreamData: 6}
_FIELD_OF_CODE: Final = {code: snake(cls.__name__) for code, cls in REGISTRY.items()}
_CODE_OF_FIELD: Final = {name: code for code, name in _FIELD_OF_CODE.items()}


def _varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _header_pb(env: Envelope) -> Any:
    pb = _PbEnvelope()
    try:
        pb.version = env.version
        pb.msg_id = env.msg_id
        if type(env.source) is not NodeId:
            raise EncodeError("Envelope.source must be a NodeId")
        pb.source = env.source.to_bytes()
        if env.destination is not None:
            if type(env.destination) is not NodeId:
                raise EncodeError("Envelope.destination must be a NodeId or None")
            pb.destination = env.destination.to_bytes()
        if env.reply_to is not None:
            pb.reply_to = env.reply_to
        pb.ttl = env.ttl
        if env.proof is not None:
            if type(env.proof) is not bytes or len(env.proof) > 128:
                raise EncodeError("Envelope.proof must be bytes (at most 128)")
            pb.proof = env.proof
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"Envelope header: {exc}") from None
    if env.route is not None:
        if type(env.route) is not Route:
            raise EncodeError("Envelope.route must be a Route or None")
        pb.route.SetInParent()
        struct_to_pb(env.route, pb.route)
    return pb


def encode(env: Envelope) -> bytes:
    """Encode an Envelope as one protobuf frame."""
    body = env.body
    code = getattr(body, "TYPE_CODE", 0)
    if REGISTRY.get(code) is not type(body):
        raise EncodeError(f"{type(body).__name__} is not a registered message")
    pb = _header_pb(env)
    if isinstance(body, Chunk | StreamData) and len(body.data) >= Splicer.THRESHOLD:
        return _encode_spliced(pb, body)
    sub = getattr(pb, _FIELD_OF_CODE[code])
    sub.SetInParent()
    struct_to_pb(body, sub)
    try:
        return bytes(pb.SerializeToString(deterministic=True))
    except _PbEncodeError as exc:
        raise EncodeError(f"protobuf: {exc}") from None


def _encode_spliced(pb: Any, body: Chunk | StreamData) -> bytes:
    """Envelope{header, body{..., data}} with data (the body's last field) appended, not copied in."""
    sub = getattr(pb, _FIELD_OF_CODE[body.TYPE_CODE]).__class__()
    try:
        struct_to_pb(dataclasses.replace(body, data=b""), sub)
        sub.ClearField("data")
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"{type(body).__name__}: {exc}") from None
    head = sub.SerializeToString(deterministic=True)  # data (the highest field number) is appended below
    data = body.data
    data_head = _varint((_SPLICED[type(body)] << 3) | 2) + _varint(len(data))
    body_len = len(head) + len(data_head) + len(data)
    tag = _varint((body.TYPE_CODE << 3) | 2)
    return b"".join((pb.SerializeToString(deterministic=True), tag, _varint(body_len), head, data_head, data))


def decode(frame: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode one protobuf frame into an Envelope; raises only ``DecodeError``."""
    n = len(frame)
    if n > limits.max_frame:
        raise DecodeError(f"frame of {n} bytes exceeds the {limits.max_frame}-byte cap")
    if n == 0:
        raise DecodeError("empty frame")
    try:
        if n > limits.max_collection or n > limits.max_tensor_bytes:
            _prescan(memoryview(frame).cast("B"), limits)
        pb = _PbEnvelope()
        pb.ParseFromString(bytes(frame) if not isinstance(frame, bytes) else frame)
        return _envelope(pb, MAX_STRUCT_DEPTH - limits.max_depth + 1)
    except DecodeError:
        raise
    except _PbDecodeError as exc:
        raise DecodeError(f"protobuf: {exc}") from None
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    except Exception as exc:  # a bug must still not escape as another type
        raise DecodeError(f"malformed frame ({type(exc).__name__}: {exc})") from None


def _envelope(pb: Any, depth: int) -> Envelope:
    """Convert a parsed Envelope. ``depth`` is the envelope's own level, counted so that the
    conversion's nesting check refuses what the CBOR decoder refuses under the same limits."""
    if not pb.HasField("version") or pb.version < 1:
        raise DecodeError("missing or bad protocol version")
    if pb.version > PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {pb.version} (this node speaks {PROTOCOL_VERSION})")
    which = pb.WhichOneof("body")
    if which is None:
        raise DecodeError("missing body (or unknown message type)")
    cls: type[Message] = REGISTRY[_CODE_OF_FIELD[which]]
    for name in ("msg_id", "source", "ttl"):
        if not pb.HasField(name):
            raise DecodeError(f"missing {name}")
    route = struct_from_pb(Route, pb.route, depth + 1) if pb.HasField("route") else None
    proof = pb.proof if pb.HasField("proof") else None
    if proof is not None and len(proof) > 128:
        raise DecodeError("bad origin proof")
    body = struct_from_pb(cls, getattr(pb, which), depth + 1)
    return Envelope(
        body=body,
        source=NodeId.from_bytes(pb.source),
        destination=NodeId.from_bytes(pb.destination) if pb.HasField("destination") else None,
        msg_id=pb.msg_id,
        reply_to=pb.reply_to if pb.HasField("reply_to") else None,
        route=route,
        ttl=pb.ttl,
        version=pb.version,
        proof=proof,
    )


# -- pre-scan -----------------------------------------------------------------

_Plan = dict[int, tuple[bool, bool, Any, bool]]  # number -> (repeated, is_message, sub-descriptor, packable)
_NOT_PACKABLE: Final = {FieldDescriptor.TYPE_MESSAGE, FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES}
_PLANS: dict[str, _Plan] = {}
_TENSOR_NAME: Final = "edgeagent.v1.Tensor"


def _plan(desc: Descriptor) -> _Plan:
    plan = _PLANS.get(desc.full_name)
    if plan is None:
        plan = {}
        for f in desc.fields:
            is_msg = f.type == FieldDescriptor.TYPE_MESSAGE
            packable = f.is_repeated and f.type not in _NOT_PACKABLE
            plan[f.number] = (f.is_repeated, is_msg, f.message_type if is_msg else None, packable)
        _PLANS[desc.full_name] = plan
    return plan


def _read_varint(buf: memoryview, pos: int, end: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        if pos >= end:
            raise DecodeError("truncated varint")
        b = buf[pos]
        pos += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise DecodeError("varint too long")


def _prescan(buf: memoryview, limits: Limits) -> None:
    _scan(buf, 0, len(buf), _PbEnvelope.DESCRIPTOR, 0, limits)


def _scan(buf: memoryview, pos: int, end: int, desc: Descriptor, depth: int, limits: Limits) -> None:
    # protobuf spends up to two message levels per value level (Value, ValueList), so this
    # bound is loose; the exact cap is applied by the conversion after parsing
    if depth > 2 * limits.max_depth + 4:
        raise DecodeError(f"nesting deeper than {limits.max_depth}")
    plan = _plan(desc)
    counts: dict[int, int] = {}
    cap = limits.max_collection
    while pos < end:
        key, pos = _read_varint(buf, pos, end)
        number, wt = key >> 3, key & 7
        info = plan.get(number)
        if wt == 0:
            _, pos = _read_varint(buf, pos, end)
            n_items = 1
        elif wt == 1:
            pos += 8
            n_items = 1
        elif wt == 5:
            pos += 4
            n_items = 1
        elif wt == 2:
            length, pos = _read_varint(buf, pos, end)
            if length > end - pos:
                raise DecodeError(f"field {number} of {length} bytes overruns its message")
            n_items = 1
            if number == 3 and desc.full_name == _TENSOR_NAME and length > limits.max_tensor_bytes:
                raise DecodeError(f"tensor of {length} bytes exceeds the cap of {limits.max_tensor_bytes}")
            if info is not None and info[1]:
                _scan(buf, pos, pos + length, info[2], depth + 1, limits)
            elif info is not None and info[3]:
                # packed scalars: count the varint terminators (upper bound for fixed widths)
                n_items = sum(1 for b in buf[pos : pos + length] if b < 0x80) if length <= cap * 10 else cap + 1
            pos += length
        else:
            raise DecodeError(f"wire type {wt} not accepted")
        if pos > end:
            raise DecodeError("truncated frame")
        if info is not None and info[0]:
            c = counts.get(number, 0) + n_items
            if c > cap:
                raise DecodeError(f"repeated field {number} of {desc.name} exceeds the cap of {cap}")
            counts[number] = c
