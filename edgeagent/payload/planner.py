"""Plan the forwarding forest of a payload (DESIGN s.6, "Payload trees").

The payload's chunks are split into ``k`` stripes (chunk ``i`` belongs to
stripe ``i % k``) and each stripe travels down its own tree. The trees are
*interior-disjoint* (SplitStream): every member forwards in at most one tree,
so each uploads about one payload's worth, and the source sends every byte
once. This module is pure: no I/O, no clock, no asyncio; the same input gives
the same forest (ties are broken by ``NodeId``).

How a tree is built (stripe ``j``):

1. The relay-capable members (``relay_ok``) are split into ``k`` *stripe
   groups*, balancing the summed upload of each group and spreading the
   relays of each LAN over the groups. Only the members of group ``j`` (the
   tree's ``relays``) may have children in tree ``j``.
2. LANs: for each LAN group ``G`` (two or more members with the same non-empty
   ``lan_group``) that has a relay in group ``j``, its best relay is the
   *gateway*; up to ``max_fanout`` other members of ``G`` that are not relays of
   group ``j`` become the gateway's *LAN children*.
3. Fan-out follows upload: the remaining ``N' - 1`` parent slots are dealt one
   at a time to the relay whose upload time (children / upload) grows least,
   within ``max_fanout`` (LAN children count as load). A relay gets 0 or at
   least 2 slots; at most one gets exactly 1.
4. The relays with slots are laid out level by level from the source's single
   child, higher fan-out (upload) first, preferring LAN-mates under LAN
   members; every level is all relays until the relays run out, then leaves.
   The gateways' LAN children hang below their gateway.

Guarantees of :func:`plan_forest` (``N`` members, ``R`` of them ``relay_ok``):

* every member is in every tree exactly once, below the source, no cycles;
* interior-disjoint: a member has children in at most one tree;
* ``relay_ok=False`` members are leaves in every tree;
* when ``R >= 1`` the source has exactly one child in each tree, so it uploads
  exactly one copy of the payload (``k`` stripes of ``S/k``); when ``R == 0``
  there is one tree, a star: the source sends ``N`` copies;
* depth: every tree has depth ``<= floor(log2 N) + 1`` when no LAN children
  are used, and ``<= ceil(log2 N) + 1`` always (``N >= 1``). Proof sketch: the
  tree without the LAN children (``N'`` nodes) has every relay level full and
  every interior node with >= 2 children (except one on the last relay
  level), so its depth below the source's child is ``<= floor(log2 N')``; LAN
  children add one level and, when there are any, ``N' <= N - 1`` and
  ``floor(log2(N - 1)) + 1 == ceil(log2 N)``;
* LAN (per tree ``j`` and LAN group ``G``): if ``G`` has exactly one relay in
  group ``j`` and ``|G| - 1 <= max_fanout``, exactly one member of ``G`` (that
  relay) receives stripe ``j`` from outside ``G``. If ``G`` has ``r >= 1`` relays
  in group ``j``, at most ``r + max(0, |G \\ group j| - max_fanout)`` members
  receive it from outside. If it has none, every member does. A LAN's relays
  are spread evenly (counts differ by at most one) over the stripe groups, so
  a LAN with ``r`` relays is covered in ``min(r, k)`` trees;
* fan-out: ``max_fanout`` is a soft cap. It is raised evenly for a tree whose
  relays cannot otherwise take all members (each relay taking 0 or at least
  2 slots); with automatic stripes, a ``k`` that needs this is avoided when
  another does not.

:func:`repair` and :func:`reassign_metered` keep the invariants checked by
:func:`check_forest` (not the LAN property): they first try a local fix
(spread the orphans over the least-loaded relays of each tree, the
grandparent first among equals) and fall back to re-planning the survivors with the
same number of stripes when the local fix is impossible or breaks an
invariant.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..wire import Hop, Manifest, NodeId, RouteSegment, TreeAssign

__all__ = [
    "DEFAULT_UPLOAD_BPS",
    "LARGE_GROUP",
    "MAX_AUTO_STRIPES",
    "MAX_AUTO_STRIPES_LARGE",
    "SMALL_GROUP",
    "STRIPE_SLACK",
    "Forest",
    "Member",
    "Tree",
    "bound_seconds",
    "busiest_time",
    "check_forest",
    "depth_bound",
    "lan_crossings",
    "max_children",
    "plan_forest",
    "stripe_candidates",
    "tree_assign",
    "tree_assigns",
]

#: upload assumed for a member whose upload is unknown (50 Mbit/s)
DEFAULT_UPLOAD_BPS = 6.25e6
#: the most stripes chosen automatically
MAX_AUTO_STRIPES = 8
#: ... and for groups of more than LARGE_GROUP members. Every stripe is one more parent link per
#: receiver and more child flows per relay: at N = 64 on shared uplinks, 8 stripes took 2.7 to more
#: than 6 s to link and children starved behind a relay's 11 flows (21 stall repairs in one run),
#: where at most 4 linked in 1.4-1.9 s with no repairs (bench/bcast.py). Fewer stripes balance uploads
#: less finely (a relay carries up to 1.5 S instead of 1.375 S when 48 of 64 nodes relay); small
#: groups keep up to 8, which also keeps their first tree (federated learning's aggregation tree)
#: shallow.
LARGE_GROUP = 16
MAX_AUTO_STRIPES_LARGE = 4
#: groups of at most this many members get one tree
SMALL_GROUP = 4
#: automatic stripes: the most stripes whose busiest uploader is within this share of the best
STRIPE_SLACK = 0.05


@dataclass(frozen=True)
class Member:
    """A receiver as the planner sees it."""

    node_id: NodeId
    #: measured upload in bytes per second; 0 (or less) means unknown
    upload_bps: float = 0.0
    #: False for cellular or metered nodes: they are leaves in every tree
    relay_ok: bool = True
    #: members with the same non-empty group share a LAN
    lan_group: str = ""


@dataclass(frozen=True)
class Tree:
    """The tree of one stripe.

    ``parent`` maps every receiver to its parent (the source has none);
    ``children`` maps every node, the source and leaves included, to its
    children. ``relays`` is the tree's stripe group: the members allowed to
    have children in it.
    """

    stripe: int
    parent: dict[NodeId, NodeId]
    children: dict[NodeId, tuple[NodeId, ...]]
    relays: tuple[NodeId, ...] = ()

    def root(self) -> NodeId:
        """The source: the node with children entries but no parent."""
        for node in self.children:
            if node not in self.parent:
                return node
        raise ValueError("tree has no root")

    def depth(self) -> int:
        """Edges on the longest path from the source to a leaf (0 for an empty tree)."""
        deepest = 0
        level = [self.root()]
        depth = 0
        seen: set[NodeId] = set()
        while level:
            nxt: list[NodeId] = []
            for node in level:
                if node in seen:
                    continue
                seen.add(node)
                nxt.extend(self.children.get(node, ()))
            if nxt:
                depth += 1
                deepest = depth
            level = nxt
        return deepest

    def sizes(self) -> dict[NodeId, int]:
        """Receivers at or below each node of the tree, the node itself included (leaves: 1)."""
        order: list[NodeId] = []
        seen: set[NodeId] = set()
        stack = [self.root()]
        while stack:
            node = stack.pop()
            if node in seen:
                continue
            seen.add(node)
            order.append(node)
            stack.extend(self.children.get(node, ()))
        size: dict[NodeId, int] = {}
        for node in reversed(order):
            size[node] = 1 + sum(size.get(kid, 0) for kid in self.children.get(node, ()))
        return size

    def interior(self) -> set[NodeId]:
        """Receivers with at least one child (the source is left out)."""
        source = self.root()
        return {node for node, kids in self.children.items() if kids and node != source}

    def segment(self) -> RouteSegment:
        """The whole tree as a RouteSegment: ``subtree(source)``."""
        return self.subtree(self.root())

    def subtree(self, node: NodeId) -> RouteSegment:
        """The tree below ``node``.

        Layout: a segment with no hops whose children are one segment per child
        ``c`` of ``node``; each of those has the single hop ``Hop(node, c)`` and,
        as its children, the segments of ``c``'s children, and so on. Only
        ``src`` and ``dst`` of a hop are set; the driver fills in transports.
        """
        order: list[tuple[NodeId, NodeId]] = []
        stack = [(node, kid) for kid in reversed(self.children.get(node, ()))]
        while stack:
            edge = stack.pop()
            order.append(edge)
            stack.extend((edge[1], kid) for kid in reversed(self.children.get(edge[1], ())))
        built: dict[NodeId, RouteSegment] = {}
        for src, dst in reversed(order):
            kids = tuple(built.pop(k) for k in self.children.get(dst, ()))
            built[dst] = RouteSegment(hops=(Hop(src=src, dst=dst),), children=kids)
        return RouteSegment(hops=(), children=tuple(built[k] for k in self.children.get(node, ())))


@dataclass(frozen=True)
class Forest:
    """The plan of one payload: one tree per stripe, all rooted at the source."""

    source: NodeId
    stripes: int
    trees: tuple[Tree, ...]
    #: the planner's fan-out cap, kept for repair
    max_fanout: int = 16
    #: the planner's upload for unknown members, kept for repair
    default_upload_bps: float = DEFAULT_UPLOAD_BPS

    def members(self) -> list[NodeId]:
        """Every receiver in the forest, sorted."""
        nodes: set[NodeId] = set()
        for tree in self.trees:
            nodes.update(tree.parent)
        return sorted(nodes)

    def assignments(self) -> dict[NodeId, list[tuple[int, NodeId | None, tuple[NodeId, ...]]]]:
        """Per node (source included): ``(stripe, parent, children)`` for each tree."""
        out: dict[NodeId, list[tuple[int, NodeId | None, tuple[NodeId, ...]]]] = {}
        for node in [self.source, *self.members()]:
            out[node] = [(t.stripe, t.parent.get(node), t.children.get(node, ())) for t in self.trees]
        return out

    def upload_share(self, node: NodeId) -> float:
        """Bytes ``node`` uploads as a fraction of the payload size: children in tree j count 1/k each."""
        if not self.trees:
            return 0.0
        total = sum(len(t.children.get(node, ())) for t in self.trees)
        return total / self.stripes

    def source_children(self) -> tuple[tuple[NodeId, ...], ...]:
        """The source's children, indexed by stripe."""
        return tuple(t.children.get(self.source, ()) for t in self.trees)


