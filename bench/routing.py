#!/usr/bin/env python3
"""Route selection benchmark: ``Router.select`` per message on a large route table.

The table is built the way a busy node's table looks (seeded, reproducible):

* ``--links`` local links (default 50) to ``--links - --second-links`` distinct
  neighbours; ``--second-links`` neighbours have a second link over another
  transport (WebSocket + WebRTC); ``--relays`` neighbours relay (the domain and
  a few relay nodes). Kinds are ethernet / wifi / cellular, cellular links are
  metered and cost money; every link has a measured RTT and bandwidth, a few
  have recent failures and one is dead;
* ``--suggested`` routes (RouteReply) ``me -> relay -> X -> peer`` whose hops
  are learned along with them;
* learned hops to reach ``--peers`` peers (default 10,000): hops from the
  relays to the peers (each peer reachable through 1-4 relays) and hops
  between other nodes (a domain's PeerList view, which makes no candidate here
  but fills the table), so the table holds ``--hops`` hops in all (default
  50,000, local links included).

Each selection picks a random known peer (the same sequence every round) and
calls ``Router.select(peer, traits, now)`` with an explicit, advancing ``now``:
``request`` (lowest latency) and ``bulk`` (10 MB, 10 s deadline: cheapest
unmetered route meeting it). One Router serves the whole run, so hysteresis
state (the current route per destination and purpose) is realistic.

Method: warm up (one pass over every destination per purpose), then
``--rounds`` rounds of ``--selections`` selections per purpose, each call timed
alone with ``time.perf_counter_ns`` (the clock's own cost is measured and
shown; it is not subtracted). Per round: median, p99 and mean; the report
shows the median over rounds (and the range). The garbage collector is off
while a round runs (as ``timeit`` does); ``--gc`` leaves it on.

Table size: RSS growth of the process while the table is built (psutil; the
inputs are generated first), and with ``--tracemalloc`` the bytes Python
allocated for it (a second, traced build).

Target: <= 50 us median per selection.

Usage::

    .venv/bin/python bench/routing.py                 # full run
    .venv/bin/python bench/routing.py --quick         # smoke run (~seconds)
    .venv/bin/python bench/routing.py --json          # one JSON line on stdout
    .venv/bin/python bench/routing.py --profile       # cProfile of one round per purpose
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import json
import os
import platform
import pstats
import random
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import edgeagent  # noqa: E402
from edgeagent.routing import Router, RouteTable, Traits  # noqa: E402
from edgeagent.wire import Hop, NodeId, Route, RouteSchema, RouteSegment  # noqa: E402

TARGET_US: Final = 50.0
MB: Final = 1_000_000
PURPOSES: Final = {
    "request": Traits("request"),
    "bulk": Traits("bulk", size=10 * MB, deadline_s=10.0),
}
KINDS: Final = ("ethernet", "wifi", "wifi", "cellular")


def node(i: int) -> NodeId:
    return NodeId.from_public_key(i.to_bytes(32, "big"))


# -- the table -----------------------------------------------------------------


@dataclass
class Inputs:
    """Everything the table is built from, generated before the build is timed."""

    me: NodeId
    peers: list[NodeId]
    links: list[dict[str, Any]]
    observations: list[tuple[str, float, float, int]]  # link id, rtt ms, bandwidth B/s, failures
    reports: list[tuple[NodeId, list[Hop]]]  # (reporter, hops): one HopReport / PeerList each
    suggested: list[Route]
    dead_link: str


def make_inputs(args: argparse.Namespace) -> Inputs:
    rng = random.Random(args.seed)
    me = node(0)
    peers = [node(i) for i in range(1, args.peers + 1)]
    n_neigh = args.links - args.second_links
    neighbours = peers[:n_neigh]
    relays = neighbours[: args.relays]

    links: list[dict[str, Any]] = []
    observations: list[tuple[str, float, float, int]] = []
    for i in range(args.links):
        peer = neighbours[i] if i < n_neigh else neighbours[i - n_neigh]
        transport = "websocket" if i < n_neigh else "webrtc"
        kind = rng.choice(KINDS)
        metered = kind == "cellular"
        link_id = f"L{i}"
        links.append(
            {
                "link_id": link_id,
                "peer": peer,
                "transport": transport,
                "address": f"{transport}://10.0.{i // 250}.{i % 250}:7000",
                "local_kind": kind,
                "local_metered": metered,
                "local_cost_per_gb": rng.choice([0.5, 1.0, 2.0]) if metered else 0.0,
                "peer_kind": rng.choice(KINDS),
                "peer_relays": peer in relays,
            }
        )
        rtt = {"ethernet": 1.0, "wifi": 6.0, "cellular": 60.0}[kind] * rng.uniform(0.5, 2.0)
        bw = {"ethernet": 50e6, "wifi": 6e6, "cellular": 1.2e6}[kind] * rng.uniform(0.5, 1.5)
        failures = 1 if rng.random() < 0.1 else 0
        observations.append((link_id, rtt, bw, failures))

    def learned_hop(src: NodeId, dst: NodeId) -> Hop:
        kind = rng.choice(KINDS)
        metered = kind == "cellular" and rng.random() < 0.7
        return Hop(
            src,
            dst,
            transport=rng.choice(("websocket", "webrtc")),
            address=f"ws://{dst.public_key[-4:].hex()}.example:7000",
            rtt_ms=rng.choice([0.0, rng.uniform(1.0, 120.0)]),
            bandwidth_bps=rng.choice([0.0, rng.uniform(0.5e6, 60e6)]),
            cost_per_gb=rng.choice([0.5, 1.0]) if metered else 0.0,
            network_kind=kind,
            metered=metered,
        )

    by_reporter: dict[NodeId, list[Hop]] = {r: [] for r in relays}
    seen: set[tuple[NodeId, NodeId, str]] = set()

    def fresh(h: Hop) -> bool:
        key = (h.src, h.dst, f"{h.transport}|{h.address}")
        if key in seen or h.src == h.dst:
            return False
        seen.add(key)
        return True

    def add(reporter: NodeId, h: Hop) -> bool:
        if not fresh(h):
            return False
        by_reporter.setdefault(reporter, []).append(h)
        return True

    # suggested routes me -> relay -> X -> peer (their two learned hops count in the budget)
    suggested: list[Route] = []
    others = peers[n_neigh:]
    while len(suggested) < args.suggested:
        r = rng.choice(relays)
        x, dst = rng.sample(others, 2)
        hops = (Hop(me, r, transport="websocket"), learned_hop(r, x), learned_hop(x, dst))
        if fresh(hops[1]) and fresh(hops[2]):
            suggested.append(Route(RouteSchema(me, (dst,)), RouteSegment(hops, ())))

    # the table ends with links - 1 local hops (one link goes down) and the suggested routes' hops
    budget = args.hops - (args.links - 1) - 2 * args.suggested
    if budget < 0:
        raise SystemExit("--hops too small for --links and --suggested")
    relay_share = int(budget * args.relay_share)

    # relay hops: every peer behind 1-4 relays, until the relay share is spent
    made = 0
    order = list(peers)
    while made < relay_share:
        rng.shuffle(order)
        for p in order:
            for r in rng.sample(relays, rng.randint(1, min(4, len(relays)))):
                if made < relay_share and add(r, learned_hop(r, p)):
                    made += 1
            if made >= relay_share:
                break
    # the rest: hops between other nodes, as the domain (the first relay) reports them
    domain = relays[0]
    made = 0
    while made < budget - relay_share:
        a, b = rng.sample(peers, 2)
        if add(domain, learned_hop(a, b)):
            made += 1
    reports = [(r, hs) for r, hs in by_reporter.items() if hs]
    dead_link = f"L{args.links - 1}"
    return Inputs(me, peers, links, observations, reports, suggested, dead_link)


def build_table(inp: Inputs) -> RouteTable:
    table = RouteTable(inp.me, max_learned=10_000_000, learned_ttl_s=3600.0)
    for spec in inp.links:
        kw = dict(spec)
        table.link_up(kw.pop("link_id"), kw.pop("peer"), now=0.0, **kw)
    for link_id, rtt, bw, failures in inp.observations:
        table.observe(link_id, 1.0, rtt_ms=rtt, bandwidth_bps=bw, failures=failures)
    for reporter, hops in inp.reports:
        table.learn(hops, 2.0, learned_from=reporter)
    for route in inp.suggested:
        table.suggest(route, 3.0)
    table.link_down(inp.dead_link, 4.0)
    return table


def rss_bytes() -> int | None:
    try:
        import psutil
    except ImportError:  # pragma: no cover - Termux without python-psutil
        pass
    else:
        return int(psutil.Process().memory_info().rss)
    try:  # Linux without psutil
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError):
        return None


# -- timing --------------------------------------------------------------------


@dataclass
class Rounds:
    """Per-round statistics of one purpose, in nanoseconds per selection."""

    medians: list[float] = field(default_factory=list)
    p99s: list[float] = field(default_factory=list)
    means: list[float] = field(default_factory=list)
    maxes: list[float] = field(default_factory=list)
    considered: float = 0.0  # candidates per selection (mean)
    changes: int = 0

    @property
    def median_us(self) -> float:
        return statistics.median(self.medians) / 1000

    @property
    def p99_us(self) -> float:
        return statistics.median(self.p99s) / 1000

    @property
    def mean_us(self) -> float:
        return statistics.median(self.means) / 1000


def percentile(sorted_ns: list[int], q: float) -> float:
    if not sorted_ns:
        return 0.0
    i = min(len(sorted_ns) - 1, max(0, round(q * (len(sorted_ns) - 1))))
    return float(sorted_ns[i])


def clock_overhead_ns() -> float:
    clock = time.perf_counter_ns
    samples = []
    for _ in range(20_000):
        a = clock()
        b = clock()
        samples.append(b - a)
    return statistics.median(samples)


def time_round(router: Router, dsts: list[NodeId], traits: Traits, now0: float, use_gc: bool) -> list[int]:
    clock = time.perf_counter_ns
    select = router.select
    out = [0] * len(dsts)
    gc_was = gc.isenabled()
    if not use_gc:
        gc.disable()
    try:
        now = now0
        for i, d in enumerate(dsts):
            now += 0.0001
            t0 = clock()
            select(d, traits, now)
            out[i] = clock() - t0
    finally:
        if gc_was:
            gc.enable()
    return out


def run(router: Router, peers: list[NodeId], args: argparse.Namespace) -> dict[str, Rounds]:
    rng = random.Random(args.seed + 1)
    dsts = [rng.choice(peers) for _ in range(args.selections)]
    results = {p: Rounds() for p in PURPOSES}
    now = 10.0
    # warm up: every destination once per purpose (fills the Router's current routes), then one round
    for traits in PURPOSES.values():
        time_round(router, peers, traits, now, args.gc)
        time_round(router, dsts, traits, now, args.gc)
    for r in range(args.rounds):
        order = list(PURPOSES.items())
        if r % 2:
            order.reverse()
        for name, traits in order:
            gc.collect()
            changes0 = router.changes
            now += 1.0
            ns = time_round(router, dsts, traits, now, args.gc)
            res = results[name]
            res.changes += router.changes - changes0
            ns.sort()
            res.medians.append(percentile(ns, 0.5))
            res.p99s.append(percentile(ns, 0.99))
            res.means.append(sum(ns) / len(ns))
            res.maxes.append(float(ns[-1]))
    for name, traits in PURPOSES.items():
        sample = dsts[: min(len(dsts), 2000)]
        n = [ch.considered for d in sample if (ch := router.select(d, traits, now)) is not None]
        results[name].considered = sum(n) / max(len(n), 1)
    return results


def profile(router: Router, peers: list[NodeId], args: argparse.Namespace) -> str:
    rng = random.Random(args.seed + 2)
    dsts = [rng.choice(peers) for _ in range(args.selections)]
    prof = cProfile.Profile()
    lines = []
    for name, traits in PURPOSES.items():
        prof.enable()
        time_round(router, dsts, traits, 1000.0, args.gc)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(18)
        lines.append(f"== cProfile, purpose {name}, {len(dsts)} selections, sorted by own time ==")
        lines.append(buf.getvalue())
        prof = cProfile.Profile()
    return "\n".join(lines)


# -- report --------------------------------------------------------------------


def environment() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover
        load = None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "edgeagent": edgeagent.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "loadavg": load,
    }


async def discovery_round_trip(n: int) -> dict[str, float]:
    """Median ms of a RouteRequest answered by a domain vs a Ping over the same link (loopback websockets).

    A domain and three devices (B relays to C); device A asks the domain for routes
    to C ``n`` times; the Ping round trip on the same link is measured alternately,
    so the ratio is the cost of route discovery over a bare round trip.
    """
    import asyncio
    import statistics
    import tempfile
    from pathlib import Path

    from edgeagent.identity import Identity
    from edgeagent.node import Node, NodeConfig
    from edgeagent.wire import RouteReply, RouteRequest

    with tempfile.TemporaryDirectory() as tmp:
        common: dict[str, Any] = {"allow": None, "route_tick": 0.1, "link_probe_interval": 0}
        d = Node(Identity.generate(), Path(tmp) / "D", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **common))
        await d.start()
        url = d.listen_urls[0]
        c = Node(Identity.generate(), Path(tmp) / "C", NodeConfig(listen=["ws://127.0.0.1:0"], domain=url, **common))
        await c.start()
        b = Node(
            Identity.generate(),
            Path(tmp) / "B",
            NodeConfig(listen=["ws://127.0.0.1:0"], domain=url, peers=[c.listen_urls[0]], forward=True, **common),
        )
        await b.start()
        a = Node(Identity.generate(), Path(tmp) / "A", NodeConfig(domain=url, peers=[b.listen_urls[0]], **common))
        await a.start()
        try:
            cid, did = c.identity.node_id, d.identity.node_id
            bid = b.identity.node_id
            for _ in range(200):  # wait for the domain to learn A's hop to B and B's hop to C
                hops = {(h.src, h.dst) for h in d.router.table.hops()}
                if (bid, cid) in hops and (a.identity.node_id, bid) in hops:
                    break
                await asyncio.sleep(0.05)
            link = a.links[did][0]
            req_ms, ping_ms, routes = [], [], 0
            for _ in range(n):
                t0 = time.perf_counter()
                reply = await a.request(did, RouteRequest((cid,), "bulk", 32 << 20))
                req_ms.append((time.perf_counter() - t0) * 1000)
                assert isinstance(reply, RouteReply)
                routes = len(reply.routes)
                t0 = time.perf_counter()
                await link.ping()
                ping_ms.append((time.perf_counter() - t0) * 1000)
            return {
                "route_request_ms": statistics.median(req_ms),
                "ping_ms": statistics.median(ping_ms),
                "ratio": statistics.median(req_ms) / statistics.median(ping_ms),
                "routes_in_reply": routes,
            }
        finally:
            for x in (a, b, c, d):
                await x.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    inp = make_inputs(args)
    gc.collect()
    rss0 = rss_bytes()
    t0 = time.perf_counter()
    table = build_table(inp)
    build_s = time.perf_counter() - t0
    gc.collect()
    rss1 = rss_bytes()
    rss_delta = None if rss0 is None or rss1 is None else rss1 - rss0
    traced = None
    if args.tracemalloc:
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        twin = build_table(inp)
        traced = tracemalloc.get_traced_memory()[0] - base
        tracemalloc.stop()
        del twin
    stats = {
        "hops": len(table),
        "local_links": len(table.local_hops()),
        "neighbours": len(table.neighbours()),
        "relays": len(table.relays),
        "destinations": len(table.destinations()),
        "suggested_routes": args.suggested,
    }
    del inp.reports
    router = Router(table)
    overhead = clock_overhead_ns()
    results = run(router, inp.peers, args)
    prof_text = profile(router, inp.peers, args) if args.profile else ""
    import asyncio

    disc = asyncio.run(discovery_round_trip(args.discovery_requests)) if args.discovery_requests else None
    elapsed = time.perf_counter() - started
    env = environment()
    if args.json:
        out = {
            "environment": env,
            "params": {
                k: getattr(args, k)
                for k in ("peers", "hops", "links", "second_links", "relays", "suggested", "selections", "rounds")
            },
            "table": {
                **stats,
                "build_s": build_s,
                "rss_delta_bytes": rss_delta,
                "traced_bytes": traced,
                "rss_total_bytes": rss1,
            },
            "clock_overhead_ns": overhead,
            "gc_during_rounds": args.gc,
            "target_median_us": TARGET_US,
            "results": {
                name: {
                    "median_us": r.median_us,
                    "p99_us": r.p99_us,
                    "mean_us": r.mean_us,
                    "median_us_per_round": [x / 1000 for x in r.medians],
                    "p99_us_per_round": [x / 1000 for x in r.p99s],
                    "max_us_per_round": [x / 1000 for x in r.maxes],
                    "candidates_per_selection": r.considered,
                    "route_changes": r.changes,
                    "meets_target": r.median_us <= TARGET_US,
                }
                for name, r in results.items()
            },
            "discovery": disc,
            "elapsed_s": elapsed,
        }
        print(json.dumps(out))
    else:
        print("edgeagent.routing selection benchmark: Router.select per message, one large route table")
        print(
            f"Python {env['python']} ({env['python_implementation']}) | edgeagent {env['edgeagent']} | "
            f"{env['platform']}, {env['cpus']} CPUs, loadavg {env['loadavg']}"
        )
        print(
            f"Table: {stats['hops']:,} hops ({stats['local_links']} live local links to {stats['neighbours']} "
            f"neighbours, {stats['relays']} relaying), {stats['destinations']:,} destinations, "
            f"{args.suggested:,} suggested routes; {args.peers:,} peers selected among"
        )
        mem = f"RSS +{rss_delta / MB:.1f} MB" if rss_delta is not None else "RSS n/a"
        if traced is not None:
            mem += f", traced {traced / MB:.1f} MB ({traced / max(stats['hops'], 1):.0f} B/hop)"
        print(f"Build: {build_s * 1000:.0f} ms ({build_s / max(stats['hops'], 1) * 1e6:.1f} us/hop); {mem}")
        print(
            f"Method: {args.rounds} rounds x {args.selections:,} selections per purpose, each call timed alone "
            f"(perf_counter_ns, clock cost {overhead:.0f} ns, not subtracted), GC {'on' if args.gc else 'off'}; "
            "median over rounds [range]"
        )
        print()
        print(
            f"{'purpose':<9}{'median us':>11}{'range':>17}{'p99 us':>10}{'range':>19}{'mean us':>9}"
            f"{'cands':>7}{'changes':>9}{'<=50us':>8}"
        )
        for name, r in results.items():
            med_rng = f"[{min(r.medians) / 1000:.1f}-{max(r.medians) / 1000:.1f}]"
            p99_rng = f"[{min(r.p99s) / 1000:.1f}-{max(r.p99s) / 1000:.1f}]"
            print(
                f"{name:<9}{r.median_us:>11.1f}{med_rng:>17}{r.p99_us:>10.1f}{p99_rng:>19}{r.mean_us:>9.1f}"
                f"{r.considered:>7.1f}{r.changes:>9}{'ok' if r.median_us <= TARGET_US else 'MISS':>8}"
            )
        print()
        if disc is not None:
            print(
                f"Route discovery through a domain (loopback websockets, {args.discovery_requests} requests): "
                f"RouteRequest->RouteReply median {disc['route_request_ms']:.2f} ms vs Ping {disc['ping_ms']:.2f} ms "
                f"on the same link ({disc['ratio']:.1f}x), {disc['routes_in_reply']} routes per reply"
            )
            print()
        if prof_text:
            print(prof_text)
        print(f"elapsed {elapsed:.1f} s")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--peers", type=int, default=10_000, help="known peers (default 10,000)")
    parser.add_argument("--hops", type=int, default=50_000, help="hops in the table, local links included")
    parser.add_argument("--links", type=int, default=50, help="live local links (default 50)")
    parser.add_argument("--second-links", type=int, default=10, help="neighbours with a second (WebRTC) link")
    parser.add_argument("--relays", type=int, default=8, help="neighbours that relay (default 8)")
    parser.add_argument("--suggested", type=int, default=1_000, help="suggested routes (RouteReply)")
    parser.add_argument(
        "--relay-share", type=float, default=0.6, help="share of learned hops from relays to peers (rest: others)"
    )
    parser.add_argument("--selections", type=int, default=20_000, help="selections per round and purpose")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--discovery-requests", type=int, default=200, help="RouteRequests timed through a domain (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--gc", action="store_true", help="leave the garbage collector on while timing")
    parser.add_argument("--tracemalloc", action="store_true", help="also measure the table's bytes (second build)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of one round per purpose")
    parser.add_argument("--quick", action="store_true", help="smoke run: 2 rounds of 2,000 selections")
    parser.add_argument("--json", action="store_true", help="print one JSON line with every figure")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds = min(args.rounds, 2)
        args.selections = min(args.selections, 2_000)
    if args.rounds < 1 or args.selections < 1 or args.peers < args.links or not 0 < args.relays <= args.links:
        parser.error("need --rounds, --selections >= 1, --peers >= --links, 0 < --relays <= --links")
    if not 0 <= args.second_links < args.links:
        parser.error("--second-links must be in [0, --links)")
    return args


if __name__ == "__main__":
    sys.exit(main())
