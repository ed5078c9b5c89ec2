"""Streams: an ordered, acknowledged byte stream to one node over the best route, surviving route changes.

The sender keeps at most ``window`` unacknowledged bytes in flight and reads
them again from its source when it must resend, so memory stays bounded
whatever the size. The receiver writes bytes in order to
``<state>/streams/<name>.part`` and acknowledges every ``ack_every`` bytes;
data past a gap (frames lost with a dead relay) is dropped and answered with
a ``gap`` ack, and the sender goes back to the acknowledged offset on
whatever route the routing policy now picks (go-back-N: a route change costs
at most one window of resent bytes).

Limits (``host.limiter``): one peer may have ``streams_per_peer`` streams in
progress here and all peers together ``MAX_INBOUND`` (the system scope); a
stream that receives nothing for ``stream_idle`` seconds is dropped (its
partial file removed, its slot freed) and its sender told so, now and whenever
it sends again. A refusal is a ``StreamAck`` whose ``error`` is the limiter's
reason (``"limit <name>: ..."``); the sender raises ``RemoteQuotaExceeded``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .exceptions import EdgeAgentError, LinkError, NoRoute, remote_error
from .host import Host, Inbound, Policy, Registration, Sender, Service, on
from .pacing import Pacer
from .routing import Traits
from .wire import Envelope, ErrorCode, Message, NodeId, StreamAck, StreamData

if TYPE_CHECKING:
    from collections.abc import Mapping

__all__ = ["InboundStream", "StreamResult", "StreamService"]

log = logging.getLogger(__name__)
DEFAULT_CHUNK: Final = 256 * 1024
DEFAULT_WINDOW: Final = 8 << 20
ACK_EVERY: Final = 1 << 20
MAX_INBOUND: Final = 16  # streams in progress from all peers together (the system scope)
_DROPPED_KEPT: Final = 256  # idle-dropped streams remembered, to tell a returning sender why
_NAME_OK = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass
class StreamResult:
    """What a finished stream did: its id, size, time, the routes it used and the bytes it resent."""

    stream_id: bytes
    size: int
    seconds: float
    routes: list[str]
    resent_bytes: int
    route_changes: int


class _Source:
    """Where a stream's bytes come from; ``size`` is None until an open-ended stream is closed."""

    size: int | None = None
    fin_sent: int = -1

    def __init__(self) -> None:
        self.more = asyncio.Event()

    @property
    def available(self) -> int:
        raise NotImplementedError

    def read(self, off: int, n: int) -> bytes:
        raise NotImplementedError

    def release(self, upto: int) -> None:
        """Bytes before ``upto`` are acknowledged: they will not be read again."""

    def fin_sent_at(self, off: int) -> bool:
        return self.fin_sent == off

    def close(self) -> None:
        pass


class _FileSource(_Source):
    def __init__(self, path: Path) -> None:
        super().__init__()
        self.fh = path.open("rb")
        self.size = os.fstat(self.fh.fileno()).st_size

    @property
    def available(self) -> int:
        assert self.size is not None
        return self.size

    def read(self, off: int, n: int) -> bytes:
        return os.pread(self.fh.fileno(), n, off)

    def close(self) -> None:
        self.fh.close()


class _BytesSource(_Source):
    def __init__(self, data: bytes | bytearray | memoryview) -> None:
        super().__init__()
        self.view = memoryview(data).cast("B")
        self.size = len(self.view)

    @property
    def available(self) -> int:
        return len(self.view)

    def read(self, off: int, n: int) -> bytes:
        return self.view[off : off + n]  # type: ignore[return-value]  # a view: the codec copies it once