# ---------------------------------------------------------------------------
# planning


def stripe_candidates(n_members: int, n_relays: int, stripes: int | None = None) -> list[int]:
    """The stripe counts ``plan_forest`` considers.

    Given ``stripes``: just that, but at most the number of relays (and at
    least 1). Otherwise ``[1]`` for groups of at most ``SMALL_GROUP`` members
    or at most one relay, else ``1 .. min(n_relays, MAX_AUTO_STRIPES)`` (``MAX_AUTO_STRIPES_LARGE``
    for more than ``LARGE_GROUP`` members).
    """
    if stripes is not None:
        if stripes < 1:
            raise ValueError("stripes must be at least 1")
        return [max(1, min(stripes, n_relays))]
    if n_members <= SMALL_GROUP or n_relays <= 1:
        return [1]
    cap = MAX_AUTO_STRIPES_LARGE if n_members > LARGE_GROUP else MAX_AUTO_STRIPES
    return list(range(1, min(n_relays, cap) + 1))


def busiest_time(forest: Forest, members: Sequence[Member]) -> float:
    """The largest ``upload_share / upload`` among members: seconds per payload byte for the busiest uploader."""
    default = forest.default_upload_bps
    worst = 0.0
    for m in members:
        share = forest.upload_share(m.node_id)
        if share:
            worst = max(worst, share / _upload(m, default))
    return worst


