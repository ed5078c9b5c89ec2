"""The pure routing layer: route table, candidates, selection policy, priors, route serialisation.

Every call takes an explicit ``now`` (seconds of a made-up monotonic clock): nothing here sleeps or
reads a clock. Unit tests pin the rules of DESIGN s.3 on small hand-built tables; property tests
build random tables (local links of random kinds, metering and cost; learned hops; measurements;
links going down) and check the rules on every selection:

* a dead route is never picked while a live one exists;
* request-response takes the lowest expected latency and, at equal latency, the cheaper route;
* bulk never takes a metered hop while an unmetered live route exists, and takes the cheapest route
  meeting the deadline;
* hysteresis: a route only changes for a gain above the threshold (or because it died);
* every route the layer produces round-trips through both codecs inside an Envelope.

Some tests pinned bugs found in the routing code (all fixed since): duplicate
suggested candidates, suggested routes through non-relays, reused link ids,
broadcast cost counting shared hops twice, unreachable broadcast destinations,
NaN priors.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.routing import (
    BroadcastRoute,
    Candidate,
    Choice,
    DefaultPolicy,
    HopState,
    Priors,
    Purpose,
    Router,
    RouteTable,
    SoloRoute,
    Traits,
    hop_kind,
    rank,
)
from edgeagent.routing.table import DEAD_AFTER_FAILURES
from edgeagent.wire import (
    CODECS,
    ROUTE_BROADCAST,
    ROUTE_GENERAL,
    ROUTE_SOLO,
    Envelope,
    Hop,
    NodeId,
    Ping,
    Route,
    RouteSchema,
    RouteSegment,
    decode,
    encode,
)

# database=None: no .hypothesis directory is written into the repository
PROPERTY = settings(
    max_examples=80,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

KINDS = ("loopback", "ethernet", "wifi", "unknown", "cellular")
TRANSPORTS = ("websocket", "webrtc", "memory")
MB = 1_000_000


def node(i: int) -> NodeId:
    return NodeId.from_public_key(i.to_bytes(32, "big"))


NODES = [node(i) for i in range(16)]
ME, R, S, D, D2, D3, D4 = NODES[0], NODES[1], NODES[2], NODES[3], NODES[4], NODES[5], NODES[6]
#: these tests are about evaluating routes, so every node's reports count as vouched for (as a
#: domain's are); the tests of ``supported`` below build tables that trust no one
VOUCHED = frozenset(NODES[1:])


def ws(table: RouteTable, link_id: str, peer: NodeId, now: float = 0.0, **kw: Any) -> HopState:
    """A WebSocket link up to ``peer`` (keyword arguments as ``RouteTable.link_up``; both ends of one kind)."""
    kw.setdefault("transport", "websocket")
    kw.setdefault("peer_kind", kw.get("local_kind", "unknown"))
    kw.setdefault("address", f"ws://{link_id}")
    return table.link_up(link_id, peer, now=now, **kw)


def hop(src: NodeId, dst: NodeId, **kw: Any) -> Hop:
    kw.setdefault("transport", "websocket")
    kw.setdefault("address", f"ws://{str(dst)[-4:]}")
    return Hop(src, dst, **kw)


def path_route(nodes: Sequence[NodeId], *, dst: NodeId | None = None, source: NodeId | None = None) -> Route:
    """A suggested (RouteReply-style) route along ``nodes``."""
    hops = tuple(hop(a, b) for a, b in itertools.pairwise(nodes))
    return Route(
        RouteSchema(nodes[0] if source is None else source, (nodes[-1] if dst is None else dst,)),
        RouteSegment(hops, ()),
    )


def nodes_of(c: Candidate) -> list[NodeId]:
    return [c.path[0].src] + [h.dst for h in c.path]


def score(c: Candidate) -> float:
    """The request policy's score (latency demoted by health), as DefaultPolicy computes it."""
    return c.latency_ms / max(c.health, 0.05)


def roundtrip(route: Route) -> None:
    """The route survives both codecs inside an Envelope, field for field."""
    env = Envelope(body=Ping(nonce=7), source=route.schema.source, destination=route.schema.destinations[0])
    env = Envelope(body=env.body, source=env.source, destination=env.destination, msg_id=42, route=route)
    for codec in CODECS:
        back = decode(encode(env, codec), codec)
        assert back.route == route, codec
        assert back == env, codec


# -- hop_kind and link_up ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "want"),
    [
        ("loopback", "ethernet", "ethernet"),
        ("ethernet", "wifi", "wifi"),
        ("wifi", "cellular", "cellular"),
        ("unknown", "wifi", "unknown"),
        ("cellular", "unknown", "cellular"),
        ("wifi", "wifi", "wifi"),
    ],
)
def test_hop_kind_picks_the_costlier_kind(a: str, b: str, want: str) -> None:
    assert hop_kind(a, b) == want
    assert hop_kind(b, a) == want


def test_link_up_combines_both_ends() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    h = ws(
        t,
        "L1",
        R,
        local_kind="ethernet",
        peer_kind="cellular",
        peer_metered=True,
        local_cost_per_gb=0.3,
        peer_relays=True,
    )
    assert (h.src, h.dst, h.link_id) == (ME, R, "L1")
    assert h.network_kind == "cellular"
    assert h.metered
    assert h.cost_per_gb == 0.3
    assert t.relays == {R}
    assert t.local("L1") is h
    assert t.neighbours() == {R}
    assert t.local_hops() == [h]
    assert not ws(t, "L2", R, local_kind="wifi", peer_relays=True).metered
    ws(t, "L3", S)
    assert t.relays == {R}  # peers do not relay unless they say so


def test_link_down_removes_the_hop() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "L1", D)
    v = t.version
    t.link_down("L1", now=5.0)
    assert t.version > v
    assert t.local("L1") is None
    assert t.neighbours() == set()
    assert t.candidates(D, 6.0) == []
    assert Router(t).select(D, Traits(), 6.0) is None
    t.link_down("L1", now=7.0)  # twice is harmless
    t.link_down("nope", now=7.0)


def test_unmeasured_hops_use_the_priors_and_measurements_replace_them() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    eth = ws(t, "L1", D, local_kind="ethernet")
    rtc = t.link_up("L2", D, transport="webrtc", now=0.0, local_kind="ethernet", peer_kind="ethernet")
    priors = t.priors
    assert eth.expected_rtt_ms(priors) == priors.rtt["ethernet"]
    assert eth.expected_bandwidth(priors) == priors.bandwidth["ethernet"]
    assert rtc.expected_bandwidth(priors) == 6e6  # the WebRTC ceiling
    t.observe("L1", 1.0, rtt_ms=3.0, bandwidth_bps=1e6)
    t.observe("L1", 2.0, bandwidth_bps=2e6)
    assert eth.expected_rtt_ms(priors) == 3.0
    assert eth.expected_bandwidth(priors) == pytest.approx(1.25e6)  # EWMA, alpha 0.25
    t.observe("nope", 2.0, rtt_ms=1.0)  # unknown link: ignored


# -- request-response ----------------------------------------------------------------------------


def test_request_takes_the_lowest_latency() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "wifi", D, local_kind="wifi")
    ws(t, "eth", D, local_kind="ethernet", local_cost_per_gb=5.0)
    ch = Router(t).select(D, Traits("request"), 1.0)
    assert ch is not None
    assert ch.link_id == "eth"
    assert ch.next_hop == D
    assert ch.considered == 2
    assert "lowest expected latency" in ch.reason
    assert "of 2 routes" in ch.reason


def test_request_at_equal_latency_takes_the_cheaper() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "dear", D, local_kind="wifi", local_cost_per_gb=2.0)
    ws(t, "cheap", D, local_kind="wifi", local_cost_per_gb=0.5)
    ws(t, "dearer", D, local_kind="wifi", local_cost_per_gb=3.0)
    ch = Router(t).select(D, Traits("request"), 1.0)
    assert ch is not None
    assert ch.link_id == "cheap"


