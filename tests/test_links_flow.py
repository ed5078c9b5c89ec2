"""Credit-based flow control: a slow reader bounds its sender even when the transport does not push back."""

from __future__ import annotations

import asyncio

import pytest

from edgeagent.exceptions import EncodeError, LinkClosed
from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.wire import Chunk, Envelope

CHUNK = 64 * 1024


async def _pair(window_a: int, window_b: int) -> tuple[Link, Link, Identity]:
    a, b = Identity.generate(), Identity.generate()
    # a transport that never pushes back: everything the sender writes is buffered
    ta, tb = memory_pipe(capacity=1 << 40)
    la, lb = await asyncio.gather(
        establish(ta, a, LinkOptions(window=window_a, recv_queue=1024), initiator=True),
        establish(tb, b, LinkOptions(window=window_b, recv_queue=1024), initiator=False),
    )
    return la, lb, a


async def _fill(link: Link, ident: Identity, count: int, sent: list[int]) -> None:
    for i in range(count):
        await link.send(Envelope(Chunk(b"p", i, bytes(CHUNK)), ident.node_id))
        sent.append(i)


async def test_slow_reader_holds_the_sender_to_its_window() -> None:
    window = 1 << 20
    la, lb, a = await _pair(window, window)
    sent: list[int] = []
    task = asyncio.create_task(_fill(la, a, 64, sent))  # 4 MiB offered
    await asyncio.sleep(0.3)
    assert not task.done()
    # the receiver read nothing: at most one window of frames went out
    assert len(sent) * CHUNK <= window + CHUNK
    assert la.stats.credit_waits >= 1
    outstanding = la.stats.bytes_sent
    assert outstanding < window + 4 * CHUNK
    # reading returns credit and the sender finishes; everything arrives in order
    got = [(await asyncio.wait_for(lb.recv(), 5)).body for _ in range(64)]
    await asyncio.wait_for(task, 5)
    assert [c.index for c in got] == list(range(64))  # type: ignore[attr-defined]
    await la.close()
    await lb.close()


async def test_peer_without_flow_control_is_not_waited_for() -> None:
    la, lb, a = await _pair(1 << 20, 0)  # b announces window 0: no credit accounting towards b
    sent: list[int] = []
    await asyncio.wait_for(_fill(la, a, 64, sent), 5)
    assert len(sent) == 64 and la.stats.credit_waits == 0
    await la.close()
    await lb.close()


async def test_a_frame_larger_than_the_window_is_refused_at_the_sender() -> None:
    window = 128 * 1024
    la, lb, a = await _pair(window, window)
    big = Envelope(Chunk(b"p", 0, bytes(4 * window)), a.node_id)
    with pytest.raises(EncodeError, match=r"larger than .* flow-control window"):
        await asyncio.wait_for(la.send(big), 5)
    await asyncio.wait_for(la.send(Envelope(Chunk(b"p", 1, b"x"), a.node_id)), 5)  # the link goes on
    assert (await asyncio.wait_for(lb.recv(), 5)).body.index == 1  # type: ignore[attr-defined]
    await la.close()
    await lb.close()


async def test_frames_near_the_window_never_wait_forever_and_pings_pass_a_waiting_sender() -> None:
    # the receiver returns credit in quarter windows, so up to a quarter may stay owed: a frame of
    # 0.9 window sent after a small one waited for a whole window once, forever
    window = 256 * 1024
    la, lb, a = await _pair(window, window)
    for i in range(3):
        await asyncio.wait_for(la.send(Envelope(Chunk(b"p", i, bytes(window // 8)), a.node_id)), 5)
        await asyncio.wait_for(lb.recv(), 5)  # consumed: the first two (1/4) are granted back, 1/8 stays owed
    near = Envelope(Chunk(b"p", 9, bytes(window * 9 // 10 - 200)), a.node_id)
    await asyncio.wait_for(la.send(near), 5)
    assert (await asyncio.wait_for(lb.recv(), 5)).body.index == 9  # type: ignore[attr-defined]
    # a sender waiting for credit does not hold back control traffic
    blocked = asyncio.create_task(_fill(la, a, 32, []))
    await asyncio.sleep(0.2)
    assert not blocked.done()
    assert await asyncio.wait_for(la.ping(), 5) >= 0
    blocked.cancel()
    with pytest.raises((asyncio.CancelledError, LinkClosed)):
        await blocked
    await la.close()
    await lb.close()


async def test_close_wakes_a_sender_waiting_for_credit() -> None:
    from edgeagent.exceptions import LinkClosed

    la, lb, a = await _pair(256 * 1024, 256 * 1024)
    task = asyncio.create_task(_fill(la, a, 100, []))
    await asyncio.sleep(0.2)
    await la.close()
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(task, 5)
    await lb.close()
