"""Configuration files (TOML). Every key is documented in ``configs/edgeagent.example.toml``.

Unknown tables or keys are an error (a typo must not be silently ignored).
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .exceptions import ConfigError
from .limits import ResourceLimits, machine_memory
from .wire.limits import Limits

__all__ = [
    "Config",
    "DiscoveryConfig",
    "LinkConfig",
    "PayloadConfig",
    "RoutingConfig",
    "TlsConfig",
    "load_config",
    "read_toml",
]

_WIRE_KEYS = {
    "max_frame_bytes": "max_frame",
    "max_depth": "max_depth",
    "max_collection": "max_collection",
    "max_tensor_bytes": "max_tensor_bytes",
}


#: [link] keys -> (type, check, error text)
_LINK_KEYS: dict[str, tuple[type, str]] = {
    "keepalive": (float, "positive number of seconds"),
    "dead_after": (float, "positive number of seconds"),
    "handshake_timeout": (float, "positive number of seconds"),
    "recv_queue": (int, "positive integer"),
    "window": (int, "positive integer (bytes)"),
    "cipher": (str, 'one of "auto", "AESGCM", "ChaChaPoly"'),
    "codecs": (list, 'list of "cbor" and/or "protobuf"'),
}


@dataclass(frozen=True)
class LinkConfig:
    """The ``[link]`` table (see LinkOptions for meanings)."""

    keepalive: float = 15.0
    dead_after: float = 45.0
    handshake_timeout: float = 10.0
    recv_queue: int = 64
    window: int = 16 << 20
    cipher: str = "auto"
    codecs: tuple[str, ...] = ("cbor", "protobuf")


_KINDS = ("wifi", "ethernet", "cellular", "loopback", "unknown")


@dataclass(frozen=True)
class RoutingConfig:
    """The ``[routing]`` table: relaying, link probes, priors, and per-peer link marks."""

    relay: bool | None = None  # None: domains relay, devices do not
    probe_interval: float = 300.0
    probe_bytes: int = 256 * 1024
    hop_report_interval: float = 60.0
    priors: dict[str, Any] = field(default_factory=dict)  # raw [routing.priors], checked by Priors.from_config
    peers: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> {network_kind, metered, cost_per_gb}


@dataclass(frozen=True)
class PayloadConfig:
    """The ``[payload]`` table: the payload store and this node's upload budget for payload trees."""

    upload_mbit: float | None = None  # cap on payload upload (Mbit/s); None: no cap
    quota_mb: int | None = None  # MiB the payload store may hold; None: no limit


@dataclass(frozen=True)
class TlsConfig:
    """The ``[tls]`` table: certificate for ``wss://`` listeners, CA for dialling ``wss://``."""

    cert_file: str | None = None
    key_file: str | None = None
    ca_file: str | None = None


@dataclass(frozen=True)
class DiscoveryConfig:
    """The ``[discovery]`` table: static peers and mDNS (command-line flags add to / override it)."""

    peers: tuple[str, ...] = ()
    mdns: str = "off"
    mdns_listen_only: bool = False


def _discovery(table: Any, path: Path) -> DiscoveryConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [discovery] must be a table")
    known = ("peers", "mdns", "mdns_listen_only")
    for key in table:
        if key not in known:
            raise ConfigError(f"{path}: unknown key discovery.{key} (known: {', '.join(known)})")
    peers = table.get("peers", [])
    if not isinstance(peers, list) or not all(isinstance(u, str) and u.startswith(("ws://", "wss://")) for u in peers):
        raise ConfigError(f"{path}: discovery.peers must be a list of ws:// or wss:// URLs")
    mdns = table.get("mdns", "off")
    if mdns not in ("off", "loopback", "auto"):
        raise ConfigError(f'{path}: discovery.mdns must be "off", "loopback" or "auto"')
    listen_only = table.get("mdns_listen_only", False)
    if type(listen_only) is not bool:
        raise ConfigError(f"{path}: discovery.mdns_listen_only must be true or false")
    return DiscoveryConfig(tuple(peers), mdns, listen_only)


@dataclass(frozen=True)
class Config:
    """The parsed configuration. Later sections (discovery, cost...) extend it."""

    limits: Limits = field(default_factory=Limits)
    link: LinkConfig = field(default_factory=LinkConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)
    discovery: DiscoveryConfig = field(default_factory=DiscoveryConfig)
    routing: RoutingConfig = field(default_factory=RoutingConfig)
    payload: PayloadConfig = field(default_factory=PayloadConfig)
    resources: ResourceLimits | None = None  # the [limits] table (None: scaled to this machine)
    source: Path | None = None


def _tls(table: Any, path: Path) -> TlsConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [tls] must be a table")
    known = ("cert_file", "key_file", "ca_file")
    kwargs: dict[str, str] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"{path}: unknown key tls.{key} (known: {', '.join(known)})")
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{path}: tls.{key} must be a file path")
        # relative paths are relative to the config file
        kwargs[key] = str((path.parent / value).resolve())
    if ("cert_file" in kwargs) != ("key_file" in kwargs):
        raise ConfigError(f"{path}: tls.cert_file and tls.key_file go together")
    return TlsConfig(**kwargs)


