"""The domain pushes peer-list changes (issue 18, item 6): a device learns of devices that register
after it, forgets those that left and sees record changes, within 2 s and whatever the start order;
changes are coalesced into bounded batches, one in flight per device, the latest state for a slow one."""

from __future__ import annotations

import asyncio
import functools
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from edgeagent.host import Inbound
from edgeagent.identity import Identity, sign_struct
from edgeagent.limits import ResourceLimits
from edgeagent.links.link import Link
from edgeagent.node import Node, NodeConfig
from edgeagent.services.registry import RegistryService
from edgeagent.wire import Envelope, NodeId, PeerList, PeerRecord, encode
from tests.conftest import FakeHost, FakeLink, ask, attach, until

COMMON: dict[str, Any] = {"mdns": "off", "link_probe_interval": 0, "route_tick": 0.2}
PAGE_BYTES = 256 * 1024  # the largest peer-list frame a domain may send
AGREE_WITHIN = 2.0  # seconds after a change by which every device's `peers` agrees with the domain's


def _domain(tmp_path: Path, **config: Any) -> Node:
    return Node(Identity.generate(), tmp_path / "domain", NodeConfig(role="domain", allow=None, **COMMON, **config))


def _device(tmp_path: Path, domain: Node, name: str, *, record_ttl: int | None = None, **config: Any) -> Node:
    url = domain.listen_urls[0]
    node = Node(
        Identity.generate(), tmp_path / name, NodeConfig(domain=url, listen=["ws://127.0.0.1:0"], **COMMON, **config)
    )
    if record_ttl is not None:
        node.registry.record_ttl = record_ttl
    return node


def _listed(node: Node) -> set[str]:
    """What ``edgeagent peers`` on ``node`` shows: the node ids of its peers document."""
    return {row["node_id"] for row in node.registry.peers_json()}


def _holds(domain: Node, device: Node) -> bool:
    return str(device.node_id) in _listed(domain)


def _disagreeing(domain: Node, devices: list[Node]) -> list[str]:
    """The devices whose `peers` differ from the domain's list (less themselves): names, for the failure."""
    registered = _listed(domain)
    return [str(d.node_id) for d in devices if _listed(d) != registered - {str(d.node_id)}]


async def _agree(domain: Node, devices: list[Node], within: float = AGREE_WITHIN, what: str = "") -> None:
    await until(lambda: not _disagreeing(domain, devices), within, what or "every device to agree with the domain")


async def _start_one_by_one(tmp_path: Path, domain: Node, names: str, **kwargs: Any) -> list[Node]:
    """Devices started one after another, each registered before the next starts."""
    devices = []
    for name in names:
        node = _device(tmp_path, domain, name, **kwargs)
        await node.start()
        devices.append(node)
        await asyncio.wait_for(node.registered.wait(), 10)
    return devices


async def _stop(nodes: list[Node]) -> None:
    for node in reversed(nodes):
        await node.stop()


# -- in-process Nodes over loopback WebSockets -----------------------------------------------------


async def test_the_first_device_learns_of_every_device_that_registers_after_it(tmp_path: Path) -> None:
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"])
    await domain.start()
    devices: list[Node] = []
    try:
        for name in "abc":
            node = _device(tmp_path, domain, name)
            await node.start()
            devices.append(node)
            await asyncio.wait_for(node.registered.wait(), 10)
            await until(functools.partial(_holds, domain, node), 5, what="the domain to hold the record")
            t0 = time.monotonic()
            await _agree(domain, devices, what=f"every device to learn of {name}")
            assert time.monotonic() - t0 < AGREE_WITHIN
        first = devices[0]
        assert _listed(first) == {str(d.node_id) for d in devices[1:]}  # the first device is no longer alone
        assert all(r.lan_group == "127.0.0.0/24" for r in first.registry.records.values())
        status = domain.status()["registry"]
        assert status["pushes"] >= 2 and status["push_frames"] >= status["pushes"]  # b and c, pushed to a (and b)
        assert status["devices_fed"] == 3
        assert first.status()["registry"]["pushes_received"] >= 2
    finally:
        await _stop([domain, *devices])


async def test_a_device_that_stops_leaves_every_list_once_its_record_has_expired(tmp_path: Path) -> None:
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"])
    await domain.start()
    devices: list[Node] = []
    try:
        devices = await _start_one_by_one(tmp_path, domain, "abc", record_ttl=1)  # short records
        await _agree(domain, devices)
        await asyncio.sleep(1.5)  # every record has expired by now, but each device is still linked: none leaves
        assert len(_listed(domain)) == 3 and not _disagreeing(domain, devices)
        gone, rest = devices[2], devices[:2]
        await gone.stop()
        await until(lambda: str(gone.node_id) not in _listed(domain), 5, what="the domain to drop the stopped device")
        t0 = time.monotonic()
        await _agree(domain, rest, what="the others to forget the stopped device")
        assert time.monotonic() - t0 < AGREE_WITHIN
        assert all(str(gone.node_id) not in _listed(d) for d in rest)
        assert domain.status()["registry"]["devices_fed"] == 2
    finally:
        await _stop([domain, *devices])


