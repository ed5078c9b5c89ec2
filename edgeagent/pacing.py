"""One upload pacer, for payload pushers and streams: keeps bytes sent under a rate.

The bookkeeping (``delay``) is pure: it is given ``now``; ``pace`` is its asyncio driver.
"""

from __future__ import annotations

import asyncio
import time

__all__ = ["Pacer"]


class Pacer:
    """Bytes at most ``rate_bps`` on average, with bursts of up to ``burst_s`` seconds' worth.

    Several senders may share one pacer (a node's whole payload upload); ``rate_bps`` of None
    or 0 means no limit. Idle time is not saved up beyond the burst.
    """

    def __init__(self, rate_bps: float | None, *, burst_s: float = 0.05) -> None:
        if rate_bps is not None and rate_bps < 0:
            raise ValueError("rate_bps must be >= 0")
        self.rate_bps = rate_bps or 0.0
        self.burst_s = burst_s
        self._due = -float("inf")  # when the bytes reserved so far have been sent, at the rate

    def delay(self, n: int, now: float) -> float:
        """Reserve ``n`` bytes at ``now``: how long to wait before sending them (0: at once)."""
        if not self.rate_bps:
            return 0.0
        self._due = max(self._due, now) + n / self.rate_bps
        return max(0.0, self._due - now - self.burst_s)

    async def pace(self, n: int) -> None:
        """Wait until ``n`` more bytes may go."""
        wait = self.delay(n, time.monotonic())
        if wait > 0:
            await asyncio.sleep(wait)
