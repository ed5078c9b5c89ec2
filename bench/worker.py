#!/usr/bin/env python3
"""Worker round-trip benchmark: requests per second for a small Operation and for GetShape.

Requests (both answered by ``edgeagent.worker.Worker`` from its object store):
  add     Operation "add" of a stored 16-element float32 tensor and the scalar 1.0,
          result stored under one fixed return id (overwritten each time)
  shape   GetShapeMessage on the same tensor

Stacks (everything in this one process and event loop, on 127.0.0.1 only):
  node         end to end: a client Node and a worker Node; DeviceClient.run(...) / .shape(...)
               (Node.request -> link -> Node._serve -> _on_worker: lock + asyncio.to_thread(handle) -> reply)
  node-inline  diagnostic: the same Nodes, but the worker Node's handlers for the worker messages are
               replaced (on that instance, through ``Node.handlers``) by handle -> send on the event loop,
               i.e. ``node`` without the lock and the to_thread hop
  link         the same Links with nothing else: the client sends an Envelope and a reader task
               matches the reply; the worker side is a minimal loop recv -> worker.handle -> send
               (no to_thread hop, no lock): the difference to ``node`` is the Node's own overhead
Transports: ``memory`` (edgeagent.links.memory.memory_pipe) and ``ws`` (loopback WebSocket),
both with the default LinkOptions (Noise-encrypted records, CBOR).
In flight: 1 (sequential round trips) and N concurrent requests (``--inflight``).
Floors: ``worker.handle`` called directly, the codec (encode + decode of request and reply, cbor),
and one ``asyncio.to_thread`` hop of a no-op.

Every loop stops at a count or a time limit, whichever comes first; each figure is the
median of several rounds, and the cells of one round run back to back (order alternating
between rounds) so they compare like with like on a shared, noisy machine.
Target (issue): >= 5,000 round trips/s over the memory link, judged on the end-to-end
``node`` rows with one request in flight.

Usage: python bench/worker.py [--quick] [--json] [--rounds N] [--seconds S] [--inflight N] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import numpy as np

from edgeagent._malloc import tune_malloc
from edgeagent.client import DeviceClient
from edgeagent.exceptions import LinkError
from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.links.websocket import Listener, dial, listen
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import (
    Envelope,
    Error,
    GetShapeMessage,
    Message,
    ObjectRef,
    Operation,
    Response,
    Tensor,
    decode,
    encode,
)
from edgeagent.worker import WORKER_MESSAGES, ObjectStore, Permissions, Worker

TARGET: Final = 5000.0  # round trips/s over the memory link
TENSOR_ID: Final = "bench-x"
RETURN_ID: Final = "bench-x-plus-1"
ELEMENTS: Final = 16
OPS: Final = ("add", "shape")
TRANSPORTS: Final = ("memory", "ws")
STACKS: Final = ("node", "node-inline", "link")
TIMEOUT: Final = 10.0

Call = Callable[[], Awaitable[None]]


def tensor() -> Tensor:
    return Tensor.from_numpy(np.arange(ELEMENTS, dtype=np.float32))


def add_op() -> Operation:
    return Operation("add", None, (ObjectRef(TENSOR_ID), 1.0), {}, (RETURN_ID,))


def shape_msg() -> GetShapeMessage:
    return GetShapeMessage(TENSOR_ID)


# -- rigs: one client/worker pair each, kept up for the whole run -------------------------------


@dataclass
class Rig:
    name: str
    calls: dict[str, Call]
    closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def close(self) -> None:
        for close in reversed(self.closers):
            with contextlib.suppress(Exception):
                await close()


def _state_dir(stack: list[tempfile.TemporaryDirectory[str]]) -> Path:
    tmp = tempfile.TemporaryDirectory(prefix="ea-bench-worker-")
    stack.append(tmp)
    return Path(tmp.name)


async def _wait_for(pred: Callable[[], bool], what: str, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


async def node_rig(transport: str, tmps: list[tempfile.TemporaryDirectory[str]], *, inline: bool = False) -> Rig:
    """A worker Node and a client Node, linked over ``transport``; calls go through DeviceClient.

    ``inline``: answer worker requests on the event loop (no lock, no to_thread hop) to measure that hop.
    """
    wid, cid = Identity.generate(), Identity.generate()
    listen_urls = ["ws://127.0.0.1:0"] if transport == "ws" else []
    worker = Node(wid, _state_dir(tmps), NodeConfig(listen=listen_urls, allow=None))
    if inline:

        async def handle_inline(link: Link, env: Envelope) -> None:
            reply = worker.worker.handle(env.body, env.source, time.monotonic())
            await link.send(env.reply(reply, wid.node_id))

        for msg in WORKER_MESSAGES:
            worker.handlers[msg] = handle_inline
    await worker.start()
    rig = Rig(f"{'node-inline' if inline else 'node'}/{transport}", {}, [worker.stop])
    try:
        peers = worker.listen_urls if transport == "ws" else []
        client = Node(cid, _state_dir(tmps), NodeConfig(peers=peers, allow=None))
        await client.start()
        rig.closers.append(client.stop)
        if transport == "memory":
            ta, tb = memory_pipe()
            la, lb = await asyncio.gather(
                establish(ta, cid, client.link_options, initiator=True),
                establish(tb, wid, worker.link_options, initiator=False),
            )
            await client._on_link(la)
            await worker._on_link(lb)
        await _wait_for(lambda: wid.node_id in client.links and cid.node_id in worker.links, f"{rig.name} link")
        dc = DeviceClient(client, wid.node_id, timeout=TIMEOUT)
        ptr = await dc.send(tensor(), obj_id=TENSOR_ID)
        out = await dc.run("add", ptr, 1.0, return_id=RETURN_ID)
        got = await out.get(keep=True)
        assert isinstance(got, Tensor) and got.to_numpy().tolist() == [i + 1.0 for i in range(ELEMENTS)], got
        assert await ptr.shape() == (ELEMENTS,)

        async def add() -> None:
            await dc.run("add", ptr, 1.0, return_id=RETURN_ID)

        async def shape() -> None:
            await dc.shape(TENSOR_ID)

        rig.calls = {"add": add, "shape": shape}
    except BaseException:
        await rig.close()
        raise
    return rig


class RawRequester:
    """The client end of the ``link`` stack: send, and a reader task that resolves replies by id."""

    def __init__(self, link: Link) -> None:
        self.link = link
        self.me = link.local
        self.pending: dict[int, asyncio.Future[Envelope]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        with contextlib.suppress(LinkError):
            async for env in self.link:
                fut = self.pending.pop(env.reply_to, None) if env.reply_to is not None else None
                if fut is not None and not fut.done():
                    fut.set_result(env)

    async def request(self, body: Message) -> Message:
        env = Envelope(body, self.me, destination=self.link.peer)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self.pending[env.msg_id] = fut
        try:
            await self.link.send(env)
            async with asyncio.timeout(TIMEOUT):
                reply = await fut
        finally:
            self.pending.pop(env.msg_id, None)
        if isinstance(reply.body, Error):
            raise RuntimeError(f"worker refused {type(body).__name__}: {reply.body.reason}")
        return reply.body

    async def close(self) -> None:
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader
        await self.link.close()


async def respond(link: Link, worker: Worker) -> None:
    """The minimal responder: recv -> worker.handle -> send, on the event loop."""
    with contextlib.suppress(LinkError):
        async for env in link:
            reply = worker.handle(env.body, env.source, time.monotonic())
            await link.send(env.reply(reply, link.local))


async def link_rig(transport: str) -> Rig:
    wid, cid = Identity.generate(), Identity.generate()
    worker = Worker(ObjectStore(), Permissions(open=True))
    worker.store.put(TENSOR_ID, tensor(), now=time.monotonic())
    rig = Rig(f"link/{transport}", {})
    try:
        responders: list[asyncio.Task[None]] = []

        async def on_link(link: Link) -> None:
            responders.append(asyncio.create_task(respond(link, worker)))

        if transport == "memory":
            ta, tb = memory_pipe()
            la, lb = await asyncio.gather(
                establish(ta, cid, LinkOptions(), initiator=True),
                establish(tb, wid, LinkOptions(), initiator=False),
            )
            await on_link(lb)
            rig.closers.append(lb.close)
        else:
            lst: Listener = await listen("ws://127.0.0.1:0", wid, on_link, LinkOptions())
            rig.closers.append(lst.close)
            la = await dial(lst.url, cid, LinkOptions(), expected_peer=wid.node_id)
            await _wait_for(lambda: bool(responders), f"{rig.name} responder")

        async def stop_responders() -> None:
            for task in responders:
                task.cancel()
            await asyncio.gather(*responders, return_exceptions=True)

        rig.closers.append(stop_responders)
        req = RawRequester(la)
        rig.closers.append(req.close)
        assert await req.request(add_op()) == Response(RETURN_ID)
        assert await req.request(shape_msg()) == Response([ELEMENTS])

        async def add() -> None:  # the message is built per call, as DeviceClient does
            reply = await req.request(add_op())
            assert type(reply) is Response

        async def shape() -> None:
            reply = await req.request(shape_msg())
            assert type(reply) is Response

        rig.calls = {"add": add, "shape": shape}
    except BaseException:
        await rig.close()
        raise
    return rig


# -- measuring ------------------------------------------------------------------------------------


async def measure(call: Call, *, seconds: float, max_count: int, inflight: int) -> float:
    """Round trips per second with ``inflight`` requests outstanding, until ``seconds`` or ``max_count``."""
    done = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds

    async def lane() -> None:
        nonlocal done
        while done < max_count and time.perf_counter() < deadline:
            done += 1
            await call()

    async with asyncio.timeout(seconds + 2 * TIMEOUT):
        await asyncio.gather(*(lane() for _ in range(inflight)))
    return done / (time.perf_counter() - t0)


def measure_handle(seconds: float, max_count: int) -> dict[str, float]:
    """Requests per second of ``Worker.handle`` alone (no link, no event loop)."""
    worker = Worker(ObjectStore(), Permissions(open=True))
    requester = Identity.generate().node_id
    worker.store.put(TENSOR_ID, tensor(), now=time.monotonic())
    out = {}
    for name, body in (("add", add_op()), ("shape", shape_msg())):
        assert isinstance(worker.handle(body, requester, time.monotonic()), Response)
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while n < max_count and time.perf_counter() < deadline:
            worker.handle(body, requester, time.monotonic())
            n += 1
        out[name] = n / (time.perf_counter() - t0)
    return out


def measure_codec(seconds: float, max_count: int) -> dict[str, float]:
    """Microseconds to encode and decode one request and its reply (cbor, no encryption): 4 codec calls."""
    a, b = Identity.generate().node_id, Identity.generate().node_id
    out = {}
    for name, body, answer in (("add", add_op(), Response(RETURN_ID)), ("shape", shape_msg(), Response([ELEMENTS]))):
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while n < max_count and time.perf_counter() < deadline:
            req = Envelope(body, a, destination=b)
            got = decode(encode(req, "cbor"), "cbor")
            decode(encode(got.reply(answer, b), "cbor"), "cbor")
            n += 1
        out[name] = (time.perf_counter() - t0) / n * 1e6
    return out


async def measure_to_thread(seconds: float, max_count: int) -> float:
    """``asyncio.to_thread`` hops of a no-op per second (the hop Node._on_worker takes per request)."""

    def noop() -> None:
        return None

    async def hop() -> None:
        await asyncio.to_thread(noop)

    return await measure(hop, seconds=seconds, max_count=max_count, inflight=1)


@dataclass
class Settings:
    rounds: int
    seconds: float
    max_count: int
    inflight: int
    warmup: int


def cells(inflights: tuple[int, ...]) -> Iterator[tuple[str, str, str, int]]:
    for transport in TRANSPORTS:
        for stack in STACKS:
            for op in OPS:
                for n in inflights:
                    yield transport, stack, op, n


def key(transport: str, stack: str, op: str, inflight: int) -> str:
    return f"{transport}/{stack}/{op}/x{inflight}"


async def run_all(s: Settings) -> tuple[dict[str, list[float]], list[float]]:
    tmps: list[tempfile.TemporaryDirectory[str]] = []
    rigs: dict[tuple[str, str], Rig] = {}
    inflights = (1, s.inflight) if s.inflight > 1 else (1,)
    results: dict[str, list[float]] = {key(*c): [] for c in cells(inflights)}
    hops: list[float] = []
    try:
        for transport in TRANSPORTS:
            rigs[transport, "node"] = await node_rig(transport, tmps)
            rigs[transport, "node-inline"] = await node_rig(transport, tmps, inline=True)
            rigs[transport, "link"] = await link_rig(transport)
        for rig in rigs.values():
            for call in rig.calls.values():
                for _ in range(s.warmup):
                    await call()
        order = list(cells(inflights))
        for r in range(s.rounds):
            for transport, stack, op, n in order if r % 2 == 0 else reversed(order):
                call = rigs[transport, stack].calls[op]
                rate = await measure(call, seconds=s.seconds, max_count=s.max_count, inflight=n)
                results[key(transport, stack, op, n)].append(rate)
            hops.append(await measure_to_thread(s.seconds, s.max_count))
    finally:
        for rig in rigs.values():
            await rig.close()
        for tmp in tmps:
            tmp.cleanup()
    return results, hops


async def profile_memory(stack: str, seconds: float, max_count: int, top: int) -> str:
    """cProfile of sequential ``add`` round trips over the memory link (the event-loop thread only:
    what runs in to_thread's worker thread, i.e. Worker.handle, shows as time in epoll.poll)."""
    tmps: list[tempfile.TemporaryDirectory[str]] = []
    rig = await (link_rig("memory") if stack == "link" else node_rig("memory", tmps, inline=stack == "node-inline"))
    try:
        call = rig.calls["add"]
        for _ in range(200):
            await call()
        prof = cProfile.Profile()
        prof.enable()
        rate = await measure(call, seconds=seconds, max_count=max_count, inflight=1)
        prof.disable()
    finally:
        await rig.close()
        for tmp in tmps:
            tmp.cleanup()
    buf = io.StringIO()
    buf.write(f"cProfile: memory/{stack}/add/x1 for {seconds} s ({rate:.0f} round trips/s under the profiler)\n")
    stats = pstats.Stats(prof, stream=buf).strip_dirs()
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# -- reporting ------------------------------------------------------------------------------------


def environment(tuned: bool) -> dict[str, Any]:
    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "numpy": np.__version__,
        "malloc_tuned": tuned,
    }


