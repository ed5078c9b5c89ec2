"""The payload-tree driver in one process: real nodes over loopback websockets, and bad input."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.exceptions import NoRoute, PayloadError
from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.node import Node, NodeConfig
from edgeagent.payload import make_manifest, payload_id
from edgeagent.wire import Assist, Chunk, Envelope, Error, Have, Progress, TreeAssign
from tests.conftest import FakeHost, FakeLink
from tests.procs import cli

COMMON: dict[str, Any] = {"allow": None, "link_probe_interval": 0, "route_tick": 0.2}


@pytest.fixture
async def fleet(tmp_path: Path) -> AsyncIterator[tuple[Node, list[Node]]]:
    """A domain and five agents; the last one on cellular (metered)."""
    domain = Node(Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **COMMON))
    await domain.start()
    agents = []
    for i in range(5):
        cell = i == 4
        opts = LinkOptions(network_kind="cellular" if cell else "wifi", metered=cell)
        a = Node(
            Identity.generate(),
            tmp_path / f"a{i}",
            NodeConfig(listen=["ws://127.0.0.1:0"], domain=domain.listen_urls[0], link=opts, **COMMON),
        )
        await a.start()
        agents.append(a)
    async with asyncio.timeout(10):
        for a in agents:
            await a.registered.wait()
    try:
        yield domain, agents
    finally:
        for a in agents:
            await a.stop()
        await domain.stop()


async def test_tree_delivers_once_and_cellular_is_a_leaf(fleet: tuple[Node, list[Node]], tmp_path: Path) -> None:
    domain, agents = fleet
    data = os.urandom(3 * 256 * 1024 + 1234)  # ragged last chunk
    path = tmp_path / "model.bin"
    path.write_bytes(data)
    res = await asyncio.wait_for(domain.payloads.send(path), 30)
    assert res.completed == res.receivers == 5 and not res.failed
    assert res.source_bytes_sent == len(data)  # one copy
    cell = str(agents[4].identity.node_id)
    assert res.per_node[cell]["bytes_uploaded"] == 0 and not res.per_node[cell]["relay_ok"]
    assert res.cellular_uploaded_bytes == 0
    forest = domain.payloads.plans[bytes.fromhex(res.payload_id)].forest
    assert all(not t.children.get(agents[4].identity.node_id) for t in forest.trees)
    want = hashlib.sha256(data).hexdigest()
    for a in agents:
        st = a.status()["payloads"]
        assert len(st) == 1 and st[0]["complete"] and st[0]["size"] == len(data)
        assert {"id", "size", "have_bytes", "complete", "path"} <= st[0].keys()
        assert hashlib.sha256(Path(st[0]["path"]).read_bytes()).hexdigest() == want  # noqa: ASYNC240
    src = [p for p in domain.status()["payloads"] if p["role"] == "source"]
    assert src and src[0]["bytes_sent"] == len(data)


async def test_bad_input_is_refused_and_the_node_keeps_serving(fleet: tuple[Node, list[Node]], tmp_path: Path) -> None:
    domain, agents = fleet
    a = agents[0]
    me = domain.identity.node_id
    link = a.links[me][0]
    # a forged manifest (signed by someone else than its origin) is refused with an Error
    path = tmp_path / "x.bin"
    path.write_bytes(os.urandom(1000))
    good = make_manifest(path, domain.identity, created_ms=int(time.time() * 1000))
    forged = dataclasses.replace(good, size=good.size)  # same fields...
    forged = dataclasses.replace(forged, origin=Identity.generate().node_id)  # ...claimed by another origin
    pid = payload_id(forged)
    assign = TreeAssign(pid, 0, 1, me, (), None, forged, tuple(domain.listen_urls))
    env = Envelope(assign, me, destination=a.identity.node_id)
    fut = domain._pending.add(env.msg_id, env.destination)
    await domain.links[a.identity.node_id][0].send(env)
    err = (await asyncio.wait_for(fut, 5)).body
    assert isinstance(err, Error) and "refused" in err.reason
    assert pid not in a.payloads.sessions
    # chunks and haves for unknown payloads are dropped quietly
    await link.send(Envelope(Chunk(b"\x01" * 32, 0, b"junk"), me, destination=a.identity.node_id))
    await link.send(Envelope(Have(b"\x02" * 32, b"\xff"), me, destination=a.identity.node_id))
    # still serving: a real payload goes through afterwards
    data = os.urandom(300_000)
    path2 = tmp_path / "y.bin"
    path2.write_bytes(data)
    res = await asyncio.wait_for(domain.payloads.send(path2, [a.identity.node_id]), 20)
    assert res.completed == 1


async def test_corrupt_chunk_is_caught_and_reported(fleet: tuple[Node, list[Node]], tmp_path: Path) -> None:
    domain, agents = fleet
    a, b = agents[0], agents[1]
    data = os.urandom(2 * 256 * 1024)
    path = tmp_path / "z.bin"
    path.write_bytes(data)
    m = make_manifest(path, domain.identity, created_ms=1)
    pid = payload_id(m)
    me = domain.identity.node_id
    # the domain assigns a payload to a with b as its parent; b (not the source) then sends a bad chunk
    await domain.send(a.identity.node_id, TreeAssign(pid, 0, 1, b.identity.node_id, (), None, m, tuple(b.listen_urls)))
    await asyncio.sleep(0.3)
    reports: list[Progress] = []

    async def spy(m: Any) -> None:
        if isinstance(m.body, Progress) and m.body.payload_id == pid:
            reports.append(m.body)

    domain.intercept(Progress, spy)
    link_ba = await b.ensure_link(a.identity.node_id, tuple(a.listen_urls))
    bad = bytes([data[0] ^ 1]) + data[1 : 256 * 1024]
    await link_ba.send(Envelope(Chunk(pid, 0, bad), b.identity.node_id, destination=a.identity.node_id))
    deadline = time.monotonic() + 5
    while not any(r.bad_parent == b.identity.node_id for r in reports) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert any(r.bad_parent == b.identity.node_id and r.bad_chunks >= 1 for r in reports)
    s = a.payloads.sessions[pid]
    assert s.state is not None and not s.state.has(0) and s.bad_chunks == 1
    assert me in a.links  # nothing was torn down


async def test_send_errors(fleet: tuple[Node, list[Node]], tmp_path: Path) -> None:
    domain, _ = fleet
    with pytest.raises(PayloadError, match="not a readable file"):
        await domain.payloads.send(tmp_path / "missing.bin")
    (tmp_path / "c.bin").write_bytes(os.urandom(200_000))
    for bad in (0, -1, (8 << 20) + 1):
        with pytest.raises(PayloadError, match="chunk size"):
            await domain.payloads.send(tmp_path / "c.bin", chunk_size=bad)
    res = await asyncio.wait_for(domain.payloads.send(tmp_path / "c.bin", chunk_size=64 * 1024), 30)
    assert res.completed == res.receivers == 5  # a smaller chunk works end to end
    assert domain.payloads.sessions[bytes.fromhex(res.payload_id)].manifest.chunk_size == 64 * 1024
    run = cli("send", str(tmp_path / "c.bin"), "--state", str(tmp_path / "nobody"), "--chunk-kib", "0")
    assert run.returncode == 1 and "--chunk-kib 0" in run.stderr, run.stderr
    lonely = Node(Identity.generate(), tmp_path / "lonely", NodeConfig(**COMMON))
    await lonely.start()
    try:
        (tmp_path / "f.bin").write_bytes(b"x" * 10)
        with pytest.raises(NoRoute, match="no receivers"):
            await lonely.payloads.send(tmp_path / "f.bin")
    finally:
        await lonely.stop()


async def test_configured_upload_is_advertised_and_planned_with(tmp_path: Path) -> None:
    """``[payload] upload_mbit`` is a cap and the upload a node advertises; the source's planner uses it."""
    domain = Node(Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **COMMON))
    await domain.start()
    agents = []
    try:
        for i in range(3):
            up = 2.5e6 if i == 0 else None
            cfg = NodeConfig(listen=["ws://127.0.0.1:0"], domain=domain.listen_urls[0], payload_upload_bps=up, **COMMON)
            a = Node(Identity.generate(), tmp_path / f"a{i}", cfg)
            await a.start()
            agents.append(a)
        async with asyncio.timeout(10):
            for a in agents:
                await a.registered.wait()
        slow, other = agents[0].identity.node_id, agents[1].identity.node_id
        assert agents[0].registry.own_record().upload_bps == 2.5e6
        assert agents[1].registry.own_record().upload_bps == 0.0  # unknown
        assert domain.registry.records[slow].upload_bps == 2.5e6
        assert domain.payloads._member(slow).upload_bps == 2.5e6
        assert domain.payloads._member(other).upload_bps == 0.0
    finally:
        for a in agents:
            await a.stop()
        await domain.stop()


