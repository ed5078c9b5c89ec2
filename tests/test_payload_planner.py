"""The payload forest planner: hand-checked examples and hypothesis properties.

The properties run over random member sets (1 to 80 members, random uploads,
about a quarter not relay_ok, random LAN groups) and check what the planner's
docstring promises: coverage, interior-disjointness, cellular leaves, one
source copy, the depth bound, the LAN guarantee, balance, determinism, and
that repair keeps all of it for the survivors.
"""

from __future__ import annotations

import hashlib
import math
import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from edgeagent.payload.planner import (
    LARGE_GROUP,
    MAX_AUTO_STRIPES,
    MAX_AUTO_STRIPES_LARGE,
    STRIPE_SLACK,
    Forest,
    Member,
    Tree,
    bound_seconds,
    busiest_time,
    check_forest,
    depth_bound,
    lan_crossings,
    plan_forest,
    stripe_candidates,
    tree_assigns,
)
from edgeagent.payload.repair import avoid_failed, move, reassign_metered, repair
from edgeagent.wire import NodeId

SRC = NodeId.from_public_key(b"\xff" * 32)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nid(i: int, salt: int = 0) -> NodeId:
    """A NodeId whose sort order is unrelated to ``i``."""
    return NodeId.from_public_key(hashlib.sha256(f"{salt}/{i}".encode()).digest())


def ids_of(members: Sequence[Member]) -> set[NodeId]:
    return {m.node_id for m in members}


@st.composite
def member_sets(draw: st.DrawFn, min_size: int = 1, max_size: int = 80, lans: bool = True) -> list[Member]:
    n = draw(st.integers(min_size, max_size))
    salt = draw(st.integers(0, 2**16))
    upload = st.just(0.0) | st.floats(1e5, 1e8)
    relay = st.integers(0, 3).map(bool)  # about 25% False
    lan = st.sampled_from(["", "", "", "lan0", "lan1", "lan2"]) if lans else st.just("")
    rows = draw(st.lists(st.tuples(upload, relay, lan), min_size=n, max_size=n))
    return [Member(nid(i, salt), u, ok, g) for i, (u, ok, g) in enumerate(rows)]


fanouts = st.sampled_from([2, 3, 4, 16])
stripe_args = st.none() | st.integers(1, 9)


def lan_groups(members: Sequence[Member]) -> dict[str, set[NodeId]]:
    groups: dict[str, set[NodeId]] = {}
    for m in members:
        if m.lan_group:
            groups.setdefault(m.lan_group, set()).add(m.node_id)
    return {g: ms for g, ms in groups.items() if len(ms) >= 2}


def assert_core_invariants(forest: Forest, members: Sequence[Member]) -> None:
    """What check_forest checks, asserted again directly so a bug there cannot hide one here."""
    assert check_forest(forest, members) == []
    ids = ids_of(members)
    n = len(ids)
    relay_ok = {m.node_id: m.relay_ok for m in members}
    assert len(forest.trees) == forest.stripes >= 1
    interior_count: dict[NodeId, int] = {}
    for j, tree in enumerate(forest.trees):
        assert tree.stripe == j
        assert set(tree.parent) == ids  # every member exactly once (a dict key is unique)
        assert tree.root() == SRC
        reached = tree.segment().nodes()
        assert len(reached) == len(set(reached)) == n + (1 if n else 0)
        assert tree.depth() <= depth_bound(n)
        for node in tree.interior():
            interior_count[node] = interior_count.get(node, 0) + 1
            assert relay_ok[node], "a relay_ok=False member has children"
    assert all(c <= 1 for c in interior_count.values()), "a member forwards in two trees"
    if any(relay_ok.values()) and forest.stripes <= sum(relay_ok.values()):
        copies = sum(len(kids) for kids in forest.source_children()) / forest.stripes
        assert copies == 1
        assert forest.upload_share(SRC) == 1


# ---------------------------------------------------------------------------
# hand-checked examples


def test_tree_methods_on_a_hand_built_tree() -> None:
    a, b, c, d = (nid(i) for i in range(4))
    tree = Tree(
        stripe=0,
        parent={a: SRC, b: a, c: a, d: b},
        children={SRC: (a,), a: (b, c), b: (d,), c: (), d: ()},
    )
    assert tree.root() == SRC
    assert tree.depth() == 3
    assert tree.interior() == {a, b}
    seg = tree.segment()
    assert seg.hops == ()
    (top,) = seg.children
    assert [(h.src, h.dst) for h in top.hops] == [(SRC, a)]
    assert [(h.src, h.dst) for s in top.children for h in s.hops] == [(a, b), (a, c)]
    assert seg.nodes() == [SRC, a, b, d, c]
    assert tree.subtree(b).children[0].hops[0].dst == d
    assert tree.subtree(d).children == ()
    assert tree.subtree(SRC) == seg


