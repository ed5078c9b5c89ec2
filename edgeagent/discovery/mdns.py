"""mDNS discovery with python-zeroconf's asyncio API.

A node advertises one signed service (see :mod:`.records`) and browses for
others; records whose signature does not verify are counted and ignored.
Interfaces are chosen explicitly: ``loopback`` binds 127.0.0.1 only (tests,
single-host demos), ``auto`` takes the IPv4 addresses of interfaces that are
up and neither cellular nor point-to-point (DESIGN s.7: mDNS is never sent on
cellular). ``listen_only`` browses without advertising. Stopping sends the
goodbye packets (the service is unregistered with TTL 0) so peers drop the
node at once; peers that vanish silently expire with their record's TTL.

Bounded (issue 16): at most ``mdns_peers`` advertised peers are kept (and resolved at once); an
advert for a further peer is refused before it is resolved, counted under ``mdns_peers`` by the
node's ``Limiter``, unless the peer is authorised and a kept peer is not (then the stranger that
was seen first makes room). At most ``_RESOLVES`` lookups run at once, and a peer's first
``_MAX_ADDRESSES`` IPv4 addresses are kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from ..exceptions import DecodeError, EdgeAgentError, SignatureError
from ..identity import Identity
from ..limits import Limiter
from ..wire import NodeId
from .records import SERVICE_TYPE, MdnsRecord, sign_txt, verify_txt

__all__ = ["DiscoveredPeer", "Lookup", "MdnsDiscovery", "interface_addresses"]

log = logging.getLogger(__name__)
_RESOLVE_MS: Final = 3000
_RESOLVES: Final = 8  # lookups of advertised services in flight at once
_MAX_ADDRESSES: Final = 4  # addresses kept (and dialled) per advertised peer

#: resolves an advertised service name to its TXT properties and IPv4 addresses (None: no answer)
Lookup = Callable[[str], Awaitable[tuple[Mapping[bytes, bytes | None], list[str]] | None]]
_CELLULAR_PREFIXES: Final = ("ww", "rmnet", "ccmni", "pdp", "ppp", "tun", "tap", "wg")


@dataclass
class DiscoveredPeer:
    record: MdnsRecord
    addresses: list[str]
    seen_at: float = field(default_factory=time.monotonic)

    @property
    def node_id(self) -> NodeId:
        return self.record.node_id

    def urls(self) -> list[str]:
        return [f"ws://{a}:{self.record.port}" for a in self.addresses]


def interface_addresses(mode: str) -> list[str]:
    """IPv4 addresses mDNS may use: 127.0.0.1 for ``loopback``; for ``auto`` every up,
    non-loopback, non-cellular, non-point-to-point interface's address."""
    if mode == "loopback":
        return ["127.0.0.1"]
    if mode != "auto":
        raise ValueError(f"mdns mode must be loopback or auto, not {mode!r}")
    import ifaddr  # a zeroconf dependency

    out = []
    for adapter in ifaddr.get_adapters():
        name = adapter.nice_name
        if name == "lo" or name.startswith(_CELLULAR_PREFIXES):
            continue
        for ip in adapter.ips:
            if ip.is_IPv4 and isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out


