"""Per-peer rights on a worker (pure).

Rights: ``push`` (store objects), ``pull`` (fetch or move objects), ``search``
(search, is-none, shape), ``operate`` (run allow-listed operations), ``plan``
(register, fetch, run and list plans). By default the node's domain and the
explicitly allowed peers have every right and nobody else has any; a peer's
rights can be narrowed or widened one by one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Flag, auto

from ..wire import NodeId

__all__ = ["Permissions", "Right"]


class Right(Flag):
    NONE = 0
    PUSH = auto()
    PULL = auto()
    SEARCH = auto()
    OPERATE = auto()
    PLAN = auto()
    ALL = PUSH | PULL | SEARCH | OPERATE | PLAN


@dataclass
class Permissions:
    """``default`` applies to the domain and to ``allowed`` peers; ``per_peer`` overrides it."""

    domains: set[NodeId] = field(default_factory=set)
    allowed: set[NodeId] = field(default_factory=set)
    open: bool = False  # every authenticated peer gets ``default``
    default: Right = Right.ALL
    per_peer: dict[NodeId, Right] = field(default_factory=dict)

    def rights(self, peer: NodeId) -> Right:
        if peer in self.per_peer:
            return self.per_peer[peer]
        if self.open or peer in self.domains or peer in self.allowed:
            return self.default
        return Right.NONE

    def allows(self, peer: NodeId, right: Right) -> bool:
        return right in self.rights(peer)

    def is_domain(self, peer: NodeId) -> bool:
        return peer in self.domains
