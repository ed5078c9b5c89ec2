"""The wire protocol: messages, the Envelope, and the CBOR and protobuf codecs.

>>> frame = encode(envelope, "cbor")          # bytes for one WebSocket/data-channel message
>>> envelope = decode(frame, "cbor", limits)  # raises DecodeError and nothing else

Everything here is pure: no I/O, no clock, no asyncio.
"""

from __future__ import annotations

from typing import Final, Literal

from ..exceptions import DecodeError, EncodeError
from . import cbor, protobuf
from .envelope import DEFAULT_TTL, PROTOCOL_VERSION, Envelope, new_msg_id
from .limits import DEFAULT_LIMITS, Limits
from .messages import *  # noqa: F403
from .messages import __all__ as _messages_all
from .nodeid import NodeId
from .route import ROUTE_BROADCAST, ROUTE_GENERAL, ROUTE_SOLO, Hop, Route, RouteSchema, RouteSegment
from .schema import REGISTRY, Message, ObjectRef, Struct
from .tensor import DTYPES, Tensor

Codec = Literal["cbor", "protobuf"]
CODECS: Final[tuple[Codec, ...]] = ("cbor", "protobuf")

__all__ = [
    "CODECS",
    "DEFAULT_LIMITS",
    "DEFAULT_TTL",
    "DTYPES",
    "PROTOCOL_VERSION",
    "REGISTRY",
    "ROUTE_BROADCAST",
    "ROUTE_GENERAL",
    "ROUTE_SOLO",
    "Codec",
    "DecodeError",
    "EncodeError",
    "Envelope",
    "Hop",
    "Limits",
    "Message",
    "NodeId",
    "ObjectRef",
    "Route",
    "RouteSchema",
    "RouteSegment",
    "Struct",
    "Tensor",
    "decode",
    "encode",
    "new_msg_id",
    *_messages_all,
]


def encode(env: Envelope, codec: Codec = "cbor") -> bytes:
    """Encode an Envelope as one frame in the given codec; raises ``EncodeError``."""
    if codec == "cbor":
        return cbor.encode(env)
    if codec == "protobuf":
        return protobuf.encode(env)
    raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")


def decode(frame: bytes | bytearray | memoryview, codec: Codec = "cbor", limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode one frame; raises ``DecodeError`` (with the reason) and nothing else."""
    if codec == "cbor":
        return cbor.decode(frame, limits)
    if codec == "protobuf":
        return protobuf.decode(frame, limits)
    raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")
