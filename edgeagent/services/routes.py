"""Routes as a service: the route table fed from the links, per-message picks, forwarding for others,
HopReports and RouteRequests (route discovery), and active link probes."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import math
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError, LinkError, NoRoute
from ..host import ChangeSignal, Host, Inbound, Pick, Policy, Registration, Sender, Service, on
from ..routing import Choice, Priors, Router, RouteTable, Traits, rank
from ..wire import (
    Chunk,
    Envelope,
    Error,
    ErrorCode,
    HopReport,
    Message,
    NodeId,
    Route,
    RouteReply,
    RouteRequest,
    StreamData,
)

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = ["RoutingService", "traits_of"]

log = logging.getLogger(__name__)
_SEEN_MAX: Final = 8192  # (source, msg_id) pairs a relay remembers to drop duplicates
_MAX_ROUTE_DESTINATIONS: Final = 16  # per RouteRequest
_FIRST_PINGS: Final = 4  # RTT samples taken when a link comes up (averaged)


@dataclasses.dataclass(frozen=True)
class RoutingConfig:
    role: str = "device"
    forwards: bool = False  # relay envelopes addressed to other nodes
    priors: Priors | None = None
    route_tick: float = 1.0
    hop_report_interval: float = 60.0
    link_probe_interval: float = 300.0
    probe_bytes: int = 256 * 1024


def traits_of(body: Message) -> Traits:
    """What a message needs from its route when the sender did not say."""
    if isinstance(body, StreamData):
        return Traits("stream", max(len(body.data), body.size - body.offset))
    if isinstance(body, Chunk):
        return Traits("bulk", len(body.data))
    return Traits("request")


def _loops(route: Route, me: NodeId) -> bool:
    """True when the route's hops leave ``me`` more than once."""
    assert route.stops is not None
    return sum(1 for h in route.stops.hops if h.src == me) > 1


