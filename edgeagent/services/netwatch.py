"""The network watch: this node's network probed at start and every ``probe_interval``, a change
re-advertised at once (mDNS and the domain's registry); and mDNS discovery of LAN peers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..exceptions import EdgeAgentError
from ..host import Host, Service
from ..wire import NodeId

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = ["NetworkService"]

log = logging.getLogger(__name__)


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

    # -- mDNS -------------------------------------------------------------------------------------

    async def _start_mdns(self) -> None:
        from ..discovery import MdnsDiscovery, MdnsRecord, interface_addresses

        self.mdns = MdnsDiscovery(
            self.host.identity,
            interface_addresses(self.mdns_mode),
            on_peer=self._on_discovered,
            listen_only=self.mdns_listen_only,
        )
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
        """A verified mDNS peer: link to it unless linked already (the lower NodeId dials)."""
        node: NodeId = peer.node_id
        advertising = self._listen_port() is not None and not self.mdns_listen_only
        if self._linked_or_dialing(node) or node in self._dialing:
            return
        if advertising and not self.host.node_id < node:
            return
        self._dialing.add(node)
        self.host.spawn(self._dial_discovered(peer))

    async def _dial_discovered(self, peer: Any) -> None:
        try:
            for url in peer.urls():
                try:
                    link = await self._dial(url, expected_peer=peer.node_id)
                except EdgeAgentError as exc:
                    log.info("mDNS peer %s at %s: %s", peer.node_id, url, exc)
                    continue
                await self._adopt_link(link)
                return
        finally:
            self._dialing.discard(peer.node_id)

    def status_fields(self) -> dict[str, Any]:
        return {
            "network": None
            if self.network is None
            else {**self.network.to_json(), "may_relay": self.may_relay[0], "relay_reason": self.may_relay[1]},
            "mdns": None
            if self.mdns is None
            else {"mode": self.mdns_mode, "peers": len(self.mdns.peers), "ignored": self.mdns.ignored},
        }

    async def aclose(self) -> None:
        if self.mdns is not None:
            await self.mdns.stop()  # goodbye packets
