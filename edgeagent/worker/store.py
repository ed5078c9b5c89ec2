"""The object store (pure: time comes in as ``now``, in seconds on any monotonic clock).

Objects are values (tensors, bytes, any wire Value) with an id, tags, a
description, an owner and a size. The store enforces a byte quota and keeps
each object only until its lease expires unless renewed: leases, not
reference counts, so a lost delete message or a crashed client never pins
memory for good (PySyft's reference counting did). The tag index is kept
consistent on every delete and expiry.

An object's size, what the quota counts, is its value's (``value_size``) plus
its metadata's (``meta_size``): the bytes of its id, tags (and their tag-index
entries) and description beyond the first ``META_FREE`` (64), which its
per-object cost covers. The store also holds at most ``max_objects`` objects,
so that allowance and the per-object bookkeeping stay bounded too.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from ..exceptions import ObjectNotFound, QuotaExceeded
from ..wire import NodeId, ObjectRef, Tensor

__all__ = ["META_FREE", "ObjectStore", "StoredObject", "meta_size", "value_size"]

_SCALAR_SIZE = 8
#: bytes of id, tags and description an object carries without them counting (see the module docstring)
META_FREE: Final = 64
_TAG_COST: Final = 8  # a tag's entry in the tag index, on top of its bytes


def value_size(value: Any, _depth: int = 0) -> int:
    """Bytes a value is accounted as (payload bytes plus a small cost per element)."""
    if isinstance(value, Tensor):
        return len(value.data) + 64
    if isinstance(value, (bytes, bytearray, memoryview)):
        return len(value) + 16
    if isinstance(value, str):
        return len(value.encode()) + 16
    if isinstance(value, list):
        return 16 + sum(value_size(v, _depth + 1) for v in value)
    if isinstance(value, dict):
        return 16 + sum(len(k.encode()) + value_size(v, _depth + 1) for k, v in value.items())
    if isinstance(value, ObjectRef):
        return len(value.id) + 16
    return _SCALAR_SIZE


def meta_size(obj_id: str, tags: Iterable[str], description: str) -> int:
    """Bytes an object's id, tags and description are accounted as: what they take beyond ``META_FREE``."""
    raw = len(obj_id.encode()) + sum(len(t.encode()) + _TAG_COST for t in set(tags)) + len(description.encode())
    return max(0, raw - META_FREE)


@dataclass
class StoredObject:
    id: str
    value: Any
    tags: frozenset[str]
    description: str
    owner: NodeId | None
    size: int
    expires_at: float


