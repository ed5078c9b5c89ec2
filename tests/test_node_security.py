"""Node-level checks: only a domain relays for others; forwarding respects authorisation."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import Envelope, Error, ErrorCode, ObjectMessage


async def _attach(node: Node, ident: Identity) -> Link:
    """A link from ``ident`` to ``node`` over a memory pipe, registered with the node."""
    ta, tb = memory_pipe()
    mine, theirs = await asyncio.gather(
        establish(ta, ident, LinkOptions(), initiator=True),
        establish(tb, node.identity, node.link_options, initiator=False),
    )
    await node._on_link(theirs)
    return mine


async def _reply(link: Link, env: Envelope) -> Envelope:
    await link.send(env)
    async with asyncio.timeout(5):
        while True:
            got = await link.recv()
            if got.reply_to == env.msg_id:
                return got


async def test_an_authorised_peer_cannot_speak_for_another(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "w", NodeConfig(allow={alice.node_id, bob.node_id}))
    try:
        link = await _attach(node, alice)
        honest = await _reply(link, Envelope(ObjectMessage("a", b"x"), alice.node_id))
        assert not isinstance(honest.body, Error)
        forged = await _reply(link, Envelope(ObjectMessage("b", b"y"), bob.node_id))  # alice claims to be bob
        assert isinstance(forged.body, Error) and forged.body.code == ErrorCode.UNAUTHORIZED
        assert "b" not in node.worker.store and node.worker.store.get("a", now=0).owner == alice.node_id
        # the node keeps serving the link
        again = await _reply(link, Envelope(ObjectMessage("c", b"z"), alice.node_id))
        assert not isinstance(again.body, Error)
        await link.close()
    finally:
        await node.stop()


async def test_a_device_does_not_forward(tmp_path: Path) -> None:
    alice, bob = Identity.generate(), Identity.generate()
    node = Node(Identity.generate(), tmp_path / "w", NodeConfig(allow={alice.node_id, bob.node_id}))
    try:
        la = await _attach(node, alice)
        lb = await _attach(node, bob)
        reply = await _reply(la, Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=bob.node_id))
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
        la, lb, le = [await _attach(domain, i) for i in (alice, bob, eve)]
        # alice -> eve: eve is not authorised at the domain, so nothing is forwarded to her
        reply = await _reply(la, Envelope(ObjectMessage("a", b"x"), alice.node_id, destination=eve.node_id))
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
