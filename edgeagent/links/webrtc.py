"""WebRTC transport: an aiortc data channel as a FrameTransport, negotiated over an existing link.

aiortc is imported only when a peer connection is made (``rtc_dial``/``rtc_accept``),
never by importing this module or ``edgeagent.links``: a relay-only agent stays light.

Negotiation (offerer = dialler = Noise initiator)::

    dialler                         signalling (a link, via the domain)        acceptor
    createDataChannel("edgeagent")
    Offer(session, sdp, sig) ------------------------------------------------> verify sig against the sender's NodeId
                                                                              setRemoteDescription, createAnswer
    verify sig against expected_peer <----------------------- Answer(session, sdp, sig)
    setRemoteDescription
            ICE + DTLS + SCTP, channel opens (Candidate messages are applied if any arrive)
    establish(initiator=True) ======== Noise XX over the data channel ======== establish(initiator=False)

``sig`` is the sender's Ed25519 signature over ``b"edgeagent-dtls-fingerprint:"``
followed by every ``a=fingerprint:`` value of its SDP (see :func:`fingerprint_of`),
so a signalling relay cannot substitute its own DTLS certificate; the Noise
handshake then binds the link itself to both NodeIds, as on every transport.
aiortc gathers all candidates before it returns a local description, so they
travel inside the SDP; incoming ``Candidate`` messages are still honoured.

The ICE configuration is built only from ``ice_servers`` (default: none, so no
STUN server is ever contacted unless configured). Note that aioice ignores
127.0.0.1: two peers on one host need another local address.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from ..exceptions import HandshakeError, LinkClosed, LinkError, LinkTimeout, RemoteProtocolError, SignatureError
from ..identity import Identity, verify
from ..wire import Answer, Candidate, Envelope, NodeId, Offer
from .base import Connection, FrameTransport, LinkOptions
from .link import Link, establish

if TYPE_CHECKING:
    from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection

__all__ = [
    "CHANNEL_LABEL",
    "MAX_MESSAGE",
    "IceServer",
    "QueueSignaller",
    "RtcTransport",
    "SignalBody",
    "Signaller",
    "fingerprint_of",
    "link_signaller",
    "max_message_size_of",
    "rtc_accept",
    "rtc_dial",
    "sign_sdp",
    "verify_sdp",
]

log = logging.getLogger(__name__)

#: aiortc's SCTP limit is 262,144 bytes per message; stay a little below it
SCTP_MAX_MESSAGE: Final = 262_144
MAX_MESSAGE: Final = SCTP_MAX_MESSAGE - 1024
#: RFC 8841 section 6: the size to assume when the SDP has no a=max-message-size
DEFAULT_REMOTE_MAX_MESSAGE: Final = 65_536
CHANNEL_LABEL: Final = "edgeagent"
HIGH_WATER: Final = 1 << 20  # send() waits while more than this is buffered ...
LOW_WATER: Final = 256 << 10  # ... until the channel drains to this
RECV_BUFFER: Final = 16 << 20  # bytes received but not yet read before the link is dropped
CLOSE_TIMEOUT: Final = 2.0
CONNECT_TIMEOUT: Final = 30.0
_SIG_PREFIX: Final = b"edgeagent-dtls-fingerprint:"
_MAX_EARLY_CANDIDATES: Final = 64

SignalBody = Offer | Answer | Candidate


# -- signalling helpers (pure) ---------------------------------------------------------------


def fingerprint_of(sdp: str) -> str:
    """The DTLS fingerprint(s) of an SDP: every ``a=fingerprint:`` value, normalised, in order.

    Each value is ``"<hash> <HEX:HEX:...>"`` with the hash name lower-cased and the
    hex upper-cased; several lines (aiortc writes sha-256, sha-384 and sha-512)
    are joined with ``"\\n"``. An SDP with one line (browsers) gives that value.
    Raises ``HandshakeError`` when the SDP has none.
    """
    values: list[str] = []
    for raw in sdp.splitlines():
        line = raw.strip()
        if not line.startswith("a=fingerprint:"):
            continue
        parts = line[len("a=fingerprint:") :].split()
        if len(parts) != 2:
            raise HandshakeError(f"malformed fingerprint line {line[:120]!r}")
        values.append(f"{parts[0].lower()} {parts[1].upper()}")
    if not values:
        raise HandshakeError("SDP has no DTLS fingerprint")
    return "\n".join(values)


def sign_sdp(identity: Identity, sdp: str) -> bytes:
    """``identity``'s signature binding the DTLS fingerprint of ``sdp`` to its NodeId."""
    return identity.sign(_SIG_PREFIX + fingerprint_of(sdp).encode())


