"""Pub-sub test agent: K device Nodes in one process that subscribe to (or publish on) one topic.

Run as ``python -m tests.pubsub_agent --state DIR --domain URL --topic T [options]``.
Every node has its own state directory ``DIR/<i>`` (identity, ``pubsub.json``) and is a
``Node(NodeConfig(domain=URL, allow=None, link_probe_interval=0))``; only the domain URL is
dialled (loopback in the tests and the bench). Output is one JSON object per line on stdout.

Subscriber mode (the default)::

    --nodes K         device nodes in this process (default 1)
    --count N         a node is done when the seqs it has seen add up to N over all publishers
                      (one publisher: when seq N arrived); 0 = never done (run to --deadline)
    --every M         a progress line every M messages per node (default 100); 1 prints one
                      line per message: {"node": i, "publisher": ..., "seq": ..., "value": ...}
    --slow-ms MS      handle each message this slowly (a slow subscriber); --slow-mode says how:
                      "block" (default) time.sleep()s in the event loop, so the whole node stalls
                      as a CPU-starved device would (its link stops reading and the domain queues);
                      "async" awaits asyncio.sleep(), so only the application lags and the node's
                      bounded Subscription queue (drop-oldest) absorbs it
    --window BYTES    the nodes' link receive window (LinkOptions.window; default 16 MiB): a
                      small window makes a stalled subscriber push back on the domain sooner
    --maxsize Q       the Subscription queue bound (default 4096)
    --linger S        stay subscribed S seconds after every node is done (default 0)

    Lines (``cpu_s``: the process's CPU seconds so far, time.process_time()):
    {"event": "started", "node_ids": [...], "resume": [...]} once every node is
    registered with the domain (``resume[i]``: the seqs node i loaded from its pubsub.json,
    per publisher, as a restarted subscriber resumes from them);
    {"event": "subscribed", "cpu_s": c} once every node's Subscribe was answered;
    {"event": "progress", "node": i, "received": n, "last_seq": s} every --every messages;
    {"event": "done", "node": i, "complete": bool, "cpu_s": c, "seqs_ok": bool, "received": n,
     "duplicates": d, "resume": r, "first_seq": f, "last_seq": l, "gaps": g, "bad_values": b,
     "first_rx": t, "last_rx": t, "lat_ms": {...}, "by_publisher": {id: {"received", "first_rx",
     "last_rx", "lat_ms"}}, "pubsub": {...}} per node (times: wall-clock ms), when its --count
    arrived (or at --deadline, with "complete": false); then {"event": "finished", ...}.

    ``seqs_ok``: in this process's lifetime each publisher's seqs arrived consecutively, each
    once, starting right after the resume point (1 for a fresh subscriber). ``duplicates``:
    seqs the application saw twice (PubSub drops those itself; its own count is in
    ``pubsub.duplicates_dropped``). ``bad_values``: messages whose value["k"] is not seq - 1.
    ``lat_ms``: percentiles of receive time - ``Message.published_ms`` ("pub") and, for values
    carrying a float ms timestamp "t" (publisher --stamp), receive time - t ("stamp"); both on
    the host's wall clock, which publisher and subscribers share on one host. ``published_ms``
    is stamped once per Publish batch (the batch's oldest message), so "pub" over-states the
    latency of later messages in a batch by up to the batch's fill time; "stamp" is exact.

Publisher mode::

    --publish N       publish N messages {"k": i} (i = 0..N-1, so seq = i + 1) and exit
    --rate R          at most R messages/s (default 0: as fast as PubSub's backpressure allows)
    --size B          add "pad": B bytes of text to each value (default 0)
    --stamp           add "t": wall-clock ms (float) to each value (exact latency figures)

    Lines: "started" (as above, one node, with "cpu_s"), then {"event": "published", "n": N, "seconds": s,
    "rate": r, "start_ms": t0, "end_ms": t1} after the last publish() call (t0, t1: wall-clock
    ms before the first and after the last call) and {"event": "done", "acked": bool,
    "seconds": s, "rate": r, "cpu_s": c} once the domain acknowledged every message (PubAck), or at
    --deadline.

Common: ``--deadline S`` (default 120) bounds the whole run; ``-v`` logs to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.node import Node, NodeConfig


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _percentiles(xs: list[float]) -> dict[str, float] | None:
    if not xs:
        return None
    s = sorted(xs)

    def q(p: float) -> float:
        return round(s[min(len(s) - 1, int(p * len(s)))], 3)

    return {"n": len(s), "p50": round(statistics.median(s), 3), "p90": q(0.9), "p99": q(0.99), "max": round(s[-1], 3)}


async def _start_nodes(args: argparse.Namespace, k: int) -> list[Node]:
    link = LinkOptions(window=args.window) if args.window else LinkOptions()
    nodes = []
    for i in range(k):
        state = Path(args.state) / str(i)
        state.mkdir(parents=True, exist_ok=True, mode=0o700)
        ident, _ = Identity.load_or_create(state)
        cfg = NodeConfig(domain=args.domain, allow=None, link_probe_interval=0, link=link)
        nodes.append(Node(ident, state, cfg))
    for node in nodes:
        await node.start()
    async with asyncio.timeout(30.0):
        await asyncio.gather(*(n.registered.wait() for n in nodes))
    return nodes


class _Tally:
    """What one node's application saw."""

    def __init__(self, resume: dict[Any, int]) -> None:
        self.resume = dict(resume)
        self.last: dict[Any, int] = dict(resume)
        self.first: dict[Any, int] = {}
        self.received = 0
        self.duplicates = 0
        self.gaps = 0
        self.bad_values = 0
        self.ok = True
        self.first_rx = 0.0
        self.last_rx = 0.0
        self.lat_pub: list[float] = []
        self.lat_stamp: list[float] = []
        self.by_pub: dict[Any, dict[str, Any]] = {}  # publisher -> received, first_rx, last_rx, latencies

    def add(self, publisher: Any, seq: int, value: Any, published_ms: int, now_ms: float) -> None:
        last = self.last.get(publisher, 0)
        if seq <= last:
            self.duplicates += 1
            self.ok = False
            return
        if seq != last + 1:
            self.gaps += 1
            self.ok = False
        self.first.setdefault(publisher, seq)
        self.last[publisher] = seq
        self.received += 1
        if not (isinstance(value, dict) and value.get("k") == seq - 1):
            self.bad_values += 1
        if self.received == 1:
            self.first_rx = now_ms
        self.last_rx = now_ms
        bp = self.by_pub.get(publisher)
        if bp is None:
            bp = self.by_pub[publisher] = {"received": 0, "first_rx": now_ms, "pub": [], "stamp": []}
        bp["received"] += 1
        bp["last_rx"] = now_ms
        lat = now_ms - published_ms
        self.lat_pub.append(lat)
        bp["pub"].append(lat)
        if isinstance(value, dict) and isinstance(value.get("t"), float):
            lat = now_ms - value["t"]
            self.lat_stamp.append(lat)
            bp["stamp"].append(lat)

    def total(self) -> int:
        return sum(self.last.values())


