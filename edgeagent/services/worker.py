"""The worker's driver: worker requests answered as bounded tasks, heavy ones off the event loop,
and completed streams stored as worker objects (``StreamedObject``)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..wire import ErrorCode, Message, ObjectMessage, StreamedObject, Tensor
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

    def handlers(self) -> Mapping[type[Message], Registration]:
        # the worker checks each requester's rights itself (the domain vouches for what it relays)
        policy = Policy(Sender.AUTHORISED, relayable=True)
        return {
            **{kind: on(policy, self._on_request) for kind in WORKER_MESSAGES},
            StreamedObject: on(policy, self._on_streamed_object),
        }

    async def _on_request(self, m: Inbound[Any]) -> None:
        # Requests run as tasks (at most _MAX_WORKER_TASKS at once) so a long operation does
        # not hold up the link's other traffic, including replies to this node's own requests.
        await self._slots.acquire()
        task = self.host.spawn(self._answer(m))
        task.add_done_callback(lambda _: self._slots.release())

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
        req = m.body
        ins = self.streams.inbound.get((m.source, req.stream_id))
        if ins is None or not ins.complete or ins.path is None:
            await m.refuse(ErrorCode.NOT_FOUND, "no completed stream with that id from you")
            return
        path = ins.path
        data = await asyncio.to_thread(path.read_bytes)
        try:
            value: Any = Tensor(req.dtype, tuple(req.shape), data) if req.dtype else data
        except (ValueError, EdgeAgentError) as exc:
            await m.refuse(ErrorCode.BAD_REQUEST, f"not a tensor: {exc}")
            return
        msg = ObjectMessage(req.obj_id, value, req.tags, req.description, req.lease_ms)
        async with self._lock:
            reply = await asyncio.to_thread(self.worker.handle, msg, m.source, time.monotonic(), m.relayed_by)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
        self.streams.inbound.pop((m.source, req.stream_id), None)
        await m.reply(reply)
