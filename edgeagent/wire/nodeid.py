"""Node identifiers in libp2p's PeerId form.

A ``NodeId`` is derived from a node's Ed25519 public key exactly as libp2p does
for Ed25519 peers, so the ids interoperate with libp2p tooling:

* bytes: an *identity multihash* (code ``0x00``, length ``0x24``) of the
  protobuf-encoded ``PublicKey {Type: Ed25519 (1), Data: <32 bytes>}``, that is
  ``00 24 08 01 12 20`` followed by the 32 key bytes (38 bytes in all);
* text: those bytes in base58btc (Bitcoin alphabet), which always starts with
  ``12D3KooW``.

The public key can be recovered from the id, so a signature can be checked
against an id without any other lookup. This module is pure (no cryptography):
``edgeagent.identity`` verifies signatures.
"""

from __future__ import annotations

from typing import Final

from ..exceptions import DecodeError

__all__ = ["NodeId", "b58decode", "b58encode"]

_ALPHABET: Final = b"123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_INDEX: Final = {c: i for i, c in enumerate(_ALPHABET)}
_PREFIX: Final = bytes([0x00, 0x24, 0x08, 0x01, 0x12, 0x20])
NODE_ID_LEN: Final = len(_PREFIX) + 32
_CACHE_SIZE: Final = 4096
_CACHE: dict[bytes, NodeId] = {}


def b58encode(data: bytes) -> str:
    """Encode bytes in base58btc."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    num = int.from_bytes(data, "big")
    out = bytearray()
    while num:
        num, rem = divmod(num, 58)
        out.append(_ALPHABET[rem])
    out.extend(b"1" * zeros)
    out.reverse()
    return out.decode("ascii")


def b58decode(text: str) -> bytes:
    """Decode base58btc text; raises ``ValueError`` on a character outside the alphabet."""
    if len(text) > 256:
        raise ValueError("base58 text too long")
    num = 0
    for ch in text.encode("ascii", "strict"):
        try:
            num = num * 58 + _INDEX[ch]
        except KeyError:
            raise ValueError(f"invalid base58 character {chr(ch)!r}") from None
    zeros = len(text) - len(text.lstrip("1"))
    body = num.to_bytes((num.bit_length() + 7) // 8, "big") if num else b""
    return b"\0" * zeros + body


class NodeId:
    """The identity of a node: immutable, hashable, ordered, printable as ``12D3KooW...``."""

    __slots__ = ("_bytes", "_text")

    _bytes: bytes
    _text: str | None

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != NODE_ID_LEN or raw[: len(_PREFIX)] != _PREFIX:
            raise DecodeError(
                f"not an Ed25519 NodeId: expected {NODE_ID_LEN} bytes starting {_PREFIX.hex()}, got {len(raw)} bytes"
            )
        object.__setattr__(self, "_bytes", raw)
        object.__setattr__(self, "_text", None)

    @classmethod
    def from_bytes(cls, raw: bytes) -> NodeId:
        """The NodeId with this 38-byte wire form (decoders use this: ids repeat, so it caches)."""
        hit = _CACHE.get(raw)
        if hit is not None:
            return hit
        node = cls(raw)
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.clear()
        _CACHE[node._bytes] = node
        return node

    @classmethod
    def from_public_key(cls, public_key: bytes) -> NodeId:
        """The id of the node whose raw 32-byte Ed25519 public key is ``public_key``."""
        if len(public_key) != 32:
            raise ValueError("an Ed25519 public key has 32 bytes")
        return cls(_PREFIX + bytes(public_key))

    @classmethod
    def parse(cls, text: str) -> NodeId:
        """Parse the base58 text form; raises ``DecodeError`` with the reason."""
        try:
            raw = b58decode(text.strip())
        except (ValueError, UnicodeError) as exc:
            raise DecodeError(f"not a NodeId: {exc}") from None
        return cls(raw)

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key inside the id."""
        return self._bytes[len(_PREFIX) :]

    def to_bytes(self) -> bytes:
        """The 38-byte binary form used on the wire."""
        return self._bytes

    def short(self) -> str:
        """A short form for logs and tables (the last 8 characters of the text)."""
        return "…" + str(self)[-8:]

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("NodeId is immutable")

    def __str__(self) -> str:
        text = self._text
        if text is None:  # base58 is slow (big-integer division); logs and tables print ids often
            text = b58encode(self._bytes)
            object.__setattr__(self, "_text", text)
        return text

    def __repr__(self) -> str:
        return f"NodeId({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NodeId) and other._bytes == self._bytes

    def __lt__(self, other: NodeId) -> bool:
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __reduce__(self) -> tuple[type[NodeId], tuple[bytes]]:
        return (NodeId, (self._bytes,))
