#!/usr/bin/env python3
"""Link throughput and handshake benchmark, side by side in one run, on loopback.

Rows (sender in this process, receiver in a child process, one direction):
  tcp            raw asyncio streams (the ceiling)
  ws             raw websockets library, binary messages, compression off
  link-plain     our link over WebSocket, insecure (records without encryption)
  link           our link over WebSocket, Noise-encrypted (the default)
  link-proven    the same, each envelope addressed past the link (as a relay carries it): the
                 sender attaches an origin proof (Ed25519) and the receiver verifies every one
  webrtc-raw     raw aiortc data channel     } both ends in one process inside a network
  webrtc         our link over a data channel } namespace this script creates (aioice skips 127.0.0.1)
plus handshake times: raw websockets connect vs our dial (WebSocket + Noise XX + Hello).

Each figure is the median of several rounds; the rows of one round run back to
back so the ratios compare like with like on this shared, noisy machine.
Usage: python bench/links.py [--quick] [--json] [--rounds N] [--mib N]
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MSG = int(os.environ.get("BENCH_MSG", str(256 * 1024)))
CASES = ("tcp", "ws", "link-plain", "link", "link-proven")
RECEIVER_TIMEOUT = 120.0


# -- receiver (child process) ---------------------------------------------------------------


async def serve(kind: str) -> None:
    done = asyncio.Event()

    def announce(port: int) -> None:
        print(port, flush=True)

    if kind == "tcp":

        async def on_tcp(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            total = int.from_bytes(await reader.readexactly(8), "big")
            got = 0
            while got < total:
                chunk = await reader.read(1 << 20)
                if not chunk:
                    break
                got += len(chunk)
            writer.write(b"k")
            await writer.drain()
            writer.close()
            done.set()

        server = await asyncio.start_server(on_tcp, "127.0.0.1", 0)
        announce(server.sockets[0].getsockname()[1])
        async with server:
            await asyncio.wait_for(done.wait(), RECEIVER_TIMEOUT)
        return

    if kind == "ws":
        from websockets.asyncio.server import ServerConnection
        from websockets.asyncio.server import serve as ws_serve

        async def on_ws(ws: ServerConnection) -> None:
            total = int(await ws.recv())
            got = 0
            while got < total:
                got += len(await ws.recv())
            await ws.send(b"k")
            done.set()

        async with ws_serve(on_ws, "127.0.0.1", 0, compression=None, max_size=2 * MSG, ping_interval=None) as server:
            announce(next(iter(server.sockets)).getsockname()[1])
            await asyncio.wait_for(done.wait(), RECEIVER_TIMEOUT)
            await asyncio.sleep(0.2)
        return

    from edgeagent.identity import Identity
    from edgeagent.links.base import LinkOptions
    from edgeagent.links.link import Link
    from edgeagent.links.websocket import listen
    from edgeagent.wire import Chunk, Envelope, Ping, Progress

    ident = Identity.generate()

    from edgeagent.identity import origin_proven

    async def on_link(link: Link) -> None:
        total = got = 0
        async for env in link:
            body = env.body
            if isinstance(body, Ping):  # announces the total; the link answers Pings itself too
                continue
            if kind == "link-proven" and not origin_proven(env):
                raise SystemExit("an envelope without a valid origin proof")
            if isinstance(body, Chunk):
                if total == 0:
                    total = body.index  # first chunk carries the total in its index
                got += len(body.data)
                if got >= total:
                    await link.send(Envelope(Progress(body.payload_id, got, True), ident.node_id))
                    done.set()

    opts = LinkOptions(insecure=kind == "link-plain", window=int(os.environ.get("BENCH_WINDOW", str(16 << 20))))
    lst = await listen("ws://127.0.0.1:0", ident, on_link, opts)
    announce(lst.port)
    try:
        await asyncio.wait_for(done.wait(), RECEIVER_TIMEOUT)
        await asyncio.sleep(0.2)
    finally:
        await lst.close()


# -- sender ---------------------------------------------------------------------------------


def start_receiver(kind: str) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--serve", kind],
        stdout=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.strip():
        proc.kill()
        raise RuntimeError(f"receiver for {kind} did not start")
    return proc, int(line)


async def send(kind: str, port: int, total: int) -> float:
    """Seconds to move ``total`` bytes, from the first send to the receiver's acknowledgement."""
    payload = os.urandom(MSG)
    count = total // MSG
    if kind == "tcp":
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        t0 = time.perf_counter()
        writer.write(total.to_bytes(8, "big"))
        for _ in range(count):
            writer.write(payload)
            await writer.drain()
        await reader.readexactly(1)
        dt = time.perf_counter() - t0
        writer.close()
        return dt
    if kind == "ws":
        from websockets.asyncio.client import connect

        async with connect(f"ws://127.0.0.1:{port}", compression=None, max_size=2 * MSG, ping_interval=None) as ws:
            t0 = time.perf_counter()
            await ws.send(str(total))
            for _ in range(count):
                await ws.send(payload)
            await ws.recv()
            return time.perf_counter() - t0
    from edgeagent.identity import Identity
    from edgeagent.links.base import LinkOptions
    from edgeagent.links.websocket import dial
    from edgeagent.wire import Chunk, Envelope, Progress

    ident = Identity.generate()
    window = int(os.environ.get("BENCH_WINDOW", str(16 << 20)))
    link = await dial(f"ws://127.0.0.1:{port}", ident, LinkOptions(insecure=kind == "link-plain", window=window))
    # link-proven: addressed to a node past the link, so each envelope carries (and costs) an origin proof
    past = Identity.generate().node_id if kind == "link-proven" else None
    try:
        pid = b"p" * 32
        t0 = time.perf_counter()
        for i in range(count):
            await link.send(Envelope(Chunk(pid, total if i == 0 else i, payload), ident.node_id, destination=past))
        while True:
            env = await link.recv()
            if isinstance(env.body, Progress):
                break
        return time.perf_counter() - t0
    finally:
        await link.close()


