"""The payload-tree driver: the source sends each byte once, relays forward verified chunks as they arrive.

Roles per payload:

* the **source** hashes the file into a signed manifest, plans a forest of
  interior-disjoint stripe trees (``planner.plan_forest``) over the receivers,
  sends every receiver its ``TreeAssign`` per stripe (the manifest rides in
  the first only), pushes each stripe to the one child it has in that tree,
  collects ``Progress`` and repairs the forest when a relay dies, stalls or
  sends corrupt chunks;
* a **receiver** verifies the manifest, opens its on-disk store (resuming a
  ``.part`` and have-map), dials each stripe's parent and sends it a ``Have``;
  every chunk is verified against the manifest before it is stored or
  forwarded; a relay pushes each verified chunk of its stripe to its children
  at once (cut-through), from a bounded in-memory window or else from disk,
  with backpressure from each child's link credit.

A child tells its parent what it holds (``Have``), so a re-attached or
restarted child is sent only what it lacks.
"""

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

from ..exceptions import EdgeAgentError, LinkError, NoRoute, PayloadError, SignatureError
from ..wire import (
    Assist,
    Chunk,
    ChunkRequest,
    Envelope,
    Error,
    ErrorCode,
    Have,
    IndexRange,
    Manifest,
    NodeId,
    Progress,
    TreeAssign,
)
from .manifest import MAX_CHUNK_SIZE, hash_available, make_manifest, payload_id, verify_manifest
from .planner import Forest, Member, Standing, Tree, assists, move, plan_forest, reassign_metered, repair, stripe_sizes
from .store import ChunkStore, PayloadState

if TYPE_CHECKING:
    from ..links.link import Link
    from ..node import Node

__all__ = ["PayloadService", "SendResult"]

log = logging.getLogger(__name__)
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
    heard_at: dict[NodeId, float] = field(default_factory=dict)  # last Progress from each member
    checking: set[NodeId] = field(default_factory=set)  # members being pinged for silence
    assists: dict[tuple[NodeId, int], tuple[NodeId, float]] = field(default_factory=dict)  # running: helper, since
    assists_sent: int = 0
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


