"""Routes between real processes: a small request goes direct, bulk avoids the metered link, failover loses nothing.

A runs in this process (so the test can read its route table); B (a relay) and
C (the destination) are ``edgeagent run`` processes on loopback. A's link to C
is marked cellular and metered (as if dialled over a phone's mobile data); its
link to B and B's link to C are Wi-Fi.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import time
from pathlib import Path

import pytest

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.node import Node, NodeConfig
from edgeagent.routing import Traits
from edgeagent.wire import NodeId, ObjectMessage, Response
from tests.conftest import until as _until
from tests.procs import ProcGroup, cli, free_port, status

pytestmark = pytest.mark.slow


async def test_request_direct_bulk_via_relay_then_failover(tmp_path: Path) -> None:
    with ProcGroup(tmp_path) as g:
        c = g.node("C", "--listen", f"ws://127.0.0.1:{free_port()}", "--open", "--network", "wifi", "--unmetered")
        b = g.node(
            "B", "--listen", f"ws://127.0.0.1:{free_port()}", "--open", "--relay", "--peer", c.url,
            "--network", "wifi", "--unmetered",
        )  # fmt: skip
        c_id, b_id = NodeId.parse(c.node_id), NodeId.parse(b.node_id)
        cellular = {"network_kind": "cellular", "metered": True, "cost_per_gb": 2.0}
        cfg = NodeConfig(
            peers=[b.url, c.url],
            allow=None,
            link=LinkOptions(network_kind="wifi"),
            peer_links={c.url: cellular},
            route_tick=0.2,
            link_probe_interval=0,
        )
        a = Node(Identity.generate(), tmp_path / "A", cfg)
        await a.start()
        try:
            table = a.router.table

            def both_routes() -> bool:
                cands = table.candidates(c_id, time.monotonic())
                return any(len(x.path) == 1 for x in cands) and any(
                    len(x.path) == 2 and x.path[0].dst == b_id and not x.dead for x in cands
                )

            await _until(both_routes, 15, "A to know C directly and via B")
            await _until(lambda: all(h.rtt_ms is not None for h in table.local_hops()), 10, "measured RTTs")
            # One RTT sample on a busy host can be a scheduling spike several times the loopback RTT;
            # average 16 per link (the EWMA weighs the first samples equally) before comparing routes.
            for links in list(a.links.values()):
                for link in links:
                    for _ in range(16 - link.stats.rtt_samples):
                        await link.ping(timeout=5.0)
            await asyncio.sleep(0.5)  # a route tick folds the link figures into the table

            # a small request: lowest latency -> the direct link (measured RTT beats two hops)
            choice = a.router.select(c_id, Traits("request"), time.monotonic())
            assert choice is not None and len(choice.candidate.path) == 1, choice
            assert "latency" in choice.reason
            before = dict(a.routing.route_counts)
            reply = await a.request(c_id, ObjectMessage("small", b"x" * 100), timeout=10)
            assert isinstance(reply, Response)
            assert a.routing.route_counts["request:direct"] == before.get("request:direct", 0) + 1

            # bulk: the metered direct link is excluded while the Wi-Fi route via B exists
            bulk = a.router.select(c_id, Traits("stream", 32 << 20), time.monotonic())
            assert bulk is not None and [h.dst for h in bulk.candidate.path] == [b_id, c_id], bulk
            assert "metered" in bulk.reason

            data = os.urandom(32 << 20)
            progressed = asyncio.Event()

            def progress(acked: int, size: int) -> None:
                if acked >= size // 4:
                    progressed.set()

            send = asyncio.ensure_future(a.send_stream(c_id, data, name="model.bin", rate_bps=12e6, progress=progress))
            await asyncio.wait_for(progressed.wait(), 20)
            b_forwarded = status(b.info["state"])["routing"]["forwarded"]
            assert b_forwarded > 0
            b.signal(signal.SIGKILL)  # the relay dies mid-stream
            result = await asyncio.wait_for(send, 60)

            assert result.route_changes >= 1, result
            assert "metered" in result.routes[-1] and "cellular" in result.routes[-1], result.routes
            assert result.resent_bytes <= 8 << 20  # at most one window goes again
            digest = hashlib.sha256(data).hexdigest()

            def stored() -> bool:
                return any(s["complete"] and s["sha256"] == digest for s in status(c.info["state"])["streams"])

            await _until(stored, 15, "C to hold the whole stream")
            path = next(s["path"] for s in status(c.info["state"])["streams"] if s["sha256"] == digest)
            assert hashlib.sha256(Path(path).read_bytes()).hexdigest() == digest  # noqa: ASYNC240

            # `edgeagent routes` on C: its hops with figures, a choice per destination with its reason
            run = cli("routes", "--state", c.info["state"], "--json")
            assert run.returncode == 0, run.stderr
            rt = json.loads(run.stdout)
            assert rt["node_id"] == c.node_id
            to_a = [h for h in rt["hops"] if h["link"] and h["to"] == str(a.identity.node_id)]
            assert to_a and to_a[0]["rtt_ms"] is not None and not to_a[0]["dead"]
            assert any(ch["destination"] == str(a.identity.node_id) and ch["reason"] for ch in rt["choices"])
            text = cli("routes", "--state", c.info["state"])
            assert text.returncode == 0 and "hops known" in text.stdout and "[request]" in text.stdout
            bad = cli("routes", "--state", str(tmp_path / "nobody"))
            assert bad.returncode == 1 and "no node is running" in bad.stderr
        finally:
            await a.stop()