def test_request_compares_direct_and_relayed_latency() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "direct", D, local_kind="wifi")
    ws(t, "relay", R, local_kind="ethernet", peer_relays=True)
    t.learn([hop(R, D, network_kind="wifi", rtt_ms=6.0)], 0.0, learned_from=R)
    cands = t.candidates(D, 1.0)
    assert sorted(len(c.path) for c in cands) == [1, 2]
    relayed = next(c for c in cands if len(c.path) == 2)
    # RTT 1 (ethernet prior) + 6 (learned) + 0.5 relay, halved
    assert relayed.latency_ms == pytest.approx((1.0 + 6.0 + t.priors.relay_ms) / 2)
    ch = Router(t).select(D, Traits(), 1.0)
    assert ch is not None
    assert ch.link_id == "direct"  # 3.0 ms one way against 3.75 ms


def test_failing_route_is_demoted_and_dead_route_dropped() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "fast", D)
    ws(t, "slow", D)
    t.observe("fast", 0.0, rtt_ms=10.0)  # one way 5 ms
    t.observe("slow", 0.0, rtt_ms=16.0)  # one way 8 ms
    router = Router(t)
    assert router.select(D, Traits(), 0.0).link_id == "fast"  # type: ignore[union-attr]
    t.record("fast", False, 10.0)  # one failure: health 0.8 * 0.5 while it is fresh: 5 ms counts as 12.5
    assert t.local("fast").health(10.0) == pytest.approx(0.4)  # type: ignore[union-attr]
    ch = router.select(D, Traits(), 10.0)
    assert ch is not None
    assert ch.link_id == "slow"
    # once dead, never chosen while a live route exists
    for i in range(DEAD_AFTER_FAILURES - 1):
        t.record("fast", False, 11.0 + i)
    assert t.local("fast").dead(20.0)  # type: ignore[union-attr]
    assert router.select(D, Traits(), 1000.0).link_id == "slow"  # type: ignore[union-attr]
    # a success revives it
    t.record("fast", True, 1001.0)
    assert not t.local("fast").dead(1001.0)  # type: ignore[union-attr]


def test_observed_failures_kill_a_link() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D, local_kind="ethernet")
    ws(t, "b", D, local_kind="cellular")
    t.observe("a", 1.0, failures=DEAD_AFTER_FAILURES)
    ch = Router(t).select(D, Traits(), 100.0)
    assert ch is not None
    assert ch.link_id == "b"
    assert not ch.candidate.dead


def test_every_route_down_tries_the_least_bad() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D, local_kind="ethernet")
    ws(t, "b", D, local_kind="wifi")
    for lid in ("a", "b"):
        for _ in range(DEAD_AFTER_FAILURES):
            t.record(lid, False, 1.0)
    ch = Router(t).select(D, Traits(), 2.0)
    assert ch is not None
    assert ch.candidate.dead
    assert "every route is down or failing" in ch.reason
    assert Router(t).select(D, Traits("bulk", size=MB), 2.0) is not None


def test_unknown_destination_gives_none() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", R, peer_relays=True)
    assert Router(t).select(D, Traits(), 0.0) is None
    assert DefaultPolicy().choose([], Traits(), 0.0, None) is None


# -- hysteresis ----------------------------------------------------------------------------------


def test_request_hysteresis_absolute_threshold() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D)
    ws(t, "b", D)
    t.observe("a", 0.0, rtt_ms=10.0)  # one way 5 ms
    t.observe("b", 0.0, rtt_ms=20.0)
    router = Router(t)
    assert router.select(D, Traits(), 1.0).link_id == "a"  # type: ignore[union-attr]
    t.observe("b", 2.0, rtt_ms=8.5)  # 0.75 ms better: below the 1 ms floor
    ch = router.select(D, Traits(), 3.0)
    assert ch is not None
    assert ch.link_id == "a"
    assert "kept" in ch.reason
    assert "0.75 ms better" in ch.reason
    assert router.changes == 0
    t.observe("b", 4.0, rtt_ms=7.0)  # 1.5 ms better: over max(1 ms, 20 % of 5 ms)
    assert router.select(D, Traits(), 5.0).link_id == "b"  # type: ignore[union-attr]
    assert router.changes == 1
    assert router.selections == 3


def test_request_hysteresis_relative_threshold() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D)
    ws(t, "b", D)
    t.observe("a", 0.0, rtt_ms=100.0)  # one way 50 ms: a challenger must win by 10 ms
    t.observe("b", 0.0, rtt_ms=200.0)
    router = Router(t)
    assert router.select(D, Traits(), 1.0).link_id == "a"  # type: ignore[union-attr]
    t.observe("b", 2.0, rtt_ms=84.0)  # 8 ms better
    assert router.select(D, Traits(), 3.0).link_id == "a"  # type: ignore[union-attr]
    t.observe("b", 4.0, rtt_ms=78.0)  # 11 ms better
    assert router.select(D, Traits(), 5.0).link_id == "b"  # type: ignore[union-attr]


def test_hysteresis_never_keeps_a_dead_route() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D)
    ws(t, "b", D)
    t.observe("a", 0.0, rtt_ms=10.0)
    t.observe("b", 0.0, rtt_ms=10.5)
    router = Router(t)
    assert router.select(D, Traits(), 1.0).link_id == "a"  # type: ignore[union-attr]
    assert router.select(D, Traits("bulk", size=MB), 1.0).link_id == "a"  # type: ignore[union-attr]
    t.link_down("a", 2.0)
    assert router.select(D, Traits(), 3.0).link_id == "b"  # type: ignore[union-attr]
    assert router.select(D, Traits("bulk", size=MB), 3.0).link_id == "b"  # type: ignore[union-attr]
    assert router.changes == 2


def test_bulk_hysteresis() -> None:
    size = 100 * MB
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "a", D)
    ws(t, "b", D)
    t.observe("a", 0.0, rtt_ms=0.0, bandwidth_bps=20e6)  # 5 s
    t.observe("b", 0.0, rtt_ms=0.0, bandwidth_bps=10e6)  # 10 s
    router = Router(t)
    bulk = Traits("bulk", size=size)
    assert router.select(D, bulk, 1.0).link_id == "a"  # type: ignore[union-attr]
    ws(t, "c", D, now=2.0)
    t.observe("c", 2.0, rtt_ms=0.0, bandwidth_bps=22e6)  # 4.55 s: 9 % faster, same price
    ch = router.select(D, bulk, 3.0)
    assert ch is not None
    assert ch.link_id == "a"
    assert "kept" in ch.reason
    ws(t, "d", D, now=4.0)
    t.observe("d", 4.0, rtt_ms=0.0, bandwidth_bps=50e6)  # 2 s: clearly faster
    assert router.select(D, bulk, 5.0).link_id == "d"  # type: ignore[union-attr]
    # any saving in money moves a bulk transfer, even to a slower route
    cheap = ws(t, "f", D, now=6.0)
    t.observe("f", 6.0, rtt_ms=0.0, bandwidth_bps=5e6)
    for lid in ("a", "b", "c", "d"):
        t.local(lid).cost_per_gb = 1.0  # type: ignore[union-attr]
    ch = router.select(D, bulk, 7.0)
    assert ch is not None
    assert ch.candidate.path == (cheap,)
    assert "cheapest (0/GB)" in ch.reason


def test_select_is_stable_without_changes() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    for i, kind in enumerate(KINDS):
        ws(t, f"L{i}", D, local_kind=kind)
    router = Router(t)
    first = router.select(D, Traits(), 1.0)
    assert first is not None
    for now in (2.0, 3.0, 4.0):
        again = router.select(D, Traits(), now)
        assert again is not None
        assert again.candidate.key == first.candidate.key
    assert router.changes == 0
    assert router.current()[(D, "request")].candidate.key == first.candidate.key
    router.forget(D)
    assert router.current() == {}


