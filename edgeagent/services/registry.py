"""The peer registry: verified PeerRecords, this node's own record, and (on a domain) the registry
devices register with, which answers with the peers it may reach and a LAN-group hint."""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..exceptions import EdgeAgentError, SignatureError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..identity import sign_struct, verify_struct
from ..wire import ErrorCode, Message, NodeId, PeerList, PeerRecord, Response

__all__ = ["RegistryService", "lan_group"]

log = logging.getLogger(__name__)


def lan_group(remote_address: str) -> str:
    """The LAN group hint for a peer seen at ``host:port``: its /24 (IPv4) or /64 (IPv6) subnet."""
    host = remote_address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


class RegistryService(Service):
    """Peer records: received, verified, kept; registration with the domain."""

    name = "registry"

    def __init__(self, host: Host, *, upload_bps: Callable[[], float]) -> None:
        self.host = host
        self._upload_bps = upload_bps
        self.records: dict[NodeId, PeerRecord] = {}
        self.registered = asyncio.Event()  # set once a domain has answered our registration
        self.seq = 0

    def handlers(self) -> Mapping[type[Message], Registration]:
        # anyone may present its own record (an unauthorised peer gets an empty peer list)
        return {PeerRecord: on(Policy(Sender.ANYONE), self._on_peer_record)}

    def next_seq(self) -> int:
        """A record sequence number that grows with every call (ms clock, never repeats)."""
        self.seq = max(self.seq + 1, int(time.time() * 1000))
        return self.seq

    async def _on_peer_record(self, m: Inbound[PeerRecord]) -> None:
        rec = m.body
        try:
            verify_struct(rec, rec.node_id)
        except SignatureError as exc:
            await m.refuse(ErrorCode.UNAUTHORIZED, str(exc))
            return
        if rec.node_id != m.source:
            await m.refuse(ErrorCode.UNAUTHORIZED, "a peer may only register itself")
            return
        domain = self.host.role == "domain"
        if domain and m.link.peer == rec.node_id:
            rec = dataclasses.replace(rec, lan_group=lan_group(m.link.transport.remote_address))
        old = self.records.get(rec.node_id)
        if old is None or rec.seq > old.seq:
            self.records[rec.node_id] = rec
        if domain:  # the registry: answer with the other peers it may reach
            others = tuple(r for n, r in sorted(self.records.items(), key=lambda kv: kv[0]) if n != rec.node_id)
            await m.reply(PeerList(others if m.link.authorised else ()))
        elif m.env.reply_to is None:
            await m.reply(Response(None))

    def own_record(self) -> PeerRecord:
        """This node's signed PeerRecord; ``seq`` grows with every call."""
        seq = self.next_seq()
        opts = self.host.link_options
        rec = PeerRecord(
            self.host.node_id,
            seq,
            role=self.host.role,
            addresses=tuple(self.host.listen_urls),
            capabilities=opts.capabilities,
            network_kind=opts.network_kind,
            metered=opts.metered,
            cost_per_gb=opts.cost_per_gb,
            issued_ms=int(time.time() * 1000),
            # the payload planner sizes fan-out by it; 0 = unknown (the planner assumes 50 Mbit/s)
            upload_bps=self._upload_bps(),
        )
        return sign_struct(rec, self.host.identity)

    async def register(self, domain: NodeId, timeout: float = 10.0) -> list[PeerRecord]:
        """Register with the domain's registry; returns (and keeps) the verified peer records it lists."""
        reply = await self.host.request(domain, self.own_record(), timeout=timeout)
        if not isinstance(reply, PeerList):
            raise EdgeAgentError(f"the domain answered registration with {type(reply).__name__}")
        good = []
        for rec in reply.peers:
            try:
                verify_struct(rec, rec.node_id)
            except SignatureError:
                log.warning("domain listed a peer record that does not verify: %s", rec.node_id)
                continue
            old = self.records.get(rec.node_id)
            if old is None or rec.seq >= old.seq:
                self.records[rec.node_id] = rec
            good.append(rec)
        self.registered.set()
        return good

    def peers_json(self) -> list[dict[str, Any]]:
        """The ``peers`` document."""
        return [
            {
                "node_id": str(rec.node_id),
                "seq": rec.seq,
                "role": rec.role,
                "addresses": list(rec.addresses),
                "network_kind": rec.network_kind,
                "metered": rec.metered,
                "lan_group": rec.lan_group,
            }
            for rec in self.records.values()
        ]
