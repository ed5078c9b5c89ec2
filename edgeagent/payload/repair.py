"""Repairs of a planned forest (pure, like the planner): a dead member removed and its orphans
re-attached, a relay made a leaf (it turned metered or sent corrupt chunks), a child moved to
another parent; each keeps the planner's invariants (``planner.check_forest``)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace

from ..wire import NodeId
from .planner import Forest, Member, Tree, _plan, _upload, check_forest, depth_bound

__all__ = ["avoid_failed", "move", "reassign_metered", "repair"]


def repair(forest: Forest, dead: NodeId, *, members: Sequence[Member]) -> Forest:
    """The forest without ``dead``, its orphans re-attached.

    In each tree, the orphaned children are spread over the nodes that may
    forward there (``relay_ok`` per ``members``, forwarding in no other tree),
    never into their own subtree: each goes to one with room (< ``max_fanout``
    children) that keeps the depth bound, already forwarding in the tree, with
    the fewest children, the dead node's parent first among equals. (Giving
    them all to the dead node's parent would pile the dead relay's upload onto
    one node, and every node below that one would wait for it.) If
    ``dead`` was the source's child, its best forwarding-capable child takes
    its place. When fewer ``relay_ok`` survivors than stripes are left, an
    orphan nobody can take is sent to by the source itself (that stripe then
    costs the source more than one copy). If the local fix is impossible, or
    breaks a :func:`check_forest` invariant (depth included), the survivors are
    re-planned with the same number of stripes (a stripe group left without
    relays then gets a star from the source), so stripe numbers stay valid.
    ``members`` gives the current flags (uploads, ``relay_ok``); a forest node
    missing from it is treated as ``relay_ok=False``. A ``dead`` not in the
    forest returns it unchanged; the source raises ``ValueError``. The LAN
    property of :func:`plan_forest` is not restored by a local fix.
    """
    return _rehome(forest, dead, members, stay=False)


def reassign_metered(forest: Forest, node: NodeId, members: Sequence[Member]) -> Forest:
    """Like :func:`repair`, but ``node`` stays as a leaf (a relay that turned metered hands its children on)."""
    return _rehome(forest, node, members, stay=True)


def move(
    forest: Forest,
    child: NodeId,
    away_from: NodeId,
    members: Sequence[Member],
    *,
    stripes: Iterable[int] | None = None,
    avoid: Iterable[NodeId] = (),
) -> Forest:
    """``child`` (with its subtree) under another parent in each tree where its parent is ``away_from``.

    For a child that cannot reach, or is not served by, a parent that is otherwise
    fine: only that child moves, nothing else changes (a repair would hand on all
    of the parent's children). ``stripes`` limits the trees considered. In each
    such tree the new parent is a node that may forward there (``relay_ok`` per
    ``members``, forwarding in no other tree), is not ``away_from``, not in
    ``avoid``, not in the child's subtree and high enough in the tree to keep
    the depth bound; preferred, in order: under ``max_fanout`` children (a
    soft cap), already forwarding in the tree, fewest children, then NodeId.
    With no such node the source takes the child (that stripe then costs the
    source more than one copy). The result keeps the invariants of
    :func:`check_forest` except, in that last case, the source's single child.
    A ``child`` not in the forest, or whose parent is never ``away_from``,
    returns the forest unchanged.
    """
    if child == forest.source:
        raise ValueError("the source has no parent to move away from")
    info = {m.node_id: m for m in members}
    skip = {away_from, *avoid}
    want = None if stripes is None else set(stripes)
    limit = depth_bound(len(forest.members()))
    interior: dict[NodeId, set[int]] = {}
    for tree in forest.trees:
        for x in tree.interior():
            interior.setdefault(x, set()).add(tree.stripe)
    relay_ok = {x: info[x].relay_ok if x in info else False for x in forest.members()}
    trees: list[Tree] = []
    changed = False
    for tree in forest.trees:
        if tree.parent.get(child) != away_from or (want is not None and tree.stripe not in want):
            trees.append(tree)
            continue
        trees.append(_move_in_tree(tree, forest, child, away_from, skip, relay_ok, interior, limit))
        changed = True
    return replace(forest, trees=tuple(trees)) if changed else forest


def avoid_failed(
    forest: Forest,
    failed: Iterable[tuple[NodeId, NodeId]],
    members: Sequence[Member],
    *,
    avoid: Iterable[NodeId] = (),
) -> Forest:
    """``forest`` with no child under a parent it was seen unable to link to: each such (parent,
    child) edge is moved (``move``) to another parent, never one of the child's failed ones.

    Pure; at most one move per failed edge and tree, so it ends. A child left with no other parent
    goes to the source (which every receiver reaches).
    """
    bad = set(failed)
    if not bad:
        return forest
    shunned: dict[NodeId, set[NodeId]] = {}
    for parent, child in bad:
        shunned.setdefault(child, set()).add(parent)
    base = set(avoid)
    for _ in range(len(bad) * max(1, forest.stripes)):
        edge = next(
            ((t.stripe, t.parent[c], c) for t in forest.trees for c in t.parent if (t.parent[c], c) in bad), None
        )
        if edge is None:
            break
        stripe, parent, child = edge
        forest = move(forest, child, parent, members, stripes=[stripe], avoid=base | shunned[child])
    return forest


def _move_in_tree(
    tree: Tree,
    forest: Forest,
    child: NodeId,
    away_from: NodeId,
    skip: set[NodeId],
    relay_ok: Mapping[NodeId, bool],
    interior: dict[NodeId, set[int]],
    limit: int,
) -> Tree:
    j = tree.stripe
    src = forest.source
    kids = {p: list(ks) for p, ks in tree.children.items()}
    sub = {child}
    stack = [child]
    while stack:
        for k in kids.get(stack.pop(), ()):
            sub.add(k)
            stack.append(k)
    height, level = 0, list(kids.get(child, ()))
    while level:
        height += 1
        level = [k for x in level for k in kids.get(x, ())]

    def depth_of(x: NodeId) -> int:
        d = 0
        while x != src:
            x = tree.parent[x]
            d += 1
        return d

    def key(x: NodeId) -> tuple[bool, bool, int, NodeId]:
        n_kids = len(kids.get(x, ()))
        return (n_kids >= forest.max_fanout, j not in interior.get(x, set()), n_kids, x)

    cands = [
        x
        for x in tree.parent
        if x not in sub
        and x not in skip
        and relay_ok.get(x, False)
        and interior.get(x, set()) <= {j}
        and depth_of(x) + 1 + height <= limit  # the depth bound is kept; max_fanout is a soft cap
    ]
    new_parent = min(cands, key=key) if cands else src
    kids[away_from].remove(child)
    kids.setdefault(new_parent, []).append(child)
    parent = dict(tree.parent)
    parent[child] = new_parent
    if new_parent != src:
        interior.setdefault(new_parent, set()).add(j)
    return _tree_with(tree, parent, kids, away_from, True)


def _rehome(forest: Forest, node: NodeId, members: Sequence[Member], *, stay: bool) -> Forest:
    if node == forest.source:
        raise ValueError("the source cannot be repaired away")
    nodes = forest.members()
    if node not in nodes:
        return forest
    info = {m.node_id: m for m in members}
    survivors: list[Member] = []
    for n in nodes:
        if n == node and not stay:
            continue
        m = info.get(n) or Member(n, relay_ok=False)
        if n == node:
            m = replace(m, relay_ok=False)
        survivors.append(m)
    local = _local_fix(forest, node, survivors, stay=stay)
    if local is not None and not check_forest(local, survivors):
        return local
    return _plan(forest.source, survivors, forest.stripes, forest.default_upload_bps, forest.max_fanout)


def _local_fix(forest: Forest, node: NodeId, survivors: list[Member], *, stay: bool) -> Forest | None:
    relay_ok = {m.node_id: m.relay_ok for m in survivors}
    up = {m.node_id: _upload(m, forest.default_upload_bps) for m in survivors}
    interior: dict[NodeId, set[int]] = {}
    for tree in forest.trees:
        for n in tree.interior():
            if n != node:
                interior.setdefault(n, set()).add(tree.stripe)
    limit = depth_bound(len(survivors))
    few = sum(relay_ok.values()) < forest.stripes  # the source may send a stripe more than once
    trees: list[Tree] = []
    for tree in forest.trees:
        fixed = _fix_tree(tree, forest.source, node, stay, relay_ok, up, interior, forest.max_fanout, limit, few)
        if fixed is None:
            return None
        trees.append(fixed)
    return replace(forest, trees=tuple(trees))


def _fix_tree(
    tree: Tree,
    src: NodeId,
    node: NodeId,
    stay: bool,
    relay_ok: Mapping[NodeId, bool],
    up: Mapping[NodeId, float],
    interior: dict[NodeId, set[int]],
    cap: int,
    limit: int,
    to_source: bool,
) -> Tree | None:
    j = tree.stripe
    if node not in tree.parent:
        return tree
    parent = dict(tree.parent)
    kids = {p: list(ks) for p, ks in tree.children.items()}
    orphans = kids[node]
    kids[node] = []
    up_node = parent[node]
    for o in orphans:
        del parent[o]
    if not stay or up_node == src:
        del parent[node]
        kids[up_node].remove(node)
    if not stay:
        del kids[node]
    to_place = list(orphans)
    if stay and up_node == src:
        to_place.append(node)
    if not to_place:
        return _tree_with(tree, parent, kids, node, stay)

    def may_forward(x: NodeId) -> bool:
        return x != node and relay_ok.get(x, False) and interior.get(x, set()) <= {j}

    def below(x: NodeId) -> set[NodeId]:
        out = {x}
        stack = [x]
        while stack:
            for k in kids.get(stack.pop(), ()):
                out.add(k)
                stack.append(k)
        return out

    def attach(child: NodeId, par: NodeId) -> None:
        parent[child] = par
        kids[par].append(child)
        if par != src:
            interior.setdefault(par, set()).add(j)

    def size(x: NodeId) -> int:
        return len(below(x))

    def height(x: NodeId) -> int:
        level, h = kids.get(x, []), 0
        while level:
            h += 1
            level = [k for n in level for k in kids.get(n, ())]
        return h

    def depth_of(x: NodeId) -> int:
        d = 0
        while x != src:
            if x not in parent:
                return len(kids)  # not attached yet: unknown, treat as too deep
            x = parent[x]
            d += 1
        return d

    if up_node == src:
        heads = sorted(
            (o for o in orphans if may_forward(o)), key=lambda o: (j not in interior.get(o, set()), -up[o], o)
        )
        if not heads and not to_source:
            return None
        grand = heads[0] if heads else src
        if heads:
            parent[grand] = src
            kids[src].append(grand)
            to_place.remove(grand)
    else:
        grand = up_node
    to_place.sort(key=lambda o: (-size(o), o))
    for o in to_place:
        sub = below(o)
        if grand == src:
            attach(o, src)
            continue
        cands = [x for x in kids if x != src and x not in sub and may_forward(x)]
        if not cands:
            if not to_source:
                return None
            attach(o, src)
            continue
        tall = height(o)

        def key(x: NodeId, tall: int = tall) -> tuple[bool, bool, bool, int, bool, NodeId]:
            too_deep = depth_of(x) + 1 + tall > limit
            n_kids = len(kids[x])
            return (n_kids >= cap, too_deep, j not in interior.get(x, set()), n_kids, x != grand, x)

        attach(o, min(cands, key=key))
    return _tree_with(tree, parent, kids, node, stay)


def _tree_with(
    tree: Tree, parent: dict[NodeId, NodeId], kids: dict[NodeId, list[NodeId]], node: NodeId, stay: bool
) -> Tree:
    relays = {r for r in tree.relays if r != node}
    src = tree.root()
    relays.update(n for n, ks in kids.items() if ks and n != src)
    return Tree(tree.stripe, parent, {n: tuple(ks) for n, ks in kids.items()}, tuple(sorted(relays)))
