"""A 256 MiB stream while its route changes: intact, with bounded memory at both ends.

A (this process) streams a 256 MiB file to C (a process) via the relay B (a
process) because A's direct link to C is marked metered; B is killed a third
of the way in, the stream moves to the direct link and resumes from the
acknowledged offset.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import time
from pathlib import Path

import pytest

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import NodeId
from tests.conftest import until
from tests.procs import ProcGroup, free_port, rss_kib, status

pytestmark = pytest.mark.slow
SIZE = 256 << 20


def _rss_kib_self() -> int:
    return rss_kib(os.getpid())


async def test_256mib_stream_survives_a_route_change_with_bounded_memory(tmp_path: Path) -> None:
    src = tmp_path / "big.bin"
    h = hashlib.sha256()
    with src.open("wb") as f:
        for _ in range(SIZE >> 22):
            block = os.urandom(4 << 20)
            h.update(block)
            f.write(block)
    digest = h.hexdigest()
    with ProcGroup(tmp_path) as g:
        c = g.node("C", "--listen", f"ws://127.0.0.1:{free_port()}", "--open", "--network", "wifi", "--unmetered")
        b = g.node(
            "B", "--listen", f"ws://127.0.0.1:{free_port()}", "--open", "--relay", "--peer", c.url,
            "--network", "wifi", "--unmetered",
        )  # fmt: skip
        c_id, b_id = NodeId.parse(c.node_id), NodeId.parse(b.node_id)
        cfg = NodeConfig(
            peers=[b.url, c.url],
            allow=None,
            link=LinkOptions(network_kind="wifi"),
            peer_links={c.url: {"network_kind": "cellular", "metered": True, "cost_per_gb": 2.0}},
            route_tick=0.2,
            link_probe_interval=0,
        )
        a = Node(Identity.generate(), tmp_path / "A", cfg)
        await a.start()
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                cands = a.router.table.candidates(c_id, time.monotonic())
                if any(len(x.path) == 2 and x.path[0].dst == b_id and not x.dead for x in cands):
                    break
                await asyncio.sleep(0.1)
            c_rss0 = rss_kib(c.pid)
            a_rss0 = _rss_kib_self()
            third = asyncio.Event()
            peak = {"c": 0, "a": 0}

            def progress(acked: int, size: int) -> None:
                peak["c"] = max(peak["c"], rss_kib(c.pid))
                peak["a"] = max(peak["a"], _rss_kib_self())
                if acked >= size // 3:
                    third.set()

            send = asyncio.ensure_future(a.send_stream(c_id, src, rate_bps=120e6, progress=progress))
            await asyncio.wait_for(third.wait(), 60)
            b.signal(signal.SIGKILL)
            result = await asyncio.wait_for(send, 120)
            assert result.size == SIZE and result.route_changes >= 1
            assert "metered" not in result.routes[0] and "metered" in result.routes[-1], result.routes
            assert result.resent_bytes <= 8 << 20
            # the receiver hashes a finished stream in the background (for status): give it a moment
            streams = await until(
                lambda: [s for s in status(c.info["state"])["streams"] if s["complete"] and s["sha256"]],
                15,
                "the receiver to hash the finished stream",
                interval=0.5,
            )
            assert streams[0]["size"] == SIZE and streams[0]["sha256"] == digest
            # bounded memory: neither end holds the stream (256 MiB); a window is 8 MiB
            assert peak["c"] - c_rss0 < 48 << 10, (c_rss0, peak)
            assert peak["a"] - a_rss0 < 48 << 10, (a_rss0, peak)
        finally:
            await a.stop()
