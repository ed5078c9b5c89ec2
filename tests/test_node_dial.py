"""Node.ensure_link: concurrent callers share one dial; two nodes dialling each other keep one link."""

from __future__ import annotations

import asyncio
from pathlib import Path

from edgeagent.identity import Identity
from edgeagent.links.link import Link
from edgeagent.node import Node, NodeConfig

COMMON = {"allow": None, "link_probe_interval": 0}


async def _pair(tmp_path: Path) -> tuple[Node, Node]:
    a = Node(Identity.generate(), tmp_path / "a", NodeConfig(listen=["ws://127.0.0.1:0"], **COMMON))
    b = Node(Identity.generate(), tmp_path / "b", NodeConfig(listen=["ws://127.0.0.1:0"], **COMMON))
    await a.start()
    await b.start()
    return a, b


def _open(node: Node, peer: Node) -> list[Link]:
    return [x for x in node.links.get(peer.identity.node_id, []) if not x.closed]


async def test_concurrent_callers_share_one_dial(tmp_path: Path) -> None:
    a, b = await _pair(tmp_path)
    try:
        links = await asyncio.gather(*(a.ensure_link(b.identity.node_id, tuple(b.listen_urls)) for _ in range(5)))
        assert len({id(x) for x in links}) == 1
        await asyncio.sleep(0.3)
        assert len(_open(a, b)) == 1 and len(_open(b, a)) == 1
    finally:
        await a.stop()
        await b.stop()


async def test_crossing_dials_leave_working_links_at_both_ends(tmp_path: Path) -> None:
    for _ in range(3):  # the race goes different ways; every time both ends must keep a working link
        a, b = await _pair(tmp_path)
        try:
            la, lb = await asyncio.gather(
                a.ensure_link(b.identity.node_id, tuple(b.listen_urls)),
                b.ensure_link(a.identity.node_id, tuple(a.listen_urls)),
            )
            await asyncio.sleep(0.3)
            assert not la.closed and not lb.closed  # nothing is closed under its callers
            assert 1 <= len(_open(a, b)) <= 2 and len(_open(a, b)) == len(_open(b, a))
            for x in [*_open(a, b), *_open(b, a)]:
                assert await x.ping() >= 0
        finally:
            await a.stop()
            await b.stop()
        tmp_path = tmp_path / "again"