class RoutingService(Service):
    """The route table and everything that reads or feeds it (the Host's ``routes``)."""

    name = "routes"

    def __init__(
        self,
        host: Host,
        config: RoutingConfig,
        *,
        may_relay: Callable[[], tuple[bool, str]],
        busy: Callable[[], bool],
    ) -> None:
        self.host = host
        self.config = config
        self._may_relay = may_relay
        self._busy = busy  # payloads moving: probes wait
        self.router = Router(RouteTable(host.node_id, config.priors or Priors()))
        self._link_ids: dict[int, str] = {}  # id(link) -> link id
        self.by_link_id: dict[str, Link] = {}
        self._link_seq = 0
        self._seen: OrderedDict[tuple[NodeId, int], None] = OrderedDict()
        self.forwarded = 0
        self.duplicates = 0
        self.rerouted = 0
        self.route_counts: Counter[str] = Counter()
        self.mode_counts: Counter[str] = Counter()  # delivery modes chosen per message (routing.choose_mode)
        self._changes = ChangeSignal()
        self.report_due = True
        self._report_sent = -math.inf
        self._probed: dict[str, float] = {}
        self._discovery_asked: dict[NodeId, float] = {}

    def handlers(self) -> Mapping[type[Message], Registration]:
        return {
            HopReport: on(Policy(Sender.AUTHORISED), self._on_hop_report),  # first-hand: a node reports its own
            RouteRequest: on(Policy(Sender.AUTHORISED, relayable=True), self._on_route_request),
        }

    # -- the link table's view -----------------------------------------------------------------

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        self._link_seq += 1
        lid = f"{link.transport_kind}-{self._link_seq}"
        self._link_ids[id(link)] = lid
        self.by_link_id[lid] = link
        hello = link.peer_hello
        self.router.table.link_up(
            lid,
            link.peer,
            transport=link.transport_kind,
            address=link.transport.remote_address,
            now=time.monotonic(),
            local_kind=link.options.network_kind,
            local_metered=link.options.metered,
            local_cost_per_gb=link.options.cost_per_gb,
            peer_kind=hello.network_kind,
            peer_metered=hello.metered,
            peer_relays=hello.role == "domain" or "relay" in hello.capabilities,
        )
        self.report_due = True
        self.host.spawn(self._first_pings(link), name=f"first-ping-{peer.short()}")

    async def _first_pings(self, link: Link) -> None:
        """Measure a new link's RTT at once (routing would otherwise rely on priors until the keepalive)."""
        with contextlib.suppress(EdgeAgentError):
            for i in range(_FIRST_PINGS):
                await link.ping(timeout=5.0)
                if i == 0 or i == _FIRST_PINGS - 1:
                    self.report_due = True
                await asyncio.sleep(0.05)

    def on_link_closed(self, link: Link) -> None:
        lid = self._link_ids.pop(id(link), None)
        if lid is not None:
            self.by_link_id.pop(lid, None)
            self.router.table.link_down(lid, time.monotonic())
            self._note_change()
        self.report_due = True

    # -- RouteView -----------------------------------------------------------------------------

    @property
    def generation(self) -> int:
        return self._changes.generation

    def pick(self, dst: NodeId, traits: Traits) -> Pick:
        """The route the policy picks for ``traits``; without one known, the domain's link (it forwards)."""
        return self._resolve(dst, self.router.select(dst, traits, time.monotonic()))

    def _resolve(self, dst: NodeId, choice: Choice | None) -> Pick:
        if choice is not None:
            link = self.by_link_id.get(choice.link_id)
            if link is not None and not link.closed:
                multi = len(choice.candidate.path) > 1
                route = choice.route(self.router.table.priors) if multi else None
                return Pick(link, route, choice.candidate.key, choice.candidate.describe(), choice.reason)
        link = self.link_to(dst)
        label = f"via {link.peer.short()} (no route known: the domain forwards)"
        return Pick(link, None, ("fallback", id(link)), label)

    def link_to(self, peer: NodeId, *, exclude: tuple[str, ...] = ()) -> Link:
        """A direct link to ``peer``, else the domain's (which forwards); ``exclude`` skips transports by kind."""
        for candidate in [peer, *sorted(self.host.peers.domain_ids)]:
            for link in self.host.peers.links(candidate):
                if link.transport_kind not in exclude:
                    return link
        raise NoRoute(f"no link to {peer} and no domain to reach it through")

    def sent(self, traits: Traits, pick: Pick) -> None:
        self.route_counts[f"{traits.purpose}:{'relayed' if pick.route is not None else 'direct'}"] += 1

    def failed(self, link: Link) -> None:
        lid = self._link_ids.get(id(link))
        if lid is not None:
            self.router.table.record(lid, False, time.monotonic())
        self._note_change()

    def succeeded(self, link: Link) -> None:
        lid = self._link_ids.get(id(link))
        if lid is not None:
            self.router.table.record(lid, True, time.monotonic())

    def _note_change(self) -> None:
        self._changes.note()

    async def wait_change(self, *others: asyncio.Event) -> None:
        await self._changes.wait(*others)

    # -- forwarding (domains always; devices that opted in while unmetered) ---------------------

    def relaying_now(self) -> bool:
        return self.config.forwards and (self.config.role == "domain" or self._may_relay()[0])

    def may_relay_to_me(self, link: Link) -> bool:
        """Whether ``link``'s peer may carry envelopes from others to this node: the domain, or a peer
        this node's configuration or domain authorised (never a Hello's say-so). What it carries must
        still prove its origin, so a relay can drop or delay, not forge."""
        return self.host.peers.is_domain(link.peer) or link.authorised

    async def forward(self, link: Link, env: Envelope) -> None:
        dst = env.destination
        assert dst is not None
        me = self.host.node_id
        key = (env.source, env.msg_id)
        if key in self._seen:
            self.duplicates += 1  # the same message by two paths (or a loop): deliver it once
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        reason = ""
        if not self.config.forwards:
            reason = "this node does not forward"
        elif self.config.role != "domain" and not self._may_relay()[0]:
            reason = f"this node stopped relaying ({self._may_relay()[1]})"
        elif not link.authorised:
            reason = "only authorised peers may send through this node"
        elif env.ttl <= 1:
            reason = "hop limit (ttl) reached"
        elif env.route is not None and env.route.stops is not None and _loops(env.route, me):
            reason = "the attached route loops through this node"
        target: Link | None = None
        if not reason:
            target, why = self._next_hop(link, env)
            if target is None:
                reason = why
        if reason or target is None:
            if env.reply_to is None and not isinstance(env.body, Error):
                no_route = reason.startswith(("no link", "hop limit", "the attached route loops"))
                code = ErrorCode.NO_ROUTE if no_route else ErrorCode.UNAUTHORIZED
                with contextlib.suppress(LinkError):
                    await link.send(env.reply(Error(code, reason), me))
            return
        self.forwarded += 1
        try:
            await target.send(dataclasses.replace(env, ttl=env.ttl - 1))
        except LinkError:
            self.failed(target)

    def _next_hop(self, came_from: Link, env: Envelope) -> tuple[Link | None, str]:
        """Where a relayed envelope goes next: its attached route, unless this node knows better."""
        dst = env.destination
        assert dst is not None
        me = self.host.node_id
        now = time.monotonic()
        traits = traits_of(env.body)
        cands = [
            c
            for c in self.router.table.candidates(dst, now, exclude_first=came_from.peer)
            if (lk := self.by_link_id.get(c.link_id)) is not None and lk.authorised and not lk.closed
        ]
        want: NodeId | None = None
        if env.route is not None and env.route.stops is not None:
            want = next((h.dst for h in env.route.stops.hops if h.src == me), None)
        own = self.router.policy.choose(cands, traits, now, None)
        attached = rank([c for c in cands if c.path[0].dst == want], traits) if want is not None else []
        if attached and not attached[0].dead:
            chosen = attached[0]
            if (
                own is not None
                and own.candidate.path[0].dst != want
                and (own.candidate.cost_per_gb < chosen.cost_per_gb - 1e-9)
            ):
                self.rerouted += 1
                log.info("re-routing %s for %s: %s", type(env.body).__name__, dst, own.reason)
                chosen = own.candidate
        elif own is not None:
            chosen = own.candidate
            if want is not None:
                self.rerouted += 1
                log.info(
                    "re-routing %s for %s: attached hop to %s is down; %s",
                    type(env.body).__name__,
                    dst,
                    want,
                    own.reason,
                )
        else:
            linked = bool(self.host.peers.links(dst))
            return None, f"no link to {dst}" if not linked else f"{dst} is not authorised here"
        return self.by_link_id.get(chosen.link_id), ""

    # -- route discovery -------------------------------------------------------------------------

    async def run(self) -> None:
        """Fold link health into the route table, refresh HopReports, expire learned hops, probe links."""
        tick = self.config.route_tick
        last_expire = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            table = self.router.table
            table.trusted = self.host.peers.domain_ids
            for lid, link in list(self.by_link_id.items()):
                st = link.stats
                hop = table.local(lid)
                bw = st.send_bps if hop is not None and st.send_bps > (hop.bandwidth_bps or 0.0) else None
                table.observe(
                    lid, now, rtt_ms=st.rtt_ms, failures=st.failures, bytes_sent=st.bytes_sent, bandwidth_bps=bw
                )
            if now - last_expire >= 10.0:
                last_expire = now
                table.expire(now)
            report_due = self.report_due or now - self._report_sent >= self.config.hop_report_interval
            if report_due and now - self._report_sent >= min(1.0, tick):
                self.report_due = False
                self._report_sent = now
                await self._send_hop_reports()
            if self.config.link_probe_interval > 0:
                self._maybe_probe(now)

    async def _send_hop_reports(self) -> None:
        """Tell domains and authorised neighbours which hops leave here: a neighbour believes a relay's
        claimed hop to this node only when this node's own report has the hop back (``supported``)."""
        table = self.router.table
        hops = tuple(h.to_hop(table.priors) for h in table.local_hops())
        relays = self.relaying_now()
        report = HopReport(hops, relays=relays)
        for peer, links in list(self.host.peers.linked()):
            link = links[0]
            if self.config.role == "domain" or not link.authorised:
                continue  # a domain answers RouteRequests instead of pushing its (large) view
            with contextlib.suppress(LinkError):
                await link.send(Envelope(report, self.host.node_id, destination=peer))

    async def _on_hop_report(self, m: Inbound[HopReport]) -> None:
        table = self.router.table
        limiter = self.host.limiter
        if len(m.body.hops) > limiter.limits.list_items:
            reason = f"a HopReport of {len(m.body.hops)} hops is more than the {limiter.limits.list_items} allowed"
            err = limiter.refuse("list_items", m.source, reason, time.monotonic())
            await m.refuse(ErrorCode(err.code), err.reason)
            return
        table.trusted = self.host.peers.domain_ids
        table.set_relay(m.source, m.body.relays)
        own = [h for h in m.body.hops if h.src == m.source]
        table.learn(own, time.monotonic(), learned_from=m.source, ttl_s=max(m.body.ttl_s, 1), replace=True)
        self._note_change()

    async def _on_route_request(self, m: Inbound[RouteRequest]) -> None:
        req = m.body
        if len(req.destinations) > _MAX_ROUTE_DESTINATIONS:
            await m.refuse(ErrorCode.BAD_REQUEST, f"at most {_MAX_ROUTE_DESTINATIONS} destinations per RouteRequest")
            return
        purpose = req.purpose if req.purpose in ("request", "bulk", "stream", "pubsub") else "request"
        traits = Traits(purpose, req.size_hint)  # type: ignore[arg-type]
        now = time.monotonic()
        routes: list[Route] = []
        table = self.router.table
        for d in req.destinations:
            cands = table.routes_between(m.source, d, now, via_me=self.relaying_now())
            for c in rank(cands, traits)[: max(1, min(req.max_routes, 16))]:
                if not c.dead:
                    routes.append(c.to_route(table.priors))
        await m.reply(RouteReply(tuple(routes)))

    async def discover(self, dst: NodeId, *, purpose: str = "request", size: int = 0, timeout: float = 5.0) -> int:
        """Ask the domains (or, without one, the relays this node links to) for routes to ``dst``.

        Returns how many suggested routes were taken into the table. At most one
        round of questions per destination every 5 seconds.
        """
        now = time.monotonic()
        if now - self._discovery_asked.get(dst, -math.inf) < 5.0:
            return 0
        self._discovery_asked[dst] = now
        peers = self.host.peers
        askers = [p for p in sorted(peers.domain_ids) if peers.links(p)] or [
            p for p in self.router.table.relays if peers.links(p) and p != dst
        ]
        taken = 0
        for peer in askers[:4]:
            try:
                reply = await self.host.request(peer, RouteRequest((dst,), purpose, size), timeout=timeout)
            except EdgeAgentError as exc:
                log.info("route request to %s failed: %s", peer, exc)
                continue
            if isinstance(reply, RouteReply):
                if len(reply.routes) > self.host.limiter.limits.list_items:
                    continue
                vouched = peers.is_domain(peer)
                self.router.table.trusted = peers.domain_ids
                for route in reply.routes:
                    taken += self.router.table.suggest(route, time.monotonic(), vouched=vouched)
        if taken:
            self._note_change()
        return taken

    def _maybe_probe(self, now: float) -> None:
        """Start at most one active probe per tick, on the link measured longest ago (never on metered links)."""
        if any(t > now for t in self._probed.values()) or self._busy():
            return  # a probe is running (its entry is in the future until it ends), or payloads are moving
        due = None
        for lid, link in self.by_link_id.items():
            hop = self.router.table.local(lid)
            if hop is None or hop.metered or link.closed:
                continue
            last = self._probed.get(lid, -math.inf)
            older = due is None or last < self._probed.get(due, -math.inf)
            if now - last >= self.config.link_probe_interval and older:
                due = lid
        if due is not None:
            self._probed[due] = now + 60.0
            self.host.spawn(self._probe(due))

    async def _probe(self, lid: str) -> None:
        link = self.by_link_id.get(lid)
        try:
            if link is None:
                return
            rtt, bw = await link.probe(self.config.probe_bytes, timeout=10.0)
            self.router.table.observe(lid, time.monotonic(), bandwidth_bps=bw)
            log.debug("probe %s: rtt %.2f ms, %.1f MB/s", lid, rtt, bw / 1e6)
        except EdgeAgentError as exc:
            log.info("probe of %s failed: %s", lid, exc)
        finally:
            if lid in self.by_link_id:
                self._probed[lid] = time.monotonic()
            else:
                self._probed.pop(lid, None)

    # -- views -------------------------------------------------------------------------------------

    def status_fields(self) -> dict[str, Any]:
        return {
            "routing": {
                "hops": len(self.router.table),
                "forwarded": self.forwarded,
                "rerouted": self.rerouted,
                "duplicates_dropped": self.duplicates,
            }
        }

    def routes_json(self) -> dict[str, Any]:
        """The route table, its measured figures and the current choice per destination."""
        table = self.router.table
        now = time.monotonic()
        priors = table.priors
        hops = []
        for h in table.hops():
            hops.append(
                {
                    "from": str(h.src),
                    "to": str(h.dst),
                    "link": h.link_id,
                    "transport": h.transport,
                    "network_kind": h.network_kind,
                    "metered": h.metered,
                    "cost_per_gb": h.cost_per_gb,
                    "rtt_ms": None if h.rtt_ms is None else round(h.rtt_ms, 3),
                    "expected_rtt_ms": round(h.expected_rtt_ms(priors), 3),
                    "bandwidth_bps": None if h.bandwidth_bps is None else round(h.bandwidth_bps),
                    "expected_bandwidth_bps": round(h.expected_bandwidth(priors)),
                    "health": round(h.health(now), 3),
                    "failures": h.failures,
                    "dead": h.dead(now),
                    "bytes_sent": h.bytes_sent,
                    "learned_from": None if h.learned_from is None else str(h.learned_from),
                    "expires_in_s": None if h.expires == math.inf else round(h.expires - now, 1),
                }
            )
        choices = []
        dests = sorted(table.destinations() - {self.host.node_id})
        for dst in dests[:1000]:
            for purpose in ("request", "bulk"):
                ch = self.router.policy.choose(
                    table.candidates(dst, now), Traits(purpose, 32 << 20 if purpose == "bulk" else 0), now, None
                )
                if ch is not None:
                    c = ch.candidate
                    choices.append(
                        {
                            "destination": str(dst),
                            "purpose": purpose,
                            "path": [str(h.dst) for h in c.path],
                            "via": c.describe(),
                            "latency_ms": round(c.latency_ms, 3),
                            "bandwidth_bps": round(c.bandwidth_bps),
                            "cost_per_gb": c.cost_per_gb,
                            "metered": c.metered,
                            "health": round(c.health, 3),
                            "reason": ch.reason,
                            "alternatives": ch.considered,
                        }
                    )
        return {
            "node_id": str(self.host.node_id),
            "hops": hops,
            "choices": choices,
            "relays": sorted(str(r) for r in table.relays),
            "counters": {
                "selections": self.router.selections,
                "route_changes": self.router.changes,
                "forwarded": self.forwarded,
                "rerouted": self.rerouted,
                "duplicates_dropped": self.duplicates,
                "sent": dict(self.route_counts),
                "modes": dict(self.mode_counts),
            },
        }
