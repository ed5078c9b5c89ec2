"""Links over loopback WebSockets between processes: codecs, large frames, CLI ping/status, reconnects, refusals."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.exceptions import HandshakeError
from edgeagent.identity import Identity, sign_struct
from edgeagent.links.base import LinkOptions
from edgeagent.links.websocket import dial
from edgeagent.wire import Codec, Envelope, Error, ErrorCode, NodeId, ObjectMessage, PeerRecord, Response

from .procs import Proc, ProcGroup, cli, free_port, links_to, status, wait_for, write_config

pytestmark = pytest.mark.slow
MiB = 1 << 20


@pytest.fixture(scope="module")
def open_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proc]:
    """One ``edgeagent run --open`` node that pings idle links every 0.3 s (so its status has an RTT)."""
    work = tmp_path_factory.mktemp("open-node")
    cfg = write_config(work / "fast.toml", keepalive=0.3, dead_after=5.0)
    with ProcGroup(work) as procs:
        node = procs.node("open", "--listen", "ws://127.0.0.1:0", "--open", "--config", str(cfg))
        assert node.url.startswith("ws://127.0.0.1:")
        assert json.loads((Path(node.info["state"]) / "node.json").read_text())["listen"] == [node.url]
        yield node
        assert node.alive(), node.log_text()


@pytest.mark.parametrize("codec", ["protobuf", "cbor"])
async def test_dial_ping_large_frame_status_close(open_node: Proc, codec: Codec) -> None:
    ident = Identity.generate()
    me = str(ident.node_id)
    state = open_node.info["state"]
    link = await dial(open_node.url, ident, LinkOptions(codecs=(codec,)), expected_peer=NodeId.parse(open_node.node_id))
    try:
        assert link.codec == codec and link.transport_kind == "websocket"
        assert str(link.peer) == open_node.node_id and link.authorised
        assert 0 < await link.ping() < 1000
        big = Envelope(ObjectMessage(f"big-{codec}", os.urandom(4 * MiB)), ident.node_id, destination=link.peer)
        await link.send(big)
        reply = await asyncio.wait_for(link.recv(), 15)
        assert reply.reply_to == big.msg_id
        assert isinstance(reply.body, Response), reply.body  # the worker stored the 4 MiB object
        assert 0 < await link.ping() < 1000  # still serving

        def up_with_rtt() -> dict[str, Any] | None:
            mine = links_to(state, me)
            return mine[0] if mine and mine[0]["rtt_ms"] is not None else None

        ln = await asyncio.to_thread(wait_for, up_with_rtt, 10.0, 0.2, "the node's status to show our link's RTT")
        assert ln["transport"] == "websocket" and ln["codec"] == codec
        assert 0 < ln["rtt_ms"] < 1000
        assert ln["bytes_received"] > 4 * MiB and ln["bytes_sent"] > 0
        assert {"bytes_sent", "bytes_received", "network_kind", "peer"} <= ln.keys()
        st = await asyncio.to_thread(status, state)
        assert st["node_id"] == open_node.node_id and st["role"] == "device"
        assert st["bytes_received_total"] >= ln["bytes_received"]
    finally:
        await link.close()
    assert link.closed
    # the node saw the clean close and dropped the link
    await asyncio.to_thread(wait_for, lambda: not links_to(state, me), 10.0, 0.2, "the node to drop our link")


def test_cli_ping_json_and_expect(open_node: Proc) -> None:
    run = cli("ping", open_node.url, "--count", "3", "--interval", "0.05", "--json", "--expect", open_node.node_id)
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["peer"] == open_node.node_id and out["transport"] == "websocket"
    assert len(out["rtt_ms"]) == 3 and all(0 < r < 1000 for r in out["rtt_ms"])
    assert out["handshake_ms"] > 0 and out["codec"] in ("cbor", "protobuf")


async def test_wrong_key_is_refused(open_node: Proc) -> None:
    impostor_expected = Identity.generate().node_id
    with pytest.raises(HandshakeError, match="expected"):
        await dial(open_node.url, Identity.generate(), expected_peer=impostor_expected)
    run = await asyncio.to_thread(cli, "ping", open_node.url, "--count", "1", "--expect", str(impostor_expected))
    assert run.returncode == 1, (run.stdout, run.stderr)
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("edgeagent ping:"), run.stderr
    assert str(impostor_expected) in run.stderr and run.stdout == ""
    # the node keeps serving
    link = await dial(open_node.url, Identity.generate(), expected_peer=NodeId.parse(open_node.node_id))
    try:
        await link.ping()
    finally:
        await link.close()


async def test_unauthorised_peer_of_a_closed_node(tmp_path: Path) -> None:
    with ProcGroup(tmp_path) as procs:
        node = await asyncio.to_thread(procs.node, "closed", "--listen", "ws://127.0.0.1:0")
        state = node.info["state"]
        ident = Identity.generate()
        link = await dial(node.url, ident)
        try:
            assert await link.ping() > 0
            record = sign_struct(PeerRecord(ident.node_id, 7, addresses=("ws://127.0.0.1:9",)), ident)
            presented = Envelope(record, ident.node_id)
            await link.send(presented)
            ack = await asyncio.wait_for(link.recv(), 10)  # an unauthorised peer may present its record
            assert ack.reply_to == presented.msg_id and not isinstance(ack.body, Error)
            push = Envelope(ObjectMessage("w", b"weights"), ident.node_id, destination=link.peer)
            await link.send(push)
            reply = await asyncio.wait_for(link.recv(), 10)
            assert reply.reply_to == push.msg_id
            assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.UNAUTHORIZED
            assert await link.ping() > 0  # still up
            ln = (await asyncio.to_thread(links_to, state, str(ident.node_id)))[0]
            assert ln["authorised"] is False and ln["refused"] == 1

            def record_known() -> bool:
                run = cli("peers", "--state", state, "--json")
                return run.returncode == 0 and any(
                    p["node_id"] == str(ident.node_id) and p["seq"] == 7 for p in json.loads(run.stdout)
                )

            await asyncio.to_thread(wait_for, record_known, 10.0, 0.2, "the PeerRecord to be accepted")
        finally:
            await link.close()


def test_three_processes_kill_and_reconnect(tmp_path: Path) -> None:
    keepalive, dead_after = 0.3, 1.5
    cfg = write_config(tmp_path / "fast.toml", keepalive=keepalive, dead_after=dead_after)
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    state_a, state_b = tmp_path / "a", tmp_path / "b"
    with ProcGroup(tmp_path) as procs:
        a = procs.node("a", "--listen", url, "--open", "--config", str(cfg), state=state_a)
        assert a.url == url
        b = procs.node("b", "--peer", url, "--open", "--config", str(cfg), state=state_b)
        wait_for(lambda: links_to(state_b, a.node_id), 15, 0.2, "B to link to A")
        wait_for(lambda: links_to(state_a, b.node_id), 10, 0.2, "A to list B")
        ln = links_to(state_b, a.node_id)[0]
        assert ln["transport"] == "websocket" and ln["peer_role"] == "device"

        # SIGKILL A: its sockets close, B drops the link at once
        a.signal(signal.SIGKILL)
        t0 = time.monotonic()
        wait_for(lambda: not links_to(state_b, a.node_id), dead_after + 5, 0.1, "B to drop the link to a killed A")
        dropped_s = time.monotonic() - t0
        assert b.alive()

        # A comes back on the same port with the same key: B redials (jittered backoff)
        t1 = time.monotonic()
        a2 = procs.node("a", "--listen", url, "--open", "--config", str(cfg), state=state_a)
        assert a2.node_id == a.node_id
        wait_for(lambda: links_to(state_b, a.node_id), 20, 0.2, "B to reconnect to the restarted A")
        reconnect_s = time.monotonic() - t1

        # SIGSTOP A: the sockets stay open but nothing answers; B's keepalive declares the link dead
        wait_for(lambda: links_to(state_a, b.node_id), 10, 0.2, "the restarted A to list B")
        a2.signal(signal.SIGSTOP)
        t2 = time.monotonic()
        try:
            wait_for(lambda: not links_to(state_b, a.node_id), dead_after + 6, 0.1, "B to declare A dead")
            dead_s = time.monotonic() - t2
        finally:
            a2.kill()
        # dead_after counts from the last thing B received, which can precede the SIGSTOP by up to
        # one keepalive period (B pings only after `keepalive` of silence): never sooner than that
        assert dead_s >= dead_after - keepalive - 0.05, dead_s
        assert b.alive(), b.log_text()
        print(f"kill->drop {dropped_s:.2f}s, restart->relink {reconnect_s:.2f}s, stop->dead {dead_s:.2f}s")
