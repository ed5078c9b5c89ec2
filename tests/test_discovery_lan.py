"""Three agents on one emulated LAN (namespaces joined by a bridge) find each other over mDNS and link up.

Everything runs inside namespaces this test creates; they are deleted, and
every process killed, even when the test fails. Skipped, saying why, where
namespaces cannot be made.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from .netns import Netns, NetnsUnavailable, create_bridged
from .procs import ProcGroup, status, wait_for


@pytest.fixture
def lan() -> Iterator[list[Netns]]:
    try:
        switch, hosts = create_bridged(3)
    except (NetnsUnavailable, RuntimeError) as exc:
        print(f"\nSKIP LAN mDNS test: {exc}", file=sys.stderr)
        pytest.skip(f"network namespaces with a bridge cannot be made here: {exc}")
    try:
        yield hosts
    finally:
        for ns in (switch, *hosts):
            ns.delete()


@pytest.mark.slow
def test_three_agents_on_a_bridge_discover_each_other_and_link(lan: list[Netns], tmp_path: Path) -> None:
    with ProcGroup(tmp_path) as procs:
        nodes = []
        for i, ns in enumerate(lan):
            state = tmp_path / f"n{i}"
            argv = [
                *ns.argv([sys.executable, "-m", "edgeagent.cli", "run", "--state", str(state)]),
                "--listen",
                f"ws://{ns.address}:0",
                "--open",
                "--mdns",
                "auto",
                "--network",
                "wifi",
            ]
            proc = procs.spawn(f"n{i}", argv)
            proc.info = proc.read_json_line(20)
            assert proc.info.get("event") == "started", proc.info
            nodes.append((proc, state))
        ids = [p.info["node_id"] for p, _ in nodes]

        def all_linked() -> bool | None:
            for (_, state), me in zip(nodes, ids, strict=True):
                peers = {ln["peer"] for ln in status(state)["links"]}
                if peers != set(ids) - {me}:
                    return None
            return True

        wait_for(all_linked, 30, what="every agent linked to the two others")
        st = status(nodes[0][1])
        assert st["mdns"] == {"mode": "auto", "peers": 2, "ignored": 0}
        assert all(ln["transport"] == "websocket" for ln in st["links"])