async def test_a_goodbye_removes_a_device_at_once_long_before_its_record_expires(tmp_path: Path) -> None:
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"])
    await domain.start()
    devices: list[Node] = []
    try:
        devices = await _start_one_by_one(tmp_path, domain, "abc")  # records valid for 120 s
        await _agree(domain, devices)
        leaving = devices[1]
        t0 = time.monotonic()
        await leaving.registry.goodbye()
        await leaving.stop()
        stay = [devices[0], devices[2]]
        await _agree(domain, stay, what="the others to forget the device that said goodbye")
        assert time.monotonic() - t0 < AGREE_WITHIN
        assert str(leaving.node_id) not in _listed(domain)
        # a replayed goodbye (an older seq) does not undo a newer registration
        stale = sign_struct(PeerRecord(devices[0].node_id, 1, ttl_s=0), devices[0].identity)
        await devices[0].request(domain.node_id, stale)
        assert str(devices[0].node_id) in _listed(domain)
    finally:
        await _stop([domain, *devices])


async def test_a_record_change_reaches_every_other_device(tmp_path: Path) -> None:
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"])
    await domain.start()
    devices: list[Node] = []
    try:
        devices = await _start_one_by_one(tmp_path, domain, "abc")
        await _agree(domain, devices)
        changer, others = devices[0], devices[1:]
        before = domain.registry.records[changer.node_id].seq
        # the device moves to a metered cellular network and registers again (as netwatch does)
        changer._adopt_network(SimpleNamespace(kind="cellular", metered=True, cost_per_gb=2.5))
        t0 = time.monotonic()
        await changer.registry.register(domain.node_id)

        def changed() -> bool:
            recs = [o.registry.records.get(changer.node_id) for o in others]
            return all(r is not None and r.network_kind == "cellular" and r.metered and r.seq > before for r in recs)

        await until(changed, AGREE_WITHIN, what="the others to see the new record")
        assert time.monotonic() - t0 < AGREE_WITHIN
        assert not _disagreeing(domain, devices)
    finally:
        await _stop([domain, *devices])


async def test_devices_agree_whatever_the_start_order_even_across_a_domain_restart(tmp_path: Path) -> None:
    """Devices started before the domain, and a domain that restarts: each full listing replaces
    what the device held (a peer that left while the domain was away is forgotten)."""
    from tests.procs import free_port

    url = f"ws://127.0.0.1:{free_port()}"
    ident = Identity.generate()
    devices = [
        Node(Identity.generate(), tmp_path / n, NodeConfig(domain=url, listen=["ws://127.0.0.1:0"], **COMMON))
        for n in "abc"
    ]
    for node in devices:
        await node.start()  # the domain is not there yet: they redial
    domain = Node(ident, tmp_path / "domain", NodeConfig(role="domain", allow=None, listen=[url], **COMMON))
    await domain.start()
    try:
        for node in devices:
            await asyncio.wait_for(node.registered.wait(), 20)
        await _agree(domain, devices, within=10)
        assert len(_listed(domain)) == 3
        await domain.stop()
        await devices[2].stop()  # it leaves while the domain is away
        domain = Node(ident, tmp_path / "domain", NodeConfig(role="domain", allow=None, listen=[url], **COMMON))
        await domain.start()
        await until(lambda: len(_listed(domain)) == 2, 20, what="the two devices to register again")
        await _agree(domain, devices[:2])
        assert all(str(devices[2].node_id) not in _listed(d) for d in devices[:2])
    finally:
        await _stop([domain, *devices])


