"""Payload trees: manifests, tree assignments, chunks, repair and progress."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from ..nodeid import NodeId
from ..route import RouteSegment
from ..schema import BOOL, BYTES, NODEID, STR, U32, U64, Message, Opt, Rep, Struct, StructKind, fld, message, struct

__all__ = ["HASH_SIZES", "Assist", "Chunk", "ChunkRequest", "Have", "IndexRange", "Manifest", "Progress", "TreeAssign"]

#: hash algorithm name -> digest size in bytes
HASH_SIZES: Final = {"sha256": 32, "blake3": 32}


@message(64)
@dataclass(frozen=True, slots=True)
class Manifest(Message):
    """What a payload is: its size, chunking, per-chunk hashes and origin, signed.

    The payload id is the SHA-256 of the manifest's CBOR encoding (signature
    included); ``chunk_hashes`` is the concatenation of one digest per chunk.
    """

    size: int = fld(1, U64, "payload bytes")
    chunk_size: int = fld(2, U32, "bytes per chunk (the last may be shorter)")
    hash_alg: str = fld(3, STR, '"sha256" or "blake3"', default="sha256")
    chunk_hashes: bytes = fld(4, BYTES, "digest of every chunk, concatenated in chunk order", default=b"")
    origin: NodeId | None = fld(5, Opt(NODEID), "the node that made and signed the manifest")
    name: str = fld(6, STR, "suggested file name", default="")
    created_ms: int = fld(7, U64, "ms since the Unix epoch", default=0)
    signature: bytes = fld(8, BYTES, "origin's Ed25519 signature over the manifest with this field empty", default=b"")

    def __post_init__(self) -> None:
        digest = HASH_SIZES.get(self.hash_alg)
        if digest is None:
            raise ValueError(f"unknown hash algorithm {self.hash_alg!r}")
        if self.chunk_size <= 0:
            raise ValueError("chunk_size must be positive")
        if len(self.chunk_hashes) != self.chunk_count * digest:
            raise ValueError(
                f"{self.chunk_count} chunks need {self.chunk_count * digest} hash bytes, got {len(self.chunk_hashes)}"
            )

    @property
    def chunk_count(self) -> int:
        return -(-self.size // self.chunk_size)

    def chunk_hash(self, index: int) -> bytes:
        d = HASH_SIZES[self.hash_alg]
        if not 0 <= index < self.chunk_count:
            raise IndexError(index)
        return self.chunk_hashes[index * d : (index + 1) * d]

    def chunk_length(self, index: int) -> int:
        if not 0 <= index < self.chunk_count:
            raise IndexError(index)
        return min(self.chunk_size, self.size - index * self.chunk_size)


@message(65)
@dataclass(frozen=True, slots=True)
class TreeAssign(Message):
    """Tells a node its place in the forwarding forest of one payload."""

    payload_id: bytes = fld(1, BYTES, "the payload")
    stripe: int = fld(2, U32, "the stripe (tree) this assignment is for", default=0)
    stripes: int = fld(3, U32, "number of stripes; chunk i belongs to stripe i % stripes", default=1)
    parent: NodeId | None = fld(4, Opt(NODEID), "where this node's chunks of the stripe come from")
    children: tuple[NodeId, ...] = fld(5, Rep(NODEID), "nodes this node forwards the stripe to")
    subtree: RouteSegment | None = fld(6, Opt(StructKind(RouteSegment)), "the tree below this node, for repair")
    manifest: Manifest | None = fld(7, Opt(StructKind(Manifest)), "the signed manifest, so the node can verify")
    parent_addresses: tuple[str, ...] = fld(8, Rep(STR), "URLs the parent accepts links on (the child dials)")
    weights: tuple[int, ...] = fld(
        9, Rep(U32), "receivers at or below each child (parallel to children): children that relay are served first"
    )
    admission: bytes = fld(
        10,
        BYTES,
        "the source's signature admitting this node at its parent for this payload (payload.admission): "
        "the node shows it to the parent with its Have, so a parent accepts a child it has not heard of yet",
        default=b"",
    )


@message(66)
@dataclass(frozen=True, slots=True)
class Chunk(Message):
    """One chunk of a payload; verified against the manifest before use or forwarding."""

    payload_id: bytes = fld(1, BYTES, "the payload")
    index: int = fld(2, U32, "chunk index")
    data: bytes = fld(3, BYTES, "the chunk's bytes (last field: encoded without extra copies)")


@struct
@dataclass(frozen=True, slots=True)
class IndexRange(Struct):
    """Chunk indices ``start <= i < stop``."""

    start: int = fld(1, U32, "first index")
    stop: int = fld(2, U32, "one past the last index")

    def __post_init__(self) -> None:
        if self.stop < self.start:
            raise ValueError("IndexRange stop < start")


@message(67)
@dataclass(frozen=True, slots=True)
class ChunkRequest(Message):
    """Ask a parent (or any holder) for chunks this node lacks."""

    payload_id: bytes = fld(1, BYTES, "the payload")
    ranges: tuple[IndexRange, ...] = fld(2, Rep(StructKind(IndexRange)), "the missing chunks")


@message(68)
@dataclass(frozen=True, slots=True)
class Have(Message):
    """A node's have-map: bit i (LSB first in byte i // 8) set when chunk i is verified."""

    payload_id: bytes = fld(1, BYTES, "the payload")
    bitmap: bytes = fld(2, BYTES, "the have-map", default=b"")
    source: NodeId | None = fld(3, Opt(NODEID), "the payload's source, who signed the admission")
    admission: bytes = fld(4, BYTES, "the admission from the sender's TreeAssign for this parent", default=b"")


