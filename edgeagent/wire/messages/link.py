"""Link control: Hello, Ping, Pong, Close; and the generic Response and Error."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from ..nodeid import NodeId
from ..schema import BOOL, BYTES, NODEID, STR, U32, U64, VALUE, Message, Rep, Struct, StructKind, fld, message, struct

__all__ = [
    "Close",
    "Credit",
    "Error",
    "ErrorCode",
    "HandshakeOffer",
    "HandshakePayload",
    "Hello",
    "Ping",
    "Pong",
    "Response",
]


@message(16)
@dataclass(frozen=True, slots=True)
class Hello(Message):
    """First message each side sends on a new link, after the secure handshake."""

    node_id: NodeId = fld(1, NODEID, "the sender")
    versions: tuple[int, ...] = fld(2, Rep(U32), "protocol versions the sender speaks")
    codecs: tuple[str, ...] = fld(3, Rep(STR), 'codecs the sender accepts, preferred first: "cbor", "protobuf"')
    capabilities: tuple[str, ...] = fld(4, Rep(STR), 'optional features, e.g. "blake3", "webrtc", "relay"')
    role: str = fld(5, STR, '"device" or "domain"', default="device")
    listen: tuple[str, ...] = fld(6, Rep(STR), "URLs the sender accepts links on")
    network_kind: str = fld(7, STR, "wifi, ethernet, cellular, loopback or unknown", default="unknown")
    metered: bool = fld(8, BOOL, "true when the sender's bytes are metered", default=False)
    agent: str = fld(9, STR, 'software and version, e.g. "edgeagent/0.1.0"', default="")
    window: int = fld(
        10, U64, "frame bytes the sender accepts before it returns Credit (0: no flow control)", default=0
    )


@struct
@dataclass(frozen=True, slots=True)
class HandshakeOffer(Struct):
    """Payload of the first (unauthenticated, transcript-bound) Noise message from the dialler."""

    versions: tuple[int, ...] = fld(1, Rep(U32), "protocol versions the dialler speaks")
    codecs: tuple[str, ...] = fld(2, Rep(STR), "codecs the dialler accepts, preferred first")
    insecure: bool = fld(3, BOOL, "ask for plaintext records after the handshake (benchmarks only)", default=False)


@struct
@dataclass(frozen=True, slots=True)
class HandshakePayload(Struct):
    """Payload of Noise messages 2 and 3: proves the sender's NodeId owns its Noise static key.

    ``signature`` is the Ed25519 signature by ``node_id`` over
    ``b"edgeagent-noise-static-key:" + <the sender's X25519 static public key>``.
    The responder's Hello names the chosen version and codec first.
    """

    node_id: NodeId = fld(1, NODEID, "the sender")
    signature: bytes = fld(2, BYTES, "Ed25519 signature binding the Noise static key to node_id")
    hello: Hello = fld(3, StructKind(Hello), "the sender's Hello")


@message(17)
@dataclass(frozen=True, slots=True)
class Ping(Message):
    """Liveness and RTT probe; the receiver answers with a Pong echoing ``nonce``."""

    nonce: int = fld(1, U64, "echoed in the Pong")
    padding: bytes = fld(2, BYTES, "filler for throughput probes (ignored)", default=b"")


@message(18)
@dataclass(frozen=True, slots=True)
class Pong(Message):
    """Answer to a Ping."""

    nonce: int = fld(1, U64, "the Ping's nonce")


@message(19)
@dataclass(frozen=True, slots=True)
class Close(Message):
    """The sender is closing the link; ``code`` follows WebSocket close codes."""

    code: int = fld(1, U32, "1000 normal, 1001 going away, 1008 policy, 1011 error", default=1000)
    reason: str = fld(2, STR, "human-readable reason", default="")


@message(22)
@dataclass(frozen=True, slots=True)
class Credit(Message):
    """Flow control: the sender has consumed ``bytes`` more frame bytes; the peer may send that much more.

    Each side may have at most the other's Hello ``window`` of frame bytes
    outstanding (Ping, Pong, Close and Credit do not count), so a slow reader
    bounds its peer on every transport, whether or not the transport pushes back.
    """

    bytes: int = fld(1, U64, "frame bytes consumed since the last Credit")


class ErrorCode(IntEnum):
    """Codes carried by :class:`Error`."""

    UNKNOWN = 0
    BAD_REQUEST = 1
    DECODE = 2
    UNAUTHORIZED = 3
    NOT_FOUND = 4
    QUOTA = 5
    TIMEOUT = 6
    NO_ROUTE = 7
    UNSUPPORTED = 8
    INTERNAL = 9
    BUSY = 10


@message(20)
@dataclass(frozen=True, slots=True)
class Response(Message):
    """Successful answer to the request named by the Envelope's ``reply_to``."""

    value: Any = fld(1, VALUE, "the result (None when there is nothing to return)", default=None)


@message(21)
@dataclass(frozen=True, slots=True)
class Error(Message):
    """Failed answer to the request named by the Envelope's ``reply_to``."""

    code: int = fld(1, U32, "an ErrorCode")
    reason: str = fld(2, STR, "what went wrong and what to do", default="")
    retry_after_ms: int = fld(3, U32, "when > 0, the request may be retried after this delay", default=0)