def proof_costs(n: int) -> dict[str, dict[str, float]]:
    """Microseconds to attach and to check one origin proof: a small request and a 256 KiB chunk."""
    from edgeagent.identity import Identity, origin_proven, prove_origin
    from edgeagent.wire import Chunk, Envelope, ObjectRequestMessage

    ident, other = Identity.generate(), Identity.generate().node_id
    rows = {
        "small request": Envelope(ObjectRequestMessage("weights"), ident.node_id, destination=other),
        f"{MSG >> 10} KiB chunk": Envelope(Chunk(b"p" * 32, 1, os.urandom(MSG)), ident.node_id, destination=other),
    }
    out: dict[str, dict[str, float]] = {}
    for name, env in rows.items():
        signs, checks = [], []
        proven = prove_origin(env, ident)
        for _ in range(n):
            t0 = time.perf_counter()
            prove_origin(env, ident)
            t1 = time.perf_counter()
            assert origin_proven(proven)
            t2 = time.perf_counter()
            signs.append((t1 - t0) * 1e6)
            checks.append((t2 - t1) * 1e6)
        out[name] = {"sign": round(statistics.median(signs), 1), "verify": round(statistics.median(checks), 1)}
    return out


async def handshake_times(n: int) -> dict[str, float]:
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection
    from websockets.asyncio.server import serve as ws_serve

    from edgeagent.identity import Identity
    from edgeagent.links.link import Link
    from edgeagent.links.websocket import dial, listen

    async def idle(ws: ServerConnection) -> None:
        await ws.wait_closed()

    async def on_link(link: Link) -> None:
        return None

    raw: list[float] = []
    ours: list[float] = []
    server_ident, client_ident = Identity.generate(), Identity.generate()
    async with ws_serve(idle, "127.0.0.1", 0, compression=None) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        lst = await listen("ws://127.0.0.1:0", server_ident, on_link)
        try:
            for _ in range(n):
                t0 = time.perf_counter()
                ws = await connect(f"ws://127.0.0.1:{port}", compression=None)
                raw.append(time.perf_counter() - t0)
                await ws.close()
                t0 = time.perf_counter()
                link = await dial(lst.url, client_ident, expected_peer=server_ident.node_id)
                ours.append(time.perf_counter() - t0)
                await link.close()
        finally:
            await lst.close()
    return {"ws_connect_ms": statistics.median(raw) * 1000, "link_dial_ms": statistics.median(ours) * 1000}