def verify_sdp(node_id: NodeId, sdp: str, signature: bytes) -> None:
    """Check that ``node_id`` signed the fingerprint of ``sdp``; raises ``HandshakeError``."""
    fingerprint = fingerprint_of(sdp)
    if not signature:
        raise HandshakeError(f"SDP from {node_id} carries no fingerprint signature")
    try:
        verify(node_id, _SIG_PREFIX + fingerprint.encode(), signature)
    except SignatureError:
        raise HandshakeError(f"DTLS fingerprint is not signed by {node_id}") from None


def max_message_size_of(sdp: str) -> int:
    """The largest data-channel message the author of ``sdp`` accepts, capped at :data:`MAX_MESSAGE`.

    ``a=max-message-size:0`` means "any size"; no attribute means 64 KiB (RFC 8841).
    """
    for raw in sdp.splitlines():
        line = raw.strip()
        if line.startswith("a=max-message-size:"):
            try:
                size = int(line.split(":", 1)[1])
            except ValueError:
                raise HandshakeError(f"malformed {line[:80]!r}") from None
            if size < 0:
                raise HandshakeError(f"malformed {line[:80]!r}")
            return MAX_MESSAGE if size == 0 else min(size, MAX_MESSAGE)
    return DEFAULT_REMOTE_MAX_MESSAGE


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server (``urls`` like ``"stun:host:3478"`` or ``"turn:host?transport=udp"``)."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None


def _rtc_configuration(ice_servers: Iterable[str | IceServer]) -> RTCConfiguration:
    from aiortc import RTCConfiguration, RTCIceServer

    servers: list[RTCIceServer] = []
    for server in ice_servers:
        if isinstance(server, str):
            servers.append(RTCIceServer(urls=server))
        else:
            servers.append(RTCIceServer(urls=list(server.urls), username=server.username, credential=server.credential))
    # an explicit list, even empty: aiortc's default (None) contacts a public STUN server
    return RTCConfiguration(iceServers=servers)


# -- signalling channel ----------------------------------------------------------------------


class Signaller(Protocol):
    """Carries one negotiation's Offer/Answer/Candidate bodies to and from the remote peer."""

    async def send(self, body: SignalBody) -> None: ...

    async def recv(self) -> SignalBody: ...


class QueueSignaller:
    """A :class:`Signaller` whose incoming side the caller feeds (from its link dispatcher).

    ``send`` calls the given coroutine function; :meth:`feed` queues a received
    body (at most ``maxsize``; a flood beyond that is dropped and logged);
    :meth:`close` makes a waiting ``recv`` raise ``LinkClosed``.
    """

    def __init__(self, send: Callable[[SignalBody], Awaitable[None]], maxsize: int = 32) -> None:
        self._send = send
        self._queue: asyncio.Queue[SignalBody | None] = asyncio.Queue(maxsize)
        self._closed = False
        self.dropped = 0

    async def send(self, body: SignalBody) -> None:
        if self._closed:
            raise LinkClosed("signaller closed")
        await self._send(body)

    async def recv(self) -> SignalBody:
        if self._closed and self._queue.empty():
            raise LinkClosed("signaller closed")
        body = await self._queue.get()
        if body is None:
            raise LinkClosed("signaller closed")
        return body

    def feed(self, body: SignalBody) -> None:
        if self._closed:
            return
        try:
            self._queue.put_nowait(body)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("signaller: dropped a %s (queue full)", type(body).__name__)

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


