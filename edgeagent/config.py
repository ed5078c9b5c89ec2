"""Configuration files (TOML), and the effective settings of a command.

Every key is documented in ``configs/edgeagent.example.toml``. Unknown tables or
keys are an error (a typo must not be silently ignored), and every bad value is
one line naming the file, the key, what was wrong and what is allowed.

A setting of ``[node]`` (one per ``run``/``domain`` flag) comes from, first to
last: the command-line flag, an environment variable (``EDGEAGENT_STATE``,
``EDGEAGENT_LOG_LEVEL``, ``EDGEAGENT_LOG_FORMAT``), the config file (``--config``,
else ``EDGEAGENT_CONFIG``), the default. :func:`resolve` says which, per key.
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from .exceptions import ConfigError, DecodeError
from .limits import ResourceLimits, machine_memory
from .wire.limits import Limits
from .wire.nodeid import NodeId

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_PORT",
    "ENV_KEYS",
    "NODE_KEYS",
    "Config",
    "DiscoveryConfig",
    "Invalid",
    "LinkConfig",
    "PayloadConfig",
    "Resolved",
    "RoutingConfig",
    "Setting",
    "TlsConfig",
    "check_node_id",
    "check_url",
    "default_state_dir",
    "load_config",
    "read_toml",
    "resolve",
    "table_settings",
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
    try:
        urls = _url_list(peers)
    except Invalid:
        raise ConfigError(f"{path}: discovery.peers must be {_NODE_ALLOWED['peers']}, got {peers!r}") from None
    mdns = table.get("mdns", "off")
    if mdns not in MDNS_MODES:
        raise ConfigError(f"{path}: discovery.mdns must be {_NODE_ALLOWED['mdns']}, got {mdns!r}")
    listen_only = table.get("mdns_listen_only", False)
    if type(listen_only) is not bool:
        raise ConfigError(f"{path}: discovery.mdns_listen_only must be true or false, got {listen_only!r}")
    return DiscoveryConfig(urls, mdns, listen_only)


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
    node: Mapping[str, Any] = field(default_factory=dict)  # the [node] keys the file sets, checked
    raw: Mapping[str, Any] = field(default_factory=dict)  # the file's tables as read (which keys it sets)


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
            ok = type(value) in (int, float) and 0 < value < float("inf")
            value = float(value) if ok else value
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
                raise ConfigError(f"{path}: routing.probe_bytes must be an integer from 1024 to 8388608, got {value!r}")
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
    for given, marks in table.items():
        try:
            url = check_url(given)  # the same URL as the peer's in --peer / peers (a missing port added)
        except Invalid as exc:
            raise ConfigError(f"{path}: routing.peers: {given!r} is not {exc.allowed}") from None
        if not isinstance(marks, dict):
            raise ConfigError(f"{path}: routing.peers.{given!r} must be a table")
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
                    f"{path}: routing.peers.{given!r}.{key} = {value!r} is not valid "
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
    known = {"node", "wire", "link", "tls", "discovery", "routing", "payload", "limits"}
    for key in data:
        if key not in known:
            raise ConfigError(f"{path}: unknown table or key {key!r} (known: {', '.join(sorted(known))})")
    node = _node(data["node"], path) if "node" in data else {}
    for key, (table, other) in _ALIASES.items():
        if key in node and isinstance(data.get(table), dict) and other in data[table]:
            raise ConfigError(f"{path}: node.{key} and {table}.{other} are the same setting: keep one of them")
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
        _check_limits(data["limits"], path)
        try:
            resources = ResourceLimits.from_table(data["limits"], ResourceLimits.scaled(machine_memory()))
        except (ConfigError, TypeError) as exc:
            raise ConfigError(f"{path}: {exc}") from None
    return Config(limits, link, tls, disc, routing, payload, resources, path, node, data)


def _check_limits(table: dict[str, Any], path: Path) -> None:
    for f in dataclasses.fields(ResourceLimits):
        if f.name not in table:
            continue
        value = table[f.name]
        if f.type in ("int", int):
            if type(value) is not int or value <= 0:
                raise ConfigError(f"{path}: limits.{f.name} must be a positive integer, got {value!r}")
        elif type(value) not in (int, float) or not 0 < value < float("inf"):
            raise ConfigError(f"{path}: limits.{f.name} must be a positive number of seconds, got {value!r}")


# -- values a key or a flag takes --------------------------------------------------------------

#: the port a ws:// URL without one gets (wss:// gets 443, the port of a web certificate)
DEFAULT_PORT: Final = 7400
MDNS_MODES: Final = ("off", "loopback", "auto")
ROLES: Final = ("device", "domain")
LOG_LEVELS: Final = ("debug", "info", "warning", "error")
LOG_FORMATS: Final = ("text", "json")
URL_ALLOWED: Final = f"a ws:// or wss:// URL (like ws://host:{DEFAULT_PORT})"
NODE_ID_ALLOWED: Final = "a NodeId (expected a base58 PeerId like 12D3KooW...)"


class Invalid(ValueError):
    """A value that is not what a key or flag takes; ``allowed`` says what is."""

    def __init__(self, allowed: str) -> None:
        super().__init__(allowed)
        self.allowed = allowed


def check_url(value: Any) -> str:
    """A ws:// or wss:// URL, with the default port added when it names none (ws: 7400, wss: 443).

    Raises :class:`Invalid` for anything else (another scheme, no host, a bad port).
    """
    if not isinstance(value, str):
        raise Invalid(URL_ALLOWED)
    text = value.strip()
    parts = urlsplit(text)
    if parts.scheme not in ("ws", "wss") or not parts.hostname or any(c.isspace() for c in text):
        raise Invalid(URL_ALLOWED)
    try:
        port = parts.port
    except ValueError:
        raise Invalid(f"a ws:// or wss:// URL with a port from 0 to 65535 (like ws://host:{DEFAULT_PORT})") from None
    if port is not None:
        return text
    default = DEFAULT_PORT if parts.scheme == "ws" else 443
    return urlunsplit(parts._replace(netloc=f"{parts.netloc.rstrip(':')}:{default}"))


def check_node_id(value: Any) -> NodeId:
    """A NodeId from its text form; raises :class:`Invalid` for anything else."""
    if not isinstance(value, str):
        raise Invalid(NODE_ID_ALLOWED)
    try:
        return NodeId.parse(value)
    except (DecodeError, ValueError):
        raise Invalid(NODE_ID_ALLOWED) from None


def _url_list(value: Any) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list):
        raise Invalid("a list")
    return tuple(check_url(u) for u in items)


def default_state_dir() -> Path:
    """The platform's user state directory for edgeagent (``--state`` and ``EDGEAGENT_STATE`` override it)."""
    from platformdirs import user_state_dir

    return Path(user_state_dir("edgeagent"))


