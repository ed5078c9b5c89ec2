"""What a peer may make a node hold through payload trees (issue 16): sessions per source and in all,
the store's quota (a default one when none is configured), and the lists an assignment carries."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from edgeagent.exceptions import RemoteBadRequest, RemoteQuotaExceeded
from edgeagent.identity import Identity, sign_struct
from edgeagent.limits import Limiter, ResourceLimits
from edgeagent.node import Node, NodeConfig
from edgeagent.payload import make_manifest, payload_id
from edgeagent.payload import session as payload_session
from edgeagent.payload.service import PayloadService
from edgeagent.payload.store import default_quota
from edgeagent.wire import (
    Assist,
    Envelope,
    Error,
    ErrorCode,
    Have,
    Hop,
    Manifest,
    NodeId,
    RouteSegment,
    TreeAssign,
)
from tests.conftest import FakeHost, FakeLink, until

MiB = 1 << 20
GiB = 1 << 30
COMMON: dict[str, Any] = {"allow": None, "link_probe_interval": 0, "route_tick": 0.2}


def _node(tmp: Path, name: str, limits: ResourceLimits | None = None) -> Node:
    return Node(Identity.generate(), tmp / name, NodeConfig(listen=["ws://127.0.0.1:0"], resources=limits, **COMMON))


def _manifest(origin: Identity, n: int = 0, size: int = 4096) -> Manifest:
    return make_manifest(os.urandom(size), origin, chunk_size=1024, created_ms=1 + n)


def _claimed(origin: Identity, size: int, chunk: int = 8 * MiB) -> Manifest:
    """A signed manifest claiming ``size`` bytes (the hashes are zeros: no chunk ever matches)."""
    n = -(-size // chunk)
    return sign_struct(Manifest(size=size, chunk_size=chunk, chunk_hashes=bytes(32 * n), origin=origin.node_id), origin)


def _assign(m: Manifest, parent: NodeId | None = None, **kw: Any) -> TreeAssign:
    return TreeAssign(payload_id(m), kw.pop("stripe", 0), kw.pop("stripes", 1), parent, manifest=m, **kw)


def _refusal(sent: list[Envelope], limit: str = "") -> Error:
    """The one Error answered, naming ``limit`` when given."""
    errors = [e.body for e in sent if isinstance(e.body, Error)]
    assert len(errors) == 1, sent
    assert limit in errors[0].reason, errors[0]
    return errors[0]


def _files(root: Path, pid: bytes) -> list[str]:
    return sorted(p.name for p in root.glob(f"{pid.hex()}*"))


class Trio(NamedTuple):
    a: Node  # the receiver
    s: Node  # a flooding / hostile source
    t: Node  # another peer (an honest source, or a bystander)


@pytest.fixture
async def trio(tmp_path: Path) -> AsyncIterator[Trio]:
    limits = ResourceLimits(payload_sessions_per_source=3, payload_sessions_total=5)
    nodes = Trio(_node(tmp_path, "a", limits), _node(tmp_path, "s"), _node(tmp_path, "t"))
    for n in nodes:
        await n.start()
    try:
        for other in (nodes.s, nodes.t):
            await other.ensure_link(nodes.a.identity.node_id, tuple(nodes.a.listen_urls))
        yield nodes
    finally:
        for n in nodes:
            await n.stop()


# -- sessions per source and in all ---------------------------------------------------------------------------------


async def test_a_session_flood_from_one_source_is_refused_while_another_source_still_delivers(
    trio: Trio, tmp_path: Path
) -> None:
    a, s, t = trio
    a_id = a.identity.node_id
    first = [_manifest(s.identity, n) for n in range(3)]
    for m in first:  # within the cap: accepted (S is the parent and never sends a chunk)
        await s.send(a_id, _assign(m, s.identity.node_id, parent_addresses=tuple(s.listen_urls)))
    await until(lambda: len(a.payloads.sessions) == 3, what="three sessions from S")
    for n in range(3, 6):  # past the cap: refused at once, before the store opens anything
        m = _manifest(s.identity, n)
        with pytest.raises(RemoteQuotaExceeded, match="payload_sessions_per_source"):
            await s.request(a_id, _assign(m, s.identity.node_id), timeout=5)
        assert payload_id(m) not in a.payloads.sessions
        assert _files(a.payloads.store.root, payload_id(m)) == []
    assert a.limiter.refused["payload_sessions_per_source"] == 3
    assert a.status()["limits"]["refused"]["payload_sessions_per_source"] == 3
    # another source is not held back by S's flood: its payload goes through
    path = tmp_path / "honest.bin"
    data = os.urandom(300_000)
    path.write_bytes(data)
    res = await asyncio.wait_for(t.payloads.send(path, [a_id]), 20)
    assert res.completed == 1 and not res.failed
    got = a.payloads.sessions[bytes.fromhex(res.payload_id)]
    assert got.state is not None and got.state.path is not None and got.state.path.read_bytes() == data


def _service(tmp_path: Path, **limits: int) -> tuple[FakeHost, PayloadService]:
    host = FakeHost(tmp_path / "host")
    host.peers.allow = None  # open: every peer may assign
    host.limiter = Limiter(ResourceLimits(**limits))
    return host, PayloadService(host, tmp_path / "payloads", quota_bytes=64 * MiB)


async def test_sessions_in_all_are_capped_and_whole_or_idle_ones_make_room(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host, svc = _service(tmp_path, payload_sessions_per_source=2, payload_sessions_total=3)
    x, y, z = Identity.generate(), Identity.generate(), Identity.generate()
    data = os.urandom(1024)
    whole = make_manifest(data, y, chunk_size=1024, created_ms=9)  # one chunk: y's payload completes below
    try:
        for who, m in ((x, _manifest(x, 0)), (x, _manifest(x, 1)), (y, whole)):
            assert not [e for e in await host.deliver(svc, _assign(m), who.node_id)]
        assert len(svc.sessions) == 3
        _refusal(await host.deliver(svc, _assign(_manifest(x, 3)), x.node_id), "payload_sessions_per_source")
        late = _manifest(z, 4)
        err = _refusal(await host.deliver(svc, _assign(late), z.node_id), "payload_sessions_total")
        assert err.code == ErrorCode.QUOTA and _files(svc.store.root, payload_id(late)) == []
        # a payload held whole no longer counts
        state = svc.sessions[payload_id(whole)].state
        assert state is not None and state.put(0, data) and state.complete
        assert not [e for e in await host.deliver(svc, _assign(late), z.node_id)]
        # full again; a session idle for SESSION_IDLE gives up its place (its files stay, to resume)
        monkeypatch.setattr(payload_session, "SESSION_IDLE", 0.0)
        oldest = min(svc._receiving(), key=lambda s: max(s.last_from_parent.values(), default=s.started))
        newer = _manifest(z, 7)
        assert not [e for e in await host.deliver(svc, _assign(newer), z.node_id)]
        assert payload_id(newer) in svc.sessions and oldest.pid not in svc.sessions
        assert oldest.state is not None and oldest.state.closed
        assert f"{oldest.pid.hex()}.part" in _files(svc.store.root, oldest.pid)
        assert host.limiter.refused == {"payload_sessions_per_source": 1, "payload_sessions_total": 1}
    finally:
        await svc.aclose()


# -- the store's quota ----------------------------------------------------------------------------------------------


class _Usage(NamedTuple):
    total: int
    used: int
    free: int


async def test_without_a_configured_quota_the_store_still_has_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No quota configured: half the free disk space (at most 64 GiB); a payload over it is refused before
    any file is made, answered with an Error (limit payload_quota)."""
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(100 * GiB, 98 * GiB, 2 * GiB))
    host = FakeHost(tmp_path / "host")
    host.peers.allow = None
    svc = PayloadService(host, tmp_path / "payloads")  # quota_bytes=None, as NodeConfig.payload_quota's default
    try:
        assert svc.store.quota_bytes == 1 * GiB == default_quota(svc.store)
        origin = Identity.generate()
        big = _claimed(origin, 3 * GiB // 2)  # under the 64 GiB payload limit, over the default quota
        err = _refusal(await host.deliver(svc, _assign(big), origin.node_id), "payload_quota")
        assert err.code == ErrorCode.QUOTA
        assert payload_id(big) not in svc.sessions and _files(svc.store.root, payload_id(big)) == []
        assert host.limiter.refused["payload_quota"] == 1
        assert svc.status_fields()["payload_store"] == {"quota_bytes": GiB, "used_bytes": 0}
        # a payload that fits is received as before
        small = _manifest(origin, 1)
        assert not [e for e in await host.deliver(svc, _assign(small), origin.node_id)]
        assert payload_id(small) in svc.sessions
    finally:
        await svc.aclose()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(2000 * GiB, 0, 1000 * GiB))
    assert default_quota(svc.store) == 64 * GiB  # capped


