"""Reachability: a node asks another (its domain) to dial it back, and learns whether it is
dialable and which address the other side sees (AutoNAT's idea: never the node's own claim)."""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import BOOL, STR, U32, Message, Rep, Struct, StructKind, fld, message, struct

__all__ = ["DialBack", "DialBackReply", "DialResult"]


@message(53)
@dataclass(frozen=True, slots=True)
class DialBack(Message):
    """Dial me back: at the address you see me at, on these ports (at most 4)."""

    ports: tuple[int, ...] = fld(1, Rep(U32), "ports this node listens on (WebSocket)")


@struct
@dataclass(frozen=True, slots=True)
class DialResult(Struct):
    """One dial-back attempt."""

    url: str = fld(1, STR, "the URL dialled")
    ok: bool = fld(2, BOOL, "the handshake completed and the asker answered", default=False)
    error: str = fld(3, STR, "why not, when it failed", default="")


@message(54)
@dataclass(frozen=True, slots=True)
class DialBackReply(Message):
    """What the dial-backs found, and the address the asker's link came from."""

    observed: str = fld(1, STR, "the asker's address as this node sees it (ip, or ip:port)")
    results: tuple[DialResult, ...] = fld(2, Rep(StructKind(DialResult)), "one per port asked")
