"""Noise XX (revision 34) over X25519, SHA-256 and AES-GCM or ChaCha20-Poly1305.

Why Noise XX built here from ``cryptography``'s primitives rather than TLS or a
Noise package: XX authenticates *both* sides with long-lived keys without a
PKI, and its static keys are bound to Ed25519 NodeIds by a signature in the
handshake payload, exactly as libp2p's Noise handshake does; the state machine
is ~150 lines and pure (no I/O, no clock), so it is tested against the
``noiseprotocol`` package without a network; and ``cryptography`` is already a
core dependency available on Termux and Raspberry Pi OS, while the only Noise
package on PyPI (noiseprotocol 0.3.1) has been unmaintained since 2020.

The cipher is negotiated by name: AES-GCM is fastest where the CPU has AES
instructions (x86-64, most phones), ChaCha20-Poly1305 where it has not
(Raspberry Pi 4).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from ..exceptions import HandshakeError, RemoteProtocolError

__all__ = ["CIPHERS", "CipherState", "HandshakeState", "MAX_MESSAGE", "TAG_LEN", "has_aes_instructions"]

MAX_MESSAGE: Final = 65535
TAG_LEN: Final = 16
DHLEN: Final = 32
CIPHERS: Final = ("AESGCM", "ChaChaPoly")
_HAS_INTO: Final = hasattr(AESGCM, "encrypt_into") and hasattr(ChaCha20Poly1305, "decrypt_into")


def has_aes_instructions() -> bool:
    """True when /proc/cpuinfo shows AES instructions (x86 ``aes`` flag, ARM ``aes`` feature)."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features") and "aes" in value.split():
                    return True
    except OSError:
        pass
    return False


