"""NetworkManager, through ``nmcli`` (Raspberry Pi OS Bookworm, most desktop Linux).

One command lists every device NetworkManager knows with its type, state,
IP interface and ``Metered`` value::

    nmcli -t -f GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,GENERAL.IP-IFACE,GENERAL.METERED device show

The device is matched by name or by IP interface (a modem's device is
``cdc-wdm0`` while its IP traffic goes over ``wwan0``). ``Metered`` follows
NetworkManager's NMMetered enum: 1 (yes) and 3 (guess-yes) are metered, 2 (no)
and 4 (guess-no) are not, 0 is unknown. nmcli prints them as ``yes``,
``yes (guessed)``, ``no``, ``no (guessed)``, ``unknown``; NetworkManager
guesses "yes" for cellular and for Wi-Fi whose DHCP server sends Android's
"metered" hint (a phone hotspot).

D-Bus is not used directly: it would need a D-Bus library, and nmcli is
installed wherever NetworkManager is.
"""

from __future__ import annotations

from typing import Final

from .base import DEFAULT_TIMEOUT, Kind, ProbeResult, Runner, SubprocessRunner, abstain, safe_run

__all__ = ["NM_FIELDS", "NetworkManagerProbe", "nm_kind", "nm_metered", "parse_nmcli_show"]

NM_FIELDS: Final = "GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,GENERAL.IP-IFACE,GENERAL.METERED"
_NM_FIELDS_OLD: Final = "GENERAL.DEVICE,GENERAL.TYPE,GENERAL.STATE,GENERAL.METERED"

#: device types (``nmcli device``) and connection types (``nmcli connection``) -> kind
_NM_TYPES: Final[dict[str, Kind]] = {
    "wifi": "wifi",
    "802-11-wireless": "wifi",
    "wifi-p2p": "wifi",
    "ethernet": "ethernet",
    "802-3-ethernet": "ethernet",
    "gsm": "cellular",
    "cdma": "cellular",
    "modem": "cellular",
    "wwan": "cellular",
    "wimax": "cellular",
    "loopback": "loopback",
}

_METERED_YES: Final = frozenset({"1", "3", "yes", "guess-yes", "yes (guessed)"})
_METERED_NO: Final = frozenset({"2", "4", "no", "guess-no", "no (guessed)"})

#: NM_DEVICE_STATE_ACTIVATED
_CONNECTED: Final = 100

#: when the default route is unknown, NetworkManager's own default-route preference
#: (route metrics: ethernet 100, Wi-Fi 600, modem 700)
_PREFERENCE: Final[tuple[Kind, ...]] = ("ethernet", "wifi", "cellular")


def nm_kind(nm_type: str) -> Kind | None:
    """The kind for a NetworkManager device or connection type, None for bridges, tunnels, etc."""
    return _NM_TYPES.get(nm_type.strip().lower())


def nm_metered(value: str) -> bool | None:
    """NetworkManager's Metered value (text or NMMetered number) as True/False/None."""
    v = value.strip().lower()
    if v in _METERED_YES:
        return True
    if v in _METERED_NO:
        return False
    return None


def _unescape(value: str) -> str:
    out: list[str] = []
    chars = iter(value)
    for c in chars:
        out.append(next(chars, "\\") if c == "\\" else c)
    return "".join(out)


def parse_nmcli_show(text: str) -> list[dict[str, str]]:
    """Blocks of ``FIELD:value`` lines from ``nmcli -t device show``, one dict per device."""
    devices: list[dict[str, str]] = []
    current: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            if current:
                devices.append(current)
                current = {}
            continue
        key, sep, value = line.partition(":")
        if not sep:
            continue
        key = key.strip().upper()
        if key == "GENERAL.DEVICE" and current:
            devices.append(current)
            current = {}
        current[key] = _unescape(value).strip()
    if current:
        devices.append(current)
    return devices


def _state(dev: dict[str, str]) -> int | None:
    head = dev.get("GENERAL.STATE", "").split(" ", 1)[0]
    return int(head) if head.isdigit() else None


class NetworkManagerProbe:
    """Asks NetworkManager (via nmcli) for the device's type and Metered value."""

    name = "networkmanager"

    def __init__(self, runner: Runner | None = None, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.runner: Runner = runner or SubprocessRunner(timeout=timeout)

    def _devices(self) -> tuple[list[dict[str, str]] | None, str]:
        res = safe_run(self.runner, ["nmcli", "-t", "-f", NM_FIELDS, "device", "show"])
        if not res.ok and "field" in (res.error or "").lower():  # an nmcli without GENERAL.IP-IFACE
            res = safe_run(self.runner, ["nmcli", "-t", "-f", _NM_FIELDS_OLD, "device", "show"])
        if not res.ok:
            return None, f"nmcli {res.error}"
        devices = [d for d in parse_nmcli_show(res.stdout) if d.get("GENERAL.DEVICE")]
        if not devices:
            return None, "nmcli listed no devices"
        return devices, ""

    def probe(self, iface: str | None) -> ProbeResult:
        try:
            devices, why = self._devices()
            if devices is None:
                return abstain(why)
            if iface is not None:
                dev = next((d for d in devices if d.get("GENERAL.DEVICE") == iface), None)
                dev = dev or next((d for d in devices if d.get("GENERAL.IP-IFACE") == iface), None)
                if dev is None:
                    return abstain(f"nmcli: {iface} is not among NetworkManager's devices")
                how = ""
            else:
                connected = [d for d in devices if _state(d) == _CONNECTED]
                ranked = sorted(
                    (d for d in connected if nm_kind(d.get("GENERAL.TYPE", "")) in _PREFERENCE),
                    key=lambda d: _PREFERENCE.index(nm_kind(d.get("GENERAL.TYPE", "")) or "ethernet"),
                )
                if not ranked:
                    return abstain("nmcli: no default route known and no connected Wi-Fi, Ethernet or modem device")
                dev = ranked[0]
                how = " (no default route known: NetworkManager's preferred connected device)"
            name = dev.get("GENERAL.DEVICE", "?")
            nm_type = dev.get("GENERAL.TYPE", "")
            metered_text = dev.get("GENERAL.METERED", "")
            kind = nm_kind(nm_type)
            metered = nm_metered(metered_text)
            evidence = f"nmcli: {name} GENERAL.TYPE={nm_type or '?'} GENERAL.METERED={metered_text or '?'}{how}"
            if kind is None:
                evidence += f" (type {nm_type or '?'} says nothing about the network)"
            return ProbeResult(kind, metered, evidence)
        except Exception as exc:  # parsing surprises must not crash detection
            return abstain(f"nmcli output not understood: {type(exc).__name__}: {exc}")
