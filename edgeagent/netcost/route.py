"""Which interface carries the default route: ``/proc/net/route``, then ``/proc/net/ipv6_route``.

Android blocks /proc/net for apps (and keeps its routes in per-network policy
tables, so the main table may hold no default at all): every failure gives
``None`` with the reason, never an exception.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from .base import Fs, RealFs, os_error_text

__all__ = ["DefaultRoute", "default_route", "parse_ipv6_route", "parse_route"]

_RTF_UP: Final = 0x0001
_RTF_REJECT: Final = 0x0200


@dataclass(frozen=True)
class DefaultRoute:
    """The outcome of the look-up: ``interface`` (None when unknown) and how it was found."""

    interface: str | None
    evidence: str


def parse_route(text: str) -> list[tuple[int, str]]:
    """(metric, interface) of every IPv4 default route in ``/proc/net/route`` text, best first."""
    found: list[tuple[int, str]] = []
    for line in text.splitlines()[1:]:
        f = line.split()
        if len(f) < 8:
            continue
        iface, dest, flags, metric, mask = f[0], f[1], f[3], f[6], f[7]
        try:
            if int(dest, 16) != 0 or int(mask, 16) != 0 or not int(flags, 16) & _RTF_UP:
                continue
            found.append((int(metric), iface))
        except ValueError:
            continue
    return sorted(found)


def parse_ipv6_route(text: str) -> list[tuple[int, str]]:
    """(metric, interface) of every IPv6 default route in ``/proc/net/ipv6_route`` text, best first.

    The kernel's "unreachable" defaults on ``lo`` (RTF_REJECT) are skipped.
    """
    found: list[tuple[int, str]] = []
    for line in text.splitlines():
        f = line.split()
        if len(f) < 10:
            continue
        dest, plen, metric, flags, iface = f[0], f[1], f[5], f[8], f[9]
        try:
            fl = int(flags, 16)
            if int(dest, 16) != 0 or int(plen, 16) != 0 or not fl & _RTF_UP or fl & _RTF_REJECT:
                continue
            found.append((int(metric, 16), iface))
        except ValueError:
            continue
    return sorted(found)


def default_route(proc_root: Path = Path("/proc"), fs: Fs | None = None) -> DefaultRoute:
    """The interface of the best default route, IPv4 first, then IPv6."""
    fs = fs or RealFs()
    notes: list[str] = []
    for name, parse in (("route", parse_route), ("ipv6_route", parse_ipv6_route)):
        path = proc_root / "net" / name
        try:
            text = fs.read_text(path)
        except OSError as exc:
            notes.append(f"{path}: {os_error_text(exc)}")
            continue
        except Exception as exc:  # a custom Fs gone wrong: still no crash
            notes.append(f"{path}: {type(exc).__name__}")
            continue
        routes = parse(text)
        if routes:
            metric, iface = routes[0]
            return DefaultRoute(iface, f"default via {iface} ({path}, metric {metric})")
        notes.append(f"{path}: no default route")
    return DefaultRoute(None, "; ".join(notes))
