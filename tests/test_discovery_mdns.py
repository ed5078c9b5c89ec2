"""mDNS discovery: signed TXT records, and nodes that find each other and link up.

Multicast runs only inside a network namespace this test creates (its own
``lo``), never on the host's interfaces; the tests skip, saying why, where
namespaces cannot be made.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgeagent.discovery import SERVICE_TYPE, MdnsRecord, sign_txt, verify_txt
from edgeagent.exceptions import DecodeError, SignatureError
from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig
from tests.conftest import until

from .netns import Netns, netns_or_skip


def test_signed_txt_round_trip() -> None:
    ident = Identity.generate()
    rec = MdnsRecord(ident.node_id, 7400, seq=3, capabilities=("relay", "webrtc"), network_kind="wifi", metered=True)
    props = sign_txt(rec, ident)
    assert verify_txt(props) == rec
    assert verify_txt({k.encode(): v.encode() for k, v in props.items()}) == rec


@pytest.mark.parametrize(("key", "value"), [("net", "ethernet"), ("metered", "0"), ("port", "7401"), ("seq", "9")])
def test_tampered_txt_is_refused(key: str, value: str) -> None:
    ident = Identity.generate()
    props = sign_txt(MdnsRecord(ident.node_id, 7400, network_kind="cellular", metered=True), ident)
    with pytest.raises(SignatureError):
        verify_txt({**props, key: value})


def test_txt_signed_by_another_key_is_refused() -> None:
    ident, other = Identity.generate(), Identity.generate()
    props = sign_txt(MdnsRecord(other.node_id, 7400), other)
    forged = {**props, "id": str(ident.node_id)}
    with pytest.raises(SignatureError):
        verify_txt(forged)
    with pytest.raises(SignatureError):
        sign_txt(MdnsRecord(ident.node_id, 7400), other)  # a node may only advertise itself


@pytest.mark.parametrize(
    "change",
    [{"sig": "***"}, {"id": "nope"}, {"port": "x"}, {"port": "0"}],
)
def test_malformed_txt_is_refused(change: dict[str, str]) -> None:
    ident = Identity.generate()
    props = sign_txt(MdnsRecord(ident.node_id, 7400), ident)
    with pytest.raises((DecodeError, SignatureError)):
        verify_txt({**props, **change})
    partial = dict(props)
    del partial["sig"]
    with pytest.raises(DecodeError, match="lacks"):
        verify_txt(partial)


# -- inside a namespace ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    with netns_or_skip("ea-mdns", "mDNS must not touch the host's interfaces") as ns:
        yield ns


@pytest.fixture
def inside(netns: Netns) -> Iterator[Netns]:
    with netns.entered():
        yield netns


async def _wait(cond: Callable[[], object], timeout: float) -> None:
    await until(cond, timeout, "the condition")


async def _forged_advertiser(victim: Identity) -> object:
    """A zeroconf service claiming to be ``victim`` with a record signed by another key."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    mallory = Identity.generate()
    props = sign_txt(MdnsRecord(mallory.node_id, 9999), mallory)
    props["id"] = str(victim.node_id)  # the signature no longer matches
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    info = AsyncServiceInfo(
        SERVICE_TYPE,
        f"{victim.node_id}.{SERVICE_TYPE}",
        addresses=[socket.inet_aton("127.0.0.1")],
        port=9999,
        properties=props,
        server="mallory.local.",
    )
    await (await zc.async_register_service(info))
    return zc


