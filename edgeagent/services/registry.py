"""The peer registry: verified PeerRecords, this node's own record, and (on a domain) the registry
devices register with, which answers with the peers it may reach and a LAN-group hint, then pushes
every change to that list (a peer joined, changed its record, or left) to each device linked to it.

Bounded (issue 16, registry poisoning): every record a peer presents, or a domain lists, is checked
before it is kept (``check_record``): at most ``record_bytes`` encoded, at most ``list_items``
addresses and capabilities, and no role but "device" (a node's domain is a fact of its own
configuration, ``PeerView.is_domain``; a record never makes its peer a domain). At most
``registry_records`` records are kept (see ``RegistryService``), and the peer list a domain sends
is cut into pages of at most ``PAGE_BYTES`` a frame.

Pushed, not only answered (issue 18): discovery does not depend on the order devices start in. A
domain keeps a change log (each peer's last change, with a version number that grows) and, per
device, the version that device has been sent; changes are coalesced for ``PUSH_DELAY`` and sent as
one batch (pages of at most ``PAGE_BYTES``) computed when it is sent, so a slow device gets the
latest state, never a queue. A peer leaves when its link to the domain is down and its record has
expired, or when it withdraws its record (a goodbye: a newer signed record with ``ttl_s`` 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import ipaddress
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError, EncodeError, LinkError, SignatureError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..identity import sign_struct, verify_struct
from ..limits import ResourceLimits
from ..wire import Envelope, Error, ErrorCode, Message, NodeId, PeerList, PeerRecord, Response
from ..wire.cbor import encode_struct

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = [
    "PAGE_BYTES",
    "PUSH_DELAY",
    "RecordProblem",
    "RegistryService",
    "change_pages",
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
#: seconds a domain gathers changes for before it pushes them to a device, as one batch
PUSH_DELAY: Final = 0.2
_ID_COST: Final = 48  # a NodeId (38 bytes) in a page, with its framing
#: how long a registration waits for the frame a replaced push is sending (it goes first, whole)
_SENDING_WAIT: Final = 5.0
#: how long a device holds a push that follows a registration until it has taken that registration's answer
_ANSWER_WAIT: Final = 5.0


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


def change_pages(
    records: Iterable[tuple[PeerRecord, int]], removed: Iterable[NodeId], fill: int = _PAGE_FILL
) -> list[tuple[tuple[PeerRecord, ...], tuple[NodeId, ...]]]:
    """Changed records (each with its encoded size) and the NodeIds of peers that left, cut into
    pages of at most ``fill`` bytes: records first, then removals; no page when nothing changed."""
    out: list[tuple[tuple[PeerRecord, ...], tuple[NodeId, ...]]] = []
    recs: list[PeerRecord] = []
    ids: list[NodeId] = []
    used = 0
    items: list[tuple[PeerRecord | NodeId, int]] = [(rec, size + 8) for rec, size in records]
    items += [(node, _ID_COST) for node in removed]
    for item, cost in items:
        if cost > fill:
            continue
        if used + cost > fill:
            out.append((tuple(recs), tuple(ids)))
            recs, ids, used = [], [], 0
        if isinstance(item, PeerRecord):
            recs.append(item)
        else:
            ids.append(item)
        used += cost
    if recs or ids:
        out.append((tuple(recs), tuple(ids)))
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


@dataclass(eq=False)
class _Feed:
    """A device a domain pushes its peer list to: the link the device registered on (pushes follow
    the answer on it, in order), the seq of that registration (stamped on every frame), the change
    version the device has been sent up to, the listing pages still to send, whether it needs a
    whole listing again, and the one task that sends to it (one batch in flight at most)."""

    device: NodeId
    link: Link
    registration: int
    synced: int
    backlog: list[PeerList]
    full: bool = False
    task: asyncio.Task[None] | None = None
    sending: bool = False  # a frame is being sent: the task is not cancelled (that would break the link)


@dataclass
class _Listing:
    """A full listing a device is taking from its domain: the peers its pages named so far."""

    domain: NodeId
    registration: int
    pages: int
    seen: set[NodeId]


class RegistryService(Service):
    """Peer records: received, verified, kept; registration with the domain; pushes of changes.

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

    A domain answers a registration with the first page of a full listing of the authorised peers
    it holds (peers in the device's LAN group first) and pushes the rest as further PeerList
    messages, each frame at most ``PAGE_BYTES``. From then on it pushes every change to the device
    (joins and record changes in ``peers``, leaves in ``removed``): changes are gathered for
    ``push_delay`` seconds and sent as one batch computed at that moment (the latest state), one
    batch at a time per device; the change log is bounded (a device that falls behind what it keeps
    gets a whole listing again). A domain removes a peer whose link is down once its record has
    expired, or at once when it withdraws its record (``goodbye``). A device takes PeerLists from
    its domain only, applies them in the order they came, and once the last page of a full listing
    is in, forgets the peers that listing left out.
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
        self.registered = asyncio.Event()  # set once a domain has answered our registration
        self.seq = 0
        self.record_ttl = 120  # the ttl_s of this node's own record
        self.push_delay = PUSH_DELAY
        # the domain's change log: each authorised peer's last change (joined, changed, left), oldest first
        self._version = 0
        self._log: OrderedDict[NodeId, int] = OrderedDict()
        self._horizon = 0  # changes up to this version may have left the log: a device behind it gets a listing
        self._feeds: dict[NodeId, _Feed] = {}  # the devices pushed to
        self._idle: dict[NodeId, _Feed] = {}  # those whose task is not running (a change starts it)
        self._expiry: dict[NodeId, asyncio.TimerHandle] = {}  # records of peers without a link, by expiry
        self.push_batches = 0  # batches of changes this domain sent
        self.push_frames = 0  # frames it pushed (listing pages after the answer, and changes)
        # a device: registrations awaiting their answer, the listing being taken, the pushes taken
        self._registering: dict[int, asyncio.Event] = {}
        self._listing: _Listing | None = None
        self.pushes_received = 0

    def handlers(self) -> Mapping[type[Message], Registration]:
        # anyone may present its own record (an unauthorised peer gets an empty peer list);
        # further pages of the peer list, and its changes, come from this node's domain only
        return {
            PeerRecord: on(Policy(Sender.ANYONE), self._on_peer_record),
            PeerList: on(Policy(Sender.DOMAIN), self._on_peer_page),
        }

    @property
    def limits(self) -> ResourceLimits:
        return self.host.limiter.limits

    @property
    def _domain(self) -> bool:
        return self.host.role == "domain"

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
        had = self.records.pop(node, None) is not None
        self._kept.pop(node, None)
        self._strangers.pop(node, None)
        timer = self._expiry.pop(node, None)
        if timer is not None:
            timer.cancel()
        if had and self._domain and self.host.peers.authorised(node):
            self._changed(node)  # it left: pushed to the devices as a removal

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
        if self._domain:
            if authorised:
                self._changed(node)  # it joined or changed its record: pushed to the devices
            self._watch(node)
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

    # -- leaving: a domain forgets a peer whose link is down once its record has expired --------

    def _watch(self, node: NodeId) -> None:
        """On a domain: forget ``node``'s record now if it has no link and has expired, else check
        again when it expires (a link coming up stops the watch)."""
        timer = self._expiry.pop(node, None)
        if timer is not None:
            timer.cancel()
        kept = self._kept.get(node)
        if kept is None or self.host.peers.links(node):
            return
        left = kept.expires - self._clock()
        if left > 0:
            self._expiry[node] = asyncio.get_running_loop().call_later(left, self._watch, node)
            return
        log.info("peer %s left: no link and its record expired", node.short())
        self._forget(node)

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        timer = self._expiry.pop(peer, None)
        if timer is not None:
            timer.cancel()

    def on_link_down(self, peer: NodeId) -> None:
        if peer in self._kept:
            self._scan_after = 0.0  # its record may be evictable now
        self._drop(peer)
        if self._domain:
            self._watch(peer)

    def on_link_replaced(self, peer: NodeId) -> None:
        feed = self._feeds.get(peer)
        if feed is None or not feed.link.closed:
            return
        self._drop(peer)  # pushes went on the link that closed: a whole listing goes on another
        for link in self.host.peers.links(peer):
            if not link.closed:
                self._start(_Feed(peer, link, feed.registration, self._version, [], full=True))
                return

    # -- the change log and the pushes (a domain) ----------------------------------------------

    def _changed(self, node: NodeId) -> None:
        """``node``'s record changed (it joined, changed or left): log it and wake the idle feeds."""
        self._version += 1
        self._log[node] = self._version
        self._log.move_to_end(node)
        if len(self._log) > len(self.records) + self.limits.registry_records:
            self._trim()
        idle = list(self._idle.values())
        self._idle.clear()
        for feed in idle:
            self._run(feed)

    def _trim(self) -> None:
        """Keep the log bounded: the oldest changes go (down to half the slack); a device not yet
        sent one of those that went gets a whole listing instead of changes."""
        floor = min((f.synced for f in self._feeds.values()), default=self._version)
        target = len(self.records) + self.limits.registry_records // 2
        while len(self._log) > target:
            _node, version = self._log.popitem(last=False)
            if version > floor:
                self._horizon = max(self._horizon, version)

    def _start(self, feed: _Feed) -> None:
        self._feeds[feed.device] = feed
        if feed.backlog or feed.full or feed.synced < self._version:
            self._run(feed)
        else:
            self._idle[feed.device] = feed

    def _run(self, feed: _Feed) -> None:
        if feed.task is None:
            self._idle.pop(feed.device, None)
            feed.task = self.host.spawn(self._push(feed), name=f"peer list to {feed.device.short()}")

    def _drop(self, device: NodeId, feed: _Feed | None = None) -> _Feed | None:
        """Stop pushing to ``device`` (only if its feed is ``feed``, when given); the feed dropped."""
        current = self._feeds.get(device)
        if current is None or (feed is not None and current is not feed):
            return None
        del self._feeds[device]
        self._idle.pop(device, None)
        task = current.task
        if task is not None and not current.sending and task is not asyncio.current_task():
            task.cancel()  # it waits to gather changes; a frame being sent is let finish
        return current

    async def _push(self, feed: _Feed) -> None:
        """Send the listing's further pages at once, then the changes, gathered for ``push_delay``
        and computed when sent; until the device has been sent every change (or the feed is dropped)."""
        me, device = self.host.node_id, feed.device
        try:
            while self._feeds.get(device) is feed:
                if feed.backlog:
                    frames, feed.backlog = feed.backlog, []
                else:
                    if feed.synced >= self._version and not feed.full:
                        break  # caught up: a change starts the task again
                    await asyncio.sleep(self.push_delay)
                    if self._feeds.get(device) is not feed:
                        break
                    frames = self._batch(feed)
                for body in frames:
                    if self._feeds.get(device) is not feed:
                        break  # dropped, or replaced by a new registration (whose listing replaces this)
                    feed.sending = True
                    try:
                        await feed.link.send(Envelope(body, me, destination=device))
                    finally:
                        feed.sending = False
                    self.push_frames += 1
        except (LinkError, EncodeError) as exc:
            log.debug("pushing the peer list to %s stopped: %s", device.short(), exc)
            self._drop(device, feed)
        finally:
            feed.task = None
            if self._feeds.get(device) is feed:
                self._idle[device] = feed

    def _batch(self, feed: _Feed) -> list[PeerList]:
        """What ``feed``'s device has not been sent yet, as of now: the changes since its version
        (records that joined or changed, NodeIds that left), or a whole listing when it fell behind
        the log; the device is then at the current version."""
        target, reg = self._version, feed.registration
        if feed.full or feed.synced < self._horizon:
            feed.full = False
            feed.synced = target
            self.push_batches += 1
            listed = self._pages_for(feed.device)
            n = len(listed)
            return [PeerList(page, page=i, pages=n, registration=reg) for i, page in enumerate(listed, 1)]
        peers = self.host.peers
        changed: list[tuple[PeerRecord, int]] = []
        removed: list[NodeId] = []
        for node, version in reversed(self._log.items()):
            if version <= feed.synced:
                break
            if node == feed.device:
                continue
            rec = self.records.get(node)
            if rec is not None and peers.authorised(node):
                changed.append((rec, self._kept[node].size))
            else:
                removed.append(node)
        feed.synced = target
        if changed or removed:
            self.push_batches += 1
        return [PeerList(recs, removed=ids, registration=reg) for recs, ids in change_pages(changed, removed)]

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
        if problem is None and rec.ttl_s == 0:  # a goodbye: the peer withdraws its record
            self._withdraw(rec)
            if m.env.reply_to is None:
                await m.reply(Response(None))
            return
        if problem is None:
            if self._domain and m.link.peer == rec.node_id:
                rec = dataclasses.replace(rec, lan_group=lan_group(m.link.transport.remote_address))
            problem = self._keep(rec, size, now)
        if problem is not None:
            error = self._refused(problem, m.source, now)
            if m.env.reply_to is None:
                await m.reply(error)
            return
        if self._domain:  # the registry: answer with the other peers it may reach, then push changes
            if m.link.authorised:
                await self._answer(m, rec)
            else:
                await m.reply(PeerList(()))
        elif m.env.reply_to is None:
            await m.reply(Response(None))

    def _withdraw(self, rec: PeerRecord) -> None:
        old = self.records.get(rec.node_id)
        if old is not None and rec.seq > old.seq:  # a replayed goodbye does not undo a newer record
            log.info("peer %s said goodbye", rec.node_id.short())
            self._forget(rec.node_id)
        self._drop(rec.node_id)

    async def _answer(self, m: Inbound[PeerRecord], rec: PeerRecord) -> None:
        """Answer a registration with the first page of a full listing, then push to the device on
        that link: the listing's other pages, then every change after it."""
        device = rec.node_id
        listed = self._pages_for(device, rec.lan_group)
        version, n = self._version, len(listed)
        old = self._drop(device)
        if old is not None and old.task is not None and old.sending:
            await asyncio.wait({old.task}, timeout=_SENDING_WAIT)  # its frame goes before the answer, whole
        await m.reply(PeerList(listed[0], page=1, pages=n, registration=rec.seq))
        if m.link.closed or self._feeds.get(device) is not None:
            return  # gone already, or registered again meanwhile
        rest = [PeerList(page, page=i, pages=n, registration=rec.seq) for i, page in enumerate(listed[1:], 2)]
        self._start(_Feed(device, m.link, rec.seq, version, rest))

    def _pages_for(self, device: NodeId, group: str = "") -> list[tuple[PeerRecord, ...]]:
        """The peer list for ``device``: the authorised peers the registry holds (but the device),
        its LAN group first, cut into pages."""
        peers = self.host.peers
        if device in self.records:
            group = self.records[device].lan_group
        listed = sorted(
            (r for n, r in self.records.items() if n != device and peers.authorised(n)),
            key=lambda r: (not group or r.lan_group != group, r.node_id),
        )
        return pages((r, self._kept[r.node_id].size if r.node_id in self._kept else 0) for r in listed)

    # -- a device: the domain's listing and its pushes -----------------------------------------

    async def _on_peer_page(self, m: Inbound[PeerList]) -> None:
        """A further page of the domain's listing, or a push of changes: applied in link order."""
        self.pushes_received += 1
        answered = self._registering.get(m.body.registration) if m.body.registration else None
        if answered is not None:
            # it follows the answer to a registration still being taken: that answer goes first
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(_ANSWER_WAIT):
                    await answered.wait()
        self._apply(m.body, m.source)

    def _apply(self, body: PeerList, domain: NodeId) -> list[PeerRecord]:
        """Take a PeerList from ``domain``: keep its records, forget those it removed, and at the end
        of a full listing forget the peers it left out. Returns the records kept (or already known)."""
        listing = self._listing
        if body.pages and body.page == 1:
            listing = self._listing = _Listing(domain, body.registration, body.pages, set())
        elif not body.pages or listing is None or (listing.domain, listing.registration) != (domain, body.registration):
            listing = None  # changes, or a page of a listing whose start this node did not see
        good = self._take(body.peers, domain)
        for node in body.removed:
            if node in self.records:
                self._forget(node)
        if listing is not None:
            listing.seen.update(rec.node_id for rec in body.peers)
            if len(listing.seen) > 2 * self.limits.registry_records:
                self._listing = None  # no listing is that long: nothing is forgotten for it
            elif body.page >= listing.pages:
                self._listing = None
                for node in [n for n in self.records if n not in listing.seen]:
                    self._forget(node)
        return good

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

    def own_record(self, ttl_s: int | None = None) -> PeerRecord:
        """This node's signed PeerRecord (``ttl_s`` 0: a goodbye); ``seq`` grows with every call."""
        seq = self.next_seq()
        opts = self.host.link_options
        rec = PeerRecord(
            self.host.node_id,
            seq,
            role=self.host.role,
            addresses=advertised(self.host.listen_urls),
            capabilities=opts.capabilities,
            network_kind=opts.network_kind,
            metered=opts.metered,
            cost_per_gb=opts.cost_per_gb,
            issued_ms=int(time.time() * 1000),
            ttl_s=self.record_ttl if ttl_s is None else ttl_s,
            # the payload planner sizes fan-out by it; 0 = unknown (the planner assumes 50 Mbit/s)
            upload_bps=self._upload_bps(),
        )
        return sign_struct(rec, self.host.identity)

    async def register(self, domain: NodeId, timeout: float = 10.0) -> list[PeerRecord]:
        """Register with the domain's registry; returns (and keeps) the verified peer records its
        first page lists (further pages, and changes, arrive as PeerList messages, taken in order)."""
        rec = self.own_record()
        answered = self._registering[rec.seq] = asyncio.Event()
        try:
            reply = await self.host.request(domain, rec, timeout=timeout)
            if not isinstance(reply, PeerList):
                raise EdgeAgentError(f"the domain answered registration with {type(reply).__name__}")
            good = self._apply(reply, domain)
        finally:
            answered.set()
            del self._registering[rec.seq]
        self.registered.set()
        return good

    async def goodbye(self, timeout: float = 2.0) -> None:
        """Withdraw this node's record from its domains (a newer signed record with ``ttl_s`` 0), so
        the others hear at once that it left; meant for a node stopping, before its links close."""
        rec = self.own_record(ttl_s=0)
        for domain in self.host.peers.domain_ids:
            if self.host.peers.links(domain):
                with contextlib.suppress(EdgeAgentError):
                    await self.host.request(domain, rec, timeout=timeout)

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

    def status_fields(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"records": len(self.records), "pushes_received": self.pushes_received}
        if self._domain:
            doc |= {"devices_fed": len(self._feeds), "pushes": self.push_batches, "push_frames": self.push_frames}
        return {"registry": doc}

    async def aclose(self) -> None:
        for device in list(self._feeds):
            feed = self._drop(device)
            if feed is not None and feed.task is not None:
                feed.task.cancel()
        for timer in self._expiry.values():
            timer.cancel()
        self._expiry.clear()


def advertised(urls: list[str]) -> tuple[str, ...]:
    """The URLs to put in this node's record: a listener on a wildcard address (``0.0.0.0``, ``::``)
    becomes one URL per address of this machine's interfaces (loopback left out), since a peer
    dialling "0.0.0.0" reaches itself."""
    from urllib.parse import urlsplit

    out: list[str] = []
    for url in urls:
        parts = urlsplit(url)
        if parts.hostname not in ("0.0.0.0", "::"):
            out.append(url)
            continue
        port = f":{parts.port}" if parts.port else ""
        for ip in _interface_addresses(v6=parts.hostname == "::"):
            host = f"[{ip}]" if ":" in ip else ip
            out.append(f"{parts.scheme}://{host}{port}{parts.path}")
    return tuple(dict.fromkeys(out))


def _interface_addresses(*, v6: bool) -> list[str]:
    """This machine's interface addresses (IPv4; IPv6 too with ``v6``), loopback and link-local left out."""
    try:
        import ifaddr  # a zeroconf dependency, light
    except ImportError:
        return []
    out: list[str] = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
            elif v6 and isinstance(ip.ip, tuple) and ip.ip[0] != "::1" and not ip.ip[0].startswith("fe80"):
                out.append(ip.ip[0])
    return out
