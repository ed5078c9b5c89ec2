"""mDNS advert floods (issue 16): at most ``mdns_peers`` advertised peers kept and at most
``mdns_dials`` dials to them in flight, the rest refused and counted.

Unit tests of the browse -> resolve -> dial path: adverts are fed to the browser's state-change
handler and resolved by a fake lookup, so nothing is sent on any network.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from zeroconf import ServiceStateChange

from edgeagent.discovery import SERVICE_TYPE, MdnsDiscovery, MdnsRecord, sign_txt, verify_txt
from edgeagent.discovery.records import _signed_bytes
from edgeagent.exceptions import DecodeError, LinkError
from edgeagent.identity import Identity
from edgeagent.limits import Limiter, ResourceLimits
from edgeagent.services import netwatch
from edgeagent.services.netwatch import NetworkService
from edgeagent.wire import NodeId
from tests.conftest import FakeHost, until

Found = tuple[Mapping[bytes, bytes | None], list[str]]


class Lan:
    """Signed adverts by name, as a lookup would resolve them."""

    def __init__(self) -> None:
        self.adverts: dict[str, Found] = {}
        self.lookups = 0

    def advertise(self, ident: Identity, *, seq: int = 1, address: str = "10.0.0.9", **txt: str) -> str:
        props = {**sign_txt(MdnsRecord(ident.node_id, 7400, seq=seq), ident), **txt}
        name = f"{ident.node_id}.{SERVICE_TYPE}"
        self.adverts[name] = ({k.encode(): v.encode() for k, v in props.items()}, [address, "fe80::1"])
        return name

    async def lookup(self, name: str) -> Found | None:
        self.lookups += 1
        await asyncio.sleep(0.001)
        return self.adverts.get(name)


def added(mdns: MdnsDiscovery, name: str) -> None:
    mdns._on_change(None, SERVICE_TYPE, name, ServiceStateChange.Added)


class Dials:
    """A dial that holds its slot until ``gate`` opens (or forever), then fails."""

    def __init__(self, *, hang: bool = False) -> None:
        self.gate = asyncio.Event()
        self.hang = hang
        self.in_flight = 0
        self.most = 0
        self.dialled: list[NodeId] = []

    async def __call__(self, url: str, *, expected_peer: NodeId | None = None) -> Any:
        assert expected_peer is not None
        self.dialled.append(expected_peer)
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            if self.hang:
                await asyncio.Event().wait()
            await self.gate.wait()
            await asyncio.sleep(0.001)
        finally:
            self.in_flight -= 1
        raise LinkError(f"nobody at {url}")


def _service(tmp_path: Path, limits: ResourceLimits, dial: Dials) -> tuple[FakeHost, NetworkService, MdnsDiscovery]:
    host = FakeHost(tmp_path / "n")
    host.limiter = Limiter(limits)

    async def no_register(node: NodeId) -> None:
        return None

    async def adopt(link: Any) -> None:
        raise AssertionError("no dial succeeds here")

    svc = NetworkService(
        host,
        probe=None,
        interval=60.0,
        run_conditions=None,
        mdns="loopback",
        mdns_listen_only=False,
        adopt_network=lambda info: None,
        register=no_register,
        next_seq=lambda: 1,
        listen_port=lambda: None,  # not advertising: this node dials every peer it keeps
        linked_or_dialing=lambda node: False,
        dial=dial,
        adopt_link=adopt,
        on_relay_change=lambda: None,
    )
    mdns = svc.make_mdns()  # built, never started: no socket is opened
    svc.mdns = mdns
    return host, svc, mdns


async def test_a_flood_of_200_adverts_keeps_mdns_peers_and_dials_at_most_mdns_dials_at_once(tmp_path: Path) -> None:
    lan, dials = Lan(), Dials()
    host, svc, mdns = _service(tmp_path, ResourceLimits(mdns_peers=50, mdns_dials=4), dials)
    mdns._lookup = lan.lookup
    idents = [Identity.generate() for _ in range(200)]
    for ident in idents:
        added(mdns, lan.advertise(ident))
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert len(mdns.peers) == 50
    assert lan.lookups == 50  # the other 150 adverts were dropped before any lookup
    assert host.limiter.refused["mdns_peers"] == 150
    assert dials.in_flight == 4 and len(svc._dialing) == 4
    assert host.limiter.refused["mdns_dials"] == 46
    assert all(len(p.addresses) == 1 for p in mdns.peers.values())  # IPv4 only
    # as dials end, the peers kept and waiting are dialled, never more than 4 at once
    dials.gate.set()
    await until(lambda: len(dials.dialled) == 50 and not svc._dialing, 5, "every kept peer dialled")
    assert dials.most == 4
    assert sorted(dials.dialled) == sorted(mdns.peers)
    # another advert while full is still dropped; a kept peer's new advert is still taken
    added(mdns, lan.advertise(Identity.generate()))
    assert host.limiter.refused["mdns_peers"] == 151
    kept = next(i for i in idents if i.node_id in mdns.peers)
    added(mdns, lan.advertise(kept, seq=2))
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert mdns.peers[kept.node_id].record.seq == 2
    assert len(mdns.peers) == 50 and host.limiter.refused["mdns_peers"] == 151


async def test_a_hung_dial_gives_its_slot_back_after_the_dial_timeout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(netwatch, "DIAL_TIMEOUT", 0.05)
    lan, dials = Lan(), Dials(hang=True)
    host, svc, mdns = _service(tmp_path, ResourceLimits(mdns_peers=16, mdns_dials=2), dials)
    mdns._lookup = lan.lookup
    for _ in range(6):
        added(mdns, lan.advertise(Identity.generate()))
    await until(lambda: len(dials.dialled) == 6 and not svc._dialing, 5, "every peer dialled in turn")
    assert dials.most == 2 and host.limiter.refused["mdns_dials"] == 4


async def test_an_authorised_peer_displaces_a_stranger_and_is_dialled_first(tmp_path: Path) -> None:
    lan, dials = Lan(), Dials()
    host, svc, mdns = _service(tmp_path, ResourceLimits(mdns_peers=4, mdns_dials=1), dials)
    mdns._lookup = lan.lookup
    strangers = [Identity.generate() for _ in range(4)]
    for ident in strangers:
        added(mdns, lan.advertise(ident))
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert set(mdns.peers) == {i.node_id for i in strangers}
    friend = Identity.generate()
    host.peers.allow.add(friend.node_id)
    added(mdns, lan.advertise(friend))
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert friend.node_id in mdns.peers and len(mdns.peers) == 4
    assert strangers[0].node_id not in mdns.peers  # the stranger seen first made room
    added(mdns, lan.advertise(Identity.generate()))  # a further stranger finds no room
    assert host.limiter.refused["mdns_peers"] == 1
    dials.gate.set()
    await until(lambda: not svc._dialing and not svc._waiting, 5, "the dials")
    assert dials.dialled[1] == friend.node_id  # the first slot that freed went to the friend
    assert strangers[0].node_id not in dials.dialled[1:]  # a forgotten peer is not dialled


async def test_repeated_and_malformed_adverts_cost_no_extra_lookups(tmp_path: Path) -> None:
    lan = Lan()
    limiter = Limiter(ResourceLimits(mdns_peers=8))
    mdns = MdnsDiscovery(Identity.generate(), ["127.0.0.1"], limiter=limiter, lookup=lan.lookup)
    ident = Identity.generate()
    name = lan.advertise(ident)
    for _ in range(100):  # one name announced over and over: one lookup in flight, one more after it
        added(mdns, name)
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert lan.lookups == 2 and list(mdns.peers) == [ident.node_id]
    added(mdns, f"not-a-node-id.{SERVICE_TYPE}")
    assert mdns.ignored == 1 and lan.lookups == 2
    # a TXT value longer than any signer makes is refused unverified
    long_caps = Identity.generate()
    fields = MdnsRecord(long_caps.node_id, 7400, capabilities=tuple(f"c{i}" for i in range(1000))).fields()
    props = {**fields, "sig": base64.b64encode(long_caps.sign(_signed_bytes(fields))).decode()}
    with pytest.raises(DecodeError, match="too long"):
        verify_txt(props)
    name = f"{long_caps.node_id}.{SERVICE_TYPE}"
    lan.adverts[name] = ({k.encode(): v.encode() for k, v in props.items()}, ["10.0.0.9"])
    added(mdns, name)
    await until(lambda: not mdns._resolving, 5, "the lookups")
    assert long_caps.node_id not in mdns.peers and mdns.ignored == 2