class _BufferSource(_Source):
    """An open-ended stream's bytes: written by the application, kept until acknowledged (at most a window)."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray()
        self.base = 0  # stream offset of buf[0]
        self.released = asyncio.Event()

    @property
    def available(self) -> int:
        return self.base + len(self.buf)

    def read(self, off: int, n: int) -> bytes:
        return bytes(self.buf[off - self.base : off - self.base + n])

    def release(self, upto: int) -> None:
        if upto > self.base:
            del self.buf[: upto - self.base]
            self.base = upto
            self.released.set()


class StreamWriter:
    """An open-ended stream being written (see ``StreamService.open``)."""

    def __init__(self, service: StreamService, peer: NodeId, name: str, window: int, kwargs: dict[str, Any]) -> None:
        self.service = service
        self.peer = peer
        self.name = name
        self.window = window
        self.kwargs = kwargs
        self.src = _BufferSource()
        self.task: asyncio.Task[StreamResult] | None = None
        self.result: StreamResult | None = None

    async def __aenter__(self) -> StreamWriter:
        k = self.kwargs
        self.task = asyncio.ensure_future(
            self.service._run(
                self.peer, self.src, self.name, k.get("chunk", DEFAULT_CHUNK), self.window, k.get("deadline_s"),
                k.get("rate_bps"), k.get("stall_timeout", 5.0), k.get("max_stalls", 6), k.get("progress"),
            )
        )  # fmt: skip
        return self

    async def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data``; waits while a window of bytes is unacknowledged (backpressure).

        Raises the sender's error if the stream already failed (e.g. the peer dropped it as idle)."""
        assert self.task is not None, "use `async with node.open_stream(...)`"
        if self.task.done():
            self.task.result()  # raises the sender's error
        if self.src.size is not None:
            raise EdgeAgentError("the stream is closed")
        while self.src.available - self.src.base >= self.window:
            if self.task.done():
                self.task.result()  # raises the sender's error
            self.src.released.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await self.src.released.wait()
        self.src.buf += data
        self.src.more.set()

    async def close(self) -> StreamResult:
        """End the stream and wait until the peer holds all of it."""
        assert self.task is not None
        if self.src.size is None:
            self.src.size = self.src.available
            self.src.more.set()
        self.result = await self.task
        return self.result

    async def __aexit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is None:
            await self.close()
        elif self.task is not None:
            self.task.cancel()


@dataclass
class _Outbound:
    size: int
    acked: int = 0
    gap: bool = False
    complete: bool = False
    error: str = ""
    event: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class InboundStream:
    """A stream being received (or received): where it is written and how far it got."""

    source: NodeId
    stream_id: bytes
    size: int
    name: str
    part: Path
    path: Path | None = None
    expected: int = 0
    acked: int = 0
    gap_acked_at: int = -1
    complete: bool = False
    fd: int | None = None
    started: float = 0.0
    last_rx: float = 0.0  # monotonic time of the last frame received (the idle timeout counts from it)
    sha256: str | None = None  # hashed from the stored file after completion, off the event loop

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.stream_id.hex(),
            "source": str(self.source),
            "size": self.size,
            "have_bytes": self.expected,
            "complete": self.complete,
            "path": str(self.path) if self.path else None,
            "sha256": self.sha256,
        }