# -- bulk and streams ----------------------------------------------------------------------------


def test_bulk_never_takes_a_metered_hop_when_an_unmetered_route_exists() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "lte", D, local_kind="ethernet", local_metered=True)  # fast but metered
    ws(t, "wlan", D, local_kind="cellular")  # slow, free
    router = Router(t)
    assert router.select(D, Traits("request"), 1.0).link_id == "lte"  # type: ignore[union-attr]
    purposes: tuple[Purpose, ...] = ("bulk", "stream")
    for purpose in purposes:
        ch = router.select(D, Traits(purpose, size=100 * MB, deadline_s=1.0), 1.0)
        assert ch is not None
        assert ch.link_id == "wlan", purpose
        assert "1 metered route(s) excluded" in ch.reason
        assert ch.reason.startswith(purpose)


def test_bulk_metered_when_nothing_else() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "lte", D, local_kind="cellular", local_metered=True, local_cost_per_gb=2.0)
    ws(t, "lte2", D, local_kind="cellular", peer_metered=True, local_cost_per_gb=1.0)
    ch = Router(t).select(D, Traits("bulk", size=MB), 1.0)
    assert ch is not None
    assert ch.link_id == "lte2"
    assert "only metered routes exist" in ch.reason


def test_bulk_metered_relay_path_excluded() -> None:
    """A metered *second* hop makes the whole route metered."""
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, local_kind="ethernet", peer_relays=True)
    ws(t, "slow", D, local_kind="cellular")
    t.learn([hop(R, D, network_kind="ethernet", metered=True)], 0.0, learned_from=R)
    router = Router(t)
    assert router.select(D, Traits("request"), 1.0).link_id == "r"  # type: ignore[union-attr]
    assert router.select(D, Traits("bulk", size=MB), 1.0).link_id == "slow"  # type: ignore[union-attr]


def test_bulk_takes_the_cheapest_route_meeting_the_deadline() -> None:
    size = 100 * MB
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "wifi", D, local_kind="wifi")  # free, 6.25 MB/s: 16 s
    ws(t, "eth", D, local_kind="ethernet", local_cost_per_gb=0.5)  # 50 MB/s: 2 s
    ws(t, "eth2", D, local_kind="ethernet", local_cost_per_gb=0.8)
    ch = Router(t).select(D, Traits("bulk", size=size), 1.0)
    assert ch is not None
    assert ch.link_id == "wifi"  # no deadline: cheapest
    assert "cheapest (0/GB)" in ch.reason
    ch = Router(t).select(D, Traits("bulk", size=size, deadline_s=5.0), 1.0)
    assert ch is not None
    assert ch.link_id == "eth"
    assert "within the 5 s deadline" in ch.reason
    assert ch.candidate.transfer_s(size) == pytest.approx(t.priors.rtt["ethernet"] / 1000 + 2.0)
    ch = Router(t).select(D, Traits("bulk", size=size, deadline_s=0.5), 1.0)
    assert ch is not None
    assert ch.link_id == "eth"  # nothing meets 0.5 s: fastest, then cheapest
    assert "no route meets the 0.5 s deadline" in ch.reason


def test_pubsub_per_destination_follows_the_request_rule() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "wifi", D, local_kind="wifi")
    ws(t, "eth", D, local_kind="ethernet", local_metered=True)
    ch = Router(t).select(D, Traits("pubsub", size=100 * MB), 1.0)
    assert ch is not None
    assert ch.link_id == "eth"


# -- relays, learned hops, expiry ----------------------------------------------------------------


def test_relay_candidates_only_through_peers_that_relay() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R)  # does not relay
    t.learn([hop(R, D), hop(R, D2)], 0.0, learned_from=R)
    assert t.candidates(D, 1.0) == []
    assert Router(t).select(D, Traits(), 1.0) is None
    t.set_relay(R, True)
    (c,) = t.candidates(D, 1.0)
    assert nodes_of(c) == [ME, R, D]
    assert c.link_id == "r"
    t.set_relay(R, False)
    assert t.candidates(D, 1.0) == []
    ws(t, "r2", R, peer_relays=True)  # a second link to the same peer, which now says it relays
    assert sorted(c.link_id for c in t.candidates(D, 1.0)) == ["r", "r2"]
    t.link_down("r", 2.0)
    assert [c.link_id for c in t.candidates(D, 3.0)] == ["r2"]


def test_learn_ignores_hops_from_here_and_self_loops() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    n = t.learn([hop(ME, D), hop(R, R), hop(R, D)], 0.0, learned_from=R)
    assert n == 1
    assert len(t) == 1
    assert [h.src for h in t.hops_into(D)] == [R]
    assert t.destinations() == {D}


def test_learn_refreshes_and_replaces_figures() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, peer_relays=True)
    t.learn([hop(R, D, rtt_ms=5.0, cost_per_gb=1.0)], 0.0, learned_from=R, ttl_s=10.0)
    t.learn([hop(R, D, rtt_ms=9.0, cost_per_gb=0.0, metered=True)], 5.0, learned_from=R, ttl_s=10.0)
    (h,) = t.hops_into(D)
    assert (h.rtt_ms, h.cost_per_gb, h.metered, h.expires) == (9.0, 0.0, True, 15.0)
    (c,) = t.candidates(D, 12.0)
    assert not c.dead  # refreshed: alive until 15


def test_learned_hops_expire() -> None:
    t = RouteTable(ME, trusted=VOUCHED, learned_ttl_s=100.0)
    ws(t, "r", R, local_kind="ethernet", peer_relays=True)
    ws(t, "slow", D, local_kind="cellular")
    t.learn([hop(R, D, network_kind="ethernet")], 0.0, learned_from=R, ttl_s=10.0)
    t.learn([hop(R, D2)], 0.0, learned_from=R)  # default TTL: 100 s
    router = Router(t)
    assert router.select(D, Traits(), 9.9).link_id == "r"  # type: ignore[union-attr]
    # at the expiry the learned hop is dead: still listed, never chosen over a live route
    relayed = [c for c in t.candidates(D, 10.0) if len(c.path) == 2]
    assert len(relayed) == 1
    assert relayed[0].dead
    assert router.select(D, Traits(), 10.0).link_id == "slow"  # type: ignore[union-attr]
    assert len(t) == 4
    assert t.expire(10.0) == 1
    assert len(t) == 3
    assert [len(c.path) for c in t.candidates(D, 10.0)] == [1]
    assert not t.candidates(D2, 99.0)[0].dead
    assert t.expire(100.0) == 1
    assert t.candidates(D2, 100.0) == []
    assert t.expire(1000.0) == 0  # local hops never expire


def test_max_learned_caps_the_table() -> None:
    t = RouteTable(ME, trusted=VOUCHED, max_learned=2)
    assert t.learn([hop(R, D), hop(R, D2), hop(R, D3)], 0.0, learned_from=R) == 2
    assert t.learn([hop(R, D)], 1.0, learned_from=R) == 1  # a refresh is not a new hop
    assert t.forget_learned_from(R) == 2
    assert t.learn([hop(S, D3), hop(S, D4)], 2.0, learned_from=S) == 2


def test_forget_learned_from() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, peer_relays=True)
    ws(t, "s", S, peer_relays=True)
    t.learn([hop(R, D), hop(R, D2)], 0.0, learned_from=R)
    t.learn([hop(S, D)], 0.0, learned_from=S)
    assert len(t.candidates(D, 1.0)) == 2
    assert t.forget_learned_from(R) == 2
    assert [c.link_id for c in t.candidates(D, 1.0)] == ["s"]
    assert t.candidates(D2, 1.0) == []
    assert t.forget_learned_from(R) == 0
    assert {h.link_id for h in t.local_hops()} == {"r", "s"}  # local hops stay


