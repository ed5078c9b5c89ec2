"""Payload trees (DESIGN s.6): signed manifests, the on-disk chunk store, the forest planner and the driver."""

from .manifest import (
    HashUnavailable,
    chunk_digest,
    hash_available,
    make_manifest,
    payload_id,
    verify_chunk,
    verify_manifest,
)
from .planner import Forest, Member, Tree, bound_seconds, check_forest, plan_forest
from .repair import reassign_metered, repair
from .service import PayloadService, SendResult
from .store import ChunkStore, PayloadQuotaExceeded, PayloadState, PayloadTooLarge, safe_name

__all__ = [
    "ChunkStore",
    "Forest",
    "HashUnavailable",
    "Member",
    "PayloadQuotaExceeded",
    "PayloadService",
    "PayloadState",
    "PayloadTooLarge",
    "SendResult",
    "Tree",
    "bound_seconds",
    "check_forest",
    "chunk_digest",
    "hash_available",
    "make_manifest",
    "payload_id",
    "plan_forest",
    "reassign_metered",
    "repair",
    "safe_name",
    "verify_chunk",
    "verify_manifest",
]