def max_children(forest: Forest) -> int:
    """The largest number of children of any member in any tree (the source left out)."""
    return max((len(kids) for t in forest.trees for n, kids in t.children.items() if n != forest.source), default=0)


def plan_forest(
    source: NodeId,
    members: Sequence[Member],
    *,
    stripes: int | None = None,
    source_upload_bps: float = 0,
    default_upload_bps: float = DEFAULT_UPLOAD_BPS,
    max_fanout: int = 16,
) -> Forest:
    """Plan the forest that carries a payload from ``source`` to ``members``.

    See the module docstring for the construction and its guarantees.
    Stripes (read back from ``Forest.stripes``): ``stripes`` when given, but
    at most the number of ``relay_ok`` members (at least 1). Otherwise 1 for
    at most ``SMALL_GROUP`` members or at most one relay; else each ``k`` in
    ``1 .. min(relays, MAX_AUTO_STRIPES)`` is planned and, among the plans
    that keep every node within ``max_fanout`` (all, if none does), the one
    with the largest ``k`` whose busiest uploader (``busiest_time``) is within
    ``STRIPE_SLACK`` of the best is kept: one relay per stripe cannot follow
    uneven uploads, more relays per stripe can, while more stripes give
    shallower trees. ``source_upload_bps`` does not change the plan (the
    source always sends one copy); it is checked and accepted so callers can
    pass the full picture. Raises ``ValueError`` on duplicate members, the
    source among the members, ``max_fanout < 2`` or a non-positive default.
    """
    if not source_upload_bps >= 0:
        raise ValueError("source_upload_bps must be >= 0")
    _check_params(default_upload_bps, max_fanout)
    infos = _sorted_members(source, members)
    plans = [
        _plan(source, infos, k, default_upload_bps, max_fanout)
        for k in stripe_candidates(len(infos), sum(m.relay_ok for m in infos), stripes)
    ]
    if len(plans) == 1:
        return plans[0]
    within = [f for f in plans if max_children(f) <= max_fanout] or plans
    times = [busiest_time(f, infos) for f in within]
    fastest = min(times)
    return [f for f, t in zip(within, times, strict=True) if t <= fastest * (1 + STRIPE_SLACK)][-1]