# -- the [node] table: one key per run/domain flag ---------------------------------------------

#: [node] key -> what it takes (the error text when a value is not that)
_NODE_ALLOWED: Final[dict[str, str]] = {
    "role": '"device" or "domain"',
    "listen": "a list of ws:// or wss:// URLs (like ws://0.0.0.0:7400)",
    "domain": URL_ALLOWED,
    "expect": NODE_ID_ALLOWED,
    "peers": f"a list of ws:// or wss:// URLs (like ws://host:{DEFAULT_PORT})",
    "allow": "a list of NodeIds (base58 PeerIds like 12D3KooW...)",
    "open": "true or false",
    "state": "a directory path",
    "data": "a file path (.npz with x and y)",
    "job": "a file path (a job file)",
    "cost": "a file path (a cost file)",
    "mdns": '"off", "loopback" or "auto"',
    "mdns_listen_only": "true or false",
    "network": '"wifi", "ethernet", "cellular", "loopback" or "unknown"',
    "metered": "true or false",
    "insecure": "true or false",
    "relay": "true or false",
    "log_level": '"debug", "info", "warning" or "error"',
    "log_format": '"text" or "json"',
}
#: the keys of [node], in the order ``config show`` lists them
NODE_KEYS: Final = tuple(_NODE_ALLOWED)
#: [node] keys that another table also sets (for files written before [node]): key -> (table, key)
_ALIASES: Final = {
    "mdns": ("discovery", "mdns"),
    "mdns_listen_only": ("discovery", "mdns_listen_only"),
    "relay": ("routing", "relay"),
}
_PATH_KEYS: Final = ("state", "data", "job", "cost")
_BOOL_KEYS: Final = ("open", "mdns_listen_only", "metered", "insecure", "relay")
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "role": ROLES,
    "mdns": MDNS_MODES,
    "network": _KINDS,
    "log_level": LOG_LEVELS,
    "log_format": LOG_FORMATS,
}


