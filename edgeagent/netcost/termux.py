"""Termux:API (Android phones): ``termux-wifi-connectioninfo`` and ``termux-telephony-deviceinfo``.

Both print one JSON object. Wi-Fi is in use when ``supplicant_state`` is
``COMPLETED`` (Android prefers a working Wi-Fi over mobile data); otherwise
mobile data is in use when ``data_state`` is ``connected``. Android does not
tell Termux whether a Wi-Fi is metered (a phone hotspot looks like any Wi-Fi),
so this probe leaves ``metered`` unknown for Wi-Fi: set it in ``[override]``
when this phone lives on a hotspot. Cellular gets its default from
``[metered]`` (metered).

It answers for the phone's active network whatever ``iface`` is: Android
keeps its routes in per-network tables, so /proc/net/route seldom names the
interface anyway. The commands need the Termux:API app; without it they hang, so the first
timeout ends the probe. They ask the app through Android's activity manager,
which takes about a second: the timeout is longer than other probes'.
"""

from __future__ import annotations

import json
from typing import Any, Final

from .base import ProbeResult, Runner, SubprocessRunner, abstain, safe_run

__all__ = ["TERMUX_TIMEOUT", "TermuxProbe"]

#: seconds a Termux:API command may take (they go through the Android app)
TERMUX_TIMEOUT: Final = 4.0

WIFI_CMD: Final = "termux-wifi-connectioninfo"
PHONE_CMD: Final = "termux-telephony-deviceinfo"


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


class TermuxProbe:
    """Asks Android, through Termux:API, whether Wi-Fi or mobile data is in use."""

    name = "termux"

    def __init__(self, runner: Runner | None = None, timeout: float = TERMUX_TIMEOUT) -> None:
        self.runner: Runner = runner or SubprocessRunner(timeout=timeout)

    def _ask(self, cmd: str) -> tuple[dict[str, Any] | None, str, bool]:
        """(JSON object or None, note, stop) for one command."""
        res = safe_run(self.runner, [cmd])
        if res.timed_out:
            return None, f"{cmd} {res.error} (is the Termux:API app installed?)", True
        if not res.ok:
            return None, f"{cmd} {res.error}", False
        obj = _json_object(res.stdout)
        if obj is None:
            return None, f"{cmd} printed no JSON object", False
        if "API_ERROR" in obj:
            return None, f"{cmd}: API_ERROR {str(obj['API_ERROR'])[:80]}", False
        return obj, "", False

    def probe(self, iface: str | None) -> ProbeResult:
        try:
            notes: list[str] = []
            wifi, note, stop = self._ask(WIFI_CMD)
            if wifi is not None:
                state = str(wifi.get("supplicant_state", "?"))
                if state == "COMPLETED":
                    return ProbeResult(
                        "wifi", None, f"{WIFI_CMD}: supplicant_state=COMPLETED (Android does not say if it is metered)"
                    )
                note = f"{WIFI_CMD}: supplicant_state={state}"
            notes.append(note)
            if stop:
                return abstain("; ".join(notes))
            phone, note, _ = self._ask(PHONE_CMD)
            if phone is not None:
                data = str(phone.get("data_state", "?"))
                net = str(phone.get("network_type", "?"))
                if data == "connected":
                    return ProbeResult("cellular", None, f"{PHONE_CMD}: data_state=connected network_type={net}")
                note = f"{PHONE_CMD}: data_state={data}"
            notes.append(note)
            return abstain("; ".join(notes))
        except Exception as exc:
            return abstain(f"Termux:API output not understood: {type(exc).__name__}: {exc}")