async def test_a_configured_quota_counts_what_is_held_and_the_disk_must_fit_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    host = FakeHost(tmp_path / "host")
    host.peers.allow = None
    svc = PayloadService(host, tmp_path / "payloads", quota_bytes=100 * MiB)
    origin = Identity.generate()
    try:
        first = _claimed(origin, 60 * MiB)
        assert not [e for e in await host.deliver(svc, _assign(first), origin.node_id)]
        second = _claimed(origin, 50 * MiB, chunk=4 * MiB)  # 60 + 50 > 100
        _refusal(await host.deliver(svc, _assign(second), origin.node_id), "over its 104857600-byte quota")
        assert _files(svc.store.root, payload_id(second)) == []
        # the quota would allow it, the disk would not: the .part files are sparse, so they must fit what is free
        monkeypatch.setattr(shutil, "disk_usage", lambda path: _Usage(100 * GiB, 100 * GiB - 70 * MiB, 70 * MiB))
        third = _claimed(origin, 30 * MiB, chunk=2 * MiB)  # 30 + the 60 still owed to the first > 70 free
        _refusal(await host.deliver(svc, _assign(third), origin.node_id), "free on disk")
        assert _files(svc.store.root, payload_id(third)) == []
        assert host.limiter.refused["payload_quota"] == 2
    finally:
        await svc.aclose()


