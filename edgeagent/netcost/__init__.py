"""Network cost and run conditions: what network this node is on, what its bytes cost, when it may relay or train.

Each probe is its own module and never raises (a missing tool, a denied
file, bad output or a hung command make it abstain):

- :mod:`.override`        explicit settings (config ``[override]``, ``--network`` / ``--metered``)
- :mod:`.networkmanager`  NetworkManager's device type and Metered value, via ``nmcli``
- :mod:`.termux`          Android, via Termux:API
- :mod:`.sysfs`           ``/sys/class/net/IF`` (wireless, uevent DEVTYPE, type)
- :mod:`.names`           interface-name patterns

:func:`detect` runs them in that order for the interface of the default route
(:mod:`.route`) and prices the answer from ``configs/cost.toml``
(:mod:`.cost`); :class:`RunConditions` decides relaying and training;
:class:`NetWatcher` spots changes between snapshots. Nothing here touches the
network.
"""

from __future__ import annotations

from .base import DEFAULT_TIMEOUT, KINDS, CommandResult, Fs, Kind, Probe, ProbeResult, RealFs, Runner, SubprocessRunner
from .battery import BatteryState, read_battery
from .conditions import RunConditions
from .cost import NetCostConfig, ProbeSettings, load_netcost, parse_netcost
from .detect import NetInfo, ProbeEnv, default_probes, detect, format_netinfo, is_android, netinfo_report
from .names import NamesProbe, kind_from_name
from .networkmanager import NetworkManagerProbe
from .override import ConfigProbe, Override
from .route import DefaultRoute, default_route
from .sysfs import SysfsProbe
from .termux import TermuxProbe
from .watch import NetChange, NetWatcher

__all__ = [
    "DEFAULT_TIMEOUT",
    "KINDS",
    "BatteryState",
    "CommandResult",
    "ConfigProbe",
    "DefaultRoute",
    "Fs",
    "Kind",
    "NamesProbe",
    "NetChange",
    "NetCostConfig",
    "NetInfo",
    "NetWatcher",
    "NetworkManagerProbe",
    "Override",
    "Probe",
    "ProbeEnv",
    "ProbeResult",
    "ProbeSettings",
    "RealFs",
    "RunConditions",
    "Runner",
    "SubprocessRunner",
    "SysfsProbe",
    "TermuxProbe",
    "default_probes",
    "default_route",
    "detect",
    "format_netinfo",
    "is_android",
    "kind_from_name",
    "load_netcost",
    "netinfo_report",
    "parse_netcost",
    "read_battery",
]
