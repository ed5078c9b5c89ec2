"""The on-disk payload store: chunks written as they are verified, a have-map to resume, a rename when whole.

Layout of the store's directory (the node's ``<state>/payloads/``), per payload
with id ``H`` (64 lowercase hex digits):

``H.manifest``
    the signed manifest (its CBOR encoding). Written first, removed last; it is
    what :meth:`ChunkStore.list` enumerates, and it stays after completion so
    the node can serve the payload.
``H.part``
    the payload being received, created sparse at its final size; chunk ``i``
    is written at ``i * chunk_size`` with ``os.pwrite``.
``H.have``
    the have-map: a header (magic, payload id, chunk count), the bitmap (bit
    ``i`` LSB-first in byte ``i // 8``, as in the ``Have`` message) and a
    SHA-256 over all of it. Replaced atomically (write ``H.have.tmp``, fsync,
    rename). Removed once the payload is whole.
``H`` or ``H/NAME``
    the whole payload, renamed from ``H.part`` once every chunk is verified.
    A manifest with a ``name`` lands in its own directory ``H/`` under the
    sanitised name (one path component: see :func:`safe_name`), so names never
    collide, never shadow the store's own files and never leave the store.

Crash consistency
-----------------
The have-map is a promise that the chunks it marks are on disk, so it is only
ever written *after* those chunks are durable:

1. :meth:`PayloadState.put` verifies the chunk (length and hash) in memory,
   then ``pwrite`` s it and sets its bit in memory only.
2. Every ``window`` new chunks, and on :meth:`PayloadState.close` /
   :meth:`PayloadState.flush`, the ``.part`` is ``fdatasync`` ed, then the new
   have-map is written to a temporary file, fsynced and renamed over the old
   (and the directory fsynced, so the rename itself survives a power cut).
   A crash at any point leaves the previous have-map or the new one, never a
   torn one, and every bit in it names data that reached the disk before it.
   A crash loses at most the chunks put since the last flush: fewer than
   ``window``, re-requested after the restart.
3. A have-map that is missing, truncated, corrupt (checksum), or for another
   payload or chunk count is discarded whole: every chunk is missing again.
4. Defence in depth against a disk that loses or corrupts data anyway: chunks
   adopted from an on-disk have-map are *unverified* until read back. Every
   :meth:`PayloadState.get` re-hashes what it reads and returns ``None`` (and
   clears the bit, so the chunk is requested again) on a mismatch, and before a
   resumed payload is declared complete every adopted chunk not yet re-read is
   re-hashed once. ``verify_on_open=True`` does that pass at open instead, so
   :meth:`PayloadState.missing` is exact at once.

Cost: per window (16 x 256 KiB = 4 MiB by default) one ``fdatasync`` of at
most ``window * chunk_size`` dirty bytes (bytes that must reach the disk
anyway), one fsync of the small have-map file and one of the directory; a
hash of every chunk served from disk; and after a restart, one read and hash
of what was held before it.

``fsync=False`` skips the syncs. Against a killed *process* nothing changes
(the page cache keeps the write order). After a power cut, though, the
have-map may then vouch for data that never reached the disk: step 4 still
keeps such chunks from being served or counted towards completion, but until
they are re-read, :meth:`PayloadState.missing` and the have-map advertised to
peers may overstate what is held.

Memory: at most one chunk per call is held (the caller's, or one read back);
the bitmaps take one bit per chunk. All I/O is synchronous: the asyncio driver
runs it in a thread (or inline for small chunks). A :class:`PayloadState` may
be used from several threads; its methods serialise on a lock.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import shutil
import threading
import unicodedata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ..exceptions import DecodeError, PayloadError
from ..wire.cbor import decode_plain, encode_struct
from ..wire.limits import Limits
from ..wire.messages import IndexRange, Manifest
from ..wire.schema import struct_from_plain
from .fileio import fdatasync, fsync_dir, pread_exact, pwrite_all, write_atomic
from .manifest import MAX_CHUNK_SIZE, chunk_digest, payload_id, verify_chunk, verify_manifest

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_WINDOW",
    "ChunkStore",
    "PayloadState",
    "PayloadTooLarge",
    "PayloadQuotaExceeded",
    "safe_name",
]

log = logging.getLogger(__name__)

GiB: Final = 1024**3
DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * GiB
DEFAULT_WINDOW: Final = 16

_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")
_HAVE_MAGIC: Final = b"EAHAVE1\n"
_HAVE_HEADER: Final = len(_HAVE_MAGIC) + 32 + 8
_MAX_MANIFEST_FILE: Final = 64 * 1024 * 1024
_MAX_NAME_BYTES: Final = 255
_NAME_BAD: Final = re.compile(r'[\x00-\x1f\x7f<>:"|?*]')

# aliases: inside ChunkStore, ``list`` names the method
_Listing = list[dict[str, Any]]
_Manifests = list[tuple[str, Manifest]]


class PayloadTooLarge(PayloadError):
    """The manifest's size or chunk size is over the store's limit."""


class PayloadQuotaExceeded(PayloadError):
    """Storing the payload would take the store over its byte quota."""


def safe_name(name: str) -> str:
    """``name`` made into one harmless file name, or ``""`` when nothing usable is left.

    Keeps only the last path component (``/`` and ``\\`` both separate), drops
    control characters and the characters Windows forbids, strips leading and
    trailing dots and spaces (so ``.``, ``..`` and hidden names vanish) and cuts
    it to 255 UTF-8 bytes.
    """
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[/\\]", name)[-1]
    name = _NAME_BAD.sub("_", name).strip(" .")
    raw = name.encode("utf-8")
    if len(raw) > _MAX_NAME_BYTES:
        name = raw[:_MAX_NAME_BYTES].decode("utf-8", "ignore").rstrip(" .")
    return name


def _hex_id(pid: bytes | str) -> str:
    if isinstance(pid, bytes):
        if len(pid) != 32:
            raise PayloadError(f"a payload id is 32 bytes, got {len(pid)}")
        return pid.hex()
    if not isinstance(pid, str) or not _HEX_ID.fullmatch(pid.lower()):
        raise PayloadError(f"bad payload id {pid!r}: expected 64 hex digits")
    return pid.lower()


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


class ChunkStore:
    """Payloads on disk under ``root``.

    ``window``             have-map flushed every this many new chunks (a crash
                           re-downloads fewer than this many);
    ``quota_bytes``        total payload bytes (held or reserved by partial
                           payloads) the store may take; None for no quota;
    ``max_payload_bytes``  largest manifest size accepted (64 GiB by default);
    ``max_chunk_size``     largest chunk size accepted (a chunk must fit a frame);
    ``fsync``              sync data before each have-map and on completion
                           (see the module docstring for what turning it off risks);
    ``verify_on_open``     re-hash chunks adopted from a have-map at open rather
                           than lazily (on first read, or before completion).
    """

    def __init__(
        self,
        root: Path,
        *,
        window: int = DEFAULT_WINDOW,
        quota_bytes: int | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        max_chunk_size: int = MAX_CHUNK_SIZE,
        fsync: bool = True,
        verify_on_open: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError("window must be at least 1")
        if quota_bytes is not None and quota_bytes < 0:
            raise ValueError("quota_bytes must not be negative")
        self.root = Path(root)
        self.window = window
        self.quota_bytes = quota_bytes
        self.max_payload_bytes = max_payload_bytes
        self.max_chunk_size = max_chunk_size
        self.fsync = fsync
        self.verify_on_open = verify_on_open
        self._lock = threading.Lock()
        self._open: dict[bytes, PayloadState] = {}
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def final_path(self, manifest: Manifest, pid: bytes) -> Path:
        """Where the whole payload lives: ``root/H`` or, when it has a usable name, ``root/H/NAME``."""
        hex_id = pid.hex()
        name = safe_name(manifest.name)
        path = self.root / hex_id / name if name else self.root / hex_id
        # defence in depth: safe_name leaves one component, but check the result stays inside
        base = (self.root / hex_id).resolve() if name else self.root.resolve()
        if path.resolve().parent != base:
            raise PayloadError(f"payload name {manifest.name!r} would leave the store")
        return path

    def open(self, manifest: Manifest) -> PayloadState:
        """The payload's state: created, or resumed from disk.

        Verifies the manifest's signature (raises ``SignatureError``), checks its
        size against ``max_payload_bytes`` and ``max_chunk_size``
        (:class:`PayloadTooLarge`) and, for a payload new to the store, against
        the quota (:class:`PayloadQuotaExceeded`). Opening a payload already
        open in this store returns the same state.
        """
        pid = verify_manifest(manifest)
        chunk_digest(manifest.hash_alg, b"")  # HashUnavailable now, not at the first chunk
        if manifest.size > self.max_payload_bytes:
            raise PayloadTooLarge(
                f"payload of {manifest.size} bytes is over the store's {self.max_payload_bytes}-byte limit"
            )
        if manifest.chunk_size > self.max_chunk_size:
            raise PayloadTooLarge(
                f"chunk size {manifest.chunk_size} is over the store's {self.max_chunk_size}-byte limit"
            )
        if manifest.chunk_count >= 2**32:
            raise PayloadTooLarge(f"{manifest.chunk_count} chunks: indices must fit 32 bits")
        with self._lock:
            state = self._open.get(pid)
            if state is not None:
                return state
            mpath = self.root / f"{pid.hex()}.manifest"
            encoded = encode_struct(manifest)
            if not self._manifest_matches(mpath, encoded):
                if self.quota_bytes is not None:  # new to the store (or its manifest file was unreadable)
                    used = sum(m.size for _, m in self._manifests() if payload_id(m) != pid)
                    if used + manifest.size > self.quota_bytes:
                        raise PayloadQuotaExceeded(
                            f"payload of {manifest.size} bytes would take the store to {used + manifest.size} "
                            f"bytes, over its {self.quota_bytes}-byte quota"
                        )
                write_atomic(mpath, encoded, fsync=self.fsync)
                if self.fsync:
                    fsync_dir(self.root)
            state = PayloadState(
                self, manifest, pid, window=self.window, fsync=self.fsync, verify_on_open=self.verify_on_open
            )
            self._open[pid] = state
            return state

    def load_manifest(self, pid: bytes | str) -> Manifest:
        """The stored manifest of a payload (raises ``PayloadError`` if there is none or it is unreadable)."""
        hex_id = _hex_id(pid)
        manifest = self._read_manifest(self.root / f"{hex_id}.manifest")
        if manifest is None:
            raise PayloadError(f"no readable manifest for payload {hex_id}")
        return manifest

    def list(self) -> _Listing:
        """Every payload in the store: ``id`` (hex), ``size``, ``have_bytes``, ``complete``, ``path`` (str or None).

        Open payloads report their live state; others what is on disk (a
        partial payload's have-map, which may lag by up to one window).
        """
        out: _Listing = []
        for hex_id, manifest in self._manifests():
            pid = bytes.fromhex(hex_id)
            with self._lock:
                state = self._open.get(pid)
            if state is not None:
                path = state.path
                out.append(
                    {
                        "id": hex_id,
                        "size": manifest.size,
                        "have_bytes": state.have_bytes,
                        "complete": state.complete,
                        "path": None if path is None else str(path),
                    }
                )
                continue
            try:
                final = self.final_path(manifest, pid)
            except PayloadError:
                continue
            if final.is_file() and final.stat().st_size == manifest.size:
                out.append(
                    {
                        "id": hex_id,
                        "size": manifest.size,
                        "have_bytes": manifest.size,
                        "complete": True,
                        "path": str(final),
                    }
                )
                continue
            have = 0
            try:
                raw = (self.root / f"{hex_id}.have").read_bytes()
            except OSError:
                raw = None
            if raw is not None:
                bitmap = _decode_have(raw, pid, manifest.chunk_count)
                if bitmap is not None:
                    have = _have_bytes_of(manifest, bitmap)
            out.append({"id": hex_id, "size": manifest.size, "have_bytes": have, "complete": False, "path": None})
        return out

    def remove(self, pid: bytes | str) -> bool:
        """Delete a payload (closing it if open): its data, have-map and manifest. Returns whether it existed."""
        hex_id = _hex_id(pid)
        raw_id = bytes.fromhex(hex_id)
        with self._lock:
            state = self._open.pop(raw_id, None)
        if state is not None:
            with state._lock:
                state._dirty = 0  # nothing to persist for a payload being deleted
            state.close()
        found = False
        final_dir = self.root / hex_id
        if final_dir.is_dir() and not final_dir.is_symlink():
            shutil.rmtree(final_dir)
            found = True
        for suffix in ("", ".part", ".have", ".have.tmp", ".manifest.tmp", ".manifest"):
            path = self.root / f"{hex_id}{suffix}"
            try:
                if path.is_dir() and not path.is_symlink():
                    continue
                path.unlink()
                found = True
            except FileNotFoundError:
                pass
        return found

    def used_bytes(self) -> int:
        """Bytes counted against the quota: the sizes of every payload in the store, whole or partial."""
        return sum(m.size for _, m in self._manifests())

    # -- internals -----------------------------------------------------------------------------------------

    def _forget(self, state: PayloadState) -> None:
        with self._lock:
            if self._open.get(state.id) is state:
                del self._open[state.id]

    @staticmethod
    def _manifest_matches(path: Path, encoded: bytes) -> bool:
        try:
            return path.read_bytes() == encoded
        except OSError:
            return False

    @staticmethod
    def _read_manifest(path: Path) -> Manifest | None:
        try:
            if path.stat().st_size > _MAX_MANIFEST_FILE:
                return None
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            manifest = struct_from_plain(Manifest, decode_plain(raw, Limits(max_frame=_MAX_MANIFEST_FILE)), 1)
        except DecodeError:
            return None
        return manifest if isinstance(manifest, Manifest) else None

    def _manifests(self) -> _Manifests:
        """(hex id, manifest) of every readable manifest file whose name matches its content."""
        out: _Manifests = []
        try:
            entries = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return out
        for entry in entries:
            if not entry.endswith(".manifest"):
                continue
            hex_id = entry[: -len(".manifest")]
            if not _HEX_ID.fullmatch(hex_id):
                continue
            manifest = self._read_manifest(self.root / entry)
            if manifest is None or payload_id(manifest).hex() != hex_id:
                log.warning("payload store: %s is unreadable or does not match its name; ignoring it", entry)
                continue
            out.append((hex_id, manifest))
        return out
