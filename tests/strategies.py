"""Hypothesis strategies derived from the wire schema.

Every message and struct class declares its fields (``WIRE_FIELDS``) with a
field *kind*; :func:`strategy_for_kind` maps each kind to a strategy, so a new
message class or field is covered by the property tests without any change
here. Classes whose ``__post_init__`` enforces an invariant the plain field
strategies would violate (``Manifest``, ``IndexRange``) and the self-recursive
``RouteSegment`` get hand-written strategies in ``_OVERRIDES``.

Values are kept small (short strings and collections, tiny tensors, shallow
route trees) so that hundreds of examples per message type run in seconds.
"""

from __future__ import annotations

import dataclasses
import math
from functools import cache
from typing import Any

from hypothesis import strategies as st

from edgeagent.wire import REGISTRY, Envelope, NodeId, ObjectRef, Tensor
from edgeagent.wire.kinds import I64_MAX, I64_MIN
from edgeagent.wire.messages import HASH_SIZES, IndexRange, Manifest
from edgeagent.wire.route import Route, RouteSegment
from edgeagent.wire.schema import (
    BOOL,
    BYTES,
    F64,
    I64,
    NODEID,
    STR,
    TENSOR,
    U32,
    U64,
    VALUE,
    Kind,
    Opt,
    Rep,
    StrMap,
    Struct,
    StructKind,
)
from edgeagent.wire.tensor import DTYPES

__all__ = [
    "U32_MAX",
    "U64_MAX",
    "envelope_strategy",
    "floats",
    "message_strategy",
    "node_ids",
    "strategy_for_kind",
    "struct_strategy",
    "tensors",
    "texts",
    "values",
]

U64_MAX = 2**64 - 1
U32_MAX = 2**32 - 1

MAX_ITEMS = 3  # elements in a generated repeated field, map or value list


def _uint(maximum: int) -> st.SearchStrategy[int]:
    # mostly small numbers, with the boundaries (and everything between) reachable
    edges = sorted({v for v in (maximum, maximum - 1, 2**31, 2**32 - 1) if v <= maximum})
    return st.one_of(st.integers(0, 300), st.sampled_from(edges), st.integers(0, maximum))


def _sint() -> st.SearchStrategy[int]:
    edges = [I64_MIN, I64_MIN + 1, I64_MAX, -(2**31), 2**32]
    return st.one_of(st.integers(-300, 300), st.sampled_from(edges), st.integers(I64_MIN, I64_MAX))


#: short text, including non-ASCII (never lone surrogates: they are not UTF-8)
texts = st.text(max_size=8)
#: finite and infinite floats, never NaN (NaN != NaN would defeat the equality checks)
floats = st.floats(allow_nan=False)
node_ids = st.binary(min_size=32, max_size=32).map(NodeId.from_public_key)


@st.composite
def tensors(draw: st.DrawFn, max_dims: int = 3, max_dim: int = 3) -> Tensor:
    dtype = draw(st.sampled_from(sorted(DTYPES)))
    shape = tuple(draw(st.lists(st.integers(0, max_dim), max_size=max_dims)))
    n = math.prod(shape) * DTYPES[dtype][0]
    return Tensor(dtype, shape, draw(st.binary(min_size=n, max_size=n)))


object_refs = st.builds(ObjectRef, texts)

#: the dynamic VALUE kind: None, bool, int64, float, str, bytes, Tensor, ObjectRef, lists and str-keyed maps
values: st.SearchStrategy[Any] = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        _sint(),
        floats,
        texts,
        st.binary(max_size=16),
        tensors(),
        object_refs,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=MAX_ITEMS),
        st.dictionaries(texts, children, max_size=MAX_ITEMS),
    ),
    max_leaves=8,
)

_SCALARS: dict[int, st.SearchStrategy[Any]] = {
    id(U64): _uint(U64_MAX),
    id(U32): _uint(U32_MAX),
    id(I64): _sint(),
    id(F64): floats,
    id(BOOL): st.booleans(),
    id(STR): texts,
    id(BYTES): st.binary(max_size=24),
    id(NODEID): node_ids,
    id(TENSOR): tensors(),
    id(VALUE): values,
}


