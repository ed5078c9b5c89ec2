"""A payload's state at one node (``_Session``), the source's plan (``_Plan``), the send result,
the timing constants of the protocol, and the helpers the three roles share."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import LinkError
from ..host import Host, Inbound
from ..pacing import Pacer
from ..wire import (
    ChunkRequest,
    Envelope,
    Error,
    ErrorCode,
    Have,
    IndexRange,
    Manifest,
    NodeId,
    Progress,
)
from .planner import Forest, Member
from .store import ChunkStore, PayloadState

if TYPE_CHECKING:
    from collections.abc import Coroutine

    from ..links.link import Link


#: one logger for the payload roles (source, receiver, pusher): "edgeagent.payload.service", the name its
#: lines have always had (operators and bench/bcast.py read "payload ID complete" lines by it)
log = logging.getLogger("edgeagent.payload.service")
CACHE_CHUNKS: Final = 32  # verified chunks kept in memory for cut-through forwarding
#: A node serves the children that relay a stripe first: a leaf child's pusher stays at most this
#: many of the stripe's chunks ahead of its slowest relaying sibling. Without it a parent's upload
#: is split by TCP, which favours children with short round trips: leaves whose own uplinks are
#: idle (phones on cellular) over relays whose uplinks are full (their ACKs queue behind their
#: uploads), so relays starved, idled their uplinks, and finished last. One chunk (not more) also
#: lets a relay child take each new chunk at nearly the parent's whole upload, so the first chunks
#: fill a deep tree sooner (N = 64 at 12.5 Mbit/s: lead 4 -> 1.21-1.22 T_LB, 1 -> 1.19, 0 -> 1.20).
LEAF_LEAD: Final = 1
#: ... and a relaying child's pusher at most this many ahead of its slowest relaying sibling: a
#: relay can forward no faster than its own uplink, so chunks a parent gives one relay child beyond
#: that only wait there, while the sibling they were taken from idles its uplink and delays its
#: whole subtree (N = 64 at 12.5 Mbit/s, with idle relays helping: 1.21, 1.21 T_LB without this
#: lead, 1.17-1.19 in 5 runs with it; a lead of 2: 1.16, 1.19; of 8: 1.18, 1.22)
RELAY_LEAD: Final = 4
#: chunks up to this size are verified and written on the event loop (hash + pwrite, ~0.1 ms per
#: 256 KiB): a thread hop per chunk cost more CPU than the work (12 % of a relay's CPU in a profile).
#: Puts that sync to disk, and larger chunks, still run in a thread.
INLINE_PUT_MAX: Final = 1 << 20
#: an Assist (an idle relay serving a waiting receiver the end of a stripe) counts as running this
#: long: the source gives that receiver no other helper for the stripe meanwhile, and the receiver
#: does not ask again for chunks it requested this recently (unless its last link to the helper drops:
#: then it asks the parent at once)
ASSIST_FOR: Final = 10.0
#: a receiver asks a helper only for chunks beyond as many as its parent delivered in this many
#: seconds: those are likely in flight already (in the 8-agent loopback test, where socket buffers
#: hold megabytes, helpers otherwise repeated up to 0.14 S of chunks already on their way)
IN_FLIGHT_WINDOW: Final = 1.0
#: helpers are idle anyway: assist even a stripe missing a single chunk (two thirds at a time, at least one)
ASSIST_MIN_CHUNKS: Final = 1
#: a relaying sibling whose pusher has not advanced for this long (a stuck link) holds no one back
LEAD_HOLD_MAX: Final = 2.0
PROGRESS_EVERY: Final = 0.5  # seconds between Progress reports to the source
STALL_AFTER: Final = 15.0  # seconds without a chunk from a linked parent (while missing its stripe) = stalled
#: pauses between attempts to link to a parent before reporting it unreachable (a busy relay's uplink
#: drops handshakes and ARP now and then; one failed dial is not a dead parent)
LINK_RETRY: Final = (1.0, 2.0, 4.0)
LIVE_WINDOW: Final = 10.0  # the source counts a member alive when it heard from it this recently
MOVE_EVERY: Final = 10.0  # the source moves one child to another parent at most this often
#: a member whose Progress (every PROGRESS_EVERY) has not arrived for this long is pinged by the
#: source; no Pong within LIVE_WINDOW = dead. A SIGKILLed relay's RST can be lost in its full
#: upload queue, and the link's keepalive would notice only after 15 s.
SILENT_AFTER: Final = 3.0
#: the source holds its first chunk until every receiver reports it is linked to all its parents
#: (or this many seconds pass): handshakes done on idle uplinks take milliseconds, while behind
#: full tail-drop queues their lost SYN-ACKs cost 1, 3, 7 s of TCP backoff (at N = 64 half the
#: receivers got nothing for 7-14 s because their parents' links came up that late)
LINK_WAIT: Final = 5.0
#: fault injection for tests: a relay started with this variable set flips one bit in every chunk it forwards
FAULT_FLIP_ENV: Final = "EDGEAGENT_FAULT_FLIP_BITS"
EARLY_MAX: Final = 256  # messages kept per payload that arrive before its assignment
EARLY_PAYLOADS: Final = 64  # payloads such early messages are kept for
EARLY_BYTES: Final = 8 << 20  # bytes (Have bitmaps, mostly) all such early messages may hold together
#: a payload being received that has heard nothing (no chunk, no assignment, no link to a parent)
#: for this long gives up its place when a new payload would be refused by the session caps
#: (``payload_sessions_per_source`` / ``payload_sessions_total``): it is closed, its ``.part`` and
#: have-map stay on disk, so a later assignment from its source resumes it
SESSION_IDLE: Final = 300.0


@dataclass
class SendResult:
    """What ``send`` did (the ``send --json`` object)."""

    payload_id: str
    size: int
    receivers: int
    completed: int
    source_bytes_sent: int
    seconds: float
    failed: list[str]
    stripes: int
    repairs: int
    relayed_bytes: int
    cellular_uploaded_bytes: int
    per_node: dict[str, dict[str, Any]]
    source_wire_bytes: int = 0  # every byte the source's links sent meanwhile (framing, control, other traffic)
    assists: int = 0  # idle relays paired with waiting receivers in the last stretch (Assist messages)
    #: [parent, child] edges seen to fail (the child could not link to the parent): never planned again
    unlinkable: list[list[str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class _Session:
    """One payload at one node."""

    pid: bytes
    manifest: Manifest
    source: NodeId  # who planned it (Progress goes there)
    state: PayloadState | None  # None at the source (it reads its own file)
    src_path: Path | None = None
    stripes: int = 1
    parents: dict[int, NodeId | None] = field(default_factory=dict)
    parent_addrs: dict[int, tuple[str, ...]] = field(default_factory=dict)
    children: dict[int, tuple[NodeId, ...]] = field(default_factory=dict)
    relaying: dict[int, frozenset[NodeId]] = field(default_factory=dict)  # children that forward stripe j
    cursors: dict[NodeId, tuple[int, float]] = field(default_factory=dict)  # relaying child's pusher: cursor, when
    sent_all: set[NodeId] = field(default_factory=set)  # children sent every chunk of the stripes they get here
    #: chunks asked of helpers: when, and of which (None: asked of the parent since)
    requested: dict[int, tuple[float, NodeId | None]] = field(default_factory=dict)
    syncing: int = 0  # puts running in a thread (one may hold the store's lock through an fsync)
    pushed: asyncio.Condition = field(default_factory=asyncio.Condition)  # a relaying child's pusher advanced
    child_have: dict[NodeId, bytearray] = field(default_factory=dict)
    pushers: dict[NodeId, asyncio.Task[None]] = field(default_factory=dict)
    cache: OrderedDict[int, bytes] = field(default_factory=OrderedDict)
    order: list[int] = field(default_factory=list)  # chunks held, in the order this node came to hold them
    ordered: set[int] = field(default_factory=set)  # the same, as a set
    arrived: asyncio.Condition = field(default_factory=asyncio.Condition)
    bytes_sent: int = 0
    bytes_received: int = 0
    duplicates: int = 0
    bad_chunks: int = 0
    bad_from: set[NodeId] = field(default_factory=set)
    last_from_parent: dict[int, float] = field(default_factory=dict)
    #: when the last chunks of each stripe came from its parent (within IN_FLIGHT_WINDOW)
    parent_arrivals: dict[int, deque[float]] = field(default_factory=dict)
    reported_at: dict[NodeId, float] = field(default_factory=dict)  # parents reported lost, when
    stripe_have: list[int] = field(default_factory=list)  # chunks held per stripe
    attacher: asyncio.Task[None] | None = None
    reattach: bool = False
    go: asyncio.Event = field(default_factory=asyncio.Event)  # the source pushes once set
    attached: set[NodeId] = field(default_factory=set)  # parents told our Have over a live link
    started: float = field(default_factory=time.monotonic)
    finished: float | None = None
    reporter: asyncio.Task[None] | None = None
    #: peers this payload's assignments and assists named (parents, children, helpers): they may send
    #: its chunks, requests and Haves here, and nothing else
    admitted: set[NodeId] = field(default_factory=set)
    #: per parent, the source's admission of this node there (shown with each Have to that parent)
    admissions: dict[NodeId, bytes] = field(default_factory=dict)
    complete_event: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def complete(self) -> bool:
        return self.state is None or self.state.complete

    def has(self, i: int) -> bool:
        return self.state is None or self.state.has(i)


@dataclass
class _Plan:
    """The source's view of one payload it sends."""

    session: _Session
    forest: Forest
    members: dict[NodeId, Member]
    addresses: dict[NodeId, tuple[str, ...]]
    progress: dict[NodeId, Progress] = field(default_factory=dict)
    dead: set[NodeId] = field(default_factory=set)
    repairs: int = 0
    done: asyncio.Event = field(default_factory=asyncio.Event)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    wire0: int = 0
    t0: float = 0.0
    demoted: set[NodeId] = field(default_factory=set)  # relays made leaves (corrupting, metered)
    moved_at: dict[NodeId, float] = field(default_factory=dict)  # children moved to another parent, when
    #: (parent, child) edges seen to fail (the child could not link to the parent): never planned again
    failed_edges: set[tuple[NodeId, NodeId]] = field(default_factory=set)
    heard_at: dict[NodeId, float] = field(default_factory=dict)  # last Progress from each member
    checking: set[NodeId] = field(default_factory=set)  # members being pinged for silence
    assists: dict[tuple[NodeId, int], tuple[NodeId, float]] = field(default_factory=dict)  # running: helper, since
    assists_sent: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class _Roles:
    """What the three roles (source, receiver, pusher) share: the service's state, and the methods
    one role calls on another (declared here for the type checker; ``PayloadService`` has them all)."""

    host: Host
    store: ChunkStore
    sessions: dict[bytes, _Session]
    plans: dict[bytes, _Plan]
    sent_by_kind: Counter[str]
    _early: dict[bytes, list[tuple[NodeId, Any]]]
    _early_bytes: int  # what the messages in _early hold (see _keep_early)
    _credentials: dict[bytes, set[NodeId]]  # payloads not assigned here yet -> peers their source admitted
    _opened: dict[bytes, asyncio.Event]  # payloads someone waits to be assigned here (wait_complete)
    _flip: bool
    pacer: Pacer
    _tasks: set[asyncio.Future[Any]]

    if TYPE_CHECKING:

        async def _update_pushers(self, s: _Session) -> None: ...
        async def _on_have(self, s: _Session, child: NodeId, h: Have) -> None: ...
        def _push(self, s: _Session, child: NodeId) -> Coroutine[Any, Any, None]: ...
        def _open_link(self, peer: NodeId) -> Link | None: ...
        async def _chunk(self, s: _Session, i: int) -> bytes | None: ...
        async def _report(
            self, s: _Session, *, lost: NodeId | None = None, bad: NodeId | None = None, stalled: bool = False
        ) -> None: ...
        def _attach_parents(self, s: _Session) -> None: ...
        async def _replan(self, plan: _Plan, node: NodeId, *, dead: bool, why: str) -> None: ...
        async def _send_assigns(self, plan: _Plan, nodes: list[NodeId], old: Forest | None = None) -> None: ...
        async def _readmit(self, plan: _Plan, peer: NodeId) -> None: ...

    async def _reply_error(self, link: Link, env: Envelope, reason: str) -> None:
        if env.reply_to is None:
            with contextlib.suppress(LinkError):
                await link.send(env.reply(Error(ErrorCode.BAD_REQUEST, reason), self.host.node_id))

    async def _refuse_limit(self, m: Inbound[Any], limit: str, reason: str) -> None:
        """Refuse ``m`` by a resource limit: counted and logged (once a minute) by the node's Limiter,
        and answered with its Error (unless ``m`` is itself a reply)."""
        err = self.host.limiter.refuse(limit, m.source, reason, time.monotonic())
        if m.env.reply_to is None:
            await m.reply(err)

    def _keep_early(self, pid: bytes, source: NodeId, body: Any) -> None:
        """Keep a message for a payload not assigned here yet (bounded: per payload, payloads, bytes)."""
        nbytes = _early_size(body)
        early = self._early.get(pid)
        if early is None:
            if len(self._early) >= EARLY_PAYLOADS:
                return
            early = self._early[pid] = []
        if len(early) >= EARLY_MAX or self._early_bytes + nbytes > EARLY_BYTES:
            return
        early.append((source, body))
        self._early_bytes += nbytes

    def _take_early(self, pid: bytes) -> list[tuple[NodeId, Any]]:
        """The messages kept for ``pid`` (now assigned), no longer kept."""
        early = self._early.pop(pid, [])
        self._early_bytes = max(0, self._early_bytes - sum(_early_size(body) for _, body in early))
        return early

    def _receiving(self) -> list[_Session]:
        """Payloads this node is receiving and does not hold whole yet (what the session caps count)."""
        return [s for s in self.sessions.values() if s.state is not None and not s.state.complete]

    def _evict_idle(self, among: list[_Session], now: float) -> bool:
        """Close the longest-idle session of ``among`` that has heard nothing for SESSION_IDLE and pushes
        to no one; whether one was closed. Its files stay: a re-assignment resumes it."""
        idle = [s for s in among if not s.pushers and now - _last_heard(s) >= SESSION_IDLE]
        if not idle:
            return False
        s = min(idle, key=_last_heard)
        idle_for = now - _last_heard(s)
        log.info(
            "payload %s: idle for %.0f s: closed to make room (resumes if assigned again)", s.pid.hex()[:12], idle_for
        )
        for task in (s.reporter, s.attacher):
            if task is not None:
                task.cancel()
        del self.sessions[s.pid]
        if s.state is not None:
            with contextlib.suppress(Exception):
                s.state.close()
        return True


