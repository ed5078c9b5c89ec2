"""The wire protocol: messages, the Envelope, and the CBOR and protobuf codecs.

>>> frame = encode(envelope, "cbor")          # bytes for one WebSocket/data-channel message
>>> envelope = decode(frame, "cbor", limits)  # raises DecodeError and nothing else

Everything here is pure: no I/O, no clock, no asyncio.

The protobuf codec (``edgeagent.wire.protobuf``, over the generated ``edgeagent.v1`` classes,
which import ``google.protobuf``) loads on its first use: the first frame a link that
negotiated protobuf encodes or decodes, or the first access to ``edgeagent.wire.protobuf``
(PEP 562). A node whose links all speak CBOR never loads it, though it still offers protobuf.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final, Literal

from ..exceptions import DecodeError, EncodeError
from . import cbor
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


_Frame = bytes | bytearray | memoryview
# the protobuf codec's functions once it is loaded (None until then); see _load_protobuf
_pb_encode: Callable[[Envelope], bytes] | None = None
_pb_decode: Callable[[_Frame, Limits], Envelope] | None = None


def _load_protobuf() -> tuple[Callable[[Envelope], bytes], Callable[[_Frame, Limits], Envelope]]:
    """Import the protobuf codec (and google.protobuf with it) on first use; later calls are free."""
    global _pb_encode, _pb_decode
    from . import protobuf as pb

    _pb_encode, _pb_decode = pb.encode, pb.decode
    return pb.encode, pb.decode


def encode(env: Envelope, codec: Codec = "cbor") -> bytes:
    """Encode an Envelope as one frame in the given codec; raises ``EncodeError``."""
    if codec == "cbor":
        return cbor.encode(env)
    if codec == "protobuf":
        return (_pb_encode or _load_protobuf()[0])(env)
    raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")


def decode(frame: bytes | bytearray | memoryview, codec: Codec = "cbor", limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode one frame; raises ``DecodeError`` (with the reason) and nothing else."""
    if codec == "cbor":
        return cbor.decode(frame, limits)
    if codec == "protobuf":
        return (_pb_decode or _load_protobuf()[1])(frame, limits)
    raise ValueError(f"unknown codec {codec!r}; use one of {CODECS}")


if not TYPE_CHECKING:  # hidden from type checkers, which then flag a misspelt edgeagent.wire.name

    def __getattr__(name: str) -> Any:
        """``edgeagent.wire.protobuf`` imports the codec on first access (PEP 562)."""
        if name == "protobuf":
            return importlib.import_module(f"{__name__}.protobuf")  # the import sets the attribute too
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