def test_check_forest_reports_violations() -> None:
    a, b, c = nid(0), nid(1), nid(2)
    members = [Member(a), Member(b), Member(c, relay_ok=False)]

    def tree(stripe: int, parent: dict[NodeId, NodeId]) -> Tree:
        children: dict[NodeId, list[NodeId]] = {SRC: [], a: [], b: [], c: []}
        for kid, par in parent.items():
            children[par].append(kid)
        return Tree(stripe, parent, {n: tuple(ks) for n, ks in children.items()})

    good = Forest(SRC, 1, (tree(0, {a: SRC, b: a, c: a}),))
    assert check_forest(good, members) == []

    def problems(*trees: Tree) -> str:
        return " | ".join(check_forest(Forest(SRC, len(trees), trees), members))

    assert "has no parent" in problems(tree(0, {a: SRC, b: a}))
    assert "not relay_ok" in problems(tree(0, {a: SRC, c: a, b: c}))
    assert "children, not 1" in problems(tree(0, {a: SRC, b: SRC, c: a}))
    assert "forwards in trees [0, 1]" in problems(tree(0, {a: SRC, b: a, c: a}), tree(1, {a: SRC, b: a, c: b}))
    assert "not reachable" in problems(tree(0, {a: SRC, b: c, c: b}))
    chain = [Member(nid(i)) for i in range(4)]
    deep = {chain[0].node_id: SRC, **{chain[i].node_id: chain[i - 1].node_id for i in range(1, 4)}}
    kids: dict[NodeId, tuple[NodeId, ...]] = {SRC: (chain[0].node_id,)}
    kids.update({chain[i].node_id: (chain[i + 1].node_id,) for i in range(3)})
    kids[chain[3].node_id] = ()
    assert "depth 4 > bound 3" in " ".join(check_forest(Forest(SRC, 1, (Tree(0, deep, kids),)), chain))


def test_small_group_is_one_tree_and_source_sends_once() -> None:
    members = [Member(nid(i), 1e6) for i in range(4)]
    forest = plan_forest(SRC, members)
    assert forest.stripes == 1
    assert len(forest.source_children()[0]) == 1
    assert forest.upload_share(SRC) == 1
    assert_core_invariants(forest, members)


def test_no_relay_fallback_is_a_star() -> None:
    members = [Member(nid(i), 1e6, relay_ok=False) for i in range(5)]
    forest = plan_forest(SRC, members, stripes=4)
    assert forest.stripes == 1
    (tree,) = forest.trees
    assert set(tree.children[SRC]) == ids_of(members)
    assert tree.depth() == 1
    assert forest.upload_share(SRC) == 5  # the source sends N copies
    assert check_forest(forest, members) == []


def test_single_metered_member_and_no_members() -> None:
    one = [Member(nid(0), relay_ok=False)]
    forest = plan_forest(SRC, one)
    assert forest.source_children() == ((nid(0),),)
    assert check_forest(forest, one) == []
    empty = plan_forest(SRC, [])
    assert empty.stripes == 1
    assert empty.source_children() == ((),)
    assert empty.trees[0].depth() == 0
    assert check_forest(empty, []) == []


def test_explicit_stripes_are_capped_by_relays() -> None:
    members = [Member(nid(i), 1e6, relay_ok=i < 3) for i in range(12)]
    assert plan_forest(SRC, members, stripes=2).stripes == 2
    assert plan_forest(SRC, members, stripes=9).stripes == 3
    with pytest.raises(ValueError, match="stripes"):
        plan_forest(SRC, members, stripes=0)


def test_bad_input_is_rejected() -> None:
    m = Member(nid(0))
    with pytest.raises(ValueError, match="duplicate"):
        plan_forest(SRC, [m, m])
    with pytest.raises(ValueError, match="source"):
        plan_forest(SRC, [Member(SRC)])
    with pytest.raises(ValueError, match="max_fanout"):
        plan_forest(SRC, [m], max_fanout=1)
    with pytest.raises(ValueError, match="default_upload_bps"):
        plan_forest(SRC, [m], default_upload_bps=0)


