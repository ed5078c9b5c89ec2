"""Registry poisoning (issue 16): the domain's registry is bounded in count, record size and list
length, refuses role claims, and sends its peer list in pages no larger than 256 KiB a frame."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from edgeagent.identity import Identity, sign_struct
from edgeagent.limits import Limiter, ResourceLimits
from edgeagent.links.link import Link
from edgeagent.node import Node, NodeConfig
from edgeagent.peers import PeerTable
from edgeagent.services import registry
from edgeagent.services.registry import RegistryService
from edgeagent.wire import Envelope, Error, ErrorCode, NodeId, PeerList, PeerRecord, encode
from tests.conftest import FakeHost, FakeLink, ask, attach

COMMON: dict[str, Any] = {"mdns": "off", "link_probe_interval": 0, "route_tick": 0.2}
PAGE_BYTES = 256 * 1024  # the largest peer-list frame a domain may send


def _record(ident: Identity, seq: int = 1, **fields: Any) -> PeerRecord:
    return sign_struct(PeerRecord(ident.node_id, seq, issued_ms=int(time.time() * 1000), **fields), ident)


def _link(peer: NodeId, remote: str = "10.0.0.7:5000") -> FakeLink:
    link = FakeLink(peer)
    link.transport = type("T", (), {"remote_address": remote})()  # type: ignore[attr-defined]
    return link


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _domain(tmp_path: Path, limits: ResourceLimits, *, open_: bool = True) -> tuple[FakeHost, RegistryService, Clock]:
    host = FakeHost(tmp_path / "domain", role="domain")
    host.limiter = Limiter(limits)
    if open_:
        host.peers.allow = None
    clock = Clock()
    reg = RegistryService(host, upload_bps=lambda: 0.0)
    reg._clock = clock  # the registry's clock (records expire by it)
    return host, reg, clock


async def _register(host: FakeHost, reg: RegistryService, rec: PeerRecord, link: FakeLink | None = None) -> Any:
    """Deliver ``rec`` from its node as a fresh registration; the answer's body."""
    out = await host.deliver(reg, rec, rec.node_id, link=link or _link(rec.node_id))
    assert len(out) == 1
    return out[0].body


# -- a flood of identities -------------------------------------------------------------------------


async def test_a_flood_of_identities_is_refused_past_the_cap_and_an_honest_device_still_registers(
    tmp_path: Path,
) -> None:
    honest = Identity.generate()
    cap, flood = 32, 200
    config = NodeConfig(
        role="domain",
        listen=["ws://127.0.0.1:0"],
        allow={honest.node_id},
        resources=ResourceLimits(registry_records=cap),
        **COMMON,
    )
    domain = Node(Identity.generate(), tmp_path / "d", config)
    await domain.start()
    links: list[Link] = []
    device: Node | None = None
    try:
        answers: list[Any] = []
        for _ in range(flood):
            ident = Identity.generate()
            link = await attach(domain, ident)
            links.append(link)
            env = Envelope(_record(ident), ident.node_id, destination=domain.identity.node_id)
            answers.append((await ask(link, env)).body)
        refused = [a for a in answers if isinstance(a, Error)]
        assert len(refused) == flood - cap
        assert all(a.code == ErrorCode.QUOTA and "registry_records" in a.reason for a in refused)
        assert all(a.peers == () for a in answers if isinstance(a, PeerList))  # strangers learn nothing
        assert len(domain.registry.records) == cap
        assert domain.limiter.refused["registry_records"] == flood - cap
        assert domain.status()["limits"]["refused"]["registry_records"] == flood - cap
        # a fresh, honest (authorised) device registers at once: a stranger's record makes room
        t0 = time.monotonic()
        device = Node(honest, tmp_path / "h", NodeConfig(domain=domain.listen_urls[0], **COMMON))
        await device.start()
        await asyncio.wait_for(device.registered.wait(), 2.0)
        assert time.monotonic() - t0 < 2.0
        assert honest.node_id in domain.registry.records
        assert len(domain.registry.records) == cap
    finally:
        for link in links:
            await link.close()
        if device is not None:
            await device.stop()
        await domain.stop()