async def test_a_flood_of_joins_is_pushed_in_few_batches_of_bounded_frames(tmp_path: Path) -> None:
    limits = ResourceLimits(record_bytes=16 * 1024)  # big records, so one batch needs several frames
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"], resources=limits)
    await domain.start()
    devices: list[Node] = []
    try:
        devices = await _start_one_by_one(tmp_path, domain, "abc", resources=limits)
        await _agree(domain, devices)
        frames: list[int] = []

        async def measure(m: Inbound[Any]) -> bool:
            frames.append(max(len(encode(m.env, "cbor")), len(encode(m.env, "protobuf"))))
            return True

        for node in devices:
            node.intercept(PeerList, measure)
        received = sum(d.registry.pushes_received for d in devices)
        batches = domain.registry.push_batches
        padding = tuple(f"cap-{i:03d}-" + "p" * 110 for i in range(100))  # ~12 KiB a record
        joins = 120
        joiners = [Identity.generate() for _ in range(joins)]
        links = await asyncio.gather(*(attach(domain, ident) for ident in joiners))  # linked, not registered yet

        async def join(ident: Identity, link: Link) -> None:
            rec = sign_struct(PeerRecord(ident.node_id, 1, capabilities=padding), ident)
            answer = await ask(link, Envelope(rec, ident.node_id, destination=domain.node_id))
            assert isinstance(answer.body, PeerList)
            await link.close()  # its record stays (valid 120 s): it joined, and is pushed

        await asyncio.gather(*(join(ident, link) for ident, link in zip(joiners, links, strict=True)))  # the flood
        assert len(_listed(domain)) == 3 + joins
        await _agree(domain, devices, what="every device to hear of every join")
        pushed = sum(d.registry.pushes_received for d in devices) - received
        assert pushed == len(frames)
        assert pushed < joins * len(devices) // 4, f"{pushed} frames for {joins} joins to {len(devices)} devices"
        assert domain.registry.push_batches - batches < joins * len(devices) // 4
        assert all(size <= PAGE_BYTES for size in frames), max(frames)
        assert max(frames) > PAGE_BYTES // 2  # batches were large enough to need pages
        assert sum(frames) > len(devices) * PAGE_BYTES  # what each device was sent did not fit one frame
    finally:
        await _stop([domain, *devices])


# -- the registry on a FakeHost ----------------------------------------------------------------------


def _record(ident: Identity, seq: int = 1, **fields: Any) -> PeerRecord:
    return sign_struct(PeerRecord(ident.node_id, seq, issued_ms=int(time.time() * 1000), **fields), ident)


def _link(peer: NodeId) -> FakeLink:
    link = FakeLink(peer)
    link.transport = SimpleNamespace(remote_address="10.0.0.7:5000")  # type: ignore[attr-defined]
    return link


class SlowLink(FakeLink):
    """A link whose sends wait for ``gate``; records how many were in flight at once."""

    def __init__(self, peer: NodeId) -> None:
        super().__init__(peer)
        self.gate = asyncio.Event()
        self.in_flight = self.most_in_flight = 0
        self.transport = SimpleNamespace(remote_address="10.0.0.9:5000")

    async def send(self, env: Envelope) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            if env.reply_to is None:  # answers go at once; pushes wait
                await self.gate.wait()
            await super().send(env)
        finally:
            self.in_flight -= 1


async def test_a_slow_device_gets_the_latest_state_one_batch_at_a_time(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "domain", role="domain")
    host.peers.allow = None
    reg = RegistryService(host, upload_bps=lambda: 0.0)
    reg.push_delay = 0.01
    slow = Identity.generate()
    link = SlowLink(slow.node_id)
    host.peers.by_peer[slow.node_id] = [link]  # type: ignore[list-item]
    await host.deliver(reg, _record(slow), slow.node_id, link=link)  # registered: it is pushed to
    others = [Identity.generate() for _ in range(50)]
    for ident in others:
        await host.deliver(reg, _record(ident), ident.node_id, link=_link(ident.node_id))
    await asyncio.sleep(0.05)  # the first batch is stuck in flight; the rest change meanwhile
    for seq in range(2, 6):
        for ident in others:
            await host.deliver(reg, _record(ident, seq), ident.node_id, link=_link(ident.node_id))
    departed = others[:10]
    for ident in departed:
        await host.deliver(reg, _record(ident, 9, ttl_s=0), ident.node_id)  # goodbyes
    assert reg._feeds[slow.node_id].task is not None
    link.gate.set()
    await until(lambda: reg._feeds[slow.node_id].task is None, 5, what="the pushes to finish")
    pushes = [env.body for env in link.sent if env.reply_to is None and isinstance(env.body, PeerList)]
    assert link.most_in_flight == 1  # one frame, one batch, in flight at a time
    assert len(pushes) == 2  # the batch stuck in flight, then one with the latest state
    latest = pushes[-1]
    assert {r.node_id: r.seq for r in latest.peers} == {i.node_id: 5 for i in others[10:]}
    assert set(latest.removed) == {i.node_id for i in departed}
    for env in link.sent:
        assert len(encode(env, "cbor")) <= PAGE_BYTES and len(encode(env, "protobuf")) <= PAGE_BYTES


