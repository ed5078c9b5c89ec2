"""Resource limits on links: links per peer and in total, the pre-authorisation frame cap, and
that empty records are no sign of life (trust issue)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import pytest

from edgeagent.identity import Identity
from edgeagent.limits import ResourceLimits
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import Envelope, Error, ErrorCode, ObjectMessage, ObjectRequestMessage, Response
from tests.conftest import ask, attach, until


async def _node(tmp_path: Path, allow: set[Identity], **limits: int) -> Node:
    cfg = NodeConfig(allow={i.node_id for i in allow}, resources=ResourceLimits(**limits))
    return Node(Identity.generate(), tmp_path / "n", cfg)


async def test_links_per_peer_are_capped_and_others_still_link(tmp_path: Path) -> None:
    flood, honest = Identity.generate(), Identity.generate()
    node = await _node(tmp_path, {flood, honest}, links_per_peer=3)
    links: list[Link] = []
    try:
        for _ in range(6):
            links.append(await attach(node, flood))
        await until(lambda: sum(1 for x in links if x.closed) == 3, what="three links closed")
        assert len([x for x in node.links[flood.node_id] if not x.closed]) == 3
        assert node.status()["limits"]["refused"] == {"links_per_peer": 3}
        closed = next(x for x in links if x.closed)
        assert "links_per_peer" in str(closed.close_error)  # the peer is told which limit
        ok = await attach(node, honest)
        reply = await ask(ok, Envelope(ObjectMessage("a", b"x"), honest.node_id))
        assert isinstance(reply.body, Response)
        links.append(ok)
    finally:
        for x in links:
            await x.close()
        await node.stop()


async def test_links_total_are_capped_and_an_authorised_peer_takes_a_strangers_place(tmp_path: Path) -> None:
    honest = Identity.generate()
    node = await _node(tmp_path, {honest}, links_total=4)
    links: list[Link] = []
    try:
        for _ in range(6):  # six strangers: four get in, two are refused
            links.append(await attach(node, Identity.generate()))
        await until(lambda: sum(1 for x in links if x.closed) == 2, what="two strangers refused")
        ok = await attach(node, honest)  # the node is full, but an authorised peer still links
        links.append(ok)
        reply = await ask(ok, Envelope(ObjectMessage("a", b"x"), honest.node_id))
        assert isinstance(reply.body, Response)
        await until(lambda: sum(1 for x in links if x.closed) == 3, what="a stranger making room")
        assert len([x for x in node.peers.every_link() if not x.closed]) == 4
        assert node.status()["limits"]["refused"]["links_total"] == 3
    finally:
        for x in links:
            await x.close()
        await node.stop()


async def test_a_stranger_cannot_make_the_node_buffer_a_large_frame(tmp_path: Path) -> None:
    stranger, honest = Identity.generate(), Identity.generate()
    node = await _node(tmp_path, {honest}, preauth_frame_bytes=16 * 1024)
    try:
        bad = await attach(node, stranger)
        # a PeerRecord-sized frame would pass; 100 KiB is dropped unread, never buffered whole
        await bad.send(Envelope(ObjectMessage("big", bytes(100 * 1024)), stranger.node_id))
        told = await asyncio.wait_for(bad.recv(), 5)
        assert isinstance(told.body, Error) and told.body.code == ErrorCode.QUOTA
        assert "preauth_frame_bytes" in told.body.reason
        assert "big" not in node.worker.store
        assert node.status()["limits"]["refused"] == {"preauth_frame_bytes": 1}
        assert not bad.closed  # the link goes on: what a stranger may send still arrives
        pong_ms = await asyncio.wait_for(bad.ping(), 5)
        assert pong_ms >= 0
        ok = await attach(node, honest)  # an authorised peer's frames may be large
        reply = await ask(ok, Envelope(ObjectMessage("big", bytes(100 * 1024)), honest.node_id))
        assert isinstance(reply.body, Response)
        got = await ask(ok, Envelope(ObjectRequestMessage("big", keep=True), honest.node_id))
        assert not isinstance(got.body, Error)
        await ok.close()
    finally:
        await node.stop()


async def _silent_peer() -> tuple[Any, Link]:
    """A plaintext link whose one side goes silent (it answers no ping; its transport stays open, for
    the test to write raw records on); returns (that raw transport, the other side's link)."""
    a, b = Identity.generate(), Identity.generate()
    ta, tb = memory_pipe()
    opts = LinkOptions(insecure=True, keepalive=0.2, dead_after=0.6)
    la, lb = await asyncio.gather(
        establish(ta, a, opts, initiator=True),
        establish(tb, b, opts, initiator=False),
    )
    for task in la._tasks:
        task.cancel()
    return ta, lb


async def test_empty_records_do_not_keep_a_silent_link_alive() -> None:
    ta, lb = await _silent_peer()
    try:
        for _ in range(20):  # 2 s of empty records: a record header with no bytes and no FIN
            if lb.closed:
                break
            with contextlib.suppress(Exception):
                await ta.send(b"\x00\x00\x00")
            await asyncio.sleep(0.1)
        assert lb.closed, "empty records kept a link alive past dead_after"
        assert "dead" in str(lb.close_error)
    finally:
        await lb.close()
        with contextlib.suppress(Exception):
            await ta.close()


@pytest.mark.parametrize("chunks", [8])
async def test_a_slow_large_frame_is_a_sign_of_life(chunks: int) -> None:
    ta, lb = await _silent_peer()
    try:
        # one frame's records trickle in over 1.6 s (longer than dead_after): the link stays up
        piece = b"\x00" + (1000).to_bytes(2, "big") + bytes(1000)
        for _ in range(chunks):
            await ta.send(piece)
            await asyncio.sleep(0.2)
        assert not lb.closed
    finally:
        await lb.close()
        with contextlib.suppress(Exception):
            await ta.close()
