"""The source's role: hash and sign the manifest, plan the forest, assign every receiver, push
the first level, collect Progress, and repair the forest around dead, stalled or corrupt relays."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..exceptions import EdgeAgentError, NoRoute, PayloadError
from ..host import Inbound
from ..wire import Assist, NodeId, Progress, TreeAssign
from .assist import Standing, assists, stripe_sizes
from .manifest import MAX_CHUNK_SIZE, admission, hash_available, make_manifest, payload_id
from .planner import Forest, Member, Tree, plan_forest, tree_assign
from .repair import avoid_failed, move, reassign_metered, repair

if TYPE_CHECKING:
    pass


from .session import (
    ASSIST_FOR,
    ASSIST_MIN_CHUNKS,
    LINK_WAIT,
    LIVE_WINDOW,
    MOVE_EVERY,
    PROGRESS_EVERY,
    SILENT_AFTER,
    SendResult,
    _assignment,
    _describe,
    _Plan,
    _Roles,
    _Session,
    log,
)


class SourceRole(_Roles):
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
        me = self.host.node_id
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
            self.host.identity,
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
        addresses[me] = tuple(self.host.listen_urls)
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
        self.host.spawn(self._go_when_linked(plan))
        self.host.spawn(self._watch(plan))
        return pid

    async def wait(self, pid: bytes, timeout: float | None = None, progress: Any = None) -> SendResult:
        """Wait until every live receiver of ``pid`` holds it (or ``timeout``); the result so far."""
        plan = self.plans[pid]
        if timeout is None or timeout > 0:
            await self._wait(plan, timeout, progress)
        res = self._result(plan, time.monotonic() - plan.t0)
        res.source_wire_bytes = self._wire_bytes_sent() - plan.wire0
        return res

    def _receivers(self, to: list[NodeId] | None) -> list[NodeId]:
        peers = self.host.peers
        me = self.host.node_id
        if to:
            return [r for r in dict.fromkeys(to) if r != me]
        found: dict[NodeId, None] = {}
        for peer, links in peers.linked():
            if links[0].authorised and links[0].peer_hello.role != "domain":
                found[peer] = None
        for peer, rec in peers.records().items():
            if rec.role != "domain" and peers.authorised(peer):
                found[peer] = None
        found.pop(me, None)
        return sorted(found)

    def hash_for(self, receivers: list[NodeId]) -> str:
        """BLAKE3 when this node and every receiver advertise it (``blake3`` capability), else SHA-256."""
        if not hash_available("blake3"):
            return "sha256"
        for peer in receivers:
            rec = self.host.peers.record(peer)
            links = self.host.peers.links(peer)
            caps = rec.capabilities if rec is not None else (links[0].peer_hello.capabilities if links else ())
            if "blake3" not in caps:
                return "sha256"
        return "blake3"

    def _member(self, peer: NodeId) -> Member:
        rec = self.host.peers.record(peer)
        links = self.host.peers.links(peer)
        kind = rec.network_kind if rec else (links[0].peer_hello.network_kind if links else "unknown")
        metered = rec.metered if rec else (links[0].peer_hello.metered if links else False)
        # every unmetered, non-cellular receiver forwards payload chunks (DESIGN s.6: metered nodes are leaves),
        # unless this node's dial-back found that nobody can dial it and no other receiver shares its LAN
        # (behind a home router, alone there: no child could link to it)
        relay_ok = not metered and kind != "cellular" and self._linkable(peer, rec)
        upload = rec.upload_bps if rec else 0.0
        return Member(peer, upload_bps=upload, relay_ok=relay_ok, lan_group=rec.lan_group if rec else "")

    def _linkable(self, peer: NodeId, rec: Any) -> bool:
        if self.host.peers.dialable(peer) is not False:
            return True
        group = rec.lan_group if rec is not None else ""
        return bool(group) and any(r.lan_group == group and n != peer for n, r in self.host.peers.records().items())

    def _addresses(self, peer: NodeId) -> tuple[str, ...]:
        rec = self.host.peers.record(peer)
        if rec is not None and rec.addresses:
            return tuple(rec.addresses)
        links = self.host.peers.links(peer)
        return tuple(links[0].peer_hello.listen) if links else ()

    def _adopt_source_tree(self, plan: _Plan) -> None:
        s = plan.session
        me = self.host.node_id
        s.stripes = plan.forest.stripes
        s.children = {t.stripe: t.children.get(me, ()) for t in plan.forest.trees}
        s.relaying = {
            t.stripe: frozenset(k for k in t.children.get(me, ()) if t.children.get(k)) for t in plan.forest.trees
        }
        s.parents = dict.fromkeys(s.children)
        for kids in s.children.values():
            s.admitted.update(kids)

    async def _send_assigns(self, plan: _Plan, nodes: list[NodeId], old: Forest | None = None) -> None:
        """Send each node its TreeAssigns (only those that changed, when ``old`` is given)."""
        s = plan.session
        me = self.host.node_id
        sizes = {t.stripe: t.sizes() for t in plan.forest.trees}
        old_sizes = {t.stripe: t.sizes() for t in old.trees} if old is not None else {}
        for n in nodes:
            if n in plan.dead:
                continue
            fresh = old is None or n not in self.sessions_known(plan)  # it needs the manifest (in the first)
            msgs: list[TreeAssign] = []
            for tree in plan.forest.trees:
                parent = tree.parent.get(n)
                kids = tree.children.get(n, ())
                if old is not None:
                    ot = old.trees[tree.stripe] if tree.stripe < len(old.trees) else None
                    if (
                        ot is not None
                        and ot.parent.get(n) == parent
                        and ot.children.get(n, ()) == kids
                        and all(old_sizes[tree.stripe].get(k, 1) == sizes[tree.stripe].get(k, 1) for k in kids)
                    ):
                        continue
                addrs = plan.addresses.get(parent, ()) if parent not in (None, me) else tuple(self.host.listen_urls)
                manifest = s.manifest if fresh and not msgs else None
                a = tree_assign(
                    plan.forest, tree, n, s.pid, sizes[tree.stripe], manifest=manifest, parent_addresses=addrs
                )
                if parent is not None and parent != me:  # its credential at a parent that may not know it yet
                    a = dataclasses.replace(a, admission=admission(self.host.identity, s.pid, n, parent))
                msgs.append(a)
            for m in msgs:
                try:
                    await self.host.send(n, m)
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
            rec = self.host.peers.record(n)
            links = self.host.peers.links(n)
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
            unlinkable=sorted([str(p), str(c)] for p, c in plan.failed_edges),
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
        if plan.failed_edges:  # whatever the repair chose, no child goes back under a parent it could not reach
            members = list(plan.members.values())
            new = avoid_failed(new, plan.failed_edges, members, avoid=plan.dead | plan.demoted)
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

    async def on_progress(self, m: Inbound[Progress]) -> None:
        p, env = m.body, m.env
        plan = self.plans.get(p.payload_id)
        if plan is None or env.source not in plan.members:
            return
        if len(p.stripe_have) > plan.forest.stripes:  # kept and re-read every tick: no more than the stripes
            p = dataclasses.replace(p, stripe_have=p.stripe_have[: plan.forest.stripes])
        plan.progress[env.source] = p
        plan.heard_at[env.source] = time.monotonic()
        if p.bad_parent is not None and p.bad_parent in plan.members and plan.members[p.bad_parent].relay_ok:
            await self._replan(plan, p.bad_parent, dead=False, why=f"{env.source} got corrupt chunks from it")
        elif p.lost_parent is not None and p.lost_parent not in plan.dead:
            if p.lost_parent == self.host.node_id:
                await self._send_assigns(plan, [env.source])  # it lost us: assign again (re-link)
            elif p.lost_parent in plan.members:
                self.host.spawn(self._check_lost(plan, p.lost_parent, env.source, stalled=p.stalled))
        self._check_done(plan)

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
        me = self.host.node_id
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
                self.host.spawn(self._check_silent(plan, node))
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
            if (helper, n) in plan.failed_edges:
                continue  # it could not link to that one before
            plan.assists[(n, j)] = (helper, now)
            plan.assists_sent += 1
            msg = Assist(s.pid, n, helper, plan.addresses.get(helper, ()), j, count)
            log.info("payload %s: %s serves %s the last %d chunks of stripe %d", s.pid.hex()[:12], helper, n, count, j)
            try:
                await self.host.send(helper, msg)  # first, so it admits the receiver before the request comes
                await self.host.send(n, msg)
            except EdgeAgentError as exc:
                log.info("payload %s: cannot send an assist: %s", s.pid.hex()[:12], exc)
                del plan.assists[(n, j)]

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
        return any(link.idle_seconds < LIVE_WINDOW for link in self.host.peers.links(node))

    async def _answers(self, node: NodeId) -> bool:
        """True when ``node`` answers a Ping on our link to it within ``LIVE_WINDOW``."""
        links = self.host.peers.links(node)
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
        if not stalled:  # it could not link: never plan this edge again (also when the move waits below)
            plan.failed_edges.add((parent, child))
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
            avoid = plan.dead | plan.demoted | {p for p, c in plan.failed_edges if c == child}
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
        me = self.host.node_id
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

    def first_tree(self, pid: bytes) -> Tree:
        """The first stripe tree of a payload this node sends (federated learning sums up it)."""
        return self.plans[pid].forest.trees[0]

    def _wire_bytes_sent(self) -> int:
        """Bytes this node has put on all its links (frames, records, encryption), for egress accounting."""
        return self.host.wire_bytes_sent()