def link_signaller(link: Connection, peer: NodeId, maxsize: int = 32) -> QueueSignaller:
    """A signaller that sends through ``link`` (e.g. to the domain) addressed to ``peer``.

    Feed it the Offer/Answer/Candidate bodies whose envelopes come from ``peer``.
    """

    async def send(body: SignalBody) -> None:
        await link.send(Envelope(body, link.local, destination=peer))

    return QueueSignaller(send, maxsize)


# -- the transport ---------------------------------------------------------------------------


class RtcTransport(FrameTransport):
    """An ordered, reliable RTCDataChannel as a FrameTransport; owns its RTCPeerConnection.

    Listeners are attached at construction, so build it as soon as the channel
    exists (before it opens) and no message is missed. ``send`` waits while more
    than ``high_water`` bytes are buffered in the channel. aiortc cannot pause
    its receiver, so received messages wait in a queue bounded to
    ``recv_buffer`` bytes; a peer that overruns it loses the link (``LinkError``).
    """

    kind = "webrtc"

    def __init__(
        self,
        pc: RTCPeerConnection,
        channel: RTCDataChannel,
        *,
        remote_address: str = "webrtc",
        max_message_size: int = MAX_MESSAGE,
        high_water: int = HIGH_WATER,
        low_water: int = LOW_WATER,
        recv_buffer: int = RECV_BUFFER,
    ) -> None:
        from aiortc.exceptions import InvalidStateError

        if not channel.ordered or channel.maxRetransmits is not None or channel.maxPacketLifeTime is not None:
            raise ValueError("RtcTransport needs an ordered, reliable data channel")
        if not 0 <= low_water < high_water:
            raise ValueError("need 0 <= low_water < high_water")
        self._pc = pc
        self._channel = channel
        self._invalid_state: type[Exception] = InvalidStateError
        self.remote_address = remote_address
        self.max_message_size = max_message_size
        self._high_water = high_water
        self._recv_buffer = recv_buffer
        self._queue: deque[bytes | str] = deque()
        self._queued = 0
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._opened = asyncio.Event()
        self._channel_closed = asyncio.Event()
        self._error: LinkError | None = None
        self._closing = False
        self._close_task: asyncio.Task[None] | None = None
        channel.bufferedAmountLowThreshold = low_water
        channel.on("open", self._on_open)
        channel.on("message", self._on_message)
        channel.on("close", self._on_channel_close)
        channel.on("bufferedamountlow", self._writable.set)
        pc.on("connectionstatechange", self._on_state)
        if channel.readyState == "open":
            self._opened.set()
        elif channel.readyState in ("closing", "closed"):
            self._on_channel_close()

    # -- events (called by aiortc on the loop) --------------------------------------------

    def _on_open(self) -> None:
        self._opened.set()

    def _on_message(self, message: bytes | str) -> None:
        if self._error is not None:
            return
        self._queue.append(message)
        self._queued += len(message)
        self._readable.set()
        if self._queued > self._recv_buffer:
            self._fail(LinkError(f"{self.remote_address}: receive buffer overrun ({self._queued} bytes unread)"))
            self._queue.clear()
            self._queued = 0
            self._start_close()

    def _on_channel_close(self) -> None:
        self._channel_closed.set()
        self._fail(LinkClosed(f"data channel to {self.remote_address} closed"))

    def _on_state(self) -> None:
        state = self._pc.connectionState
        if state == "failed":
            self._fail(LinkError(f"WebRTC connection to {self.remote_address} failed"))
            self._start_close()
        elif state == "closed":
            self._fail(LinkClosed(f"WebRTC connection to {self.remote_address} closed"))

    def _fail(self, error: LinkError) -> None:
        if self._error is None:
            self._error = error
        self._readable.set()
        self._writable.set()
        self._opened.set()

    def _start_close(self) -> None:
        if self._close_task is None and not self._closing:
            self._close_task = asyncio.ensure_future(self.close())

    # -- FrameTransport -------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._error is not None or self._channel.readyState in ("closing", "closed")

    @property
    def buffered_amount(self) -> int:
        """Bytes handed to the channel but not yet given to SCTP."""
        return self._channel.bufferedAmount

    async def wait_open(self) -> None:
        """Wait until the channel is open; raises the link error if it fails first."""
        await self._opened.wait()
        if self._error is not None:
            raise self._error

    async def send(self, message: bytes | bytearray) -> None:
        if self._error is not None:
            raise self._error
        if len(message) > self.max_message_size:
            raise ValueError(f"message of {len(message)} bytes exceeds {self.max_message_size}")
        channel = self._channel
        while channel.bufferedAmount > self._high_water:
            # "bufferedamountlow" fires when the amount falls to the low-water mark
            self._writable.clear()
            await self._writable.wait()
            if self._error is not None:
                raise self._error
        try:
            channel.send(message if isinstance(message, bytes) else bytes(message))  # aiortc takes bytes only
        except self._invalid_state:
            raise self._error or LinkClosed(f"data channel to {self.remote_address} is not open") from None
        except (ValueError, ConnectionError) as exc:
            raise LinkError(f"data channel to {self.remote_address}: {exc}") from None

    async def recv(self) -> bytes:
        while not self._queue:
            if self._error is not None:
                raise self._error
            self._readable.clear()
            await self._readable.wait()
        message = self._queue.popleft()
        self._queued -= len(message)
        if isinstance(message, str):
            raise RemoteProtocolError("text message on a binary data channel")
        return message

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel (after what is already queued), then the peer connection."""
        if self._closing:
            task = self._close_task
            if task is not None and task is not asyncio.current_task():
                await asyncio.shield(task)
            return
        self._closing = True
        channel = self._channel
        if channel.readyState in ("connecting", "open"):
            # a stream reset follows the queued messages, so a final Close frame is delivered
            with contextlib.suppress(Exception):
                channel.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._channel_closed.wait(), CLOSE_TIMEOUT)
        self._fail(LinkClosed(f"data channel to {self.remote_address} closed locally"))
        await _close_pc(self._pc)


async def _close_pc(pc: RTCPeerConnection) -> None:
    with contextlib.suppress(Exception):
        await asyncio.wait_for(pc.close(), CLOSE_TIMEOUT * 2)


# -- negotiation -----------------------------------------------------------------------------


class _Watch:
    """Fails fast when the peer connection fails during negotiation."""

    def __init__(self, pc: RTCPeerConnection, peer: str) -> None:
        self.pc = pc
        self.failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.peer = peer
        pc.on("connectionstatechange", self._on_state)

    def _on_state(self) -> None:
        if self.pc.connectionState in ("failed", "closed") and not self.failed.done():
            self.failed.set_exception(LinkError(f"WebRTC connection to {self.peer} {self.pc.connectionState}"))

    async def until(self, aw: Awaitable[Any]) -> None:
        """Wait for ``aw`` unless the connection fails first."""
        task = asyncio.ensure_future(aw)
        try:
            done, _ = await asyncio.wait({task, self.failed}, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                task.result()
            else:
                self.failed.result()
        finally:
            task.cancel()

    def close(self) -> None:
        with contextlib.suppress(KeyError):
            self.pc.remove_listener("connectionstatechange", self._on_state)
        if not self.failed.done():
            self.failed.cancel()
        elif not self.failed.cancelled():
            self.failed.exception()  # retrieved: no "never retrieved" warning


async def _add_candidate(pc: RTCPeerConnection, body: Candidate) -> None:
    from aiortc.sdp import candidate_from_sdp

    line = body.candidate.strip()
    if not line:
        with contextlib.suppress(Exception):
            await pc.addIceCandidate(None)
        return
    line = line.removeprefix("a=").removeprefix("candidate:")
    try:
        candidate = candidate_from_sdp(line)
    except (AssertionError, ValueError, IndexError):
        log.warning("ignoring a malformed ICE candidate %r", body.candidate[:120])
        return
    candidate.sdpMid = body.sdp_mid or None
    candidate.sdpMLineIndex = body.sdp_mline_index
    try:
        await pc.addIceCandidate(candidate)
    except (ValueError, OSError) as exc:
        log.warning("ignoring ICE candidate %r: %s", body.candidate[:120], exc)


async def _apply_candidates(pc: RTCPeerConnection, signal: Signaller, session: str) -> None:
    """Apply trickled candidates of ``session`` until cancelled."""
    while True:
        body = await signal.recv()
        if isinstance(body, Candidate) and body.session_id == session:
            await _add_candidate(pc, body)
        else:
            log.debug("signalling: ignoring %s for session %r", type(body).__name__, body.session_id)


async def _set_remote(pc: RTCPeerConnection, sdp: str, kind: str) -> None:
    from aiortc import RTCSessionDescription

    try:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type=kind))
    except (ValueError, AssertionError, IndexError, KeyError) as exc:
        raise HandshakeError(f"unusable SDP {kind}: {exc}") from None


def _local_sdp(pc: RTCPeerConnection) -> str:
    desc = pc.localDescription
    if desc is None:
        raise LinkError("no local description")
    return desc.sdp


async def _negotiate(
    pc: RTCPeerConnection, watch: _Watch, peer: NodeId, timeout: float, steps: Awaitable[RtcTransport]
) -> RtcTransport:
    """Run the negotiation ``steps`` under ``timeout``; on any failure close ``pc`` and raise a LinkError."""
    from aiortc.exceptions import InvalidAccessError, InvalidStateError

    try:
        async with asyncio.timeout(timeout):
            return await steps
    except TimeoutError:
        await _close_pc(pc)
        raise LinkTimeout(f"WebRTC negotiation with {peer} timed out after {timeout}s") from None
    except LinkError:
        await _close_pc(pc)
        raise
    except (InvalidAccessError, InvalidStateError, OSError) as exc:
        await _close_pc(pc)
        raise LinkError(f"WebRTC negotiation with {peer} failed: {exc}") from None
    except BaseException:
        await asyncio.shield(_close_pc(pc))
        raise
    finally:
        watch.close()


async def _establish(
    transport: RtcTransport, identity: Identity, options: LinkOptions, initiator: bool, peer: NodeId
) -> Link:
    """The link handshake over the open channel; the peer connection is closed if it does not finish."""
    try:
        return await establish(transport, identity, options, initiator=initiator, expected_peer=peer)
    except BaseException:  # establish closes the transport on its errors, not when cancelled
        await asyncio.shield(transport.close())
        raise


async def rtc_dial(
    identity: Identity,
    signal: Signaller,
    options: LinkOptions | None = None,
    *,
    expected_peer: NodeId,
    ice_servers: Sequence[str | IceServer] = (),
    session_id: str | None = None,
    timeout: float = CONNECT_TIMEOUT,
) -> Link:
    """Offer a data channel to ``expected_peer`` through ``signal`` and run the link handshake as initiator.

    ``timeout`` bounds the negotiation up to an open channel; the Noise handshake
    then has ``options.handshake_timeout``. Raises ``HandshakeError`` (bad or
    unsigned answer), ``LinkTimeout`` or ``LinkError``; the peer connection is
    closed on every failure.
    """
    from aiortc import RTCPeerConnection

    options = options or LinkOptions()
    session = session_id or secrets.token_hex(8)
    name = f"webrtc:{expected_peer.short()}"
    pc = RTCPeerConnection(_rtc_configuration(ice_servers))
    watch = _Watch(pc, name)

    async def steps() -> RtcTransport:
        channel = pc.createDataChannel(CHANNEL_LABEL, ordered=True)
        transport = RtcTransport(pc, channel, remote_address=name)
        await pc.setLocalDescription(await pc.createOffer())
        sdp = _local_sdp(pc)
        await signal.send(Offer(session, sdp, sign_sdp(identity, sdp)))
        early: list[Candidate] = []
        while True:
            body = await signal.recv()
            if body.session_id != session:
                log.debug("signalling: ignoring %s for session %r", type(body).__name__, body.session_id)
            elif isinstance(body, Candidate):
                if len(early) < _MAX_EARLY_CANDIDATES:
                    early.append(body)
            elif isinstance(body, Answer):
                break
        verify_sdp(expected_peer, body.sdp, body.fingerprint_sig)
        transport.max_message_size = max_message_size_of(body.sdp)
        await _set_remote(pc, body.sdp, "answer")
        for cand in early:
            await _add_candidate(pc, cand)
        pump = asyncio.create_task(_apply_candidates(pc, signal, session))
        try:
            await watch.until(transport.wait_open())
        finally:
            pump.cancel()
        return transport

    transport = await _negotiate(pc, watch, expected_peer, timeout, steps())
    return await _establish(transport, identity, options, True, expected_peer)


async def rtc_accept(
    identity: Identity,
    offer: Envelope | Offer,
    signal: Signaller,
    options: LinkOptions | None = None,
    *,
    expected_peer: NodeId | None = None,
    ice_servers: Sequence[str | IceServer] = (),
    timeout: float = CONNECT_TIMEOUT,
) -> Link:
    """Answer an Offer and run the link handshake as responder.

    ``offer`` is the Offer's Envelope (its ``source`` is the signer to check) or
    a bare Offer with ``expected_peer`` naming the signer. The offer's
    fingerprint signature is verified before its SDP is used, and the Noise
    handshake must prove the same NodeId.
    """
    from aiortc import RTCPeerConnection

    if isinstance(offer, Envelope):
        if not isinstance(offer.body, Offer):
            raise TypeError(f"expected an Offer envelope, got {type(offer.body).__name__}")
        if expected_peer is not None and offer.source != expected_peer:
            raise HandshakeError(f"offer comes from {offer.source}, not {expected_peer}")
        signer: NodeId = offer.source
        body = offer.body
    else:
        if expected_peer is None:
            raise TypeError("a bare Offer needs expected_peer (the NodeId that signed it)")
        signer, body = expected_peer, offer
    verify_sdp(signer, body.sdp, body.fingerprint_sig)
    options = options or LinkOptions()
    name = f"webrtc:{signer.short()}"
    max_size = max_message_size_of(body.sdp)
    pc = RTCPeerConnection(_rtc_configuration(ice_servers))
    watch = _Watch(pc, name)
    arrived: asyncio.Future[RtcTransport] = asyncio.get_running_loop().create_future()

    def on_datachannel(channel: RTCDataChannel) -> None:
        # runs inside aiortc's receive path: attach listeners before any message can arrive
        if arrived.done() or channel.label != CHANNEL_LABEL:
            log.warning("%s: closing unexpected data channel %r", name, channel.label)
            channel.close()
            return
        try:
            arrived.set_result(RtcTransport(pc, channel, remote_address=name, max_message_size=max_size))
        except ValueError as exc:
            arrived.set_exception(HandshakeError(f"{name}: {exc}"))
            channel.close()

    async def steps() -> RtcTransport:
        pc.on("datachannel", on_datachannel)
        pump: asyncio.Task[None] | None = None
        try:
            await _set_remote(pc, body.sdp, "offer")
            # candidates apply only once the remote description exists
            pump = asyncio.create_task(_apply_candidates(pc, signal, body.session_id))
            await pc.setLocalDescription(await pc.createAnswer())
            sdp = _local_sdp(pc)
            await signal.send(Answer(body.session_id, sdp, sign_sdp(identity, sdp)))
            await watch.until(asyncio.shield(arrived))
            transport = arrived.result()
            await watch.until(transport.wait_open())
            return transport
        finally:
            if pump is not None:
                pump.cancel()
            if not arrived.done():
                arrived.cancel()

    transport = await _negotiate(pc, watch, signer, timeout, steps())
    return await _establish(transport, identity, options, False, signer)
