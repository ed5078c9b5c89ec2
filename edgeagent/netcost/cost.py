"""Network cost settings (``configs/cost.toml``): money per GB per kind, metered defaults, overrides,
run conditions and probe timing.

Every key is documented in ``configs/cost.toml``, whose values are the
defaults built in here. Unknown tables or keys are an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Literal

from ..exceptions import ConfigError
from .base import DEFAULT_TIMEOUT, KINDS, Kind
from .conditions import RunConditions
from .override import Override
from .termux import TERMUX_TIMEOUT

__all__ = [
    "DEFAULT_COST_PER_GB",
    "DEFAULT_METERED",
    "NetCostConfig",
    "ProbeSettings",
    "load_netcost",
    "parse_netcost",
]

#: money per GB moved, per kind, plus ``metered``: the least a metered link costs (a phone hotspot)
DEFAULT_COST_PER_GB: Final[Mapping[str, float]] = MappingProxyType(
    {"wifi": 0.0, "ethernet": 0.0, "cellular": 2.0, "loopback": 0.0, "unknown": 0.0, "metered": 2.0}
)

MeteredDefault = bool | Literal["auto"]

#: whether a kind is metered when no probe says; "auto" (unknown only): metered on Android, else not
DEFAULT_METERED: Final[Mapping[str, MeteredDefault]] = MappingProxyType(
    {"wifi": False, "ethernet": False, "cellular": True, "loopback": False, "unknown": "auto"}
)

_MAX_TIMEOUT: Final = 60.0
_IFNAMSIZ: Final = 16


@dataclass(frozen=True)
class ProbeSettings:
    """``[probe]``: command timeouts and how often the network is re-checked (seconds)."""

    timeout: float = DEFAULT_TIMEOUT
    termux_timeout: float = TERMUX_TIMEOUT
    interval: float = 60.0


@dataclass(frozen=True)
class NetCostConfig:
    """The parsed cost file."""

    currency: str = "USD"
    cost_per_gb: Mapping[str, float] = field(default_factory=lambda: DEFAULT_COST_PER_GB)
    metered: Mapping[str, MeteredDefault] = field(default_factory=lambda: DEFAULT_METERED)
    override: Override = field(default_factory=Override)
    run: RunConditions = field(default_factory=RunConditions)
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    source: Path | None = field(default=None, compare=False)

    def cost_for(self, kind: Kind, metered: bool) -> float:
        """Money per GB on this network: the kind's figure, and at least ``metered``'s when metered."""
        cost = self.cost_per_gb[kind]
        return max(cost, self.cost_per_gb["metered"]) if metered else cost

    def default_metered(self, kind: Kind, android: bool) -> bool:
        """Whether ``kind`` counts as metered when no probe said (``"auto"``: on Android only)."""
        value = self.metered[kind]
        return android if value == "auto" else bool(value)


def _table(data: Mapping[str, Any], key: str, where: str) -> Mapping[str, Any]:
    table = data.get(key, {})
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return table


def _check_keys(table: Mapping[str, Any], name: str, known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            raise ConfigError(f"{where}: unknown key {name}.{key} (known: {', '.join(known)})")


def _number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def _cost_per_gb(table: Mapping[str, Any], where: str) -> Mapping[str, float]:
    known = tuple(DEFAULT_COST_PER_GB)
    _check_keys(table, "cost_per_gb", known, where)
    out = dict(DEFAULT_COST_PER_GB)
    for key, value in table.items():
        if not _number(value) or value < 0:
            raise ConfigError(f"{where}: cost_per_gb.{key} must be a number >= 0, got {value!r}")
        out[key] = float(value)
    return MappingProxyType(out)


def _metered(table: Mapping[str, Any], where: str) -> Mapping[str, MeteredDefault]:
    _check_keys(table, "metered", KINDS, where)
    out = dict(DEFAULT_METERED)
    for key, value in table.items():
        if key == "unknown" and value == "auto":
            out[key] = "auto"
        elif isinstance(value, bool):
            out[key] = value
        else:
            allowed = 'true, false or "auto"' if key == "unknown" else "true or false"
            raise ConfigError(f"{where}: metered.{key} must be {allowed}, got {value!r}")
    return MappingProxyType(out)


def _override(table: Mapping[str, Any], where: str) -> Override:
    _check_keys(table, "override", ("kind", "metered", "interface"), where)
    kind = table.get("kind")
    if kind is not None and kind not in KINDS:
        raise ConfigError(f"{where}: override.kind must be one of {', '.join(KINDS)}, got {kind!r}")
    metered = table.get("metered")
    if metered is not None and not isinstance(metered, bool):
        raise ConfigError(f"{where}: override.metered must be true or false, got {metered!r}")
    iface = table.get("interface")
    if iface is not None and (
        not isinstance(iface, str)
        or not iface
        or len(iface) >= _IFNAMSIZ
        or any(c in iface for c in "/:")
        or any(c.isspace() for c in iface)
        or iface in (".", "..")
    ):
        raise ConfigError(f"{where}: override.interface must be an interface name like wlan0, got {iface!r}")
    return Override(kind=kind, metered=metered, interface=iface)


def _run(table: Mapping[str, Any], where: str) -> RunConditions:
    flags = ("relay_only_unmetered", "train_when_charging", "train_on_battery", "train_without_battery_info")
    _check_keys(table, "run", (*flags, "min_battery_percent"), where)
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key == "min_battery_percent":
            if not _number(value) or not 0 <= value <= 100:
                raise ConfigError(f"{where}: run.min_battery_percent must be a number from 0 to 100, got {value!r}")
            kwargs[key] = float(value)
        elif not isinstance(value, bool):
            raise ConfigError(f"{where}: run.{key} must be true or false, got {value!r}")
        else:
            kwargs[key] = value
    return RunConditions(**kwargs)


def _probe(table: Mapping[str, Any], where: str) -> ProbeSettings:
    _check_keys(table, "probe", ("timeout", "termux_timeout", "interval"), where)
    kwargs: dict[str, float] = {}
    for key, value in table.items():
        top = 86400.0 if key == "interval" else _MAX_TIMEOUT
        if not _number(value) or not 0 < value <= top:
            raise ConfigError(
                f"{where}: probe.{key} must be a number of seconds above 0 and at most {top:g}, got {value!r}"
            )
        kwargs[key] = float(value)
    return ProbeSettings(**kwargs)


def parse_netcost(data: Mapping[str, Any], where: str = "cost settings", source: Path | None = None) -> NetCostConfig:
    """Settings from an already-parsed TOML document (or a table of a bigger config file)."""
    known = ("currency", "cost_per_gb", "metered", "override", "run", "probe")
    for key in data:
        if key not in known:
            raise ConfigError(f"{where}: unknown table or key {key!r} (known: {', '.join(known)})")
    currency = data.get("currency", "USD")
    if not isinstance(currency, str) or not currency.strip() or len(currency) > 16:
        raise ConfigError(f'{where}: currency must be a short name such as "USD", got {currency!r}')
    return NetCostConfig(
        currency=currency.strip(),
        cost_per_gb=_cost_per_gb(_table(data, "cost_per_gb", where), where),
        metered=_metered(_table(data, "metered", where), where),
        override=_override(_table(data, "override", where), where),
        run=_run(_table(data, "run", where), where),
        probe=_probe(_table(data, "probe", where), where),
        source=source,
    )


def load_netcost(path: Path | None) -> NetCostConfig:
    """Read a cost file (see ``configs/cost.toml``); ``None`` gives the defaults. Raises ConfigError."""
    if path is None:
        return NetCostConfig()
    from ..config import read_toml

    return parse_netcost(read_toml(path, "cost file"), str(path), source=path)