async def test_nodes_discover_each_other_and_link_up(inside: Netns, tmp_path: Path) -> None:
    """The single-namespace loopback variant: two nodes, mDNS on 127.0.0.1 only."""
    victim = Identity.generate()
    forger = await _forged_advertiser(victim)
    nodes = [
        Node(Identity.generate(), tmp_path / name, NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
        for name in ("a", "b")
    ]
    try:
        for node in nodes:
            await node.start()
        a, b = nodes
        await _wait(lambda: b.identity.node_id in a.links and a.identity.node_id in b.links, 15)
        link = a.links[b.identity.node_id][0]
        assert await link.ping() > 0
        # the forged record was seen and ignored: nobody linked to "victim"
        await _wait(lambda: a.network.mdns.ignored >= 1 and b.network.mdns.ignored >= 1, 10)
        assert victim.node_id not in a.links and victim.node_id not in a.network.mdns.peers
        assert a.status()["mdns"]["peers"] == 1
    finally:
        for node in nodes:
            await node.stop()
        await forger.async_close()  # type: ignore[attr-defined]


async def test_goodbye_removes_a_stopped_node(inside: Netns, tmp_path: Path) -> None:
    a = Node(Identity.generate(), tmp_path / "a", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
    b = Node(Identity.generate(), tmp_path / "b", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
    await a.start()
    await b.start()
    try:
        await _wait(lambda: b.identity.node_id in a.network.mdns.peers, 15)
        await b.stop()
        await _wait(lambda: b.identity.node_id not in a.network.mdns.peers, 10)  # goodbye, not a TTL expiry
    finally:
        await a.stop()
        await b.stop()


async def test_switch_to_cellular_is_readvertised_within_5s_and_stops_relaying(inside: Netns, tmp_path: Path) -> None:
    """A simulated Wi-Fi -> cellular switch reaches mDNS peers and the domain registry within 5 s."""
    import time

    from edgeagent.netcost import NetInfo

    def info(kind: str, metered: bool) -> NetInfo:
        return NetInfo(
            "wlan0" if kind == "wifi" else "rmnet0",
            kind,
            metered,
            2.0 if metered else 0.0,
            "USD",  # type: ignore[arg-type]
            "test",
            "test",
        )

    current = [info("wifi", False)]
    domain = Node(
        Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], allow=None)
    )
    await domain.start()
    phone = Node(
        Identity.generate(),
        tmp_path / "p",
        NodeConfig(
            listen=["ws://127.0.0.1:0"],
            allow=None,
            mdns="loopback",
            domain=domain.listen_urls[0],
            net_probe=lambda: current[0],
            probe_interval=0.2,
        ),
    )
    watcher = Node(Identity.generate(), tmp_path / "w", NodeConfig(allow=None, mdns="loopback", mdns_listen_only=True))
    try:
        await phone.start()
        await watcher.start()
        pid = phone.identity.node_id
        await _wait(lambda: pid in watcher.network.mdns.peers and pid in domain.registry.records, 15)
        assert watcher.network.mdns.peers[pid].record.network_kind == "wifi" and phone.network.may_relay[0]
        assert not domain.registry.records[pid].metered
        current[0] = info("cellular", True)  # the switch
        t0 = time.monotonic()
        seen = watcher.network.mdns.peers
        await _wait(lambda: seen[pid].record.network_kind == "cellular" and domain.registry.records[pid].metered, 5)
        elapsed = time.monotonic() - t0
        assert elapsed < 5
        assert watcher.network.mdns.peers[pid].record.metered
        assert phone.network.may_relay == (False, "metered cellular network (relay_only_unmetered)")
        assert phone.status()["network"]["kind"] == "cellular"
    finally:
        for node in (watcher, phone, domain):
            await node.stop()


async def test_a_flood_of_signed_adverts_in_a_namespace_is_bounded(inside: Netns, tmp_path: Path) -> None:
    """200 validly signed adverts (200 identities, one responder) on the namespace's loopback: the node
    keeps at most ``mdns_peers``, never runs more than ``mdns_dials`` dials at once, and still links to an
    honest advertised peer and answers it."""
    from zeroconf import IPVersion
    from zeroconf.asyncio import AsyncServiceInfo, AsyncZeroconf

    from edgeagent.limits import ResourceLimits

    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))  # a port nobody accepts on: every dial to the flood fails
    port = closed.getsockname()[1]
    zc = AsyncZeroconf(interfaces=["127.0.0.1"], ip_version=IPVersion.V4Only)
    limits = ResourceLimits(mdns_peers=40, mdns_dials=3)
    friend = Identity.generate()  # the one peer the node authorises: its advert displaces a stranger's
    node = Node(
        Identity.generate(),
        tmp_path / "n",
        NodeConfig(listen=["ws://127.0.0.1:0"], allow={friend.node_id}, mdns="loopback", resources=limits),
    )
    honest = Node(friend, tmp_path / "h", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
    peak = 0
    try:
        for i in range(200):
            ident = Identity.generate()
            info = AsyncServiceInfo(
                SERVICE_TYPE,
                f"{ident.node_id}.{SERVICE_TYPE}",
                addresses=[socket.inet_aton("127.0.0.1")],
                port=port,
                properties=sign_txt(MdnsRecord(ident.node_id, port), ident),
                server=f"flood{i}.local.",
            )
            await (await zc.async_register_service(info, cooperating_responders=True))
        await node.start()
        await honest.start()

        def watch() -> bool:
            nonlocal peak
            peak = max(peak, len(node.network._dialing))
            refused = node.status()["limits"]["refused"]
            return refused.get("mdns_peers", 0) > 0 and honest.identity.node_id in node.links

        await until(watch, 30, "the flood refused and the honest peer linked", interval=0.01)
        assert len(node.network.mdns.peers) <= limits.mdns_peers
        assert peak <= limits.mdns_dials
        link = node.links[honest.identity.node_id][0]
        assert await link.ping() >= 0
    finally:
        await node.stop()
        await honest.stop()
        await zc.async_close()
        closed.close()