async def test_a_device_applies_changes_and_a_full_listing_from_its_domain_only(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "device")
    dev = RegistryService(host, upload_bps=lambda: 0.0)
    domain, friend = Identity.generate(), Identity.generate()
    host.peers.domains.add(domain.node_id)
    host.peers.allow = {friend.node_id}
    x, y, z = (Identity.generate() for _ in range(3))
    d = domain.node_id
    await host.deliver(dev, PeerList((_record(x), _record(y)), registration=7), d)  # joins
    assert set(dev.records) == {x.node_id, y.node_id}
    await host.deliver(dev, PeerList((_record(x, 2, network_kind="wifi"),), removed=(y.node_id,)), d)
    assert set(dev.records) == {x.node_id} and dev.records[x.node_id].network_kind == "wifi"
    # a full listing (a resync) replaces what the device held once its last page is in
    await host.deliver(dev, PeerList((_record(y, 3),), page=1, pages=2, registration=7), d)
    assert set(dev.records) == {x.node_id, y.node_id}  # nothing forgotten before the last page
    await host.deliver(dev, PeerList((_record(z),), page=2, pages=2, registration=7), d)
    assert set(dev.records) == {y.node_id, z.node_id}  # x was left out: forgotten
    # only the configured domain is heard: an authorised peer's or a stranger's push is refused
    for source in (friend.node_id, Identity.generate().node_id):
        with pytest.raises(PermissionError):
            await host.deliver(dev, PeerList((), removed=(y.node_id, z.node_id)), source)
    assert set(dev.records) == {y.node_id, z.node_id}


async def test_a_push_that_follows_a_registration_waits_for_its_answer(tmp_path: Path) -> None:
    """The answer to a registration is taken by ``register`` (a reply), a push after it by the
    handler: a push stamped with that registration is applied after the answer, never before."""
    host = FakeHost(tmp_path / "device")
    dev = RegistryService(host, upload_bps=lambda: 0.0)
    domain, x = Identity.generate(), Identity.generate()
    host.peers.domains.add(domain.node_id)
    answered = asyncio.Event()
    release = asyncio.Event()
    seqs: list[int] = []

    async def request(peer: NodeId, body: Any, *, timeout: float = 10.0, traits: Any = None) -> Any:
        seqs.append(body.seq)
        answered.set()
        await release.wait()  # the reply has come, but register() has not taken it yet
        return PeerList((_record(x),), page=1, pages=1, registration=body.seq)

    host.request = request  # type: ignore[method-assign]
    registering = asyncio.ensure_future(dev.register(domain.node_id))
    await answered.wait()
    removal = PeerList((), removed=(x.node_id,), registration=seqs[0])
    push = asyncio.ensure_future(host.deliver(dev, removal, domain.node_id))
    await asyncio.sleep(0.05)
    assert not push.done()  # held until the answer is taken
    release.set()
    assert [r.node_id for r in await registering] == [x.node_id]
    await push
    assert x.node_id not in dev.records  # the removal came after the listing that named x


async def test_a_device_that_stops_says_goodbye_and_leaves_every_list_at_once(tmp_path: Path) -> None:
    """``Node.stop`` withdraws the record (records live 120 s by default): the others hear within 2 s."""
    domain = _domain(tmp_path, listen=["ws://127.0.0.1:0"])
    await domain.start()
    devices: list[Node] = []
    try:
        devices = await _start_one_by_one(tmp_path, domain, "abc")
        await _agree(domain, devices)
        gone = devices.pop()
        await gone.stop()
        await until(lambda: all(str(gone.node_id) not in _listed(d) for d in devices), AGREE_WITHIN,
                    what="the stopped device to leave every list")  # fmt: skip
        assert not _holds(domain, gone)
    finally:
        await _stop([domain, *devices])


def test_a_wildcard_listener_is_advertised_at_this_machines_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """A device listening on ws://0.0.0.0:7400 put that in its record, and a peer dialling it reached itself."""
    from edgeagent.services import registry

    monkeypatch.setattr(registry, "_interface_addresses", lambda *, v6: ["192.168.1.10", "10.0.0.5"])
    urls = ["ws://0.0.0.0:7400", "ws://127.0.0.1:7401", "wss://example.org:443/x"]
    assert registry.advertised(urls) == (
        "ws://192.168.1.10:7400",
        "ws://10.0.0.5:7400",
        "ws://127.0.0.1:7401",
        "wss://example.org:443/x",
    )
    assert "0.0.0.0" not in " ".join(registry.advertised(["ws://0.0.0.0:7400"]))
    monkeypatch.setattr(registry, "_interface_addresses", lambda *, v6: [])
    assert registry.advertised(["ws://0.0.0.0:7400"]) == ()  # no address to give: none, rather than a wrong one