def test_learn_moves_a_hop_to_its_latest_reporter_and_replace_drops_the_rest() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    t.learn([hop(R, D), hop(R, D2)], 0.0, learned_from=R)
    t.learn([hop(R, D)], 1.0, learned_from=S)  # the domain (S) vouches for R->D now
    assert {(h.dst, h.learned_from) for h in t.hops()} == {(D, S), (D2, R)}
    assert t.forget_learned_from(R) == 1
    assert [h.dst for h in t.hops()] == [D]
    t.learn([hop(S, D3), hop(S, D4)], 2.0, learned_from=S)
    assert t.learn([hop(S, D4)], 3.0, learned_from=S, replace=True) == 1  # S's whole truth: only S->D4
    assert {(h.src, h.dst) for h in t.hops()} == {(S, D4)}
    assert t.learn([], 4.0, learned_from=S, replace=True) == 0
    assert len(t) == 0
    assert t.forget_learned_from(S) == 0


def test_routes_between_other_nodes() -> None:
    """A domain's view: paths from another node to a destination (answering a RouteRequest)."""
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R)
    ws(t, "d", D)
    t.learn([hop(R, S), hop(S, D)], 0.0, learned_from=R)
    paths = {tuple(nodes_of(c)) for c in t.routes_between(R, D, 1.0)}
    assert paths == {(R, ME, D)}  # through this node (R did not report its link to here: mirrored)
    t.set_relay(S, True)
    paths = {tuple(nodes_of(c)) for c in t.routes_between(R, D, 1.0)}
    assert paths == {(R, ME, D), (R, S, D)}
    assert {tuple(nodes_of(c)) for c in t.routes_between(R, D, 1.0, via_me=False)} == {(R, S, D)}
    assert {tuple(nodes_of(c)) for c in t.routes_between(R, S, 1.0)} == {(R, S)}
    for c in t.routes_between(R, D, 1.0):
        roundtrip(c.to_route(t.priors))


def test_exclude_first() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "direct", D)
    ws(t, "r", R, peer_relays=True)
    ws(t, "s", S, peer_relays=True)
    t.learn([hop(R, D)], 0.0, learned_from=R)
    t.learn([hop(S, D)], 0.0, learned_from=S)
    assert {c.link_id for c in t.candidates(D, 1.0)} == {"direct", "r", "s"}
    assert {c.link_id for c in t.candidates(D, 1.0, exclude_first=R)} == {"direct", "s"}
    assert {c.link_id for c in t.candidates(D, 1.0, exclude_first=D)} == {"r", "s"}
    router = Router(t)
    first = router.select(D, Traits(), 1.0)
    assert first is not None
    assert first.link_id == "direct"
    ch = router.select(D, Traits(), 1.0, exclude_first=D)
    assert ch is not None
    assert ch.next_hop in (R, S)
    # a re-routing relay's choice does not become this node's current route
    assert router.current()[(D, "request")].link_id == "direct"
    assert router.changes == 0


# -- suggested routes ----------------------------------------------------------------------------


def test_suggest_accepts_a_good_route() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, peer_relays=True)
    assert t.suggest(path_route([ME, R, S, D]), 0.0, ttl_s=50.0)
    assert {(h.src, h.dst) for h in t.hops()} >= {(R, S), (S, D)}
    assert all(h.learned_from == R for h in t.hops() if h.link_id is None)
    (c,) = t.candidates(D, 1.0)
    assert nodes_of(c) == [ME, R, S, D]
    assert c.link_id == "r"
    assert c.latency_ms == pytest.approx((3 * t.priors.rtt["unknown"] + 2 * t.priors.relay_ms) / 2)
    assert D in t.destinations()
    ch = Router(t).select(D, Traits(), 1.0)
    assert ch is not None
    assert ch.link_id == "r"
    roundtrip(ch.route())
    # expiry drops it
    assert t.candidates(D, 50.0) == []
    assert t.expire(50.0) == 2
    assert D not in t.destinations()


def test_suggested_route_needs_a_live_first_link() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    assert t.suggest(path_route([ME, R, D]), 0.0)  # kept, in case the link comes up
    assert t.candidates(D, 1.0) == []
    ws(t, "r", R, now=2.0, peer_relays=True)
    assert {tuple(nodes_of(c)) for c in t.candidates(D, 3.0)} == {(ME, R, D)}
    t.link_down("r", 4.0)
    assert t.candidates(D, 5.0) == []


def test_suggested_route_uses_a_link_of_the_same_transport() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    t.link_up("mem", R, transport="memory", now=0.0, peer_relays=True)
    t.link_up("rtc", R, transport="webrtc", now=0.0, peer_relays=True)
    route = Route(
        RouteSchema(ME, (D,)),
        RouteSegment((Hop(ME, R, transport="webrtc"), Hop(R, S), Hop(S, D)), ()),
    )
    assert t.suggest(route, 0.0)
    (c,) = t.candidates(D, 1.0)
    assert c.link_id == "rtc"


@pytest.mark.parametrize(
    ("why", "route"),
    [
        ("starts elsewhere", path_route([R, S, D])),
        ("schema source elsewhere", path_route([ME, R, D], source=R)),
        ("first hop from elsewhere", Route(RouteSchema(ME, (D,)), RouteSegment((hop(R, S), hop(S, D)), ()))),
        ("broken chain", Route(RouteSchema(ME, (D,)), RouteSegment((hop(ME, R), hop(S, D)), ()))),
        ("loop", path_route([ME, R, S, R, D])),
        ("loop back here", path_route([ME, R, ME, D])),
        ("wrong destination", path_route([ME, R, S], dst=D)),
        ("no stops", Route(RouteSchema(ME, (D,)), None)),
        ("no hops", Route(RouteSchema(ME, (D,)), RouteSegment((), ()))),
        ("two destinations", Route(RouteSchema(ME, (D, D2)), RouteSegment((hop(ME, R), hop(R, D)), ()))),
        (
            "a tree",
            Route(
                RouteSchema(ME, (D,)),
                RouteSegment((hop(ME, R),), (RouteSegment((hop(R, D),), ()),)),
            ),
        ),
    ],
)
def test_suggest_refuses_bad_routes(why: str, route: Route) -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, peer_relays=True)
    v = t.version
    assert not t.suggest(route, 0.0), why
    assert t.version == v
    assert len(t) == 1
    assert t.candidates(D, 1.0) == []


def test_suggested_route_already_known_is_not_listed_twice() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, address="ws://r", peer_relays=True)
    ws(t, "d", D, address="ws://d")
    t.learn([hop(R, D2)], 0.0, learned_from=R)
    assert t.suggest(path_route([ME, R, D2]), 0.0)
    assert t.suggest(path_route([ME, D]), 0.0)
    for dst in (D, D2):
        keys = [c.key for c in t.candidates(dst, 1.0)]
        assert len(keys) == 1, keys


def test_suggested_route_only_through_a_peer_that_relays() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R)  # R does not relay
    assert t.suggest(path_route([ME, R, D]), 0.0)
    assert R not in t.relays
    assert all(c.path[0].dst in t.relays for c in t.candidates(D, 1.0) if len(c.path) > 1)


def test_link_id_reused_for_another_peer_forgets_the_old_one() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "L1", D)
    ws(t, "L1", D2, now=1.0)
    assert t.neighbours() == {D2}
    assert t.candidates(D, 2.0) == []


# -- SoloRoute, BroadcastRoute, select_broadcast -------------------------------------------------


