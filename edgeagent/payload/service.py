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
import os
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..host import Host, Policy, Registration, Sender, Service, on
from ..pacing import Pacer
from ..wire import (
    Assist,
    Chunk,
    ChunkRequest,
    Have,
    Message,
    NodeId,
    Progress,
    TreeAssign,
)
from .store import ChunkStore, default_quota

if TYPE_CHECKING:
    from ..links.link import Link


from .manifest import admission_valid
from .pusher import PusherRole
from .receiver import ReceiverRole
from .session import (
    ASSIST_FOR,
    EARLY_MAX,
    EARLY_PAYLOADS,
    FAULT_FLIP_ENV,
    SendResult,
    _Plan,
    _Session,
    log,
)
from .source import SourceRole

__all__ = ["PayloadService", "SendResult"]


class PayloadService(SourceRole, ReceiverRole, PusherRole, Service):
    """Payload trees for one Node: ``send`` as a source; handlers for the payload messages.

    What a peer may make this node hold is bounded (``host.limiter``; refusals are answered with
    an Error and counted under ``status --json`` ``limits.refused``): payloads received at once,
    per source (``payload_sessions_per_source``) and in all (``payload_sessions_total``); the
    store's bytes (``quota_bytes``, or when none is given ``store.default_quota``: what it holds
    plus half the free disk space, at most 64 GiB), checked before any file is made; and the
    lists an assignment carries (``list_items``: stripes, children, addresses, subtree hops),
    checked before any work that grows with them.
    """

    name = "payloads"

    def __init__(
        self, host: Host, root: Path, *, quota_bytes: int | None = None, upload_bps: float | None = None
    ) -> None:
        self.host = host
        self.pacer = Pacer(upload_bps)  # this node's whole payload upload
        self.store = ChunkStore(root, quota_bytes=quota_bytes)
        if quota_bytes is None:  # none configured: still bounded (store.default_quota)
            self.store.quota_bytes = default_quota(self.store)
        self.sessions: dict[bytes, _Session] = {}
        self.plans: dict[bytes, _Plan] = {}
        self._early: dict[bytes, list[tuple[NodeId, Any]]] = {}  # messages that arrived before their assignment
        self._early_bytes = 0
        self._credentials: dict[bytes, set[NodeId]] = {}  # payload -> peers admitted by their source's credential
        self._opened: dict[bytes, asyncio.Event] = {}
        self.sent_by_kind: Counter[str] = Counter()
        self._flip = bool(os.environ.get(FAULT_FLIP_ENV))
        self._tasks: set[asyncio.Future[Any]] = set()
        if self._flip:
            log.warning("%s is set: this node corrupts every chunk it forwards (fault injection)", FAULT_FLIP_ENV)

    def handlers(self) -> Mapping[type[Message], Registration]:
        member = Policy(Sender.MEMBER, admits=self.admits)
        return {
            # from the payload's source (which must be authorised here); the domain relays them when needed
            TreeAssign: on(Policy(Sender.AUTHORISED, relayable=True), self.on_assign),
            Assist: on(Policy(Sender.AUTHORISED), self.on_assist),
            # between the members of one payload, first-hand: only for that payload
            Have: on(member, self.on_have),
            Chunk: on(Policy(Sender.MEMBER, bulk=True, admits=self.admits), self.on_chunk),
            ChunkRequest: on(member, self.on_chunk_request),
            Progress: on(Policy(Sender.MEMBER, relayable=True, admits=self.admits), self.on_progress),
        }

    def admits(self, peer: NodeId, body: Message) -> bool:
        """Payload messages from a peer not otherwise authorised: only for a payload that named it.

        A ``Have`` is also admitted when it shows the source's admission of its sender at this node
        (``manifest.admission``): a child may link before its parent hears of it. The credential then
        admits the child for that payload's messages, until the payload ends here.
        """
        pid = getattr(body, "payload_id", None)
        if isinstance(body, Have):
            return self._credited(peer, body)
        if isinstance(body, Progress):
            plan = self.plans.get(body.payload_id)
            return plan is not None and peer in plan.members
        s = self.sessions.get(pid) if isinstance(pid, bytes) else None
        if s is None or not isinstance(body, Chunk | ChunkRequest):
            return False
        plan = self.plans.get(s.pid)
        return peer in s.admitted or (plan is not None and peer in plan.members)

    def _credited(self, peer: NodeId, h: Have) -> bool:
        pid = h.payload_id
        s, plan = self.sessions.get(pid), self.plans.get(pid)
        if (s is not None and peer in s.admitted) or (plan is not None and peer in plan.members):
            return True
        if peer in self._credentials.get(pid, ()):
            return True
        source = s.source if s is not None else h.source
        if source is None or not h.admission:
            return False
        if s is None and not self.host.peers.authorised(source):
            return False  # only a source that may start payloads here can admit anyone to one
        if not admission_valid(source, pid, peer, self.host.node_id, h.admission):
            return False
        if s is not None:
            s.admitted.add(peer)
        elif len(self._credentials) < EARLY_PAYLOADS or pid in self._credentials:
            held = self._credentials.setdefault(pid, set())
            if len(held) >= EARLY_MAX:
                return False
            held.add(peer)
        else:
            return False
        return True

    def expects(self, peer: NodeId) -> bool:
        """A peer a payload in progress names (its parent, a child, a helper, a member of a plan)."""
        return any(peer in s.admitted for s in self.sessions.values()) or any(
            peer in plan.members for plan in self.plans.values()
        )

    def status_fields(self) -> dict[str, Any]:
        return {
            "payloads": self.status(),
            "payload_bytes_sent_by_kind": dict(self.sent_by_kind),
            "payload_store": {"quota_bytes": self.store.quota_bytes, "used_bytes": self.store.used_bytes()},
        }

    async def aclose(self) -> None:
        self.close()

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

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        """A member that comes back (restarted) is re-assigned so it resumes from its have-map.

        A child whose pusher stopped when its link closed (e.g. the loser of two crossing
        dials) is pushed to again over the new link, from what it is known to hold.
        """
        for s in self.sessions.values():
            if peer in s.child_have and peer not in s.pushers and any(peer in k for k in s.children.values()):
                s.pushers[peer] = self.host.spawn(self._push(s, peer), name="payload-push")
        for plan in self.plans.values():
            if peer in plan.members and not plan.done.is_set():
                plan.heard_at[peer] = time.monotonic()
                if peer in plan.dead:
                    plan.dead.discard(peer)
                    self.host.spawn(self._readmit(plan, peer))
                else:
                    self.host.spawn(self._send_assigns(plan, [peer]))

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
                self.host.spawn(self._replan(plan, peer, dead=True, why="its link to the source went down"))
        for s in self.sessions.values():
            s.attached.discard(peer)
            if s.state is not None and not s.complete and peer in s.parents.values():
                self._attach_parents(s)  # re-link; a parent that cannot be reached is reported
            due = time.monotonic() - ASSIST_FOR
            for i, (t, helper) in list(s.requested.items()):
                if helper == peer:  # a helper gone: its chunks are asked of the parent now
                    s.requested[i] = (min(t, due), helper)

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