def strategy_for_kind(kind: Kind) -> st.SearchStrategy[Any]:
    """A strategy for the Python values one field of this kind can carry."""
    scalar = _SCALARS.get(id(kind))
    if scalar is not None:
        return scalar
    if isinstance(kind, Opt):
        return st.one_of(st.none(), strategy_for_kind(kind.inner))
    if isinstance(kind, Rep):
        return st.lists(strategy_for_kind(kind.inner), max_size=MAX_ITEMS).map(tuple)
    if isinstance(kind, StrMap):
        return st.dictionaries(texts, strategy_for_kind(kind.inner), max_size=MAX_ITEMS)
    if isinstance(kind, StructKind):
        return struct_strategy(kind.cls)
    raise TypeError(f"no strategy for field kind {kind!r}: teach tests/strategies.py about it")


def _field_strategies(cls: type[Struct], skip: tuple[str, ...] = ()) -> dict[str, st.SearchStrategy[Any]]:
    """One strategy per wire field; optional fields often keep their default (the omitted form)."""
    out: dict[str, st.SearchStrategy[Any]] = {}
    for f in cls.WIRE_FIELDS:
        if f.name in skip:
            continue
        s = strategy_for_kind(f.kind)
        if not f.required:
            s = st.one_of(st.just(f.default), s)
        out[f.name] = s
    return out


@st.composite
def _manifests(draw: st.DrawFn) -> Manifest:
    chunk_size = draw(st.one_of(st.integers(1, 64), st.sampled_from([256 * 1024, U32_MAX])))
    # at most 64 chunks, so chunk_hashes stays small
    size = draw(st.integers(0, 64 * chunk_size))
    hash_alg = draw(st.sampled_from(sorted(HASH_SIZES)))
    count = -(-size // chunk_size)
    n = count * HASH_SIZES[hash_alg]
    chunk_hashes = draw(st.binary(min_size=n, max_size=n))
    rest = draw(st.fixed_dictionaries(_field_strategies(Manifest, ("size", "chunk_size", "hash_alg", "chunk_hashes"))))
    return Manifest(size=size, chunk_size=chunk_size, hash_alg=hash_alg, chunk_hashes=chunk_hashes, **rest)


@st.composite
def _index_ranges(draw: st.DrawFn) -> IndexRange:
    start = draw(_uint(U32_MAX))
    stop = draw(st.integers(start, min(U32_MAX, start + 1000)) | st.integers(start, U32_MAX))
    return IndexRange(start, stop)


def _route_segments() -> st.SearchStrategy[RouteSegment]:
    hops_kind = next(f.kind for f in RouteSegment.WIRE_FIELDS if f.name == "hops")
    hops = strategy_for_kind(hops_kind)
    leaf = st.builds(RouteSegment, hops=hops, children=st.just(()))
    return st.recursive(
        leaf,
        lambda children: st.builds(RouteSegment, hops=hops, children=st.lists(children, max_size=2).map(tuple)),
        max_leaves=4,
    )


_OVERRIDES: dict[type[Struct], Any] = {
    Manifest: _manifests,
    IndexRange: _index_ranges,
    RouteSegment: _route_segments,
}


@cache
def struct_strategy(cls: type[Struct]) -> st.SearchStrategy[Any]:
    """Instances of a wire struct or message class, built from its WIRE_FIELDS."""
    override = _OVERRIDES.get(cls)
    if override is not None:
        return override()
    if not (dataclasses.is_dataclass(cls) and issubclass(cls, Struct)):
        raise TypeError(f"{cls!r} is not a wire struct")
    # deferred: a struct may (indirectly) contain itself
    return st.deferred(lambda: st.builds(cls, **_field_strategies(cls)))


def message_strategy() -> st.SearchStrategy[Any]:
    """Any registered message, of any type."""
    return st.one_of([struct_strategy(cls) for _, cls in sorted(REGISTRY.items())])


def envelope_strategy(body: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Envelope]:
    """Envelopes with every header field varied; ``body`` defaults to :func:`message_strategy`."""
    return st.builds(
        Envelope,
        body=message_strategy() if body is None else body,
        source=node_ids,
        destination=st.none() | node_ids,
        msg_id=_uint(U64_MAX),
        reply_to=st.none() | _uint(U64_MAX),
        route=st.none() | struct_strategy(Route),
        ttl=_uint(U32_MAX),
        version=st.just(1),
    )