def test_solo_route() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    h = ws(t, "d", D, local_kind="wifi", local_cost_per_gb=0.25)
    with pytest.raises(ValueError, match="destination"):
        SoloRoute(D2, h)
    r = SoloRoute(D, h, t.priors)
    assert r.kind == ROUTE_SOLO
    assert r.schema == RouteSchema(ME, (D,))
    assert r.stops == RouteSegment((h.to_hop(t.priors),), ())
    assert r.latency_ms == t.priors.rtt["wifi"] / 2
    assert r.bandwidth_bps == t.priors.bandwidth["wifi"]
    assert r.cost_per_gb == 0.25
    assert r.stops.hops[0].network_kind == "wifi"
    roundtrip(r)
    bare = SoloRoute(D, h)  # without priors: only measured figures
    assert bare.latency_ms == 0.0
    assert bare.stops is not None
    assert bare.stops.hops[0].rtt_ms == 0.0
    roundtrip(bare)
    t.observe("d", 1.0, rtt_ms=4.0, bandwidth_bps=1e6)
    assert SoloRoute(D, h).latency_ms == 2.0
    roundtrip(SoloRoute(D, h))


def test_candidate_to_route() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, local_kind="ethernet", peer_relays=True, local_cost_per_gb=0.5)
    t.learn([hop(R, D, network_kind="wifi", cost_per_gb=0.25, metered=True, rtt_ms=3.0)], 0.0, learned_from=R)
    (c,) = t.candidates(D, 1.0)
    assert c.metered
    assert c.cost_per_gb == 0.75
    assert c.bandwidth_bps == t.priors.bandwidth["wifi"]  # the bottleneck
    r = c.to_route(t.priors)
    assert r.kind == ROUTE_GENERAL
    assert r.schema == RouteSchema(ME, (D,))
    assert r.stops is not None
    assert [(h.src, h.dst) for h in r.stops.hops] == [(ME, R), (R, D)]
    assert r.stops.hops[0].rtt_ms == t.priors.rtt["ethernet"]
    assert r.stops.hops[1].metered
    assert (r.latency_ms, r.cost_per_gb, r.health) == (c.latency_ms, 0.75, 1.0)
    roundtrip(r)
    roundtrip(c.to_route())
    assert c.describe().endswith(str(D)[-6:])
    assert "/metered" in c.describe()


def _broadcast_table() -> RouteTable:
    """R relays to D and D2 (ethernet link to R); D3 is a direct neighbour; D4 is unknown."""
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, local_kind="ethernet", peer_relays=True)
    ws(t, "d3", D3, local_kind="wifi")
    t.learn([hop(R, D, network_kind="ethernet"), hop(R, D2, network_kind="ethernet")], 0.0, learned_from=R)
    return t


def test_broadcast_route_merges_shared_prefixes() -> None:
    t = _broadcast_table()
    p = t.priors
    via_r = [t.candidates(d, 1.0)[0] for d in (D, D2)]
    direct = t.candidates(D3, 1.0)[0]
    route = BroadcastRoute((D, D2, D3), [*via_r, direct], p)
    assert route.kind == ROUTE_BROADCAST
    assert route.schema == RouteSchema(ME, (D, D2, D3))
    to_r = t.local("r").to_hop(p)  # type: ignore[union-attr]
    r_d, r_d2 = (c.path[1].to_hop(p) for c in via_r)
    to_d3 = direct.path[0].to_hop(p)
    assert route.stops == RouteSegment(
        (),
        (
            RouteSegment((to_r,), (RouteSegment((r_d,), ()), RouteSegment((r_d2,), ()))),
            RouteSegment((to_d3,), ()),
        ),
    )
    assert route.stops is not None
    assert set(route.stops.nodes()) == {ME, R, D, D2, D3}
    assert route.latency_ms == max(c.latency_ms for c in [*via_r, direct])
    assert route.bandwidth_bps == min(c.bandwidth_bps for c in [*via_r, direct])
    roundtrip(route)
    # the relay itself as a destination: its path is a prefix of the others
    to_relay = t.candidates(R, 1.0)[0]
    route = BroadcastRoute((R, D), [to_relay, via_r[0]], p)
    assert route.stops == RouteSegment((), (RouteSegment((to_r,), (RouteSegment((r_d,), ()),)),))
    roundtrip(route)
    with pytest.raises(ValueError, match="at least one path"):
        BroadcastRoute((D,), [])


def test_broadcast_route_cost_counts_shared_hops_once() -> None:
    t = RouteTable(ME, trusted=VOUCHED)
    ws(t, "r", R, peer_relays=True, local_metered=True, local_cost_per_gb=1.0)
    t.learn([hop(R, D, cost_per_gb=0.25), hop(R, D2, cost_per_gb=0.25)], 0.0, learned_from=R)
    route = BroadcastRoute((D, D2), [t.candidates(D, 1.0)[0], t.candidates(D2, 1.0)[0]], t.priors)
    assert route.cost_per_gb == 1.0 + 0.25 + 0.25


def test_broadcast_route_through_one_connection() -> None:
    t = _broadcast_table()
    h = t.local("r")
    assert h is not None
    route = BroadcastRoute((D, D2), h, t.priors)
    assert route.kind == ROUTE_BROADCAST
    assert route.schema == RouteSchema(ME, (D, D2))
    assert route.stops == RouteSegment((h.to_hop(t.priors),), ())
    assert route.latency_ms == t.priors.rtt["ethernet"] / 2
    roundtrip(route)
    roundtrip(BroadcastRoute((D, D2), h))


def test_select_broadcast_groups_by_first_link() -> None:
    t = _broadcast_table()
    router = Router(t)
    got = router.select_broadcast([D, D2, D3], 1.0)
    assert got is not None
    route, groups = got
    assert groups == {"r": [D, D2], "d3": [D3]}
    assert route.kind == ROUTE_BROADCAST
    assert route.schema.destinations == (D, D2, D3)
    assert route.stops is not None
    assert [len(s.children) for s in route.stops.children] == [2, 0]
    assert {(D, "pubsub"), (D2, "pubsub"), (D3, "pubsub")} <= set(router.current())
    roundtrip(route)
    assert router.select_broadcast([D4], 1.0) is None
    got = router.select_broadcast([D, D4], 1.0)
    assert got is not None
    assert got[1] == {"r": [D]}  # the unreachable one is left out of the groups


def test_select_broadcast_schema_lists_only_reachable_destinations() -> None:
    got = Router(_broadcast_table()).select_broadcast([D, D4], 1.0)
    assert got is not None
    assert got[0].schema.destinations == (D,)


# -- Priors --------------------------------------------------------------------------------------


def test_priors_from_config() -> None:
    assert Priors.from_config({}) == Priors()
    p = Priors.from_config({"rtt_ms": {"wifi": 3, "cellular": 80.5}, "bandwidth_mbit": {"wifi": 8}, "relay_ms": 2})
    assert p.rtt["wifi"] == 3.0
    assert p.rtt["cellular"] == 80.5
    assert p.rtt["ethernet"] == Priors().rtt["ethernet"]
    assert p.bandwidth["wifi"] == 1e6  # 8 Mbit/s
    assert p.relay_ms == 2.0
    assert p.rtt_ms("websocket", "wifi") == 3.0
    assert p.rtt_ms("websocket", "5g") == p.rtt["unknown"]
    assert p.bandwidth_bps("webrtc", "ethernet") == 6e6
    assert p.bandwidth_bps("websocket", "wifi") == 1e6
    t = RouteTable(ME, trusted=VOUCHED, priors=p)
    ws(t, "a", R, local_kind="wifi", peer_relays=True)
    t.learn([hop(R, D, network_kind="wifi")], 0.0, learned_from=R)
    (c,) = t.candidates(D, 1.0)
    assert c.rtt_ms == 3.0 + 3.0 + 2.0
    assert c.bandwidth_bps == 1e6


