"""A tiny sd_notify client: tell systemd that the node is ready, what it is doing, and that it is alive.

systemd passes a ``Type=notify`` service the address of a datagram socket in ``$NOTIFY_SOCKET``
(a path, or an abstract socket name written with a leading ``@``) and, with ``WatchdogSec=``, the
watchdog period in ``$WATCHDOG_USEC`` (and the PID it is meant for in ``$WATCHDOG_PID``). Each
message is one datagram of ``KEY=value`` lines (``sd_notify(3)``). Without ``$NOTIFY_SOCKET`` (a
shell, Termux, a test) every function here does nothing and returns False; a failed send is logged
at debug level, never raised: a node must not fail because its supervisor went away.

The watchdog is pinged from the event loop (:func:`watchdog_loop`), so a loop that is stuck (a
blocking call, a busy handler) stops the pings and systemd restarts the node.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable

__all__ = ["notify", "ready", "status", "stopping", "watchdog", "watchdog_interval", "watchdog_loop"]

log = logging.getLogger(__name__)


def _address() -> str | None:
    """Where ``$NOTIFY_SOCKET`` points: a path, or an abstract name (``@name`` becomes ``\\0name``)."""
    addr = os.environ.get("NOTIFY_SOCKET", "")
    if addr.startswith("@"):
        return "\0" + addr[1:]
    if addr.startswith("/"):
        return addr
    if addr:  # vsock: and other forms this client does not speak
        log.debug("NOTIFY_SOCKET=%r: unsupported address, not notifying", addr)
    return None


def _line(text: str) -> str:
    """``text`` as one line (a newline would start another ``KEY=value`` assignment)."""
    return " ".join(text.splitlines())


def notify(*assignments: str) -> bool:
    """Send ``KEY=value`` assignments in one datagram; True if it was sent, False if not (never raises)."""
    addr = _address()
    if addr is None or not assignments:
        return False
    data = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(addr)
            sock.sendall(data)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """``READY=1`` (start-up is finished), with a ``STATUS=`` line if given."""
    if status_text is None:
        return notify("READY=1")
    return notify("READY=1", f"STATUS={_line(status_text)}")


def status(text: str) -> bool:
    """``STATUS=text``: what ``systemctl status`` shows."""
    return notify(f"STATUS={_line(text)}")


def stopping(status_text: str | None = None) -> bool:
    """``STOPPING=1`` (shutdown has begun), with a ``STATUS=`` line if given."""
    if status_text is None:
        return notify("STOPPING=1")
    return notify("STOPPING=1", f"STATUS={_line(status_text)}")


def watchdog() -> bool:
    """``WATCHDOG=1``: one keep-alive ping."""
    return notify("WATCHDOG=1")


def watchdog_interval() -> float | None:
    """Seconds between pings systemd wants (half of ``$WATCHDOG_USEC``), or None when it wants none.

    None also when ``$WATCHDOG_PID`` names another process (the variable was inherited) or when
    ``$NOTIFY_SOCKET`` is unset.
    """
    if _address() is None:
        return None
    pid = os.environ.get("WATCHDOG_PID", "").strip()
    if pid and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2e6 if usec > 0 else None


async def watchdog_loop(interval: float | None = None, healthy: Callable[[], bool] | None = None) -> None:
    """Ping the watchdog every ``interval`` seconds (default: half of ``$WATCHDOG_USEC``) until cancelled.

    Returns at once when there is nothing to ping (no ``$NOTIFY_SOCKET``, or no interval given and
    no ``$WATCHDOG_USEC``). A ping is skipped while ``healthy()`` returns False (or raises), so systemd restarts
    a node that stays unhealthy for the watchdog period. Run it as a task::

        task = asyncio.create_task(sdnotify.watchdog_loop())
    """
    period = watchdog_interval() if interval is None else interval
    if period is None or period <= 0 or _address() is None:
        return
    while True:
        if healthy is None or _is_healthy(healthy):
            watchdog()
        await asyncio.sleep(period)


def _is_healthy(healthy: Callable[[], bool]) -> bool:
    try:
        return bool(healthy())
    except Exception:  # a broken check counts as unhealthy: systemd restarts the node
        log.exception("watchdog health check failed")
        return False
