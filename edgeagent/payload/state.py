"""A payload being received or held on disk: its file, its have-map and its verified reads
(``PayloadState``; the store that makes and lists them is ``store.ChunkStore``, whose docstring
tells the durability and quota rules both keep)."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..exceptions import PayloadError
from ..wire.messages import IndexRange, Manifest
from .fileio import fdatasync, fsync_dir, pread_exact, pwrite_all, write_atomic
from .manifest import verify_chunk

if TYPE_CHECKING:
    from .store import ChunkStore

__all__ = ["PayloadState"]

log = logging.getLogger("edgeagent.payload.store")
_HAVE_MAGIC: Final = b"EAHAVE1\n"
_HAVE_HEADER: Final = len(_HAVE_MAGIC) + 32 + 8


def _popcount_bytes(bitmap: bytes | bytearray) -> int:
    return int.from_bytes(bitmap, "little").bit_count()


def _have_bytes_of(manifest: Manifest, bitmap: bytes | bytearray) -> int:
    n = manifest.chunk_count
    if n == 0:
        return 0
    held = _popcount_bytes(bitmap)
    last = n - 1
    if bitmap[last >> 3] & (1 << (last & 7)):
        return (held - 1) * manifest.chunk_size + manifest.chunk_length(last)
    return held * manifest.chunk_size


def _encode_have(pid: bytes, count: int, bitmap: bytes | bytearray) -> bytes:
    body = _HAVE_MAGIC + pid + count.to_bytes(8, "big") + bytes(bitmap)
    return body + hashlib.sha256(body).digest()


def _decode_have(raw: bytes, pid: bytes, count: int) -> bytearray | None:
    """The bitmap in a have-map file, or None when it is not exactly a valid one for this payload."""
    nbytes = (count + 7) // 8
    if len(raw) != _HAVE_HEADER + nbytes + 32:
        return None
    body, check = raw[:-32], raw[-32:]
    if hashlib.sha256(body).digest() != check:
        return None
    if body[: len(_HAVE_MAGIC)] != _HAVE_MAGIC or body[len(_HAVE_MAGIC) : len(_HAVE_MAGIC) + 32] != pid:
        return None
    if int.from_bytes(body[len(_HAVE_MAGIC) + 32 : _HAVE_HEADER], "big") != count:
        return None
    bitmap = bytearray(body[_HAVE_HEADER:])
    if count % 8 and bitmap[-1] >> (count % 8):
        return None  # bits past the last chunk: not ours
    return bitmap


class PayloadState:
    """One payload being received or served. Made by :meth:`ChunkStore.open`; ``close()`` it when done."""

    def __init__(
        self,
        store: ChunkStore,
        manifest: Manifest,
        pid: bytes,
        *,
        window: int,
        fsync: bool,
        verify_on_open: bool,
    ) -> None:
        self.manifest: Final = manifest
        self.id: Final = pid
        self.hex_id: Final = pid.hex()
        self._store = store
        self._window = window
        self._fsync = fsync
        self._lock = threading.RLock()
        n = manifest.chunk_count
        self._nbytes = (n + 7) // 8
        self._bits = bytearray(self._nbytes)
        self._unverified = bytearray(self._nbytes)  # bits adopted from disk, not re-hashed this session
        self._held = 0
        self._dirty = 0
        self._complete = False
        self._closed = False
        root = store.root
        self._part = root / f"{self.hex_id}.part"
        self._have = root / f"{self.hex_id}.have"
        self._final = store.final_path(manifest, pid)
        self._fd = -1
        try:
            self._open_files()
            if verify_on_open:
                self._verify_adopted()
            if not self._complete and self._held == n:
                self._finish()
        except BaseException:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1
            raise

    # -- opening and resuming ----------------------------------------------------------------------------

    def _open_files(self) -> None:
        size = self.manifest.size
        n = self.manifest.chunk_count
        if self._final.is_file() and self._final.stat().st_size == size:
            self._fd = os.open(self._final, os.O_RDWR)
            self._bits[:] = self._full_bitmap()
            self._held = n
            self._complete = True
            self._unlink_quietly(self._part)
            self._unlink_quietly(self._have)
            return
        if self._final.exists():  # the wrong size: someone changed it; take it back as a partial
            log.warning("payload %s: %s has the wrong size; receiving it again", self.hex_id, self._final)
            self._remove_final()
        self._fd = os.open(self._part, os.O_RDWR | os.O_CREAT, 0o600)
        part_size = os.fstat(self._fd).st_size
        bitmap: bytearray | None = None
        try:
            raw = self._have.read_bytes()
        except FileNotFoundError:
            raw = None
        if raw is not None:
            bitmap = _decode_have(raw, self.id, n) if part_size == size else None
            if bitmap is None:
                log.warning("payload %s: have-map unusable (corrupt, truncated or stale); discarding it", self.hex_id)
                self._unlink_quietly(self._have)
        if part_size != size:
            os.ftruncate(self._fd, size)  # sparse: blocks are allocated as chunks arrive
        if bitmap is not None:
            self._bits[:] = bitmap
            self._unverified[:] = bitmap
            self._held = _popcount_bytes(bitmap)

    def _full_bitmap(self) -> bytearray:
        n = self.manifest.chunk_count
        full = bytearray(b"\xff" * self._nbytes)
        if n % 8:
            full[-1] = (1 << (n % 8)) - 1
        return full

    def _verify_adopted(self) -> None:
        """Re-hash every chunk adopted from the on-disk have-map; clear those that do not match."""
        bad = 0
        for i in self._iter_set(self._unverified):
            if self._read_verified(i) is None:
                bad += 1
        if bad:
            log.warning("payload %s: %d chunk(s) marked held failed re-verification", self.hex_id, bad)
            self._write_have()

    @staticmethod
    def _iter_set(bitmap: bytearray) -> Iterator[int]:
        """Indices of the set bits (clearing bits already yielded while iterating is fine)."""
        for byte_index, byte in enumerate(bitmap):
            if byte:
                base = byte_index * 8
                for b in range(8):
                    if byte >> b & 1:
                        yield base + b

    # -- public API ----------------------------------------------------------------------------------------

    @property
    def chunk_count(self) -> int:
        return self.manifest.chunk_count

    @property
    def have_bytes(self) -> int:
        """Verified payload bytes held."""
        with self._lock:
            held = self._held
            last = self.manifest.chunk_count - 1
            if held and self._bits[last >> 3] >> (last & 7) & 1:
                return (held - 1) * self.manifest.chunk_size + self.manifest.chunk_length(last)
            return held * self.manifest.chunk_size

    @property
    def complete(self) -> bool:
        """Every chunk is verified and the payload has been renamed to :attr:`path`."""
        return self._complete

    @property
    def path(self) -> Path | None:
        """The whole payload's file once complete, else None."""
        return self._final if self._complete else None

    @property
    def closed(self) -> bool:
        return self._closed

    def has(self, index: int) -> bool:
        """Whether chunk ``index`` is held (verified when it arrived, re-verified when read)."""
        if not 0 <= index < self.manifest.chunk_count:
            return False
        return bool(self._bits[index >> 3] >> (index & 7) & 1)

    def have_bitmap(self) -> bytes:
        """The have-map for a ``Have`` message: bit i (LSB first in byte i // 8) set when chunk i is held."""
        with self._lock:
            return bytes(self._bits)

    def missing(self) -> list[IndexRange]:
        """The chunks not held, as coalesced ranges in index order (for a ``ChunkRequest``)."""
        with self._lock:
            bits = bytes(self._bits)
        n = self.manifest.chunk_count
        out: list[IndexRange] = []
        start = -1
        for byte_index, byte in enumerate(bits):
            base = byte_index * 8
            if byte == 0xFF:
                if start >= 0:
                    out.append(IndexRange(start, base))
                    start = -1
                continue
            if byte == 0 and start >= 0:
                continue
            for b in range(8):
                i = base + b
                if i >= n:
                    break
                if byte >> b & 1:
                    if start >= 0:
                        out.append(IndexRange(start, i))
                        start = -1
                elif start < 0:
                    start = i
        if start >= 0:
            out.append(IndexRange(start, n))
        return out

    def put(self, index: int, data: bytes | bytearray | memoryview) -> bool:
        """Store chunk ``index`` if it is right; returns whether it is now held.

        Returns False, writing nothing, when the index is out of range or the
        length or hash does not match the manifest. Putting a chunk already held
        returns True and writes nothing. The chunk is hashed outside the lock.
        """
        if not verify_chunk(self.manifest, index, data):
            return False
        with self._lock:
            self._check_open()
            if self.has(index):
                return True
            pwrite_all(self._fd, data, index * self.manifest.chunk_size)
            self._bits[index >> 3] |= 1 << (index & 7)
            self._held += 1
            self._dirty += 1
            if self._held == self.manifest.chunk_count:
                self._finish()
            elif self._dirty >= self._window:
                self._write_have()
            return True

    def put_syncs(self, index: int) -> bool:
        """Whether putting chunk ``index`` now would sync to disk (flush the have-map, or finish).

        A put that does not is a hash and a ``pwrite`` into the page cache: cheap enough to run
        on an event loop, where a thread hop per chunk costs more than the work itself.
        """
        if self.has(index) or not 0 <= index < self.manifest.chunk_count:
            return False
        return self._held + 1 >= self.manifest.chunk_count or self._dirty + 1 >= self._window

    def get(self, index: int) -> bytes | None:
        """Chunk ``index`` as verified bytes, or None when it is not held.

        The bytes read are re-hashed every time; a chunk that no longer matches
        (the disk lost or corrupted it) is dropped from the have-map and None
        is returned, so it will be requested again.
        """
        if not 0 <= index < self.manifest.chunk_count:
            return None
        with self._lock:
            self._check_open()
            if not self.has(index):
                return None
            return self._read_verified(index)

    def flush(self) -> None:
        """Persist the have-map now (after syncing the chunk data it vouches for)."""
        with self._lock:
            self._check_open()
            if self._dirty and not self._complete:
                self._write_have()

    def close(self) -> None:
        """Flush the have-map and close the file. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            try:
                if self._dirty and not self._complete:
                    self._write_have()
            finally:
                self._closed = True
                if self._fd >= 0:
                    os.close(self._fd)
                    self._fd = -1
                self._store._forget(self)

    def __enter__(self) -> PayloadState:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "complete" if self._complete else f"{self._held}/{self.manifest.chunk_count} chunks"
        return f"PayloadState({self.hex_id[:16]}..., {state}{', closed' if self._closed else ''})"

    # -- internals (called with the lock held) ----------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise PayloadError(f"payload {self.hex_id} is closed")

    def _read_verified(self, index: int) -> bytes | None:
        length = self.manifest.chunk_length(index)
        data = pread_exact(self._fd, length, index * self.manifest.chunk_size)
        mask = 1 << (index & 7)
        if data is not None and verify_chunk(self.manifest, index, data):
            self._unverified[index >> 3] &= ~mask
            return data
        log.warning("payload %s: chunk %d on disk does not match its hash; dropping it", self.hex_id, index)
        self._unverified[index >> 3] &= ~mask
        self._bits[index >> 3] &= ~mask
        self._held -= 1
        self._dirty += 1
        if self._complete:
            self._reopen_as_partial()
        return None

    def _write_have(self) -> None:
        if self._fsync:
            fdatasync(self._fd)  # the data first: the have-map must never vouch for bytes not on disk
        write_atomic(self._have, _encode_have(self.id, self.manifest.chunk_count, self._bits), fsync=self._fsync)
        if self._fsync:
            fsync_dir(self._store.root)  # make the rename durable, so a power cut loses no more than a window
        self._dirty = 0

    def _finish(self) -> None:
        """Every chunk is held: re-verify what was adopted from disk, then rename into place."""
        if any(self._unverified):
            for i in self._iter_set(self._unverified):
                self._read_verified(i)
            if self._held != self.manifest.chunk_count:
                self._write_have()
                return
        if self._fsync:
            fdatasync(self._fd)
        if self._final.parent != self._store.root:
            self._final.parent.mkdir(mode=0o700, exist_ok=True)
        os.replace(self._part, self._final)
        if self._fsync:
            fsync_dir(self._final.parent)
            if self._final.parent != self._store.root:
                fsync_dir(self._store.root)
        self._unlink_quietly(self._have)
        self._complete = True
        self._dirty = 0

    def _reopen_as_partial(self) -> None:
        """A completed payload lost a chunk on disk: move it back to ``.part`` and resume."""
        os.replace(self._final, self._part)
        if self._final.parent != self._store.root:
            with contextlib.suppress(OSError):  # not empty: leave it
                self._final.parent.rmdir()
        self._complete = False
        self._write_have()

    def _remove_final(self) -> None:
        if self._final.parent != self._store.root:
            shutil.rmtree(self._final.parent, ignore_errors=True)
        else:
            self._unlink_quietly(self._final)

    @staticmethod
    def _unlink_quietly(path: Path) -> None:
        path.unlink(missing_ok=True)
