"""The worker: an object store, the allow-listed operations, plans and per-peer rights."""

from __future__ import annotations

from .ops import OPS, run_op
from .permissions import Permissions, Right
from .store import ObjectStore, StoredObject, value_size
from .worker import WORKER_MESSAGES, Worker

__all__ = [
    "OPS",
    "WORKER_MESSAGES",
    "ObjectStore",
    "Permissions",
    "Right",
    "StoredObject",
    "Worker",
    "run_op",
    "value_size",
]