def test_quarter_cellular_matches_the_design_figure() -> None:
    # DESIGN s.6: with a quarter of the nodes on cellular each Wi-Fi node uploads about 1.3 S
    members = [Member(nid(i), 1e6, relay_ok=i % 4 != 0) for i in range(40)]
    forest = plan_forest(SRC, members)
    assert forest.stripes > 1
    shares = [forest.upload_share(m.node_id) for m in members if m.relay_ok]
    assert math.isclose(sum(shares) / len(shares), 39 / 30)
    assert max(shares) <= 1.5  # within a few stripes' worth (1/k) of 1.3
    assert all(forest.upload_share(m.node_id) == 0 for m in members if not m.relay_ok)
    assert_core_invariants(forest, members)


def test_fanout_follows_upload() -> None:
    fast, slow = nid(100), nid(101)
    members = [Member(fast, 3e6), Member(slow, 1e6)] + [Member(nid(i), relay_ok=False) for i in range(8)]
    forest = plan_forest(SRC, members, stripes=1)
    (tree,) = forest.trees
    assert tree.children[SRC] == (fast,)  # the faster relay is nearer the source
    assert len(tree.children[fast]) == 7  # fast has slow plus six leaves: 7 vs 2, ~3:1
    assert len(tree.children[slow]) == 2
    assert_core_invariants(forest, members)


def test_home_lan_gets_one_copy_per_stripe() -> None:
    laptop = nid(200)
    home = [Member(laptop, 2e6, lan_group="home")]
    home += [Member(nid(201 + i), 1e6, relay_ok=i == 0, lan_group="home") for i in range(3)]
    others = [Member(nid(i), 1e6, relay_ok=i % 3 != 0) for i in range(20)]
    members = home + others
    forest = plan_forest(SRC, members)
    assert_core_invariants(forest, members)
    covered = [t for t in forest.trees if ids_of(home) & set(t.relays)]
    assert len(covered) == min(2, forest.stripes)  # the LAN has two relays, spread over the stripe groups
    for tree in covered:
        assert lan_crossings(forest, members)[(tree.stripe, "home")] == 1


def test_bound_seconds_hand_example() -> None:
    # S = 100 MB, c = 1 MB, u_src = 10 MB/s, three Wi-Fi relays at 10 MB/s, N = 4 (one cellular), B = 20 MB/s:
    # max(100/10, 4*100/(10+30)) = 10 s, plus (ceil(log2 5) - 1) = 2 hops of 1/20 s
    t = bound_seconds(100_000_000, 1_000_000, 10e6, [10e6, 10e6, 10e6], 4, 20e6)
    assert math.isclose(t, 10.1)
    # a slow source dominates: 100/1 = 100 s; one receiver adds no hop
    assert math.isclose(bound_seconds(100_000_000, 1_000_000, 1e6, [], 1, 20e6), 100.0)
    assert bound_seconds(100, 10, 1e6, [], 0, 1e6) == 0.0
    with pytest.raises(ValueError, match="positive"):
        bound_seconds(100, 10, 0, [], 1, 1e6)


def test_repair_reattaches_orphans_to_the_grandparent() -> None:
    members = [Member(nid(i), 1e6) for i in range(7)]
    forest = plan_forest(SRC, members, stripes=1)
    (tree,) = forest.trees
    (root,) = tree.children[SRC]
    middle = next(c for c in tree.children[root] if tree.children[c])
    orphans = tree.children[middle]
    fixed = repair(forest, middle, members=[m for m in members if m.node_id != middle])
    (new,) = fixed.trees
    assert middle not in new.parent
    assert all(new.parent[o] == root for o in orphans)  # the least loaded relay left: the grandparent
    assert {n: p for n, p in new.parent.items() if n not in orphans} == {
        n: p for n, p in tree.parent.items() if n not in orphans and n != middle
    }


def test_repair_promotes_a_child_of_the_dead_source_child() -> None:
    members = [Member(nid(i), 1e6) for i in range(7)]
    forest = plan_forest(SRC, members, stripes=1)
    (tree,) = forest.trees
    (root,) = tree.children[SRC]
    survivors = [m for m in members if m.node_id != root]
    fixed = repair(forest, root, members=survivors)
    (new,) = fixed.trees
    (head,) = new.children[SRC]
    assert head in tree.children[root]
    assert_core_invariants(fixed, survivors)


