"""Run conditions, as phone users expect: relay only when unmetered, train only on power or a full enough battery.

Pure: the network and battery states come in as arguments; each answer is
``(allowed, reason)`` with a reason a person can read.

No battery information (``None``) usually means a mains-powered box (a Pi, a
desktop, a server: psutil reports no battery) or a phone where neither psutil
nor Termux:API can read it. ``train_without_battery_info`` decides; it is on by
default because the first case is the common one, and on a phone the
``termux-battery-status`` fallback normally supplies the figures.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from .battery import BatteryState

__all__ = ["NetState", "RunConditions"]


class NetState(Protocol):
    """What relaying depends on (a :class:`~edgeagent.netcost.detect.NetInfo` fits)."""

    @property
    def kind(self) -> str: ...

    @property
    def metered(self) -> bool: ...


@dataclass(frozen=True)
class RunConditions:
    """When this node may relay for others and take part in training.

    ``relay_only_unmetered``       relay (forward payloads, serve children) only on an unmetered network;
    ``train_when_charging``        on external power, training is allowed whatever the battery level;
    ``train_on_battery``           on battery, training is allowed at or above ``min_battery_percent``
                                   (off: only on external power);
    ``min_battery_percent``        0-100;
    ``train_without_battery_info`` what to do when no battery state is known.
    """

    relay_only_unmetered: bool = True
    train_when_charging: bool = True
    train_on_battery: bool = True
    min_battery_percent: float = 50.0
    train_without_battery_info: bool = True

    def __post_init__(self) -> None:
        if not 0 <= self.min_battery_percent <= 100:
            raise ValueError("min_battery_percent must be between 0 and 100")

    def may_relay(self, net: NetState) -> tuple[bool, str]:
        """Whether to forward other nodes' traffic on this network."""
        what = f"{'metered' if net.metered else 'unmetered'} {net.kind} network"
        if not net.metered:
            return True, what
        if self.relay_only_unmetered:
            return False, f"{what} (relay_only_unmetered)"
        return True, f"{what}, relaying allowed (relay_only_unmetered is off)"

    def may_train(self, battery: BatteryState | None) -> tuple[bool, str]:
        """Whether to take part in a training round now."""
        if battery is None:
            if self.train_without_battery_info:
                return True, "no battery information (mains power assumed)"
            return False, "no battery information (train_without_battery_info is off)"
        level = f"battery {battery.percent:.0f}%"
        if battery.charging and self.train_when_charging:
            return True, f"on external power ({level})"
        if battery.charging is None:
            power = "power source unknown"
        else:
            power = "on external power, which does not count" if battery.charging else "on battery"
        if not self.train_on_battery:
            return False, f"{power} ({level}) and train_on_battery is off"
        if battery.percent >= self.min_battery_percent:
            return True, f"{power}, {level} >= {self.min_battery_percent:g}%"
        return False, f"{power}, {level} < {self.min_battery_percent:g}%"
