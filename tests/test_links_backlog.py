"""The WebSocket transport bounds what a link queues beyond the frame in flight (SEND_BACKLOG)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from edgeagent.identity import Identity
from edgeagent.links.link import Link
from edgeagent.links.websocket import SEND_BACKLOG, WebSocketTransport, dial, listen


def _lowat(link: Link) -> int:
    transport = link.transport
    assert isinstance(transport, WebSocketTransport)
    sock = transport._ws.transport.get_extra_info("socket")
    return int(sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT))


@pytest.mark.skipif(not hasattr(socket, "TCP_NOTSENT_LOWAT"), reason="this platform has no TCP_NOTSENT_LOWAT")
async def test_both_ends_bound_the_unsent_backlog() -> None:
    server, client = Identity.generate(), Identity.generate()
    accepted: asyncio.Queue[Link] = asyncio.Queue()

    async def on_link(link: Link) -> None:
        await accepted.put(link)

    lst = await listen("ws://127.0.0.1:0", server, on_link)
    try:
        link = await dial(lst.url, client, expected_peer=server.node_id)
        far = await asyncio.wait_for(accepted.get(), 5)
        assert _lowat(link) == SEND_BACKLOG
        assert _lowat(far) == SEND_BACKLOG
        # still a working link: a ping round trip
        assert await link.ping() >= 0
        await link.close()
    finally:
        await lst.close()
