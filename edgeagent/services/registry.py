"""The peer registry: verified PeerRecords, this node's own record, and (on a domain) the registry
devices register with, which answers with the peers it may reach and a LAN-group hint.

Bounded (issue 16, registry poisoning): every record a peer presents, or a domain lists, is checked
before it is kept (``check_record``): at most ``record_bytes`` encoded, at most ``list_items``
addresses and capabilities, and no role but "device" (a node's domain is a fact of its own
configuration, ``PeerView.is_domain``; a record never makes its peer a domain). At most
``registry_records`` records are kept (see ``RegistryService``), and the peer list a domain sends
is cut into pages of at most ``PAGE_BYTES`` a frame.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError, LinkError, SignatureError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..identity import sign_struct, verify_struct
from ..limits import ResourceLimits
from ..wire import Envelope, Error, ErrorCode, Message, NodeId, PeerList, PeerRecord, Response
from ..wire.cbor import encode_struct

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = [
    "PAGE_BYTES",
    "RecordProblem",
    "RegistryService",
    "check_record",
    "check_role",
    "check_size",
    "lan_group",
    "pages",
]

log = logging.getLogger(__name__)

#: the largest PeerList frame this node sends; pages are filled to ``_PAGE_FILL`` of it, the rest is
#: left for the envelope and for the difference between the CBOR and protobuf encodings
PAGE_BYTES: Final = 256 * 1024
_PAGE_FILL: Final = PAGE_BYTES * 7 // 8
_LAN_GROUP_BYTES: Final = 64  # what the domain's lan_group hint may add to a stored record
#: a record is kept for its ``ttl_s`` (at most this many seconds) after it arrived; once expired and
#: its peer has no link, it is the first to go when the registry is full
MAX_RECORD_TTL: Final = 600.0
ROLE_DEVICE: Final = "device"


@dataclass(frozen=True)
class RecordProblem:
    """Why a record is refused: the limit it breaks (a ``ResourceLimits`` name or "record_role"),
    the Error code to answer with and the reason."""

    limit: str
    code: ErrorCode
    reason: str


def record_bytes_cap(limits: ResourceLimits) -> int:
    """The largest record kept: ``record_bytes``, and never more than fits a peer-list page."""
    return min(limits.record_bytes, _PAGE_FILL - _LAN_GROUP_BYTES)


def check_size(rec: PeerRecord, limits: ResourceLimits) -> tuple[RecordProblem | None, int]:
    """A size problem with ``rec`` (None when it is within the limits) and its encoded size.

    Cheap enough to run before the signature is checked: list lengths first, then a lower bound
    of the size (its strings' lengths) so a huge record is refused without being encoded again,
    then the encoded size.
    """
    for what, items in (("addresses", rec.addresses), ("capabilities", rec.capabilities)):
        if len(items) > limits.list_items:
            reason = f"{len(items)} {what} is more than the {limits.list_items} allowed"
            return RecordProblem("list_items", ErrorCode.QUOTA, reason), 0
    cap = record_bytes_cap(limits)
    strings: Iterable[str] = (*rec.addresses, *rec.capabilities, rec.role, rec.network_kind, rec.lan_group)
    floor = len(rec.signature) + sum(len(s) for s in strings)
    size = floor if floor > cap else len(encode_struct(rec))
    if size > cap:
        reason = f"a peer record of {size} bytes is larger than the {cap} allowed"
        return RecordProblem("record_bytes", ErrorCode.QUOTA, reason), size
    return None, size


def check_role(rec: PeerRecord) -> RecordProblem | None:
    """A record describes a device: a claim to any other role (``"domain"``) is refused, since
    whether a node is a domain is a fact of each node's own configuration, never of a record."""
    if rec.role == ROLE_DEVICE:
        return None
    reason = f'a peer record may not claim role "{rec.role}" (a domain is a fact of configuration)'
    return RecordProblem("record_role", ErrorCode.BAD_REQUEST, reason)


def check_record(rec: PeerRecord, limits: ResourceLimits) -> tuple[RecordProblem | None, int]:
    """``check_size`` then ``check_role``: the first problem (None: it may be kept) and the size."""
    problem, size = check_size(rec, limits)
    return (problem or check_role(rec)), size


def pages(records: Iterable[tuple[PeerRecord, int]], fill: int = _PAGE_FILL) -> list[tuple[PeerRecord, ...]]:
    """Records (each with its encoded size) cut into pages of at most ``fill`` bytes of records.

    The first page is always there (empty when there is nothing to list); a record too large for
    any page is left out (``check_record`` keeps none of those).
    """
    out: list[tuple[PeerRecord, ...]] = []
    page: list[PeerRecord] = []
    used = 0
    for rec, size in records:
        cost = size + 8  # a list item's framing (key and length) in either codec
        if cost > fill:
            continue
        if used + cost > fill:
            out.append(tuple(page))
            page, used = [], 0
        page.append(rec)
        used += cost
    if page or not out:
        out.append(tuple(page))
    return out


def lan_group(remote_address: str) -> str:
    """The LAN group hint for a peer seen at ``host:port``: its /24 (IPv4) or /64 (IPv6) subnet."""
    host = remote_address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


@dataclass
class _Kept:
    """What the registry knows about a record it keeps: when it expires (this node's clock) and
    its encoded size (for the pages)."""

    expires: float
    size: int


class RegistryService(Service):
    """Peer records: received, verified, kept; registration with the domain.

    Every record is checked by ``check_record`` (refusals answered through ``host.limiter``:
    QUOTA for size and list lengths, BAD_REQUEST for a role claim). At most ``registry_records``
    records are kept; when the registry is full, a record from a peer it already holds (a refresh)
    is always taken, and a new peer's record takes the place of, in this order:

    1. a record that has expired (``ttl_s`` after it arrived here, at most ``MAX_RECORD_TTL``) and
       whose peer has no link: the one that expired first;
    2. only when the newcomer is authorised: a record of a peer this node does not authorise (a
       stranger), the oldest first;

    and is otherwise refused with QUOTA. A live authorised peer's record (linked, or not yet
    expired) is never evicted for a newcomer, so a flood of identities fills the registry only up
    to the cap and authorised devices still register past a flood of strangers.

    A domain answers a registration with the first page of the authorised peers it holds (peers in
    the device's LAN group first) and pushes the rest as further PeerList messages, each frame at
    most ``PAGE_BYTES``; a device takes those pages from its domain only.
    """

    name = "registry"

    def __init__(
        self, host: Host, *, upload_bps: Callable[[], float], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.host = host
        self._upload_bps = upload_bps
        self._clock = clock
        self.records: dict[NodeId, PeerRecord] = {}  # shared with the PeerTable: changed in place only
        self._kept: dict[NodeId, _Kept] = {}
        self._strangers: dict[NodeId, None] = {}  # records of peers not authorised, oldest first
        self._scan_after = 0.0  # no record is evictable before this (a full scan found none)
        self._paging: dict[NodeId, asyncio.Task[None]] = {}  # pages still being pushed, per device
        self.registered = asyncio.Event()  # set once a domain has answered our registration
        self.seq = 0

    def handlers(self) -> Mapping[type[Message], Registration]:
        # anyone may present its own record (an unauthorised peer gets an empty peer list);
        # further pages of the peer list come from this node's domain only
        return {
            PeerRecord: on(Policy(Sender.ANYONE), self._on_peer_record),
            PeerList: on(Policy(Sender.DOMAIN), self._on_peer_page),
        }

    @property
    def limits(self) -> ResourceLimits:
        return self.host.limiter.limits

    def next_seq(self) -> int:
        """A record sequence number that grows with every call (ms clock, never repeats)."""
        self.seq = max(self.seq + 1, int(time.time() * 1000))
        return self.seq

    # -- keeping records -----------------------------------------------------------------------

    def _refused(self, problem: RecordProblem, peer: NodeId, now: float) -> Error:
        return self.host.limiter.refuse(problem.limit, peer, problem.reason, now, code=problem.code)

    def _victim(self, newcomer_authorised: bool, now: float) -> NodeId | None:
        """The record to evict for a new peer's (None: none may go); see the class docstring."""
        peers = self.host.peers
        if now >= self._scan_after:
            best: NodeId | None = None
            best_expiry = soonest = math.inf
            for node, kept in self._kept.items():
                if peers.links(node):
                    continue
                if kept.expires <= now:
                    if kept.expires < best_expiry:
                        best, best_expiry = node, kept.expires
                else:
                    soonest = min(soonest, kept.expires)
            if best is not None:
                return best
            self._scan_after = soonest  # until then (or a link goes down) nothing has expired
        if newcomer_authorised:
            for node in list(self._strangers):
                if not peers.authorised(node):
                    return node
                del self._strangers[node]  # authorised since (it became this node's domain)
        return None

    def _forget(self, node: NodeId) -> None:
        self.records.pop(node, None)
        self._kept.pop(node, None)
        self._strangers.pop(node, None)

    def _keep(self, rec: PeerRecord, size: int, now: float) -> RecordProblem | None:
        """Keep ``rec`` (checked and verified) unless the registry is full; None when kept or stale."""
        node = rec.node_id
        old = self.records.get(node)
        if old is not None and rec.seq <= old.seq:
            return None  # stale or the same: nothing to keep, nothing to refuse
        authorised = self.host.peers.authorised(node)
        cap = self.limits.registry_records
        if old is None and len(self.records) >= cap:
            victim = self._victim(authorised, now)
            if victim is None:
                reason = f"the registry holds its {cap} records (none expired, none may be evicted)"
                return RecordProblem("registry_records", ErrorCode.QUOTA, reason)
            log.info("registry full: evicting %s for %s", victim.short(), node.short())
            self._forget(victim)
        self.records[node] = rec
        expires = now + min(float(rec.ttl_s), MAX_RECORD_TTL)
        self._kept[node] = _Kept(expires, size + _LAN_GROUP_BYTES)
        self._scan_after = min(self._scan_after, expires)
        if authorised:
            self._strangers.pop(node, None)
        else:
            self._strangers[node] = None
        return None

    def _admit(self, rec: PeerRecord, now: float) -> RecordProblem | None:
        """Check, verify and keep a record another node relayed to this one (a domain's list)."""
        problem, size = check_record(rec, self.limits)
        if problem is not None:
            return problem
        try:
            verify_struct(rec, rec.node_id)
        except SignatureError as exc:
            return RecordProblem("record_signature", ErrorCode.UNAUTHORIZED, str(exc))
        if rec.node_id == self.host.node_id:
            return None  # not this node's own record
        return self._keep(rec, size, now)

    def on_link_down(self, peer: NodeId) -> None:
        if peer in self._kept:
            self._scan_after = 0.0  # its record may be evictable now
        task = self._paging.pop(peer, None)
        if task is not None:
            task.cancel()

    # -- the registry (any node; the domain answers with its peer list) -----------------------

    async def _on_peer_record(self, m: Inbound[PeerRecord]) -> None:
        rec = m.body
        now = self._clock()
        problem, size = check_size(rec, self.limits)  # before the signature: no work for a huge record
        if problem is None:
            try:
                verify_struct(rec, rec.node_id)
            except SignatureError as exc:
                await m.refuse(ErrorCode.UNAUTHORIZED, str(exc))
                return
            if rec.node_id != m.source:
                await m.refuse(ErrorCode.UNAUTHORIZED, "a peer may only register itself")
                return
            problem = check_role(rec)
        if problem is None:
            domain = self.host.role == "domain"
            if domain and m.link.peer == rec.node_id:
                rec = dataclasses.replace(rec, lan_group=lan_group(m.link.transport.remote_address))
            problem = self._keep(rec, size, now)
        if problem is not None:
            error = self._refused(problem, m.source, now)
            if m.env.reply_to is None:
                await m.reply(error)
            return
        if self.host.role == "domain":  # the registry: answer with the other peers it may reach
            listed: list[tuple[PeerRecord, ...]] = self._pages_for(rec) if m.link.authorised else [()]
            await m.reply(PeerList(listed[0]))
            self._push(m.source, m.link, listed[1:])
        elif m.env.reply_to is None:
            await m.reply(Response(None))

    def _pages_for(self, rec: PeerRecord) -> list[tuple[PeerRecord, ...]]:
        """The peer list for the device ``rec`` describes: the authorised peers the registry holds
        (but the device), its LAN group first, cut into pages."""
        peers = self.host.peers
        group = self.records[rec.node_id].lan_group if rec.node_id in self.records else rec.lan_group
        listed = sorted(
            (r for n, r in self.records.items() if n != rec.node_id and peers.authorised(n)),
            key=lambda r: (not group or r.lan_group != group, r.node_id),
        )
        return pages((r, self._kept[r.node_id].size if r.node_id in self._kept else 0) for r in listed)

    def _push(self, peer: NodeId, link: Link, rest: list[tuple[PeerRecord, ...]]) -> None:
        """Send the pages after the first to ``peer`` (replacing pages still being pushed to it)."""
        old = self._paging.pop(peer, None)
        if old is not None:
            old.cancel()
        if not rest:
            return

        async def push() -> None:
            try:
                for page in rest:
                    await link.send(Envelope(PeerList(page), self.host.node_id, destination=peer))
            except LinkError:
                pass
            finally:
                if self._paging.get(peer) is task:
                    del self._paging[peer]

        task = self.host.spawn(push(), name=f"peer list pages to {peer.short()}")
        self._paging[peer] = task

    async def _on_peer_page(self, m: Inbound[PeerList]) -> None:
        """A further page of the domain's peer list."""
        self._take(m.body.peers, m.source)

    def _take(self, listed: Iterable[PeerRecord], domain: NodeId) -> list[PeerRecord]:
        """Keep the records a domain listed that pass the checks; those kept (or already known)."""
        now = self._clock()
        good = []
        for rec in listed:
            problem = self._admit(rec, now)
            if problem is not None:
                if problem.limit == "record_signature":
                    log.warning("domain listed a peer record that does not verify: %s", rec.node_id)
                else:
                    self._refused(problem, domain, now)  # counted (and logged): nothing to answer
                continue
            good.append(rec)
        return good

    # -- this node's record and registration ---------------------------------------------------

    def own_record(self) -> PeerRecord:
        """This node's signed PeerRecord; ``seq`` grows with every call."""
        seq = self.next_seq()
        opts = self.host.link_options
        rec = PeerRecord(
            self.host.node_id,
            seq,
            role=self.host.role,
            addresses=tuple(self.host.listen_urls),
            capabilities=opts.capabilities,
            network_kind=opts.network_kind,
            metered=opts.metered,
            cost_per_gb=opts.cost_per_gb,
            issued_ms=int(time.time() * 1000),
            # the payload planner sizes fan-out by it; 0 = unknown (the planner assumes 50 Mbit/s)
            upload_bps=self._upload_bps(),
        )
        return sign_struct(rec, self.host.identity)

    async def register(self, domain: NodeId, timeout: float = 10.0) -> list[PeerRecord]:
        """Register with the domain's registry; returns (and keeps) the verified peer records its
        first page lists (further pages arrive as PeerList messages and are kept as they come)."""
        reply = await self.host.request(domain, self.own_record(), timeout=timeout)
        if not isinstance(reply, PeerList):
            raise EdgeAgentError(f"the domain answered registration with {type(reply).__name__}")
        good = self._take(reply.peers, domain)
        self.registered.set()
        return good

    def peers_json(self) -> list[dict[str, Any]]:
        """The ``peers`` document."""
        return [
            {
                "node_id": str(rec.node_id),
                "seq": rec.seq,
                "role": rec.role,
                "addresses": list(rec.addresses),
                "network_kind": rec.network_kind,
                "metered": rec.metered,
                "lan_group": rec.lan_group,
            }
            for rec in self.records.values()
        ]

    async def aclose(self) -> None:
        for task in list(self._paging.values()):
            task.cancel()
        self._paging.clear()