def _check_params(default_upload_bps: float, max_fanout: int) -> None:
    if not (default_upload_bps > 0 and math.isfinite(default_upload_bps)):
        raise ValueError("default_upload_bps must be positive")
    if max_fanout < 2:
        raise ValueError("max_fanout must be at least 2")


def _sorted_members(source: NodeId, members: Iterable[Member]) -> list[Member]:
    infos = sorted(members, key=lambda m: m.node_id)
    for a, b in itertools.pairwise(infos):
        if a.node_id == b.node_id:
            raise ValueError(f"duplicate member {a.node_id}")
    if any(m.node_id == source for m in infos):
        raise ValueError("the source cannot be a member")
    return infos


def _upload(member: Member, default: float) -> float:
    u = member.upload_bps
    return u if u > 0 and math.isfinite(u) else default


def _plan(source: NodeId, infos: list[Member], k: int, default: float, max_fanout: int) -> Forest:
    """Plan with exactly ``k`` stripes; a stripe group left without relays gets a star.

    Internally members are their index in ``infos`` (sorted by NodeId, so index
    order is NodeId order) and the source is index ``len(infos)``.
    """
    ids = [m.node_id for m in infos]
    n = len(ids)
    up = [_upload(m, default) for m in infos]
    by_lan: dict[str, list[int]] = {}
    for i, m in enumerate(infos):
        if m.lan_group:
            by_lan.setdefault(m.lan_group, []).append(i)
    lan_members = {g: ms for g, ms in by_lan.items() if len(ms) >= 2}
    lan_of = [""] * (n + 1)
    for g, ms in lan_members.items():
        for i in ms:
            lan_of[i] = g
    relays = [i for i, m in enumerate(infos) if m.relay_ok]
    groups = _partition(relays, up, lan_of, k)
    trees: list[Tree] = []
    for j, group in enumerate(groups):
        if not ids or not group:
            trees.append(_star(j, source, ids))
            continue
        parent, kids = _TreeBuilder(n, group, up, lan_of, lan_members, max_fanout).build()
        nodes = [*ids, source]
        trees.append(
            Tree(
                j,
                {ids[c]: nodes[parent[c]] for c in range(n)},
                {nodes[i]: tuple(ids[c] for c in kids[i]) for i in [n, *range(n)]},
                tuple(ids[r] for r in group),
            )
        )
    return Forest(source, k, tuple(trees), max_fanout, default)


