"""The link handshake (pure): Noise XX bound to NodeIds, with version, codec and cipher negotiation.

Messages (each one transport message):

1. dialler -> listener: ``b"EAL1" | cipher id (1 byte) | Noise msg 1`` whose payload
   is a :class:`HandshakeOffer` (versions, codecs, insecure). The magic and cipher id
   form the Noise prologue, so tampering with them breaks the handshake.
2. listener -> dialler: Noise msg 2 carrying the listener's :class:`HandshakePayload`
   (NodeId, signature over its Noise static key, Hello naming the chosen version
   and codec first).
3. dialler -> listener: Noise msg 3 carrying the dialler's HandshakePayload.

Each side checks the other's signature against the Noise static key the
handshake proved, so the link is bound to both NodeIds; a dialler that expects a
NodeId refuses any other. Payloads are CBOR whatever codec is chosen.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from .. import __version__
from ..exceptions import DecodeError, EdgeAgentError, HandshakeError, SignatureError
from ..identity import Identity, verify
from ..wire import PROTOCOL_VERSION, Codec, Hello, NodeId
from ..wire.cbor import decode_plain, encode_struct
from ..wire.messages.link import HandshakeOffer, HandshakePayload
from ..wire.schema import struct_from_plain
from .base import LinkOptions
from .noise import CIPHERS, CipherState, HandshakeState, has_aes_instructions

__all__ = ["MAGIC", "Handshake", "HandshakeResult"]

MAGIC: Final = b"EAL1"
_SIG_PREFIX: Final = b"edgeagent-noise-static-key:"
_CIPHER_IDS: Final = {"AESGCM": 0, "ChaChaPoly": 1}
_SUPPORTED_CODECS: Final[tuple[Codec, ...]] = ("cbor", "protobuf")
_MAX_PAYLOAD_DEPTH: Final = 1000


@dataclass(frozen=True)
class HandshakeResult:
    peer: NodeId
    peer_hello: Hello
    codec: Codec
    version: int
    cipher: str
    insecure: bool
    send: CipherState | None  # None on an insecure link
    recv: CipherState | None
    handshake_hash: bytes


def _choose_cipher(option: str) -> str:
    if option == "auto":
        return "AESGCM" if has_aes_instructions() else "ChaChaPoly"
    if option not in CIPHERS:
        raise HandshakeError(f"unknown cipher {option!r}; use auto, AESGCM or ChaChaPoly")
    return option


def _decode_struct(cls: type, data: bytes) -> object:
    try:
        return struct_from_plain(cls, decode_plain(data), _MAX_PAYLOAD_DEPTH)
    except DecodeError as exc:
        raise HandshakeError(f"bad handshake payload: {exc}") from None


class Handshake:
    """One side of a link handshake. The dialler calls :meth:`start`; both feed
    every received message to :meth:`receive`, send what it returns, and stop
    when :attr:`result` is set. Any failure raises ``HandshakeError``."""

    def __init__(
        self,
        identity: Identity,
        initiator: bool,
        options: LinkOptions,
        expected_peer: NodeId | None = None,
    ) -> None:
        self.identity = identity
        self.initiator = initiator
        self.options = options
        self.expected_peer = expected_peer
        self._static = X25519PrivateKey.generate()
        self._noise: HandshakeState | None = None
        self._offer: HandshakeOffer | None = None
        self._chosen: tuple[int, Codec] | None = None
        self._cipher = ""
        self.result: HandshakeResult | None = None

    # -- helpers -------------------------------------------------------------------------

    def _hello(self, versions: tuple[int, ...], codecs: tuple[str, ...]) -> Hello:
        o = self.options
        return Hello(
            self.identity.node_id,
            versions,
            codecs,
            o.capabilities,
            role=o.role,
            listen=o.listen,
            network_kind=o.network_kind,
            metered=o.metered,
            agent=f"edgeagent/{__version__}",
            window=o.window,
        )

    def _payload(self, hello: Hello) -> bytes:
        static_pub = self._static.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        sig = self.identity.sign(_SIG_PREFIX + static_pub)
        return encode_struct(HandshakePayload(self.identity.node_id, sig, hello))

    def _check_peer(self, raw: bytes) -> HandshakePayload:
        assert self._noise is not None
        payload = _decode_struct(HandshakePayload, raw)
        assert isinstance(payload, HandshakePayload)
        rs = self._noise.remote_static
        assert rs is not None
        try:
            verify(payload.node_id, _SIG_PREFIX + rs, payload.signature)
        except SignatureError:
            raise HandshakeError(f"peer claiming {payload.node_id} did not prove its key") from None
        if payload.hello.node_id != payload.node_id:
            raise HandshakeError("peer's Hello names another node")
        if self.expected_peer is not None and payload.node_id != self.expected_peer:
            raise HandshakeError(f"expected {self.expected_peer} but {payload.node_id} answered")
        return payload

    def _finish(self, peer: HandshakePayload) -> None:
        assert self._noise is not None and self._chosen is not None and self._offer is not None
        send, recv = self._noise.split()
        insecure = self._offer.insecure
        self.result = HandshakeResult(
            peer=peer.node_id,
            peer_hello=peer.hello,
            codec=self._chosen[1],
            version=self._chosen[0],
            cipher=self._cipher,
            insecure=insecure,
            send=None if insecure else send,
            recv=None if insecure else recv,
            handshake_hash=self._noise.handshake_hash,
        )

    # -- the protocol ---------------------------------------------------------------------

    def start(self) -> bytes:
        """The dialler's first message."""
        if not self.initiator or self._noise is not None:
            raise HandshakeError("start() is for the dialler, once")
        self._cipher = _choose_cipher(self.options.cipher)
        prologue = MAGIC + bytes([_CIPHER_IDS[self._cipher]])
        self._noise = HandshakeState(True, self._static, self._cipher, prologue)
        self._offer = HandshakeOffer((PROTOCOL_VERSION,), tuple(self.options.codecs), self.options.insecure)
        return prologue + self._noise.write_message(encode_struct(self._offer))

    def receive(self, message: bytes) -> bytes | None:
        """Process one message from the peer; returns the reply to send, if any."""
        try:
            return self._receive(message)
        except HandshakeError:
            raise
        except EdgeAgentError as exc:
            raise HandshakeError(str(exc)) from None

    def _receive(self, message: bytes) -> bytes | None:
        if self.result is not None:
            raise HandshakeError("handshake already complete")
        if not self.initiator and self._noise is None:
            return self._on_offer(bytes(message))
        if self._noise is None:
            raise HandshakeError("call start() first")
        if self.initiator:
            peer = self._check_peer(self._noise.read_message(message))
            hello = peer.hello
            if not hello.versions or not hello.codecs:
                raise HandshakeError("listener did not name a version and codec")
            version, codec = hello.versions[0], hello.codecs[0]
            assert self._offer is not None
            if version not in self._offer.versions or codec not in self._offer.codecs or codec not in _SUPPORTED_CODECS:
                raise HandshakeError(f"listener chose version {version} / codec {codec!r}, which were not offered")
            self._chosen = (version, "cbor" if codec == "cbor" else "protobuf")
            reply = self._noise.write_message(self._payload(self._hello((version,), (codec,))))
            self._finish(peer)
            return reply
        peer = self._check_peer(self._noise.read_message(message))
        self._finish(peer)
        return None

    def _on_offer(self, message: bytes) -> bytes:
        if len(message) < len(MAGIC) + 1 or message[: len(MAGIC)] != MAGIC:
            raise HandshakeError("not an edgeagent link (bad magic)")
        cipher_id = message[len(MAGIC)]
        ciphers = {v: k for k, v in _CIPHER_IDS.items()}
        if cipher_id not in ciphers:
            raise HandshakeError(f"unknown cipher id {cipher_id}")
        self._cipher = ciphers[cipher_id]
        prologue = message[: len(MAGIC) + 1]
        self._noise = HandshakeState(False, self._static, self._cipher, prologue)
        offer = _decode_struct(HandshakeOffer, self._noise.read_message(message[len(prologue) :]))
        assert isinstance(offer, HandshakeOffer)
        self._offer = offer
        if offer.insecure and not self.options.insecure:
            raise HandshakeError("peer asked for an insecure link; this node requires encryption")
        if not offer.insecure and self.options.insecure:
            raise HandshakeError("this node is insecure (benchmark mode) but the peer asked for encryption")
        versions = [v for v in offer.versions if v <= PROTOCOL_VERSION]
        if not versions:
            raise HandshakeError(f"no common protocol version (peer offers {list(offer.versions)})")
        codecs = [c for c in offer.codecs if c in self.options.codecs and c in _SUPPORTED_CODECS]
        if not codecs:
            raise HandshakeError(f"no common codec (peer offers {list(offer.codecs)})")
        self._chosen = (max(versions), codecs[0])
        hello = self._hello((max(versions),), (codecs[0],))
        return self._noise.write_message(self._payload(hello))
