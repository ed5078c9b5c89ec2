"""Streams: an ordered, acknowledged byte stream to one node that survives a route change."""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import BOOL, BYTES, STR, U64, Message, Rep, fld, message

__all__ = ["StreamAck", "StreamData", "StreamedObject"]


@message(72)
@dataclass(frozen=True, slots=True)
class StreamData(Message):
    """Bytes ``offset .. offset + len(data)`` of a stream.

    The receiver writes data in order and drops what it already has or what
    leaves a gap (the sender goes back to the acknowledged offset).
    """

    stream_id: bytes = fld(1, BYTES, "random id chosen by the sender (16 bytes)")
    offset: int = fld(2, U64, "position of data's first byte in the stream")
    size: int = fld(3, U64, "total stream length in bytes")
    name: str = fld(4, STR, "suggested name (first frame only)", default="")
    fin: bool = fld(5, BOOL, "this frame ends the stream", default=False)
    data: bytes = fld(6, BYTES, "the bytes (last field: encoded without extra copies)", default=b"")


@message(73)
@dataclass(frozen=True, slots=True)
class StreamAck(Message):
    """The receiver holds every byte before ``offset``; ``gap`` asks the sender to go back to it."""

    stream_id: bytes = fld(1, BYTES, "the stream")
    offset: int = fld(2, U64, "next byte the receiver expects")
    gap: bool = fld(3, BOOL, "data past offset arrived before offset: resend from offset", default=False)
    complete: bool = fld(4, BOOL, "the whole stream is stored", default=False)
    error: str = fld(5, STR, "non-empty: the receiver refuses the stream (the reason)", default="")


@message(74)
@dataclass(frozen=True, slots=True)
class StreamedObject(Message):
    """Store a stream this node received from the sender as a worker object (large ObjectMessages go as streams).

    Answered like an ObjectMessage (Response with the id, or Error); the same rights apply.
    """

    stream_id: bytes = fld(1, BYTES, "the completed stream holding the object's bytes")
    obj_id: str = fld(2, STR, "the object's id")
    dtype: str = fld(3, STR, 'tensor dtype, or "" for raw bytes', default="")
    shape: tuple[int, ...] = fld(4, Rep(U64), "tensor shape (with dtype)")
    tags: tuple[str, ...] = fld(5, Rep(STR), "search tags")
    description: str = fld(6, STR, "free text", default="")
    lease_ms: int = fld(7, U64, "lease in ms (0: the node's default)", default=0)