async def test_a_full_open_registry_takes_refreshes_and_evicts_only_expired_records_of_gone_peers(
    tmp_path: Path,
) -> None:
    host, reg, clock = _domain(tmp_path, ResourceLimits(registry_records=8))
    idents = [Identity.generate() for _ in range(8)]
    for ident in idents:
        assert isinstance(await _register(host, reg, _record(ident, ttl_s=60)), PeerList)
    for ident in idents[:4]:  # half stay linked
        host.peers.by_peer[ident.node_id] = [_link(ident.node_id)]  # type: ignore[list-item]
    stranger = Identity.generate()
    answer = await _register(host, reg, _record(stranger))
    assert isinstance(answer, Error) and answer.code == ErrorCode.QUOTA
    assert stranger.node_id not in reg.records
    # a known peer's refreshed record is still taken when full
    assert isinstance(await _register(host, reg, _record(idents[5], seq=2, ttl_s=60)), PeerList)
    assert reg.records[idents[5].node_id].seq == 2
    # the unlinked peers' records expire; a new peer then takes the place of the one that expired first
    clock.now += 61
    reg.on_link_down(idents[4].node_id)
    assert isinstance(await _register(host, reg, _record(stranger)), PeerList)
    assert stranger.node_id in reg.records and idents[4].node_id not in reg.records
    assert all(i.node_id in reg.records for i in idents[:4])  # live (linked) peers are never evicted
    # expired records of linked peers stay: once every peer is linked, newcomers are refused
    clock.now += registry.MAX_RECORD_TTL + 1
    for node in list(reg.records):
        host.peers.by_peer[node] = [_link(node)]  # type: ignore[list-item]
    answer = await _register(host, reg, _record(Identity.generate()))
    assert isinstance(answer, Error) and answer.code == ErrorCode.QUOTA
    assert all(i.node_id in reg.records for i in idents[:4])
    assert len(reg.records) == 8
    assert host.limiter.refused["registry_records"] == 2


async def test_a_record_claiming_ttl_forever_still_expires_once_its_peer_is_gone(tmp_path: Path) -> None:
    host, reg, clock = _domain(tmp_path, ResourceLimits(registry_records=1))
    squatter = Identity.generate()
    assert isinstance(await _register(host, reg, _record(squatter, ttl_s=2**32 - 1)), PeerList)
    answer = await _register(host, reg, _record(Identity.generate()))
    assert isinstance(answer, Error) and answer.code == ErrorCode.QUOTA
    clock.now += registry.MAX_RECORD_TTL + 1  # the registry's clock, not the record's claim, decides
    assert isinstance(await _register(host, reg, _record(Identity.generate())), PeerList)
    assert squatter.node_id not in reg.records


# -- what one record may hold ----------------------------------------------------------------------


async def test_an_oversized_record_is_refused_by_a_running_domain(tmp_path: Path) -> None:
    config = NodeConfig(role="domain", allow=None, **COMMON)
    domain = Node(Identity.generate(), tmp_path / "d", config)
    ident = Identity.generate()
    try:
        link = await attach(domain, ident)
        huge = _record(ident, addresses=("ws://" + "x" * (2 << 20) + ":1",))  # one 2 MiB address
        reply = await ask(link, Envelope(huge, ident.node_id, destination=domain.identity.node_id))
        assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.QUOTA
        assert "record_bytes" in reply.body.reason
        assert ident.node_id not in domain.registry.records
        assert domain.limiter.refused["record_bytes"] == 1
        # the link is still served, and a sound record from the same peer is kept
        reply = await ask(link, Envelope(_record(ident, 2), ident.node_id, destination=domain.identity.node_id))
        assert isinstance(reply.body, PeerList)
        assert domain.registry.records[ident.node_id].seq == 2
        await link.close()
    finally:
        await domain.stop()


async def test_records_larger_than_record_bytes_or_with_too_many_items_are_refused(tmp_path: Path) -> None:
    host, reg, _ = _domain(tmp_path, ResourceLimits(record_bytes=1024, list_items=8))
    ident = Identity.generate()
    for rec, limit in [
        (_record(ident, capabilities=tuple(f"c{i}" for i in range(9))), "list_items"),
        (_record(ident, addresses=tuple(f"ws://10.0.0.{i}:1" for i in range(9))), "list_items"),
        (_record(ident, capabilities=("x" * 1100,)), "record_bytes"),
        (_record(ident, addresses=("ws://a:1",) * 8, capabilities=("y" * 120,) * 8), "record_bytes"),
    ]:
        answer = await _register(host, reg, rec)
        assert isinstance(answer, Error) and answer.code == ErrorCode.QUOTA and limit in answer.reason
    assert reg.records == {}
    assert host.limiter.refused == {"list_items": 2, "record_bytes": 2}
    assert isinstance(await _register(host, reg, _record(ident, capabilities=("a",) * 8)), PeerList)


# -- role claims -----------------------------------------------------------------------------------


