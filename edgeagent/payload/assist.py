"""The last stretch of a payload (pure): idle relays paired with the receivers still waiting, so
uplinks with nothing left to send serve the end of the stripes others still miss."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence, Set
from dataclasses import dataclass

from ..wire import NodeId
from .planner import Forest, Member

__all__ = ["Standing", "assists", "stripe_sizes"]


@dataclass(frozen=True)
class Standing:
    """What the source last heard from a member: whether it holds everything, and chunks held per stripe."""

    complete: bool
    stripe_have: tuple[int, ...]
    #: it holds every chunk of the stripes it forwards and has sent its children all of them
    #: (its uplink has nothing left to do)
    idle: bool = False
    #: linked to every parent, which have been told its have-map (so they push to it)
    linked: bool = False


def stripe_sizes(chunk_count: int, stripes: int) -> list[int]:
    """Chunks in each stripe (chunk i belongs to stripe i % stripes)."""
    k = max(stripes, 1)
    return [len(range(j, chunk_count, k)) for j in range(k)]


def assists(
    forest: Forest,
    standing: Mapping[NodeId, Standing],
    members: Sequence[Member],
    chunk_count: int,
    *,
    active: Mapping[tuple[NodeId, int], NodeId],
    dead: Set[NodeId] = frozenset(),
    per_helper: int = 2,
    min_chunks: int = 4,
) -> list[tuple[NodeId, int, NodeId, int]]:
    """Which idle relays should serve which waiting receivers: ``(receiver, stripe, helper, count)``.

    A tree keeps every relay's uplink full, so it has no slack: a receiver deep in
    the trees, behind several relays that each fell a little behind, finishes
    well after the rest while relays that are done sit idle. A *helper* for
    stripe j is a member that may relay (``relay_ok``), holds all of stripe j
    (or everything) and is ``idle`` (it has sent its children all of the stripes
    it forwards) or holds everything and its children in every tree are complete
    (or dead): its uplink has nothing left to do, though it may still be
    receiving other stripes. Each incomplete receiver, most chunks missing
    first, gets one helper for the stripe it misses most of among those with a
    free helper (not one in ``active``, the assists still running, keyed
    ``(receiver, stripe)`` -> helper; called again, it adds one for the next
    stripe: a receiver may be helped in every stripe at once, by one helper per
    stripe; the caller drops entries of dead helpers from ``active``; a stripe
    is skipped when the receiver is ``linked`` and its parent there is idle and
    holds it whole: that parent has sent it everything, and the source's view
    is up to one report old), for the
    last two thirds of what it misses there (its parent, still sending in order,
    covers the first third meanwhile; a helper shared by ``per_helper``
    receivers gives each about twice what a parent with four children does).
    Stripes missing fewer than ``min_chunks`` are left to the parent. Helpers
    serve at most ``per_helper`` receivers at once, the least loaded first.
    Pure: the caller sends the ``Assist`` messages and keeps ``active``.
    """
    k = forest.stripes
    sizes = stripe_sizes(chunk_count, k)
    info = {m.node_id: m for m in members}
    kids: dict[NodeId, set[NodeId]] = {}
    for tree in forest.trees:
        for node, cs in tree.children.items():
            kids.setdefault(node, set()).update(cs)

    def whole(node: NodeId) -> bool:
        st = standing.get(node)
        return st is not None and st.complete

    def holds(node: NodeId, j: int) -> bool:
        st = standing[node]
        return st.complete or (len(st.stripe_have) == k and st.stripe_have[j] >= sizes[j])

    def sent_all(n: NodeId, j: int) -> bool:
        """n is linked to its parent in tree j, which has sent its children the whole stripe: it is on its way."""
        p = forest.trees[j].parent.get(n)
        return standing[n].linked and p is not None and p in standing and standing[p].idle and holds(p, j)

    nodes = forest.members()
    helpers = [
        n
        for n in nodes
        if n not in dead
        and n in info
        and info[n].relay_ok
        and n in standing
        and (standing[n].idle or (whole(n) and all(whole(c) or c in dead for c in kids.get(n, ()))))
    ]
    by_stripe = [[h for h in helpers if holds(h, j)] for j in range(k)]
    if not any(by_stripe):
        return []
    load = Counter(active.values())
    waiting: list[tuple[int, NodeId, list[int]]] = []
    for n in nodes:
        st = standing.get(n)
        if n in dead or st is None or st.complete or len(st.stripe_have) != k:
            continue
        missing = [min(sizes[j], max(0, sizes[j] - st.stripe_have[j])) for j in range(k)]
        waiting.append((-sum(missing), n, missing))
    waiting.sort()
    out: list[tuple[NodeId, int, NodeId, int]] = []
    for _, n, missing in waiting:
        free = {
            j: [h for h in by_stripe[j] if h != n and load[h] < per_helper]
            for j in range(k)
            if (n, j) not in active and missing[j] >= max(1, min_chunks) and not sent_all(n, j)
        }
        options = [j for j, hs in free.items() if hs]
        if not options:
            continue
        j = max(options, key=lambda x: (missing[x], -x))
        helper = min(free[j], key=lambda h: (load[h], h))
        load[helper] += 1
        out.append((n, j, helper, max(min_chunks, missing[j] * 2 // 3)))
    return out