def _star(stripe: int, source: NodeId, ids: list[NodeId]) -> Tree:
    children: dict[NodeId, tuple[NodeId, ...]] = {source: tuple(ids)}
    children.update((n, ()) for n in ids)
    return Tree(stripe, dict.fromkeys(ids, source), children, ())


def _partition(relays: list[int], up: Sequence[float], lan_of: Sequence[str], k: int) -> list[list[int]]:
    """Split relays into k groups: spread each LAN's relays, then balance summed upload (LPT)."""
    groups: list[list[int]] = [[] for _ in range(k)]
    sums = [0.0] * k
    lan_counts: list[dict[str, int]] = [{} for _ in range(k)]
    for node in sorted(relays, key=lambda i: (-up[i], i)):
        lan = lan_of[node]

        def key(j: int, lan: str = lan) -> tuple[int, float, int, int]:
            return (lan_counts[j].get(lan, 0) if lan else 0, sums[j], len(groups[j]), j)

        j = min(range(k), key=key)
        groups[j].append(node)
        sums[j] += up[node]
        if lan:
            lan_counts[j][lan] = lan_counts[j].get(lan, 0) + 1
    return [sorted(g) for g in groups]


def _allocate(ups: Sequence[float], bases: Sequence[int], total: int, cap: int) -> list[int]:
    """Deal ``total`` child slots to relays, each to the one whose upload time grows least.

    ``ups`` and ``bases`` (load already fixed: LAN children) are per relay, in
    NodeId order (ties go to the first). A relay's slots stay within ``cap``
    (total children), raised evenly only when the relays cannot hold ``total``
    otherwise. Afterwards no relay has 0 < slots < 2 except at most one.
    """
    n = len(ups)
    extra = 0
    while True:
        caps = [max(0, cap + extra - b) for b in bases]
        caps = [0 if c == 1 else c for c in caps]
        if sum(caps) >= total:
            break
        extra += 1
    slots = [0] * n
    heap = [((bases[i] + 1) / ups[i], i) for i in range(n) if caps[i] > 0]
    heapq.heapify(heap)
    for _ in range(total):
        _, i = heapq.heappop(heap)
        slots[i] += 1
        if slots[i] < caps[i]:
            heapq.heappush(heap, ((bases[i] + slots[i] + 1) / ups[i], i))
    ones = sorted((i for i in range(n) if slots[i] == 1), key=lambda i: (-ups[i], i))
    while len(ones) >= 2:
        slots[ones.pop(0)] = 2
        slots[ones.pop()] = 0
    return slots


