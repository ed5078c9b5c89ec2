"""``NodeConfig``: what a node does (built by the CLI from flags and the config file, or by hand)."""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .exceptions import ConfigError
from .limits import ResourceLimits
from .links.base import LinkOptions
from .routing import Priors
from .wire import NodeId

if TYPE_CHECKING:  # pragma: no cover
    from .config import Resolved

__all__ = ["NodeConfig", "link_options"]


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

    @classmethod
    def from_settings(cls, res: Resolved, *, net_config: Any = None, job: Any = None) -> NodeConfig:
        """The NodeConfig that ``edgeagent run``/``domain`` builds from its effective settings (flags over
        the environment over the config file). ``net_config``: the cost file's ``NetCostConfig`` (None:
        the defaults); ``job``: the parsed job file. Raises ConfigError for settings that do not fit."""
        from .links.websocket import client_tls, server_tls
        from .netcost import NetCostConfig, Override, detect

        cfg = res.config
        tls = cfg.tls
        net_cfg = net_config if net_config is not None else NetCostConfig()
        override = Override(kind=res["network"], metered=res["metered"])
        listen = list(res["listen"])
        if any(u.startswith("wss://") for u in listen) and not tls.cert_file:
            raise ConfigError("a wss:// listen URL needs [tls] cert_file and key_file in the config file")
        routing = cfg.routing

        def net_probe() -> Any:
            return detect(net_cfg, override=override)

        return cls(
            role=res["role"],
            listen=listen,
            peers=res.peers,
            domain=res["domain"],
            domain_id=res["expect"],
            allow=None if res["open"] else set(res["allow"]),
            link=link_options(res),
            server_tls=server_tls(tls.cert_file, tls.key_file) if tls.cert_file and tls.key_file else None,
            client_tls=client_tls(tls.ca_file) if tls.ca_file else None,
            mdns=res["mdns"],
            mdns_listen_only=res["mdns_listen_only"],
            net_probe=net_probe,
            probe_interval=net_cfg.probe.interval,
            run_conditions=net_cfg.run,
            forward=res["relay"],  # [node] relay, [routing] relay or --relay; None: domains relay
            peer_links=dict(routing.peers),
            priors=Priors.from_config(routing.priors),
            link_probe_interval=routing.probe_interval,
            probe_bytes=routing.probe_bytes,
            hop_report_interval=routing.hop_report_interval,
            payload_upload_bps=cfg.payload.upload_mbit * 1e6 / 8 if cfg.payload.upload_mbit else None,
            payload_quota=cfg.payload.quota_mb << 20 if cfg.payload.quota_mb else None,
            resources=cfg.resources,
            fl_job=job,
            fl_data=res["data"],
        )


def link_options(res: Resolved) -> LinkOptions:
    """LinkOptions from the ``[wire]`` and ``[link]`` tables and the network settings (``--network`` etc.)."""
    cfg = res.config
    lc = cfg.link
    return LinkOptions(
        limits=cfg.limits,
        insecure=bool(res["insecure"]),
        network_kind=res["network"] or "unknown",
        metered=bool(res["metered"]),
        keepalive=lc.keepalive,
        dead_after=lc.dead_after,
        handshake_timeout=lc.handshake_timeout,
        recv_queue=lc.recv_queue,
        window=lc.window,
        cipher=lc.cipher,
        codecs=tuple("cbor" if c == "cbor" else "protobuf" for c in lc.codecs),
    )
