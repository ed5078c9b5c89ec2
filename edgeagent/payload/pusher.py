"""A parent's role (the source's and every relay's): push each child the chunks of its stripes it
lacks, cut-through as they arrive, relays first, paced, from memory or disk; and answer requests."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING

from ..exceptions import LinkError
from ..host import Inbound
from ..wire import (
    Chunk,
    ChunkRequest,
    Envelope,
    Have,
    NodeId,
)

if TYPE_CHECKING:
    from ..links.link import Link


from .session import (
    LEAD_HOLD_MAX,
    LEAF_LEAD,
    RELAY_LEAD,
    _holds_stripes,
    _pread,
    _Roles,
    _Session,
)


class PusherRole(_Roles):
    async def on_have(self, m: Inbound[Have]) -> None:
        h = m.body
        s = self.sessions.get(h.payload_id)
        if s is None:
            self._keep_early(h.payload_id, m.source, h)
            return
        await self._on_have(s, m.source, h)

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
            s.pushers[child] = self.host.spawn(self._push(s, child), name="payload-push")

    async def _update_pushers(self, s: _Session) -> None:
        kids = {c for cs in s.children.values() for c in cs}
        for child in list(s.pushers):
            if child not in kids:
                s.pushers.pop(child)  # it stops by itself before its next chunk (cancelling mid-frame kills the link)
        for child in kids:
            if child in s.child_have and child not in s.pushers:
                s.pushers[child] = self.host.spawn(self._push(s, child), name="payload-push")

    async def _push(self, s: _Session, child: NodeId) -> None:
        """Send ``child`` every chunk of the stripes it hangs under this node for, that it lacks, as they arrive.

        The pusher walks ``s.order`` (chunks in the order this node came to hold them) with a
        cursor, so each arrival costs O(1) per child however large the payload; it starts over
        when the stripes it serves change (a re-plan) and stops when this node holds everything
        and the cursor has passed it all.
        """
        me = self.host.node_id
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
                await self.pacer.pace(len(data))
                try:
                    await link.send(Envelope(Chunk(s.pid, i, data), me, destination=child))
                except LinkError:
                    if not any(not x.closed for x in self.host.peers.links(child)) or failures >= 3:
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
        return next((x for x in self.host.peers.links(peer) if not x.closed), None)

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

    async def on_chunk_request(self, m: Inbound[ChunkRequest]) -> None:
        r, env, link = m.body, m.env, m.link
        s = self.sessions.get(r.payload_id)
        if s is None:
            await self._reply_error(link, env, "unknown payload")
            return
        me = self.host.node_id
        budget = 4096  # chunk indices looked at per request (a range past the end costs one too)
        for rng in r.ranges:
            if rng.start >= s.manifest.chunk_count:
                budget -= 1
                if budget < 0:
                    return
                continue
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
