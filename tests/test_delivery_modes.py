"""Delivery modes in one process: open-ended streams, large objects as streams, pub-sub semantics, mode choice."""

from __future__ import annotations

import asyncio
import hashlib
import os
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.client import Client
from edgeagent.exceptions import RemoteError
from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig
from edgeagent.routing import STREAM_THRESHOLD, choose_mode
from edgeagent.wire import ErrorCode, PubEntry, StreamedObject, Tensor

COMMON: dict[str, Any] = {"allow": None, "link_probe_interval": 0}


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Node, Node]]:
    c = Node(Identity.generate(), tmp_path / "c", NodeConfig(listen=["ws://127.0.0.1:0"], **COMMON))
    await c.start()
    a = Node(Identity.generate(), tmp_path / "a", NodeConfig(peers=[c.listen_urls[0]], **COMMON))
    await a.start()
    async with asyncio.timeout(10):
        while c.identity.node_id not in a.links:
            await asyncio.sleep(0.02)
    try:
        yield a, c
    finally:
        await a.stop()
        await c.stop()


def test_choose_mode() -> None:
    assert choose_mode(receivers=1, size=10, blocking=True)[0] == "request"
    assert choose_mode(receivers=1, size=10, blocking=False)[0] == "message"
    assert choose_mode(receivers=1, size=STREAM_THRESHOLD, blocking=True)[0] == "stream"
    assert choose_mode(receivers=5, size=10, blocking=False)[0] == "pubsub"
    mode, why = choose_mode(receivers=5, size=STREAM_THRESHOLD, blocking=False)
    assert mode == "payload-tree" and "tree" in why


async def test_open_ended_and_sized_streams_arrive_intact(pair: tuple[Node, Node]) -> None:
    a, c = pair
    cid = c.identity.node_id
    h = hashlib.sha256()
    async with a.open_stream(cid, name="open.bin", window=2 << 20) as s:
        for _ in range(12):
            chunk = os.urandom(700_000)
            h.update(chunk)
            await s.write(chunk)
    assert s.result is not None and s.result.size == 12 * 700_000
    async with a.open_stream(cid, name="empty") as e:
        pass
    assert e.result is not None and e.result.size == 0
    r0 = await a.send_stream(cid, b"", name="nothing")
    assert r0.size == 0
    async with asyncio.timeout(10):  # the digest is computed off the event loop after completion
        while True:
            done = {st["size"]: st for st in c.status()["streams"] if st["complete"]}
            if done.get(12 * 700_000, {}).get("sha256"):
                break
            await asyncio.sleep(0.05)
    assert done[12 * 700_000]["sha256"] == h.hexdigest()
    assert 0 in done
    with pytest.raises(Exception, match="closed"):
        await s.write(b"late")


async def test_large_object_goes_as_a_stream(pair: tuple[Node, Node]) -> None:
    a, c = pair
    client = Client(a, c.identity.node_id, timeout=30)
    n = (STREAM_THRESHOLD // 4) + 1000
    t = Tensor("float32", (n,), struct.pack(f"<{n}f", *range(n)))
    before = a.routing.mode_counts["stream"]
    ptr = await client.send(t, obj_id="big")
    assert a.routing.mode_counts["stream"] == before + 1
    got = await ptr.get(keep=True)
    assert isinstance(got, Tensor) and got.shape == (n,) and got.data == t.data
    small = await client.send(b"tiny", obj_id="small")
    assert await small.get() == b"tiny" and a.routing.mode_counts["request"] >= 1
    # raw bytes above the threshold too; the stream's file is gone once stored
    blob = os.urandom(STREAM_THRESHOLD + 1)
    ptr2 = await client.send(blob, obj_id="blob")
    assert await ptr2.get() == blob
    assert not [p for p in (c.state_dir / "streams").iterdir() if p.name.startswith("object-")]
    # a StreamedObject naming a stream that never came is refused; the node keeps serving
    with pytest.raises(RemoteError) as err:
        await client.call(StreamedObject(b"\x00" * 16, "ghost"))
    assert err.value.code == ErrorCode.NOT_FOUND
    assert await (await client.send(b"x", obj_id="after")).get() == b"x"


async def test_pubsub_in_process_order_dedupe_resume_and_slow(tmp_path: Path) -> None:
    d = Node(Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **COMMON))
    await d.start()
    nodes = []
    try:
        for i in range(3):
            n = Node(Identity.generate(), tmp_path / f"n{i}", NodeConfig(domain=d.listen_urls[0], **COMMON))
            await n.start()
            nodes.append(n)
        async with asyncio.timeout(10):
            for n in nodes:
                await n.registered.wait()
        pub, fast, slow = nodes
        async with fast.subscribe("t") as fs, slow.subscribe("t", maxsize=10) as ss:
            await asyncio.sleep(0.2)
            for k in range(300):
                await pub.publish("t", {"k": k})
            got = [await asyncio.wait_for(fs.get(), 10) for _ in range(300)]
            assert [m.seq for m in got] == list(range(1, 301)) and got[0].value == {"k": 0}
            assert all(m.publisher == pub.identity.node_id for m in got)
            await asyncio.sleep(0.3)
            # the slow subscriber's application queue is bounded and pushes back (nothing is dropped):
            # reading slowly, it still gets every message once, in order
            assert ss.queue.qsize() == 10
            slow_seqs = []
            for _ in range(300):
                slow_seqs.append((await asyncio.wait_for(ss.get(), 10)).seq)
                if len(slow_seqs) % 50 == 0:
                    await asyncio.sleep(0.01)
            assert slow_seqs == list(range(1, 301)) and ss.dropped == 0
            # a duplicate delivery (as after a resend) is dropped, not shown twice
            dup = PubEntry(pub.identity.node_id, 300, {"k": 299}, 0)
            await fast.pubsub.on_entries("t", [dup])
            assert fs.queue.empty() and fast.pubsub.duplicates >= 1
            # a gap is held back and filled by a replay from the home's retention
            entries = [PubEntry(pub.identity.node_id, s, {"k": s - 1}, 0) for s in (302, 303)]
            await fast.pubsub.on_entries("t", entries)
            assert fs.queue.empty()  # 301 is missing: nothing delivered yet
        # resume: a subscriber that was away gets what it missed from retention
        async with fast.subscribe("t") as fs2:
            await asyncio.sleep(0.2)
            for k in range(300, 320):
                await pub.publish("t", {"k": k})
            seqs = [(await asyncio.wait_for(fs2.get(), 10)).seq for _ in range(20)]
            assert seqs == list(range(301, 321))
        hosted = d.status()["pubsub"]["hosted"]["t"]
        assert hosted["published"] == 320 and hosted["retained"] == 320
    finally:
        for n in nodes:
            await n.stop()
        await d.stop()