async def _subscriber(args: argparse.Namespace) -> int:
    nodes = await _start_nodes(args, args.nodes)
    resumes = [dict(n.pubsub.seen.get(args.topic, {})) for n in nodes]
    _emit(
        {
            "event": "started",
            "node_ids": [str(n.identity.node_id) for n in nodes],
            "resume": [{str(p): s for p, s in r.items()} for r in resumes],
        }
    )
    tallies = [_Tally(r) for r in resumes]
    done_flags = [asyncio.Event() for _ in nodes]
    subscribed = asyncio.Semaphore(0)
    slow = args.slow_ms / 1000.0

    async def consume(i: int, node: Node) -> None:
        tally = tallies[i]
        async with node.subscribe(args.topic, maxsize=args.maxsize) as sub:
            subscribed.release()
            if args.count and tally.total() >= args.count:
                done_flags[i].set()
            async for msg in sub:
                tally.add(msg.publisher, msg.seq, msg.value, msg.published_ms, time.time() * 1000.0)
                if args.every == 1:
                    _emit({"node": i, "publisher": str(msg.publisher), "seq": msg.seq, "value": msg.value})
                elif tally.received % args.every == 0:
                    _emit({"event": "progress", "node": i, "received": tally.received, "last_seq": msg.seq})
                if args.count and not done_flags[i].is_set() and tally.total() >= args.count:
                    done_flags[i].set()
                if slow:
                    if args.slow_mode == "block":
                        time.sleep(slow)  # noqa: ASYNC251 -- deliberately stalls the event loop
                    else:
                        await asyncio.sleep(slow)

    def report(i: int, complete: bool) -> None:
        t = tallies[i]
        ps = nodes[i].pubsub.status()
        _emit(
            {
                "event": "done",
                "node": i,
                "complete": complete,
                "cpu_s": time.process_time(),
                "seqs_ok": t.ok,
                "received": t.received,
                "duplicates": t.duplicates,
                "gaps": t.gaps,
                "bad_values": t.bad_values,
                "resume": sum(t.resume.values()),
                "first_seq": min(t.first.values()) if t.first else None,
                "last_seq": max(t.last.values()) if t.last else None,
                "first_rx": t.first_rx,
                "last_rx": t.last_rx,
                "lat_ms": {"pub": _percentiles(t.lat_pub), "stamp": _percentiles(t.lat_stamp)},
                "by_publisher": {
                    str(p): {
                        "received": bp["received"],
                        "first_rx": bp["first_rx"],
                        "last_rx": bp["last_rx"],
                        "lat_ms": {"pub": _percentiles(bp["pub"]), "stamp": _percentiles(bp["stamp"])},
                    }
                    for p, bp in t.by_pub.items()
                },
                "pubsub": {
                    "duplicates_dropped": ps["duplicates_dropped"],
                    "missed": ps["missed"],
                    "app_dropped": ps["subscribed"].get(args.topic, 0),
                    "delivered": ps["delivered"],
                },
            }
        )

    tasks = [asyncio.ensure_future(consume(i, n)) for i, n in enumerate(nodes)]
    started = time.monotonic()
    try:
        async with asyncio.timeout(args.deadline):
            for _ in nodes:
                await subscribed.acquire()
            _emit(
                {"event": "subscribed", "seconds": round(time.monotonic() - started, 3), "cpu_s": time.process_time()}
            )
            pending = set(range(len(nodes)))
            while pending:
                for i in list(pending):
                    if done_flags[i].is_set():
                        report(i, True)
                        pending.discard(i)
                if pending:
                    waits = [asyncio.ensure_future(done_flags[i].wait()) for i in pending]
                    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                    for w in waits:
                        w.cancel()
            if args.linger:
                await asyncio.sleep(args.linger)
    except TimeoutError:
        for i, ev in enumerate(done_flags):
            if not ev.is_set():
                report(i, False)
    finally:
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        _emit({"event": "finished", "all_done": all(e.is_set() for e in done_flags)})
        for n in nodes:
            with contextlib.suppress(Exception):
                await n.stop()
    return 0


