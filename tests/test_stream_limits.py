"""Stream limits (issue 16): streams in progress per peer and on the node, and the idle timeout.

In-process Nodes joined by memory pipes: senders are real Nodes (their StreamService raises what
the receiver answered), or a bare link when the test must send frames by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from edgeagent import stream as stream_mod
from edgeagent.exceptions import RemoteQuotaExceeded
from edgeagent.identity import Identity
from edgeagent.limits import ResourceLimits
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.node import Node, NodeConfig
from edgeagent.stream import StreamWriter
from edgeagent.wire import Envelope, NodeId, StreamAck, StreamData
from tests.conftest import attach, until


async def _join(a: Node, b: Node) -> None:
    """A link between two in-process nodes over a memory pipe, registered with both."""
    ta, tb = memory_pipe()
    la, lb = await asyncio.gather(
        establish(ta, a.identity, a.link_options, initiator=True),
        establish(tb, b.identity, b.link_options, initiator=False),
    )
    await a._on_link(la)
    await b._on_link(lb)


@contextlib.asynccontextmanager
async def _nodes(tmp: Path, limits: ResourceLimits, senders: int) -> AsyncIterator[tuple[Node, list[Node]]]:
    """A receiver with ``limits`` and ``senders`` sender nodes, each linked to it."""
    ids = [Identity.generate() for _ in range(senders)]
    rx_id = Identity.generate()
    rx = Node(rx_id, tmp / "rx", NodeConfig(allow={i.node_id for i in ids}, resources=limits))
    txs = [Node(i, tmp / f"tx{n}", NodeConfig(allow={rx_id.node_id})) for n, i in enumerate(ids)]
    try:
        for tx in txs:
            await _join(tx, rx)
        yield rx, txs
    finally:
        for node in (*txs, rx):
            node.streams.close()
            await node.stop()


async def _open(tx: Node, rx: Node, name: str) -> StreamWriter:
    """An open-ended stream from ``tx`` to ``rx`` that has sent a few bytes and then stays silent."""
    w = tx.streams.open(rx.node_id, name=name)
    await w.__aenter__()
    await w.write(b"x" * 10)
    return w


def _held(rx: Node, tx: Node) -> int:
    return sum(1 for (src, _), s in rx.streams.inbound.items() if src == tx.node_id and not s.complete)


async def _refusal(w: StreamWriter) -> BaseException:
    assert w.task is not None
    with pytest.raises(RemoteQuotaExceeded) as err:
        await asyncio.wait_for(w.task, 5)
    return err.value


async def _cancel(*writers: StreamWriter) -> None:
    for w in writers:
        if w.task is not None:
            w.task.cancel()
            with contextlib.suppress(BaseException):
                await w.task


async def test_one_peer_past_streams_per_peer_is_refused_and_another_peer_still_streams(tmp_path: Path) -> None:
    limits = ResourceLimits(streams_per_peer=2, stream_idle=60.0)
    async with _nodes(tmp_path, limits, 2) as (rx, (alice, bob)):
        held = [await _open(alice, rx, f"a{i}") for i in range(2)]
        await until(lambda: _held(rx, alice) == 2, what="alice's two idle streams held")
        third = await _open(alice, rx, "a2")
        err = await _refusal(third)
        assert "limit streams_per_peer" in str(err)
        assert rx.limiter.refused["streams_per_peer"] == 1
        assert rx.limiter.to_json()["refused"]["streams_per_peer"] == 1
        assert _held(rx, alice) == 2
        # bob is not held back by alice's streams: his stream is accepted and finishes
        result = await asyncio.wait_for(bob.streams.send(rx.node_id, b"y" * 5000, name="b.bin"), 5)
        assert result.size == 5000
        assert (rx.state_dir / "streams" / "b.bin").read_bytes() == b"y" * 5000
        await _cancel(*held)


async def test_the_node_wide_cap_is_the_system_scope(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream_mod, "MAX_INBOUND", 2)
    async with _nodes(tmp_path, ResourceLimits(streams_per_peer=4, stream_idle=60.0), 2) as (rx, (alice, bob)):
        held = [await _open(alice, rx, f"a{i}") for i in range(2)]
        await until(lambda: _held(rx, alice) == 2, what="alice's two idle streams held")
        err = await _refusal(await _open(bob, rx, "b0"))
        assert "limit streams_total" in str(err)
        assert rx.limiter.refused["streams_total"] == 1 and not rx.limiter.refused["streams_per_peer"]
        await _cancel(*held)


async def test_an_idle_stream_is_dropped_its_file_removed_and_its_slot_freed(tmp_path: Path) -> None:
    limits = ResourceLimits(streams_per_peer=1, stream_idle=0.3)
    async with _nodes(tmp_path, limits, 1) as (rx, (alice,)):
        idle = await _open(alice, rx, "idle")
        await until(lambda: _held(rx, alice) == 1, what="the stream held")
        (ins,) = rx.streams.inbound.values()
        assert ins.part.exists()
        await until(lambda: _held(rx, alice) == 0, timeout=3.0, what="the idle stream dropped")
        assert not ins.part.exists() and ins.fd is None
        assert rx.limiter.refused["stream_idle"] == 1
        # the sender is told at once, and again if it writes
        err = await _refusal(idle)
        assert "limit stream_idle" in str(err) and "dropped" in str(err)
        with pytest.raises(RemoteQuotaExceeded):
            await idle.write(b"more")
        # the slot is free: a new stream from the same peer (cap 1) is accepted and completes
        async with alice.streams.open(rx.node_id, name="next.bin") as w:
            await w.write(b"z" * 1000)
        assert w.result is not None and w.result.size == 1000
        assert (rx.state_dir / "streams" / "next.bin").read_bytes() == b"z" * 1000


async def test_a_sender_coming_back_to_a_dropped_stream_gets_a_clear_error(tmp_path: Path) -> None:
    carol = Identity.generate()
    limits = ResourceLimits(streams_per_peer=1, stream_idle=0.3)
    rx = Node(Identity.generate(), tmp_path / "rx", NodeConfig(allow={carol.node_id}, resources=limits))
    acks: list[StreamAck] = []

    async def read(link: Link) -> None:
        with contextlib.suppress(Exception):
            async for env in link:
                if isinstance(env.body, StreamAck):
                    acks.append(env.body)

    try:
        link = await attach(rx, carol)
        reader = asyncio.ensure_future(read(link))
        sid = secrets.token_bytes(16)
        me: NodeId = carol.node_id
        await link.send(Envelope(StreamData(sid, 0, 100, "c.bin", False, b"abc"), me, destination=rx.node_id))
        await until(lambda: rx.streams.inbound, what="the stream opened")
        await until(lambda: not rx.streams.inbound, timeout=3.0, what="the idle stream dropped")
        await until(lambda: acks, what="the drop notice")
        assert acks[0].stream_id == sid and "stream_idle" in acks[0].error
        # it comes back with the next bytes: told why, not "unknown stream"
        await link.send(Envelope(StreamData(sid, 3, 100, "", False, b"def"), me, destination=rx.node_id))
        await until(lambda: len(acks) >= 2, what="the answer to the late frame")
        assert "stream_idle" in acks[1].error and "dropped" in acks[1].error and "unknown" not in acks[1].error
        assert not rx.streams.inbound and not list((rx.state_dir / "streams").glob(".*.part"))
        reader.cancel()
        await link.close()
    finally:
        await rx.stop()