def test_repair_edge_cases() -> None:
    members = [Member(nid(i), 1e6) for i in range(6)]
    forest = plan_forest(SRC, members)
    assert repair(forest, nid(99), members=members) is forest
    with pytest.raises(ValueError, match="source"):
        repair(forest, SRC, members=members)
    only = [Member(nid(0))]
    gone = repair(plan_forest(SRC, only), nid(0), members=[])
    assert gone.source_children() == ((),)
    assert check_forest(gone, []) == []


def test_repair_with_fewer_relays_than_stripes_keeps_the_stripe_count() -> None:
    members = [Member(nid(i), 1e6, relay_ok=i < 2) for i in range(10)]
    forest = plan_forest(SRC, members, stripes=2)
    assert forest.stripes == 2
    dead = forest.source_children()[0][0]
    survivors = [m for m in members if m.node_id != dead]
    fixed = repair(forest, dead, members=survivors)
    assert fixed.stripes == 2
    assert check_forest(fixed, survivors) == []
    assert fixed.upload_share(SRC) > 1  # no relay is left for one stripe: the source sends it itself


def test_reassign_metered_keeps_the_node_as_a_leaf() -> None:
    members = [Member(nid(i), 1e6) for i in range(7)]
    forest = plan_forest(SRC, members, stripes=1)
    (tree,) = forest.trees
    (root,) = tree.children[SRC]
    middle = next(c for c in tree.children[root] if tree.children[c])
    now = [replace(m, relay_ok=False) if m.node_id == middle else m for m in members]
    fixed = reassign_metered(forest, middle, now)
    (new,) = fixed.trees
    assert new.parent[middle] == root and new.children[middle] == ()
    assert_core_invariants(fixed, now)
    # the source's own child turning metered: another takes its place, it stays as a leaf
    now = [replace(m, relay_ok=False) if m.node_id == root else m for m in members]
    fixed = reassign_metered(forest, root, now)
    assert fixed.trees[0].children[SRC] != (root,)
    assert fixed.trees[0].children[root] == ()
    assert_core_invariants(fixed, now)


def test_tree_assigns_describe_each_members_place() -> None:
    members = [Member(nid(i), 1e6, relay_ok=i % 4 != 0) for i in range(12)]
    forest = plan_forest(SRC, members)
    msgs = tree_assigns(forest, b"pid")
    assert set(msgs) == ids_of(members)
    for node, per_stripe in msgs.items():
        assert [a.stripe for a in per_stripe] == list(range(forest.stripes))
        for a, tree in zip(per_stripe, forest.trees, strict=True):
            assert a.payload_id == b"pid" and a.stripes == forest.stripes
            assert a.parent == tree.parent[node] and a.children == tree.children[node]
            assert (a.subtree is None) == (not a.children)
            if a.subtree is not None:
                assert set(a.subtree.nodes()) >= {node, *a.children}


def test_deterministic_across_processes() -> None:
    script = (
        "import hashlib\n"
        "from edgeagent.payload.planner import Member, plan_forest\n"
        "from edgeagent.payload.repair import repair\n"
        "from edgeagent.wire import NodeId\n"
        "ids = [NodeId.from_public_key(hashlib.sha256(str(i).encode()).digest()) for i in range(60)]\n"
        "ms = [Member(n, (i * 7919) % 97 * 1e5, i % 4 != 0, 'ab'[i % 2] if i % 3 else '') for i, n in enumerate(ids)]\n"
        "f = plan_forest(NodeId.from_public_key(bytes(32)), ms)\n"
        "print(f.assignments())\n"
        "print(repair(f, ids[5], members=ms[:5] + ms[6:]).assignments())\n"
    )
    outs = set()
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
        outs.add(proc.stdout)
    assert len(outs) == 1


# ---------------------------------------------------------------------------
# properties


@PROPS
@given(members=member_sets(), max_fanout=fanouts, stripes=stripe_args)
def test_plan_invariants(members: list[Member], max_fanout: int, stripes: int | None) -> None:
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    assert_core_invariants(forest, members)
    n_relays = sum(m.relay_ok for m in members)
    if stripes is not None:
        assert forest.stripes == max(1, min(stripes, n_relays))
    elif len(members) <= 4:
        assert forest.stripes == 1
    else:
        cap = MAX_AUTO_STRIPES_LARGE if len(members) > LARGE_GROUP else MAX_AUTO_STRIPES
        assert 1 <= forest.stripes <= max(1, min(n_relays, cap))
    if n_relays:
        assert all(len(kids) == 1 for kids in forest.source_children())
    else:
        assert forest.stripes == 1 and set(forest.source_children()[0]) == ids_of(members)
    if not lan_groups(members):  # no LAN children: the tighter bound of the docstring
        n = len(members)
        assert all(t.depth() <= n.bit_length() for t in forest.trees)  # floor(log2 N) + 1
    # every member's parents, one per stripe, and the shares add up: N copies land in all
    total = sum(forest.upload_share(x) for x in [SRC, *ids_of(members)])
    assert math.isclose(total, len(members))