async def test_silent_members_are_pinged_and_only_the_dead_removed(
    fleet: tuple[Node, list[Node]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that stops reporting is pinged by the source: alive -> kept; no Pong -> repaired away."""
    from edgeagent.payload import source

    monkeypatch.setattr(source, "SILENT_AFTER", 1.0)
    monkeypatch.setattr(source, "LIVE_WINDOW", 2.0)
    monkeypatch.setattr(source, "LINK_WAIT", 1.0)  # the silent two never report being linked
    domain, agents = fleet
    me = domain.identity.node_id
    quiet, hung = agents[0], agents[1]

    async def no_report(*args: Any, **kwargs: Any) -> None:
        return None

    quiet.payloads._report = no_report  # type: ignore[method-assign]
    hung.payloads._report = no_report  # type: ignore[method-assign]
    link = hung.links[me][0]
    dispatch = link._dispatch

    async def drop_pings(env: Envelope, size: int) -> None:
        if type(env.body).__name__ == "Ping":
            link._consumed(size)
            return
        await dispatch(env, size)

    link._dispatch = drop_pings  # type: ignore[method-assign]
    data = os.urandom(4 * 256 * 1024)
    path = tmp_path / "w.bin"
    path.write_bytes(data)
    pid = await domain.payloads.start(path)
    plan = domain.payloads.plans[pid]
    deadline = time.monotonic() + 15
    while hung.identity.node_id not in plan.dead and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    assert hung.identity.node_id in plan.dead  # silent and no Pong: repaired away
    assert quiet.identity.node_id not in plan.dead  # silent but answers Pings: kept
    others = [a for a in agents if a not in (quiet, hung)]
    while not all(plan.progress.get(a.identity.node_id, Progress(pid)).complete for a in others):
        assert time.monotonic() < deadline, "the other receivers did not complete"
        await asyncio.sleep(0.1)
    s = quiet.payloads.sessions[pid]
    while not s.complete:
        assert time.monotonic() < deadline, "the quiet receiver did not complete"
        await asyncio.sleep(0.1)
    assert hashlib.sha256(Path(s.state.path).read_bytes()).hexdigest() == hashlib.sha256(data).hexdigest()  # type: ignore[union-attr]  # noqa: ASYNC240


async def test_source_waits_until_its_children_are_linked(
    fleet: tuple[Node, list[Node]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No chunk leaves the source before its own children are linked to their parents (LINK_WAIT caps it);
    receivers further down link while the first chunks travel."""
    from edgeagent.payload import source

    domain, agents = fleet
    me = domain.identity.node_id
    delay = {"to_source": 1.5, "other": 0.0}
    only: set[Any] = set()  # when set: only these agents are slow
    for a in agents:
        original = a.payloads._attach_one

        async def late_attach(s: Any, parent: Any, addrs: Any, _orig: Any = original, _me: Any = a) -> None:
            if not only or _me.identity.node_id in only:
                first_wave = me in s.parents.values()
                await asyncio.sleep(delay["to_source"] if first_wave else delay["other"])
            await _orig(s, parent, addrs)

        a.payloads._attach_one = late_attach  # type: ignore[method-assign]
    data = os.urandom(6 * 256 * 1024)
    path = tmp_path / "g.bin"
    path.write_bytes(data)
    pid = await domain.payloads.start(path)
    plan = domain.payloads.plans[pid]
    await asyncio.sleep(1.0)
    assert plan.session.bytes_sent == 0 and not plan.session.go.is_set()  # its children are still dialling
    res = await asyncio.wait_for(domain.payloads.wait(pid), 30)
    assert res.completed == 5 and res.source_bytes_sent == len(data)
    # receivers below the first level (not the source's children) that are slow to link do not hold it back
    monkeypatch.setattr(source, "LINK_WAIT", 10.0)
    delay.update(to_source=0.0, other=30.0)
    path2 = tmp_path / "h.bin"
    path2.write_bytes(os.urandom(8 * 256 * 1024))
    t0 = time.monotonic()
    pid2 = await domain.payloads.start(path2)
    plan2 = domain.payloads.plans[pid2]
    assert any(t.children.get(c) for t in plan2.forest.trees for c in t.children.get(me, ())), "a two-level tree"
    async with asyncio.timeout(8):
        await plan2.session.go.wait()
    assert time.monotonic() - t0 < 5
    # a source child that never gets linked holds the source back for LINK_WAIT only
    monkeypatch.setattr(source, "LINK_WAIT", 0.5)
    delay.update(to_source=30.0, other=0.0)
    only.add(plan2.forest.trees[0].children[me][0])  # the plan depends on the members only: same children
    path3 = tmp_path / "i.bin"
    path3.write_bytes(os.urandom(2 * 256 * 1024))
    pid3 = await domain.payloads.start(path3)
    plan3 = domain.payloads.plans[pid3]
    async with asyncio.timeout(10):
        while plan3.session.bytes_sent == 0:
            await asyncio.sleep(0.05)
    assert plan3.session.go.is_set()


async def test_an_idle_relay_assists_a_receiver_its_parent_does_not_serve(
    fleet: tuple[Node, list[Node]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A receiver that never links to its parent still completes: the source pairs it with idle relays that
    hold everything (Assist), and it pulls the end of its stripes from them, a bit more each time."""
    from edgeagent.payload import receiver, service, source

    monkeypatch.setattr(source, "ASSIST_FOR", 1.0)
    monkeypatch.setattr(receiver, "ASSIST_FOR", 1.0)
    monkeypatch.setattr(service, "ASSIST_FOR", 1.0)
    monkeypatch.setattr(source, "LINK_WAIT", 0.5)
    domain, agents = fleet
    stuck = agents[4]  # on cellular: a leaf in every tree (a stuck relay would hold back its children too)

    async def never(*args: Any) -> None:
        return None

    stuck.payloads._attach_one = never  # type: ignore[method-assign]
    assists: list[Any] = []

    async def spy(m: Any) -> None:
        assists.append(m.body)

    stuck.intercept(Assist, spy)
    data = os.urandom(24 * 256 * 1024)
    path = tmp_path / "assist.bin"
    path.write_bytes(data)
    res = await asyncio.wait_for(domain.payloads.send(path), 60)
    assert res.completed == 5 and not res.failed, res
    assert res.source_bytes_sent <= len(data) * 1.02
    got = [a for a in assists if a.receiver == stuck.identity.node_id]
    assert got, "the stuck receiver was assisted"
    assert res.assists >= len(got) and res.to_json()["assists"] == res.assists
    helpers = {a.helper for a in got}
    assert helpers <= {a.identity.node_id for a in agents[:4]}  # Wi-Fi relays only: cellular never helps
    st = next(p for p in stuck.status()["payloads"] if p["id"] == res.payload_id)
    digest = hashlib.sha256(Path(st["path"]).read_bytes()).hexdigest()  # noqa: ASYNC240
    assert st["complete"] and digest == hashlib.sha256(data).hexdigest()
    served = sum(a.payloads.sessions[bytes.fromhex(res.payload_id)].bytes_sent for a in agents if a is not stuck)
    assert served >= len(data) * 3  # the three other receivers' copies (relayed) plus what helpers brought


async def test_blake3_only_when_every_receiver_advertises_it(fleet: tuple[Node, list[Node]], tmp_path: Path) -> None:
    from edgeagent.payload.manifest import hash_available

    if not hash_available("blake3"):
        pytest.skip("the blake3 package is not installed on this machine")
    domain, agents = fleet
    ids = [a.identity.node_id for a in agents]
    assert all("blake3" in domain.registry.records[i].capabilities for i in ids)  # advertised by every agent
    assert domain.payloads.hash_for(ids) == "blake3"
    data = os.urandom(3 * 256 * 1024)
    path = tmp_path / "b3.bin"
    path.write_bytes(data)
    res = await asyncio.wait_for(domain.payloads.send(path), 30)
    assert res.completed == 5
    assert domain.payloads.sessions[bytes.fromhex(res.payload_id)].manifest.hash_alg == "blake3"
    for a in agents:  # verified and stored under BLAKE3 everywhere
        s = a.payloads.sessions[bytes.fromhex(res.payload_id)]
        assert s.manifest.hash_alg == "blake3" and s.complete
    # one receiver without the capability: SHA-256 for everyone
    rec = domain.registry.records[ids[0]]
    domain.registry.records[ids[0]] = dataclasses.replace(
        rec, capabilities=tuple(c for c in rec.capabilities if c != "blake3")
    )
    assert domain.payloads.hash_for(ids) == "sha256"
    assert domain.payloads.hash_for(ids[1:]) == "blake3"


async def test_idle_once_the_stripes_it_forwards_are_held_and_sent(tmp_path: Path) -> None:
    """``Progress.idle``: a relay counts as idle (a helper for what it holds) as soon as it holds every
    chunk of the stripes it forwards and its pushers are done, while it still receives other stripes."""
    from edgeagent.payload import session
    from edgeagent.payload.store import ChunkStore

    ident = Identity.generate()
    chunk = 1024
    data = os.urandom(6 * chunk)  # chunks 0..5; with 2 stripes, stripe 0 = 0, 2, 4 and stripe 1 = 1, 3, 5
    man = make_manifest(data, ident, chunk_size=chunk, created_ms=1)
    state = ChunkStore(tmp_path / "store", fsync=False).open(man)
    s = session._Session(payload_id(man), man, ident.node_id, state, stripes=2, stripe_have=[0, 0])
    kid = Identity.generate().node_id
    s.children = {0: (kid,), 1: ()}  # forwards stripe 0 only
    assert not session._idle(s) and not session._holds_stripes(s, [0])
    for i in (0, 2, 4):
        assert state.put(i, data[i * chunk : (i + 1) * chunk])
        s.stripe_have[i % 2] += 1
    assert session._holds_stripes(s, [0]) and not session._holds_stripes(s, [0, 1])
    assert session._idle(s) and not s.complete  # stripe 0 held; stripe 1 still coming
    s.pushers[kid] = asyncio.ensure_future(asyncio.sleep(0))  # still sending to its child: busy
    assert not session._idle(s)
    s.sent_all.add(kid)  # its pusher has passed every chunk of stripe 0 (it stays, for late Haves)
    assert session._idle(s)
    await s.pushers.pop(kid)
    assert session._idle(s)
    s.children = {0: (kid,), 1: (kid,)}  # re-planned: now it forwards stripe 1 too, which it lacks
    assert not session._idle(s)
    state.close()


async def test_children_stay_within_their_lead_of_the_slowest_relaying_sibling(tmp_path: Path) -> None:
    """A parent serves the children that relay first: a leaf child's pusher waits while it is more than
    ``LEAF_LEAD`` chunks ahead of the slowest relaying sibling, a relaying child's while more than
    ``RELAY_LEAD``; a sibling that has caught up or is stuck holds no one back."""
    from edgeagent.payload import service, session

    ident = Identity.generate()
    man = make_manifest(os.urandom(64 * 1024), ident, chunk_size=1024, created_ms=1)
    s = session._Session(payload_id(man), man, ident.node_id, None, stripes=1)
    relay_a, relay_b, leaf = (Identity.generate().node_id for _ in range(3))
    s.order = list(range(64))
    s.relaying = {0: frozenset({relay_a, relay_b})}
    s.children = {0: (relay_a, relay_b, leaf)}
    parked = asyncio.Event()
    for c in (relay_a, relay_b, leaf):
        s.pushers[c] = asyncio.ensure_future(parked.wait())
    svc = service.PayloadService(FakeHost(tmp_path / "host"), tmp_path / "payloads")
    now = time.monotonic()
    s.cursors = {relay_a: (20, now), relay_b: (10, now)}
    mine = frozenset({0})

    async def held(child: Any, cursor: int, lead: int) -> bool:
        t = time.monotonic()
        out = await svc._held_back(s, child, mine, cursor, 1, lead)
        assert time.monotonic() - t < 1.5  # a hold is a short wait, then the pusher looks again
        return bool(out)

    lead = session.RELAY_LEAD
    assert not await held(leaf, 10 + session.LEAF_LEAD, session.LEAF_LEAD)
    assert await held(leaf, 11 + session.LEAF_LEAD, session.LEAF_LEAD)
    assert not await held(relay_a, 10 + lead, lead)  # relay_b is the slowest other relay
    assert await held(relay_a, 11 + lead, lead)
    assert not await held(relay_b, 10, lead)  # the slowest is never held back by the faster one
    s.cursors[relay_b] = (10, now - session.LEAD_HOLD_MAX - 1)  # stuck: ignored
    assert not await held(relay_a, 40, lead)
    s.cursors[relay_b] = (64, time.monotonic())  # caught up with all this node holds: ignored
    s.cursors[relay_a] = (30, time.monotonic())
    assert not await held(leaf, 30 + session.LEAF_LEAD, session.LEAF_LEAD)  # relay_a is the one to follow now
    assert await held(leaf, 31 + session.LEAF_LEAD, session.LEAF_LEAD)
    parked.set()
    await asyncio.gather(*s.pushers.values())


async def test_chunks_asked_of_a_helper_whose_link_drops_are_due_from_the_parent_at_once(tmp_path: Path) -> None:
    """A receiver asked a helper for chunks (an Assist); when its last link to that helper goes down it does
    not wait out ``ASSIST_FOR``: those chunks (and only those) are due to be asked of the parent at the next
    report tick."""
    from edgeagent.payload import service, session
    from edgeagent.payload.store import ChunkStore

    ident = Identity.generate()
    man = make_manifest(os.urandom(8 * 1024), ident, chunk_size=1024, created_ms=1)
    state = ChunkStore(tmp_path / "store", fsync=False).open(man)
    s = session._Session(payload_id(man), man, ident.node_id, state, stripes=1, stripe_have=[0])
    helper, other = Identity.generate().node_id, Identity.generate().node_id
    now = time.monotonic()
    s.requested = {3: (now, helper), 5: (now, other), 6: (now, helper)}
    svc = service.PayloadService(FakeHost(tmp_path / "host"), tmp_path / "payloads")
    svc.sessions[s.pid] = s
    svc.on_link_down(helper)
    later = time.monotonic()
    assert all(later - s.requested[i][0] >= session.ASSIST_FOR for i in (3, 6))  # due now
    assert later - s.requested[5][0] < session.ASSIST_FOR  # the other helper's are still its own
    svc.on_link_down(Identity.generate().node_id)  # a stranger's link: nothing changes
    assert s.requested[5] == (now, other)
    state.close()


async def test_a_receiver_asks_a_helper_only_beyond_what_its_parent_is_sending(tmp_path: Path) -> None:
    """An Assist asks the helper for the last ``count`` chunks the receiver lacks of the stripe, but leaves its
    parent as many as the parent delivered within ``IN_FLIGHT_WINDOW`` (those are likely on their way), and
    promises the parent (a Have) exactly the chunks asked of the helper."""
    from collections import deque

    from edgeagent.payload import service, session
    from edgeagent.payload.store import ChunkStore
    from edgeagent.wire import ChunkRequest

    host = FakeHost(tmp_path / "host")
    ident = host.identity
    parent, helper = Identity.generate().node_id, Identity.generate().node_id
    to_parent, to_helper = FakeLink(parent), FakeLink(helper)
    host.peers.by_peer[parent] = [to_parent]
    host.dialable[helper] = to_helper
    man = make_manifest(os.urandom(10 * 1024), ident, chunk_size=1024, created_ms=1)
    state = ChunkStore(tmp_path / "store", fsync=False).open(man)
    s = session._Session(payload_id(man), man, ident.node_id, state, stripes=1, stripe_have=[0], parents={0: parent})
    svc = service.PayloadService(host, tmp_path / "payloads")

    def asked() -> list[int]:
        body = to_helper.sent[-1].body
        assert isinstance(body, ChunkRequest)
        return [r.start for r in body.ranges]

    await svc._pull(s, Assist(s.pid, ident.node_id, helper, (), 0, 4))  # parent quiet: the last 4 of 10
    assert asked() == [6, 7, 8, 9]
    have = to_parent.sent[-1].body
    assert isinstance(have, Have) and have.bitmap == bytes([0b11000000, 0b11])  # promised: 6..9
    s.requested.clear()
    s.parent_arrivals[0] = deque([time.monotonic()] * 8)  # the parent is delivering fast: 8 in the window
    await svc._pull(s, Assist(s.pid, ident.node_id, helper, (), 0, 4))
    assert asked() == [8, 9]  # leaves it the 8 it is likely sending already
    s.requested.clear()
    s.parent_arrivals[0] = deque([time.monotonic() - 2 * session.IN_FLIGHT_WINDOW] * 8)  # long ago: ignored
    await svc._pull(s, Assist(s.pid, ident.node_id, helper, (), 0, 4))
    assert asked() == [6, 7, 8, 9]
    state.close()