def _pub(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _hkdf(ck: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    temp = hmac.digest(ck, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    return out1, out2


class CipherState:
    """One direction's AEAD key and nonce counter (Noise CipherState)."""

    __slots__ = ("_aead", "_big_endian", "n")

    def __init__(self, cipher: str, key: bytes) -> None:
        if cipher == "AESGCM":
            self._aead: AESGCM | ChaCha20Poly1305 = AESGCM(key)
            self._big_endian = True
        elif cipher == "ChaChaPoly":
            self._aead = ChaCha20Poly1305(key)
            self._big_endian = False
        else:
            raise ValueError(f"unknown cipher {cipher!r}")
        self.n = 0

    def _nonce(self) -> bytes:
        n = self.n
        if n >= 2**64 - 1:
            raise RemoteProtocolError("nonce space exhausted; the link must be re-established")
        self.n = n + 1
        return b"\0\0\0\0" + n.to_bytes(8, "big" if self._big_endian else "little")

    def encrypt(self, ad: bytes, plaintext: bytes | memoryview) -> bytes:
        return self._aead.encrypt(self._nonce(), plaintext, ad)

    def encrypt_into(self, ad: bytes, plaintext: bytes | memoryview, out: memoryview) -> None:
        """Encrypt into ``out`` (exactly ``len(plaintext) + TAG_LEN`` bytes) without a temporary copy."""
        nonce = self._nonce()
        if _HAS_INTO:
            self._aead.encrypt_into(nonce, plaintext, ad, out)
        else:  # pragma: no cover - cryptography < 45
            out[:] = self._aead.encrypt(nonce, plaintext, ad)

    def decrypt_into(self, ad: bytes, ciphertext: bytes | memoryview, out: memoryview) -> None:
        """Decrypt into ``out`` (exactly ``len(ciphertext) - TAG_LEN`` bytes)."""
        nonce = self._nonce()
        try:
            if _HAS_INTO:
                self._aead.decrypt_into(nonce, ciphertext, ad, out)
            else:  # pragma: no cover - cryptography < 45
                out[:] = self._aead.decrypt(nonce, ciphertext, ad)
        except InvalidTag:
            raise RemoteProtocolError("record failed authentication (corrupted, replayed or reordered)") from None

    def decrypt(self, ad: bytes, ciphertext: bytes | memoryview) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(), ciphertext, ad)
        except InvalidTag:
            raise RemoteProtocolError("record failed authentication (corrupted, replayed or reordered)") from None


class _Symmetric:
    __slots__ = ("cipher", "ck", "h", "k")

    def __init__(self, protocol_name: bytes, cipher: str) -> None:
        self.h = protocol_name.ljust(32, b"\0") if len(protocol_name) <= 32 else hashlib.sha256(protocol_name).digest()
        self.ck = self.h
        self.cipher = cipher
        self.k: CipherState | None = None

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key(self, ikm: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, ikm)
        self.k = CipherState(self.cipher, temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        out = plaintext if self.k is None else self.k.encrypt(self.h, plaintext)
        self.mix_hash(out)
        return out

    def decrypt_and_hash(self, data: bytes) -> bytes:
        if self.k is None:
            out = data
        else:
            try:
                out = self.k.decrypt(self.h, data)
            except RemoteProtocolError:
                raise HandshakeError("handshake message failed authentication") from None
        self.mix_hash(data)
        return out

    def split(self) -> tuple[CipherState, CipherState]:
        k1, k2 = _hkdf(self.ck, b"")
        return CipherState(self.cipher, k1), CipherState(self.cipher, k2)


class HandshakeState:
    """The XX pattern: ``-> e``, ``<- e, ee, s, es``, ``-> s, se``.

    Call :meth:`write_message` / :meth:`read_message` in turn (initiator writes
    first). After three messages :attr:`complete` is true, :attr:`remote_static`
    holds the peer's X25519 key and :meth:`split` gives (send, receive) ciphers.
    """

    def __init__(
        self,
        initiator: bool,
        static: X25519PrivateKey,
        cipher: str = "AESGCM",
        prologue: bytes = b"",
        ephemeral: X25519PrivateKey | None = None,
    ) -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown cipher {cipher!r}")
        self.initiator = initiator
        self.protocol_name = f"Noise_XX_25519_{cipher}_SHA256".encode()
        self._sym = _Symmetric(self.protocol_name, cipher)
        self._sym.mix_hash(prologue)
        self._s = static
        self._e = ephemeral
        self._re: X25519PublicKey | None = None
        self.remote_static: bytes | None = None
        self._step = 0

    @property
    def complete(self) -> bool:
        return self._step >= 3

    @property
    def handshake_hash(self) -> bytes:
        """Unique per session; both sides hold the same value once complete."""
        return self._sym.h

    def _dh(self, mine: X25519PrivateKey, theirs: X25519PublicKey) -> bytes:
        try:
            return mine.exchange(theirs)
        except ValueError:  # a low-order point gives an all-zero secret, which cryptography refuses
            raise HandshakeError("peer sent a weak (low-order) public key") from None

    def _my_turn(self) -> bool:
        return (self._step % 2 == 0) == self.initiator

    def write_message(self, payload: bytes) -> bytes:
        if self.complete or not self._my_turn():
            raise HandshakeError("not this side's turn to write")
        sym = self._sym
        out = bytearray()
        if self._step == 0:  # -> e
            self._e = self._e or X25519PrivateKey.generate()
            e_pub = _pub(self._e)
            out += e_pub
            sym.mix_hash(e_pub)
        elif self._step == 1:  # <- e, ee, s, es
            assert self._re is not None
            self._e = self._e or X25519PrivateKey.generate()
            e_pub = _pub(self._e)
            out += e_pub
            sym.mix_hash(e_pub)
            sym.mix_key(self._dh(self._e, self._re))
            out += sym.encrypt_and_hash(_pub(self._s))
            sym.mix_key(self._dh(self._s, self._re))
        else:  # -> s, se
            assert self._re is not None
            out += sym.encrypt_and_hash(_pub(self._s))
            sym.mix_key(self._dh(self._s, self._re))
        out += sym.encrypt_and_hash(payload)
        self._step += 1
        if len(out) > MAX_MESSAGE:
            raise HandshakeError("handshake message too large")
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        if self.complete or self._my_turn():
            raise HandshakeError("not this side's turn to read")
        if len(message) > MAX_MESSAGE:
            raise HandshakeError("handshake message too large")
        message = bytes(message)
        sym = self._sym
        pos = 0

        def take(n: int) -> bytes:
            nonlocal pos
            if pos + n > len(message):
                raise HandshakeError("handshake message truncated")
            chunk = message[pos : pos + n]
            pos += n
            return chunk

        def public(raw: bytes) -> X25519PublicKey:
            try:
                return X25519PublicKey.from_public_bytes(raw)
            except ValueError:
                raise HandshakeError("bad public key in handshake") from None

        if self._step == 0:  # responder reads: e
            re = take(DHLEN)
            self._re = public(re)
            sym.mix_hash(re)
        elif self._step == 1:  # initiator reads: e, ee, s, es
            re = take(DHLEN)
            self._re = public(re)
            sym.mix_hash(re)
            assert self._e is not None
            sym.mix_key(self._dh(self._e, self._re))
            rs = sym.decrypt_and_hash(take(DHLEN + TAG_LEN))
            self.remote_static = rs
            sym.mix_key(self._dh(self._e, public(rs)))
        else:  # responder reads: s, se
            rs = sym.decrypt_and_hash(take(DHLEN + TAG_LEN))
            self.remote_static = rs
            assert self._e is not None
            sym.mix_key(self._dh(self._e, public(rs)))
        payload = sym.decrypt_and_hash(message[pos:])
        self._step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """(sending, receiving) cipher states for this side."""
        if not self.complete:
            raise HandshakeError("handshake not complete")
        c1, c2 = self._sym.split()
        return (c1, c2) if self.initiator else (c2, c1)