async def _publisher(args: argparse.Namespace) -> int:
    (node,) = await _start_nodes(args, 1)
    _emit({"event": "started", "node_ids": [str(node.identity.node_id)], "resume": [{}], "cpu_s": time.process_time()})
    pad = "x" * args.size if args.size else None
    n, rate = args.publish, args.rate
    t0 = time.monotonic()
    start_ms = round(time.time() * 1000.0, 3)
    acked = False
    try:
        async with asyncio.timeout(args.deadline):
            i = 0
            while i < n:
                due = n if rate <= 0 else min(n, int((time.monotonic() - t0) * rate) + 1)
                while i < due:
                    value: dict[str, Any] = {"k": i}
                    if pad is not None:
                        value["pad"] = pad
                    if args.stamp:
                        value["t"] = time.time() * 1000.0
                    await node.publish(args.topic, value)
                    i += 1
                    if rate <= 0 and i % 64 == 0:
                        await asyncio.sleep(0)  # let the sender batch what is queued
                if i < n:
                    await asyncio.sleep(0.002)
            dt = time.monotonic() - t0
            end_ms = round(time.time() * 1000.0, 3)
            _emit(
                {
                    "event": "published",
                    "n": n,
                    "seconds": round(dt, 4),
                    "rate": round(n / dt, 1),
                    "start_ms": start_ms,
                    "end_ms": end_ms,
                }
            )
            while node.pubsub._unacked.get(args.topic):
                await asyncio.sleep(0.005)
            acked = True
    except TimeoutError:
        pass
    dt = time.monotonic() - t0
    _emit(
        {
            "event": "done",
            "acked": acked,
            "seconds": round(dt, 4),
            "rate": round(n / dt, 1),
            "cpu_s": time.process_time(),
        }
    )
    with contextlib.suppress(Exception):
        await node.stop()
    return 0 if acked else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.pubsub_agent", description=__doc__.split("\n")[0])
    p.add_argument("--state", required=True, help="state directory (node i uses DIR/i)")
    p.add_argument("--domain", required=True, help="the domain's URL (ws://127.0.0.1:PORT)")
    p.add_argument("--topic", required=True)
    p.add_argument("--nodes", type=int, default=1)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--slow-ms", type=float, default=0.0)
    p.add_argument("--slow-mode", choices=("block", "async"), default="block")
    p.add_argument("--window", type=int, default=0)
    p.add_argument("--maxsize", type=int, default=4096)
    p.add_argument("--linger", type=float, default=0.0)
    p.add_argument("--publish", type=int, default=0, metavar="N")
    p.add_argument("--rate", type=float, default=0.0)
    p.add_argument("--size", type=int, default=0)
    p.add_argument("--stamp", action="store_true")
    p.add_argument("--deadline", type=float, default=120.0)
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    from edgeagent._malloc import tune_malloc

    tune_malloc()  # as the edgeagent command does
    if args.publish:
        return asyncio.run(_publisher(args))
    return asyncio.run(_subscriber(args))


if __name__ == "__main__":
    sys.exit(main())
