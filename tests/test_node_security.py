"""Node-level checks: only a domain relays for others; forwarding respects authorisation."""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path
from typing import Any

from edgeagent.identity import Identity, origin_proven, prove_origin
from edgeagent.links.link import Link
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import (
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    JobAdvert,
    ObjectMessage,
    ObjectRequestMessage,
    PubEntry,
    Response,
)
from tests.conftest import ask, attach, until


async def test_an_authorised_peer_cannot_speak_for_another(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "w", NodeConfig(allow={alice.node_id, bob.node_id}))
    try:
        link = await attach(node, alice)
        honest = await ask(link, Envelope(ObjectMessage("a", b"x"), alice.node_id))
        assert not isinstance(honest.body, Error)
        await link.send(Envelope(ObjectMessage("b", b"y"), bob.node_id))  # alice claims to be bob, unproven
        await until(lambda: node.status()["refused"].get("no origin proof") == 1)
        assert "b" not in node.worker.store and node.worker.store.get("a", now=0).owner == alice.node_id
        # the node keeps serving the link
        again = await ask(link, Envelope(ObjectMessage("c", b"z"), alice.node_id))
        assert not isinstance(again.body, Error)
        await link.close()
    finally:
        await node.stop()


async def test_a_device_does_not_forward(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "w", NodeConfig(allow={alice.node_id, bob.node_id}))
    try:
        la = await attach(node, alice)
        lb = await attach(node, bob)
        reply = await ask(la, Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=bob.node_id))
        assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.UNAUTHORIZED
        assert node.routing.forwarded == 0
        await la.close()
        await lb.close()
    finally:
        await node.stop()


async def test_a_domain_forwards_only_between_authorised_devices(tmp_path: Path) -> None:
    alice, bob, eve = Identity.generate(), Identity.generate(), Identity.generate()
    domain = Node(Identity.generate(), tmp_path / "d", NodeConfig(role="domain", allow={alice.node_id, bob.node_id}))
    try:
        la, lb, le = [await attach(domain, i) for i in (alice, bob, eve)]
        # alice -> eve: eve is not authorised at the domain, so nothing is forwarded to her
        reply = await ask(la, Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=eve.node_id))
        assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.UNAUTHORIZED
        # alice -> bob: forwarded; bob sees alice as the source and the domain as the relay
        env = Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=bob.node_id)
        await la.send(env)
        got = await asyncio.wait_for(lb.recv(), 5)
        assert got.source == alice.node_id and got.msg_id == env.msg_id and got.ttl == env.ttl - 1
        assert domain.routing.forwarded == 1
        for link in (la, lb, le):
            await link.close()
    finally:
        await domain.stop()
    # the envelope carries alice's origin proof (her link signed it: it goes through a relay)
    assert got.proof is not None and origin_proven(got)


async def _relay_setup(tmp_path: Path) -> tuple[Node, Identity, Identity, Link]:
    """A device node that allows ``relay`` and ``alice``; ``relay`` is linked to it (alice is not)."""
    relay, alice = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "n", NodeConfig(allow={relay.node_id, alice.node_id}))
    return node, relay, alice, await attach(node, relay)


async def test_a_relay_carries_a_proven_envelope_once_and_cannot_forge_alter_or_replay(tmp_path: Path) -> None:
    node, relay, alice, link = await _relay_setup(tmp_path)
    try:
        me = node.identity.node_id
        honest = prove_origin(Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=me), alice)
        await link.send(honest)
        reply = await asyncio.wait_for(link.recv(), 5)
        assert reply.reply_to == honest.msg_id and not isinstance(reply.body, Error)
        assert reply.destination == alice.node_id and origin_proven(reply)  # the answer is proven too
        assert node.worker.store.get("a", now=0).owner == alice.node_id
        # forged: the relay makes up a message from alice (it cannot sign as her)
        forged = Envelope(ObjectMessage("f", b"y"), alice.node_id, destination=me, proof=bytes(64))
        # altered: alice's proof over a different body
        altered = dataclasses.replace(honest, body=ObjectMessage("g", b"z"), msg_id=honest.msg_id + 1)
        for env in (forged, altered, honest):  # and the honest one replayed
            await link.send(env)
        await until(lambda: sum(node.status()["refused"].values()) >= 3)
        refused = node.status()["refused"]
        assert refused == {"no origin proof": 2, "replayed (relayed twice)": 1}, refused
        assert "f" not in node.worker.store and "g" not in node.worker.store
        # the node still serves the relay itself
        ok = await ask(link, Envelope(ObjectMessage("r", b"1"), relay.node_id))
        assert not isinstance(ok.body, Error)
        await link.close()
    finally:
        await node.stop()


