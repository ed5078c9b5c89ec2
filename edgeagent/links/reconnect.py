"""Reconnecting with jittered exponential backoff.

:class:`Backoff` is pure (the caller supplies randomness and does the
waiting); :func:`keep_connected` is the asyncio loop that dials, hands each
link to the caller, and dials again when it closes.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from ..exceptions import ConfigError, EdgeAgentError
from .link import Link

__all__ = ["Backoff", "keep_connected"]

log = logging.getLogger(__name__)


@dataclass
class Backoff:
    """Full-jitter exponential backoff: attempt n waits uniform(0, min(cap, base * 2**n)).

    Jitter spreads a fleet's reconnects after an outage instead of having every
    phone hit the domain at the same instant.
    """

    base: float = 0.5
    cap: float = 30.0
    attempt: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def next_delay(self) -> float:
        ceiling = min(self.cap, self.base * (2 ** min(self.attempt, 32)))
        self.attempt += 1
        return self.rng.uniform(0, ceiling)

    def reset(self) -> None:
        self.attempt = 0


async def keep_connected(
    dial: Callable[[], Awaitable[Link]],
    on_link: Callable[[Link], Awaitable[None]],
    *,
    backoff: Backoff | None = None,
    max_attempts: int | None = None,
) -> None:
    """Dial until it works, run ``on_link``, wait for the link to close, repeat (until cancelled).

    A configuration error (bad URL) stops the loop at once; ``max_attempts``
    consecutive failures stop it too.
    """
    backoff = backoff or Backoff()
    failures = 0
    while True:
        try:
            link = await dial()
        except ConfigError:
            raise
        except Exception as exc:  # a peer must never stop the redial loop for good
            if not isinstance(exc, EdgeAgentError):
                log.warning("dial failed unexpectedly: %r", exc)
            failures += 1
            if max_attempts is not None and failures >= max_attempts:
                raise
            delay = backoff.next_delay()
            log.info("dial failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            continue
        failures = 0
        backoff.reset()
        try:
            await on_link(link)
            await link.wait_closed()
        finally:
            await link.close()
        log.info("link to %s closed (%s); reconnecting", link.peer, link.close_error)