@pytest.mark.parametrize(
    "table",
    [
        {"rtt": {"wifi": 1}},
        {"rtt_ms": {"5g": 1}},
        {"bandwidth_mbit": {"lora": 1}},
        {"rtt_ms": {"wifi": -1}},
        {"bandwidth_mbit": {"wifi": -0.5}},
        {"relay_ms": -1e-9},
        {"relay_ms": True},
        {"relay_ms": "1"},
        {"rtt_ms": {"wifi": None}},
        {"rtt_ms": 5},
        {"bandwidth_mbit": [1, 2]},
    ],
)
def test_priors_from_config_rejects(table: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"\[routing.priors\]"):
        Priors.from_config(table)


def test_priors_from_config_rejects_nan() -> None:
    with pytest.raises(ValueError, match="non-negative number"):
        Priors.from_config({"rtt_ms": {"wifi": math.nan}})


# -- property tests: random tables ---------------------------------------------------------------


@dataclass(frozen=True)
class LinkSpec:
    peer: int
    transport: str
    local_kind: str
    peer_kind: str
    local_metered: bool
    peer_metered: bool
    cost: float
    relays: bool


@dataclass(frozen=True)
class LearnSpec:
    src: int
    dst: int
    transport: str
    address: str
    kind: str
    metered: bool
    cost: float
    rtt: float
    bandwidth: float
    ttl: float


@dataclass(frozen=True)
class Op:
    """A measurement or event on local link ``link`` (an index into the scenario's links)."""

    what: str  # "observe", "ok", "fail", "down"
    link: int
    rtt: float | None = None
    bandwidth: float | None = None
    failures: int | None = None


@dataclass
class Scenario:
    peers: int
    links: list[LinkSpec]
    learned: list[LearnSpec]
    ops: list[Op]
    now: float
    suggested: list[list[int]] = field(default_factory=list)

    def build(self) -> RouteTable:
        t = RouteTable(ME, trusted=VOUCHED)
        for i, ln in enumerate(self.links):
            t.link_up(
                f"L{i}",
                NODES[ln.peer],
                transport=ln.transport,
                address=f"{ln.transport}://{i}",
                now=0.0,
                local_kind=ln.local_kind,
                local_metered=ln.local_metered,
                local_cost_per_gb=ln.cost,
                peer_kind=ln.peer_kind,
                peer_metered=ln.peer_metered,
                peer_relays=ln.relays,
            )
        for le in self.learned:
            h = Hop(
                NODES[le.src],
                NODES[le.dst],
                transport=le.transport,
                address=le.address,
                rtt_ms=le.rtt,
                bandwidth_bps=le.bandwidth,
                cost_per_gb=le.cost,
                network_kind=le.kind,
                metered=le.metered,
            )
            t.learn([h], 0.0, learned_from=NODES[le.src], ttl_s=le.ttl)
        for path in self.suggested:
            t.suggest(path_route([ME, *(NODES[i] for i in path)]), 0.0, ttl_s=200.0)
        apply_ops(t, self.ops, 1.0)
        return t

    def destinations(self) -> list[NodeId]:
        return NODES[1 : self.peers + 1]


def apply_ops(t: RouteTable, ops: Sequence[Op], start: float) -> float:
    """Apply ``ops`` one second apart from ``start``; returns the time after the last."""
    now = start
    for op in ops:
        lid = f"L{op.link}"
        if op.what == "observe":
            t.observe(lid, now, rtt_ms=op.rtt, bandwidth_bps=op.bandwidth, failures=op.failures)
        elif op.what in ("ok", "fail"):
            t.record(lid, op.what == "ok", now)
        else:
            t.link_down(lid, now)
        now += 1.0
    return now


kinds = st.sampled_from(KINDS)
costs = st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0])
measured_rtts = st.sampled_from([0.5, 2.0, 10.0, 50.0])
measured_bws = st.sampled_from([1e5, 1e6, 1e7, 1e8])


def ops_strategy(n_links: int, max_size: int) -> st.SearchStrategy[list[Op]]:
    if n_links == 0:
        return st.just([])
    link = st.integers(0, n_links - 1)
    op = st.one_of(
        st.builds(
            Op,
            st.just("observe"),
            link,
            rtt=st.none() | measured_rtts,
            bandwidth=st.none() | measured_bws,
            failures=st.none() | st.integers(0, DEAD_AFTER_FAILURES),
        ),
        st.builds(Op, st.sampled_from(["ok", "fail", "fail", "down"]), link),
    )
    return st.lists(op, max_size=max_size)


@st.composite
def scenarios(draw: st.DrawFn, *, suggestions: bool = False) -> Scenario:
    peers = draw(st.integers(1, 6))
    peer = st.integers(1, peers)
    links = draw(
        st.lists(
            st.builds(
                LinkSpec,
                peer,
                st.sampled_from(TRANSPORTS),
                kinds,
                kinds,
                st.booleans(),
                st.booleans(),
                costs,
                st.booleans(),
            ),
            max_size=8,
        )
    )
    learned = draw(
        st.lists(
            st.builds(
                LearnSpec,
                peer,
                peer,
                st.sampled_from(TRANSPORTS),
                st.sampled_from(["a", "b"]),
                kinds,
                st.booleans(),
                costs,
                st.sampled_from([0.0, 1.0, 5.0, 30.0]),
                st.sampled_from([0.0, 1e6, 1e8]),
                st.sampled_from([5.0, 50.0, 500.0]),
            ),
            max_size=12,
        )
    )
    ops = draw(ops_strategy(len(links), 12))
    suggested: list[list[int]] = []
    if suggestions:
        suggested = draw(st.lists(st.lists(peer, min_size=1, max_size=4, unique=True), max_size=4))
    now = len(ops) + 1.0 + draw(st.sampled_from([0.0, 0.5, 10.0, 45.0, 100.0, 600.0]))
    return Scenario(peers, links, learned, ops, now, suggested)


traits_strategy = st.one_of(
    st.just(Traits("request")),
    st.just(Traits("pubsub")),
    st.builds(
        Traits,
        st.sampled_from(["bulk", "stream"]),
        st.sampled_from([0, 1000, MB, 100 * MB]),
        st.none() | st.sampled_from([0.01, 0.5, 5.0, 60.0]),
    ),
)


def pool_of(cands: Sequence[Candidate]) -> list[Candidate]:
    """What the policy chooses among: the live candidates, or all when none is live."""
    return [c for c in cands if not c.dead] or list(cands)


def check_well_formed(t: RouteTable, dst: NodeId, c: Candidate, now: float) -> None:
    path = c.path
    assert path[0].src == ME
    assert path[-1].dst == dst
    for a, b in itertools.pairwise(path):
        assert a.dst == b.src
    ns = nodes_of(c)
    assert len(set(ns)) == len(ns), "a loop"
    first = t.local(c.link_id)
    assert first is path[0]
    assert first.alive
    assert c.dead == any(h.dead(now) for h in path)
    assert c.metered == any(h.metered for h in path)
    assert c.cost_per_gb == pytest.approx(sum(h.cost_per_gb for h in path))


def check_fresh_choice(cands: Sequence[Candidate], traits: Traits, ch: Choice) -> None:
    """The rules of DESIGN s.3 for a choice made without a previous route (no hysteresis)."""
    chosen = ch.candidate
    assert ch.considered == len(cands)
    assert ch.reason
    assert chosen.key in {c.key for c in cands}
    live = [c for c in cands if not c.dead]
    if live:
        assert not chosen.dead, ch.reason
    pool = pool_of(cands)
    if not traits.bulky:
        best = min(score(c) for c in pool)
        assert score(chosen) == best, ch.reason
        # equal latency (and health): the cheaper
        assert chosen.cost_per_gb == min(c.cost_per_gb for c in pool if score(c) == best), ch.reason
        assert "latency" in ch.reason
        return
    unmetered = [c for c in pool if not c.metered]
    if unmetered:
        assert not chosen.metered, ch.reason
    pool = unmetered or pool
    size, deadline = traits.size, traits.deadline_s
    meets = pool if deadline is None else [c for c in pool if c.transfer_s(size) <= deadline]
    if meets:
        assert chosen.key in {c.key for c in meets}
        assert chosen.cost_per_gb == min(c.cost_per_gb for c in meets), ch.reason
        assert "cheapest" in ch.reason
    else:
        assert chosen.transfer_s(size) == min(c.transfer_s(size) for c in pool)
        assert "no route meets" in ch.reason
    assert ch.reason.startswith(traits.purpose)