def verdict(rate: float) -> str:
    return "met" if rate >= TARGET else "missed"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one short round (smoke test, a couple of seconds)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--rounds", type=int, default=5, help="rounds; figures are medians (default 5)")
    ap.add_argument("--seconds", type=float, default=0.25, help="time limit per cell and round (default 0.25)")
    ap.add_argument("--max-count", type=int, default=100_000, help="round-trip limit per cell and round")
    ap.add_argument("--inflight", type=int, default=8, help="concurrent requests for the second column (default 8)")
    ap.add_argument(
        "--profile",
        nargs="?",
        const="node",
        choices=STACKS,
        help="also print a cProfile of memory/STACK/add/x1 (default stack: node)",
    )
    args = ap.parse_args()
    tuned = tune_malloc()  # as the edgeagent command does for run/domain/demo
    if args.quick:
        s = Settings(rounds=1, seconds=0.05, max_count=2_000, inflight=max(1, args.inflight), warmup=20)
    else:
        if args.rounds < 1 or args.seconds <= 0 or args.max_count < 1 or args.inflight < 1:
            ap.error("--rounds, --seconds, --max-count and --inflight must be positive")
        s = Settings(args.rounds, args.seconds, args.max_count, args.inflight, warmup=200)
    started = time.perf_counter()
    handle = [measure_handle(s.seconds, s.max_count) for _ in range(s.rounds)]
    codec = [measure_codec(s.seconds, s.max_count) for _ in range(s.rounds)]
    results, hops = asyncio.run(run_all(s))
    profile = ""
    if args.profile:
        profile = asyncio.run(profile_memory(args.profile, 0.5 if args.quick else 2.0, 10 * s.max_count, 20))
    out = summarise(s, tuned, results, handle, codec, hops)
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    if profile:
        out["profile"] = profile
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_text(s, out, results)
    return 0