def webrtc_rows(rounds: int, mib: int) -> dict[str, Any]:
    """Our WebRTC link vs a raw aiortc channel, alternating, in a namespace made here (skipped if impossible)."""
    try:
        import aiortc  # noqa: F401
    except ImportError:
        return {"skipped": "aiortc is not installed (the webrtc extra)"}
    from tests.netns import NetnsUnavailable, create_netns

    try:
        ns = create_netns("ea-bench")
    except NetnsUnavailable as exc:
        return {"skipped": f"network namespaces cannot be made here: {exc}"}
    ours: list[float] = []
    raw: list[float] = []
    try:
        for _ in range(rounds):
            run = subprocess.run(
                ns.argv([sys.executable, "-m", "tests.netns", "bench", "--mib", str(mib), "--lifetime", "120"]),
                capture_output=True,
                text=True,
                timeout=150,
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
            )
            line = next((ln for ln in run.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                return {"skipped": f"webrtc bench failed: {run.stderr.strip()[-300:]}"}
            result = json.loads(line[len("RESULT ") :])
            ours.append(result["ours_MBps"])
            raw.append(result["raw_MBps"])
    finally:
        ns.delete()
    return {"ours_mb_s": statistics.median(ours), "raw_mb_s": statistics.median(raw), "all_ours": ours, "all_raw": raw}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve", choices=CASES, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="one small round (smoke test)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--mib", type=int, default=128, help="MiB moved per measurement")
    ap.add_argument("--no-webrtc", action="store_true", help="skip the WebRTC rows")
    args = ap.parse_args()
    from edgeagent._malloc import tune_malloc

    tuned = tune_malloc()  # as the edgeagent command does; applied to every row, ours and raw alike
    if args.serve:
        asyncio.run(serve(args.serve))
        return 0
    rounds = 1 if args.quick else max(1, args.rounds)
    total = (8 if args.quick else args.mib) * 1024 * 1024
    results: dict[str, list[float]] = {k: [] for k in CASES}
    started = time.perf_counter()
    for r in range(rounds):
        order = CASES if r % 2 == 0 else tuple(reversed(CASES))
        for kind in order:
            proc, port = start_receiver(kind)
            try:
                dt = asyncio.run(asyncio.wait_for(send(kind, port, total), RECEIVER_TIMEOUT))
                results[kind].append(total / dt / 1e6)
            finally:
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    hs = asyncio.run(handshake_times(5 if args.quick else 50))
    rtc_mib = 4 if args.quick else 16
    rtc = {"skipped": "--no-webrtc"} if args.no_webrtc else webrtc_rows(1 if args.quick else 3, rtc_mib)
    med = {k: statistics.median(v) for k, v in results.items()}
    out: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "malloc_tuned": tuned,
        },
        "method": {
            "rounds": rounds,
            "bytes_per_measurement": total,
            "message_bytes": MSG,
            "unit": "MB/s, MB = 1e6 bytes",
        },
        "throughput_mb_s": {k: {"median": round(med[k]), "all": [round(x) for x in results[k]]} for k in CASES},
        "ratios": {
            "link_vs_tcp": round(med["link"] / med["tcp"], 3),
            "link_plain_vs_tcp": round(med["link-plain"] / med["tcp"], 3),
            "link_vs_ws": round(med["link"] / med["ws"], 3),
            "proven_vs_link": round(med["link-proven"] / med["link"], 3),
        },
        "origin_proof_us": proof_costs(200 if args.quick else 2000),
        "targets": {"link_vs_tcp": 0.5, "link_plain_vs_tcp": 0.8},
        "handshake_ms": {k: round(v, 3) for k, v in hs.items()},
        "webrtc": rtc,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(
        f"links benchmark, loopback, {rounds} round(s) of {total >> 20} MiB per row, "
        f"{MSG >> 10} KiB messages; MB = 1e6 bytes; medians"
    )
    print(f"{'row':<12} {'MB/s':>8}   all rounds")
    for k in CASES:
        print(f"{k:<12} {med[k]:>8.0f}   {[round(x) for x in results[k]]}")
    ratios = out["ratios"]
    print(f"our encrypted link / raw TCP: {ratios['link_vs_tcp']:.2f}x (target >= 0.5)")
    print(f"our plaintext link / raw TCP: {ratios['link_plain_vs_tcp']:.2f}x (target >= 0.8)")
    print(f"our encrypted link / raw websockets: {ratios['link_vs_ws']:.2f}x")
    print(f"every envelope origin-proven / plain link: {ratios['proven_vs_link']:.2f}x")
    for row, cost in out["origin_proof_us"].items():
        print(f"origin proof, {row}: sign {cost['sign']:.0f} us, verify {cost['verify']:.0f} us (medians)")
    print(
        f"handshake: raw websockets connect {hs['ws_connect_ms']:.2f} ms, "
        f"our dial {hs['link_dial_ms']:.2f} ms (medians)"
    )
    if "skipped" in rtc:
        print(f"webrtc: skipped ({rtc['skipped']})")
    else:
        print(
            f"webrtc ({rtc_mib} MiB, one process, medians of {len(rtc['all_ours'])}): "
            f"raw aiortc {rtc['raw_mb_s']:.1f} MB/s, "
            f"our link {rtc['ours_mb_s']:.1f} MB/s = {rtc['ours_mb_s'] / rtc['raw_mb_s']:.2f}x (target >= 0.8)"
        )
    print(f"elapsed {out['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
