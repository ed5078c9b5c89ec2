"""Route discovery and forwarding between in-process nodes over loopback websockets.

A domain answers RouteRequests from its global view (HopReports of its devices);
relays re-route around a dead attached hop; duplicates and loops are dropped;
the TTL bounds every journey.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.node import Node, NodeConfig
from edgeagent.routing import Traits
from edgeagent.wire import (
    Envelope,
    Error,
    ErrorCode,
    Hop,
    ObjectMessage,
    Response,
    Route,
    RouteReply,
    RouteRequest,
    RouteSchema,
    RouteSegment,
)
from tests.conftest import until as _until


@pytest.fixture
async def mesh(tmp_path: Path) -> AsyncIterator[dict[str, Node]]:
    """Domain D; devices A, B (a relay) and C. A-B, B-C, A-C direct links; everyone linked to D."""
    common: dict[str, Any] = {"allow": None, "route_tick": 0.1, "link_probe_interval": 0}
    d = Node(Identity.generate(), tmp_path / "D", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **common))
    await d.start()
    durl = d.listen_urls[0]
    c = Node(Identity.generate(), tmp_path / "C", NodeConfig(listen=["ws://127.0.0.1:0"], domain=durl, **common))
    await c.start()
    b = Node(
        Identity.generate(),
        tmp_path / "B",
        NodeConfig(listen=["ws://127.0.0.1:0"], domain=durl, peers=[c.listen_urls[0]], forward=True, **common),
    )
    await b.start()
    a = Node(
        Identity.generate(),
        tmp_path / "A",
        NodeConfig(
            domain=durl,
            peers=[b.listen_urls[0], c.listen_urls[0]],
            link=LinkOptions(network_kind="wifi"),
            peer_links={c.listen_urls[0]: {"network_kind": "cellular", "metered": True, "cost_per_gb": 2.0}},
            **common,
        ),
    )
    await a.start()
    nodes = {"A": a, "B": b, "C": c, "D": d}
    ids = {n: x.identity.node_id for n, x in nodes.items()}
    await _until(
        lambda: all(
            ids[p] in nodes[n].links
            for n, peers in {"A": "BCD", "B": "ACD", "C": "ABD", "D": "ABC"}.items()
            for p in peers
        ),
        15,
        "every link up",
    )
    try:
        yield nodes
    finally:
        for n in (a, b, c, d):
            await n.stop()


async def test_domain_answers_route_request_from_its_global_view(mesh: dict[str, Node]) -> None:
    a, b, c, d = mesh["A"], mesh["B"], mesh["C"], mesh["D"]
    ids = {n: x.identity.node_id for n, x in mesh.items()}
    # the domain learns B's hops (B relays) from B's HopReport
    await _until(lambda: any(h.src == ids["B"] and h.dst == ids["C"] for h in d.router.table.hops()), 10, "B->C at D")
    reply = await a.request(ids["D"], RouteRequest((ids["C"],), "bulk", 32 << 20), timeout=5)
    assert isinstance(reply, RouteReply) and reply.routes
    paths = [[h.dst for h in r.stops.hops] for r in reply.routes if r.stops is not None]
    assert [ids["B"], ids["C"]] in paths  # via the relay
    assert [ids["D"], ids["C"]] in paths  # via the domain itself
    assert all(r.schema.source == ids["A"] for r in reply.routes)
    # bulk ranking: unmetered first; A's direct cellular hop comes last if listed at all
    if [ids["C"]] in paths:
        assert paths.index([ids["C"]]) == len(paths) - 1
    # A takes the suggestions into its table
    taken = await a.routing.discover(ids["C"], purpose="bulk", size=32 << 20)
    assert taken >= 1
    assert any(len(x.path) == 2 for x in a.router.table.candidates(ids["C"], time.monotonic()))
    # asking again at once is rate-limited
    assert await a.routing.discover(ids["C"]) == 0
    # too many destinations: a clear error, and the domain keeps serving
    with pytest.raises(Exception, match="at most 16"):
        await a.request(ids["D"], RouteRequest(tuple([ids["C"]] * 17)), timeout=5)
    again = await a.request(ids["D"], RouteRequest((ids["B"],)), timeout=5)
    assert isinstance(again, RouteReply)
    assert b.routing.forwarded >= 0 and c is not None


async def test_relay_reroutes_when_the_attached_hop_is_gone(mesh: dict[str, Node]) -> None:
    a, b = mesh["A"], mesh["B"]
    ids = {n: x.identity.node_id for n, x in mesh.items()}
    # an attached route A -> B -> X -> C where X is a node B has no link to: B must re-route (to C directly)
    ghost = Identity.generate().node_id
    hops = (Hop(ids["A"], ids["B"]), Hop(ids["B"], ghost), Hop(ghost, ids["C"]))
    route = Route(RouteSchema(ids["A"], (ids["C"],)), RouteSegment(hops, ()))
    # (a RouteRequest is served to any authorised node, so its reply shows the journey)
    env = Envelope(RouteRequest((ids["B"],)), ids["A"], destination=ids["C"], route=route)
    fut = a._pending.add(env.msg_id, env.destination)
    before = b.routing.rerouted
    await a.links[ids["B"]][0].send(env)
    reply = await asyncio.wait_for(fut, 5)
    assert isinstance(reply.body, RouteReply), reply.body
    assert reply.source == ids["C"]
    assert b.routing.rerouted == before + 1


async def test_duplicates_loops_and_ttl_are_dropped(mesh: dict[str, Node]) -> None:
    a, b, c = mesh["A"], mesh["B"], mesh["C"]
    ids = {n: x.identity.node_id for n, x in mesh.items()}
    link_ab = a.links[ids["B"]][0]
    # the same message twice through B: forwarded once
    env = Envelope(RouteRequest((ids["B"],)), ids["A"], destination=ids["C"])
    fut = a._pending.add(env.msg_id, env.destination)
    fwd, dups = b.routing.forwarded, b.routing.duplicates
    await link_ab.send(env)
    await link_ab.send(env)
    await asyncio.wait_for(fut, 5)
    await _until(lambda: b.routing.duplicates == dups + 1, 5, "the duplicate to be dropped")
    assert b.routing.forwarded == fwd + 2  # the request once, and C's reply on its way back
    # a route that leaves B twice loops: refused with NO_ROUTE
    loop = RouteSegment(
        (Hop(ids["A"], ids["B"]), Hop(ids["B"], ids["A"]), Hop(ids["A"], ids["B"]), Hop(ids["B"], ids["C"])), ()
    )
    env2 = Envelope(
        RouteRequest((ids["B"],)), ids["A"], destination=ids["C"], route=Route(RouteSchema(ids["A"], (ids["C"],)), loop)
    )
    fut2 = a._pending.add(env2.msg_id, env2.destination)
    a._pending.sent_on(env2.msg_id, link_ab)  # B may refuse to carry it
    await link_ab.send(env2)
    err = (await asyncio.wait_for(fut2, 5)).body
    assert isinstance(err, Error) and err.code == ErrorCode.NO_ROUTE and "loops" in err.reason
    # ttl 1 cannot be forwarded
    env3 = Envelope(RouteRequest((ids["B"],)), ids["A"], destination=ids["C"], ttl=1)
    fut3 = a._pending.add(env3.msg_id, env3.destination)
    a._pending.sent_on(env3.msg_id, link_ab)  # B may refuse to carry it
    await link_ab.send(env3)
    err3 = (await asyncio.wait_for(fut3, 5)).body
    assert isinstance(err3, Error) and err3.code == ErrorCode.NO_ROUTE and "ttl" in err3.reason
    # B still serves
    env4 = dataclasses.replace(env, msg_id=env.msg_id + 1)
    fut4 = a._pending.add(env4.msg_id, env4.destination)
    await link_ab.send(env4)
    assert isinstance((await asyncio.wait_for(fut4, 5)).body, RouteReply)
    # a worker request relayed by a device (not a domain) is served as the proven sender's own: the
    # relay vouches for nothing, and A's link proved A's origin
    env5 = Envelope(ObjectMessage("relayed", b"x"), ids["A"], destination=ids["C"])
    fut5 = a._pending.add(env5.msg_id, env5.destination)
    await link_ab.send(env5)
    assert isinstance((await asyncio.wait_for(fut5, 5)).body, Response)
    assert c.worker.store.get("relayed", now=0).owner == ids["A"]
    assert isinstance(await a.request(ids["C"], ObjectMessage("direct", b"y")), Response)


async def test_metered_relay_stops_relaying_and_is_routed_around(mesh: dict[str, Node]) -> None:
    a, b = mesh["A"], mesh["B"]
    ids = {n: x.identity.node_id for n, x in mesh.items()}
    await _until(
        lambda: any(
            len(x.path) == 2 and x.path[0].dst == ids["B"]
            for x in a.router.table.candidates(ids["C"], time.monotonic())
        ),
        10,
        "A to know the route via B",
    )
    b.network.may_relay = (False, "metered network")  # what a switch to mobile data does (netcost run conditions)
    b.routing.report_due = True
    await _until(lambda: ids["B"] not in a.router.table.relays, 10, "A to learn that B stopped relaying")
    choice = a.router.select(ids["C"], Traits("stream", 1 << 20), time.monotonic())
    assert choice is not None and [h.dst for h in choice.candidate.path] != [ids["B"], ids["C"]]