def us(rate: float) -> float:
    return 1e6 / rate


def summarise(
    s: Settings,
    tuned: bool,
    results: dict[str, list[float]],
    handle: list[dict[str, float]],
    codec: list[dict[str, float]],
    hops: list[float],
) -> dict[str, Any]:
    med = {k: statistics.median(v) for k, v in results.items()}
    inflights = (1, s.inflight) if s.inflight > 1 else (1,)
    target_rows = {key("memory", "node", op, 1): med[key("memory", "node", op, 1)] for op in OPS}
    per_request: dict[str, dict[str, float]] = {}
    for t in TRANSPORTS:
        for op in OPS:
            node, inline, link = (med[key(t, stack, op, 1)] for stack in STACKS)
            per_request[f"{t}/{op}"] = {
                "node_round_trip": round(us(node), 1),
                "link_round_trip": round(us(link), 1),
                "node_minus_link": round(us(node) - us(link), 1),
                "lock_and_to_thread_hop": round(us(node) - us(inline), 1),
            }
    return {
        "environment": environment(tuned),
        "method": {
            "rounds": s.rounds,
            "seconds_per_cell": s.seconds,
            "max_count_per_cell": s.max_count,
            "inflight": list(inflights),
            "tensor": f"float32[{ELEMENTS}]",
            "link": "default LinkOptions (Noise-encrypted, cbor); both ends in one process and event loop",
            "unit": "round trips per second (median of rounds); microseconds where named _us",
        },
        "round_trips_per_s": {k: {"median": round(med[k]), "all": [round(x) for x in v]} for k, v in results.items()},
        "node_vs_link": {
            f"{t}/{op}/x{n}": round(med[key(t, "node", op, n)] / med[key(t, "link", op, n)], 3)
            for t in TRANSPORTS
            for op in OPS
            for n in inflights
        },
        "per_request_us_one_in_flight": per_request,
        "floors_us": {
            "worker_handle_add": round(us(statistics.median(h["add"] for h in handle)), 1),
            "worker_handle_shape": round(us(statistics.median(h["shape"] for h in handle)), 1),
            "codec_add": round(statistics.median(c["add"] for c in codec), 1),
            "codec_shape": round(statistics.median(c["shape"] for c in codec), 1),
            "to_thread_noop_hop": round(us(statistics.median(hops)), 1),
        },
        "target": {
            "round_trips_per_s": TARGET,
            "judged_on": list(target_rows),
            "rows": {k: {"median": round(v), "verdict": verdict(v)} for k, v in target_rows.items()},
            "met": all(v >= TARGET for v in target_rows.values()),
        },
    }