@PROPERTY
@given(scenarios(), st.lists(traits_strategy, min_size=1, max_size=4))
def test_property_selection_rules(sc: Scenario, traits_list: list[Traits]) -> None:
    t = sc.build()
    now = sc.now
    for dst in sc.destinations():
        cands = t.candidates(dst, now)
        for c in cands:
            check_well_formed(t, dst, c, now)
            if len(c.path) > 1:
                assert c.path[0].dst in t.relays, "relayed through a peer that does not relay"
        for traits in traits_list:
            ch = Router(t).select(dst, traits, now)
            if not cands:
                assert ch is None
                continue
            assert ch is not None
            check_fresh_choice(cands, traits, ch)
            ranked = rank(cands, traits)
            assert sorted(map(id, ranked)) == sorted(map(id, cands))
            top = ranked[0]
            if not traits.bulky:
                assert (score(top), top.cost_per_gb) == (score(ch.candidate), ch.candidate.cost_per_gb)
            elif traits.deadline_s is None:
                assert (top.dead, top.metered, top.cost_per_gb) == (
                    ch.candidate.dead,
                    ch.candidate.metered,
                    ch.candidate.cost_per_gb,
                )


def check_hysteresis(cands: Sequence[Candidate], traits: Traits, prev: Choice | None, ch: Choice, now: float) -> None:
    """A route changes exactly when it died, left the pool, or a challenger beats it by the threshold."""
    policy = DefaultPolicy()
    fresh = policy.choose(cands, traits, now, None)
    assert fresh is not None
    best = fresh.candidate
    if prev is None:
        assert ch.candidate.key == best.key, ch.reason
        return
    pool = pool_of(cands)
    old = next((c for c in pool if c.key == prev.candidate.key), None)
    if traits.bulky and old is not None:
        unmetered = [c for c in pool if not c.metered]
        pool = unmetered or pool
        d = traits.deadline_s
        meets = pool if d is None else [c for c in pool if c.transfer_s(traits.size) <= d]
        if old.key not in {c.key for c in meets or pool}:
            old = None  # metered now, or no longer meets the deadline
    if old is None:  # the previous route died or went away: the fresh rule decides
        assert ch.candidate.key == best.key, ch.reason
        return
    if not traits.bulky:
        small = score(old) - score(best) < max(policy.min_gain_ms, policy.hysteresis * score(old))
    else:
        t_old, t_best = old.transfer_s(traits.size), best.transfer_s(traits.size)
        small = (
            best.cost_per_gb >= old.cost_per_gb - 1e-12
            and t_best >= (1 - policy.hysteresis) * t_old
            and old.cost_per_gb <= best.cost_per_gb + 1e-12
        )
    if small:
        assert ch.candidate.key == old.key, ch.reason
        if old.key != best.key:
            assert "kept" in ch.reason
    else:
        assert ch.candidate.key == best.key, ch.reason
        assert "kept" not in ch.reason


HYSTERESIS_TRAITS = (Traits("request"), Traits("bulk", size=10 * MB), Traits("stream", size=MB, deadline_s=1.0))


@settings(PROPERTY, max_examples=60)
@given(scenarios(), st.data())
def test_property_hysteresis_and_dead_routes(sc: Scenario, data: st.DataObject) -> None:
    """Select, change measurements and links, select again: the rules hold with a previous route in play."""
    t = sc.build()
    router = Router(t)
    now = sc.now
    before: dict[tuple[NodeId, str], Choice] = {}
    for _ in range(3):
        for dst in sc.destinations():
            cands = t.candidates(dst, now)
            live = [c for c in cands if not c.dead]
            for traits in HYSTERESIS_TRAITS:
                ch = router.select(dst, traits, now)
                assert (ch is None) == (not cands)
                if ch is None:
                    continue
                if live:
                    assert not ch.candidate.dead, ch.reason
                if traits.bulky and any(not c.metered for c in live):
                    assert not ch.candidate.metered, ch.reason
                check_hysteresis(cands, traits, before.get((dst, traits.purpose)), ch, now)
                again = router.select(dst, traits, now)  # nothing changed: the same route
                assert again is not None
                assert again.candidate.key == ch.candidate.key
                before[(dst, traits.purpose)] = ch
        ops = data.draw(ops_strategy(len(sc.links), 6))
        now = apply_ops(t, ops, now + 1.0) + data.draw(st.sampled_from([0.0, 5.0, 60.0]))


@dataclass(frozen=True)
class Measure:
    link: int
    rtt: float
    bandwidth: float
    ok: bool


@PROPERTY
@given(
    st.lists(st.tuples(kinds, st.sampled_from([0.0, 0.5]), st.booleans()), min_size=2, max_size=5),
    st.data(),
)
def test_property_hysteresis_one_destination(links: list[tuple[str, float, bool]], data: st.DataObject) -> None:
    """Parallel links to one peer whose measurements drift: small gains never move the route, big ones do."""
    t = RouteTable(ME, trusted=VOUCHED)
    for i, (kind, cost, metered) in enumerate(links):
        ws(t, f"L{i}", D, local_kind=kind, local_cost_per_gb=cost, local_metered=metered)
    router = Router(t)
    measures = st.builds(
        Measure,
        st.integers(0, len(links) - 1),
        st.floats(0.1, 100.0),
        st.floats(1e5, 1e8),
        st.integers(0, 9).map(bool),  # one failure in ten
    )
    before: dict[str, Choice] = {}
    now = 1.0
    for _ in range(data.draw(st.integers(1, 6))):
        for m in data.draw(st.lists(measures, max_size=4)):
            t.observe(f"L{m.link}", now, rtt_ms=m.rtt, bandwidth_bps=m.bandwidth)
            t.record(f"L{m.link}", m.ok, now)
        now += data.draw(st.sampled_from([0.5, 10.0, 100.0]))
        cands = t.candidates(D, now)
        for traits in HYSTERESIS_TRAITS:
            ch = router.select(D, traits, now)
            assert ch is not None
            check_hysteresis(cands, traits, before.get(traits.purpose), ch, now)
            before[traits.purpose] = ch


@settings(PROPERTY, max_examples=40)
@given(scenarios(suggestions=True))
def test_property_routes_round_trip(sc: Scenario) -> None:
    t = sc.build()
    router = Router(t)
    for dst in sc.destinations():
        for c in t.candidates(dst, sc.now):
            roundtrip(c.to_route(t.priors))
        ch = router.select(dst, Traits("bulk", size=MB), sc.now)
        if ch is not None:
            roundtrip(ch.route())
            roundtrip(SoloRoute(ch.candidate.path[0].dst, ch.candidate.path[0], t.priors))
    got = router.select_broadcast(sc.destinations(), sc.now)
    if got is not None:
        roundtrip(got[0])
    for h in t.local_hops():
        roundtrip(BroadcastRoute(sc.destinations(), h, t.priors))


def tree_prefixes(seg: RouteSegment, prefix: tuple[Hop, ...] = ()) -> list[tuple[Hop, ...]]:
    """Every path from the root of a forwarding tree, one per segment (the hops up to its end)."""
    here = prefix + seg.hops
    out = [here] if seg.hops else []
    firsts = [c.hops[0] for c in seg.children if c.hops]
    assert len(firsts) == len(set(firsts)), "siblings sharing a first hop were not merged"
    for child in seg.children:
        out.extend(tree_prefixes(child, here))
    return out


