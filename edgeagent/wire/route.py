"""The serialisable forms of routes: Hop, RouteSegment, RouteSchema, Route.

These are plain data (what an Envelope carries as its *expected journey*, what a
RouteReply answers and what a TreeAssign hands out). ``edgeagent.routing`` keeps
the route table, the measured statistics and the selection policy on top of
them. A route names transports and addresses, never live connections: the
driver resolves those to links.
"""

from __future__ import annotations

from dataclasses import dataclass

from .nodeid import NodeId
from .schema import BOOL, F64, NODEID, STR, U32, Opt, Rep, Struct, StructKind, fld, struct

__all__ = ["ROUTE_BROADCAST", "ROUTE_GENERAL", "ROUTE_SOLO", "Hop", "Route", "RouteSchema", "RouteSegment"]

ROUTE_GENERAL = 0
ROUTE_SOLO = 1
ROUTE_BROADCAST = 2


@struct
@dataclass(frozen=True, slots=True)
class Hop(Struct):
    """One step from one node to the next over one transport, with its last known stats."""

    src: NodeId = fld(1, NODEID, "node the hop leaves")
    dst: NodeId = fld(2, NODEID, "node the hop reaches")
    transport: str = fld(3, STR, 'transport: "websocket", "webrtc" or "memory"', default="websocket")
    address: str = fld(4, STR, "address dialled for this hop (URL), empty if inbound-only", default="")
    rtt_ms: float = fld(5, F64, "expected round-trip time in milliseconds (0 = unknown)", default=0.0)
    bandwidth_bps: float = fld(6, F64, "expected throughput in bytes per second (0 = unknown)", default=0.0)
    cost_per_gb: float = fld(7, F64, "money cost of one GB over this hop (configured currency)", default=0.0)
    network_kind: str = fld(
        8, STR, "network kind of the sending side: wifi, ethernet, cellular, loopback, unknown", default="unknown"
    )
    metered: bool = fld(9, BOOL, "true when the sending side's bytes are metered", default=False)


@struct
@dataclass(frozen=True, slots=True)
class RouteSegment(Struct):
    """A path of hops, optionally branching into child segments after its last hop.

    A plain path has ``children == ()``; a forwarding tree is a segment whose
    hops lead to a relay and whose children fan out from it.
    """

    hops: tuple[Hop, ...] = fld(1, Rep(StructKind(Hop)), "hops in order")
    children: tuple[RouteSegment, ...] = fld(
        2, Rep(StructKind(lambda: RouteSegment)), "segments that continue from the last hop's node"
    )

    def nodes(self) -> list[NodeId]:
        """Every node the segment reaches, in depth-first order (no duplicates)."""
        out: list[NodeId] = []
        seen: set[NodeId] = set()
        stack = [self]
        while stack:
            seg = stack.pop()
            for h in seg.hops:
                for n in (h.src, h.dst):
                    if n not in seen:
                        seen.add(n)
                        out.append(n)
            stack.extend(reversed(seg.children))
        return out


@struct
@dataclass(frozen=True, slots=True)
class RouteSchema(Struct):
    """Source and destination set: the key of the route table."""

    source: NodeId = fld(1, NODEID, "node the route starts at")
    destinations: tuple[NodeId, ...] = fld(2, Rep(NODEID), "nodes the route reaches (one for unicast)")


@struct
@dataclass(frozen=True, slots=True)
class Route(Struct):
    """A schema plus its stops and expected figures."""

    schema: RouteSchema = fld(1, StructKind(RouteSchema), "where the route goes from and to")
    stops: RouteSegment | None = fld(2, Opt(StructKind(RouteSegment)), "the journey (absent: only the schema is known)")
    kind: int = fld(3, U32, "0 general, 1 solo (one direct link), 2 broadcast (one to many)", default=ROUTE_GENERAL)
    latency_ms: float = fld(4, F64, "expected one-way latency in milliseconds", default=0.0)
    bandwidth_bps: float = fld(5, F64, "expected bottleneck throughput, bytes per second", default=0.0)
    health: float = fld(6, F64, "0..1: share of recent uses that succeeded", default=1.0)
    cost_per_gb: float = fld(7, F64, "money cost of one GB along the route", default=0.0)
