"""The domain registry: devices register signed records on link-up and get peer lists with LAN hints."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from edgeagent.exceptions import RemoteError
from edgeagent.identity import Identity, sign_struct, verify_struct
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import PeerRecord

DOMAIN = NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], allow=None)


async def test_devices_register_and_learn_each_other_without_mdns(tmp_path: Path) -> None:
    domain = Node(Identity.generate(), tmp_path / "d", DOMAIN)
    await domain.start()
    devices: list[Node] = []
    try:
        url = domain.listen_urls[0]
        for name in ("a", "b", "c"):
            node = Node(Identity.generate(), tmp_path / name, NodeConfig(domain=url, listen=["ws://127.0.0.1:0"]))
            await node.start()
            devices.append(node)
        for node in devices:
            await asyncio.wait_for(node.registered.wait(), 10)
        assert set(domain.registry.records) == {n.identity.node_id for n in devices}
        rec = domain.registry.records[devices[0].identity.node_id]
        assert rec.lan_group == "127.0.0.0/24"  # set by the domain from where it sees the device
        assert rec.addresses == tuple(devices[0].listen_urls)
        verify_struct(rec, rec.node_id)  # still verifies: lan_group is outside the signature
        # re-registering gives the full list to everyone
        for node in devices:
            peers = await node.registry.register(domain.identity.node_id)
            assert {p.node_id for p in peers} == {n.identity.node_id for n in devices} - {node.identity.node_id}
            assert all(p.lan_group == "127.0.0.0/24" for p in peers)
    finally:
        for node in devices:
            await node.stop()
        await domain.stop()


async def test_registry_refuses_a_record_for_another_node(tmp_path: Path) -> None:
    domain = Node(Identity.generate(), tmp_path / "d", DOMAIN)
    await domain.start()
    device = Node(Identity.generate(), tmp_path / "a", NodeConfig(domain=domain.listen_urls[0]))
    await device.start()
    try:
        await asyncio.wait_for(device.registered.wait(), 10)
        other = Identity.generate()
        stolen = sign_struct(PeerRecord(other.node_id, 1), other)  # validly signed, but not the sender's
        with pytest.raises(RemoteError, match="only register itself"):
            await device.request(domain.identity.node_id, stolen)
        assert other.node_id not in domain.registry.records
        seq = domain.registry.records[device.identity.node_id].seq
        assert device.registry.own_record().seq > seq  # sequence numbers only grow
    finally:
        await device.stop()
        await domain.stop()


def test_static_peers_from_the_config_file(tmp_path: Path) -> None:
    """``[discovery] peers`` links a node to its static peers with mDNS off (as phones need)."""
    from .procs import ProcGroup, status, wait_for

    with ProcGroup(tmp_path) as procs:
        a = procs.node("a", "--listen", "ws://127.0.0.1:0", "--open")
        cfg = tmp_path / "b.toml"
        cfg.write_text(f'[discovery]\npeers = ["{a.url}"]\n')
        b = procs.node("b", "--config", str(cfg))
        wait_for(
            lambda: any(ln["peer"] == a.node_id for ln in status(b.info["state"])["links"]) or None,
            15,
            what="b linked to its static peer",
        )