class _TreeBuilder:
    """Builds the tree of one stripe from its stripe group (see the module docstring).

    Members are indices ``0 .. n-1``, the source is ``n``.
    """

    def __init__(
        self,
        n: int,
        group: list[int],
        up: Sequence[float],
        lan_of: Sequence[str],
        lan_members: Mapping[str, list[int]],
        max_fanout: int,
    ) -> None:
        self.n = n
        self.group = group
        self.up = up
        self.lan_of = lan_of
        self.lan_members = lan_members
        self.max_fanout = max_fanout
        self.parent = [-1] * n
        self.kids: list[list[int]] = [[] for _ in range(n + 1)]

    def _attach(self, child: int, parent: int) -> None:
        self.parent[child] = parent
        self.kids[parent].append(child)

    def build(self) -> tuple[list[int], list[list[int]]]:
        n, up = self.n, self.up
        in_group = [False] * n
        for r in self.group:
            in_group[r] = True
        # LAN gateways and their LAN children
        gateway: dict[str, int] = {}
        lan_kids: dict[int, list[int]] = {}
        for lan in sorted(self.lan_members):
            mates = self.lan_members[lan]
            mine = [i for i in mates if in_group[i]]
            if not mine:
                continue
            gw = min(mine, key=lambda i: (-up[i], i))
            gateway[lan] = gw
            lan_kids[gw] = [i for i in mates if not in_group[i]][: self.max_fanout]
        under_gateway = [False] * n
        for ks in lan_kids.values():
            for i in ks:
                under_gateway[i] = True
        core = [i for i in range(n) if not under_gateway[i]]
        got = _allocate(
            [up[r] for r in self.group], [len(lan_kids.get(r, ())) for r in self.group], len(core) - 1, self.max_fanout
        )
        slots = [0] * n
        for r, s in zip(self.group, got, strict=True):
            slots[r] = s

        def bound(i: int) -> bool:
            lan = self.lan_of[i]
            return bool(lan) and gateway[lan] != i and slots[gateway[lan]] > 0

        remaining = sorted((r for r in self.group if slots[r] > 0), key=lambda i: (-slots[i], -up[i], i))
        leaf_slots: list[int] = []
        placed = [False] * n
        if not remaining:
            self._attach(core[0], n)  # core is one relay: a gateway with only LAN children
            placed[core[0]] = True
        level = [n]
        while remaining:
            final = len(remaining) <= len(level)
            cands = remaining if final else [r for r in remaining if slots[r] != 1]
            chosen = self._fill_level(level, cands, bound, final=final)
            nxt: list[int] = []
            for p, pick in zip(level, chosen, strict=True):
                if pick is None:
                    leaf_slots.append(p)
                    continue
                self._attach(pick, p)
                placed[pick] = True
                remaining.remove(pick)
                nxt.extend([pick] * slots[pick])
            if final:
                leaf_slots.extend(nxt)
                break
            level = nxt
        leaves = [i for i in core if not placed[i]]
        assert len(leaves) == len(leaf_slots), "slot count mismatch"
        self._place_leaves(leaves, leaf_slots)
        for gw in sorted(lan_kids):
            for i in lan_kids[gw]:
                self._attach(i, gw)
        return self.parent, self.kids

    def _fill_level(
        self, level: list[int], cands: list[int], bound: Callable[[int], bool], *, final: bool
    ) -> list[int | None]:
        """Choose the relay for each slot of a level (all slots, or all relays when final)."""
        chosen: list[int | None] = [None] * len(level)
        avail = list(cands)
        if final:
            # relays go under non-LAN parents first, leaving LAN slots to LAN leaves
            order = sorted(range(len(level)), key=lambda i: (bool(self.lan_of[level[i]]), i))
        else:
            order = list(range(len(level)))
        for i in order:  # LAN-mates under LAN members
            lan = self.lan_of[level[i]]
            if not lan:
                continue
            pick = next((r for r in avail if self.lan_of[r] == lan and bound(r)), None)
            if pick is not None:
                chosen[i] = pick
                avail.remove(pick)
        free = [r for r in avail if not bound(r)]
        for i in order:
            if chosen[i] is None and free:
                pick = free.pop(0)
                chosen[i] = pick
                avail.remove(pick)
        for i in order:  # what is left crosses LANs
            if chosen[i] is None and avail:
                chosen[i] = avail.pop(0)
        return chosen

    def _place_leaves(self, leaves: list[int], leaf_slots: list[int]) -> None:
        """Match leaves to slots, LAN-mates first."""
        taken = [False] * len(leaf_slots)
        rest: list[int] = []
        by_lan: dict[str, list[int]] = {}
        for i, p in enumerate(leaf_slots):
            lan = self.lan_of[p]
            if lan:
                by_lan.setdefault(lan, []).append(i)
        for leaf in leaves:
            lan = self.lan_of[leaf]
            free = by_lan.get(lan) if lan else None
            if free:
                i = free.pop(0)
                taken[i] = True
                self._attach(leaf, leaf_slots[i])
            else:
                rest.append(leaf)
        open_slots = [i for i in range(len(leaf_slots)) if not taken[i]]
        for leaf, i in zip(rest, open_slots, strict=True):
            self._attach(leaf, leaf_slots[i])


