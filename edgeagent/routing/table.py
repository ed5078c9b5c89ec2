"""The route table: known hops with their measured figures, and the candidate routes they make.

Pure bookkeeping: no asyncio, no clock reads (every call that depends on time
takes ``now``, in seconds of the caller's monotonic clock). The driver
(``edgeagent.node``) feeds it link events and measurements and asks it to
choose; ``edgeagent.routing.policy`` does the choosing.

Two kinds of hop live here:

* **local hops** start at this node and name a live connection by ``link_id``
  (the driver maps link ids to Connection objects); their figures come from
  the link's own health (Ping/Pong RTT EWMA, throughput samples, failures);
* **learned hops** were reported by other nodes (a relay's HopReport, the
  domain's RouteReply or PeerList); they expire unless refreshed.

A candidate route to a destination is a direct local hop, or a local hop to a
relay followed by a hop the relay reported from itself to the destination,
or a whole route the network suggested (RouteReply), re-evaluated hop by hop
with what this node knows. Candidates are indexed by destination, so a
selection costs O(hops into that destination), whatever the table's size.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from ..wire.nodeid import NodeId
from ..wire.route import ROUTE_BROADCAST, ROUTE_GENERAL, ROUTE_SOLO, Hop, Route, RouteSchema, RouteSegment
from .priors import Priors

__all__ = [
    "DEAD_AFTER_FAILURES",
    "BroadcastRoute",
    "Candidate",
    "HopState",
    "RouteTable",
    "SoloRoute",
    "hop_kind",
]

#: consecutive failures after which a hop counts as dead until it succeeds again
DEAD_AFTER_FAILURES: Final = 3
#: seconds a failure keeps weighing on a hop (the penalty decays linearly to zero)
FAILURE_MEMORY_S: Final = 30.0
#: weight of one new success/failure in the success-rate EWMA
SUCCESS_ALPHA: Final = 0.2
#: weight of one new sample in the RTT and bandwidth EWMAs (learned figures are replaced outright)
SAMPLE_ALPHA: Final = 0.25
#: learned hops live this long unless refreshed
DEFAULT_LEARNED_TTL_S: Final = 180.0
_KIND_RANK: Final = {"loopback": 0, "ethernet": 1, "wifi": 2, "unknown": 3, "cellular": 4}


def hop_kind(a: str, b: str) -> str:
    """The kind of a hop whose two ends are on networks ``a`` and ``b``: the costlier one."""
    return a if _KIND_RANK.get(a, 3) >= _KIND_RANK.get(b, 3) else b


@dataclass(eq=False, slots=True)
class HopState:
    """One hop and what is known of it.

    ``rtt_ms`` and ``bandwidth_bps`` are measurements (None until measured; the
    priors stand in meanwhile); ``success`` is an EWMA of outcomes (1.0 = every
    recent use worked); ``failures`` counts consecutive failures.
    """

    src: NodeId
    dst: NodeId
    transport: str
    address: str
    network_kind: str
    metered: bool
    cost_per_gb: float
    link_id: str | None = None  # set for local hops: the connection the driver resolves
    alive: bool = True
    rtt_ms: float | None = None
    bandwidth_bps: float | None = None
    success: float = 1.0
    failures: int = 0
    last_failure: float | None = None
    last_success: float | None = None
    bytes_sent: int = 0
    uses: int = 0
    learned_from: NodeId | None = None
    vouched: bool = False  # learned from a trusted node's suggestion (a domain's RouteReply)
    expires: float = math.inf
    updated: float = 0.0
    key: tuple[NodeId, NodeId, str] = field(init=False)  # identity in the table (link id, or transport|address)

    def __post_init__(self) -> None:
        self.key = (self.src, self.dst, self.link_id or f"{self.transport}|{self.address}")

    def dead(self, now: float) -> bool:
        return not self.alive or self.failures >= DEAD_AFTER_FAILURES or now >= self.expires

    def expected_rtt_ms(self, priors: Priors) -> float:
        if self.rtt_ms is not None:
            return self.rtt_ms
        return priors.rtt_ms(self.transport, self.network_kind)

    def expected_bandwidth(self, priors: Priors) -> float:
        if self.bandwidth_bps:
            return self.bandwidth_bps
        return priors.bandwidth_bps(self.transport, self.network_kind)

    def health(self, now: float) -> float:
        """0..1: the success EWMA, lowered while a recent failure is remembered."""
        h = self.success
        if self.last_failure is not None:
            age = now - self.last_failure
            if age < FAILURE_MEMORY_S:
                h *= 0.5 + 0.5 * age / FAILURE_MEMORY_S
        return h

    def to_hop(self, priors: Priors | None = None) -> Hop:
        rtt = self.expected_rtt_ms(priors) if priors else (self.rtt_ms or 0.0)
        bw = self.expected_bandwidth(priors) if priors else (self.bandwidth_bps or 0.0)
        return Hop(
            self.src,
            self.dst,
            transport=self.transport,
            address=self.address,
            rtt_ms=float(rtt),
            bandwidth_bps=float(bw),
            cost_per_gb=self.cost_per_gb,
            network_kind=self.network_kind,
            metered=self.metered,
        )


@dataclass(slots=True)
class Candidate:
    """One way to reach a destination: a path of hops, evaluated at ``now``.

    ``latency_ms`` is the expected one-way latency (half the summed RTTs);
    ``bandwidth_bps`` the bottleneck; ``health`` the product of hop healths;
    ``cost_per_gb`` the summed cost; ``metered`` true when any hop is.
    """

    path: tuple[HopState, ...]
    latency_ms: float
    rtt_ms: float
    bandwidth_bps: float
    health: float
    cost_per_gb: float
    metered: bool
    dead: bool
    label: str = ""
    _key: tuple[tuple[NodeId, NodeId, str], ...] | None = None

    @property
    def link_id(self) -> str:
        lid = self.path[0].link_id
        assert lid is not None
        return lid

    @property
    def key(self) -> tuple[tuple[NodeId, NodeId, str], ...]:
        if self._key is None:
            self._key = tuple(h.key for h in self.path)
        return self._key

    def transfer_s(self, size: int) -> float:
        """Expected seconds to move ``size`` bytes: one RTT plus size / bottleneck bandwidth."""
        return self.rtt_ms / 1000.0 + size / max(self.bandwidth_bps, 1.0)

    def describe(self) -> str:
        if not self.label:
            parts = [str(self.path[0].src)[-6:]]
            for h in self.path:
                tag = h.network_kind + ("/metered" if h.metered else "")
                parts.append(f"-{h.transport}:{tag}->{str(h.dst)[-6:]}")
            self.label = "".join(parts)
        return self.label

    def to_route(self, priors: Priors | None = None) -> Route:
        schema = RouteSchema(self.path[0].src, (self.path[-1].dst,))
        return Route(
            schema,
            RouteSegment(tuple(h.to_hop(priors) for h in self.path), ()),
            kind=ROUTE_SOLO if len(self.path) == 1 else ROUTE_GENERAL,
            latency_ms=self.latency_ms,
            bandwidth_bps=self.bandwidth_bps,
            health=self.health,
            cost_per_gb=self.cost_per_gb,
        )


def SoloRoute(destination: NodeId, connection: HopState, priors: Priors | None = None) -> Route:  # noqa: N802
    """A route of one direct link (``connection``: the local hop) to ``destination``."""
    if connection.dst != destination:
        raise ValueError("a SoloRoute's connection must lead to its destination")
    return Route(
        RouteSchema(connection.src, (destination,)),
        RouteSegment((connection.to_hop(priors),), ()),
        kind=ROUTE_SOLO,
        latency_ms=connection.expected_rtt_ms(priors) / 2 if priors else (connection.rtt_ms or 0.0) / 2,
        bandwidth_bps=connection.expected_bandwidth(priors) if priors else (connection.bandwidth_bps or 0.0),
        health=connection.success,
        cost_per_gb=connection.cost_per_gb,
    )


def BroadcastRoute(  # noqa: N802
    destinations: Iterable[NodeId], connection: HopState | Iterable[Candidate], priors: Priors | None = None
) -> Route:
    """A one-to-many route: every destination through one connection, or a tree of candidate paths.

    With a single local hop (``connection``) the route is that hop fanning out
    to all destinations behind it (the domain, a pub-sub relay). With candidate
    paths, paths sharing their first hops are merged into one tree, so the
    segment's shape is the forwarding tree.
    """
    dests = tuple(destinations)
    if isinstance(connection, HopState):
        src = connection.src
        seg = RouteSegment((connection.to_hop(priors),), ())
        return Route(
            RouteSchema(src, dests),
            seg,
            kind=ROUTE_BROADCAST,
            latency_ms=connection.expected_rtt_ms(priors) / 2 if priors else 0.0,
            bandwidth_bps=connection.expected_bandwidth(priors) if priors else 0.0,
            health=connection.success,
            cost_per_gb=connection.cost_per_gb,
        )
    cands = list(connection)
    if not cands:
        raise ValueError("a BroadcastRoute needs at least one path")
    src = cands[0].path[0].src
    tree = _merge([[h.to_hop(priors) for h in c.path] for c in cands])
    return Route(
        RouteSchema(src, dests),
        RouteSegment((), tuple(tree)),
        kind=ROUTE_BROADCAST,
        latency_ms=max(c.latency_ms for c in cands),
        bandwidth_bps=min(c.bandwidth_bps for c in cands),
        health=min(c.health for c in cands),
        cost_per_gb=sum({h.key: h.cost_per_gb for c in cands for h in c.path}.values()),  # each hop once
    )


def _merge(paths: list[list[Hop]]) -> list[RouteSegment]:
    """Merge paths that share leading hops into segments with children (a prefix tree)."""
    groups: dict[tuple[NodeId, NodeId, str, str], list[list[Hop]]] = {}
    for p in paths:
        if p:
            h = p[0]
            groups.setdefault((h.src, h.dst, h.transport, h.address), []).append(p)
    out = []
    for group in groups.values():
        first = group[0][0]
        out.append(RouteSegment((first,), tuple(_merge([p[1:] for p in group]))))
    return out


@dataclass
class RouteTable:
    """Hops this node knows, indexed by source and destination, and the candidates they make.

    ``me`` is this node. The table never dials or sends; it only remembers and
    evaluates. ``version`` increases on every structural change (a hop added,
    removed, brought up or down), so callers can cache derived views.
    """

    me: NodeId
    priors: Priors = field(default_factory=Priors)
    learned_ttl_s: float = DEFAULT_LEARNED_TTL_S
    max_learned: int = 200_000
    max_learned_into: int = 64  # learned hops kept into one destination (a flood of reports cannot crowd it)
    version: int = 0
    trusted: frozenset[NodeId] = frozenset()  # the domains: their hops and suggested routes need no support
    _by_key: dict[tuple[NodeId, NodeId, str], HopState] = field(default_factory=dict)
    _by_dst: dict[NodeId, dict[tuple[NodeId, NodeId, str], HopState]] = field(default_factory=dict)
    _local: dict[str, HopState] = field(default_factory=dict)  # link id -> local hop
    _local_to: dict[NodeId, dict[str, HopState]] = field(default_factory=dict)  # neighbour -> its local hops
    _suggested: dict[NodeId, dict[tuple[tuple[NodeId, NodeId, str], ...], tuple[float, Route]]] = field(
        default_factory=dict
    )
    _by_src: dict[NodeId, dict[tuple[NodeId, NodeId, str], HopState]] = field(default_factory=dict)
    relays: set[NodeId] = field(default_factory=set)
    _learned_by: dict[NodeId, set[tuple[NodeId, NodeId, str]]] = field(default_factory=dict)
    _learned_count: int = 0

    # -- local hops (live links) -----------------------------------------------------------

    def link_up(
        self,
        link_id: str,
        peer: NodeId,
        *,
        transport: str,
        address: str = "",
        now: float,
        local_kind: str = "unknown",
        local_metered: bool = False,
        local_cost_per_gb: float = 0.0,
        peer_kind: str = "unknown",
        peer_metered: bool = False,
        peer_relays: bool = False,
    ) -> HopState:
        """A connection to ``peer`` came up. Its kind is the costlier of both ends; both ends' costs add."""
        hop = HopState(
            self.me,
            peer,
            transport,
            address,
            hop_kind(local_kind, peer_kind),
            local_metered or peer_metered,
            local_cost_per_gb,
            link_id=link_id,
            updated=now,
        )
        self.set_relay(peer, peer_relays)
        if link_id in self._local:
            self.link_down(link_id, now)  # a reused id: forget the old hop everywhere
        self._local[link_id] = hop
        self._local_to.setdefault(peer, {})[link_id] = hop
        self._add(hop)
        return hop

    def link_down(self, link_id: str, now: float) -> None:
        """The connection closed: its hop is gone (a route through it is dead)."""
        hop = self._local.pop(link_id, None)
        if hop is None:
            return
        hop.alive = False
        hop.last_failure = now
        peers = self._local_to.get(hop.dst)
        if peers is not None:
            peers.pop(link_id, None)
            if not peers:
                del self._local_to[hop.dst]
        self._remove(hop)

    def local(self, link_id: str) -> HopState | None:
        return self._local.get(link_id)

    def local_hops(self) -> list[HopState]:
        return list(self._local.values())

    def neighbours(self) -> set[NodeId]:
        return set(self._local_to)

    def set_relay(self, node: NodeId, relays: bool) -> None:
        """Remember whether ``node`` forwards messages for others (Hello capability, HopReport, domain role)."""
        if relays:
            self.relays.add(node)
        else:
            self.relays.discard(node)

    def observe(
        self,
        link_id: str,
        now: float,
        *,
        rtt_ms: float | None = None,
        bandwidth_bps: float | None = None,
        failures: int | None = None,
        bytes_sent: int | None = None,
    ) -> None:
        """Fold a measurement of one connection in (link health ticks, probes, transfers)."""
        hop = self._local.get(link_id)
        if hop is None:
            return
        if rtt_ms is not None and rtt_ms >= 0:
            hop.rtt_ms = rtt_ms  # already an EWMA kept by the link
        if bandwidth_bps is not None and bandwidth_bps > 0:
            hop.bandwidth_bps = (
                bandwidth_bps
                if hop.bandwidth_bps is None
                else (1 - SAMPLE_ALPHA) * hop.bandwidth_bps + SAMPLE_ALPHA * bandwidth_bps
            )
        if failures is not None:
            if failures > hop.failures:
                hop.last_failure = now
                hop.success = (1 - SUCCESS_ALPHA) * hop.success
            hop.failures = failures
        if bytes_sent is not None:
            hop.bytes_sent = bytes_sent
        hop.updated = now

    def record(self, link_id: str, ok: bool, now: float) -> None:
        """The outcome of one use of a connection (a reply arrived, a send failed, a transfer stalled)."""
        hop = self._local.get(link_id)
        if hop is None:
            return
        hop.uses += 1
        if ok:
            hop.success = (1 - SUCCESS_ALPHA) * hop.success + SUCCESS_ALPHA
            hop.failures = 0
            hop.last_success = now
        else:
            hop.success = (1 - SUCCESS_ALPHA) * hop.success
            hop.failures += 1
            hop.last_failure = now

    # -- learned hops and suggested routes -------------------------------------------------

    def learn(
        self,
        hops: Iterable[Hop],
        now: float,
        *,
        learned_from: NodeId,
        ttl_s: float | None = None,
        replace: bool = False,
        vouched: bool = False,
    ) -> int:
        """Remember hops another node reported; returns how many were taken.

        Hops that start at this node are ignored (this node knows its own links
        better). With ``replace`` the report is the whole truth from
        ``learned_from``: its earlier hops not in this report are dropped. The
        driver decides whom to believe (a node's own HopReport about its own
        hops, a domain's RouteReply).
        """
        expires = now + (self.learned_ttl_s if ttl_s is None else ttl_s)
        taken = 0
        mine = self._learned_by.setdefault(learned_from, set())
        fresh: set[tuple[NodeId, NodeId, str]] = set()
        for h in hops:
            if h.src in (self.me, h.dst):
                continue
            key = (h.src, h.dst, f"{h.transport}|{h.address}")
            hop = self._by_key.get(key)
            if hop is None:
                if self._learned_count >= self.max_learned or len(self._by_dst.get(h.dst, ())) >= self.max_learned_into:
                    continue
                hop = HopState(h.src, h.dst, h.transport, h.address, h.network_kind, h.metered, h.cost_per_gb)
                self._add(hop)
                self._learned_count += 1
            elif hop.link_id is not None:
                continue
            if hop.learned_from is not None and hop.learned_from != learned_from:
                other = self._learned_by.get(hop.learned_from)
                if other is not None:
                    other.discard(key)
            hop.network_kind = h.network_kind
            hop.metered = h.metered
            hop.cost_per_gb = h.cost_per_gb
            hop.rtt_ms = h.rtt_ms or None
            hop.bandwidth_bps = h.bandwidth_bps or None
            hop.expires = expires
            hop.updated = now
            hop.learned_from = learned_from
            hop.vouched = vouched
            mine.add(key)
            fresh.add(key)
            taken += 1
        if replace:
            for key in mine - fresh:
                hop = self._by_key.get(key)
                if hop is not None and hop.link_id is None:
                    self._remove(hop)
                    self._learned_count -= 1
            self._learned_by[learned_from] = fresh
        if not self._learned_by.get(learned_from):
            self._learned_by.pop(learned_from, None)
        return taken

    def forget_learned_from(self, node: NodeId) -> int:
        """Drop every hop ``node`` reported (it went away, or it stopped relaying)."""
        gone = 0
        for key in self._learned_by.pop(node, set()):
            hop = self._by_key.get(key)
            if hop is not None and hop.link_id is None:
                self._remove(hop)
                self._learned_count -= 1
                gone += 1
        return gone

    def supported(self, hop: HopState) -> bool:
        """Whether a hop another node reported may carry traffic: a relay claiming a hop to V becomes a
        route to V only when V's own report has the hop back to the relay, a trusted node (a domain)
        vouched for it, or the relay is trusted itself. Local hops are measured, so supported."""
        return hop.link_id is not None or hop.vouched or self._claim_supported(hop.src, hop.dst)

    def _claim_supported(self, src: NodeId, dst: NodeId) -> bool:
        if src in self.trusted or src == self.me:
            return True
        back = self._by_src.get(dst)
        return back is not None and any(b.dst == src and b.learned_from == dst for b in back.values())

    def suggest(self, route: Route, now: float, *, ttl_s: float | None = None, vouched: bool = False) -> bool:
        """Remember a whole route another node suggested (RouteReply). Only routes from here are kept.

        ``vouched``: a trusted node (a domain) suggested it; otherwise each reported hop of it must be
        ``supported`` already."""
        if route.stops is None or route.schema.source != self.me or len(route.schema.destinations) != 1:
            return False
        hops = route.stops.hops
        if not hops or hops[0].src != self.me or route.stops.children:
            return False
        for a, b in itertools.pairwise(hops):
            if a.dst != b.src:
                return False
        nodes = [h.src for h in hops] + [hops[-1].dst]
        if len(set(nodes)) != len(nodes):
            return False  # a loop
        dst = route.schema.destinations[0]
        if hops[-1].dst != dst:
            return False
        if not vouched:
            for h in hops[1:]:
                known = self._by_key.get((h.src, h.dst, f"{h.transport}|{h.address}"))
                if not (self.supported(known) if known is not None else self._claim_supported(h.src, h.dst)):
                    return False
        self.learn(hops[1:], now, learned_from=hops[0].dst, ttl_s=ttl_s, vouched=vouched)
        key = tuple((h.src, h.dst, f"{h.transport}|{h.address}") for h in hops)
        self._suggested.setdefault(dst, {})[key] = (now + (self.learned_ttl_s if ttl_s is None else ttl_s), route)
        self.version += 1
        return True

    def expire(self, now: float) -> int:
        """Drop learned hops and suggested routes past their expiry; returns how many went."""
        gone = [h for h in self._by_key.values() if h.link_id is None and now >= h.expires]
        for h in gone:
            self._remove(h)
            self._learned_count -= 1
            if h.learned_from is not None:
                keys = self._learned_by.get(h.learned_from)
                if keys is not None:
                    keys.discard(h.key)
                    if not keys:
                        del self._learned_by[h.learned_from]
        for dst in list(self._suggested):
            routes = self._suggested[dst]
            for k in [k for k, (exp, _) in routes.items() if now >= exp]:
                del routes[k]
            if not routes:
                del self._suggested[dst]
        return len(gone)

    # -- candidates ------------------------------------------------------------------------

    def candidates(self, dst: NodeId, now: float, *, exclude_first: NodeId | None = None) -> list[Candidate]:
        """Every route to ``dst`` this node can use: direct, via one relay, or suggested.

        ``exclude_first`` drops routes whose first hop goes to that node (a relay
        does not send a message back where it came from).
        """
        out: list[Candidate] = []
        for hop in self._local_to.get(dst, {}).values():
            if dst != exclude_first:
                out.append(self._evaluate((hop,), now))
        into = self._by_dst.get(dst)
        if into:
            local_to = self._local_to
            relays = self.relays
            for last in into.values():
                relay = last.src
                if relay in (self.me, exclude_first) or relay not in relays or not self.supported(last):
                    continue
                firsts = local_to.get(relay)
                if firsts:
                    for first in firsts.values():
                        out.append(self._evaluate((first, last), now))
        suggested = self._suggested.get(dst)
        if suggested:
            known = {tuple(h.dst for h in c.path) for c in out}
            for expires, route in suggested.values():
                if now >= expires or route.stops is None:
                    continue
                nodes = tuple(h.dst for h in route.stops.hops)
                if nodes in known:
                    continue  # the same journey is already a candidate
                path = self._resolve(route.stops.hops)
                if path is None or (exclude_first is not None and path[0].dst == exclude_first):
                    continue
                known.add(nodes)
                out.append(self._evaluate(path, now))
        return out

    def _resolve(self, hops: tuple[Hop, ...]) -> tuple[HopState, ...] | None:
        """Map a suggested route's hops onto this table (the first must be a live local link)."""
        firsts = self._local_to.get(hops[0].dst)
        if not firsts or (len(hops) > 1 and hops[0].dst not in self.relays):
            return None
        first = next((h for h in firsts.values() if h.transport == hops[0].transport), None) or next(
            iter(firsts.values())
        )
        path = [first]
        for h in hops[1:]:
            known = self._by_key.get((h.src, h.dst, f"{h.transport}|{h.address}"))
            if known is None:
                return None
            path.append(known)
        return tuple(path)

    def _evaluate(self, path: tuple[HopState, ...], now: float) -> Candidate:
        priors = self.priors
        rtt = 0.0
        bw = math.inf
        health = 1.0
        cost = 0.0
        metered = False
        dead = False
        for h in path:
            rtt += h.expected_rtt_ms(priors)
            b = h.expected_bandwidth(priors)
            bw = min(bw, b)
            health *= h.health(now)
            cost += h.cost_per_gb
            metered = metered or h.metered
            dead = dead or h.dead(now)
        if len(path) > 1:
            rtt += priors.relay_ms * (len(path) - 1)
        return Candidate(path, rtt / 2, rtt, bw, health, cost, metered, dead)

    def routes_between(self, src: NodeId, dst: NodeId, now: float, *, via_me: bool = True) -> list[Candidate]:
        """Paths from another node ``src`` to ``dst`` in this node's view (answering a RouteRequest).

        Direct hops src->dst, and src->relay->dst where the relay forwards (this
        node counts as a relay when ``via_me``). The first hop src->me is
        mirrored from this node's own link to src when src did not report it.
        """
        out: list[Candidate] = []
        out_of_src = self._by_src.get(src, {})
        firsts = list(out_of_src.values())
        if via_me and not any(h.dst == self.me for h in firsts):
            firsts.extend(self._mirror(h) for h in self._local_to.get(src, {}).values())
        for h1 in firsts:
            if h1.dst == dst:
                out.append(self._evaluate((h1,), now))
                continue
            relay = h1.dst
            if relay not in self.relays and not (via_me and relay == self.me):
                continue
            for h2 in self._by_src.get(relay, {}).values():
                if h2.dst == dst and (relay == self.me or self.supported(h2)):
                    out.append(self._evaluate((h1, h2), now))
        return out

    def _mirror(self, hop: HopState) -> HopState:
        """The reverse direction of a local hop (same transport and kind), as a learned hop."""
        back = HopState(hop.dst, hop.src, hop.transport, "", hop.network_kind, hop.metered, hop.cost_per_gb)
        back.rtt_ms = hop.rtt_ms
        back.bandwidth_bps = hop.bandwidth_bps
        back.alive = hop.alive
        return back

    # -- views -----------------------------------------------------------------------------

    def hops(self) -> Iterator[HopState]:
        return iter(self._by_key.values())

    def hops_into(self, dst: NodeId) -> list[HopState]:
        return list(self._by_dst.get(dst, {}).values())

    def destinations(self) -> set[NodeId]:
        return set(self._by_dst) | set(self._suggested)

    def __len__(self) -> int:
        return len(self._by_key)

    def _add(self, hop: HopState) -> None:
        key = hop.key
        old = self._by_key.get(key)
        if old is not None and old is not hop:
            self._remove(old)
        self._by_key[key] = hop
        self._by_dst.setdefault(hop.dst, {})[key] = hop
        self._by_src.setdefault(hop.src, {})[key] = hop
        self.version += 1

    def _remove(self, hop: HopState) -> None:
        key = hop.key
        if self._by_key.get(key) is hop:
            del self._by_key[key]
        into = self._by_dst.get(hop.dst)
        if into is not None and into.get(key) is hop:
            del into[key]
            if not into:
                del self._by_dst[hop.dst]
        out = self._by_src.get(hop.src)
        if out is not None and out.get(key) is hop:
            del out[key]
            if not out:
                del self._by_src[hop.src]
        self.version += 1