@PROPS
@given(members=member_sets(), max_fanout=fanouts, stripes=stripe_args, data=st.data())
def test_plan_is_deterministic(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> None:
    shuffled = data.draw(st.permutations(members))
    a = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    b = plan_forest(SRC, shuffled, stripes=stripes, max_fanout=max_fanout)
    assert a == b
    assert a.assignments() == b.assignments()


@PROPS
@given(members=member_sets(), max_fanout=fanouts, stripes=stripe_args)
def test_lan_guarantee(members: list[Member], max_fanout: int, stripes: int | None) -> None:
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    crossings = lan_crossings(forest, members)
    relays = {m.node_id for m in members if m.relay_ok}
    for lan, mates in lan_groups(members).items():
        per_tree = [len(mates & set(t.relays)) for t in forest.trees]
        assert max(per_tree) - min(per_tree) <= 1  # a LAN's relays are spread over the stripe groups
        assert sum(per_tree) == len(mates & relays)
        for tree, r in zip(forest.trees, per_tree, strict=True):
            outside = crossings[(tree.stripe, lan)]
            if r == 0:
                assert outside == len(mates)
                continue
            assert outside >= 1
            assert outside <= r + max(0, len(mates - set(tree.relays)) - max_fanout)
            if r == 1 and len(mates) - 1 <= max_fanout:
                assert outside == 1  # one copy crosses into the LAN per stripe


@PROPS
@given(
    members=member_sets(min_size=2, lans=False),
    stripes=stripe_args,
)
def test_upload_shares_follow_upload(members: list[Member], stripes: int | None) -> None:
    # No LANs and no binding fan-out cap, so the slot dealing alone decides. It gives each slot to the
    # relay whose time (children / upload) grows least, then turns pairs of single-child relays into
    # (2, 0): so within a tree, for relays i and l, (t_i - 1) / u_i <= (t_l + 2) / u_l.
    default = 6.25e6
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=10_000, default_upload_bps=default)
    up = {m.node_id: m.upload_bps if m.upload_bps > 0 else default for m in members}
    for tree in forest.trees:
        for i in tree.relays:
            for el in tree.relays:
                ti, tl = len(tree.children[i]), len(tree.children[el])
                assert (ti - 1) * up[el] <= (tl + 2) * up[i] * (1 + 1e-9)
    if stripes is None and forest.stripes > 1:
        # automatic stripes keep the busiest uploader within STRIPE_SLACK of the one-tree plan's
        one = plan_forest(SRC, members, stripes=1, max_fanout=10_000, default_upload_bps=default)
        assert busiest_time(forest, members) <= busiest_time(one, members) * (1 + STRIPE_SLACK) * (1 + 1e-9)


