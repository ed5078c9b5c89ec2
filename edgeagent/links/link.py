"""The Link: a Connection over any FrameTransport (the asyncio driver of the pure link core).

It runs the handshake, then two tasks: a reader (records -> frames ->
envelopes; answers Pings, refuses what an unauthorised peer may not ask,
queues the rest for the application with a bounded queue) and a keepalive
(Pings an idle link, measures RTT, declares the link dead when nothing
arrives for ``dead_after`` seconds).

Flow control is credit-based and transport-independent: each side announces
a ``window`` in its Hello; a sender may have at most the peer's window of
frame bytes outstanding and waits for :class:`Credit`, which the receiver
returns as the *application* consumes envelopes. A slow reader (or a relay
whose next hop is slow) therefore holds its sender back on every transport,
including WebRTC data channels, which cannot push back themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from typing import Final

from ..exceptions import (
    DecodeError,
    EdgeAgentError,
    EncodeError,
    HandshakeError,
    LinkClosed,
    LinkError,
    LinkTimeout,
    RemoteProtocolError,
)
from ..identity import Identity, prove_origin
from ..wire import Close, Codec, Credit, Envelope, Error, ErrorCode, Hello, NodeId, Ping, Pong, decode, encode
from .base import UNAUTHORISED_ALLOWED, Connection, FrameTransport, LinkOptions, LinkStats
from .handshake import Handshake, HandshakeResult
from .records import RecordReader, RecordWriter

__all__ = ["Link", "establish"]

log = logging.getLogger(__name__)
_MAX_CONTROL_TASKS: Final = 16
_NO_CREDIT: Final = (Ping, Pong, Close, Credit)  # control traffic never waits for credit
_CLOSE_TIMEOUT: Final = 2.0


class _QuietLog:
    """Peer-caused warnings: the first few per minute at WARNING, the rest at DEBUG (flaky radios flood logs)."""

    def __init__(self, per_minute: int = 10) -> None:
        self.per_minute = per_minute
        self.window = 0.0
        self.count = 0

    def warning(self, msg: str, *args: object) -> None:
        now = time.monotonic()
        if now - self.window > 60:
            self.window, self.count = now, 0
        self.count += 1
        log.log(logging.WARNING if self.count <= self.per_minute else logging.DEBUG, msg, *args)


peer_log = _QuietLog()


async def establish(
    transport: FrameTransport,
    identity: Identity,
    options: LinkOptions,
    *,
    initiator: bool,
    expected_peer: NodeId | None = None,
) -> Link:
    """Run the handshake over ``transport`` and return the Link; closes the transport on failure."""
    hs = Handshake(identity, initiator, options, expected_peer)
    try:
        async with asyncio.timeout(options.handshake_timeout):
            if initiator:
                await transport.send(hs.start())
            while hs.result is None:
                reply = hs.receive(await transport.recv())
                if reply is not None:
                    await transport.send(reply)
    except TimeoutError:
        await transport.close(1008, "handshake timeout")
        raise LinkTimeout(
            f"handshake with {transport.remote_address} timed out after {options.handshake_timeout}s"
        ) from None
    except HandshakeError as exc:
        await transport.close(1008, "handshake failed")
        raise HandshakeError(f"handshake with {transport.remote_address} failed: {exc}") from None
    except RemoteProtocolError as exc:  # e.g. a text frame where a handshake message belongs
        await transport.close(1002, "protocol error")
        raise HandshakeError(f"handshake with {transport.remote_address} failed: {exc}") from None
    except LinkError:
        await transport.close(1011, "handshake aborted")
        raise
    except BaseException:  # cancelled (or a bug): never leave the transport open
        await asyncio.shield(transport.close(1011, "handshake aborted"))
        raise
    return Link(transport, hs.result, identity, options)


class Link(Connection):
    """An authenticated, encrypted link to one peer over one transport."""

    def __init__(self, transport: FrameTransport, result: HandshakeResult, identity: Identity, options: LinkOptions):
        self.transport = transport
        self.identity = identity
        self.options = options
        self.peer: NodeId = result.peer
        self.local: NodeId = identity.node_id
        self.codec: Codec = result.codec
        self.version = result.version
        self.cipher = "none" if result.insecure else result.cipher
        self.transport_kind = transport.kind
        self.peer_hello: Hello = result.peer_hello
        self.stats = LinkStats(network_kind=options.network_kind, cost_per_gb=options.cost_per_gb)
        self._writer = RecordWriter(result.send, transport.max_message_size)
        self._reader = RecordReader(result.recv, options.limits.max_frame)
        self.authorised = options.authorize is None or options.authorize(result.peer)
        self._inbox: asyncio.Queue[tuple[Envelope, int] | None] = asyncio.Queue(maxsize=options.recv_queue)
        # flow control: what we may still send (None: the peer does no flow control), what we owe
        self._peer_window = result.peer_hello.window
        self._credit: int | None = self._peer_window or None
        self._credit_changed = asyncio.Condition()
        self._owed = 0
        self._granting: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._pings: dict[int, tuple[float, asyncio.Future[float] | None]] = {}
        self._padded: set[int] = set()  # throughput-probe nonces: their round trips are not RTT samples
        self._control: set[asyncio.Task[None]] = set()
        self._closed = asyncio.Event()
        self.close_error: LinkError | None = None
        self._last_rx = time.monotonic()
        self._tasks = [
            asyncio.create_task(self._read_loop(), name=f"link-read-{self.peer.short()}"),
            asyncio.create_task(self._keepalive_loop(), name=f"link-keepalive-{self.peer.short()}"),
        ]

    def __repr__(self) -> str:
        return f"<Link {self.transport_kind} {self.peer.short()} {self.codec} {self.cipher}>"

    @property
    def authorised(self) -> bool:
        """May the peer use more than pings and peer records? Until it may, its frames are capped
        at ``preauth_frame`` bytes (what this node buffers before it knows it may listen)."""
        return self._authorised

    @authorised.setter
    def authorised(self, value: bool) -> None:
        self._authorised = value
        self._preauth_cap()

    def _preauth_cap(self) -> None:
        """Frames over ``preauth_frame`` from a peer that is neither authorised nor expected by a
        service (a payload's parent, a round's child) are dropped unread, not buffered."""
        expects = self.options.expects
        open_to = self._authorised or (expects is not None and expects(self.peer))
        self._reader.discard_over = 0 if open_to else self.options.preauth_frame

    @property
    def max_message_size(self) -> int:
        return self.transport.max_message_size

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    async def wait_closed(self) -> None:
        await self._closed.wait()

    # -- sending -------------------------------------------------------------------------

    async def send(self, env: Envelope) -> None:
        if self.closed:
            raise self.close_error or LinkClosed(f"link to {self.peer} is closed")
        if env.proof is None and env.source == self.local and env.destination not in (None, self.peer):
            env = prove_origin(env, self.identity)  # a relay carries it on: prove who sent it
        frame = encode(env, self.codec)
        if self._peer_window and len(frame) > self._peer_window:
            raise EncodeError(
                f"{type(env.body).__name__} frame of {len(frame)} bytes is larger than {self.peer.short()}'s "
                f"flow-control window ({self._peer_window} bytes): send it as a stream or a payload"
            )
        if self._credit is not None and not isinstance(env.body, _NO_CREDIT):
            await self._take_credit(len(frame))
        await self._send_frame(frame)
        self.stats.sent_by_type[type(env.body).__name__] += len(frame)

    async def _take_credit(self, n: int) -> None:
        # a frame goes once half a window is free (the credit may then go below zero): the peer
        # returns credit in quarter windows, so waiting for a whole window could wait forever
        need = min(n, self._peer_window // 2)
        async with self._credit_changed:
            if (self._credit or 0) < need:
                self.stats.credit_waits += 1
                await self._credit_changed.wait_for(lambda: self.closed or (self._credit or 0) >= need)
            if self.closed:
                raise self.close_error or LinkClosed(f"link to {self.peer} is closed")
            assert self._credit is not None
            self._credit -= n

    def _consumed(self, n: int) -> None:
        """The application took ``n`` frame bytes: return credit in batches of a quarter window."""
        if not self.options.window:
            return
        self._owed += n
        if self._owed >= self.options.window // 4 and self._granting is None and not self.closed:
            self._granting = asyncio.create_task(self._grant())

    async def _grant(self) -> None:
        try:
            while self._owed > 0 and not self.closed:
                owed, self._owed = self._owed, 0
                await self.send(Envelope(Credit(owed), self.local, destination=self.peer))
        except (LinkError, EncodeError):
            pass
        finally:
            self._granting = None

    async def _send_frame(self, frame: bytes) -> None:
        async with self._send_lock:
            for message in self._writer.pack(frame):
                try:
                    await self.transport.send(message)
                except LinkError as exc:
                    await self._shutdown(exc, send_close=False)
                    raise
                except asyncio.CancelledError:
                    # the record stream now holds part of a frame (and the cipher's nonce moved on):
                    # nothing more can be sent on it, so close the link rather than corrupt it
                    err = LinkClosed(f"link to {self.peer}: a send was cancelled in the middle of a frame")
                    self._broken = asyncio.ensure_future(self._shutdown(err, send_close=False))
                    raise
                self.stats.bytes_sent += len(message)
            self.stats.frames_sent += 1

    def _send_control(self, body: Ping | Pong | Error | Close, reply_to: int | None = None) -> None:
        """Send a small control message without blocking the reader (bounded)."""
        if len(self._control) >= _MAX_CONTROL_TASKS or self.closed:
            return
        env = Envelope(body, self.local, destination=self.peer, reply_to=reply_to)

        async def run() -> None:
            with contextlib.suppress(LinkError, EncodeError):
                await self.send(env)

        task = asyncio.create_task(run())
        self._control.add(task)
        task.add_done_callback(self._control.discard)

    @property
    def idle_seconds(self) -> float:
        """Seconds since anything arrived on this link (a sign of life of the peer)."""
        return time.monotonic() - self._last_rx

    async def ping(self, timeout: float = 5.0, *, padding: int = 0) -> float:
        """Round-trip time to the peer in milliseconds.

        A plain ping feeds the RTT EWMA; one with ``padding`` filler bytes (a
        throughput probe) does not, since its time includes the transfer.
        """
        nonce = secrets.randbits(64)
        fut: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[nonce] = (time.monotonic(), fut)
        if padding:
            self._padded.add(nonce)
        try:
            await self.send(Envelope(Ping(nonce, bytes(padding)), self.local, destination=self.peer))
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            self.stats.failures += 1
            raise LinkTimeout(f"no Pong from {self.peer} within {timeout}s") from None
        finally:
            self._pings.pop(nonce, None)
            self._padded.discard(nonce)
            if fut.done() and not fut.cancelled():
                fut.exception()  # a close failed it while the send raised: retrieved, not left to the GC

    async def probe(self, sample_bytes: int = 256 * 1024, timeout: float = 10.0) -> tuple[float, float]:
        """Measure the link: (RTT in ms, throughput in bytes/s from one padded round trip).

        The throughput is ``sample_bytes`` over the extra time the padded ping
        took beyond a plain one (at least 1 us), a lower bound of the capacity.
        """
        rtt = await self.ping(timeout)
        big = await self.ping(timeout, padding=sample_bytes)
        return rtt, sample_bytes / max((big - rtt) / 1000.0, 1e-6)

    # -- receiving -----------------------------------------------------------------------

    async def recv(self) -> Envelope:
        if self.closed and self._inbox.empty():
            raise self.close_error or LinkClosed(f"link to {self.peer} is closed")
        item = await self._inbox.get()
        if item is None:
            self._inbox.put_nowait(None)  # wake other readers too
            raise self.close_error or LinkClosed(f"link to {self.peer} is closed")
        env, size = item
        self._consumed(size)
        return env

    async def _read_loop(self) -> None:
        try:
            while True:
                message = await self.transport.recv()
                begun, dropped = self._reader.pending, self._reader.discarded
                if not self._authorised and begun == 0:
                    self._preauth_cap()  # between frames: whether a service now expects this peer
                self.stats.bytes_received += len(message)
                for frame in self._reader.feed(message):
                    self.stats.frames_received += 1
                    size = len(frame)
                    env = self._decode(frame)  # the view is valid until the next frame
                    if env is None:
                        self._consumed(size)
                    else:
                        self._last_rx = time.monotonic()  # a sign of life: a frame that decodes
                        await self._dispatch(env, size)
                if self._reader.pending > begun:  # a large frame on its way: life too (empty records are not)
                    self._last_rx = time.monotonic()
                if self._reader.discarded > dropped:
                    self.stats.refused += 1
                    cap = self.options.preauth_frame
                    if self.options.on_limit is not None:  # counted and logged (once a minute) by the node
                        self.options.on_limit("preauth_frame_bytes", self.peer, f"a frame over {cap} bytes dropped")
                    else:
                        peer_log.warning("link %s: dropped a frame over %d bytes", self.peer.short(), cap)
                    self._send_control(Error(ErrorCode.QUOTA, f"limit preauth_frame_bytes: frames over {cap} bytes "
                                             "are dropped until this node authorises you"))  # fmt: skip
        except LinkError as exc:
            await self._shutdown(exc)
        except RemoteProtocolError as exc:
            peer_log.warning("link %s: dropping peer %s: %s", self.transport.remote_address, self.peer, exc)
            await self._shutdown(LinkClosed(f"peer broke the record protocol: {exc}"), code=1002)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug: close the link, keep the node
            log.exception("link %s: reader failed", self.peer)
            await self._shutdown(LinkError(f"internal error: {exc}"), code=1011)

    def _decode(self, frame: memoryview) -> Envelope | None:
        try:
            return decode(frame, self.codec, self.options.limits)
        except DecodeError as exc:
            peer_log.warning("link %s: undecodable frame from %s: %s", self.transport.remote_address, self.peer, exc)
            self._send_control(Error(ErrorCode.DECODE, str(exc)))
            return None

    async def _dispatch(self, env: Envelope, size: int) -> None:
        body = env.body
        if isinstance(body, Credit):
            if self._credit is not None:
                async with self._credit_changed:
                    self._credit += body.bytes
                    self._credit_changed.notify_all()
            return
        if isinstance(body, Ping):
            self._send_control(Pong(body.nonce), reply_to=env.msg_id)
            return
        if isinstance(body, Pong):
            entry = self._pings.pop(body.nonce, None)
            if entry is not None:
                ms = (time.monotonic() - entry[0]) * 1000
                if body.nonce not in self._padded:
                    self.stats.add_rtt(ms)
                self.stats.failures = 0
                if entry[1] is not None and not entry[1].done():
                    entry[1].set_result(ms)
            return
        if isinstance(body, Close):
            await self._shutdown(LinkClosed(f"peer closed the link ({body.code}: {body.reason})"), send_close=False)
            return
        if not self.authorised:
            if env.source != self.peer:
                reason = "unauthorised peers may only speak for themselves"
            elif type(body).__name__ not in UNAUTHORISED_ALLOWED and not (
                self.options.admit is not None and self.options.admit(self.peer, body)
            ):
                reason = f"{self.peer} is not authorised to send {type(body).__name__}"
            else:
                reason = ""
            if reason:
                self._consumed(size)
                self._refuse(env, reason)
                return
        await self._inbox.put((env, size))

    def _refuse(self, env: Envelope, reason: str) -> None:
        self.stats.refused += 1
        peer_log.warning("link %s: refused %s", self.peer.short(), reason)
        self._send_control(Error(ErrorCode.UNAUTHORIZED, reason), reply_to=env.msg_id)

    # -- health --------------------------------------------------------------------------

    async def _keepalive_loop(self) -> None:
        opts = self.options
        tick = min(opts.keepalive, opts.dead_after / 3)
        last_sent, last_recv, last_t = self.stats.bytes_sent, self.stats.bytes_received, time.monotonic()
        last_ping = 0.0
        try:
            while not self.closed:
                await asyncio.sleep(tick)
                now = time.monotonic()
                self.stats.add_rates(
                    self.stats.bytes_sent - last_sent, self.stats.bytes_received - last_recv, now - last_t
                )
                last_sent, last_recv, last_t = self.stats.bytes_sent, self.stats.bytes_received, now
                if now - self._last_rx > opts.dead_after:
                    peer_log.warning("link %s: dead (nothing for %.1fs)", self.peer, now - self._last_rx)
                    await self._shutdown(
                        LinkTimeout(f"link to {self.peer} dead: nothing received for {opts.dead_after}s")
                    )
                    return
                if now - self._last_rx >= opts.keepalive and now - last_ping >= opts.keepalive:
                    if any(f is None for _, f in self._pings.values()):
                        self.stats.failures += 1
                    nonce = secrets.randbits(64)
                    self._pings = {k: v for k, v in self._pings.items() if v[1] is not None}
                    self._pings[nonce] = (now, None)
                    last_ping = now
                    self._send_control(Ping(nonce))
        except asyncio.CancelledError:
            pass

    # -- closing -------------------------------------------------------------------------

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self._shutdown(LinkClosed(f"link to {self.peer} closed locally"), code=code, reason=reason)

    async def _shutdown(self, error: LinkError, code: int = 1000, reason: str = "", send_close: bool = True) -> None:
        if self.closed:
            return
        self._closed.set()
        self.close_error = error
        # wake the application first: a waiting reader, pending pings. A full queue has no
        # waiting reader, and what it holds is still delivered before recv() reports the close.
        with contextlib.suppress(asyncio.QueueFull):
            self._inbox.put_nowait(None)
        for _, fut in self._pings.values():
            if fut is not None and not fut.done():
                fut.set_exception(error)
        async with self._credit_changed:  # wake senders waiting for credit
            self._credit_changed.notify_all()
        if send_close and not self.transport.closed and not isinstance(error, LinkTimeout):
            try:
                frame = encode(Envelope(Close(code, reason[:120]), self.local, destination=self.peer), self.codec)
                async with asyncio.timeout(_CLOSE_TIMEOUT):
                    await self._send_frame(frame)
            except (TimeoutError, EdgeAgentError):
                pass
        current = asyncio.current_task()
        for task in [*self._tasks, *self._control]:
            if task is not current:
                task.cancel()
        await self.transport.close(code, reason)