class StreamService(Service):
    """Sends and receives streams for one Node (the Node routes the frames)."""

    name = "streams"

    def __init__(self, host: Host, directory: Path, *, max_bytes: int = 64 << 30) -> None:
        self.host = host
        self.directory = directory
        self.max_bytes = max_bytes
        self._out: dict[bytes, _Outbound] = {}
        self.inbound: dict[tuple[NodeId, bytes], InboundStream] = {}
        self.on_complete: Callable[[InboundStream], None] | None = None
        self.completed = asyncio.Condition()
        self._tasks: set[asyncio.Future[None]] = set()
        self._idle_task: asyncio.Task[None] | None = None
        # (source, stream id) -> why it was dropped: a sender coming back is told, not "unknown stream"
        self._dropped: OrderedDict[tuple[NodeId, bytes], str] = OrderedDict()

    def handlers(self) -> Mapping[type[Message], Registration]:
        # streams ride the best bulk route, relays included
        return {
            StreamData: on(Policy(Sender.AUTHORISED, relayable=True, bulk=True), self.on_data),
            StreamAck: on(Policy(Sender.AUTHORISED, relayable=True), self._on_ack),
        }

    def status_fields(self) -> dict[str, Any]:
        return {"streams": [s.to_json() for s in self.inbound.values()]}

    async def aclose(self) -> None:
        self.close()

    async def _on_ack(self, m: Inbound[StreamAck]) -> None:
        self.on_ack(m.env)

    # -- sending ---------------------------------------------------------------------------

    async def send(
        self,
        peer: NodeId,
        source: bytes | bytearray | memoryview | Path,
        *,
        name: str = "",
        chunk: int = DEFAULT_CHUNK,
        window: int = DEFAULT_WINDOW,
        deadline_s: float | None = None,
        rate_bps: float | None = None,
        stall_timeout: float = 5.0,
        max_stalls: int = 6,
        progress: Callable[[int, int], None] | None = None,
    ) -> StreamResult:
        """Stream ``source`` (bytes or a file) to ``peer``; returns when the peer has stored all of it.

        ``rate_bps`` paces the sender (a phone's upload cap); ``deadline_s`` is
        handed to the routing policy. Raises ``RemoteError`` if the peer refuses,
        ``NoRoute`` if no route is left, ``EdgeAgentError`` after ``max_stalls``
        consecutive windows without progress.
        """
        if isinstance(source, Path):
            src: _Source = _FileSource(source)
            name = name or source.name
        else:
            src = _BytesSource(source)
        try:
            return await self._run(peer, src, name, chunk, window, deadline_s, rate_bps, stall_timeout, max_stalls,
                                   progress)  # fmt: skip
        finally:
            src.close()

    def open(self, peer: NodeId, *, name: str = "", window: int = DEFAULT_WINDOW, **kwargs: Any) -> StreamWriter:
        """An open-ended stream: ``async with node.open_stream(peer) as s: await s.write(data)``.

        ``write`` waits while ``window`` bytes are unacknowledged (they are kept to be
        resent after a route change); leaving the block ends the stream and waits until
        the peer holds all of it (``s.result``).
        """
        return StreamWriter(self, peer, name, window, kwargs)

    async def _run(
        self,
        peer: NodeId,
        src: _Source,
        name: str,
        chunk: int,
        window: int,
        deadline_s: float | None,
        rate_bps: float | None,
        stall_timeout: float,
        max_stalls: int,
        progress: Callable[[int, int], None] | None,
    ) -> StreamResult:
        routes_view = self.host.routes
        sid = secrets.token_bytes(16)
        st = _Outbound(src.size if src.size is not None else -1)
        self._out[sid] = st
        t0 = time.monotonic()
        routes: list[str] = []
        route_key: Any = None
        sent = resent = high = stalls = changes = reported = 0
        pacer = Pacer(rate_bps, burst_s=0.0)
        try:
            while not st.complete:
                if st.error:
                    raise remote_error(_refusal_code(st.error), f"stream refused by {peer}: {st.error}")
                src.release(st.acked)
                remaining = (src.size if src.size is not None else src.available) - st.acked
                pick = routes_view.pick(peer, Traits("stream", max(remaining, 0), deadline_s))
                link, route, key, label = pick.link, pick.route, pick.key, pick.label
                if key != route_key:
                    if route_key is not None:
                        changes += 1
                        log.info("stream %s to %s: route now %s (%s)", sid.hex()[:8], peer, label, pick.reason)
                        sent = st.acked  # go back: frames in flight on the old route may be lost
                    route_key = key
                    routes.append(label)
                if st.gap:
                    st.gap = False
                    sent = st.acked
                st.event.clear()
                before = st.acked  # progress is judged from here: acks may arrive while the window is sent
                failed = False
                while not st.gap and sent - st.acked < window:
                    avail = src.available
                    final = src.size is not None
                    if sent >= avail and not (final and sent == avail and not src.fin_sent_at(sent)):
                        break  # nothing more to send now
                    n = min(chunk, avail - sent)
                    end = sent + n
                    fin = final and end == src.size
                    body = StreamData(sid, sent, src.size or 0, name if sent == 0 else "", fin, src.read(sent, n))
                    env = Envelope(body, self.host.node_id, destination=peer, route=route)
                    try:
                        async with asyncio.timeout(stall_timeout):
                            await link.send(env)
                    except (LinkError, TimeoutError) as exc:
                        log.info("stream %s: send on %s failed: %s", sid.hex()[:8], label, exc)
                        routes_view.failed(link)
                        failed = True
                        break
                    if fin:
                        src.fin_sent = end
                    if progress is not None and st.acked != reported:
                        reported = st.acked
                        progress(reported, src.size or src.available)
                    if sent < high:
                        resent += n
                    sent = end
                    high = max(high, sent)
                    if n:
                        await pacer.pace(n)
                if failed:
                    sent = st.acked
                    src.fin_sent = -1
                    continue
                if st.complete:
                    break
                gen = routes_view.generation
                more = src.more
                more.clear()
                waiting_for_data = src.size is None and sent >= src.available
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(stall_timeout):
                        while not st.event.is_set() and routes_view.generation == gen and not more.is_set():
                            await routes_view.wait_change(st.event, *((more,) if waiting_for_data else ()))
                if progress is not None and st.acked != reported:
                    reported = st.acked
                    progress(reported, src.size or src.available)
                if st.acked > before or st.complete or st.gap or routes_view.generation != gen or more.is_set():
                    stalls = 0
                    continue
                if waiting_for_data and st.acked >= sent:
                    continue  # idle writer: nothing is outstanding
                stalls += 1
                routes_view.failed(link)
                sent = st.acked
                src.fin_sent = -1
                if stalls >= max_stalls:
                    raise EdgeAgentError(
                        f"stream to {peer} made no progress in {stalls} windows of {stall_timeout}s "
                        f"({st.acked} bytes acknowledged)"
                    )
        finally:
            self._out.pop(sid, None)
        return StreamResult(sid, st.acked, time.monotonic() - t0, routes, resent, changes)

    def on_ack(self, env: Envelope) -> None:
        ack = env.body
        assert isinstance(ack, StreamAck)
        st = self._out.get(ack.stream_id)
        if st is None:
            return
        if ack.error:
            st.error = ack.error
        if ack.offset > st.acked:
            st.acked = ack.offset if st.size < 0 else min(ack.offset, st.size)
        if ack.gap:
            st.gap = True
        if ack.complete:
            st.complete = True
        st.event.set()

    # -- receiving -------------------------------------------------------------------------

    async def on_data(self, m: Inbound[StreamData]) -> None:
        data, env = m.body, m.env
        key = (env.source, data.stream_id)
        ins = self.inbound.get(key)
        if ins is None:
            refusal = self._refuse_new(env, data)
            if refusal:
                await self._ack(env, data.stream_id, 0, error=refusal)
                return
            ins = self._open(env.source, data)
        ins.last_rx = time.monotonic()
        if ins.complete:
            await self._ack(env, data.stream_id, ins.size, complete=True)
            return
        end = data.offset + len(data.data)
        if data.fin:
            if ins.size and end != ins.size:
                await self._ack(env, data.stream_id, ins.expected, error="the stream's end moved")
                return
            ins.size = end
        elif (ins.size and end > ins.size) or end > self.max_bytes:
            await self._ack(env, data.stream_id, ins.expected, error="frame beyond the stream's size")
            return
        if data.offset > ins.expected:  # a gap: frames were lost on a dead route
            if ins.gap_acked_at != ins.expected:
                ins.gap_acked_at = ins.expected
                await self._ack(env, data.stream_id, ins.expected, gap=True)
            return
        if end <= ins.expected and not (data.fin and end == ins.expected and ins.size == end):
            if data.fin or end == ins.expected:
                await self._ack(env, data.stream_id, ins.expected)
            return
        part = memoryview(data.data)[ins.expected - data.offset :]
        assert ins.fd is not None
        if part:
            os.pwrite(ins.fd, part, ins.expected)
        ins.expected = max(ins.expected, end)
        if (ins.size and ins.expected == ins.size) or (data.fin and ins.expected == end):
            await self._finish(ins)
            await self._ack(env, data.stream_id, ins.size, complete=True)
        elif ins.expected - ins.acked >= ACK_EVERY:
            ins.acked = ins.expected
            await self._ack(env, data.stream_id, ins.expected)

    def _refuse_new(self, env: Envelope, data: StreamData) -> str:
        """Why a frame of a stream this node does not hold is refused ("" to open it)."""
        dropped = self._dropped.get((env.source, data.stream_id))
        if dropped is not None:
            return dropped  # counted when it was dropped; every later frame gets the same answer
        if data.offset != 0:
            return "unknown stream (this node restarted?); start again"
        limits = self.host.limiter.limits
        mine = sum(1 for s in self.inbound.values() if not s.complete and s.source == env.source)
        if mine >= limits.streams_per_peer:
            why = f"{mine} streams from this peer in progress, the most allowed; finish one first"
            return self.host.limiter.refuse("streams_per_peer", env.source, why, time.monotonic()).reason
        total = sum(1 for s in self.inbound.values() if not s.complete)
        if total >= MAX_INBOUND:
            why = f"{total} streams in progress on this node, the most allowed; try again later"
            return self.host.limiter.refuse("streams_total", env.source, why, time.monotonic()).reason
        if data.size > self.max_bytes:
            return f"stream of {data.size} bytes exceeds this node's limit of {self.max_bytes}"
        return ""

    def _open(self, source: NodeId, data: StreamData) -> InboundStream:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        base = _NAME_OK.sub("_", os.path.basename(data.name)).strip("._") or data.stream_id.hex()
        part = self.directory / f".{data.stream_id.hex()}.part"
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        now = time.monotonic()
        ins = InboundStream(source, data.stream_id, data.size, base[:128], part, fd=fd, started=now, last_rx=now)
        self.inbound[(source, data.stream_id)] = ins
        # keep the record of finished streams bounded
        done = [k for k, s in self.inbound.items() if s.complete]
        for k in done[: max(0, len(done) - 256)]:
            del self.inbound[k]
        if self._idle_task is None or self._idle_task.done():
            self._idle_task = self.host.spawn(self._drop_idle(), name="stream-idle")
        return ins

    async def _drop_idle(self) -> None:
        """While streams are in progress: drop each one that received nothing for ``stream_idle`` seconds."""
        while True:
            idle = self.host.limiter.limits.stream_idle
            now = time.monotonic()
            for ins in [s for s in self.inbound.values() if not s.complete and now - s.last_rx >= idle]:
                self._drop(ins, idle, now)
            live = [s.last_rx for s in self.inbound.values() if not s.complete]
            if not live:
                return  # started again by the next stream opened
            # at most an eighth of the timeout (and a second) late, and never a busy loop
            await asyncio.sleep(max(min(live) + idle - now, min(1.0, idle / 8)))

    def _drop(self, ins: InboundStream, idle: float, now: float) -> None:
        """Forget an idle stream: close and remove its partial file, free its slot, tell its sender."""
        why = f"stream {ins.stream_id.hex()[:8]} received nothing for {idle:g} s and was dropped; start again"
        reason = self.host.limiter.refuse("stream_idle", ins.source, why, now).reason
        key = (ins.source, ins.stream_id)
        self.inbound.pop(key, None)
        if ins.fd is not None:
            os.close(ins.fd)
            ins.fd = None
        with contextlib.suppress(OSError):
            ins.part.unlink()
        self._dropped[key] = reason
        while len(self._dropped) > _DROPPED_KEPT:
            self._dropped.popitem(last=False)
        log.info("stream %s from %s dropped after %g s idle (%d of %s bytes)", ins.stream_id.hex()[:8],
                 ins.source, idle, ins.expected, ins.size or "?")  # fmt: skip
        # told now (a sender waiting for its application to write fails at once), off this loop
        task = self.host.spawn(self._ack_to(ins.source, ins.stream_id, 0, error=reason), name="stream-drop")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _finish(self, ins: InboundStream) -> None:
        assert ins.fd is not None
        os.close(ins.fd)
        ins.fd = None
        final = self.directory / ins.name
        n = 1
        while final.exists():
            final = self.directory / f"{ins.name}.{n}"
            n += 1
        os.replace(ins.part, final)
        ins.path = final
        ins.complete = True
        task = self.host.spawn(self._hash(ins), name="stream-hash")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        log.info("stream %s from %s complete: %d bytes -> %s", ins.stream_id.hex()[:8], ins.source, ins.size, final)
        if self.on_complete is not None:
            self.on_complete(ins)
        async with self.completed:
            self.completed.notify_all()

    async def _ack(
        self, env: Envelope, sid: bytes, offset: int, *, gap: bool = False, complete: bool = False, error: str = ""
    ) -> None:
        await self._ack_to(env.source, sid, offset, gap=gap, complete=complete, error=error)

    async def _ack_to(
        self, peer: NodeId, sid: bytes, offset: int, *, gap: bool = False, complete: bool = False, error: str = ""
    ) -> None:
        ack = StreamAck(sid, offset, gap, complete, error)
        with contextlib.suppress(LinkError, NoRoute):
            await self.host.send(peer, ack, Traits("request"))

    async def _hash(self, ins: InboundStream) -> None:
        """SHA-256 of a finished stream for ``status`` (not needed for integrity: links authenticate every byte)."""
        path = ins.path
        if path is None:
            return

        def digest() -> str:
            h = hashlib.sha256()
            with path.open("rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            return h.hexdigest()

        with contextlib.suppress(OSError):
            ins.sha256 = await asyncio.to_thread(digest)

    def close(self) -> None:
        if self._idle_task is not None:
            self._idle_task.cancel()
        for t in list(self._tasks):
            t.cancel()
        for ins in self.inbound.values():
            if ins.fd is not None:
                os.close(ins.fd)
                ins.fd = None


def _refusal_code(error: str) -> ErrorCode:
    """The code a refusal in a ``StreamAck`` stands for: a limit's (the limiter's ``"limit <name>: "``
    prefix) is QUOTA, anything else BAD_REQUEST (a StreamAck carries the reason only)."""
    return ErrorCode.QUOTA if error.startswith("limit ") else ErrorCode.BAD_REQUEST
