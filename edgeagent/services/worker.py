"""The worker's driver: worker requests answered as bounded tasks, heavy ones off the event loop,
and completed streams stored as worker objects (``StreamedObject``).

Bounds: at most ``_MAX_WORKER_TASKS`` requests are handled at once in all, and at most
``worker_slots_per_peer`` (``host.limiter``) from one requester; a request past its requester's
share is answered BUSY at once (counted under ``limits.refused``) rather than queued. A
``StreamedObject`` is checked (rights, id, shape, quota) from the stream's size before its file
is read into memory, and read under the store's lock, so one at a time; the stream is consumed
(its file removed) whether it is stored or refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..wire import Error, ErrorCode, Message, NodeId, ObjectMessage, StreamedObject, Tensor
from ..worker import WORKER_MESSAGES, Worker

if TYPE_CHECKING:
    from ..stream import StreamService

__all__ = ["WorkerService"]

_MAX_WORKER_TASKS: Final = 32
_INLINE_WORK_BYTES: Final = 256 * 1024  # operations touching more than this run in a thread


class WorkerService(Service):
    """Serves the worker's requests; the worker itself (``worker.Worker``) is pure and decides rights."""

    name = "worker"

    def __init__(self, host: Host, worker: Worker, streams: StreamService) -> None:
        self.host = host
        self.worker = worker
        self.streams = streams
        self._lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(_MAX_WORKER_TASKS)
        self._busy: Counter[NodeId] = Counter()  # requests each requester has being handled (or waiting)

    def handlers(self) -> Mapping[type[Message], Registration]:
        # the worker checks each requester's rights itself (the domain vouches for what it relays)
        policy = Policy(Sender.AUTHORISED, relayable=True)
        return {
            **{kind: on(policy, self._on_request) for kind in WORKER_MESSAGES},
            StreamedObject: on(policy, self._on_streamed_object),
        }

    def status_fields(self) -> dict[str, Any]:
        return {"worker_busy": {str(peer): n for peer, n in self._busy.items()}} if self._busy else {}

    async def _take_slot(self, m: Inbound[Any]) -> bool:
        """Count a request against its requester's ``worker_slots_per_peer``; False (answered BUSY) when full."""
        most = self.host.limiter.limits.worker_slots_per_peer
        if self._busy[m.source] >= most:
            why = f"{most} requests from this peer are being handled already; retry when one is answered"
            now = time.monotonic()
            err = self.host.limiter.refuse("worker_slots_per_peer", m.source, why, now, code=ErrorCode.BUSY)
            if m.env.reply_to is None:
                await m.reply(err)
            return False
        self._busy[m.source] += 1
        return True

    def _free_slot(self, peer: NodeId) -> None:
        self._busy[peer] -= 1
        if self._busy[peer] <= 0:
            del self._busy[peer]

    async def _on_request(self, m: Inbound[Any]) -> None:
        # Requests run as tasks (at most _MAX_WORKER_TASKS at once, worker_slots_per_peer from one
        # peer) so a long operation does not hold up the link's other traffic, including replies to
        # this node's own requests.
        if not await self._take_slot(m):
            return
        try:
            await self._slots.acquire()
        except BaseException:
            self._free_slot(m.source)
            raise
        task = self.host.spawn(self._answer(m))

        def done(_: object, peer: NodeId = m.source) -> None:
            self._slots.release()
            self._free_slot(peer)

        task.add_done_callback(done)

    async def _answer(self, m: Inbound[Any]) -> None:
        # one request at a time touches the store; only heavy ones leave the event loop (a
        # thread hop costs ~100-300 us here, far more than answering a small request)
        async with self._lock:
            now = time.monotonic()
            if self.worker.cost(m.body, now) >= _INLINE_WORK_BYTES:
                reply = await asyncio.to_thread(self.worker.handle, m.body, m.source, now, m.relayed_by)
            else:
                reply = self.worker.handle(m.body, m.source, now, m.relayed_by)
        await m.reply(reply)

    async def _on_streamed_object(self, m: Inbound[StreamedObject]) -> None:
        """Store a completed stream from the sender as a worker object (the worker's rights apply)."""
        if not await self._take_slot(m):
            return
        try:
            await self._store_streamed(m)
        finally:
            self._free_slot(m.source)

    async def _store_streamed(self, m: Inbound[StreamedObject]) -> None:
        req = m.body
        key = (m.source, req.stream_id)
        ins = self.streams.inbound.get(key)
        if ins is None or not ins.complete or ins.path is None:
            await m.refuse(ErrorCode.NOT_FOUND, "no completed stream with that id from you")
            return
        path = ins.path
        async with self._lock:
            try:
                nbytes = os.stat(path).st_size
            except OSError:
                await m.refuse(ErrorCode.NOT_FOUND, "that stream's file is gone")
                return
            # decided from the size alone: a peer without the right, or over the quota, costs no read
            refusal = self.worker.check_streamed(req, nbytes, m.source, time.monotonic(), m.relayed_by)
            if refusal is None:
                data = await asyncio.to_thread(path.read_bytes)
                try:
                    value: Any = Tensor(req.dtype, tuple(req.shape), data) if req.dtype else data
                except (ValueError, EdgeAgentError) as exc:
                    reply: Message = Error(ErrorCode.BAD_REQUEST, f"not a tensor: {exc}")
                else:
                    msg = ObjectMessage(req.obj_id, value, req.tags, req.description, req.lease_ms)
                    reply = await asyncio.to_thread(self.worker.handle, msg, m.source, time.monotonic(), m.relayed_by)
            else:
                reply = refusal
        # consumed, stored or not (a refused one is not left on disk; the sender streams it again)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
        self.streams.inbound.pop(key, None)
        await m.reply(reply)