class MdnsDiscovery:
    """Advertise this node and report verified peers through ``on_peer`` / ``on_gone``."""

    def __init__(
        self,
        identity: Identity,
        addresses: list[str],
        *,
        on_peer: Callable[[DiscoveredPeer], None] | None = None,
        on_gone: Callable[[NodeId], None] | None = None,
        listen_only: bool = False,
        limiter: Limiter | None = None,
        authorised: Callable[[NodeId], bool] | None = None,
        lookup: Lookup | None = None,
    ) -> None:
        """``limiter``: the node's (its ``mdns_peers`` caps the peers kept, refusals are counted
        there); ``authorised``: whether this node authorises a peer (an authorised peer's advert may
        displace a stranger's when full); ``lookup``: how a service name is resolved (zeroconf's
        lookup by default; tests pass their own)."""
        if not addresses:
            raise EdgeAgentError("no interface to run mDNS on (none is up, or all are cellular/point-to-point)")
        self.identity = identity
        self.addresses = addresses
        self.listen_only = listen_only
        self.on_peer = on_peer
        self.on_gone = on_gone
        self.limiter = limiter if limiter is not None else Limiter()
        self._authorised = authorised or (lambda node: True)
        self._lookup: Lookup = lookup or self._zeroconf_lookup
        self.peers: dict[NodeId, DiscoveredPeer] = {}
        self.ignored = 0
        self._names: dict[str, NodeId] = {}
        self._resolving: dict[str, NodeId] = {}  # names being looked up
        self._again: set[str] = set()  # names that changed while being looked up
        self._lookups = asyncio.Semaphore(_RESOLVES)
        self._aiozc: Any = None
        self._browser: Any = None
        self._info: Any = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def max_peers(self) -> int:
        return self.limiter.limits.mdns_peers

    @property
    def instance_name(self) -> str:
        return f"{self.identity.node_id}.{SERVICE_TYPE}"

    def _service_info(self, record: MdnsRecord) -> Any:
        from zeroconf.asyncio import AsyncServiceInfo

        return AsyncServiceInfo(
            SERVICE_TYPE,
            self.instance_name,
            addresses=[socket.inet_aton(a) for a in self.addresses],
            port=record.port,
            properties=sign_txt(record, self.identity),
            server=f"ea-{str(self.identity.node_id)[-12:].lower()}.local.",
        )

    async def start(self, record: MdnsRecord | None) -> None:
        """Bind, advertise ``record`` (unless listen-only or None) and browse."""
        from zeroconf import IPVersion
        from zeroconf.asyncio import AsyncServiceBrowser, AsyncZeroconf

        self._aiozc = AsyncZeroconf(interfaces=list(self.addresses), ip_version=IPVersion.V4Only)
        # browse first: peers answer at once, while our own name probing (~1.2-1.6 s) goes on
        self._browser = AsyncServiceBrowser(self._aiozc.zeroconf, [SERVICE_TYPE], handlers=[self._on_change])
        if record is not None and not self.listen_only:
            self._info = self._service_info(record)
            await (await self._aiozc.async_register_service(self._info, allow_name_change=False))

    async def update(self, record: MdnsRecord) -> None:
        """Re-advertise after a change (new seq, network kind, metered flag...)."""
        if self._aiozc is None or self.listen_only:
            return
        info = self._service_info(record)
        # zeroconf's async_* calls return a task that finishes when the packets are out
        if self._info is None:
            await (await self._aiozc.async_register_service(info, allow_name_change=False))
        else:
            await (await self._aiozc.async_update_service(info))
        self._info = info

    async def stop(self) -> None:
        """Send goodbyes and close."""
        for task in list(self._tasks):
            task.cancel()
        if self._aiozc is None:
            return
        if self._browser is not None:
            with contextlib.suppress(Exception):
                await self._browser.async_cancel()
        if self._info is not None:
            with contextlib.suppress(Exception):
                await (await self._aiozc.async_unregister_service(self._info))  # the goodbye packets
        await self._aiozc.async_close()
        self._aiozc = None

    def _on_change(self, zeroconf: Any, service_type: str, name: str, state_change: Any) -> None:
        from zeroconf import ServiceStateChange

        if name == self.instance_name:
            return
        if state_change is ServiceStateChange.Removed:
            node = self._names.pop(name, None)
            if node is not None and self.peers.pop(node, None) is not None and self.on_gone:
                self.on_gone(node)
            return
        node = self._named(name)
        if node is None:
            self.ignored += 1
            return
        if name in self._resolving:
            self._again.add(name)  # looked up once more when the lookup in flight ends
            return
        if not self._room_for(node):
            self._refuse(node, "advert dropped unresolved")
            return
        self._resolving[name] = node
        task = asyncio.ensure_future(self._resolve(name))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    @staticmethod
    def _named(name: str) -> NodeId | None:
        """The NodeId an instance name ``<NodeId>.<SERVICE_TYPE>`` gives (None: not such a name)."""
        suffix = f".{SERVICE_TYPE}"
        if not name.endswith(suffix):
            return None
        try:
            return NodeId.parse(name[: -len(suffix)])
        except (DecodeError, ValueError):
            return None

    def _room_for(self, node: NodeId) -> bool:
        """Whether an advert for ``node`` may be resolved: it is kept already, there is room for
        one more (counting lookups in flight), or it is authorised and a kept peer is not."""
        if node in self.peers:
            return True
        looking = sum(1 for n in self._resolving.values() if n not in self.peers)
        if len(self.peers) + looking < self.max_peers:
            return True
        return self._authorised(node) and self._stranger() is not None

    def _stranger(self) -> NodeId | None:
        """The kept peer seen first among those this node does not authorise."""
        strangers = [p for p in self.peers.values() if not self._authorised(p.node_id)]
        return min(strangers, key=lambda p: p.seen_at).node_id if strangers else None

    def _refuse(self, node: NodeId, what: str) -> None:
        reason = f"{what}: {len(self.peers)} advertised peers kept (the most is {self.max_peers})"
        self.limiter.refuse("mdns_peers", node, reason, time.monotonic())

    async def _zeroconf_lookup(self, name: str) -> tuple[Mapping[bytes, bytes | None], list[str]] | None:
        from zeroconf.asyncio import AsyncServiceInfo

        info = AsyncServiceInfo(SERVICE_TYPE, name)
        if not await info.async_request(self._aiozc.zeroconf, _RESOLVE_MS):
            return None
        return info.properties or {}, list(info.parsed_addresses())

    async def _resolve(self, name: str) -> None:
        try:
            while True:
                async with self._lookups:
                    found = await self._lookup(name)
                if found is not None:
                    self._accept(name, *found)
                if name not in self._again:
                    return
                self._again.discard(name)
        finally:
            self._resolving.pop(name, None)
            self._again.discard(name)

    def _accept(self, name: str, properties: Mapping[bytes, bytes | None], addresses: list[str]) -> None:
        """Keep the verified record a lookup of ``name`` found, if there is room (see the module doc)."""
        try:
            record = verify_txt(dict(properties))
        except (DecodeError, SignatureError) as exc:
            self.ignored += 1
            log.info("mDNS: ignoring %s: %s", name, exc)
            return
        if name != f"{record.node_id}.{SERVICE_TYPE}":
            self.ignored += 1
            log.info("mDNS: ignoring %s: the record names %s", name, record.node_id)
            return
        if record.node_id == self.identity.node_id:
            return
        old = self.peers.get(record.node_id)
        if old is not None and record.seq < old.record.seq:
            return  # a stale record
        if old is None and len(self.peers) >= self.max_peers:
            stranger = self._stranger() if self._authorised(record.node_id) else None
            if stranger is None:
                self._refuse(record.node_id, "advert dropped")
                return
            self._drop(stranger)
        peer = DiscoveredPeer(record, [a for a in addresses if ":" not in a][:_MAX_ADDRESSES])
        self.peers[record.node_id] = peer
        self._names[name] = record.node_id
        if self.on_peer:
            self.on_peer(peer)

    def _drop(self, node: NodeId) -> None:
        """Forget a kept peer to make room (reported through ``on_gone``)."""
        self.peers.pop(node, None)
        self._names = {n: v for n, v in self._names.items() if v != node}
        log.info("mDNS: %d peers kept: forgetting %s for an authorised peer", self.max_peers, node.short())
        if self.on_gone:
            self.on_gone(node)
