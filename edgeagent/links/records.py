"""The record layer: envelope frames <-> encrypted records <-> transport messages (pure).

A transport message (one WebSocket or data-channel message) carries one or
more records. A record is ``flags (1) | length (2, big-endian) | body``; the
body is the AEAD ciphertext of a piece of a frame (or the piece itself on an
``insecure`` link) and the flags byte is authenticated as associated data.
Flag ``FIN`` marks the last piece of a frame. Pieces keep every record under
Noise's 65,535-byte limit, so frames of any size (up to the frame cap) cross
transports with any message size limit, and a reader never holds more than one
frame's pieces.
"""

from __future__ import annotations

from typing import Final

from ..exceptions import RemoteProtocolError
from .noise import MAX_MESSAGE, TAG_LEN, CipherState

__all__ = ["FIN", "RecordReader", "RecordWriter"]

FIN: Final = 0x01
_HEADER: Final = 3
_FLAGS_FIN: Final = bytes([FIN])
_FLAGS_MORE: Final = bytes([0])


class RecordWriter:
    """Cuts frames into records and packs records into transport messages."""

    __slots__ = ("_cipher", "_max_message", "_piece")

    def __init__(self, cipher: CipherState | None, max_message: int) -> None:
        self._cipher = cipher
        overhead = TAG_LEN if cipher is not None else 0
        self._piece = MAX_MESSAGE - overhead
        if max_message < _HEADER + overhead + 1:
            raise ValueError("transport messages too small for a record")
        self._piece = min(self._piece, max_message - _HEADER - overhead)
        self._max_message = max_message

    def pack(self, frame: bytes | memoryview) -> list[bytes]:
        """The transport messages that carry ``frame``, in order."""
        view = memoryview(frame)
        total = len(view)
        cipher = self._cipher
        messages: list[bytes] = []
        parts: list[bytes | memoryview] = []
        size = 0
        pos = 0
        while True:
            end = min(pos + self._piece, total)
            flags = _FLAGS_FIN if end == total else _FLAGS_MORE
            body: bytes | memoryview = view[pos:end] if cipher is None else cipher.encrypt(flags, view[pos:end])
            rec_len = _HEADER + len(body)
            if size + rec_len > self._max_message and parts:
                messages.append(b"".join(parts))
                parts, size = [], 0
            parts.append(flags + len(body).to_bytes(2, "big"))
            parts.append(body)
            size += rec_len
            pos = end
            if pos >= total:
                break
        messages.append(b"".join(parts))
        return messages


class RecordReader:
    """Opens records from transport messages and reassembles frames (bounded by ``max_frame``)."""

    __slots__ = ("_cipher", "_max_frame", "_pieces", "_size")

    def __init__(self, cipher: CipherState | None, max_frame: int) -> None:
        self._cipher = cipher
        self._max_frame = max_frame
        self._pieces: list[bytes] = []
        self._size = 0

    def feed(self, message: bytes | memoryview) -> list[bytes]:
        """Complete frames found in one transport message; raises ``RemoteProtocolError``."""
        view = memoryview(message)
        n = len(view)
        if n == 0:
            raise RemoteProtocolError("empty transport message")
        frames: list[bytes] = []
        pos = 0
        cipher = self._cipher
        while pos < n:
            if pos + _HEADER > n:
                raise RemoteProtocolError("truncated record header")
            flags = view[pos]
            if flags & ~FIN:
                raise RemoteProtocolError(f"unknown record flags {flags:#x}")
            length = (view[pos + 1] << 8) | view[pos + 2]
            pos += _HEADER
            if pos + length > n:
                raise RemoteProtocolError("record overruns its transport message")
            body = view[pos : pos + length]
            pos += length
            piece = bytes(body) if cipher is None else cipher.decrypt(bytes((flags,)), body)
            self._size += len(piece)
            if self._size > self._max_frame:
                raise RemoteProtocolError(f"frame larger than the {self._max_frame}-byte cap")
            self._pieces.append(piece)
            if flags & FIN:
                pieces = self._pieces
                frames.append(pieces[0] if len(pieces) == 1 else b"".join(pieces))
                self._pieces = []
                self._size = 0
        return frames
