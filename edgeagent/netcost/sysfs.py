"""The kernel's view: ``/sys/class/net/IF``.

In order: ``type`` 772 (ARPHRD_LOOPBACK) is loopback; a ``wireless`` directory
or ``phy80211`` link (cfg80211 drivers) is Wi-Fi; ``uevent`` DEVTYPE=wlan is
Wi-Fi and DEVTYPE=wwan is cellular (USB modems: qmi_wwan, cdc_mbim...);
``type`` 519 (ARPHRD_RAWIP, used by Qualcomm rmnet and raw-IP QMI modems) is
cellular; a physical Ethernet-type device (a ``device`` link, no DEVTYPE) is
Ethernet, except ``usb*``, which the kernel names point-to-point USB links (a
tethered phone or a gadget cable) that cannot be told apart. Virtual devices
(bridges, veth, tunnels, VLANs) say nothing about the network behind them.

Android forbids reading most of /sys/class/net to apps: every failure is an
abstaining result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from .base import Fs, Kind, ProbeResult, RealFs, abstain, os_error_text

__all__ = ["SysfsProbe"]

_ARPHRD: Final[dict[int, tuple[Kind, str]]] = {
    772: ("loopback", "ARPHRD_LOOPBACK"),
    519: ("cellular", "ARPHRD_RAWIP, cellular modems"),
}
_DEVTYPES: Final[dict[str, Kind]] = {"wlan": "wifi", "wwan": "cellular"}
_ARPHRD_ETHER: Final = 1


def _devtype(uevent: str) -> str | None:
    for line in uevent.splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "DEVTYPE":
            return value.strip()
    return None


class SysfsProbe:
    """Reads ``<root>/class/net/<iface>``; ``root`` is ``/sys`` on a real system."""

    name = "sysfs"

    def __init__(self, root: Path = Path("/sys"), fs: Fs | None = None) -> None:
        self.root = root
        self.fs: Fs = fs or RealFs()

    def probe(self, iface: str | None) -> ProbeResult:
        if iface is None:
            return abstain("no interface to look at")
        if not iface or "/" in iface or iface in (".", ".."):
            return abstain(f"{iface!r} is not an interface name")
        base = self.root / "class" / "net" / iface
        try:
            return self._probe(base)
        except OSError as exc:
            return abstain(f"{base}: {os_error_text(exc)}")
        except Exception as exc:  # a custom Fs gone wrong: still no crash
            return abstain(f"{base}: {type(exc).__name__}: {exc}")

    def _read(self, path: Path) -> str | None:
        """A small file's text, None when it is missing or unreadable."""
        try:
            return self.fs.read_text(path).strip()
        except OSError:
            return None

    def _probe(self, base: Path) -> ProbeResult:
        if not self.fs.is_dir(base):
            return abstain(f"{base} does not exist")
        seen: list[str] = []
        arphrd: int | None = None
        text = self._read(base / "type")
        if text is None:
            seen.append("type unreadable")
        elif text.isdigit():
            arphrd = int(text)
            seen.append(f"type {arphrd}")
            if arphrd == 772:
                return ProbeResult("loopback", None, f"{base}/type is 772 (ARPHRD_LOOPBACK)")
        for sub in ("wireless", "phy80211"):
            if self.fs.exists(base / sub):
                return ProbeResult("wifi", None, f"{base}/{sub} exists")
        uevent = self._read(base / "uevent")
        devtype = _devtype(uevent) if uevent is not None else None
        if uevent is None:
            seen.append("uevent unreadable")
        elif devtype is None:
            seen.append("no DEVTYPE")
        else:
            seen.append(f"DEVTYPE={devtype}")
            if devtype in _DEVTYPES:
                return ProbeResult(_DEVTYPES[devtype], None, f"{base}/uevent DEVTYPE={devtype}")
        if arphrd in _ARPHRD:
            kind, what = _ARPHRD[arphrd]
            return ProbeResult(kind, None, f"{base}/type is {arphrd} ({what})")
        physical = self.fs.exists(base / "device")
        seen.append("physical device" if physical else "virtual (no device link)")
        if arphrd == _ARPHRD_ETHER and physical and devtype is None:
            if base.name.startswith("usb"):
                seen.append("usb*: a point-to-point USB link (tethered phone or gadget)")
            else:
                return ProbeResult("ethernet", None, f"{base}: physical Ethernet-type device (type 1, not wireless)")
        return abstain(f"{base}: " + ", ".join(seen))