# -- lists a peer controls ------------------------------------------------------------------------------------------


async def test_a_huge_stripe_count_is_refused_at_once_and_a_bystander_is_not_slowed(trio: Trio) -> None:
    a, s, bystander = trio
    a_id = a.identity.node_id
    link = bystander.links[a_id][0]
    rtts: list[float] = []
    stop = asyncio.Event()

    async def ping() -> None:
        while not stop.is_set():
            rtts.append(await link.ping(timeout=5.0))
            await asyncio.sleep(0.02)

    pinger = asyncio.create_task(ping())
    try:
        await until(lambda: rtts, what="a first ping")
        m = _manifest(s.identity, 0)
        t0 = time.monotonic()
        with pytest.raises(RemoteQuotaExceeded, match="list_items"):
            await s.request(a_id, _assign(m, s.identity.node_id, stripes=20_000_000), timeout=5)
        assert time.monotonic() - t0 < 1.0
        assert payload_id(m) not in a.payloads.sessions
        await asyncio.sleep(1.5)  # three of a session's report ticks, had one been made
    finally:
        stop.set()
        await pinger
    assert len(rtts) >= 20 and max(rtts) < 50, rtts
    assert a.limiter.refused["list_items"] == 1


async def test_assignments_and_assists_are_checked_before_any_work(tmp_path: Path) -> None:
    host, svc = _service(tmp_path, list_items=8)
    origin = Identity.generate()
    src = origin.node_id
    m = _manifest(origin)
    many = tuple(Identity.generate().node_id for _ in range(9))
    segment = RouteSegment((Hop(src, many[0]),), tuple(RouteSegment((Hop(many[0], k),)) for k in many))
    try:
        for bad, what in [
            (_assign(m, stripes=9), "9 stripes"),
            (_assign(m, children=many), "9 children"),
            (_assign(m, parent_addresses=tuple(f"ws://127.0.0.1:{p}" for p in range(9))), "parent addresses"),
            (_assign(m, weights=(1,) * 9), "9 weights"),
            (_assign(m, subtree=segment), "subtree"),
        ]:
            err = _refusal(await host.deliver(svc, bad, src), "list_items")
            assert what in err.reason and err.code == ErrorCode.QUOTA
        # the lists are checked first: a forged manifest with too many stripes is refused for the stripes
        forged = sign_struct(Manifest(size=1, chunk_size=1, chunk_hashes=bytes(32), origin=src), Identity.generate())
        t0 = time.monotonic()
        _refusal(await host.deliver(svc, _assign(forged, stripes=4_000_000_000), src), "list_items")
        assert time.monotonic() - t0 < 0.05
        err = _refusal(await host.deliver(svc, _assign(m, stripe=3, stripes=2), src), "stripe 3")
        assert err.code == ErrorCode.BAD_REQUEST
        assert not svc.sessions and host.limiter.refused["list_items"] == 6
        # within the caps: accepted; an Assist naming too many addresses is refused like an assignment
        assert not [e for e in await host.deliver(svc, _assign(m, stripes=8, stripe=7), src)]
        me = host.node_id
        addrs = tuple(f"ws://127.0.0.1:{p}" for p in range(9))
        _refusal(await host.deliver(svc, Assist(payload_id(m), me, many[0], addrs, 0, 1), src), "helper addresses")
        assert host.limiter.refused["list_items"] == 7
    finally:
        await svc.aclose()


async def test_messages_kept_for_payloads_not_assigned_yet_are_bounded(tmp_path: Path) -> None:
    host, svc = _service(tmp_path)
    link = FakeLink(Identity.generate().node_id)
    origin = Identity.generate()
    m = _manifest(origin)
    try:
        await host.deliver(svc, Have(payload_id(m), b"\x01"), link.peer, link=link)  # kept for when m is assigned
        for n in range(1000):  # Haves for as many payloads, each never assigned
            await host.deliver(svc, Have(n.to_bytes(32, "big"), b"\xff" * 4096), link.peer, link=link)
        assert len(svc._early) <= payload_session.EARLY_PAYLOADS
        assert sum(len(v) for v in svc._early.values()) <= payload_session.EARLY_MAX * payload_session.EARLY_PAYLOADS
        assert svc._early_bytes <= payload_session.EARLY_BYTES
        # an assignment takes its payload's early messages (and their bytes) back out
        before = svc._early_bytes
        assert payload_id(m) in svc._early
        await host.deliver(svc, _assign(m), origin.node_id)
        assert payload_id(m) not in svc._early and svc._early_bytes == before - 65
    finally:
        await svc.aclose()


async def test_a_bad_stripe_is_a_bad_request_on_a_real_node(trio: Trio) -> None:
    a, s, _ = trio
    m = _manifest(s.identity, 0)
    with pytest.raises(RemoteBadRequest, match="stripe 5"):
        await s.request(a.identity.node_id, _assign(m, stripe=5, stripes=2), timeout=5)
