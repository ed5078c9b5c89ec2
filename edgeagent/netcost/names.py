"""The last guess: what the interface's name says.

``wl*`` (wlan0, wlp2s0, wlx...) is Wi-Fi; ``ww*`` (wwan0), ``rmnet*``
(Qualcomm), ``ccmni*`` (MediaTek), ``seth_*`` (Unisoc) and ``pdp_ip*`` (iOS)
are cellular; ``en*`` and ``eth*`` are Ethernet; ``lo`` is loopback.
Android's 464XLAT interface ``v4-<iface>`` is judged by the interface it
rides on. Tunnels (tun, wg, ppp), bridges and ``usb*`` (a tethered phone or
a gadget cable) are not guessed.
"""

from __future__ import annotations

import re
from typing import Final

from .base import Kind, ProbeResult, abstain

__all__ = ["NamesProbe", "kind_from_name"]

_RULES: Final[tuple[tuple[str, str, Kind], ...]] = (
    (r"lo", "lo", "loopback"),
    (r"wl.*", "wl*", "wifi"),
    (r"ww.*", "ww*", "cellular"),
    (r"rmnet.*", "rmnet*", "cellular"),
    (r"ccmni.*", "ccmni*", "cellular"),
    (r"seth_.*", "seth_*", "cellular"),
    (r"pdp_?ip.*", "pdp_ip*", "cellular"),
    (r"en.*", "en*", "ethernet"),
    (r"eth.*", "eth*", "ethernet"),
)


def kind_from_name(iface: str) -> tuple[Kind, str] | None:
    """(kind, the pattern that matched) for an interface name, or None."""
    name = iface[3:] if iface.startswith("v4-") else iface
    for rx, pattern, kind in _RULES:
        if re.fullmatch(rx, name):
            return kind, pattern
    return None


class NamesProbe:
    """Guesses from the interface name alone."""

    name = "names"

    def probe(self, iface: str | None) -> ProbeResult:
        if iface is None:
            return abstain("no interface name to judge")
        hit = kind_from_name(iface)
        if hit is None:
            return abstain(f"{iface} matches no known name pattern")
        kind, pattern = hit
        via = f" (464XLAT on {iface[3:]})" if iface.startswith("v4-") else ""
        return ProbeResult(kind, None, f"{iface} matches {pattern}{via}")
