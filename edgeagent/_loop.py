"""The event loop a node runs on: uvloop when it is installed (the ``fast`` extra), else asyncio's.

A relay's CPU goes largely to the event loop itself: each TCP read, write-ready
event and task step passes through it, hundreds of times a second per link on
a rate-limited uplink. uvloop (libuv, written in Cython) does that work for
less CPU than asyncio's pure-Python selector loop; the figures are in the
README's performance section. ``EDGEAGENT_LOOP=asyncio`` forces asyncio's loop;
``EDGEAGENT_LOOP=uvloop`` makes a missing uvloop an error rather than a fallback.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from typing import Any, TypeVar

from .exceptions import ConfigError

__all__ = ["loop_name", "run"]

T = TypeVar("T")


def loop_name() -> str:
    """The loop :func:`run` uses here: "uvloop" or "asyncio" (``EDGEAGENT_LOOP``, else uvloop if installed)."""
    want = os.environ.get("EDGEAGENT_LOOP", "auto").strip().lower() or "auto"
    if want not in ("auto", "uvloop", "asyncio"):
        raise ConfigError(f"EDGEAGENT_LOOP={want!r}: use auto, uvloop or asyncio")
    if want == "asyncio":
        return "asyncio"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        if want == "uvloop":
            msg = "EDGEAGENT_LOOP=uvloop but uvloop is not installed (pip install 'edgeagent[fast]')"
            raise ConfigError(msg) from None
        return "asyncio"
    return "uvloop"


def run(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run(main)`` on the chosen loop."""
    if loop_name() == "uvloop":
        import uvloop

        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(main)
    return asyncio.run(main)