# ---------------------------------------------------------------------------
# checks and figures


def depth_bound(n_members: int) -> int:
    """The depth every planned tree keeps to: ``ceil(log2 N) + 1`` (0 for no members)."""
    return (n_members - 1).bit_length() + 1 if n_members > 0 else 0


def check_forest(forest: Forest, members: Sequence[Member]) -> list[str]:
    """Human-readable violations of the forest invariants (empty when valid).

    Checked: one tree per stripe; every member reached exactly once per tree
    from the source, with consistent parent/children maps and no cycles; no
    unknown nodes; each member has children in at most one tree;
    ``relay_ok=False`` members are leaves; the source has exactly one child in
    each tree when there are at least as many ``relay_ok`` members as stripes;
    every tree's depth is at most ``depth_bound(N)``. Not checked: the LAN
    property (see :func:`lan_crossings`) and ``max_fanout`` (a soft cap).
    """
    out: list[str] = []
    info: dict[NodeId, Member] = {}
    for m in members:
        if m.node_id in info:
            out.append(f"duplicate member {m.node_id.short()}")
        info[m.node_id] = m
    src = forest.source
    if src in info:
        out.append("the source is listed as a member")
    expected = set(info) - {src}
    n = len(expected)
    n_relays = sum(info[x].relay_ok for x in expected)
    limit = depth_bound(n)
    if forest.stripes < 1 or len(forest.trees) != forest.stripes:
        out.append(f"{len(forest.trees)} trees for {forest.stripes} stripes")
    interior_in: dict[NodeId, list[int]] = {}
    for idx, tree in enumerate(forest.trees):
        tag = f"tree {idx}"
        if tree.stripe != idx:
            out.append(f"{tag}: stripe number {tree.stripe}")
        if src in tree.parent:
            out.append(f"{tag}: the source has a parent")
        present = set(tree.parent)
        for node in sorted(expected - present):
            out.append(f"{tag}: member {node.short()} has no parent")
        known = expected | {src}
        for node in sorted((present | set(tree.children)) - known):
            out.append(f"{tag}: unknown node {node.short()}")
        for child, par in tree.parent.items():
            if child not in tree.children.get(par, ()):
                out.append(f"{tag}: {child.short()} not among its parent's children")
        for par, kids in tree.children.items():
            if len(set(kids)) != len(kids):
                out.append(f"{tag}: {par.short()} lists a child twice")
            for kid in kids:
                if tree.parent.get(kid) != par:
                    out.append(f"{tag}: child {kid.short()} of {par.short()} has another parent")
        # reachability, cycles and depth
        seen = {src}
        level = [src]
        depth = 0
        while level:
            nxt: list[NodeId] = []
            for node in level:
                for kid in tree.children.get(node, ()):
                    if kid in seen:
                        out.append(f"{tag}: {kid.short()} reached twice (cycle)")
                        continue
                    seen.add(kid)
                    nxt.append(kid)
            if nxt:
                depth += 1
            level = nxt
        for node in sorted(expected - seen):
            if node in present:
                out.append(f"{tag}: member {node.short()} not reachable from the source (cycle)")
        if depth > limit:
            out.append(f"{tag}: depth {depth} > bound {limit} for {n} members")
        for node, kids in tree.children.items():
            if kids and node != src:
                interior_in.setdefault(node, []).append(idx)
                known_member = info.get(node)
                if known_member is not None and not known_member.relay_ok:
                    out.append(f"{tag}: {node.short()} is not relay_ok but has children")
        if n >= 1 and n_relays >= forest.stripes and len(tree.children.get(src, ())) != 1:
            out.append(f"{tag}: the source has {len(tree.children.get(src, ()))} children, not 1")
    for node, trees in sorted(interior_in.items()):
        if len(trees) > 1:
            out.append(f"{node.short()} forwards in trees {trees}")
    return out