@settings(PROPERTY, max_examples=60)
@given(scenarios(suggestions=True))
def test_property_select_broadcast_tree(sc: Scenario) -> None:
    t = sc.build()
    dests = sc.destinations()
    got = Router(t).select_broadcast(dests, sc.now)
    reachable = [d for d in dests if t.candidates(d, sc.now)]
    if got is None:
        assert not reachable
        return
    route, groups = got
    assert route.kind == ROUTE_BROADCAST
    assert sorted(d for ds in groups.values() for d in ds) == sorted(reachable)
    chosen = {}
    for lid, ds in groups.items():
        for d in ds:
            ch = Router(t).select(d, Traits("pubsub"), sc.now)
            assert ch is not None
            assert ch.link_id == lid
            chosen[d] = ch.candidate
    assert route.stops is not None
    prefixes = tree_prefixes(route.stops)
    # exactly the distinct prefixes of the chosen paths: shared prefixes appear once
    want = {tuple(h.to_hop(t.priors) for h in c.path[:k]) for c in chosen.values() for k in range(1, len(c.path) + 1)}
    assert len(prefixes) == len(set(prefixes))
    assert set(prefixes) == want
    roundtrip(route)


@settings(PROPERTY, max_examples=60)
@given(scenarios(), st.sampled_from([0.0, 4.0, 49.0, 50.0, 499.0, 500.0, 1e6]))
def test_property_expire_keeps_live_candidates(sc: Scenario, later: float) -> None:
    """Expiry only drops what dead() already ignored; learned hops are dead from their expiry on."""
    t = sc.build()
    now = sc.now + later
    before = {dst: {c.key for c in t.candidates(dst, now) if not c.dead} for dst in sc.destinations()}
    for h in t.hops():
        if h.link_id is None:
            assert h.dead(now) == (now >= h.expires)
    n = len(t)
    gone = t.expire(now)
    assert len(t) == n - gone
    assert all(h.link_id is not None or h.expires > now for h in t.hops())
    for dst in sc.destinations():
        after = t.candidates(dst, now)
        assert {c.key for c in after if not c.dead} == before[dst]
        assert all(h.link_id is not None or h.expires > now for c in after for h in c.path)


@PROPERTY
@given(st.lists(st.integers(0, 5), min_size=1, max_size=6), st.integers(0, 5), st.booleans())
def test_property_suggest(path: list[int], dst: int, link: bool) -> None:
    """A suggested path is kept iff it starts here, has no loop and ends at the destination."""
    t = RouteTable(ME, trusted=VOUCHED)
    if link:
        ws(t, "first", NODES[path[1]] if len(path) > 1 and path[1] != 0 else R, peer_relays=True)
    nodes = [NODES[i] for i in path]
    if len(nodes) == 1:
        route = Route(RouteSchema(ME, (NODES[dst],)), RouteSegment((), ()))
    else:
        route = path_route(nodes, dst=NODES[dst], source=ME)
    good = len(nodes) > 1 and path[0] == 0 and len(set(path)) == len(path) and path[-1] == dst
    assert t.suggest(route, 0.0) == good
    found = [nodes_of(c) for c in t.candidates(NODES[dst], 1.0)]
    if good and link:
        assert nodes in found
    elif not link:
        assert found == []


learn_ops = st.one_of(
    st.tuples(
        st.just("learn"),
        st.integers(1, 4),  # reporter
        st.lists(st.tuples(st.integers(0, 5), st.integers(1, 5), st.sampled_from(["a", "b"])), max_size=5),
        st.sampled_from([1.0, 5.0, 50.0]),  # ttl
        st.booleans(),  # replace
    ),
    st.tuples(st.just("forget"), st.integers(1, 4)),
    st.tuples(st.just("expire")),
)


@PROPERTY
@given(st.lists(learn_ops, max_size=12), st.integers(1, 8))
def test_property_learned_bookkeeping(ops: list[tuple[Any, ...]], max_learned: int) -> None:
    """learn / forget_learned_from / expire against a plain model: key -> (reporter, expiry)."""
    t = RouteTable(ME, trusted=VOUCHED, max_learned=max_learned)
    model: dict[tuple[NodeId, NodeId, str], tuple[NodeId, float]] = {}
    now = 0.0
    for op in ops:
        now += 2.0
        if op[0] == "learn":
            _, who, hops, ttl, replace = op
            reporter = NODES[who]
            batch = [Hop(NODES[a], NODES[b], transport="websocket", address=addr) for a, b, addr in hops]
            fresh = set()
            taken = 0
            for h in batch:
                if h.src in (ME, h.dst):
                    continue
                key = (h.src, h.dst, f"websocket|{h.address}")
                if key not in model and len(model) >= max_learned:
                    continue
                model[key] = (reporter, now + ttl)
                fresh.add(key)
                taken += 1
            if replace:
                for key in [k for k, (r, _) in model.items() if r == reporter and k not in fresh]:
                    del model[key]
            assert t.learn(batch, now, learned_from=reporter, ttl_s=ttl, replace=replace) == taken
        elif op[0] == "forget":
            reporter = NODES[op[1]]
            gone = [k for k, (r, _) in model.items() if r == reporter]
            for key in gone:
                del model[key]
            assert t.forget_learned_from(reporter) == len(gone)
        else:
            gone = [k for k, (_, exp) in model.items() if now >= exp]
            for key in gone:
                del model[key]
            assert t.expire(now) == len(gone)
        assert {h.key: (h.learned_from, h.expires) for h in t.hops()} == model
        assert len(t) == len(model)


# -- whom to believe: a relay's claim needs the destination's support ------------------------------


def test_a_relays_claimed_hop_needs_the_destinations_own_report() -> None:
    t = RouteTable(ME)
    ws(t, "relay", R, local_kind="ethernet", peer_relays=True)
    t.learn([hop(R, D, rtt_ms=0.1)], 0.0, learned_from=R)  # R claims a very fast hop to D
    assert t.candidates(D, 1.0) == []  # D never said it is linked to R: R is not a route to D
    t.learn([hop(D, R, rtt_ms=0.1)], 0.0, learned_from=D)  # D's own report: the hop back to R
    assert [nodes_of(c) for c in t.candidates(D, 1.0)] == [[ME, R, D]]
    t.forget_learned_from(D)
    assert t.candidates(D, 1.0) == []


def test_a_trusted_relay_or_a_vouched_suggestion_needs_no_support() -> None:
    t = RouteTable(ME)
    ws(t, "relay", R, local_kind="ethernet", peer_relays=True)
    t.learn([hop(R, D)], 0.0, learned_from=R)
    assert t.candidates(D, 1.0) == []
    t.trusted = frozenset({R})  # R is a domain
    assert [nodes_of(c) for c in t.candidates(D, 1.0)] == [[ME, R, D]]
    t.trusted = frozenset()
    route = path_route([ME, R, D2])
    assert not t.suggest(route, 0.0)  # a relay's own suggestion of an unsupported hop: refused
    assert t.suggest(route, 0.0, vouched=True)  # the domain's: taken
    assert [nodes_of(c) for c in t.candidates(D2, 1.0)] == [[ME, R, D2]]


def test_routes_between_other_nodes_need_support_too() -> None:
    t = RouteTable(ME)
    t.learn([hop(S, R)], 0.0, learned_from=S)
    t.learn([hop(R, D)], 0.0, learned_from=R)
    t.set_relay(R, True)
    assert t.routes_between(S, D, 0.0, via_me=False) == []
    t.learn([hop(D, R)], 0.0, learned_from=D)
    assert [nodes_of(c) for c in t.routes_between(S, D, 0.0, via_me=False)] == [[S, R, D]]


def test_learned_hops_into_one_destination_are_capped() -> None:
    t = RouteTable(ME, max_learned_into=3)
    for i in range(1, 10):
        t.learn([hop(NODES[i], D)], 0.0, learned_from=NODES[i])
    assert len(t.hops_into(D)) == 3
