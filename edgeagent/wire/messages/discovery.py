"""Discovery: signed peer records and route requests answered from a global view."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from ..nodeid import NodeId
from ..route import Hop, Route
from ..schema import BOOL, BYTES, F64, NODEID, STR, U32, U64, Message, Rep, StructKind, fld, message

__all__ = ["HopReport", "PeerList", "PeerRecord", "RouteReply", "RouteRequest"]


@message(48)
@dataclass(frozen=True, slots=True)
class PeerRecord(Message):
    """A node's signed description of itself (mDNS TXT, registry, Hello follow-up).

    ``signature`` is the node's Ed25519 signature over the CBOR encoding of the
    record with ``signature`` and ``lan_group`` empty (the domain fills in
    ``lan_group``); receivers drop records that do not verify.
    """

    UNSIGNED_FIELDS: ClassVar[tuple[str, ...]] = ("lan_group",)

    node_id: NodeId = fld(1, NODEID, "the node described (and signer)")
    seq: int = fld(2, U64, "increases with every change; older records are ignored")
    role: str = fld(3, STR, '"device" or "domain"', default="device")
    addresses: tuple[str, ...] = fld(4, Rep(STR), "URLs the node accepts links on")
    capabilities: tuple[str, ...] = fld(5, Rep(STR), "optional features")
    network_kind: str = fld(6, STR, "wifi, ethernet, cellular, loopback or unknown", default="unknown")
    metered: bool = fld(7, BOOL, "true when the node's bytes are metered", default=False)
    cost_per_gb: float = fld(8, F64, "what one GB costs the node", default=0.0)
    upload_bps: float = fld(9, F64, "measured upload in bytes per second (0 = unknown)", default=0.0)
    lan_group: str = fld(10, STR, "LAN group hint (e.g. subnet), set by the domain", default="")
    issued_ms: int = fld(11, U64, "when the record was made, ms since the Unix epoch", default=0)
    ttl_s: int = fld(
        12, U32, "seconds after issue when the record expires; 0 withdraws the node's record (a goodbye)", default=120
    )
    signature: bytes = fld(13, BYTES, "Ed25519 signature by node_id", default=b"")


@message(49)
@dataclass(frozen=True, slots=True)
class PeerList(Message):
    """The domain's peer list for a device: a full listing, or a push of what changed.

    A full listing (``pages`` > 0) lists every peer the device may reach, cut into pages of at
    most 256 KiB a frame: its first page answers a registration (or starts a resync) and the
    others follow, in order, on the same link; once its last page is in, the device forgets the
    peers its domain listed before that this listing left out. A push of changes (``pages`` 0)
    carries the peers that joined or changed since the domain's last frame to the device (in
    ``peers``) and those that left (in ``removed``). A domain pushes at most one batch at a time
    per device; a device takes PeerLists from its configured domain only.
    """

    peers: tuple[PeerRecord, ...] = fld(
        1, Rep(StructKind(PeerRecord)), "signed peer records: every peer listed, or those that joined or changed"
    )
    removed: tuple[NodeId, ...] = fld(
        2, Rep(NODEID), "peers that left (their link went down and record expired, or a goodbye): forget them"
    )
    page: int = fld(3, U32, "this page's number in a full listing, from 1 (0: a push of changes)", default=0)
    pages: int = fld(4, U32, "how many pages the full listing has (0: a push of changes)", default=0)
    registration: int = fld(
        5, U64, "the seq of the device's record whose registration this frame follows (0: none)", default=0
    )


@message(50)
@dataclass(frozen=True, slots=True)
class RouteRequest(Message):
    """Ask the network for routes to ``destinations`` (answered by RouteReply)."""

    destinations: tuple[NodeId, ...] = fld(1, Rep(NODEID), "where the routes must lead")
    purpose: str = fld(2, STR, '"request", "bulk", "stream" or "pubsub"', default="request")
    size_hint: int = fld(3, U64, "bytes the sender expects to move (0 = small)", default=0)
    max_routes: int = fld(4, U32, "at most this many routes in the reply", default=4)


@message(51)
@dataclass(frozen=True, slots=True)
class RouteReply(Message):
    """Routes known to the answering node, best first."""

    routes: tuple[Route, ...] = fld(1, Rep(StructKind(Route)), "candidate routes, best first")


@message(52)
@dataclass(frozen=True, slots=True)
class HopReport(Message):
    """A node's own live hops, sent to its domains and (by relays) to their neighbours.

    Receivers keep only hops that start at the sender, and forget them after
    ``ttl_s`` unless a newer report refreshes them.
    """

    hops: tuple[Hop, ...] = fld(1, Rep(StructKind(Hop)), "hops leaving the sender, with their measured figures")
    relays: bool = fld(2, BOOL, "the sender forwards messages for others", default=False)
    ttl_s: int = fld(3, U32, "seconds the hops stay valid", default=180)