@PROPS
@given(members=member_sets(), max_fanout=fanouts, stripes=stripe_args, data=st.data())
def test_repair_keeps_the_invariants(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> None:
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    dead = data.draw(st.sampled_from(sorted(ids_of(members))))
    survivors = [m for m in members if m.node_id != dead]
    fixed = repair(forest, dead, members=survivors)
    assert fixed.stripes == forest.stripes
    assert all(dead not in t.parent and dead not in t.children for t in fixed.trees)
    assert_core_invariants(fixed, survivors)
    # a second failure is repaired as well
    if len(survivors) >= 2:
        second = data.draw(st.sampled_from(sorted(ids_of(survivors))))
        rest = [m for m in survivors if m.node_id != second]
        assert check_forest(repair(fixed, second, members=rest), rest) == []


@PROPS
@given(members=member_sets(), max_fanout=fanouts, stripes=stripe_args, data=st.data())
def test_reassign_metered_keeps_the_node_a_leaf(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> None:
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    node = data.draw(st.sampled_from(sorted(ids_of(members))))
    now = [replace(m, relay_ok=False) if m.node_id == node else m for m in members]
    fixed = reassign_metered(forest, node, now)
    assert fixed.stripes == forest.stripes
    for tree in fixed.trees:
        assert node in tree.parent
        assert tree.children[node] == ()
    assert_core_invariants(fixed, now)


# ---------------------------------------------------------------------------
# move

MOVE_PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def below(tree: Tree, node: NodeId) -> set[NodeId]:
    """``node`` and everything under it in ``tree``."""
    out, stack = {node}, [node]
    while stack:
        for kid in tree.children.get(stack.pop(), ()):
            out.add(kid)
            stack.append(kid)
    return out


def depth_in(tree: Tree, node: NodeId) -> int:
    d = 0
    while node != SRC:
        node = tree.parent[node]
        d += 1
    return d


def height_in(tree: Tree, node: NodeId) -> int:
    h, level = 0, list(tree.children.get(node, ()))
    while level:
        h += 1
        level = [k for x in level for k in tree.children.get(x, ())]
    return h


def move_candidates(
    forest: Forest, stripe: int, child: NodeId, away_from: NodeId, members: Sequence[Member], avoid: set[NodeId]
) -> set[NodeId]:
    """The nodes :func:`move` may pick in tree ``stripe``, as its docstring lists them."""
    sub = below(forest.trees[stripe], child)
    elsewhere = {x for t in forest.trees if t.stripe != stripe for x in t.interior()}
    return {m.node_id for m in members if m.relay_ok} - elsewhere - sub - avoid - {away_from}


def moves_of(forest: Forest) -> list[tuple[int, NodeId, NodeId]]:
    """Every (stripe, child, parent) whose parent is not the source."""
    return sorted((t.stripe, c, p) for t in forest.trees for c, p in t.parent.items() if p != SRC)


def assert_moved(
    before: Forest,
    after: Forest,
    child: NodeId,
    away_from: NodeId,
    members: Sequence[Member],
    avoid: Sequence[NodeId] = (),
) -> None:
    """What :func:`move` promises."""
    assert after.stripes == before.stripes and after.source == before.source
    limit = depth_bound(len(members))
    to_source = {
        old.stripe
        for old, new in zip(before.trees, after.trees, strict=True)
        if old.parent.get(child) == away_from and new.parent[child] == SRC
    }

    def allowed(problem: str) -> bool:
        return any(problem.startswith(f"tree {j}: the source has ") for j in to_source) and problem.endswith(
            " children, not 1"
        )

    problems = [p for p in check_forest(after, members) if not allowed(p)]
    assert problems == [], problems
    relay_ok = {m.node_id: m.relay_ok for m in members}
    for old, new in zip(before.trees, after.trees, strict=True):
        if old.parent.get(child) != away_from:
            assert new is old  # only the trees where child hangs under away_from change
            continue
        assert new.parent[child] != away_from
        assert {n: p for n, p in new.parent.items() if n != child} == {
            n: p for n, p in old.parent.items() if n != child
        }
        sub = below(old, child)
        assert below(new, child) == sub
        assert all(new.children[x] == old.children[x] for x in sub)  # the subtree moves as it is
        par = new.parent[child]
        assert par not in sub and par not in avoid
        assert new.children[par].count(child) == 1 and child not in new.children[away_from]
        cands = move_candidates(before, old.stripe, child, away_from, members, set(avoid))
        height = height_in(old, child)
        fits = {x for x in cands if depth_in(old, x) + 1 + height <= limit}
        if par == SRC:
            assert not fits  # the source takes the child only when nobody else may (and keep the bound)
        else:
            assert par in cands
            best = {x for x in fits if len(old.children[x]) < before.max_fanout}
            if best:  # a node with room that keeps the depth bound is preferred
                assert par in best
    forwards: dict[NodeId, int] = {}
    for new in after.trees:
        for x in new.interior():
            assert relay_ok[x], "a relay_ok=False member has children"
            forwards[x] = forwards.get(x, 0) + 1
    assert all(v <= 1 for v in forwards.values()), "a member forwards in two trees"


def drawn_move(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> tuple[Forest, int, NodeId, NodeId]:
    """A planned forest and a (stripe, child, parent) drawn from its non-source edges."""
    forest = plan_forest(SRC, members, stripes=stripes, max_fanout=max_fanout)
    pairs = moves_of(forest)
    assume(pairs)
    j, child, away = data.draw(st.sampled_from(pairs))
    return forest, j, child, away


@MOVE_PROPS
@given(members=member_sets(min_size=2, max_size=50), max_fanout=fanouts, stripes=stripe_args, data=st.data())
def test_move_moves_only_the_child(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> None:
    forest, _, child, away = drawn_move(members, max_fanout, stripes, data)
    moved = move(forest, child, away, members)
    assert moved is not forest
    assert all(t.parent[child] != away for t in moved.trees)
    assert_moved(forest, moved, child, away, members)
    assert move(forest, child, away, members) == moved  # deterministic


@MOVE_PROPS
@given(members=member_sets(min_size=2, max_size=50), max_fanout=fanouts, stripes=stripe_args, data=st.data())
def test_move_honours_stripes_and_avoid(
    members: list[Member], max_fanout: int, stripes: int | None, data: st.DataObject
) -> None:
    forest, j, child, away = drawn_move(members, max_fanout, stripes, data)
    others = [s for s in range(forest.stripes) if s != j]
    assert move(forest, child, away, members, stripes=others) is forest
    assert move(forest, child, away, members, stripes=[j]) == move(forest, child, away, members)
    avoid = data.draw(st.lists(st.sampled_from(sorted(ids_of(members))), unique=True))
    moved = move(forest, child, away, members, stripes=[j], avoid=avoid)
    assert_moved(forest, moved, child, away, members, avoid)


@pytest.mark.parametrize("n", [4, 6])
def test_move_keeps_the_depth_bound(n: int) -> None:
    # max_fanout 2, one tree, all relays; the moved node has one child (height 1).
    # n=4: S->n0->{n2->n3, n1}, bound 3. Moving n2 off n0: the only candidate n1 (depth 2) puts n3 at 4;
    #      the source (n3 at 2) would keep the bound.
    # n=6: S->n4->{n0->{n1, n5}, n2->n3}, bound 4. Moving n2 off n4: n0 (full, 2 children) keeps the
    #      bound, but the leaf n1 (room, depth 3) is preferred and puts n3 at depth 5.
    members = [Member(nid(i), 1e6) for i in range(n)]
    forest = plan_forest(SRC, members, stripes=1, max_fanout=2)
    (tree,) = forest.trees
    (child,) = (c for c, p in tree.parent.items() if p != SRC and len(tree.children[c]) == 1)
    away = tree.parent[child]
    assert check_forest(forest, members) == []
    moved = move(forest, child, away, members)
    assert [p for p in check_forest(moved, members) if "children, not 1" not in p] == []


def test_move_stripes_limit_the_trees() -> None:
    # a hand-built forest where c hangs under p in both trees: only the listed trees change
    p, q, c = nid(0), nid(1), nid(2)
    members = [Member(p), Member(q), Member(c)]

    def tree(stripe: int) -> Tree:
        return Tree(stripe, {p: SRC, q: p, c: p}, {SRC: (p,), p: (q, c), q: (), c: ()})

    forest = Forest(SRC, 2, (tree(0), tree(1)))
    moved = move(forest, c, p, members, stripes=[1])
    assert moved.trees[0] is forest.trees[0]
    assert moved.trees[1].parent[c] == q
    assert moved.trees[1].children[p] == (q,) and moved.trees[1].children[q] == (c,)
    assert move(forest, c, p, members, stripes=[]) is forest
    # both trees: q takes c in tree 0, then forwards there, so the source takes c in tree 1
    both = move(forest, c, p, members)
    assert both.trees[0].parent[c] == q
    assert both.trees[1].parent[c] == SRC


def test_move_avoids_nodes_when_it_can() -> None:
    members = [Member(nid(i), 1e6) for i in range(8)]
    forest = plan_forest(SRC, members, stripes=1)
    (tree,) = forest.trees
    # a leaf (height 0) under a relay: it may go under any node above the last level
    child, away = next((c, p) for c, p in sorted(tree.parent.items()) if p != SRC and not tree.children.get(c))
    first = move(forest, child, away, members).trees[0].parent[child]
    assert first not in (SRC, away)
    second = move(forest, child, away, members, avoid=[first]).trees[0].parent[child]
    assert second not in (SRC, away, first)
    limit = depth_bound(len(members))
    cands = {x for x in move_candidates(forest, 0, child, away, members, set()) if depth_in(tree, x) + 1 <= limit}
    assert len(cands) >= 2
    for keep in sorted(cands):
        chosen = move(forest, child, away, members, avoid=cands - {keep}).trees[0].parent[child]
        assert chosen == keep  # the one candidate not avoided
    assert move(forest, child, away, members, avoid=cands).trees[0].parent[child] == SRC  # nobody left


def test_move_edge_cases() -> None:
    members = [Member(nid(i), 1e6) for i in range(8)]
    forest = plan_forest(SRC, members, stripes=2)
    tree = forest.trees[0]
    child, away = next((c, p) for c, p in sorted(tree.parent.items()) if p != SRC)
    stranger = next(m.node_id for m in members if all(t.parent[child] != m.node_id for t in forest.trees))
    assert move(forest, child, stranger, members) is forest  # child is never under stranger
    assert move(forest, nid(99), away, members) is forest  # not in the forest
    with pytest.raises(ValueError, match="source"):
        move(forest, SRC, away, members)


def test_move_falls_back_to_the_source() -> None:
    # one relay: everyone else is metered, so nobody else may forward
    relay = nid(0)
    members = [Member(relay, 1e6)] + [Member(nid(i), 1e6, relay_ok=False) for i in range(1, 6)]
    forest = plan_forest(SRC, members)
    (tree,) = forest.trees
    assert tree.children[SRC] == (relay,)
    child = tree.children[relay][0]
    moved = move(forest, child, relay, members)
    assert moved.trees[0].parent[child] == SRC
    assert set(moved.trees[0].children[SRC]) == {relay, child}
    assert check_forest(moved, members) == ["tree 0: the source has 2 children, not 1"]
    assert_moved(forest, moved, child, relay, members)
    # two relays, two stripes: the other relay forwards in the other tree, so it may not take the child
    members = [Member(nid(0), 1e6), Member(nid(1), 1e6)] + [Member(nid(i), relay_ok=False) for i in range(2, 8)]
    forest = plan_forest(SRC, members, stripes=2)
    tree = forest.trees[0]
    (head,) = tree.children[SRC]
    child = tree.children[head][0]
    moved = move(forest, child, head, members)
    assert moved.trees[0].parent[child] == SRC
    assert moved.trees[1] is forest.trees[1]
    assert_moved(forest, moved, child, head, members)


def test_repair_spreads_orphans_over_the_least_loaded_relays() -> None:
    """A dead relay's children go to the relays with the fewest children, not all to one (its parent)."""
    members = [Member(nid(i), 1e6) for i in range(40)]
    forest = plan_forest(SRC, members, stripes=4, max_fanout=16)
    j, tree, dead = next(
        (t.stripe, t, r)
        for t in forest.trees
        for r in sorted(t.interior())
        if t.parent[r] != SRC and len(t.children[r]) >= 3
    )
    orphans = set(tree.children[dead])
    survivors = [m for m in members if m.node_id != dead]
    fixed = repair(forest, dead, members=survivors)
    new = fixed.trees[j]
    assert_core_invariants(fixed, survivors)
    hosts = {new.parent[o] for o in orphans}
    assert len(hosts) >= 2  # spread, not piled onto one node
    before = max(len(tree.children[r]) for r in tree.interior() if r != dead)
    after = max(len(new.children[r]) for r in new.interior())
    assert after <= before + 1  # no relay ends up with more than one child over the busiest before


def test_large_groups_get_at_most_four_automatic_stripes() -> None:
    """More stripes mean more parent links per receiver and more flows per relay: capped for big groups."""
    big = [Member(nid(i), 1e6) for i in range(64)]
    assert plan_forest(SRC, big).stripes <= MAX_AUTO_STRIPES_LARGE == 4
    assert plan_forest(SRC, big, stripes=8).stripes == 8  # an explicit choice is kept
    small = [Member(nid(i), 1e6) for i in range(LARGE_GROUP)]
    assert stripe_candidates(len(small), len(small))[-1] == MAX_AUTO_STRIPES


@MOVE_PROPS
@given(members=member_sets(min_size=3, max_size=40), stripes=stripe_args, data=st.data())
def test_a_repaired_forest_never_keeps_an_edge_seen_to_fail(
    members: list[Member], stripes: int | None, data: st.DataObject
) -> None:
    """Whatever edges failed (a child could not link to a parent), ``avoid_failed`` leaves none of them
    in any tree, moves nothing else out of place, and keeps every member in every tree."""
    forest = plan_forest(SRC, members, stripes=stripes)
    edges = sorted({(t.parent[c], c) for t in forest.trees for c in t.parent if t.parent[c] != SRC})
    assume(edges)
    failed = data.draw(st.lists(st.sampled_from(edges), min_size=1, unique=True))
    fixed = avoid_failed(forest, failed, members)
    for tree in fixed.trees:
        assert set(tree.parent) == set(forest.trees[tree.stripe].parent)  # nobody lost
        assert not [(tree.parent[c], c) for c in tree.parent if (tree.parent[c], c) in set(failed)]
    assert avoid_failed(fixed, failed, members) == fixed  # nothing left to fix
    assert avoid_failed(forest, [], members) is forest