async def test_a_record_claiming_role_domain_is_refused_and_makes_no_domain(tmp_path: Path) -> None:
    # at the domain: refused with BAD_REQUEST, not kept
    host, reg, _ = _domain(tmp_path, ResourceLimits())
    claimant = Identity.generate()
    answer = await _register(host, reg, _record(claimant, role="domain"))
    assert isinstance(answer, Error) and answer.code == ErrorCode.BAD_REQUEST
    assert claimant.node_id not in reg.records
    assert host.limiter.refused["record_role"] == 1

    # at a device: a domain's list (or a peer) naming a "domain" gets no record kept, no domain made
    dev_host = FakeHost(tmp_path / "device")
    dev = RegistryService(dev_host, upload_bps=lambda: 0.0)
    my_domain, honest = Identity.generate(), Identity.generate()
    dev_host.peers.domains.add(my_domain.node_id)
    listed = (_record(claimant, role="domain"), _record(honest))
    dev_host.replies[PeerRecord] = lambda peer, body: PeerList(listed)
    good = await dev.register(my_domain.node_id)
    assert [r.node_id for r in good] == [honest.node_id]
    assert claimant.node_id not in dev.records
    out = await dev_host.deliver(dev, _record(claimant, 2, role="domain"), claimant.node_id)
    assert isinstance(out[0].body, Error) and out[0].body.code == ErrorCode.BAD_REQUEST
    assert claimant.node_id not in dev.records
    assert not dev_host.peers.is_domain(claimant.node_id)
    assert dev_host.peers.domain_ids == {my_domain.node_id}
    # and even a record that were kept could not make a domain: that is the configuration's alone
    table = PeerTable(None, {claimant.node_id: PeerRecord(claimant.node_id, 1, role="domain")})
    assert not table.is_domain(claimant.node_id) and table.domain_ids == frozenset()


async def test_a_device_keeps_at_most_registry_records_from_its_domain(tmp_path: Path) -> None:
    dev_host = FakeHost(tmp_path / "device")
    dev_host.limiter = Limiter(ResourceLimits(registry_records=5, record_bytes=512))
    dev = RegistryService(dev_host, upload_bps=lambda: 0.0)
    my_domain = Identity.generate()
    dev_host.peers.domains.add(my_domain.node_id)
    big = _record(Identity.generate(), capabilities=("z" * 600,))
    listed = (*(_record(Identity.generate()) for _ in range(9)), big)
    dev_host.replies[PeerRecord] = lambda peer, body: PeerList(listed)
    good = await dev.register(my_domain.node_id)
    assert len(good) == 5 and len(dev.records) == 5
    assert dev_host.limiter.refused == {"registry_records": 4, "record_bytes": 1}


# -- the peer list stays in bounded frames ---------------------------------------------------------


async def test_the_peer_list_is_sent_in_pages_of_at_most_256_kib(tmp_path: Path) -> None:
    host, reg, _ = _domain(tmp_path, ResourceLimits(registry_records=10_000))
    padding = tuple(f"cap-{i:03d}-" + "p" * 90 for i in range(35))  # ~3.5 KiB a record
    others = [Identity.generate() for _ in range(300)]
    for ident in others:
        assert isinstance(await _register(host, reg, _record(ident, capabilities=padding)), PeerList)
    assert sum(len(encode(Envelope(r, r.node_id))) for r in reg.records.values()) > 4 * PAGE_BYTES
    device = Identity.generate()
    link = _link(device.node_id)
    await host.deliver(reg, _record(device), device.node_id, link=link)
    while host.tasks:  # the pages after the first are pushed by a task
        await asyncio.gather(*host.tasks)
    lists = [env for env in link.sent if isinstance(env.body, PeerList)]
    assert len(lists) > 1 and lists[0].reply_to is not None
    assert all(env.reply_to is None and env.destination == device.node_id for env in lists[1:])
    for env in lists:
        for codec in ("cbor", "protobuf"):
            assert len(encode(env, codec)) <= PAGE_BYTES
    listed = [r.node_id for env in lists for r in env.body.peers]
    assert sorted(listed) == sorted(i.node_id for i in others)  # every peer once, the device not

    # the device takes the pages from its domain, and from nobody else
    dev_host = FakeHost(tmp_path / "device", identity=device)
    dev = RegistryService(dev_host, upload_bps=lambda: 0.0)
    dev_host.peers.domains.add(host.node_id)
    for env in lists[1:]:
        await dev_host.deliver(dev, env.body, host.node_id)
    assert len(dev.records) == sum(len(env.body.peers) for env in lists[1:])
    with pytest.raises(PermissionError):
        await dev_host.deliver(dev, lists[1].body, Identity.generate().node_id)


async def test_an_unauthorised_registrant_gets_an_empty_list_and_devices_get_no_strangers(tmp_path: Path) -> None:
    host, reg, _ = _domain(tmp_path, ResourceLimits(), open_=False)
    alice, bob, eve = (Identity.generate() for _ in range(3))
    host.peers.allow |= {alice.node_id, bob.node_id}
    eve_link = _link(eve.node_id)
    eve_link.authorised = False
    assert await _register(host, reg, _record(eve), eve_link) == PeerList(())
    assert isinstance(await _register(host, reg, _record(alice)), PeerList)
    answer = await _register(host, reg, _record(bob))
    assert isinstance(answer, PeerList) and [r.node_id for r in answer.peers] == [alice.node_id]
