"""Payload manifests: make one from a file or bytes, derive the payload id, verify manifests and chunks.

A manifest (:class:`~edgeagent.wire.messages.Manifest`) lists a payload's size,
chunk size, hash algorithm and the digest of every chunk, and is signed by its
origin. The payload id is the SHA-256 of the manifest's CBOR encoding,
signature included (DESIGN.md section 6), so a relay can neither forge the
manifest nor corrupt a chunk without the receiver noticing.

BLAKE3 needs the optional ``blake3`` package (``pip install 'edgeagent[blake3]'``);
asking for it without the package raises :class:`HashUnavailable`.

Nothing here reads the clock: ``created_ms`` is passed in.
"""

from __future__ import annotations

import hashlib
import hmac
import importlib
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Final

from ..exceptions import PayloadError, SignatureError
from ..identity import Identity, sign_struct, verify, verify_struct
from ..wire.cbor import encode_struct
from ..wire.messages import HASH_SIZES, Manifest
from ..wire.nodeid import NodeId

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "HashUnavailable",
    "Source",
    "admission",
    "admission_valid",
    "chunk_digest",
    "hash_available",
    "make_manifest",
    "payload_id",
    "verify_chunk",
    "verify_manifest",
]

#: bytes per chunk unless the caller chooses otherwise
DEFAULT_CHUNK_SIZE: Final = 256 * 1024
#: largest chunk make_manifest will cut: a Chunk message must fit in one frame (16 MiB by default)
MAX_CHUNK_SIZE: Final = 8 * 1024 * 1024

#: a path to a file (str or path-like), or the payload itself (bytes-like)
Source = str | os.PathLike[str] | bytes | bytearray | memoryview

Buffer = bytes | bytearray | memoryview


class HashUnavailable(PayloadError):
    """The hash algorithm is known but its implementation is not installed (BLAKE3 without ``blake3``)."""


@cache
def _hasher(hash_alg: str) -> Callable[[Buffer], bytes]:
    if hash_alg == "sha256":
        return lambda data: hashlib.sha256(data).digest()
    if hash_alg == "blake3":
        try:
            mod = importlib.import_module("blake3")  # optional; imported dynamically so mypy needs no stubs
        except ImportError:
            raise HashUnavailable(
                "hash_alg 'blake3' needs the optional blake3 package: pip install 'edgeagent[blake3]'"
            ) from None
        b3 = mod.blake3
        return lambda data: bytes(b3(data).digest())
    raise ValueError(f"unknown hash algorithm {hash_alg!r}; use one of {sorted(HASH_SIZES)}")


def hash_available(hash_alg: str) -> bool:
    """Whether this node can compute ``hash_alg`` (so may advertise it)."""
    try:
        _hasher(hash_alg)
    except (HashUnavailable, ValueError):
        return False
    return True


def chunk_digest(hash_alg: str, data: Buffer) -> bytes:
    """The digest of one chunk under ``hash_alg`` ("sha256" or "blake3").

    Raises ``ValueError`` for an unknown algorithm and :class:`HashUnavailable`
    for BLAKE3 without the ``blake3`` package.
    """
    return _hasher(hash_alg)(data)


def payload_id(manifest: Manifest) -> bytes:
    """The payload's 32-byte id: SHA-256 of the whole manifest's CBOR encoding, signature included.

    This does not check the signature; use :func:`verify_manifest` on anything received.
    """
    return hashlib.sha256(encode_struct(manifest)).digest()


def verify_manifest(manifest: Manifest) -> bytes:
    """Check that the manifest names its origin and that the origin signed it; returns the payload id.

    Raises :class:`~edgeagent.exceptions.SignatureError` when the origin is
    missing, the signature is missing, or it does not verify (any field changed).
    The manifest's internal consistency (hash bytes per chunk, known algorithm)
    is already enforced when a ``Manifest`` is constructed or decoded.
    """
    if manifest.origin is None:
        raise SignatureError("manifest has no origin")
    verify_struct(manifest, manifest.origin)
    return payload_id(manifest)


def verify_chunk(manifest: Manifest, index: int, data: Buffer) -> bool:
    """Whether ``data`` is chunk ``index`` of the payload: the index exists, the length and the hash match.

    Raises :class:`HashUnavailable` (rather than answering False) when the
    manifest's algorithm cannot be computed here.
    """
    if not 0 <= index < manifest.chunk_count:
        return False
    if memoryview(data).nbytes != manifest.chunk_length(index):
        return False
    return hmac.compare_digest(chunk_digest(manifest.hash_alg, data), manifest.chunk_hash(index))


def make_manifest(
    source: Source,
    identity: Identity,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    hash_alg: str = "sha256",
    name: str = "",
    created_ms: int,
) -> Manifest:
    """A manifest of ``source`` signed by ``identity`` (its origin).

    ``source`` is a path (``str`` or path-like) to a file, read chunk by chunk
    with one chunk-sized buffer whatever the file size; or the payload itself
    as bytes-like data (``bytes`` is always data, never a path). The size is what
    was read, so a file that grows while it is hashed yields a consistent
    manifest of the bytes that were hashed. An empty payload is allowed (size 0,
    no chunks).
    """
    if not 0 < chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between 1 and {MAX_CHUNK_SIZE}, got {chunk_size}")
    if hash_alg not in HASH_SIZES:
        raise ValueError(f"unknown hash algorithm {hash_alg!r}; use one of {sorted(HASH_SIZES)}")
    if created_ms < 0:
        raise ValueError("created_ms must not be negative")
    digest = _hasher(hash_alg)  # fail early, before reading anything
    hashes = bytearray()
    size = 0
    if isinstance(source, bytes | bytearray | memoryview):
        view = memoryview(source).cast("B")
        size = view.nbytes
        for start in range(0, size, chunk_size):
            hashes += digest(view[start : start + chunk_size])
    else:
        buf = bytearray(chunk_size)
        bview = memoryview(buf)
        with Path(source).open("rb", buffering=0) as fh:
            while True:
                n = 0
                while n < chunk_size:  # fill the whole chunk (readinto may return short)
                    got = fh.readinto(bview[n:])
                    if not got:
                        break
                    n += got
                if n == 0:
                    break
                hashes += digest(bview[:n])
                size += n
                if n < chunk_size:
                    break
    unsigned = Manifest(
        size=size,
        chunk_size=chunk_size,
        hash_alg=hash_alg,
        chunk_hashes=bytes(hashes),
        origin=identity.node_id,
        name=name,
        created_ms=created_ms,
    )
    return sign_struct(unsigned, identity)


#: domain separation: an admission is never valid as any other signature
_ADMISSION_CONTEXT: Final = b"edgeagent payload admission v1\x00"


def _admission_message(pid: bytes, child: NodeId, parent: NodeId) -> bytes:
    return _ADMISSION_CONTEXT + pid + child.to_bytes() + parent.to_bytes()


def admission(identity: Identity, pid: bytes, child: NodeId, parent: NodeId) -> bytes:
    """The source's credential for ``child`` at ``parent`` in payload ``pid``: its signature over the three.

    The child shows it to the parent with its ``Have``; the parent, checking it against the payload's
    source, serves the child that payload's messages even before its own assignment names the child.
    """
    return identity.sign(_admission_message(pid, child, parent))


def admission_valid(source: NodeId, pid: bytes, child: NodeId, parent: NodeId, signature: bytes) -> bool:
    """Whether ``signature`` is ``source``'s admission of ``child`` at ``parent`` for ``pid``."""
    if len(signature) != 64:
        return False
    try:
        verify(source, _admission_message(pid, child, parent), signature)
    except SignatureError:
        return False
    return True