def lan_crossings(forest: Forest, members: Sequence[Member]) -> dict[tuple[int, str], int]:
    """Per (stripe, LAN group of >= 2 members): how many members get the stripe from outside the LAN."""
    groups: dict[str, set[NodeId]] = {}
    for m in members:
        if m.lan_group:
            groups.setdefault(m.lan_group, set()).add(m.node_id)
    out: dict[tuple[int, str], int] = {}
    for tree in forest.trees:
        for lan in sorted(groups):
            mates = groups[lan]
            if len(mates) >= 2:
                out[(tree.stripe, lan)] = sum(1 for n in mates if tree.parent.get(n) not in mates)
    return out


def bound_seconds(
    size: int, chunk: int, source_upload_bps: float, uploads_bps: Sequence[float], n_receivers: int, wifi_bps: float
) -> float:
    """The completion-time lower bound of DESIGN s.6, in seconds.

    ``T = max(S/u_src, N*S/(u_src + sum(u_i))) + (ceil(log2(N+1)) - 1) * c/B``,
    with ``uploads_bps`` the uploads of the relay-capable receivers only.
    0 for no receivers.
    """
    if source_upload_bps <= 0 or wifi_bps <= 0:
        raise ValueError("source_upload_bps and wifi_bps must be positive")
    if size < 0 or chunk <= 0 or n_receivers < 0:
        raise ValueError("size >= 0, chunk > 0 and n_receivers >= 0 are required")
    if n_receivers == 0:
        return 0.0
    total = source_upload_bps + sum(max(0.0, u) for u in uploads_bps)
    send = max(size / source_upload_bps, n_receivers * size / total)
    hops = n_receivers.bit_length() - 1  # ceil(log2(N + 1)) - 1
    return send + hops * min(chunk, size) / wifi_bps if size else 0.0


def tree_assign(
    forest: Forest,
    tree: Tree,
    node: NodeId,
    payload_id: bytes,
    sizes: Mapping[NodeId, int],
    *,
    manifest: Manifest | None = None,
    parent_addresses: tuple[str, ...] = (),
    subtree: bool = False,
) -> TreeAssign:
    """The one builder of a TreeAssign: ``node``'s parent, children and their subtree sizes in ``tree``.

    ``sizes`` is ``tree.sizes()`` (computed once per tree by the caller); ``subtree`` includes the
    node's whole subtree (for interior nodes), which the live protocol leaves out to keep it small.
    """
    kids = tree.children.get(node, ())
    return TreeAssign(
        payload_id=payload_id,
        stripe=tree.stripe,
        stripes=forest.stripes,
        parent=tree.parent.get(node),
        children=kids,
        subtree=tree.subtree(node) if subtree and kids else None,
        manifest=manifest,
        parent_addresses=parent_addresses,
        weights=tuple(sizes.get(kid, 1) for kid in kids),
    )


def tree_assigns(
    forest: Forest, payload_id: bytes, manifest: Manifest | None = None
) -> dict[NodeId, tuple[TreeAssign, ...]]:
    """The TreeAssign messages for every member, one per stripe (subtree set for interior nodes)."""
    sizes = {tree.stripe: tree.sizes() for tree in forest.trees}
    return {
        node: tuple(
            tree_assign(forest, t, node, payload_id, sizes[t.stripe], manifest=manifest, subtree=True)
            for t in forest.trees
        )
        for node in forest.members()
    }