@message(69)
@dataclass(frozen=True, slots=True)
class Progress(Message):
    """Transfer progress, reported up the tree to the source."""

    payload_id: bytes = fld(1, BYTES, "the payload")
    have_bytes: int = fld(2, U64, "verified bytes held", default=0)
    complete: bool = fld(3, BOOL, "the whole payload is verified and stored", default=False)
    bytes_sent: int = fld(4, U64, "payload bytes this node has uploaded", default=0)
    lost_parent: NodeId | None = fld(5, Opt(NODEID), "a parent that died or stalls: re-attach this node")
    bad_parent: NodeId | None = fld(6, Opt(NODEID), "a parent that sent chunks failing verification")
    bad_chunks: int = fld(7, U32, "chunks received that failed verification", default=0)
    stripe_have: tuple[int, ...] = fld(8, Rep(U32), "chunks held per stripe (index j: stripe j)")
    stalled: bool = fld(9, BOOL, "lost_parent is linked but has sent nothing for a while", default=False)
    linked: bool = fld(10, BOOL, "linked to (and told its Have to) every parent assigned", default=False)
    idle: bool = fld(
        11, BOOL, "holds all of the stripes it forwards and has sent its children all of them", default=False
    )


@message(70)
@dataclass(frozen=True, slots=True)
class Assist(Message):
    """From the source in a payload's last stretch: ``helper`` serves ``receiver`` the end of one stripe.

    The helper holds the whole stripe (it forwards that stripe, or holds the
    whole payload) and has sent its own children all they get from it, so its
    uplink is idle while ``receiver``, deep in a tree, still waits for a busy
    parent. Sent to both: the helper admits the receiver; the receiver asks the
    helper (``ChunkRequest``) for the last ``count`` chunks of ``stripe`` it
    lacks and tells its parent (``Have``) what arrived, so the parent skips those.
    """

    payload_id: bytes = fld(1, BYTES, "the payload")
    receiver: NodeId = fld(2, NODEID, "the node that pulls the chunks")
    helper: NodeId = fld(3, NODEID, "the node that serves them (holds the whole stripe)")
    helper_addresses: tuple[str, ...] = fld(4, Rep(STR), "URLs the helper accepts links on")
    stripe: int = fld(5, U32, "the stripe", default=0)
    count: int = fld(6, U32, "how many: the last this many chunks of the stripe the receiver lacks", default=0)