def _node_value(key: str, value: Any, base: Path) -> Any:
    """One [node] value, checked and normalised (paths relative to ``base``); raises Invalid."""
    allowed = _NODE_ALLOWED[key]
    if key in _BOOL_KEYS:
        if type(value) is not bool:
            raise Invalid(allowed)
        return value
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise Invalid(allowed)
        return value
    if key in ("listen", "peers"):
        try:
            return _url_list(value)
        except Invalid:
            raise Invalid(allowed) from None
    if key == "domain":
        return check_url(value)
    if key == "expect":
        return check_node_id(value)
    if key == "allow":
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list):
            raise Invalid(allowed)
        try:
            return tuple(dict.fromkeys(check_node_id(v) for v in items))
        except Invalid:
            raise Invalid(allowed) from None
    if key in _PATH_KEYS:
        if not isinstance(value, str) or not value.strip():
            raise Invalid(allowed)
        return base / Path(value).expanduser()
    raise AssertionError(key)  # pragma: no cover


def _node(table: Any, path: Path) -> dict[str, Any]:
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: [node] must be a table")
    out: dict[str, Any] = {}
    for key, value in table.items():
        if key not in _NODE_ALLOWED:
            raise ConfigError(f"{path}: unknown key node.{key} (known: {', '.join(NODE_KEYS)})")
        try:
            out[key] = _node_value(key, value, path.parent)
        except Invalid as exc:
            raise ConfigError(f"{path}: node.{key} must be {exc.allowed}, got {value!r}") from None
    if out.get("open") and out.get("allow"):
        raise ConfigError(f"{path}: node.open = true and node.allow exclude each other: keep one of them")
    return out


# -- the effective settings ---------------------------------------------------------------------

#: the variable naming the config file when --config is not given
CONFIG_ENV: Final = "EDGEAGENT_CONFIG"
#: variables that set a [node] key (between the flag and the file): variable -> key
ENV_KEYS: Final = {
    "EDGEAGENT_STATE": "state",
    "EDGEAGENT_LOG_LEVEL": "log_level",
    "EDGEAGENT_LOG_FORMAT": "log_format",
}
#: what a [node] key is when nothing sets it
_NODE_DEFAULTS: Final[dict[str, Any]] = {
    "role": "device",
    "listen": (),
    "domain": None,
    "expect": None,
    "peers": (),
    "allow": (),
    "open": False,
    "state": None,  # default_state_dir(), looked up only when it is the value
    "data": None,
    "job": None,
    "cost": None,
    "mdns": "off",
    "mdns_listen_only": False,
    "network": None,  # detected
    "metered": None,  # detected
    "insecure": False,
    "relay": None,  # domains relay, devices do not
    "log_level": "warning",
    "log_format": "text",
}


@dataclass(frozen=True)
class Setting:
    """One effective value and where it came from: ``source`` is "default", "file", "env" or "flag";
    ``origin`` names the flag, the variable or the file and key."""

    value: Any
    source: str
    origin: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"value": _jsonable(self.value), "source": self.source, "from": self.origin or None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path | NodeId):
        return str(value)
    return value


@dataclass(frozen=True)
class Resolved:
    """A command's effective settings: the parsed file, where it came from, and every [node] key."""

    config: Config
    config_file: Setting  # value: the file's Path, or None
    node: Mapping[str, Setting]

    def __getitem__(self, key: str) -> Any:
        return self.node[key].value

    @property
    def peers(self) -> list[str]:
        """Static peers: [node] peers (or --peer), then [discovery] peers."""
        return list(dict.fromkeys([*self["peers"], *self.config.discovery.peers]))


def _env_value(var: str, key: str, text: str) -> Any:
    if key == "state":
        return Path(text).expanduser()
    value = text.strip().lower()
    if value not in _CHOICES[key]:
        raise ConfigError(f"{var}={text!r} is not valid: use {' or '.join(_CHOICES[key])}")
    return value