def _link(table: Any, path: Path) -> LinkConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [link] must be a table")
    kwargs: dict[str, Any] = {}
    for key, raw in table.items():
        value = raw
        if key not in _LINK_KEYS:
            raise ConfigError(f"{path}: unknown key link.{key} (known: {', '.join(sorted(_LINK_KEYS))})")
        typ, text = _LINK_KEYS[key]
        ok = False
        if typ is float:
            ok = type(value) in (int, float) and value > 0
            value = float(value)
        elif typ is int:
            ok = type(value) is int and value > 0
        elif key == "cipher":
            ok = value in ("auto", "AESGCM", "ChaChaPoly")
        elif key == "codecs":
            ok = isinstance(value, list) and bool(value) and all(v in ("cbor", "protobuf") for v in value)
            value = tuple(value) if ok else value
        if not ok:
            raise ConfigError(f"{path}: link.{key} must be a {text}, got {value!r}")
        kwargs[key] = value
    cfg = LinkConfig(**kwargs)
    if cfg.dead_after <= cfg.keepalive:
        raise ConfigError(f"{path}: link.dead_after must exceed link.keepalive")
    return cfg


def _routing(table: Any, path: Path) -> RoutingConfig:
    from .routing import Priors

    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [routing] must be a table")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "relay":
            if type(value) is not bool:
                raise ConfigError(f"{path}: routing.relay must be true or false, got {value!r}")
            kwargs[key] = value
        elif key in ("probe_interval", "hop_report_interval"):
            if type(value) not in (int, float) or value < 0:
                raise ConfigError(f"{path}: routing.{key} must be a non-negative number of seconds, got {value!r}")
            kwargs[key] = float(value)
        elif key == "probe_bytes":
            if type(value) is not int or not 1024 <= value <= 8 << 20:
                raise ConfigError(f"{path}: routing.probe_bytes must be an integer from 1024 to 8388608")
            kwargs[key] = value
        elif key == "priors":
            try:
                Priors.from_config(value if isinstance(value, dict) else {"?": value})
            except ValueError as exc:
                raise ConfigError(f"{path}: {exc}") from None
            kwargs[key] = value
        elif key == "peers":
            kwargs[key] = _routing_peers(value, path)
        else:
            known = "relay, probe_interval, probe_bytes, hop_report_interval, priors, peers"
            raise ConfigError(f"{path}: unknown key routing.{key} (known: {known})")
    return RoutingConfig(**kwargs)


def _routing_peers(table: Any, path: Path) -> dict[str, dict[str, Any]]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [routing.peers] must map peer URLs to tables")
    out: dict[str, dict[str, Any]] = {}
    for url, marks in table.items():
        if not isinstance(marks, dict):
            raise ConfigError(f"{path}: routing.peers.{url!r} must be a table")
        o: dict[str, Any] = {}
        for key, value in marks.items():
            if key == "network" and value in _KINDS:
                o["network_kind"] = value
            elif key == "metered" and type(value) is bool:
                o["metered"] = value
            elif key == "cost_per_gb" and type(value) in (int, float) and value >= 0:
                o["cost_per_gb"] = float(value)
            else:
                raise ConfigError(
                    f"{path}: routing.peers.{url!r}.{key} = {value!r} is not valid "
                    f"(network: one of {', '.join(_KINDS)}; metered: true/false; cost_per_gb: >= 0)"
                )
        out[url] = o
    return out


def _payload(table: Any, path: Path) -> PayloadConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [payload] must be a table")
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "upload_mbit":
            if type(value) not in (int, float) or not 0 < value < float("inf"):
                raise ConfigError(f"{path}: payload.upload_mbit must be a positive number, got {value!r}")
            kwargs[key] = float(value)
        elif key == "quota_mb":
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{path}: payload.quota_mb must be a positive integer, got {value!r}")
            kwargs[key] = value
        else:
            raise ConfigError(f"{path}: unknown key payload.{key} (known: quota_mb, upload_mbit)")
    return PayloadConfig(**kwargs)


def _wire(table: Any, path: Path) -> Limits:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [wire] must be a table")
    kwargs: dict[str, int] = {}
    for key, value in table.items():
        if key not in _WIRE_KEYS:
            raise ConfigError(f"{path}: unknown key wire.{key} (known: {', '.join(sorted(_WIRE_KEYS))})")
        if type(value) is not int or value < 1:
            raise ConfigError(f"{path}: wire.{key} must be a positive integer, got {value!r}")
        kwargs[_WIRE_KEYS[key]] = value
    return Limits(**kwargs)


def read_toml(path: Path, what: str = "config file") -> dict[str, Any]:
    """Parse a TOML file; every failure is a ConfigError that names the file."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read {what} {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def load_config(path: Path | None) -> Config:
    """Read a TOML config file; ``None`` gives the defaults."""
    if path is None:
        return Config()
    data = read_toml(path)
    known = {"wire", "link", "tls", "discovery", "routing", "payload", "limits"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown table or key {key!r} (known: {', '.join(sorted(known))})")
    limits = _wire(data["wire"], path) if "wire" in data else Limits()
    link = _link(data["link"], path) if "link" in data else LinkConfig()
    tls = _tls(data["tls"], path) if "tls" in data else TlsConfig()
    disc = _discovery(data["discovery"], path) if "discovery" in data else DiscoveryConfig()
    routing = _routing(data["routing"], path) if "routing" in data else RoutingConfig()
    payload = _payload(data["payload"], path) if "payload" in data else PayloadConfig()
    resources = None
    if "limits" in data:
        if not isinstance(data["limits"], dict):
            raise ConfigError(f"{path}: [limits] must be a table")
        try:
            resources = ResourceLimits.from_table(data["limits"], ResourceLimits.scaled(machine_memory()))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Config(limits, link, tls, disc, routing, payload, resources, path)
