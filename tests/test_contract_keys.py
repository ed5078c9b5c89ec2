"""Golden keys of the control contract (DESIGN s.11): the JSON documents ``status``, ``peers``,
``routes`` and ``send`` return through ``control.sock``, and ``edgeagent status --json``.

Superset semantics: each golden set below must be a SUBSET of the keys present. Keys may be
added freely; dropping or renaming one fails here. A domain and two devices run in this
process on 127.0.0.1 (mDNS off); the domain sends a 1 MiB file exactly as ``edgeagent send
--wait`` does.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig, control_request
from tests.procs import ROOT

# -- the contract -------------------------------------------------------------------------------

STATUS_KEYS = frozenset(
    {
        "node_id",
        "role",
        "listen",
        "uptime_s",
        "event_loop",
        "links",
        "bytes_sent_total",
        "bytes_received_total",
        "bytes_sent_by_type",
        "payloads",
        "payload_bytes_sent_by_kind",
        "pubsub",
        "fl",
        "streams",
        "routing",
        "network",
        "mdns",
    }
)
STATUS_LINK_KEYS = frozenset(
    {
        "peer",
        "peer_role",
        "transport",
        "address",
        "codec",
        "cipher",
        "authorised",
        "rtt_ms",
        "send_bps",
        "recv_bps",
        "failures",
        "bytes_sent",
        "bytes_received",
        "network_kind",
        "refused",
    }
)
STATUS_ROUTING_KEYS = frozenset({"hops", "forwarded", "rerouted", "duplicates_dropped"})
PAYLOAD_SOURCE_KEYS = frozenset(
    {"id", "size", "have_bytes", "complete", "path", "role", "bytes_sent", "stripes", "children"}
)
PAYLOAD_RECEIVER_KEYS = frozenset(
    {
        "id",
        "size",
        "have_bytes",
        "complete",
        "path",
        "role",
        "bytes_sent",
        "bytes_received",
        "stripes",
        "parents",
        "children",
        "bad_chunks",
    }
)
SEND_RESULT_KEYS = frozenset(
    {
        "payload_id",
        "size",
        "receivers",
        "completed",
        "source_bytes_sent",
        "seconds",
        "failed",
        "stripes",
        "repairs",
        "relayed_bytes",
        "cellular_uploaded_bytes",
        "per_node",
        "source_wire_bytes",
        "assists",
    }
)
SEND_PER_NODE_KEYS = frozenset({"network_kind", "relay_ok", "bytes_uploaded", "have_bytes", "complete", "dead"})
PROGRESS_LINE_KEYS = frozenset({"progress"})
PROGRESS_KEYS = frozenset({"receivers", "completed", "failed", "have_bytes", "total_bytes", "source_bytes_sent"})
PEER_KEYS = frozenset({"node_id", "seq", "role", "addresses", "network_kind", "metered", "lan_group"})
ROUTES_KEYS = frozenset({"node_id", "hops", "choices", "relays", "counters"})
ROUTES_HOP_KEYS = frozenset(
    {
        "from",
        "to",
        "link",
        "transport",
        "network_kind",
        "metered",
        "cost_per_gb",
        "rtt_ms",
        "expected_rtt_ms",
        "bandwidth_bps",
        "expected_bandwidth_bps",
        "health",
        "failures",
        "dead",
        "bytes_sent",
        "learned_from",
        "expires_in_s",
    }
)
ROUTES_CHOICE_KEYS = frozenset(
    {
        "destination",
        "purpose",
        "path",
        "via",
        "latency_ms",
        "bandwidth_bps",
        "cost_per_gb",
        "metered",
        "health",
        "reason",
        "alternatives",
    }
)
ROUTES_COUNTER_KEYS = frozenset(
    {"selections", "route_changes", "forwarded", "rerouted", "duplicates_dropped", "sent", "modes"}
)

# -- helpers ------------------------------------------------------------------------------------

COMMON: dict[str, Any] = {"listen": ["ws://127.0.0.1:0"], "mdns": "off", "link_probe_interval": 0, "route_tick": 0.2}


def _has(golden: frozenset[str], doc: Any, what: str) -> None:
    assert isinstance(doc, dict), f"{what}: expected an object, got {type(doc).__name__}"
    missing = golden - doc.keys()
    assert not missing, f"{what} lost contract keys {sorted(missing)}"


def _each(golden: frozenset[str], items: Iterable[Any], what: str) -> None:
    items = list(items)
    assert items, f"{what}: expected at least one item"
    for i, item in enumerate(items):
        _has(golden, item, f"{what}[{i}]")


async def _cli_status_json(state: Path) -> dict[str, Any]:
    """``edgeagent status --state DIR --json`` in a child process, while this loop keeps serving."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "edgeagent.cli",
        "status",
        "--state",
        str(state),
        "--json",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 20)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode(errors="replace")
    return dict(json.loads(out))