async def test_a_relay_cannot_pass_off_a_forged_domain_message(tmp_path: Path) -> None:
    relay, domain_id = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "n", NodeConfig(allow={relay.node_id}))
    node.peers.domains.add(domain_id.node_id)  # this node's domain (by configuration), not linked now
    seen: list[object] = []

    async def spy(m: Any) -> bool:
        seen.append(m.body)
        return False

    node.intercept(Deliver, spy)
    node.intercept(JobAdvert, spy)
    try:
        link = await attach(node, relay)
        me = node.identity.node_id
        for body in (Deliver("t", (PubEntry(domain_id.node_id, 1, b"forged"),)), JobAdvert("j", "fedavg")):
            await link.send(Envelope(body, domain_id.node_id, destination=me))
        await until(lambda: node.status()["refused"].get("no origin proof") == 2)
        assert seen == []
        await link.close()
    finally:
        await node.stop()


async def test_a_reply_is_taken_only_from_the_node_asked(tmp_path: Path) -> None:
    node, relay, alice, link = await _relay_setup(tmp_path)
    try:
        asked = asyncio.ensure_future(node.request(relay.node_id, ObjectRequestMessage("x"), timeout=3))
        req = await asyncio.wait_for(link.recv(), 5)
        me = node.identity.node_id
        # alice (through the relay, proven) answers a request that was put to the relay: dropped
        fake = prove_origin(req.reply(Response("from alice"), alice.node_id), alice)
        await link.send(fake)
        await until(lambda: node.status()["refused"].get("reply from another node") == 1)
        assert not asked.done()
        await link.send(req.reply(Response("from the relay"), relay.node_id))
        assert await asyncio.wait_for(asked, 5) == Response("from the relay")
        assert me == req.source
        await link.close()
    finally:
        await node.stop()


async def test_the_domain_is_pinned_on_first_link_and_an_impostor_at_its_url_is_refused(tmp_path: Path) -> None:
    from edgeagent.statedir import DOMAIN_PIN
    from tests.procs import free_port

    url = f"ws://127.0.0.1:{free_port()}"
    first = Node(Identity.generate(), tmp_path / "d1", NodeConfig(role="domain", listen=[url], allow=None))
    device = Node(Identity.generate(), tmp_path / "dev", NodeConfig(domain=url))
    await first.start()
    await device.start()
    impostor: Node | None = None
    try:
        await asyncio.wait_for(device.registered.wait(), 10)
        assert (tmp_path / "dev" / DOMAIN_PIN).read_text().split()[0] == str(first.identity.node_id)
        await first.stop()
        await until(lambda: not device.peers.links(first.identity.node_id), what="the domain's link gone")
        # another node takes the domain's address: the device must not take it for its domain
        impostor = Node(Identity.generate(), tmp_path / "d2", NodeConfig(role="domain", listen=[url], allow=None))
        await impostor.start()
        await asyncio.sleep(2.5)  # the device redials (its backoff starts under a second)
        assert not device.peers.links(impostor.identity.node_id)
        assert impostor.identity.node_id not in device.peers.domain_ids
    finally:
        await device.stop()
        if impostor is not None:
            await impostor.stop()
        await first.stop()


async def test_expect_names_the_domain_before_its_first_link(tmp_path: Path) -> None:
    from tests.procs import free_port

    url = f"ws://127.0.0.1:{free_port()}"
    domain = Node(Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=[url], allow=None))
    device = Node(Identity.generate(), tmp_path / "dev", NodeConfig(domain=url, domain_id=Identity.generate().node_id))
    await domain.start()
    await device.start()
    try:
        await asyncio.sleep(1.5)
        assert not device.peers.links(domain.identity.node_id) and not device.registered.is_set()
    finally:
        await device.stop()
        await domain.stop()
