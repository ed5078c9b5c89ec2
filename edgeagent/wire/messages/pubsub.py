"""Pub-sub: topics hosted by a home node (the domain), at-least-once, per-publisher order, retention."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..nodeid import NodeId
from ..schema import NODEID, STR, U64, VALUE, Message, Rep, Struct, StructKind, fld, message, struct

__all__ = ["Deliver", "PubAck", "PubEntry", "Publish", "Subscribe", "Unsubscribe"]


@message(88)
@dataclass(frozen=True, slots=True)
class Subscribe(Message):
    """Subscribe to a topic at its home; ``publishers``/``seqs`` resume after what the subscriber last saw."""

    topic: str = fld(1, STR, "the topic")
    publishers: tuple[NodeId, ...] = fld(2, Rep(NODEID), "publishers the subscriber has seen (for resuming)")
    seqs: tuple[int, ...] = fld(3, Rep(U64), "the last sequence number seen from each of ``publishers``")


@message(89)
@dataclass(frozen=True, slots=True)
class Unsubscribe(Message):
    """Stop receiving a topic."""

    topic: str = fld(1, STR, "the topic")


@message(90)
@dataclass(frozen=True, slots=True)
class Publish(Message):
    """Messages for a topic from their publisher to the topic's home: sequence numbers first_seq, first_seq + 1, ..."""

    topic: str = fld(1, STR, "the topic")
    first_seq: int = fld(2, U64, "sequence number of the first value (per publisher and topic, from 1)")
    values: tuple[Any, ...] = fld(3, Rep(VALUE), "the messages, in order")
    published_ms: int = fld(4, U64, "when the publisher sent them, ms since the Unix epoch", default=0)


@message(91)
@dataclass(frozen=True, slots=True)
class PubAck(Message):
    """The home holds every message of ``topic`` from this publisher up to ``seq``."""

    topic: str = fld(1, STR, "the topic")
    seq: int = fld(2, U64, "highest sequence number held (cumulative)")


@struct
@dataclass(frozen=True, slots=True)
class PubEntry(Struct):
    """One published message as delivered."""

    publisher: NodeId = fld(1, NODEID, "who published it")
    seq: int = fld(2, U64, "its sequence number from that publisher")
    value: Any = fld(3, VALUE, "the message", default=None)
    published_ms: int = fld(4, U64, "when it was published, ms since the Unix epoch", default=0)


@message(92)
@dataclass(frozen=True, slots=True)
class Deliver(Message):
    """Messages of a topic from its home to a subscriber (in per-publisher order)."""

    topic: str = fld(1, STR, "the topic")
    entries: tuple[PubEntry, ...] = fld(2, Rep(StructKind(PubEntry)), "the messages")