class PayloadService:
    """Payload trees for one Node: ``send`` as a source; handlers for the payload messages."""

    def __init__(
        self, node: Node, root: Path, *, quota_bytes: int | None = None, upload_bps: float | None = None
    ) -> None:
        self.node = node
        self.upload_bps = upload_bps
        self._pace_t = 0.0
        self.store = ChunkStore(root, quota_bytes=quota_bytes)
        self.sessions: dict[bytes, _Session] = {}
        self.plans: dict[bytes, _Plan] = {}
        self.peers: set[NodeId] = set()  # parents and children named by assignments: authorised for payloads
        self._early: dict[bytes, list[tuple[NodeId, Any]]] = {}  # messages that arrived before their assignment
        self.sent_by_kind: Counter[str] = Counter()
        self._flip = bool(os.environ.get(FAULT_FLIP_ENV))
        self._tasks: set[asyncio.Future[Any]] = set()
        if self._flip:
            log.warning("%s is set: this node corrupts every chunk it forwards (fault injection)", FAULT_FLIP_ENV)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- source -----------------------------------------------------------------------------

    async def send(
        self,
        path: Path,
        to: list[NodeId] | None = None,
        *,
        chunk_size: int = 256 * 1024,
        stripes: int | None = None,
        wait: bool = True,
        timeout: float | None = None,
        progress: Any = None,
        star: bool = False,
    ) -> SendResult:
        """Send the file at ``path`` to ``to`` (None: every authorised peer linked or registered here).

        ``star`` sends one copy to every receiver straight from here (no relays): the
        baseline that federated-learning frameworks use, for comparisons.
        """
        pid = await self.start(path, to, chunk_size=chunk_size, stripes=stripes, star=star)
        return await self.wait(pid, timeout if wait else 0.0, progress)

    async def start(
        self,
        path: Path,
        to: list[NodeId] | None = None,
        *,
        chunk_size: int = 256 * 1024,
        stripes: int | None = None,
        star: bool = False,
    ) -> bytes:
        """Hash, plan and assign; returns the payload id once every receiver has its TreeAssigns."""
        node = self.node
        me = node.identity.node_id
        if not 0 < chunk_size <= MAX_CHUNK_SIZE:
            raise PayloadError(f"chunk size {chunk_size} bytes: use 1 byte to {MAX_CHUNK_SIZE >> 20} MiB")
        if not await asyncio.to_thread(path.is_file):
            raise PayloadError(f"{path} is not a readable file")
        receivers = self._receivers(to)
        if not receivers:
            raise NoRoute("no receivers: no authorised peer is linked or registered here (or name them with --to)")
        manifest = await asyncio.to_thread(
            make_manifest,
            path,
            node.identity,
            chunk_size=chunk_size,
            name=path.name,
            created_ms=int(time.time() * 1000),
            hash_alg=self.hash_for(receivers),
        )
        pid = payload_id(manifest)
        members = {r: self._member(r) for r in receivers}
        if star:
            members = {r: Member(r, m.upload_bps, False, m.lan_group) for r, m in members.items()}
        if len({m.lan_group for m in members.values()}) == 1:
            # everyone on one LAN (the domain sees one subnet): grouping would only funnel each stripe
            # through one relay; plan as one network instead
            members = {r: Member(r, m.upload_bps, m.relay_ok, "") for r, m in members.items()}
        forest = await asyncio.to_thread(plan_forest, me, list(members.values()), stripes=stripes)
        addresses = {r: self._addresses(r) for r in receivers}
        addresses[me] = tuple(node.listen_urls)
        session = _Session(pid, manifest, me, None, src_path=path, stripes=forest.stripes)
        session.order = list(range(manifest.chunk_count))
        session.ordered = set(session.order)
        self.sessions[pid] = session
        plan = _Plan(session, forest, members, addresses)
        plan.wire0 = self._wire_bytes_sent()
        plan.t0 = time.monotonic()
        self.plans[pid] = plan
        self._adopt_source_tree(plan)
        log.info(
            "payload %s: %d bytes to %d receivers in %d stripe(s)", pid.hex()[:12], manifest.size, len(receivers),
            forest.stripes,
        )  # fmt: skip
        for tree in forest.trees:
            log.info("payload %s: stripe %d: %s", pid.hex()[:12], tree.stripe, _describe(tree.children))
        await self._send_assigns(plan, receivers)
        plan.heard_at = dict.fromkeys(receivers, time.monotonic())
        self._spawn(self._go_when_linked(plan))
        self._spawn(self._watch(plan))
        return pid

    async def wait(self, pid: bytes, timeout: float | None = None, progress: Any = None) -> SendResult:
        """Wait until every live receiver of ``pid`` holds it (or ``timeout``); the result so far."""
        plan = self.plans[pid]
        if timeout is None or timeout > 0:
            await self._wait(plan, timeout, progress)
        res = self._result(plan, time.monotonic() - plan.t0)
        res.source_wire_bytes = self._wire_bytes_sent() - plan.wire0
        return res

    def busy(self) -> bool:
        """True while a payload moves through this node (link probes wait: they would compete and cost bytes).

        That is: it pushes chunks, it receives a payload that arrived within the last minute,
        or it is the source of a payload not yet everywhere (within an hour of its start). A
        source whose own pushers are done still waits: its 256 KiB probes would count against
        its egress while the tree distributes (17 probes, 6 % of a 64 MiB payload at N = 64).
        """
        now = time.monotonic()
        for s in self.sessions.values():
            if s.pushers:
                return True
            if (
                s.state is not None
                and not s.complete
                and now - max(s.last_from_parent.values(), default=s.started) < 60
            ):
                return True
        return any(not p.done.is_set() and now - p.t0 < 3600 for p in self.plans.values())

    def _wire_bytes_sent(self) -> int:
        """Bytes this node has put on all its links (frames, records, encryption), for egress accounting."""
        live = sum(link.stats.bytes_sent for links in self.node.links.values() for link in links)
        return live + self.node.closed_bytes_sent

    def _receivers(self, to: list[NodeId] | None) -> list[NodeId]:
        node = self.node
        me = node.identity.node_id
        if to:
            return [r for r in dict.fromkeys(to) if r != me]
        found: dict[NodeId, None] = {}
        for peer, links in node.links.items():
            if links and links[0].authorised and links[0].peer_hello.role != "domain":
                found[peer] = None
        for peer, rec in node.peer_records.items():
            if rec.role != "domain" and node.authorised(peer):
                found[peer] = None
        found.pop(me, None)
        return sorted(found)

    def hash_for(self, receivers: list[NodeId]) -> str:
        """BLAKE3 when this node and every receiver advertise it (``blake3`` capability), else SHA-256."""
        if not hash_available("blake3"):
            return "sha256"
        for peer in receivers:
            rec = self.node.peer_records.get(peer)
            links = self.node.links.get(peer, [])
            caps = rec.capabilities if rec is not None else (links[0].peer_hello.capabilities if links else ())
            if "blake3" not in caps:
                return "sha256"
        return "blake3"

    def _member(self, peer: NodeId) -> Member:
        node = self.node
        rec = node.peer_records.get(peer)
        links = node.links.get(peer, [])
        kind = rec.network_kind if rec else (links[0].peer_hello.network_kind if links else "unknown")
        metered = rec.metered if rec else (links[0].peer_hello.metered if links else False)
        # every unmetered, non-cellular receiver forwards payload chunks (DESIGN s.6: metered nodes are leaves)
        relay_ok = not metered and kind != "cellular"
        upload = rec.upload_bps if rec else 0.0
        return Member(peer, upload_bps=upload, relay_ok=relay_ok, lan_group=rec.lan_group if rec else "")

    def _addresses(self, peer: NodeId) -> tuple[str, ...]:
        rec = self.node.peer_records.get(peer)
        if rec is not None and rec.addresses:
            return tuple(rec.addresses)
        links = self.node.links.get(peer, [])
        return tuple(links[0].peer_hello.listen) if links else ()

    def _adopt_source_tree(self, plan: _Plan) -> None:
        s = plan.session
        me = self.node.identity.node_id
        s.stripes = plan.forest.stripes
        s.children = {t.stripe: t.children.get(me, ()) for t in plan.forest.trees}
        s.relaying = {
            t.stripe: frozenset(k for k in t.children.get(me, ()) if t.children.get(k)) for t in plan.forest.trees
        }
        s.parents = dict.fromkeys(s.children)
        for kids in s.children.values():
            self.peers.update(kids)

    async def _send_assigns(self, plan: _Plan, nodes: list[NodeId], old: Forest | None = None) -> None:
        """Send each node its TreeAssigns (only those that changed, when ``old`` is given)."""
        s = plan.session
        me = self.node.identity.node_id
        sizes = {t.stripe: t.sizes() for t in plan.forest.trees}
        old_sizes = {t.stripe: t.sizes() for t in old.trees} if old is not None else {}
        for n in nodes:
            if n in plan.dead:
                continue
            msgs = []
            for tree in plan.forest.trees:
                parent = tree.parent.get(n)
                kids = tree.children.get(n, ())
                weights = tuple(sizes[tree.stripe].get(k, 1) for k in kids)
                if old is not None:
                    ot = old.trees[tree.stripe] if tree.stripe < len(old.trees) else None
                    if (
                        ot is not None
                        and ot.parent.get(n) == parent
                        and ot.children.get(n, ()) == kids
                        and tuple(old_sizes[tree.stripe].get(k, 1) for k in kids) == weights
                    ):
                        continue
                msgs.append(
                    TreeAssign(
                        s.pid,
                        tree.stripe,
                        plan.forest.stripes,
                        parent,
                        kids,
                        None,
                        None,
                        plan.addresses.get(parent, ())
                        if parent is not None and parent != me
                        else tuple(self.node.listen_urls),
                        weights,
                    )
                )
            if not msgs:
                continue
            if old is None or n not in self.sessions_known(plan):
                msgs[0] = TreeAssign(
                    msgs[0].payload_id, msgs[0].stripe, msgs[0].stripes, msgs[0].parent, msgs[0].children, None,
                    s.manifest, msgs[0].parent_addresses, msgs[0].weights,
                )  # fmt: skip
            for m in msgs:
                try:
                    await self.node.send(n, m)
                except EdgeAgentError as exc:
                    log.warning("payload %s: cannot assign %s: %s", s.pid.hex()[:12], n, exc)
                    break

    def sessions_known(self, plan: _Plan) -> set[NodeId]:
        """Members that have reported (so they hold the manifest)."""
        return set(plan.progress)

    async def _wait(self, plan: _Plan, timeout: float | None, progress: Any) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not plan.done.is_set():
            plan.changed.clear()
            if progress is not None:
                progress(self._summary(plan))
            remaining = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if remaining <= 0:
                break
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await plan.changed.wait()
        if progress is not None:
            progress(self._summary(plan))

    def _summary(self, plan: _Plan) -> dict[str, Any]:
        size = plan.session.manifest.size
        live = [n for n in plan.members if n not in plan.dead]
        have = sum(min(plan.progress[n].have_bytes, size) if n in plan.progress else 0 for n in live)
        return {
            "receivers": len(plan.members),
            "completed": sum(1 for n in live if n in plan.progress and plan.progress[n].complete),
            "failed": len(plan.dead),
            "have_bytes": have,
            "total_bytes": size * len(live),
            "source_bytes_sent": plan.session.bytes_sent,
        }

    def _result(self, plan: _Plan, seconds: float) -> SendResult:
        s = plan.session
        per_node: dict[str, dict[str, Any]] = {}
        relayed = cellular = 0
        for n, m in plan.members.items():
            p = plan.progress.get(n)
            sent = p.bytes_sent if p else 0
            relayed += sent
            rec = self.node.peer_records.get(n)
            links = self.node.links.get(n, [])
            kind = rec.network_kind if rec else (links[0].peer_hello.network_kind if links else "unknown")
            metered = rec.metered if rec else (links[0].peer_hello.metered if links else False)
            if kind == "cellular" or metered:  # what metered nodes uploaded (relays demoted later do not count)
                cellular += sent
            per_node[str(n)] = {
                "network_kind": kind,
                "relay_ok": m.relay_ok,
                "bytes_uploaded": sent,
                "have_bytes": p.have_bytes if p else 0,
                "complete": bool(p and p.complete),
                "dead": n in plan.dead,
            }
        summary = self._summary(plan)
        return SendResult(
            payload_id=s.pid.hex(),
            size=s.manifest.size,
            receivers=len(plan.members),
            completed=summary["completed"],
            source_bytes_sent=s.bytes_sent,
            seconds=round(seconds, 3),
            failed=sorted(str(n) for n in plan.dead),
            stripes=plan.forest.stripes,
            repairs=plan.repairs,
            assists=plan.assists_sent,
            relayed_bytes=relayed,
            cellular_uploaded_bytes=cellular,
            per_node=per_node,
        )

    def _check_done(self, plan: _Plan) -> None:
        live = [n for n in plan.members if n not in plan.dead]
        if all(n in plan.progress and plan.progress[n].complete for n in live):
            plan.done.set()
        plan.changed.set()

    async def _replan(self, plan: _Plan, node: NodeId, *, dead: bool, why: str) -> None:
        """Repair the forest around ``node`` (dead: removed; else kept as a leaf) and re-assign.

        One repair per fault: reports about a node already removed (or already made a
        leaf, unless it is now dead) are ignored, and repairs of one payload run one
        at a time.
        """
        async with plan.lock:
            if node in plan.dead or (not dead and node in plan.demoted):
                return
            forest = plan.forest
            if node not in forest.members():
                return
            if dead:
                plan.dead.add(node)
                new = await asyncio.to_thread(repair, forest, node, members=list(plan.members.values()))
            else:
                plan.demoted.add(node)
                m = plan.members[node]
                plan.members[node] = Member(node, m.upload_bps, False, m.lan_group)
                new = await asyncio.to_thread(reassign_metered, forest, node, list(plan.members.values()))
            await self._apply_replan(plan, forest, new, node, why)

    async def _apply_replan(self, plan: _Plan, forest: Forest, new: Forest, node: NodeId, why: str) -> None:
        plan.forest = new
        plan.repairs += 1
        log.warning("payload %s: re-planned around %s (%s)", plan.session.pid.hex()[:12], node, why)
        old_children = plan.session.children
        self._adopt_source_tree(plan)
        if old_children != plan.session.children:
            await self._update_pushers(plan.session)
        changed = [n for n in new.members() if _assignment(forest, n) != _assignment(new, n)]
        await self._send_assigns(plan, changed, old=forest)
        self._check_done(plan)

    # -- receiver ----------------------------------------------------------------------------

    async def on_assign(self, link: Link, env: Envelope) -> None:
        a = env.body
        assert isinstance(a, TreeAssign)
        s = self.sessions.get(a.payload_id)
        if s is None:
            if a.manifest is None:
                self._early.setdefault(a.payload_id, []).append((env.source, a))
                return
            try:
                pid = verify_manifest(a.manifest)
                if pid != a.payload_id:
                    raise PayloadError("payload id does not match the manifest")
                state = await asyncio.to_thread(self.store.open, a.manifest)
            except (SignatureError, PayloadError, OSError, ValueError) as exc:
                log.warning("refused payload %s from %s: %s", a.payload_id.hex()[:12], env.source, exc)
                await self._reply_error(link, env, f"payload refused: {exc}")
                return
            s = _Session(pid, a.manifest, env.source, state, stripes=a.stripes)
            s.order = [i for i in range(a.manifest.chunk_count) if state.has(i)]  # resumed chunks first
            s.go.set()  # only the source waits before pushing
            s.ordered = set(s.order)
            self.sessions[pid] = s
            s.reporter = asyncio.ensure_future(self._report_loop(s))
            early = self._early.pop(pid, [])
        else:
            early = []
        if env.source != s.source:
            return  # only the payload's planner re-assigns
        for item in [(env.source, a), *early]:
            body = item[1]
            if isinstance(body, TreeAssign):
                self._apply_assign(s, body)
        for item in early:
            if isinstance(item[1], Have):
                await self._on_have(s, item[0], item[1])
        for item in [(env.source, a), *early]:
            body = item[1]
            if isinstance(body, TreeAssign) and body.parent is not None:
                s.attached.discard(body.parent)  # a (re)assigned stripe: tell its parent what is held now
        await self._update_pushers(s)
        self._attach_parents(s)

    def _apply_assign(self, s: _Session, a: TreeAssign) -> None:
        k = max(a.stripes, 1)
        if len(s.stripe_have) != k:
            s.stripe_have = [0] * k
            for i in s.order:
                s.stripe_have[i % k] += 1
        s.stripes = a.stripes
        s.parents[a.stripe] = a.parent
        s.parent_addrs[a.stripe] = a.parent_addresses
        s.children[a.stripe] = a.children
        s.relaying[a.stripe] = frozenset(k for k, w in zip(a.children, a.weights, strict=False) if w > 1)
        s.last_from_parent[a.stripe] = time.monotonic()
        if a.parent is not None:
            self.peers.add(a.parent)
            s.reported_at.pop(a.parent, None)
        self.peers.update(a.children)
        self.node.refresh_authorisation(set(a.children) | ({a.parent} if a.parent else set()))

    def _attach_parents(self, s: _Session) -> None:
        """Link to every stripe's parent and tell it what this node holds (it pushes the rest).

        Runs in the background (one attacher per payload): dialling a busy parent may
        take several attempts, and the link it was asked on must keep being read.
        """
        if s.attacher is not None and not s.attacher.done():
            s.reattach = True
            return
        s.attacher = asyncio.ensure_future(self._attach_loop(s))
        self._tasks.add(s.attacher)
        s.attacher.add_done_callback(self._tasks.discard)

    async def _attach_loop(self, s: _Session) -> None:
        while True:
            s.reattach = False
            todo: dict[NodeId, tuple[str, ...]] = {}
            for stripe, parent in s.parents.items():
                if parent is None or parent in todo:
                    continue
                if parent in s.attached and parent in self.node.links:
                    continue
                todo[parent] = s.parent_addrs.get(stripe, ())
            if todo:
                await asyncio.gather(*(self._attach_one(s, p, addrs) for p, addrs in todo.items()))
            elif s.state is not None and self._linked(s):
                await self._report(s)  # linked already (links from an earlier payload): tell the source now
            if not s.reattach:
                return

    async def _attach_one(self, s: _Session, parent: NodeId, addrs: tuple[str, ...]) -> None:
        assert s.state is not None
        error: EdgeAgentError | None = None
        for delay in (0.0, *LINK_RETRY):
            if delay:
                await asyncio.sleep(delay)
            if parent not in s.parents.values() or s.complete:
                return  # re-planned meanwhile, or nothing left to fetch
            try:
                link = await self.node.ensure_link(parent, addrs)
                have = Have(s.pid, s.state.have_bitmap())
                await link.send(Envelope(have, self.node.identity.node_id, destination=parent))
            except EdgeAgentError as exc:
                error = exc
                continue
            s.attached.add(parent)
            for stripe, p in s.parents.items():
                if p == parent:
                    s.last_from_parent[stripe] = time.monotonic()  # the stall clock starts at the link
            if self._linked(s):
                await self._report(s)  # the source waits for this before its first chunk
            return
        log.info("payload %s: parent %s unreachable: %s", s.pid.hex()[:12], parent, error)
        s.reported_at[parent] = time.monotonic()
        await self._report(s, lost=parent)

    async def on_have(self, link: Link, env: Envelope) -> None:
        h = env.body
        assert isinstance(h, Have)
        s = self.sessions.get(h.payload_id)
        if s is None:
            self._early.setdefault(h.payload_id, []).append((env.source, h))
            return
        await self._on_have(s, env.source, h)

    async def _on_have(self, s: _Session, child: NodeId, h: Have) -> None:
        need = (s.manifest.chunk_count + 7) // 8
        bits = bytearray(h.bitmap[:need].ljust(need, b"\0"))
        known = s.child_have.get(child)
        if known is not None and child in s.pushers:
            # a running pusher already tracks what it sent: only learn what the child got elsewhere
            for i, b in enumerate(bits):
                known[i] |= b
            return
        s.child_have[child] = bits
        if any(child in kids for kids in s.children.values()):
            s.pushers[child] = asyncio.ensure_future(self._push(s, child))

    async def _update_pushers(self, s: _Session) -> None:
        kids = {c for cs in s.children.values() for c in cs}
        for child in list(s.pushers):
            if child not in kids:
                s.pushers.pop(child)  # it stops by itself before its next chunk (cancelling mid-frame kills the link)
        for child in kids:
            if child in s.child_have and child not in s.pushers:
                s.pushers[child] = asyncio.ensure_future(self._push(s, child))

    async def _push(self, s: _Session, child: NodeId) -> None:
        """Send ``child`` every chunk of the stripes it hangs under this node for, that it lacks, as they arrive.

        The pusher walks ``s.order`` (chunks in the order this node came to hold them) with a
        cursor, so each arrival costs O(1) per child however large the payload; it starts over
        when the stripes it serves change (a re-plan) and stops when this node holds everything
        and the cursor has passed it all.
        """
        node = self.node
        me = node.identity.node_id
        bits = s.child_have.get(child, bytearray())
        task = asyncio.current_task()
        await s.go.wait()
        cursor = 0
        failures = 0
        mine: frozenset[int] = frozenset()
        k = 0
        relays = False
        try:
            while True:
                if s.pushers.get(child) is not task:
                    return  # no longer this node's child (a re-plan)
                stripes = frozenset(j for j, kids in s.children.items() if child in kids)
                if not stripes:
                    return
                relays_now = any(child in s.relaying.get(j, ()) for j in stripes)
                if stripes != mine or k != max(s.stripes, 1) or relays_now != relays:
                    mine, k, cursor, relays = stripes, max(s.stripes, 1), 0, relays_now
                    s.cursors.pop(child, None)
                if cursor < len(s.order):
                    s.sent_all.discard(child)
                if relays:
                    s.cursors[child] = (cursor, time.monotonic())
                if cursor >= len(s.order):
                    if len(s.order) >= s.manifest.chunk_count:
                        return  # every chunk passed (s.complete alone may run ahead of s.order)
                    if _holds_stripes(s, mine):
                        s.sent_all.add(child)  # stays (a late Have still merges into what it sent), idle
                    if relays:
                        async with s.pushed:
                            s.pushed.notify_all()
                    async with s.arrived:
                        if cursor >= len(s.order):
                            with contextlib.suppress(TimeoutError):
                                async with asyncio.timeout(2.0):
                                    await s.arrived.wait()
                    continue
                if await self._held_back(s, child, mine, cursor, k, RELAY_LEAD if relays else LEAF_LEAD):
                    continue
                i = s.order[cursor]
                cursor += 1
                if i % k not in mine or (i >> 3 < len(bits) and bits[i >> 3] >> (i & 7) & 1):
                    continue
                data = await self._chunk(s, i)
                if data is None:
                    continue
                if self._flip:
                    data = bytes([data[0] ^ 1]) + data[1:]
                link = self._open_link(child)
                if link is None:
                    return  # the child re-sends Have when it links again
                await self._pace(len(data))
                try:
                    await link.send(Envelope(Chunk(s.pid, i, data), me, destination=child))
                except LinkError:
                    if not any(not x.closed for x in node.links.get(child, [])) or failures >= 3:
                        raise
                    failures += 1  # that link closed (e.g. a duplicate); the child has another: resend there
                    cursor -= 1
                    continue
                failures = 0
                if i >> 3 < len(bits):
                    bits[i >> 3] |= 1 << (i & 7)
                s.bytes_sent += len(data)
                self.sent_by_kind[link.options.network_kind] += len(data)
                if relays:
                    s.cursors[child] = (cursor, time.monotonic())
                    async with s.pushed:
                        s.pushed.notify_all()
        except LinkError:
            return
        finally:
            if s.pushers.get(child) is task:
                del s.pushers[child]
                s.sent_all.discard(child)
                if s.cursors.pop(child, None) is not None:
                    async with s.pushed:
                        s.pushed.notify_all()

    def _open_link(self, peer: NodeId) -> Link | None:
        """One of this node's links to ``peer`` that is still open, if any."""
        return next((x for x in self.node.links.get(peer, []) if not x.closed), None)

    async def _held_back(
        self, s: _Session, child: NodeId, mine: frozenset[int], cursor: int, k: int, lead: int
    ) -> bool:
        """Hold a child's pusher (for a moment) while it is more than ``lead`` chunks ahead of a relaying sibling.

        Siblings are the children this node serves the same stripes to that relay them further;
        one that has caught up with what this node holds, or whose pusher has not advanced for
        ``LEAD_HOLD_MAX`` seconds (a stuck link, soon repaired), holds no one back.
        """
        now = time.monotonic()
        slowest: int | None = None
        for j in mine:
            for sib in s.relaying.get(j, ()):
                got = s.cursors.get(sib)
                if sib == child or got is None or sib not in s.pushers:
                    continue
                pos, at = got
                if pos >= len(s.order) or now - at > LEAD_HOLD_MAX:
                    continue
                slowest = pos if slowest is None else min(slowest, pos)
        if slowest is None or cursor <= slowest + lead * k:
            return False
        async with s.pushed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await s.pushed.wait()
        return True

    async def _pace(self, n: int) -> None:
        """Keep this node's payload upload under ``upload_bps`` (a phone's or a shared uplink's budget)."""
        if not self.upload_bps:
            return
        now = time.monotonic()
        self._pace_t = max(self._pace_t, now) + n / self.upload_bps
        delay = self._pace_t - now - 0.05  # allow a 50 ms burst
        if delay > 0:
            await asyncio.sleep(delay)

    async def _chunk(self, s: _Session, i: int) -> bytes | None:
        data = s.cache.get(i)
        if data is not None:
            return data
        if s.state is None:
            assert s.src_path is not None
            off = i * s.manifest.chunk_size
            n = s.manifest.chunk_length(i)
            path = s.src_path
            return await asyncio.to_thread(_pread, path, off, n)
        return await asyncio.to_thread(s.state.get, i)

    async def on_chunk(self, link: Link, env: Envelope) -> None:
        c = env.body
        assert isinstance(c, Chunk)
        s = self.sessions.get(c.payload_id)
        if s is None or s.state is None:
            return
        sender = env.source
        if sender in s.bad_from:
            return
        stripe = c.index % s.stripes if s.stripes else 0
        from_parent = s.parents.get(stripe) == sender
        if s.state.has(c.index):
            s.duplicates += 1
            if s.stripes and from_parent:
                s.last_from_parent[stripe] = time.monotonic()  # the parent is alive
            return
        if s.syncing or len(c.data) > INLINE_PUT_MAX or s.state.put_syncs(c.index):
            s.syncing += 1  # the put may block on the disk: in a thread (and later puts too, until it ends)
            try:
                ok = await asyncio.to_thread(s.state.put, c.index, c.data)
            finally:
                s.syncing -= 1
        else:
            ok = s.state.put(c.index, c.data)
        if not ok:
            s.bad_chunks += 1
            s.bad_from.add(sender)
            log.warning("payload %s: chunk %d from %s fails verification", s.pid.hex()[:12], c.index, sender)
            await self._report(s, bad=sender)
            return
        if s.stripes and from_parent:
            now = s.last_from_parent[stripe] = time.monotonic()
            seen = s.parent_arrivals.setdefault(stripe, deque())
            seen.append(now)
            while seen and now - seen[0] > IN_FLIGHT_WINDOW:
                seen.popleft()
        if c.index in s.ordered:  # the same chunk from two parents at once: stored (and counted) once
            s.duplicates += 1
            return
        s.bytes_received += len(c.data)
        if s.stripe_have:
            s.stripe_have[c.index % len(s.stripe_have)] += 1
        s.ordered.add(c.index)
        s.order.append(c.index)
        s.cache[c.index] = bytes(c.data)
        while len(s.cache) > CACHE_CHUNKS:
            s.cache.popitem(last=False)
        async with s.arrived:
            s.arrived.notify_all()
        if s.state.complete and s.finished is None:
            s.finished = time.monotonic()
            log.info("payload %s complete: %s", s.pid.hex()[:12], s.state.path)
            await self._report(s)

    async def on_chunk_request(self, link: Link, env: Envelope) -> None:
        r = env.body
        assert isinstance(r, ChunkRequest)
        s = self.sessions.get(r.payload_id)
        if s is None:
            await self._reply_error(link, env, "unknown payload")
            return
        me = self.node.identity.node_id
        budget = 4096
        for rng in r.ranges:
            for i in range(rng.start, min(rng.stop, s.manifest.chunk_count)):
                budget -= 1
                if budget < 0:
                    return
                if not s.has(i):
                    continue
                data = await self._chunk(s, i)
                if data is not None:
                    await link.send(Envelope(Chunk(s.pid, i, data), me, destination=env.source))
                    s.bytes_sent += len(data)

    async def on_progress(self, link: Link, env: Envelope) -> None:
        p = env.body
        assert isinstance(p, Progress)
        plan = self.plans.get(p.payload_id)
        if plan is None or env.source not in plan.members:
            return
        plan.progress[env.source] = p
        plan.heard_at[env.source] = time.monotonic()
        if p.bad_parent is not None and p.bad_parent in plan.members and plan.members[p.bad_parent].relay_ok:
            await self._replan(plan, p.bad_parent, dead=False, why=f"{env.source} got corrupt chunks from it")
        elif p.lost_parent is not None and p.lost_parent not in plan.dead:
            if p.lost_parent == self.node.identity.node_id:
                await self._send_assigns(plan, [env.source])  # it lost us: assign again (re-link)
            elif p.lost_parent in plan.members:
                self._spawn(self._check_lost(plan, p.lost_parent, env.source, stalled=p.stalled))
        self._check_done(plan)

    def on_link_up(self, peer: NodeId) -> None:
        """A member that comes back (restarted) is re-assigned so it resumes from its have-map.

        A child whose pusher stopped when its link closed (e.g. the loser of two crossing
        dials) is pushed to again over the new link, from what it is known to hold.
        """
        for s in self.sessions.values():
            if peer in s.child_have and peer not in s.pushers and any(peer in k for k in s.children.values()):
                s.pushers[peer] = asyncio.ensure_future(self._push(s, peer))
        for plan in self.plans.values():
            if peer in plan.members and not plan.done.is_set():
                plan.heard_at[peer] = time.monotonic()
                if peer in plan.dead:
                    plan.dead.discard(peer)
                    self._spawn(self._readmit(plan, peer))
                else:
                    self._spawn(self._send_assigns(plan, [peer]))

    async def _go_when_linked(self, plan: _Plan) -> None:
        """Start pushing once the source's children are linked to their parents, or after LINK_WAIT.

        The rest link while the first chunks travel down (a chunk takes ~0.7 s per level at
        3 Mbit/s a child); waiting for all of them cost 1.5 s at N = 64 (1 s of the median).
        """
        s = plan.session
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(LINK_WAIT):
                while not all(
                    n in plan.dead or (n in plan.progress and (plan.progress[n].linked or plan.progress[n].complete))
                    for n in self._first_wave(plan)
                ):
                    plan.changed.clear()
                    await plan.changed.wait()
        waited = time.monotonic() - plan.t0
        linked = sum(1 for p in plan.progress.values() if p.linked or p.complete)
        log.info(
            "payload %s: %d/%d receivers linked after %.2f s: pushing",
            s.pid.hex()[:12],
            linked,
            len(plan.members),
            waited,
        )
        s.go.set()

    def _first_wave(self, plan: _Plan) -> set[NodeId]:
        """Who must be linked before the first chunk: the source's children (the rest link while it travels)."""
        me = self.node.identity.node_id
        return {c for t in plan.forest.trees for c in t.children.get(me, ())}

    async def _watch(self, plan: _Plan) -> None:
        """Ping members that went silent (no Progress for SILENT_AFTER); repair around the dead."""
        while not plan.done.is_set():
            await asyncio.sleep(PROGRESS_EVERY)
            now = time.monotonic()
            for node, heard in list(plan.heard_at.items()):
                if node in plan.dead or node in plan.checking or now - heard < SILENT_AFTER:
                    continue
                done = plan.progress.get(node)
                if done is not None and done.complete:
                    continue
                plan.checking.add(node)
                self._spawn(self._check_silent(plan, node))
            await self._assist(plan, now)

    async def _assist(self, plan: _Plan, now: float) -> None:
        """Pair idle relays with receivers still waiting (planner.assists) and tell both."""
        s = plan.session
        standing = {n: Standing(p.complete, tuple(p.stripe_have), p.idle, p.linked) for n, p in plan.progress.items()}
        if not any(st.complete or st.idle for st in standing.values()):
            return  # no helper yet
        sizes = stripe_sizes(s.manifest.chunk_count, plan.forest.stripes)
        for (n, j), (helper, since) in list(plan.assists.items()):
            st = standing.get(n)
            done = st is not None and (st.complete or (j < len(st.stripe_have) and st.stripe_have[j] >= sizes[j]))
            if done or now - since > ASSIST_FOR or helper in plan.dead or n in plan.dead:
                del plan.assists[(n, j)]
        active = {key: helper for key, (helper, _) in plan.assists.items()}
        pairs = assists(
            plan.forest,
            standing,
            list(plan.members.values()),
            s.manifest.chunk_count,
            active=active,
            dead=plan.dead,
            min_chunks=ASSIST_MIN_CHUNKS,
        )
        for n, j, helper, count in pairs:
            plan.assists[(n, j)] = (helper, now)
            plan.assists_sent += 1
            msg = Assist(s.pid, n, helper, plan.addresses.get(helper, ()), j, count)
            log.info("payload %s: %s serves %s the last %d chunks of stripe %d", s.pid.hex()[:12], helper, n, count, j)
            try:
                await self.node.send(helper, msg)  # first, so it admits the receiver before the request comes
                await self.node.send(n, msg)
            except EdgeAgentError as exc:
                log.info("payload %s: cannot send an assist: %s", s.pid.hex()[:12], exc)
                del plan.assists[(n, j)]

    async def on_assist(self, link: Link, env: Envelope) -> None:
        a = env.body
        assert isinstance(a, Assist)
        s = self.sessions.get(a.payload_id)
        if s is None or env.source != s.source:
            return
        me = self.node.identity.node_id
        if a.helper == me:
            self.peers.add(a.receiver)
            self.node.refresh_authorisation({a.receiver})
        elif a.receiver == me and s.state is not None and not s.complete:
            self.peers.add(a.helper)
            self.node.refresh_authorisation({a.helper})
            self._spawn(self._pull(s, a))

    async def _pull(self, s: _Session, a: Assist) -> None:
        """Ask the helper for the last ``a.count`` chunks of the stripe this node lacks (not asked for lately)."""
        assert s.state is not None
        k = max(s.stripes, 1)
        now = time.monotonic()
        lacking = [
            i
            for i in range(a.stripe, s.manifest.chunk_count, k)
            if not s.state.has(i) and now - s.requested.get(i, (-ASSIST_FOR, None))[0] >= ASSIST_FOR
        ]
        # the parent sends in order: as many as it delivered in the last IN_FLIGHT_WINDOW are likely on
        # their way already (its socket buffers), so leave those to it
        recent = [t for t in s.parent_arrivals.get(a.stripe, ()) if now - t <= IN_FLIGHT_WINDOW]
        want = lacking[max(len(lacking) - a.count, len(recent)) :]
        if not want:
            return
        for i in want:
            s.requested[i] = (now, a.helper)
        # tell the parent first, as if they were here, so it does not send them too; should the
        # helper not deliver, they are asked of the parent after ASSIST_FOR (_ask_again)
        await self._tell_parent(s, a.stripe, promised=want)
        me = self.node.identity.node_id
        try:
            link = await self.node.ensure_link(a.helper, a.helper_addresses)
            await link.send(Envelope(_request(s, want), me, destination=a.helper))
        except EdgeAgentError as exc:
            log.info("payload %s: helper %s unreachable: %s", s.pid.hex()[:12], a.helper, exc)
            for i in want:
                s.requested.pop(i, None)

    async def _tell_parent(self, s: _Session, stripe: int, promised: list[int]) -> None:
        """Send the stripe's parent this node's Have plus ``promised`` (chunks a helper brings): it skips them."""
        assert s.state is not None
        parent = s.parents.get(stripe)
        link = self._open_link(parent) if parent is not None else None
        if link is None or parent is None:
            return
        bits = bytearray(s.state.have_bitmap())
        for i in promised:
            bits[i >> 3] |= 1 << (i & 7)
        with contextlib.suppress(EdgeAgentError):
            await link.send(Envelope(Have(s.pid, bytes(bits)), self.node.identity.node_id, destination=parent))

    async def _ask_again(self, s: _Session, now: float) -> None:
        """Chunks asked of a helper ``ASSIST_FOR`` ago and still missing: ask each stripe's parent for them."""
        assert s.state is not None
        stale: dict[int, list[int]] = {}
        for i, (t, _) in list(s.requested.items()):
            if s.state.has(i):
                del s.requested[i]
            elif now - t >= ASSIST_FOR:
                stale.setdefault(i % max(s.stripes, 1), []).append(i)
                s.requested[i] = (now, None)  # now asked of the parent
        me = self.node.identity.node_id
        for stripe, idx in stale.items():
            parent = s.parents.get(stripe)
            link = self._open_link(parent) if parent is not None else None
            if link is None or parent is None:
                continue
            log.info("payload %s: %d chunks a helper did not bring: asking %s", s.pid.hex()[:12], len(idx), parent)
            with contextlib.suppress(EdgeAgentError):
                await link.send(Envelope(_request(s, idx), me, destination=parent))

    async def _check_silent(self, plan: _Plan, node: NodeId) -> None:
        try:
            if await self._answers(node):
                plan.heard_at[node] = time.monotonic()
            elif plan.heard_at.get(node, 0.0) < time.monotonic() - SILENT_AFTER:
                await self._replan(plan, node, dead=True, why="silent and does not answer a Ping")
        finally:
            plan.checking.discard(node)

    def _heard_from(self, node: NodeId) -> bool:
        """True when one of our links to ``node`` received something within ``LIVE_WINDOW``."""
        return any(link.idle_seconds < LIVE_WINDOW for link in self.node.links.get(node, []))

    async def _answers(self, node: NodeId) -> bool:
        """True when ``node`` answers a Ping on our link to it within ``LIVE_WINDOW``."""
        links = self.node.links.get(node, [])
        if not links:
            return False
        try:
            await links[0].ping(timeout=LIVE_WINDOW)
        except EdgeAgentError:
            return False
        return True

    async def _check_lost(self, plan: _Plan, node: NodeId, reporter: NodeId, *, stalled: bool = False) -> None:
        """A child lost ``node`` (it cannot link to it, or it sends nothing).

        Dead when this node cannot reach it either (nothing heard lately and no Pong):
        the forest is repaired around it. Alive: only the reporter moves to another
        parent, and only if ``node`` has chunks of that stripe the reporter lacks (a
        parent that is itself starved is not at fault, and moving would not help).
        """
        if not (self._heard_from(node) or await self._answers(node)):
            await self._replan(plan, node, dead=True, why=f"{reporter} lost it and it does not answer here")
        else:
            await self._move(plan, reporter, node, stalled=stalled)

    async def _move(self, plan: _Plan, child: NodeId, parent: NodeId, *, stalled: bool) -> None:
        async with plan.lock:
            now = time.monotonic()
            if child in plan.dead or parent in plan.dead or now - plan.moved_at.get(child, -MOVE_EVERY) < MOVE_EVERY:
                return
            forest = plan.forest
            stripes = [t.stripe for t in forest.trees if t.parent.get(child) == parent]
            if stalled:
                have_p = plan.progress.get(parent)
                have_c = plan.progress.get(child)
                pj = have_p.stripe_have if have_p is not None else ()
                cj = have_c.stripe_have if have_c is not None else ()
                stripes = [j for j in stripes if j < len(pj) and pj[j] > (cj[j] if j < len(cj) else 0)]
            if not stripes:
                return
            avoid = plan.dead | plan.demoted
            new = await asyncio.to_thread(
                move, forest, child, parent, list(plan.members.values()), stripes=stripes, avoid=avoid
            )
            if new is forest:
                return
            plan.moved_at[child] = now
            why = "it stalls" if stalled else "it cannot link to it"
            await self._apply_replan(plan, forest, new, child, f"moved away from {parent}: {why}")

    async def _readmit(self, plan: _Plan, peer: NodeId) -> None:
        async with plan.lock:
            await self._readmit_locked(plan, peer)

    async def _readmit_locked(self, plan: _Plan, peer: NodeId) -> None:
        """Put a returning member back into the forest as a leaf under the least-loaded relay of each tree."""
        me = self.node.identity.node_id
        trees = []
        for t in plan.forest.trees:
            if peer in t.parent:
                trees.append(t)
                continue
            relays = [r for r in t.relays if r in t.parent and r not in plan.dead] or [me]
            host = min(relays, key=lambda r: (len(t.children.get(r, ())), r))
            parent = dict(t.parent)
            parent[peer] = host
            children = dict(t.children)
            children[host] = (*children.get(host, ()), peer)
            children[peer] = ()
            trees.append(Tree(t.stripe, parent, children, t.relays))
        old = plan.forest
        plan.forest = Forest(old.source, old.stripes, tuple(trees), old.max_fanout, old.default_upload_bps)
        plan.progress.pop(peer, None)
        self._adopt_source_tree(plan)
        await self._update_pushers(plan.session)
        await self._send_assigns(
            plan, [peer, *[n for n in plan.forest.members() if _assignment(old, n) != _assignment(plan.forest, n)]]
        )

    def on_link_replaced(self, peer: NodeId) -> None:
        """One of several links to ``peer`` closed (e.g. the loser of two crossing dials).

        What was in flight on it may be lost (a Have the peer read after it began closing):
        tell a parent again what this node holds, over the link that remains. Pushers to a
        child move to the remaining link by themselves.
        """
        for s in self.sessions.values():
            if s.state is not None and not s.complete and peer in s.parents.values():
                s.attached.discard(peer)
                self._attach_parents(s)

    def on_link_down(self, peer: NodeId) -> None:
        for plan in self.plans.values():
            if peer in plan.members and peer not in plan.dead and not plan.done.is_set():
                self._spawn(self._replan(plan, peer, dead=True, why="its link to the source went down"))
        for s in self.sessions.values():
            s.attached.discard(peer)
            if s.state is not None and not s.complete and peer in s.parents.values():
                self._attach_parents(s)  # re-link; a parent that cannot be reached is reported
            due = time.monotonic() - ASSIST_FOR
            for i, (t, helper) in list(s.requested.items()):
                if helper == peer:  # a helper gone: its chunks are asked of the parent now
                    s.requested[i] = (min(t, due), helper)

    async def _report_loop(self, s: _Session) -> None:
        while True:
            await asyncio.sleep(PROGRESS_EVERY)
            await self._report(s)
            now = time.monotonic()
            if s.state is not None and not s.complete and s.requested:
                await self._ask_again(s, now)
            if s.state is not None and not s.complete:
                for stripe, parent in s.parents.items():
                    if parent is None or now - s.reported_at.get(parent, -STALL_AFTER) < STALL_AFTER:
                        continue
                    if parent not in s.attached or parent not in self.node.links:
                        self._attach_parents(s)  # not linked: the attacher retries and reports
                        continue
                    if now - s.last_from_parent.get(stripe, now) > STALL_AFTER and _missing_in(s, stripe):
                        s.reported_at[parent] = now
                        await self._report(s, lost=parent, stalled=True)
            if s.complete and not s.pushers and now - (s.finished or now) > 30:
                return

    async def _report(
        self, s: _Session, *, lost: NodeId | None = None, bad: NodeId | None = None, stalled: bool = False
    ) -> None:
        if s.state is None:
            return
        p = Progress(
            s.pid, s.state.have_bytes, s.state.complete, s.bytes_sent, lost, bad, s.bad_chunks,
            tuple(s.stripe_have), stalled, self._linked(s), _idle(s),
        )  # fmt: skip
        with contextlib.suppress(EdgeAgentError):
            await self.node.send(s.source, p)

    def _linked(self, s: _Session) -> bool:
        """Linked to every assigned parent, which has been told our Have."""
        return all(p is None or (p in s.attached and p in self.node.links) for p in s.parents.values())

    async def _reply_error(self, link: Link, env: Envelope, reason: str) -> None:
        if env.reply_to is None:
            with contextlib.suppress(LinkError):
                await link.send(env.reply(Error(ErrorCode.BAD_REQUEST, reason), self.node.identity.node_id))

    # -- views -------------------------------------------------------------------------------

    def status(self) -> list[dict[str, Any]]:
        """The ``payloads`` of ``status --json``: the store's listing plus live transfer figures."""
        out = []
        for item in self.store.list():
            pid = bytes.fromhex(item["id"])
            s = self.sessions.get(pid)
            if s is not None:
                out.append(
                    {
                        **item,
                        "role": "source" if s.state is None else "receiver",
                        "bytes_sent": s.bytes_sent,
                        "bytes_received": s.bytes_received,
                        "stripes": s.stripes,
                        "parents": sorted({str(p) for p in s.parents.values() if p is not None}),
                        "children": sorted({str(c) for cs in s.children.values() for c in cs}),
                        "bad_chunks": s.bad_chunks,
                    }
                )
            else:
                out.append(dict(item))
        for pid, s in self.sessions.items():
            if s.state is None:
                out.append(
                    {
                        "id": pid.hex(),
                        "size": s.manifest.size,
                        "have_bytes": s.manifest.size,
                        "complete": True,
                        "path": str(s.src_path),
                        "role": "source",
                        "bytes_sent": s.bytes_sent,
                        "stripes": s.stripes,
                        "children": sorted({str(c) for cs in s.children.values() for c in cs}),
                    }
                )
        return out

    def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        for s in self.sessions.values():
            for t in s.pushers.values():
                t.cancel()
            if s.reporter is not None:
                s.reporter.cancel()
            if s.state is not None:
                with contextlib.suppress(Exception):
                    s.state.close()


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
