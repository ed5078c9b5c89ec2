"""In-process transports for tests and simulations (shipped in the package).

``memory_pipe()`` gives two connected :class:`MemoryTransport` ends. Each
direction can add a one-way ``delay``, a ``bandwidth`` (bytes/s: a message
occupies the sender for ``len / bandwidth`` seconds, like a bottleneck link),
and a ``loss`` probability: a lost message is retransmitted after ``rto``
seconds, as TCP would, so the channel stays reliable and ordered but slower.
Each direction buffers at most ``capacity`` bytes; a sender waits beyond that.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque

from ..exceptions import LinkClosed
from .base import FrameTransport

__all__ = ["MemoryTransport", "memory_pipe"]


class _Channel:
    def __init__(
        self, delay: float, bandwidth: float | None, loss: float, rto: float, capacity: int, rng: random.Random
    ):
        self.delay = delay
        self.bandwidth = bandwidth
        self.loss = loss
        self.rto = rto
        self.capacity = capacity
        self.rng = rng
        self.queue: deque[tuple[float, bytes]] = deque()
        self.queued_bytes = 0
        self.closed = False
        self.changed = asyncio.Condition()
        self.busy_until = 0.0  # the sender's serialisation clock
        self.last_due = 0.0  # keeps delivery in order


class MemoryTransport(FrameTransport):
    kind = "memory"

    def __init__(self, tx: _Channel, rx: _Channel, max_message_size: int, name: str) -> None:
        self._tx = tx
        self._rx = rx
        self.max_message_size = max_message_size
        self.remote_address = name

    @property
    def closed(self) -> bool:
        return self._tx.closed or self._rx.closed

    async def send(self, message: bytes | bytearray) -> None:
        ch = self._tx
        if ch.closed:
            raise LinkClosed("memory transport closed")
        if len(message) > self.max_message_size:
            raise ValueError(f"message of {len(message)} bytes exceeds {self.max_message_size}")
        async with ch.changed:
            await ch.changed.wait_for(lambda: ch.closed or ch.queued_bytes < ch.capacity)
            if ch.closed:
                raise LinkClosed("memory transport closed")
            now = time.monotonic()
            start = max(now, ch.busy_until)
            if ch.bandwidth:
                ch.busy_until = start + len(message) / ch.bandwidth
            else:
                ch.busy_until = start
            due = ch.busy_until + ch.delay
            if ch.loss and ch.rng.random() < ch.loss:
                due += ch.rto
            due = max(due, ch.last_due)
            ch.last_due = due
            ch.queue.append((due, bytes(message)))
            ch.queued_bytes += len(message)
            ch.changed.notify_all()
        wait = ch.busy_until - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def recv(self) -> bytes:
        ch = self._rx
        async with ch.changed:
            await ch.changed.wait_for(lambda: ch.closed or bool(ch.queue))
            if not ch.queue:
                raise LinkClosed("memory transport closed")
            due, message = ch.queue[0]
        wait = due - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        async with ch.changed:
            if not ch.queue:
                raise LinkClosed("memory transport closed")
            ch.queue.popleft()
            ch.queued_bytes -= len(message)
            ch.changed.notify_all()
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        for ch in (self._tx, self._rx):
            async with ch.changed:
                ch.closed = True
                ch.changed.notify_all()


def memory_pipe(
    *,
    delay: float = 0.0,
    bandwidth: float | None = None,
    loss: float = 0.0,
    rto: float = 0.2,
    capacity: int = 4 << 20,
    max_message_size: int = 1 << 20,
    seed: int | None = None,
) -> tuple[MemoryTransport, MemoryTransport]:
    """Two connected transport ends with the same conditions in both directions."""
    if not 0 <= loss < 1:
        raise ValueError("loss must be in [0, 1)")
    rng = random.Random(seed)
    a_to_b = _Channel(delay, bandwidth, loss, rto, capacity, rng)
    b_to_a = _Channel(delay, bandwidth, loss, rto, capacity, rng)
    return (
        MemoryTransport(a_to_b, b_to_a, max_message_size, "memory:b"),
        MemoryTransport(b_to_a, a_to_b, max_message_size, "memory:a"),
    )