def print_text(s: Settings, out: dict[str, Any], results: dict[str, list[float]]) -> None:
    env = out["environment"]
    print(f"worker round trips: {env['python']} on {env['platform']}, {env['cpus']} CPUs, loadavg {env['loadavg']}")
    print(
        f"{s.rounds} round(s) x {s.seconds} s per cell (max {s.max_count}), float32[{ELEMENTS}] tensor, "
        f"default links (Noise + cbor), one process; medians in round trips/s; malloc tuned: {env['malloc_tuned']}"
    )
    print(f"{'transport':<9} {'stack':<11} {'op':<6} {'inflight':>8} {'rt/s':>8}   {'all rounds':<40} target")
    target_rows = out["target"]["rows"]
    for k, row in out["round_trips_per_s"].items():
        transport, stack, op, n = k.split("/")
        mark = f">= {TARGET:,.0f}: {target_rows[k]['verdict']}" if k in target_rows else ""
        print(f"{transport:<9} {stack:<11} {op:<6} {n[1:]:>8} {row['median']:>8}   {row['all']!s:<40} {mark}")
    ratios = out["node_vs_link"]
    print("node / link: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
    print("per request, one in flight (us): round trip through Nodes | bare link | Node's own cost | lock+to_thread")
    for k, v in out["per_request_us_one_in_flight"].items():
        print(
            f"  {k:<13} {v['node_round_trip']:>7.1f} | {v['link_round_trip']:>7.1f} | "
            f"{v['node_minus_link']:>7.1f} | {v['lock_and_to_thread_hop']:>7.1f}"
        )
    fl = out["floors_us"]
    print(
        f"floors (us): worker.handle add {fl['worker_handle_add']}, shape {fl['worker_handle_shape']}; "
        f"codec (4 encode/decode per round trip) add {fl['codec_add']}, shape {fl['codec_shape']}; "
        f"asyncio.to_thread no-op hop {fl['to_thread_noop_hop']}"
    )
    tgt = out["target"]
    rows = ", ".join(f"{k} {v['median']:,} ({v['verdict']})" for k, v in tgt["rows"].items())
    print(
        f"target >= {TARGET:,.0f} round trips/s over the memory link, end to end: {rows} -> "
        f"{'met' if tgt['met'] else 'missed'}"
    )
    if "profile" in out:
        print()
        print(out["profile"])
    print(f"elapsed {out['elapsed_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
