"""Battery level and charging: ``psutil.sensors_battery()``, then ``termux-battery-status``.

psutil is imported only when asked (it may be missing on Termux, where it
comes from ``pkg install python-psutil``), and Android usually hides
/sys/class/power_supply from it anyway; Termux:API then answers. No battery
information at all (a Pi, a desktop, a server) gives ``None``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .base import Runner, safe_run

__all__ = ["BatteryState", "read_battery"]


@dataclass(frozen=True)
class BatteryState:
    """``percent`` 0-100; ``charging``: on external power (charging or full), None when unknown."""

    percent: float
    charging: bool | None
    source: str

    def to_json(self) -> dict[str, Any]:
        return {"percent": self.percent, "charging": self.charging, "source": self.source}


def _psutil_battery() -> Any:
    import psutil

    return psutil.sensors_battery()


def _from_psutil(sensors: Callable[[], Any]) -> BatteryState | None:
    try:
        b = sensors()
    except Exception:  # ImportError (no psutil), PermissionError, platforms without sensors
        return None
    if b is None:
        return None
    try:
        percent = float(b.percent)
        plugged = b.power_plugged
    except (AttributeError, TypeError, ValueError):
        return None
    if not math.isfinite(percent):
        return None
    return BatteryState(
        max(0.0, min(100.0, percent)), None if plugged is None else bool(plugged), "psutil.sensors_battery"
    )


def _from_termux(runner: Runner) -> BatteryState | None:
    res = safe_run(runner, ["termux-battery-status"])
    if not res.ok:
        return None
    try:
        obj = json.loads(res.stdout)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    percent = obj.get("percentage")
    if isinstance(percent, bool) or not isinstance(percent, int | float) or not math.isfinite(percent):
        return None
    plugged = obj.get("plugged")
    charging = None if not isinstance(plugged, str) else plugged != "UNPLUGGED"
    return BatteryState(max(0.0, min(100.0, float(percent))), charging, "termux-battery-status")


def read_battery(
    sensors: Callable[[], Any] | None = _psutil_battery, runner: Runner | None = None
) -> BatteryState | None:
    """The battery state, or None when no source knows (no battery, no psutil, no Termux:API).

    ``sensors`` stands in for ``psutil.sensors_battery`` (None: skip psutil);
    ``runner`` runs ``termux-battery-status`` when psutil had nothing (None: skip it).
    Never raises.
    """
    state = _from_psutil(sensors) if sensors is not None else None
    if state is None and runner is not None:
        try:
            state = _from_termux(runner)
        except Exception:
            state = None
    return state
