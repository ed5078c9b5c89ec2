"""The Connection interface and the transport interface below it.

A :class:`FrameTransport` is one real message channel (a WebSocket, a WebRTC
data channel, an in-memory pipe): it moves opaque messages and knows its size
limit. A :class:`Connection` is the seed's *Connection*: one authenticated,
encrypted link to one next hop, moving Envelopes, with live stats. The single
implementation, :class:`edgeagent.links.link.Link`, runs over any transport.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from ..wire import Codec, Envelope, Hello, Limits, NodeId

__all__ = ["Codec", "Connection", "FrameTransport", "LinkOptions", "LinkStats"]

RTT_ALPHA: Final = 0.125  # as TCP's smoothed RTT
RATE_ALPHA: Final = 0.3


class FrameTransport(abc.ABC):
    """One bidirectional, reliable, ordered message channel.

    ``send`` waits while the transport's buffer is full (backpressure);
    ``recv`` raises :class:`~edgeagent.exceptions.LinkClosed` once the channel
    is closed. Implementations convert their library's exceptions to
    edgeagent's at this boundary.
    """

    kind: str = "abstract"
    max_message_size: int = 1 << 20
    remote_address: str = ""
    local_address: str = ""  # "ip:port" of this end's socket, where the transport has one

    @abc.abstractmethod
    async def send(self, message: bytes | bytearray) -> None:
        """Send one message; waits while the transport is full."""

    @abc.abstractmethod
    async def recv(self) -> bytes:
        """The next message; raises LinkClosed when the channel closes."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the channel (idempotent)."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the channel is closed in either direction."""


@dataclass
class LinkStats:
    """Live figures of one link, fed to routing.

    ``rtt_ms`` is an EWMA (alpha 1/8) of Ping/Pong round trips; ``send_bps`` and
    ``recv_bps`` are EWMAs of the bytes moved per second, sampled each keepalive
    tick; ``failures`` counts consecutive unanswered Pings.
    """

    network_kind: str = "unknown"
    cost_per_gb: float = 0.0
    rtt_ms: float | None = None
    rtt_samples: int = 0
    send_bps: float = 0.0
    recv_bps: float = 0.0
    failures: int = 0
    bytes_sent: int = 0
    bytes_received: int = 0
    frames_sent: int = 0
    frames_received: int = 0
    refused: int = 0
    credit_waits: int = 0
    #: frame bytes sent per message type (what this link's upload is spent on)
    sent_by_type: Counter[str] = field(default_factory=Counter)

    @property
    def cost_per_byte(self) -> float:
        return self.cost_per_gb / 1e9

    def add_rtt(self, ms: float) -> None:
        # the first samples are averaged (alpha 1/n) so one slow first ping does not linger
        self.rtt_samples += 1
        alpha = max(RTT_ALPHA, 1.0 / self.rtt_samples)
        self.rtt_ms = ms if self.rtt_ms is None else (1 - alpha) * self.rtt_ms + alpha * ms

    def add_rates(self, sent: int, received: int, seconds: float) -> None:
        if seconds <= 0:
            return
        self.send_bps = (1 - RATE_ALPHA) * self.send_bps + RATE_ALPHA * sent / seconds
        self.recv_bps = (1 - RATE_ALPHA) * self.recv_bps + RATE_ALPHA * received / seconds


#: messages an authenticated but unauthorised peer may send
UNAUTHORISED_ALLOWED: Final = frozenset({"PeerRecord", "Hello", "Response", "Error"})


@dataclass(frozen=True)
class LinkOptions:
    """How links behave. Config keys (``[link]`` table) use the same names.

    ``codecs``            codecs offered/accepted, preferred first;
    ``cipher``            "auto" (AES-GCM if this CPU has AES instructions, else ChaCha20-Poly1305),
                          "AESGCM" or "ChaChaPoly" — the dialler chooses;
    ``insecure``          plaintext records after the handshake (benchmarks only; both sides must allow it);
    ``handshake_timeout`` seconds a peer may take to complete the handshake;
    ``keepalive``         seconds between Pings on an idle link;
    ``dead_after``        seconds without any frame before the link is declared dead;
    ``recv_queue``        envelopes buffered for the application before reading stops;
    ``window``            frame bytes the peer may have outstanding before it waits for Credit
                          (flow control on every transport; 0 turns it off); a frame larger than the
                          peer's window is refused at the sender (``EncodeError``), never left waiting;
    ``preauth_frame``     largest frame a peer that is not authorised may send (bytes buffered before
                          the authorisation check; larger ones are dropped unread); the ``[limits]``
                          key ``preauth_frame_bytes``;
    ``network_kind``, ``metered``, ``cost_per_gb``: this side's network, told to peers in Hello;
    ``authorize``         predicate: may this NodeId use more than ping and peer records? (None: everyone).
    ``admit``             predicate for a peer ``authorize`` refuses: may it still send this message? (the
                          node's policy table: e.g. a payload's child, for that payload's messages only)
    ``expects``           predicate for a peer ``authorize`` refuses: does a service expect large frames
                          from it now (a payload's parent, a round's child)? Then ``preauth_frame`` does
                          not apply to it
    ``on_limit``          called (limit name, peer, why) when the link refuses something by a limit (the
                          node counts it under ``status --json`` ``limits.refused``)
    """

    codecs: tuple[Codec, ...] = ("cbor", "protobuf")
    cipher: str = "auto"
    insecure: bool = False
    handshake_timeout: float = 10.0
    keepalive: float = 15.0
    dead_after: float = 45.0
    recv_queue: int = 64
    window: int = 16 << 20
    preauth_frame: int = 64 * 1024
    limits: Limits = field(default_factory=Limits)
    network_kind: str = "unknown"
    metered: bool = False
    cost_per_gb: float = 0.0
    role: str = "device"
    listen: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    authorize: Callable[[NodeId], bool] | None = None
    admit: Callable[[NodeId, Any], bool] | None = None
    expects: Callable[[NodeId], bool] | None = None
    on_limit: Callable[[str, NodeId, str], object] | None = None


class Connection(abc.ABC):
    """One authenticated link to one next hop, moving Envelopes."""

    peer: NodeId
    local: NodeId
    codec: Codec
    transport_kind: str
    peer_hello: Hello
    stats: LinkStats
    authorised: bool

    @property
    @abc.abstractmethod
    def max_message_size(self) -> int:
        """The transport's message size limit (frames larger than this are fragmented)."""

    @abc.abstractmethod
    async def send(self, env: Envelope) -> None:
        """Send an envelope; waits while the peer is slow (backpressure)."""

    @abc.abstractmethod
    async def recv(self) -> Envelope:
        """The next envelope for the application; raises LinkClosed when the link ends."""

    @abc.abstractmethod
    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Say Close to the peer (best effort) and close the transport."""

    @property
    @abc.abstractmethod
    def closed(self) -> bool:
        """True once the link is closed."""

    async def __aiter__(self) -> AsyncIterator[Envelope]:
        from ..exceptions import LinkClosed

        while True:
            try:
                yield await self.recv()
            except LinkClosed:
                return