def resolve(
    flags: Mapping[str, Setting],
    *,
    config_file: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Resolved:
    """The effective settings: ``flags`` (the [node] keys given on the command line, each a Setting
    naming its flag) over the environment over the config file (``config_file``, else
    ``EDGEAGENT_CONFIG``) over the defaults. Raises ConfigError (one line) for a bad file or variable."""
    env = os.environ if env is None else env
    if config_file:
        cfile = Setting(Path(config_file).expanduser(), "flag", "--config")
    elif env.get(CONFIG_ENV, "").strip():
        cfile = Setting(Path(env[CONFIG_ENV].strip()).expanduser(), "env", CONFIG_ENV)
    else:
        cfile = Setting(None, "default")
    cfg = load_config(cfile.value)
    by_key = {key: var for var, key in ENV_KEYS.items()}
    node: dict[str, Setting] = {}
    for key in NODE_KEYS:
        var = by_key.get(key)
        alias = _ALIASES.get(key)
        raw_alias = cfg.raw.get(alias[0]) if alias else None
        if key in flags:
            node[key] = flags[key]
        elif var is not None and env.get(var, "").strip():
            node[key] = Setting(_env_value(var, key, env[var]), "env", var)
        elif key in cfg.node:
            node[key] = Setting(cfg.node[key], "file", f"{cfg.source} [node] {key}")
        elif alias and isinstance(raw_alias, dict) and alias[1] in raw_alias:
            table = cfg.discovery if alias[0] == "discovery" else cfg.routing
            node[key] = Setting(getattr(table, alias[1]), "file", f"{cfg.source} [{alias[0]}] {alias[1]}")
        else:
            default = _NODE_DEFAULTS[key]
            node[key] = Setting(default_state_dir() if key == "state" else default, "default")
    # --open and --allow are one choice: a flag for either replaces the file's
    for a, b in (("open", "allow"), ("allow", "open")):
        if node[a].source == "flag" and node[b].source == "file":
            node[b] = Setting(_NODE_DEFAULTS[b], "flag", f"{node[a].origin} (replaces the file's)")
    if node["job"].value is not None and node["role"].value != "domain":
        where = node["job"].origin
        raise ConfigError(f'{where}: a job runs on a domain (edgeagent domain, or [node] role = "domain")')
    return Resolved(cfg, cfile, node)


def table_settings(cfg: Config) -> dict[str, dict[str, Setting]]:
    """Every key of the other tables, with its effective value and whether the file set it (``config show``)."""
    from .routing import Priors

    def entry(table: str, key: str, value: Any) -> Setting:
        raw = cfg.raw.get(table)
        if isinstance(raw, dict) and key in raw:
            return Setting(value, "file", f"{cfg.source} [{table}] {key}")
        return Setting(value, "default")

    pri = Priors.from_config(cfg.routing.priors)
    priors = {
        "relay_ms": pri.relay_ms,
        "rtt_ms": dict(pri.rtt),
        "bandwidth_mbit": {k: v * 8 / 1e6 for k, v in pri.bandwidth.items()},
    }
    resources = cfg.resources or ResourceLimits.scaled(machine_memory())
    return {
        "wire": {k: entry("wire", k, getattr(cfg.limits, attr)) for k, attr in _WIRE_KEYS.items()},
        "link": {f.name: entry("link", f.name, getattr(cfg.link, f.name)) for f in dataclasses.fields(LinkConfig)},
        "tls": {f.name: entry("tls", f.name, getattr(cfg.tls, f.name)) for f in dataclasses.fields(TlsConfig)},
        "discovery": {"peers": entry("discovery", "peers", cfg.discovery.peers)},  # mdns*: [node]
        "routing": {
            "probe_interval": entry("routing", "probe_interval", cfg.routing.probe_interval),
            "probe_bytes": entry("routing", "probe_bytes", cfg.routing.probe_bytes),
            "hop_report_interval": entry("routing", "hop_report_interval", cfg.routing.hop_report_interval),
            "priors": entry("routing", "priors", priors),
            "peers": entry("routing", "peers", cfg.routing.peers),
        },
        "payload": {
            f.name: entry("payload", f.name, getattr(cfg.payload, f.name)) for f in dataclasses.fields(PayloadConfig)
        },
        "limits": {
            f.name: entry("limits", f.name, getattr(resources, f.name)) for f in dataclasses.fields(ResourceLimits)
        },
    }
