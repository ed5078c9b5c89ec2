"""Abuse: a storm of garbage connections against a node, and a slow consumer that must not bloat the sender."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import random
import sys
import time
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, WebSocketException

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.links.handshake import MAGIC, Handshake
from edgeagent.links.websocket import SUBPROTOCOL, dial
from edgeagent.wire import NodeId

from .procs import Proc, ProcGroup, open_fds, rss_kib, status, wait_for, write_config

pytestmark = pytest.mark.slow
MiB = 1 << 20
HANDSHAKE_TIMEOUT = 1.0
KINDS = (
    "tcp-random",  # raw TCP: random bytes, then close
    "tcp-silent",  # raw TCP: connect, send nothing (the WebSocket opening handshake must time out)
    "ws-random",  # WebSocket: one random binary message
    "ws-text",  # WebSocket: a text message
    "ws-oversized",  # WebSocket: a binary message over 1 MiB
    "ws-magic-junk",  # WebSocket: correct magic and cipher id, then junk
    "ws-silent",  # WebSocket open, no link handshake (the link handshake must time out)
    "ws-stalled",  # a valid first handshake message, then nothing
)


async def _await_server_close_tcp(reader: asyncio.StreamReader, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:
        return False
    except OSError:
        pass
    return True


async def _await_server_close_ws(ws: object, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            while True:
                await ws.recv()  # type: ignore[attr-defined]
    except TimeoutError:
        return False
    except (ConnectionClosed, OSError):
        return True


async def _garbage(kind: str, host: str, port: int, rng: random.Random) -> tuple[str, bool, float]:
    """One abusive connection; returns (kind, closed by the server in time, seconds)."""
    t0 = time.monotonic()
    wait = HANDSHAKE_TIMEOUT + 3.0
    if kind.startswith("tcp"):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            if kind == "tcp-random":
                writer.write(rng.randbytes(rng.randint(1, 4096)))
                await writer.drain()
                writer.write_eof()
            closed = await _await_server_close_tcp(reader, wait)
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        return kind, closed, time.monotonic() - t0
    async with connect(
        f"ws://{host}:{port}",
        subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=10,
        close_timeout=1,
    ) as ws:
        try:
            if kind == "ws-random":
                await ws.send(rng.randbytes(rng.randint(1, 8192)))
            elif kind == "ws-text":
                await ws.send("hello, is this HTTP?")
            elif kind == "ws-oversized":
                await ws.send(rng.randbytes(MiB + 4096))
            elif kind == "ws-magic-junk":
                await ws.send(MAGIC + bytes([rng.randint(0, 1)]) + rng.randbytes(rng.randint(0, 300)))
            elif kind == "ws-stalled":
                await ws.send(Handshake(Identity.generate(), True, LinkOptions()).start())
        except (ConnectionClosed, OSError):
            return kind, True, time.monotonic() - t0
        closed = await _await_server_close_ws(ws, wait)
    return kind, closed, time.monotonic() - t0


async def _good_client(url: str, node_id: str) -> float:
    link = await dial(url, Identity.generate(), expected_peer=NodeId.parse(node_id))
    try:
        return await link.ping()
    finally:
        await link.close()


async def test_garbage_connection_storm(tmp_path: Path) -> None:
    total, concurrency = 1000, 48
    cfg = write_config(tmp_path / "abuse.toml", handshake_timeout=HANDSHAKE_TIMEOUT)
    with ProcGroup(tmp_path) as procs:
        node: Proc = await asyncio.to_thread(
            procs.node, "target", "--listen", "ws://127.0.0.1:0", "--open", "--config", str(cfg)
        )
        host, port = "127.0.0.1", int(node.url.rsplit(":", 1)[1])
        for _ in range(3):  # warm up the code paths before taking the baseline
            await _good_client(node.url, node.node_id)
        await asyncio.sleep(0.3)
        rss_before, fds_before = rss_kib(node.pid), open_fds(node.pid)

        rng = random.Random(1234)
        kinds = [KINDS[i % len(KINDS)] for i in range(total)]
        rng.shuffle(kinds)
        gate, big_gate = asyncio.Semaphore(concurrency), asyncio.Semaphore(8)
        peak_rss = rss_before

        async def one(kind: str, seed: int) -> tuple[str, bool, float] | str:
            nonlocal peak_rss
            async with gate:
                try:
                    if kind == "ws-oversized":
                        async with big_gate:
                            return await _garbage(kind, host, port, random.Random(seed))
                    return await _garbage(kind, host, port, random.Random(seed))
                except (OSError, WebSocketException, TimeoutError) as exc:
                    return f"{kind}: {type(exc).__name__}: {exc}"
                finally:
                    if seed % 50 == 0:
                        peak_rss = max(peak_rss, rss_kib(node.pid))

        t0 = time.monotonic()
        async with asyncio.timeout(45):
            results = await asyncio.gather(*(one(k, n) for n, k in enumerate(kinds)))
            # while the storm's last connections drain, a good client is served
            rtt = await _good_client(node.url, node.node_id)
        storm_s = time.monotonic() - t0
        assert 0 < rtt < 1000

        errors = [r for r in results if isinstance(r, str)]
        done = [r for r in results if not isinstance(r, str)]
        assert not errors, errors[:10]
        not_closed = collections.Counter(k for k, closed, _ in done if not closed)
        assert not not_closed, f"the server left these connections open: {not_closed}"
        # silent peers are dropped by the handshake timeout, not much later
        for kind in ("tcp-silent", "ws-silent", "ws-stalled"):
            times = sorted(s for k, _, s in done if k == kind)
            assert times[0] >= HANDSHAKE_TIMEOUT * 0.8, (kind, times[:3])
            assert times[len(times) // 2] < HANDSHAKE_TIMEOUT + 1.5, (kind, times[len(times) // 2])

        assert node.alive(), node.log_text()
        log = node.log.read_text(errors="replace")
        assert "Traceback" not in log and " ERROR " not in log, log[-3000:]
        per_kind = {
            kind: round(sorted(s for k, _, s in done if k == kind)[len(done) // len(KINDS) // 2], 3) for kind in KINDS
        }
        print(f"median seconds until the server dropped each kind: {per_kind}")
        # everything is released: descriptors back near the baseline, no links left over, memory bounded
        await asyncio.to_thread(
            wait_for, lambda: open_fds(node.pid) <= fds_before + 3, 10.0, 0.2, "the node to close the sockets"
        )
        st = await asyncio.to_thread(status, node.info["state"])
        assert st["links"] == []
        rss_after = rss_kib(node.pid)
        print(
            f"storm: {total} connections in {storm_s:.1f}s; node RSS {rss_before / 1024:.1f} -> "
            f"{rss_after / 1024:.1f} MiB (peak sampled {peak_rss / 1024:.1f}); fds {fds_before} -> "
            f"{open_fds(node.pid)}"
        )
        assert rss_after - rss_before < 50 * 1024
        assert await _good_client(node.url, node.node_id) > 0


async def test_slow_consumer_keeps_sender_memory_bounded(tmp_path: Path) -> None:
    """256 MiB offered in 256 KiB Chunks over a WebSocket link to a reader that sleeps after every chunk:
    both ends are separate processes, so the sender's RSS is its own, unaffected by other tests."""
    total, piece, pause = 256 * MiB, 256 * 1024, 0.006
    count = total // piece
    with ProcGroup(tmp_path) as procs:
        receiver = procs.spawn(
            "slow-receiver",
            [sys.executable, "-m", "tests.procs", "slow-receiver", "--total", str(total), "--pause", str(pause)],
        )
        receiver.info = await asyncio.to_thread(receiver.read_json_line, 20.0)
        sender = procs.spawn(
            "fast-sender",
            [sys.executable, "-m", "tests.procs", "fast-sender", receiver.url, "--total", str(total)],
        )
        receiver_peak = 0

        async def sample_receiver() -> None:
            nonlocal receiver_peak
            while receiver.alive():
                with contextlib.suppress(OSError, RuntimeError):
                    receiver_peak = max(receiver_peak, rss_kib(receiver.pid))
                await asyncio.sleep(0.05)

        sampler = asyncio.ensure_future(sample_receiver())
        try:
            out = await asyncio.to_thread(sender.read_json_line, 75.0)
        finally:
            sampler.cancel()
        assert sender.popen.wait(10) == 0, sender.log_text()
    report = out["report"]
    assert report["bytes"] == total and report["chunks"] == count and report["in_order"] is True
    assert report["sha256"] == out["sha256"]
    growth_mib = (out["rss_peak_kib"] - out["rss_base_kib"]) / 1024
    print(
        f"slow consumer: {total // MiB} MiB offered in {out['sent_s']}s, all received after {out['total_s']}s "
        f"(receiver alone {report['seconds']}s); sender RSS {out['rss_base_kib'] / 1024:.1f} MiB at start, "
        f"peak +{growth_mib:.1f} MiB over {out['rss_samples']} samples; receiver peak {receiver_peak / 1024:.1f} MiB"
    )
    # the sender was held back by the slow reader (it could not just buffer everything) ...
    assert out["sent_s"] >= 0.5 * count * pause
    # ... and its memory stayed bounded
    assert growth_mib < 64


async def test_zero_key_offer_is_dropped_quietly(tmp_path: Path) -> None:
    from edgeagent.wire.cbor import encode_struct
    from edgeagent.wire.messages.link import HandshakeOffer

    with ProcGroup(tmp_path) as procs:
        node = await asyncio.to_thread(procs.node, "target", "--listen", "ws://127.0.0.1:0", "--open")
        offer = MAGIC + b"\x00" + bytes(32) + encode_struct(HandshakeOffer((1,), ("cbor",), False))
        async with connect(node.url, subprotocols=[SUBPROTOCOL], ping_interval=None) as ws:  # type: ignore[list-item]
            await ws.send(offer)
            assert await _await_server_close_ws(ws, 5.0)
            close_code = ws.close_code
        assert await _good_client(node.url, node.node_id) > 0
        log = node.log.read_text(errors="replace")
        assert close_code != 1011 and "Traceback" not in log, (close_code, log[-2000:])
