"""Reachability by dial-back (NAT issue, item 1): a device learns from its domain whether it can be
dialled and which address the domain sees, never from its own claim."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeagent.exceptions import RemoteQuotaExceeded
from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import DialBack, DialBackReply
from tests.conftest import until
from tests.procs import free_port


@contextlib.asynccontextmanager
async def _domain_and_device(tmp: Path, device_listen: list[str]) -> AsyncIterator[tuple[Node, Node]]:
    url = f"ws://127.0.0.1:{free_port()}"
    domain = Node(Identity.generate(), tmp / "d", NodeConfig(role="domain", listen=[url], allow=None))
    device = Node(Identity.generate(), tmp / "dev", NodeConfig(domain=url, listen=device_listen))
    await domain.start()
    await device.start()
    try:
        yield domain, device
    finally:
        await device.stop()
        await domain.stop()


async def test_a_dialable_device_is_public(tmp_path: Path) -> None:
    async with _domain_and_device(tmp_path, ["ws://127.0.0.1:0"]) as (domain, device):
        reach = await until(
            lambda: device.status()["reachability"] if device.status()["reachability"]["state"] != "unknown" else None,
            10,
        )
        assert reach["state"] == "public" and reach["observed"] == "127.0.0.1" and reach["local"] == "127.0.0.1"
        assert reach["dial_back"][0]["ok"] and reach["checked_by"] == str(domain.identity.node_id)
        assert domain.status()["reachability"] == {"checked": 1, "dialable": 1}
        assert domain.network.dialable(device.identity.node_id) is True


async def test_a_device_nobody_can_dial_is_lan_only(tmp_path: Path) -> None:
    # it listens on 127.0.0.2 only; its link to the domain leaves from 127.0.0.1, where the domain dials back
    async with _domain_and_device(tmp_path, [f"ws://127.0.0.2:{free_port()}"]) as (domain, device):
        reach = await until(
            lambda: device.status()["reachability"] if device.status()["reachability"]["state"] != "unknown" else None,
            10,
        )
        assert reach["state"] == "lan-only" and not reach["dial_back"][0]["ok"]
        assert domain.network.dialable(device.identity.node_id) is False


async def test_a_device_that_does_not_listen_is_lan_only(tmp_path: Path) -> None:
    async with _domain_and_device(tmp_path, []) as (_domain, device):
        reach = await until(
            lambda: device.status()["reachability"] if device.status()["reachability"]["state"] != "unknown" else None,
            10,
        )
        assert reach["state"] == "lan-only" and "does not listen" in reach["why"]


async def test_a_device_cannot_pass_off_another_nodes_port_as_its_own(tmp_path: Path) -> None:
    other = Node(Identity.generate(), tmp_path / "o", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None))
    await other.start()
    try:
        async with _domain_and_device(tmp_path, [f"ws://127.0.0.2:{free_port()}"]) as (domain, device):
            await until(lambda: device.status()["reachability"]["state"] != "unknown", 10)
            device.network._reach_at = 0.0
            domain.network._dialed_back.clear()  # past the rate limit
            reply = await device.request(domain.identity.node_id, DialBack((other.listeners[0].port,)), timeout=10)
            assert isinstance(reply, DialBackReply) and not reply.results[0].ok
            assert "answered" in reply.results[0].error  # the dial reached someone else, not the asker
            assert domain.network.dialable(device.identity.node_id) is False
            with pytest.raises(RemoteQuotaExceeded, match="dial_back"):  # and it may not ask again at once
                await device.request(domain.identity.node_id, DialBack((other.listeners[0].port,)), timeout=10)
    finally:
        await other.stop()


def test_the_payload_source_makes_a_leaf_of_a_node_nobody_can_dial_and_alone_on_its_lan(tmp_path: Path) -> None:
    from edgeagent.payload.service import PayloadService
    from edgeagent.wire import PeerRecord
    from tests.conftest import FakeHost

    host = FakeHost(tmp_path / "src", role="domain")
    svc = PayloadService(host, tmp_path / "payloads")
    natted, public, neighbour, lone = (Identity.generate().node_id for _ in range(4))
    records = {
        natted: PeerRecord(natted, 1, lan_group="203.0.113.0/24"),
        neighbour: PeerRecord(neighbour, 1, lan_group="203.0.113.0/24"),  # the same home as natted
        public: PeerRecord(public, 1, lan_group="198.51.100.0/24"),
        lone: PeerRecord(lone, 1, lan_group="192.0.2.0/24"),
    }
    host.peers.records_by_id = records
    host.peers.found_dialable(public, True)
    host.peers.found_dialable(natted, False)
    host.peers.found_dialable(lone, False)
    assert svc._member(public).relay_ok  # dialable: anyone links to it
    assert svc._member(natted).relay_ok  # not dialable, but its home has another receiver it can feed
    assert not svc._member(lone).relay_ok  # nobody can link to it: a leaf, fed by a relay or the source
    assert svc._member(neighbour).relay_ok  # never checked: as before
