"""The probe chain: which interface carries the default route, what kind of network it is, what it costs.

Order of trust (DESIGN section 7): explicit override -> NetworkManager ->
Termux:API -> sysfs -> interface name -> unknown. The first probe that names a
kind decides it; ``metered`` comes from the first probe (up to that one) that
knows it, else from the ``[metered]`` default for the kind. Every probe
consulted leaves one line of evidence. Nothing here raises: a probe that
fails, hangs or is denied access abstains and the next one is asked.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import Fs, Kind, Probe, ProbeResult, RealFs, SubprocessRunner
from .battery import BatteryState, read_battery
from .cost import NetCostConfig, load_netcost
from .names import NamesProbe
from .networkmanager import NetworkManagerProbe
from .override import ConfigProbe, Override
from .route import default_route
from .sysfs import SysfsProbe
from .termux import TermuxProbe

__all__ = ["NetInfo", "ProbeEnv", "default_probes", "detect", "format_netinfo", "is_android", "netinfo_report"]


def is_android(environ: Mapping[str, str] | None = None, platform: str | None = None) -> bool:
    """True on Android (Termux): ``sys.platform == "android"`` (Python 3.13+) or Android's environment."""
    env = os.environ if environ is None else environ
    plat = sys.platform if platform is None else platform
    return plat == "android" or "ANDROID_ROOT" in env or "TERMUX_VERSION" in env


@dataclass(frozen=True)
class ProbeEnv:
    """Where the probes look; the defaults are the real system.

    ``sys_root`` and ``proc_root``: sysfs and procfs mount points; ``path``: where
    ``nmcli`` and ``termux-*`` are looked up (os.pathsep-separated; None: PATH);
    ``fs``: file access for sysfs and procfs; ``timeout`` / ``termux_timeout``:
    seconds per command (None: from the config's ``[probe]``); ``android``:
    None detects it (used for the "auto" metered default of unknown networks).
    """

    sys_root: Path = Path("/sys")
    proc_root: Path = Path("/proc")
    path: str | None = None
    fs: Fs = field(default_factory=RealFs)
    timeout: float | None = None
    termux_timeout: float | None = None
    android: bool | None = None


@dataclass(frozen=True)
class NetInfo:
    """What detection found for this node's network.

    ``interface``: the default route's interface (None when unknown);
    ``kind``, ``metered``, ``cost_per_gb`` (in ``currency``);
    ``decided_by``: the probe that named the kind (None: nothing could tell, kind is "unknown");
    ``metered_by``: the probe that said metered or not, or "default for <kind>";
    ``evidence``: one line per step (route look-up, then each probe consulted).
    """

    interface: str | None
    kind: Kind
    metered: bool
    cost_per_gb: float
    currency: str
    decided_by: str | None
    metered_by: str
    evidence: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "interface": self.interface,
            "kind": self.kind,
            "metered": self.metered,
            "metered_by": self.metered_by,
            "cost_per_gb": self.cost_per_gb,
            "currency": self.currency,
            "decided_by": self.decided_by,
            "evidence": list(self.evidence),
        }


def default_probes(
    config: NetCostConfig | None = None, env: ProbeEnv | None = None, override: Override | None = None
) -> list[Probe]:
    """The standard chain, in order of trust, reading the system that ``env`` describes.

    ``override`` (command-line flags) is merged over the config's ``[override]``.
    """
    cfg = config or NetCostConfig()
    env = env or ProbeEnv()
    timeout = env.timeout if env.timeout is not None else cfg.probe.timeout
    termux_timeout = env.termux_timeout if env.termux_timeout is not None else cfg.probe.termux_timeout
    return [
        ConfigProbe(cfg.override.merged(override)),
        NetworkManagerProbe(SubprocessRunner(env.path, timeout)),
        TermuxProbe(SubprocessRunner(env.path, termux_timeout)),
        SysfsProbe(env.sys_root, env.fs),
        NamesProbe(),
    ]


def _ask(probe: Probe, iface: str | None) -> ProbeResult:
    try:
        res = probe.probe(iface)
    except Exception as exc:  # a probe broke its promise: note it and go on
        return ProbeResult(None, None, f"failed: {type(exc).__name__}: {exc}")
    if not isinstance(res, ProbeResult):
        return ProbeResult(None, None, f"returned {type(res).__name__}, not a ProbeResult")
    return res