@dataclass
class ObjectStore:
    """Objects by id with a byte quota and leases. ``default_lease`` and ``max_lease`` are seconds."""

    quota_bytes: int = 256 << 20
    default_lease: float = 600.0
    max_lease: float = 86_400.0
    max_objects: int = 65_536
    _objects: dict[str, StoredObject] = field(default_factory=dict)
    _tags: dict[str, set[str]] = field(default_factory=dict)
    _expiry: list[tuple[float, str]] = field(default_factory=list)  # heap; stale entries skipped
    used_bytes: int = 0

    def _lease(self, lease: float | None) -> float:
        if lease is None or lease <= 0:
            return self.default_lease
        return min(lease, self.max_lease)

    def put(
        self,
        obj_id: str,
        value: Any,
        *,
        now: float,
        tags: tuple[str, ...] = (),
        description: str = "",
        owner: NodeId | None = None,
        lease: float | None = None,
    ) -> StoredObject:
        """Store (or replace) an object; raises QuotaExceeded and leaves the store unchanged.

        Its size is its value's plus its metadata's (``meta_size``): tags and description count."""
        self.sweep(now)
        size = value_size(value) + meta_size(obj_id, tags, description)
        self.check_fits(obj_id, size)
        old = self._objects.get(obj_id)
        if old is not None:
            self._remove(old)
        obj = StoredObject(obj_id, value, frozenset(tags), description, owner, size, now + self._lease(lease))
        self._objects[obj_id] = obj
        self.used_bytes += size
        for tag in obj.tags:
            self._tags.setdefault(tag, set()).add(obj_id)
        heapq.heappush(self._expiry, (obj.expires_at, obj_id))
        return obj

    def room(self, replacing: Iterable[str] = ()) -> int:
        """Bytes the quota has left, counting the objects in ``replacing`` (about to be replaced) as gone."""
        freed = sum(o.size for o in map(self._objects.get, set(replacing)) if o is not None)
        return self.quota_bytes - self.used_bytes + freed

    def check_fits(self, obj_id: str, size: int) -> None:
        """Raise QuotaExceeded unless an object of ``size`` bytes may be stored as ``obj_id`` now
        (replacing what is stored under that id): the byte quota and ``max_objects``."""
        room = self.room((obj_id,))
        if size > room:
            raise QuotaExceeded(
                f"storing {obj_id!r} ({size} bytes) would exceed the quota "
                f"({self.quota_bytes - room} of {self.quota_bytes} bytes used)"
            )
        if obj_id not in self._objects and len(self._objects) >= self.max_objects:
            raise QuotaExceeded(f"storing {obj_id!r} would exceed the quota of {self.max_objects} objects")

    def get(self, obj_id: str, *, now: float) -> StoredObject:
        obj = self._objects.get(obj_id)
        if obj is None or obj.expires_at <= now:
            if obj is not None:
                self._remove(obj)
            raise ObjectNotFound(f"no object {obj_id!r}")
        return obj

    def peek(self, obj_id: str) -> StoredObject | None:
        """The stored object or None, without touching its lease (expired ones may still show until swept)."""
        return self._objects.get(obj_id)

    def __contains__(self, obj_id: object) -> bool:
        return obj_id in self._objects

    def __len__(self) -> int:
        return len(self._objects)

    def delete(self, obj_ids: tuple[str, ...] | list[str]) -> int:
        """Delete what exists among ``obj_ids`` (idempotent); returns how many were deleted."""
        n = 0
        for obj_id in obj_ids:
            obj = self._objects.get(obj_id)
            if obj is not None:
                self._remove(obj)
                n += 1
        return n

    def renew(self, obj_ids: tuple[str, ...] | list[str], *, now: float, lease: float | None = None) -> list[str]:
        """Extend leases; returns the ids renewed (expired or unknown ids are skipped)."""
        self.sweep(now)
        renewed = []
        for obj_id in obj_ids:
            obj = self._objects.get(obj_id)
            if obj is not None:
                obj.expires_at = now + self._lease(lease)
                heapq.heappush(self._expiry, (obj.expires_at, obj_id))
                renewed.append(obj_id)
        return renewed

    def search(self, terms: tuple[str, ...] | list[str], *, now: float) -> list[str]:
        """Ids matching *every* term; a term matches an id exactly, a tag exactly, or a word of the description.

        No terms matches everything; a term that matches nothing makes the result empty.
        """
        self.sweep(now)
        result: set[str] | None = None
        for term in terms:
            matches = set(self._tags.get(term, ()))
            if term in self._objects:
                matches.add(term)
            low = term.lower()
            matches.update(o.id for o in self._objects.values() if low and low in o.description.lower().split())
            result = matches if result is None else result & matches
            if not result:
                return []
        return sorted(self._objects if result is None else result)

    def sweep(self, now: float) -> list[str]:
        """Drop objects whose lease has expired; returns their ids."""
        expired = []
        heap = self._expiry
        while heap and heap[0][0] <= now:
            _, obj_id = heapq.heappop(heap)
            obj = self._objects.get(obj_id)
            if obj is not None and obj.expires_at <= now:
                self._remove(obj)
                expired.append(obj_id)
        return expired

    def _remove(self, obj: StoredObject) -> None:
        del self._objects[obj.id]
        self.used_bytes -= obj.size
        for tag in obj.tags:
            ids = self._tags.get(tag)
            if ids is not None:
                ids.discard(obj.id)
                if not ids:
                    del self._tags[tag]

    def tags(self) -> dict[str, int]:
        """Tag -> number of objects carrying it (for status and tests of index consistency)."""
        return {t: len(ids) for t, ids in self._tags.items()}
