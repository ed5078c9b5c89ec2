"""The network watch: this node's network probed at start and every ``probe_interval``, a change
re-advertised at once (mDNS and the domain's registry); and mDNS discovery of LAN peers.

Bounded (issue 16): the mDNS browser keeps at most ``mdns_peers`` advertised peers (see
``discovery.mdns``), and at most ``mdns_dials`` dials to advertised peers are in flight, each
bounded by ``DIAL_TIMEOUT``. An advert that finds every dial slot taken is refused (counted
under ``mdns_dials``); its peer waits in a queue of kept peers, authorised ones first, and is
dialled when a slot frees if it is still advertised and still not linked.

Reachability (AutoNAT's idea, never a node's own claim): when a device's link to its domain comes
up it asks the domain to dial it back (``DialBack``) at the address the domain sees its link come
from, on its listening port. The answer says whether that worked and which address the domain saw:
``public`` (the dial-back reached it), ``nat`` (it did not, and the domain saw another address than
this end of the link: a router translates), ``lan-only`` (it did not, and no translation: only its
LAN can reach it). ``status --json`` shows it under ``reachability`` with the evidence. The domain
dials back only the address a request came from (never one the asker names), at most
``DIALBACK_PORTS`` ports, once per ``DIALBACK_EVERY`` per peer, and remembers what it found.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..wire import DialBack, DialBackReply, DialResult, ErrorCode, Message, NodeId

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = ["NetworkService"]

log = logging.getLogger(__name__)
DIAL_TIMEOUT: Final = 10.0  # seconds one dial to an advertised address may take
DIALBACK_TIMEOUT: Final = 3.0  # seconds one dial-back may take
DIALBACK_PORTS: Final = 4  # ports one DialBack may ask for
DIALBACK_EVERY: Final = 10.0  # seconds between two dial-backs one peer may ask for
REACH_AGAIN: Final = 60.0  # seconds before a new link to the domain checks reachability again
_DIALBACK_KEPT: Final = 1024  # peers whose last dial-back (asked, found) is remembered


class NetworkService(Service):
    """Owns ``network`` (the last NetInfo), ``may_relay`` and the mDNS browser/advertiser."""

    name = "network"

    def __init__(
        self,
        host: Host,
        *,
        probe: Callable[[], Any] | None,
        interval: float,
        run_conditions: Any,
        mdns: str,
        mdns_listen_only: bool,
        adopt_network: Callable[[Any], None],
        register: Callable[[NodeId], Awaitable[Any]],
        next_seq: Callable[[], int],
        listen_port: Callable[[], int | None],
        linked_or_dialing: Callable[[NodeId], bool],
        dial: Callable[..., Awaitable[Link]],
        adopt_link: Callable[[Link], Awaitable[None]],
        on_relay_change: Callable[[], None],
    ) -> None:
        self.host = host
        self._probe = probe
        self.interval = interval
        self.run_conditions = run_conditions
        self.mdns_mode = mdns
        self.mdns_listen_only = mdns_listen_only
        self._adopt_network = adopt_network
        self._register = register
        self._next_seq = next_seq
        self._listen_port = listen_port
        self._linked_or_dialing = linked_or_dialing
        self._dial = dial
        self._adopt_link = adopt_link
        self._on_relay_change = on_relay_change
        self.network: Any = None  # the last netcost.NetInfo
        self.may_relay: tuple[bool, str] = (True, "network not probed")
        self.mdns: Any = None  # MdnsDiscovery when enabled
        self._watcher: Any = None
        self._dialing: set[NodeId] = set()
        self._waiting: OrderedDict[NodeId, None] = OrderedDict()  # kept peers to dial when a slot frees
        self._closed = False
        self.reachability: dict[str, Any] = {"state": "unknown", "why": "not checked yet"}
        self._reach_task: asyncio.Task[None] | None = None
        self._reach_at = -REACH_AGAIN
        self._dialed_back: OrderedDict[NodeId, tuple[float, bool, str]] = OrderedDict()  # peer -> (when, ok, seen)

    def handlers(self) -> dict[type[Message], Registration]:
        return {DialBack: on(Policy(Sender.AUTHORISED), self._on_dial_back)}

    # -- reachability -----------------------------------------------------------------------------

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        """A (new) link to the domain: check reachability, unless a check runs or ran lately (the
        domain's own dial-back is such a link)."""
        if self.host.role == "domain" or not self.host.peers.is_domain(peer):
            return
        now = time.monotonic()
        if (self._reach_task is not None and not self._reach_task.done()) or now - self._reach_at < REACH_AGAIN:
            return
        self._reach_at = now
        self._reach_task = self.host.spawn(self._check_reachability(peer, link), name="reachability")

    async def _check_reachability(self, domain: NodeId, link: Link) -> None:
        port = self._listen_port()
        if port is None:
            self.reachability = {"state": "lan-only", "why": "this node does not listen", "checked_by": str(domain)}
            return
        try:
            reply = await self.host.request(domain, DialBack((port,)), timeout=DIALBACK_TIMEOUT + 5.0)
        except EdgeAgentError as exc:
            self.reachability = {"state": "unknown", "why": f"the dial-back check failed: {exc}"}
            return
        if not isinstance(reply, DialBackReply):
            return
        local = _host_of(link.transport.local_address)
        ok = any(r.ok for r in reply.results)
        translated = bool(reply.observed and local and reply.observed != local)
        state = "public" if ok else "nat" if translated else "lan-only"
        self.reachability = {
            "state": state,
            "observed": reply.observed,
            "local": local,
            "checked_by": str(domain),
            "dial_back": [{"url": r.url, "ok": r.ok, "error": r.error} for r in reply.results],
        }
        log.info("reachability: %s (the domain sees %s; this end is %s)", state, reply.observed or "?", local or "?")

    async def _on_dial_back(self, m: Inbound[DialBack]) -> None:
        now = time.monotonic()
        last = self._dialed_back.get(m.source)
        if last is not None and now - last[0] < DIALBACK_EVERY:
            err = self.host.limiter.refuse("dial_back", m.source, f"one dial-back per {DIALBACK_EVERY:.0f} s", now)
            await m.refuse(ErrorCode(err.code), err.reason)
            return
        if len(m.body.ports) > DIALBACK_PORTS or not all(0 < p < 65536 for p in m.body.ports):
            await m.refuse(ErrorCode.BAD_REQUEST, f"at most {DIALBACK_PORTS} ports, each 1..65535")
            return
        seen = _host_of(m.link.transport.remote_address)
        results: list[DialResult] = []
        for port in m.body.ports if seen else ():
            url = f"ws://[{seen}]:{port}" if ":" in seen else f"ws://{seen}:{port}"
            try:
                async with asyncio.timeout(DIALBACK_TIMEOUT):
                    back = await self._dial(url, expected_peer=m.source)
            except (EdgeAgentError, TimeoutError) as exc:
                results.append(DialResult(url, False, str(exc) or "timed out"))
                continue
            results.append(DialResult(url, True))
            await back.close(1000, "dial-back check done")
        self._dialed_back[m.source] = (now, any(r.ok for r in results), seen)
        self.host.peers.found_dialable(m.source, any(r.ok for r in results))
        self._dialed_back.move_to_end(m.source)
        while len(self._dialed_back) > _DIALBACK_KEPT:
            self._dialed_back.popitem(last=False)
        await m.reply(DialBackReply(seen, tuple(results)))

    def dialable(self, peer: NodeId) -> bool | None:
        """What this node's own dial-back found for ``peer`` (None: never checked)."""
        found = self._dialed_back.get(peer)
        return None if found is None else found[1]

    async def start(self) -> None:
        """Probe once (before listening: peers are told the network in Hello)."""
        if self._probe is not None:
            self.apply(await asyncio.to_thread(self._probe))

    async def start_watching(self) -> None:
        """After the listeners are up: mDNS, and the periodic re-probe."""
        if self.mdns_mode != "off":
            await self._start_mdns()
        if self._probe is not None:
            self.host.spawn(self._watch())

    def apply(self, info: Any) -> bool:
        """Adopt a NetInfo; returns True when what peers are told changed."""
        from ..netcost import NetWatcher, RunConditions

        if self._watcher is None:
            self._watcher = NetWatcher()
        change = self._watcher.update(info)
        self.network = info
        conditions = self.run_conditions or RunConditions()
        was = self.may_relay[0]
        self.may_relay = conditions.may_relay(info)
        if self.may_relay[0] != was:
            self._on_relay_change()  # neighbours route through relays: tell them at once
        if change is None:
            return False
        self._adopt_network(info)
        log.info(
            "network: %s, %s (%s); relaying %s",
            info.kind,
            "metered" if info.metered else "unmetered",
            info.decided_by,
            "on" if self.may_relay[0] else "off",
        )
        return True

    async def _watch(self) -> None:
        assert self._probe is not None
        while True:
            await asyncio.sleep(self.interval)
            info = await asyncio.to_thread(self._probe)
            if self.apply(info):
                await self.readvertise()

    async def readvertise(self) -> None:
        """Tell the LAN (mDNS) and the domains (registry) about a change, at once."""
        port = self._listen_port()
        if self.mdns is not None and port is not None:
            from ..discovery import MdnsRecord

            opts = self.host.link_options
            record = MdnsRecord(
                self.host.node_id,
                port,
                seq=self._next_seq(),
                capabilities=opts.capabilities,
                network_kind=opts.network_kind,
                metered=opts.metered,
            )
            with contextlib.suppress(Exception):
                await self.mdns.update(record)
        for domain in sorted(self.host.peers.domain_ids):
            try:
                await self._register(domain)
            except EdgeAgentError as exc:
                log.warning("re-registering with %s failed: %s", domain, exc)
            if links := self.host.peers.links(domain):  # a new network: reachable again, or not?
                self._reach_at = -REACH_AGAIN
                self.on_link_up(domain, links[0])

    # -- mDNS -------------------------------------------------------------------------------------

    def make_mdns(self) -> Any:
        """The MdnsDiscovery for this node (not started): its peers feed ``_on_discovered``."""
        from ..discovery import MdnsDiscovery, interface_addresses

        return MdnsDiscovery(
            self.host.identity,
            interface_addresses(self.mdns_mode),
            on_peer=self._on_discovered,
            on_gone=self._on_gone,
            listen_only=self.mdns_listen_only,
            limiter=self.host.limiter,
            authorised=self.host.peers.authorised,
        )

    async def _start_mdns(self) -> None:
        from ..discovery import MdnsRecord

        self.mdns = self.make_mdns()
        record = None
        port = self._listen_port()
        if port is not None:
            opts = self.host.link_options
            record = MdnsRecord(
                self.host.node_id,
                port,
                capabilities=opts.capabilities,
                network_kind=opts.network_kind,
                metered=opts.metered,
            )
        await self.mdns.start(record)

    def _on_discovered(self, peer: Any) -> None:
        """A verified mDNS peer: link to it unless linked already (the lower NodeId dials), with at
        most ``mdns_dials`` such dials in flight (else it waits for a slot)."""
        node: NodeId = peer.node_id
        if not self._should_dial(node):
            return
        slots = self.host.limiter.limits.mdns_dials
        if len(self._dialing) >= slots:
            reason = f"{len(self._dialing)} dials to advertised peers in flight (the most is {slots})"
            self.host.limiter.refuse("mdns_dials", node, reason, time.monotonic())
            self._waiting[node] = None
            self._waiting.move_to_end(node)
            while len(self._waiting) > self.host.limiter.limits.mdns_peers:
                self._waiting.popitem(last=False)
            return
        self._waiting.pop(node, None)
        self._dialing.add(node)
        self.host.spawn(self._dial_discovered(peer))

    def _should_dial(self, node: NodeId) -> bool:
        if self._linked_or_dialing(node) or node in self._dialing:
            return False
        advertising = self._listen_port() is not None and not self.mdns_listen_only
        return not advertising or self.host.node_id < node

    def _on_gone(self, node: NodeId) -> None:
        self._waiting.pop(node, None)

    def _dial_next(self) -> None:
        """Dial waiting peers while slots are free: authorised ones first, then the oldest."""
        slots = self.host.limiter.limits.mdns_dials
        while self._waiting and len(self._dialing) < slots:
            authorised = self.host.peers.authorised
            node = next((n for n in self._waiting if authorised(n)), next(iter(self._waiting)))
            del self._waiting[node]
            peer = self.mdns.peers.get(node) if self.mdns is not None else None
            if peer is None or not self._should_dial(node):
                continue
            self._dialing.add(node)
            self.host.spawn(self._dial_discovered(peer))

    async def _dial_discovered(self, peer: Any) -> None:
        try:
            for url in peer.urls():
                try:
                    async with asyncio.timeout(DIAL_TIMEOUT):
                        link = await self._dial(url, expected_peer=peer.node_id)
                except (EdgeAgentError, TimeoutError) as exc:
                    log.info("mDNS peer %s at %s: %s", peer.node_id, url, exc or "timed out")
                    continue
                await self._adopt_link(link)
                return
        finally:
            self._dialing.discard(peer.node_id)
            task = asyncio.current_task()
            if not self._closed and (task is None or not task.cancelling()):
                self._dial_next()  # not while the node stops

    def status_fields(self) -> dict[str, Any]:
        return {
            "reachability": self.reachability
            if self.host.role != "domain"
            else {"checked": len(self._dialed_back), "dialable": sum(1 for v in self._dialed_back.values() if v[1])},
            "network": None
            if self.network is None
            else {**self.network.to_json(), "may_relay": self.may_relay[0], "relay_reason": self.may_relay[1]},
            "mdns": None
            if self.mdns is None
            else {"mode": self.mdns_mode, "peers": len(self.mdns.peers), "ignored": self.mdns.ignored},
        }

    async def aclose(self) -> None:
        self._closed = True
        self._waiting.clear()
        if self.mdns is not None:
            await self.mdns.stop()  # goodbye packets


def _host_of(address: str) -> str:
    """The IP of an "ip:port" (or "[ip6]:port") transport address; "" when there is none."""
    if not address or ":" not in address:
        return ""
    host = address.rsplit(":", 1)[0]
    return host[1:-1] if host.startswith("[") and host.endswith("]") else host