def detect(
    config: NetCostConfig | None = None,
    *,
    override: Override | None = None,
    env: ProbeEnv | None = None,
    probes: Sequence[Probe] | None = None,
) -> NetInfo:
    """Run the probe chain and price the result. Never raises.

    ``override`` (e.g. from ``--network`` / ``--metered``) beats the config's
    ``[override]``. ``probes`` replaces the standard chain (it is then used as
    given: include a :class:`ConfigProbe` to honour overrides).
    """
    cfg = config or NetCostConfig()
    cfg_override = cfg.override.merged(override)
    env = env or ProbeEnv()
    evidence: list[str] = []
    if cfg_override.interface is not None:
        iface: str | None = cfg_override.interface
        evidence.append(f"route: interface {iface} set by override")
    else:
        try:
            route = default_route(env.proc_root, env.fs)
            iface = route.interface
            evidence.append(f"route: {route.evidence}")
        except Exception as exc:  # pragma: no cover - default_route does not raise
            iface = None
            evidence.append(f"route: failed: {type(exc).__name__}")
    chain = list(probes) if probes is not None else default_probes(cfg, env, override)
    kind: Kind | None = None
    decided_by: str | None = None
    metered: bool | None = None
    metered_by = ""
    for probe in chain:
        res = _ask(probe, iface)
        name = getattr(probe, "name", type(probe).__name__)
        evidence.append(f"{name}: {res.evidence}")
        if metered is None and res.metered is not None:
            metered, metered_by = res.metered, name
        if res.kind is not None:
            kind, decided_by = res.kind, name
            break
    final_kind: Kind = kind or "unknown"
    if metered is None:
        android = env.android if env.android is not None else is_android()
        metered = cfg.default_metered(final_kind, android)
        metered_by = f"default for {final_kind}"
    return NetInfo(
        interface=iface,
        kind=final_kind,
        metered=metered,
        cost_per_gb=cfg.cost_for(final_kind, metered),
        currency=cfg.currency,
        decided_by=decided_by,
        metered_by=metered_by,
        evidence=tuple(evidence),
    )


def netinfo_report(
    cost_path: Path | None = None,
    *,
    config: NetCostConfig | None = None,
    override: Override | None = None,
    env: ProbeEnv | None = None,
    battery: Callable[[], BatteryState | None] | None = None,
) -> dict[str, Any]:
    """Everything ``edgeagent netinfo`` shows, as a JSON-ready dict.

    The keys of :meth:`NetInfo.to_json`, plus ``battery`` (percent, charging,
    source, or null), ``may_relay`` and ``may_train`` (each ``allowed`` and
    ``reason``) and ``cost_file``. Raises ConfigError for a bad cost file.
    """
    cfg = config or load_netcost(cost_path)
    env = env or ProbeEnv()
    info = detect(cfg, override=override, env=env)
    if battery is None:
        termux_timeout = env.termux_timeout if env.termux_timeout is not None else cfg.probe.termux_timeout
        bat = read_battery(runner=SubprocessRunner(env.path, termux_timeout))
    else:
        bat = battery()
    relay_ok, relay_why = cfg.run.may_relay(info)
    train_ok, train_why = cfg.run.may_train(bat)
    report = info.to_json()
    report["battery"] = bat.to_json() if bat is not None else None
    report["may_relay"] = {"allowed": relay_ok, "reason": relay_why}
    report["may_train"] = {"allowed": train_ok, "reason": train_why}
    report["cost_file"] = str(cfg.source) if cfg.source is not None else None
    return report


def format_netinfo(report: Mapping[str, Any]) -> str:
    """The human-readable form of :func:`netinfo_report`'s dict."""
    decided = report.get("decided_by") or "nothing (no probe could tell)"
    bat = report.get("battery")
    if bat:
        power = {True: ", on external power", False: ", on battery", None: ""}[bat.get("charging")]
        battery = f"{bat['percent']:.0f}%{power} ({bat['source']})"
    else:
        battery = "no information"
    relay, train = report["may_relay"], report["may_train"]
    lines = [
        f"interface  {report.get('interface') or 'unknown (no default route found)'}",
        f"kind       {report['kind']} (decided by {decided})",
        f"metered    {'yes' if report['metered'] else 'no'} ({report['metered_by']})",
        f"cost       {report['cost_per_gb']:g} {report['currency']} per GB",
        f"battery    {battery}",
        f"relay      {'yes' if relay['allowed'] else 'no'}: {relay['reason']}",
        f"train      {'yes' if train['allowed'] else 'no'}: {train['reason']}",
        "evidence:",
        *(f"  {line}" for line in report.get("evidence", ())),
    ]
    return "\n".join(lines)
