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

Quota: the sizes its manifests name (whole payloads and partial ones alike, a partial one
counted at its full size) may not exceed ``quota_bytes``; a new payload that would go over it,
or that does not fit the free disk space, is refused before any of its files is written. When
no quota is configured the payload service sets :func:`default_quota`: what the store holds
plus half the disk space free when the node starts, at most 64 GiB.

Memory: at most one chunk per call is held (the caller's, or one read back);
the bitmaps take one bit per chunk. All I/O is synchronous: the asyncio driver
runs it in a thread (or inline for small chunks). A :class:`PayloadState` may
be used from several threads; its methods serialise on a lock.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import threading
import unicodedata
from pathlib import Path
from typing import Any, Final

from ..exceptions import DecodeError, PayloadError
from ..wire.cbor import decode_plain, encode_struct
from ..wire.limits import Limits
from ..wire.messages import Manifest
from ..wire.schema import struct_from_plain
from .fileio import fsync_dir, write_atomic
from .manifest import MAX_CHUNK_SIZE, chunk_digest, payload_id, verify_manifest
from .state import PayloadState, _decode_have, _have_bytes_of

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "DEFAULT_QUOTA_CAP",
    "DEFAULT_WINDOW",
    "ChunkStore",
    "PayloadState",
    "PayloadTooLarge",
    "PayloadQuotaExceeded",
    "default_quota",
    "safe_name",
]

log = logging.getLogger(__name__)

GiB: Final = 1024**3
DEFAULT_MAX_PAYLOAD_BYTES: Final = 64 * GiB
#: the most a store's default quota (``default_quota``: none configured) may be
DEFAULT_QUOTA_CAP: Final = 64 * GiB
DEFAULT_WINDOW: Final = 16

_HEX_ID: Final = re.compile(r"[0-9a-f]{64}")
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


def default_quota(store: ChunkStore) -> int:
    """The quota of a payload store none was configured for: what it holds now plus half the disk
    space free now, at most ``DEFAULT_QUOTA_CAP`` (64 GiB). Fixed when the node starts (so payloads
    accepted later never take more than half of what was free); ``[payload] quota_mb`` overrides it."""
    try:
        free = shutil.disk_usage(store.root).free
    except OSError:
        free = 0
    return min(store.used_bytes() + free // 2, DEFAULT_QUOTA_CAP)


class ChunkStore:
    """Payloads on disk under ``root``.

    ``window``             have-map flushed every this many new chunks (a crash
                           re-downloads fewer than this many);
    ``quota_bytes``        total payload bytes (held or reserved by partial
                           payloads) the store may take; None for no quota (the
                           payload service gives it ``default_quota`` then). A new
                           payload must also fit the disk's free space, less what
                           the open partial payloads still have to write (their
                           ``.part`` files are sparse);
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
        #: manifest file name -> (its mtime_ns and size, the payload size it names): read once, not per check
        self._sizes: dict[str, tuple[tuple[int, int], int]] = {}
        self._sizes_lock = threading.Lock()  # _used runs in open's thread and on the event loop (status)
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
        the quota and the free disk space (:class:`PayloadQuotaExceeded`), before
        any file is written. Opening a payload already open in this store
        returns the same state.
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
            if not self._manifest_matches(mpath, encoded):  # new to the store (or its manifest was unreadable)
                if self.quota_bytes is not None:
                    if manifest.size > self.quota_bytes:  # no need to look at what is stored
                        raise PayloadQuotaExceeded(
                            f"payload of {manifest.size} bytes is over the store's {self.quota_bytes}-byte quota"
                        )
                    used = self._used(exclude=mpath.name)
                    if used + manifest.size > self.quota_bytes:
                        raise PayloadQuotaExceeded(
                            f"payload of {manifest.size} bytes would take the store to {used + manifest.size} "
                            f"bytes, over its {self.quota_bytes}-byte quota"
                        )
                self._check_disk(manifest.size)
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
        return self._used()

    # -- internals -----------------------------------------------------------------------------------------

    def _used(self, exclude: str = "") -> int:
        """The payload sizes the store's manifest files name (but ``exclude``'s); each file is read once
        (and again only when it changes), so a quota check costs a directory listing, not every manifest."""
        with self._sizes_lock:
            return self._used_locked(exclude)

    def _used_locked(self, exclude: str) -> int:
        try:
            entries = os.listdir(self.root)
        except FileNotFoundError:
            return 0
        total = 0
        seen: set[str] = set()
        for entry in entries:
            if not entry.endswith(".manifest") or not _HEX_ID.fullmatch(entry[: -len(".manifest")]):
                continue
            path = self.root / entry
            try:
                st = path.stat()
            except OSError:
                continue
            key = (st.st_mtime_ns, st.st_size)
            cached = self._sizes.get(entry)
            if cached is None or cached[0] != key:
                manifest = self._read_manifest(path)
                if manifest is None or payload_id(manifest).hex() != entry[: -len(".manifest")]:
                    self._sizes.pop(entry, None)
                    continue
                cached = self._sizes[entry] = (key, manifest.size)
            seen.add(entry)
            if entry != exclude:
                total += cached[1]
        for gone in set(self._sizes) - seen:
            del self._sizes[gone]
        return total

    def _check_disk(self, size: int) -> None:
        """Raise PayloadQuotaExceeded unless ``size`` more bytes fit the disk, beside what the open partial
        payloads still have to write (a ``.part`` is sparse: its blocks are taken as chunks arrive)."""
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            return
        owed = sum(
            st.manifest.size - min(st._held * st.manifest.chunk_size, st.manifest.size)  # unlocked: an estimate
            for st in self._open.values()
            if not st.complete
        )
        if size + owed > free:
            raise PayloadQuotaExceeded(
                f"payload of {size} bytes does not fit the {free} bytes free on disk"
                + (f" ({owed} of them owed to payloads being received)" if owed else "")
            )

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