# -- the test -----------------------------------------------------------------------------------


async def test_contract_keys(tmp_path: Path) -> None:
    ids = [Identity.generate() for _ in range(3)]
    devices_ids = {i.node_id for i in ids[1:]}
    nodes: list[Node] = []
    cleanup = contextlib.AsyncExitStack()  # stops every node started, even when one stop() fails
    try:
        domain = Node(ids[0], tmp_path / "d", NodeConfig(role="domain", allow=devices_ids, **COMMON))
        nodes.append(domain)
        cleanup.push_async_callback(domain.stop)
        await domain.start()
        for n, ident in enumerate(ids[1:]):
            # as deployed: each device authorises only its domain (a parent admits its payload children
            # by the payload's policy; before that, a child's early Have was refused and the send stalled)
            cfg = NodeConfig(domain=domain.listen_urls[0], **COMMON)
            dev = Node(ident, tmp_path / f"a{n}", cfg)
            nodes.append(dev)
            cleanup.push_async_callback(dev.stop)
            await dev.start()
        devices = nodes[1:]
        async with asyncio.timeout(10):
            for dev in devices:
                await dev.registered.wait()

        # send, exactly as `edgeagent send FILE --state DIR --wait --json` asks for it
        path = tmp_path / "blob.bin"
        path.write_bytes(os.urandom(1 << 20))
        lines: list[dict[str, Any]] = []
        request = {"path": str(path.resolve()), "to": ["all"], "wait": True, "timeout": None}
        reply = await control_request(domain.state_dir, "send", timeout=60.0, args=request, on_line=lines.append)
        res = reply["result"]
        _has(SEND_RESULT_KEYS, res, "send result")
        assert res["receivers"] == res["completed"] == 2, res
        assert set(res["per_node"]) == {str(i) for i in devices_ids}
        for nid, entry in res["per_node"].items():
            _has(SEND_PER_NODE_KEYS, entry, f"send result per_node[{nid}]")
        assert lines, "send --wait streamed no progress lines"
        for i, line in enumerate(lines):
            _has(PROGRESS_LINE_KEYS, line, f"progress line {i}")
            _has(PROGRESS_KEYS, line["progress"], f"progress line {i} progress")
        pid = res["payload_id"]

        # status at every node
        for node in nodes:
            st = (await control_request(node.state_dir, "status"))["status"]
            who = f"status of {node.config.role} {str(node.identity.node_id)[-6:]}"
            _has(STATUS_KEYS, st, who)
            _each(STATUS_LINK_KEYS, st["links"], f"{who} links")
            _has(STATUS_ROUTING_KEYS, st["routing"], f"{who} routing")
            mine = [p for p in st["payloads"] if p.get("id") == pid]
            role = "source" if node is domain else "receiver"
            golden = PAYLOAD_SOURCE_KEYS if node is domain else PAYLOAD_RECEIVER_KEYS
            assert [p.get("role") for p in mine] == [role], f"{who} payloads: {mine}"
            _has(golden, mine[0], f"{who} payloads[{role}]")

        # peers: the domain's registry holds both devices
        peers = (await control_request(domain.state_dir, "peers"))["peers"]
        assert isinstance(peers, list)
        _each(PEER_KEYS, peers, "peers")
        assert {p["node_id"] for p in peers} == {str(i) for i in devices_ids}

        # routes
        rt = (await control_request(domain.state_dir, "routes"))["routes"]
        _has(ROUTES_KEYS, rt, "routes")
        _each(ROUTES_HOP_KEYS, rt["hops"], "routes hops")
        _each(ROUTES_CHOICE_KEYS, rt["choices"], "routes choices")
        _has(ROUTES_COUNTER_KEYS, rt["counters"], "routes counters")

        # the CLI's path: `edgeagent status --state DIR --json` against the running domain
        st_cli = await _cli_status_json(domain.state_dir)
        _has(STATUS_KEYS, st_cli, "edgeagent status --json")
        st_now = (await control_request(domain.state_dir, "status"))["status"]
        assert set(st_cli) == set(st_now), "edgeagent status --json shows other keys than the control socket"
        assert st_cli["node_id"] == str(domain.identity.node_id) and st_cli["role"] == "domain"
    finally:
        await cleanup.aclose()
