"""Pub-sub limits (issue 16): topics per publisher at the home, and retention by time.

An in-process domain Node is the topics' home; publishers and subscribers are bare links to it
(the publisher is the source NodeId of the Publish), so the test sees every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from edgeagent.identity import Identity
from edgeagent.limits import ResourceLimits
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import Deliver, Envelope, Error, ErrorCode, Message, PubAck, Publish, Response, Subscribe
from tests.conftest import until


@dataclass
class _Peer:
    """A bare link to the home and everything the home sent on it."""

    ident: Identity
    link: Link
    home: Node
    got: list[Envelope] = field(default_factory=list)
    reader: asyncio.Task[None] | None = None

    async def send(self, body: Message) -> Envelope:
        env = Envelope(body, self.ident.node_id, destination=self.home.node_id)
        await self.link.send(env)
        return env

    def reply_to(self, env: Envelope) -> Envelope | None:
        return next((g for g in self.got if g.reply_to == env.msg_id), None)

    def acked(self, topic: str) -> int:
        return max((g.body.seq for g in self.got if isinstance(g.body, PubAck) and g.body.topic == topic), default=0)

    def delivered(self, topic: str) -> list[int]:
        return [
            e.seq for g in self.got if isinstance(g.body, Deliver) and g.body.topic == topic for e in g.body.entries
        ]


async def _peer(home: Node, ident: Identity) -> _Peer:
    ta, tb = memory_pipe()
    mine, theirs = await asyncio.gather(
        establish(ta, ident, LinkOptions(), initiator=True),
        establish(tb, home.identity, home.link_options, initiator=False),
    )
    await home._on_link(theirs)
    peer = _Peer(ident, mine, home)

    async def read() -> None:
        with contextlib.suppress(Exception):
            async for env in mine:
                peer.got.append(env)

    peer.reader = asyncio.ensure_future(read())
    return peer


@contextlib.asynccontextmanager
async def _home(tmp: Path, limits: ResourceLimits, n: int) -> AsyncIterator[tuple[Node, list[_Peer]]]:
    ids = [Identity.generate() for _ in range(n)]
    cfg = NodeConfig(role="domain", allow={i.node_id for i in ids}, resources=limits)
    home = Node(Identity.generate(), tmp / "home", cfg)
    peers: list[_Peer] = []
    try:
        for i in ids:
            peers.append(await _peer(home, i))
        yield home, peers
    finally:
        for p in peers:
            if p.reader is not None:
                p.reader.cancel()
            await p.link.close()
        home.pubsub.close()
        await home.stop()


async def test_a_topic_flood_from_one_publisher_is_refused_past_the_cap_while_another_publishes(
    tmp_path: Path,
) -> None:
    async with _home(tmp_path, ResourceLimits(topics_per_publisher=3), 2) as (home, (alice, bob)):
        for n in range(3):
            await alice.send(Publish(f"a{n}", 1, (n,)))
        await until(lambda: all(alice.acked(f"a{n}") == 1 for n in range(3)), what="alice's three topics acked")
        flood = [await alice.send(Publish(f"flood{n}", 1, ("x",))) for n in range(5)]
        await until(lambda: all(alice.reply_to(e) for e in flood), what="an answer to every flooding Publish")
        for env in flood:
            reply = alice.reply_to(env)
            assert reply is not None and isinstance(reply.body, Error)
            assert reply.body.code == ErrorCode.QUOTA and "topics_per_publisher" in reply.body.reason
        assert not any(alice.acked(f"flood{n}") for n in range(5))
        assert not any(f"flood{n}" in home.pubsub.topics for n in range(5))
        assert home.limiter.refused["topics_per_publisher"] == 5
        # the cap is on creating topics: alice still publishes on hers
        await alice.send(Publish("a0", 2, ("again",)))
        await until(lambda: alice.acked("a0") == 2, what="alice's publish on an existing topic acked")
        # and another publisher is not held back: bob creates his own topic and publishes on alice's
        await bob.send(Publish("b0", 1, ("hello",)))
        await bob.send(Publish("a1", 1, ("hi",)))
        await until(lambda: bob.acked("b0") == 1 and bob.acked("a1") == 1, what="bob's publishes acked")
        assert home.pubsub.topics["b0"].published == 1 and home.pubsub.topics["a1"].published == 2
        # a Subscribe that would create a topic counts against the same cap
        sub = await alice.send(Subscribe("flood-sub"))
        await until(lambda: alice.reply_to(sub), what="the answer to alice's Subscribe")
        reply = alice.reply_to(sub)
        assert reply is not None and isinstance(reply.body, Error) and reply.body.code == ErrorCode.QUOTA
        assert "flood-sub" not in home.pubsub.topics


async def test_retention_is_trimmed_by_time_without_further_publishes(tmp_path: Path) -> None:
    limits = ResourceLimits(retention=0.3, topics_per_publisher=1)
    async with _home(tmp_path, limits, 2) as (home, (alice, bob)):
        sub = await bob.send(Subscribe("t"))
        await until(lambda: bob.reply_to(sub), what="bob subscribed")
        reply = bob.reply_to(sub)
        assert reply is not None and isinstance(reply.body, Response)
        await alice.send(Publish("t", 1, ("one", "two")))
        await alice.send(Publish("gone", 1, ("nobody listens",)))
        await until(lambda: bob.delivered("t") == [1, 2], what="bob got both messages")
        assert len(home.pubsub.topics["t"].retained) == 2
        # nothing more is published: the home trims by age on its own
        await until(lambda: not home.pubsub.topics["t"].retained, timeout=3.0, what="retention trimmed by time")
        # a topic with nothing retained and no subscriber is forgotten, which frees its creator's quota
        await until(lambda: "gone" not in home.pubsub.topics, what="the unused topic forgotten")
        assert home.pubsub.status()["hosted"]["t"]["retained"] == 0
        # a subscriber coming back from before the first message is replayed nothing: it expired
        again = await bob.send(Subscribe("t", (alice.ident.node_id,), (0,)))
        await until(lambda: bob.reply_to(again), what="bob subscribed again")
        await asyncio.sleep(0.3)
        assert bob.delivered("t") == [1, 2]
        # alice's quota (1 topic) was freed when "gone" was forgotten: she may create a new one
        await alice.send(Publish("new", 1, ("fresh",)))
        await until(lambda: alice.acked("new") == 1, what="alice's new topic acked")
        assert home.limiter.refused["topics_per_publisher"] == 0
