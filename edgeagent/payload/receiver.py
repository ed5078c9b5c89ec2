"""A receiver's role: verify the assignment and manifest, open the store, link to each stripe's
parent and tell it what is held, verify and store every chunk, report Progress, and pull the end
of a stripe from a helper when the source pairs one (an Assist)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from pathlib import Path

from ..exceptions import EdgeAgentError, PayloadError, SignatureError
from ..host import Inbound
from ..limits import capped
from ..wire import (
    Assist,
    Chunk,
    Envelope,
    Have,
    NodeId,
    Progress,
    RouteSegment,
    TreeAssign,
)
from .manifest import verify_manifest
from .session import (
    ASSIST_FOR,
    CACHE_CHUNKS,
    IN_FLIGHT_WINDOW,
    INLINE_PUT_MAX,
    LINK_RETRY,
    PROGRESS_EVERY,
    STALL_AFTER,
    _idle,
    _missing_in,
    _request,
    _Roles,
    _Session,
    log,
)
from .store import PayloadQuotaExceeded, PayloadState, PayloadTooLarge


def assign_refusal(a: TreeAssign, most: int) -> tuple[str, str]:
    """Why a TreeAssign is refused before any work that grows with what it claims: (limit, reason);
    limit ``""`` for a malformed one, reason ``""`` when it is fine. ``most`` is ``list_items``: the
    most stripes, children, addresses, weights and subtree hops an assignment may carry (a planner
    makes at most one stripe per relay)."""
    if a.stripes > most:
        return "list_items", f"{a.stripes} stripes is more than the {most} allowed"
    if a.stripe >= max(a.stripes, 1):
        return "", f"stripe {a.stripe} of a payload in {a.stripes} stripe(s)"
    for items, what in ((a.children, "children"), (a.parent_addresses, "parent addresses"), (a.weights, "weights")):
        if why := capped(items, most, what):
            return "list_items", why
    if a.subtree is not None and _hops(a.subtree, most) > most:
        return "list_items", f"a subtree of more than the {most} hops allowed"
    return "", ""


def _hops(tree: RouteSegment, most: int) -> int:
    """Hops in ``tree`` (a segment with none counts as one), counted only up to just past ``most``."""
    n, stack = 0, [tree]
    while stack and n <= most:
        seg = stack.pop()
        n += len(seg.hops) + 1  # a segment costs at least one, even with no hops
        stack.extend(seg.children[: most + 1])
    return n


def _held(state: PayloadState) -> list[int]:
    """The chunks ``state`` holds, in index order, at C speed for the bytes with none (a new payload)."""
    bits = state.have_bitmap()
    if not any(bits):
        return []
    return [i * 8 + b for i, byte in enumerate(bits) if byte for b in range(8) if byte >> b & 1]


class ReceiverRole(_Roles):
    async def on_assign(self, m: Inbound[TreeAssign]) -> None:
        a, env, link = m.body, m.env, m.link
        limit, why = assign_refusal(a, self.host.limiter.limits.list_items)
        if why:  # before anything is done that grows with what the assignment claims
            if limit:
                await self._refuse_limit(m, limit, why)
            else:
                await self._reply_error(link, env, f"payload refused: {why}")
            return
        s = self.sessions.get(a.payload_id)
        if s is None:
            if a.manifest is None:
                self._keep_early(a.payload_id, env.source, a)
                return
            refusal = self._session_refusal(env.source)
            if refusal:
                await self._refuse_limit(m, *refusal)
                return
            try:
                pid = verify_manifest(a.manifest)
                if pid != a.payload_id:
                    raise PayloadError("payload id does not match the manifest")
                state = await asyncio.to_thread(self.store.open, a.manifest)  # the quota: before any file
            except PayloadQuotaExceeded as exc:
                await self._refuse_limit(m, "payload_quota", str(exc))
                return
            except PayloadTooLarge as exc:
                await self._refuse_limit(m, "payload_size", str(exc))
                return
            except (SignatureError, PayloadError, OSError, ValueError) as exc:
                log.warning("refused payload %s from %s: %s", a.payload_id.hex()[:12], env.source, exc)
                await self._reply_error(link, env, f"payload refused: {exc}")
                return
            if (s := self.sessions.get(pid)) is not None:
                pass  # assigned meanwhile (while the store opened it): the same state, one session
            else:
                s = _Session(pid, a.manifest, env.source, state, stripes=a.stripes)
                s.order = _held(state)  # resumed chunks first
                s.go.set()  # only the source waits before pushing
                if state.complete:
                    s.complete_event.set()
                s.ordered = set(s.order)
                s.admitted |= self._credentials.pop(pid, set())  # children that showed their admission early
                self.sessions[pid] = s
                if (opened := self._opened.pop(pid, None)) is not None:
                    opened.set()  # wait_complete() callers waiting for the assignment
                s.reporter = self.host.spawn(self._report_loop(s), name="payload-report")
            early = self._take_early(pid)
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

    def _session_refusal(self, source: NodeId) -> tuple[str, str] | None:
        """Why a new payload from ``source`` may not be received now: (limit, reason), or None.

        At most ``payload_sessions_per_source`` payloads from one source and ``payload_sessions_total``
        in all are received at once (whole ones do not count); a session idle for SESSION_IDLE makes
        room first.
        """
        limits = self.host.limiter.limits
        now = time.monotonic()
        mine = [s for s in self._receiving() if s.source == source]
        if len(mine) >= limits.payload_sessions_per_source and not self._evict_idle(mine, now):
            return (
                "payload_sessions_per_source",
                f"{len(mine)} payloads from {source.short()} are being received here already "
                f"(at most {limits.payload_sessions_per_source} at once)",
            )
        receiving = self._receiving()
        if len(receiving) >= limits.payload_sessions_total and not self._evict_idle(receiving, now):
            return (
                "payload_sessions_total",
                f"{len(receiving)} payloads are being received here already (at most {limits.payload_sessions_total})",
            )
        return None

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
            s.admitted.add(a.parent)
            s.reported_at.pop(a.parent, None)
            if a.admission:
                s.admissions[a.parent] = a.admission
        s.admitted.update(a.children)

    def _attach_parents(self, s: _Session) -> None:
        """Link to every stripe's parent and tell it what this node holds (it pushes the rest).

        Runs in the background (one attacher per payload): dialling a busy parent may
        take several attempts, and the link it was asked on must keep being read.
        """
        if s.attacher is not None and not s.attacher.done():
            s.reattach = True
            return
        s.attacher = self.host.spawn(self._attach_loop(s), name="payload-attach")
        self._tasks.add(s.attacher)
        s.attacher.add_done_callback(self._tasks.discard)

    async def _attach_loop(self, s: _Session) -> None:
        while True:
            s.reattach = False
            todo: dict[NodeId, tuple[str, ...]] = {}
            for stripe, parent in s.parents.items():
                if parent is None or parent in todo:
                    continue
                if parent in s.attached and self.host.peers.links(parent):
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
                link = await self.host.ensure_link(parent, addrs)
                have = Have(s.pid, s.state.have_bitmap(), s.source, s.admissions.get(parent, b""))
                await link.send(Envelope(have, self.host.node_id, destination=parent))
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

    async def on_chunk(self, m: Inbound[Chunk]) -> None:
        c, env = m.body, m.env
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
            s.complete_event.set()
            log.info("payload %s complete: %s", s.pid.hex()[:12], s.state.path)
            await self._report(s)

    async def on_assist(self, m: Inbound[Assist]) -> None:
        a = m.body
        if why := capped(a.helper_addresses, self.host.limiter.limits.list_items, "helper addresses"):
            await self._refuse_limit(m, "list_items", why)
            return
        s = self.sessions.get(a.payload_id)
        if s is None or m.source != s.source or a.stripe >= max(s.stripes, 1):
            return
        me = self.host.node_id
        if a.helper == me:
            s.admitted.add(a.receiver)
        elif a.receiver == me and s.state is not None and not s.complete:
            s.admitted.add(a.helper)
            self.host.spawn(self._pull(s, a))

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
        me = self.host.node_id
        try:
            link = await self.host.ensure_link(a.helper, a.helper_addresses)
            await link.send(Envelope(_request(s, want), me, destination=a.helper))
        except EdgeAgentError as exc:
            log.info("payload %s: helper %s unreachable: %s", s.pid.hex()[:12], a.helper, exc)
            # the parent was told they were coming: ask it for them at the next tick (_ask_again)
            for i in want:
                s.requested[i] = (now - ASSIST_FOR, a.helper)

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
            have = Have(s.pid, bytes(bits), s.source, s.admissions.get(parent, b""))
            await link.send(Envelope(have, self.host.node_id, destination=parent))

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
        me = self.host.node_id
        for stripe, idx in stale.items():
            parent = s.parents.get(stripe)
            link = self._open_link(parent) if parent is not None else None
            if link is None or parent is None:
                continue
            log.info("payload %s: %d chunks a helper did not bring: asking %s", s.pid.hex()[:12], len(idx), parent)
            with contextlib.suppress(EdgeAgentError):
                await link.send(Envelope(_request(s, idx), me, destination=parent))

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
                    if parent not in s.attached or not self.host.peers.links(parent):
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
            await self.host.send(s.source, p)

    def _linked(self, s: _Session) -> bool:
        """Linked to every assigned parent, which has been told our Have."""
        return all(p is None or (p in s.attached and bool(self.host.peers.links(p))) for p in s.parents.values())

    async def wait_complete(self, pid: bytes, timeout: float) -> Path:
        """Until the payload ``pid`` (assigned to this node) is whole here; its file."""
        try:
            async with asyncio.timeout(timeout):
                s = self.sessions.get(pid)
                if s is None:  # not assigned yet: until it is
                    await self._opened.setdefault(pid, asyncio.Event()).wait()
                    s = self.sessions[pid]
                await s.complete_event.wait()
        except TimeoutError:
            self._opened.pop(pid, None)
            raise PayloadError(f"payload {pid.hex()[:12]} did not arrive within {timeout:.1f}s") from None
        assert s.state is not None and s.state.path is not None  # complete: renamed into place
        return s.state.path
