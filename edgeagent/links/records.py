"""The record layer: envelope frames <-> encrypted records <-> transport messages (pure).

A transport message (one WebSocket or data-channel message) carries one or
more records. A record is ``flags (1) | length (2, big-endian) | body``; the
body is the AEAD ciphertext of a piece of a frame (or the piece itself on an
``insecure`` link) and the flags byte is authenticated as associated data.
Flag ``FIN`` marks the last piece of a frame. Pieces keep every record under
Noise's 65,535-byte limit, so frames of any size (up to the frame cap) cross
transports with any message size limit.

Copies: the writer encrypts each piece straight into the outgoing message
buffer; the reader decrypts straight into one reusable reassembly buffer and
hands out a view of it, so a frame's bytes are written once on each side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Final

from ..exceptions import RemoteProtocolError
from .noise import MAX_MESSAGE, TAG_LEN, CipherState

__all__ = ["FIN", "RecordReader", "RecordWriter"]

FIN: Final = 0x01
_HEADER: Final = 3
_AD: Final = (bytes([0]), bytes([FIN]))
_INITIAL: Final = 64 * 1024
_KEEP: Final = 2 * 1024 * 1024


class RecordWriter:
    """Cuts frames into records and packs records into transport messages."""

    __slots__ = ("_cipher", "_max_message", "_overhead", "_piece")

    def __init__(self, cipher: CipherState | None, max_message: int) -> None:
        self._cipher = cipher
        self._overhead = TAG_LEN if cipher is not None else 0
        if max_message < _HEADER + self._overhead + 1:
            raise ValueError("transport messages too small for a record")
        self._piece = min(MAX_MESSAGE - self._overhead, max_message - _HEADER - self._overhead)
        self._max_message = max_message

    def pack(self, frame: bytes | memoryview) -> list[bytearray]:
        """The transport messages that carry ``frame``, in order."""
        view = memoryview(frame)
        total = len(view)
        piece, overhead = self._piece, self._overhead
        # lay out the pieces, then the messages that hold them
        cuts = list(range(0, total, piece)) or [0]
        messages: list[list[tuple[int, int]]] = [[]]
        size = 0
        for start in cuts:
            end = min(start + piece, total)
            rec = _HEADER + (end - start) + overhead
            if size + rec > self._max_message and messages[-1]:
                messages.append([])
                size = 0
            messages[-1].append((start, end))
            size += rec
        out: list[bytearray] = []
        cipher = self._cipher
        for pieces in messages:
            buf = bytearray(sum(_HEADER + (e - s) + overhead for s, e in pieces))
            mv = memoryview(buf)
            pos = 0
            for start, end in pieces:
                fin = end == total
                body = end - start + overhead
                mv[pos] = FIN if fin else 0
                mv[pos + 1] = body >> 8
                mv[pos + 2] = body & 0xFF
                pos += _HEADER
                if cipher is None:
                    mv[pos : pos + body] = view[start:end]
                else:
                    cipher.encrypt_into(_AD[fin], view[start:end], mv[pos : pos + body])
                pos += body
            out.append(buf)
        return out


class RecordReader:
    """Opens records from transport messages and reassembles frames (bounded by ``max_frame``)."""

    __slots__ = ("_buf", "_cipher", "_size", "_skipping", "discard_over", "discarded", "max_frame")

    def __init__(self, cipher: CipherState | None, max_frame: int) -> None:
        self._cipher = cipher
        self.max_frame = max_frame  # may change: a link raises it once its peer is authorised
        # frames over this many bytes are dropped unread (decrypted piece by piece into nothing) rather
        # than break the link: the pre-authorisation cap; 0 = none (over max_frame still breaks it)
        self.discard_over = 0
        self.discarded = 0  # frames dropped so far
        self._skipping = False
        self._buf = bytearray(_INITIAL)
        self._size = 0

    def _skip(self, flags: int, record: memoryview, plain: int) -> None:
        """Authenticate a record of a frame being dropped, keep none of it; the frame ends at FIN."""
        if not self._skipping:
            self._skipping = True
            self._size = 0
            self.discarded += 1
        if self._cipher is not None:
            scratch = bytearray(plain)
            self._cipher.decrypt_into(_AD[flags], record, memoryview(scratch))
        if flags & FIN:
            self._skipping = False

    @property
    def pending(self) -> int:
        """Bytes of a frame begun but not finished (empty records add none)."""
        return self._size

    def feed(self, message: bytes | bytearray | memoryview) -> Iterator[memoryview]:
        """Yield each complete frame in one transport message.

        A yielded view is valid only until the generator resumes (it is then
        released and its bytes reused): decode or copy it first. Raises
        ``RemoteProtocolError`` for any malformed or unauthentic record.
        """
        view = memoryview(message)
        n = len(view)
        if n == 0:
            raise RemoteProtocolError("empty transport message")
        pos = 0
        cipher = self._cipher
        overhead = TAG_LEN if cipher is not None else 0
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
            if length < overhead:
                raise RemoteProtocolError("record shorter than its authentication tag")
            plain = length - overhead
            if self._skipping or (self.discard_over and self._size + plain > self.discard_over):
                self._skip(flags, view[pos : pos + length], plain)
                pos += length
                continue
            size = self._size + plain
            if size > self.max_frame:
                raise RemoteProtocolError(f"frame larger than the {self.max_frame}-byte cap")
            if size > len(self._buf):
                # a new buffer rather than resizing in place: an old frame's view may still be
                # referenced (a traceback kept by a log handler), and resizing would fail then
                grown = bytearray(max(size, 2 * len(self._buf)))
                grown[: self._size] = memoryview(self._buf)[: self._size]
                self._buf = grown
            target = memoryview(self._buf)[self._size : size]
            try:
                if cipher is None:
                    target[:] = view[pos : pos + length]
                else:
                    cipher.decrypt_into(_AD[flags], view[pos : pos + length], target)
            finally:
                target.release()
            pos += length
            self._size = size
            if flags & FIN:
                self._size = 0
                frame = memoryview(self._buf)[:size]
                try:
                    yield frame
                finally:
                    frame.release()
                if len(self._buf) > _KEEP:  # do not hold a rare huge frame's buffer for the link's life
                    self._buf = bytearray(_INITIAL)