def _early_size(body: Any) -> int:
    """What an early message is counted as holding (a Have: its bitmap; anything else: a small fixed cost)."""
    return 64 + len(body.bitmap) if isinstance(body, Have) else 256


def _last_heard(s: _Session) -> float:
    """When ``s`` last heard of its payload: a chunk or a link from a parent, or an assignment."""
    return max(s.last_from_parent.values(), default=s.started)


def _request(s: _Session, chunks: list[int]) -> ChunkRequest:
    """A ChunkRequest for ``chunks`` (one range per chunk: a stripe's chunks are not adjacent)."""
    return ChunkRequest(s.pid, tuple(IndexRange(i, i + 1) for i in chunks))


def _describe(children: Mapping[NodeId, tuple[NodeId, ...]]) -> str:
    """One stripe's tree for a log line: ``parent>child,child`` per parent (short ids)."""
    return " ".join(f"{p.short()}>{','.join(c.short() for c in cs)}" for p, cs in children.items() if cs)


def _assignment(forest: Forest, n: NodeId) -> list[tuple[NodeId | None, tuple[NodeId, ...]]]:
    return [(t.parent.get(n), t.children.get(n, ())) for t in forest.trees]


def _holds_stripes(s: _Session, stripes: Iterable[int]) -> bool:
    """This node holds every chunk of each of ``stripes`` (a source holds everything)."""
    if s.state is None:
        return True
    # by the counts kept with s.order (s.complete may run ahead of them while a last chunk is put)
    return bool(s.stripe_have) and not any(_missing_in(s, j) for j in stripes if j < len(s.stripe_have))


def _idle(s: _Session) -> bool:
    """Its uplink has nothing left to do: it holds the stripes it forwards and has sent its children all of them.

    (A child that has not linked yet, so has no pusher, does not count: there is nothing to send it on.)
    """
    forwards = [j for j, kids in s.children.items() if kids]
    return _holds_stripes(s, forwards) and all(c in s.sent_all for c in s.pushers)


def _missing_in(s: _Session, stripe: int) -> bool:
    k = len(s.stripe_have)  # kept per stripe by every assignment and stored chunk
    return s.stripe_have[stripe] < max(0, (s.manifest.chunk_count - stripe + k - 1) // k)


def _pread(path: Path, off: int, n: int) -> bytes:
    with path.open("rb") as f:
        return os.pread(f.fileno(), n, off)
