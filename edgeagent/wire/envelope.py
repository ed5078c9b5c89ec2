"""The Envelope: every frame on every link is exactly one of these.

An envelope that travels through a relay carries an origin proof: its source's Ed25519
signature over ``origin_message`` (the envelope without the fields a relay may change:
``ttl``, ``route`` and the proof itself). A first-hand envelope needs none: the link's
handshake already proved who the peer is.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Final

from .nodeid import NodeId
from .route import Route
from .schema import Message

__all__ = ["DEFAULT_TTL", "ENVELOPE_FIELDS", "PROTOCOL_VERSION", "Envelope", "new_msg_id"]

PROTOCOL_VERSION: Final = 1
DEFAULT_TTL: Final = 16

#: header fields: (number, name, proto type, doc). Number 2 (the type code) is
#: a CBOR key; in protobuf the type code is the number of the ``body`` oneof
#: field that is set, so 2 is reserved there. Body field: CBOR key 9.
ENVELOPE_FIELDS: Final = (
    (1, "version", "uint32", "protocol version; this is version 1"),
    (2, "type", "uint32", "type code of the body (CBOR only; protobuf uses the oneof field number)"),
    (3, "msg_id", "fixed64", "random 64-bit message id, unique per sender"),
    (4, "source", "bytes", "NodeId of the original sender (38-byte PeerId)"),
    (5, "destination", "bytes", "NodeId of the final receiver; absent = the link peer"),
    (6, "route", "Route", "the expected journey; relays may re-route"),
    (7, "reply_to", "fixed64", "msg_id of the request this answers"),
    (8, "ttl", "uint32", "hops left; a relay decrements it and drops the frame at 0"),
    (10, "proof", "bytes", "origin proof: the source's Ed25519 signature (present when relays carry it)"),
)


def new_msg_id() -> int:
    """A random 64-bit message id."""
    return secrets.randbits(64)


@dataclass(frozen=True, slots=True)
class Envelope:
    """Version, type (from the body), id, source, destination, route, reply-to, TTL, body."""

    body: Message
    source: NodeId
    destination: NodeId | None = None
    msg_id: int = field(default_factory=new_msg_id)
    reply_to: int | None = None
    route: Route | None = None
    ttl: int = DEFAULT_TTL
    version: int = PROTOCOL_VERSION
    proof: bytes | None = None

    @property
    def type(self) -> int:
        """The body's integer type code."""
        return self.body.TYPE_CODE

    def reply(self, body: Message, source: NodeId) -> Envelope:
        """An envelope answering this one, addressed back to its source."""
        return Envelope(body=body, source=source, destination=self.source, reply_to=self.msg_id)
