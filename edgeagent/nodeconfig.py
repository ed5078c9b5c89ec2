"""``NodeConfig``: what a node does (built by the CLI from flags and the config file, or by hand)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .limits import ResourceLimits
from .links.base import LinkOptions
from .routing import Priors
from .wire import NodeId

__all__ = ["NodeConfig"]


@dataclass
class NodeConfig:
    """What a node does.

    ``allow``: the peers authorised besides the node's domain (default none); None makes the
    node open (every authenticated peer is authorised).
    """

    role: str = "device"
    listen: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    domain: str | None = None
    domain_id: NodeId | None = None  # the domain's NodeId (--expect); None: pinned on first link (domain.pin)
    allow: set[NodeId] | None = field(default_factory=set)
    link: LinkOptions = field(default_factory=LinkOptions)
    server_tls: ssl.SSLContext | None = None  # for wss:// listen URLs
    client_tls: ssl.SSLContext | None = None  # for dialling wss:// URLs (None: system CAs)
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs for WebRTC; none by default
    mdns: str = "off"  # "off", "loopback" (127.0.0.1 only) or "auto" (non-cellular LAN interfaces)
    net_probe: Callable[[], Any] | None = None  # returns a netcost.NetInfo; None: take link's settings as given
    probe_interval: float = 60.0  # seconds between network re-probes (a change re-advertises at once)
    run_conditions: Any = None  # netcost.RunConditions (default: relay only when unmetered)
    mdns_listen_only: bool = False  # browse without advertising
    store_quota: int = 256 << 20  # bytes the worker's object store may hold
    default_lease: float = 600.0  # seconds an object lives unless its lease is renewed
    forward: bool | None = None  # relay envelopes addressed to other nodes (default: domains do)
    peer_links: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> LinkOptions overrides
    priors: Priors | None = None  # routing priors per network kind ([routing.priors])
    route_tick: float = 1.0  # seconds between folding link health into the route table
    hop_report_interval: float = 60.0  # seconds between refreshes of this node's HopReport
    link_probe_interval: float = 300.0  # seconds between active probes of one link (0: never probe)
    probe_bytes: int = 256 * 1024  # throughput sample of one probe
    stream_max_bytes: int = 64 << 30  # largest stream this node accepts
    payload_quota: int | None = None  # bytes the payload store may hold (None: no limit)
    payload_upload_bps: float | None = None  # cap on this node's payload upload, bytes/s (None: none)
    resources: ResourceLimits | None = None  # [limits]; None: ResourceLimits.scaled(this machine's memory)
    fl_job: Any = None  # fl.JobSpec: the federated-learning job this domain runs
    fl_data: Path | None = None  # a device's local training data (.npz with x and y)
