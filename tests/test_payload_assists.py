"""The last stretch of a payload: ``stripe_sizes``, ``Tree.sizes`` (TreeAssign weights) and ``assists``."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.payload.assist import Standing, assists, stripe_sizes
from edgeagent.payload.planner import Forest, Member, Tree, plan_forest, tree_assigns
from edgeagent.wire import NodeId

SRC = NodeId.from_public_key(b"\xff" * 32)
PROPS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def nid(name: str | int, salt: int = 0) -> NodeId:
    """A NodeId whose sort order is unrelated to ``name``."""
    return NodeId.from_public_key(hashlib.sha256(f"{salt}/{name}".encode()).digest())


A, B, C, D, E, F = (nid(x) for x in "ABCDEF")


def forest_of(*kids_per_tree: Mapping[NodeId, Sequence[NodeId]]) -> Forest:
    """A forest from one children map per stripe (the source is SRC; nodes without children get ``()``)."""
    trees = []
    for j, kids in enumerate(kids_per_tree):
        parent = {c: p for p, cs in kids.items() for c in cs}
        children = {n: tuple(kids.get(n, ())) for n in [SRC, *parent]}
        trees.append(Tree(j, parent, children, tuple(sorted(n for n in parent if children[n]))))
    return Forest(SRC, len(trees), tuple(trees))


# two stripes: A and B forward in stripe 0, C in stripe 1; B's children are D and E
FOREST = forest_of({SRC: [A], A: [B, C], B: [D, E], C: [F]}, {SRC: [C], C: [A, B, D, E, F]})
CHUNKS = 40  # 20 per stripe
DONE = Standing(True, (20, 20))


def members(cellular: Sequence[NodeId] = (D, E)) -> list[Member]:
    return [Member(n, 1e6, n not in cellular) for n in (A, B, C, D, E, F)]


def standing(**over: Standing) -> dict[NodeId, Standing]:
    """A and B complete but busy, C and F waiting (F misses more), D complete; E has no standing."""
    base = {A: DONE, B: DONE, C: Standing(False, (5, 18)), D: DONE, F: Standing(False, (10, 0))}
    base.update({nid(k): v for k, v in over.items()})
    return base


def test_stripe_sizes_examples() -> None:
    assert stripe_sizes(10, 3) == [4, 3, 3]
    assert stripe_sizes(2, 4) == [1, 1, 0, 0]
    assert stripe_sizes(0, 2) == [0, 0]
    assert stripe_sizes(7, 0) == stripe_sizes(7, 1) == [7]


@settings(max_examples=200, deadline=None)
@given(n=st.integers(0, 1000), k=st.integers(0, 12))
def test_stripe_sizes_property(n: int, k: int) -> None:
    sizes = stripe_sizes(n, k)
    assert len(sizes) == max(k, 1)
    assert sum(sizes) == n
    assert max(sizes) - min(sizes) <= 1
    assert sizes == [len(range(j, n, max(k, 1))) for j in range(max(k, 1))]


def test_tree_sizes_hand_example() -> None:
    sizes = FOREST.trees[0].sizes()
    assert sizes == {SRC: 7, A: 6, B: 3, C: 2, D: 1, E: 1, F: 1}
    assert FOREST.trees[1].sizes() == {SRC: 7, C: 6, A: 1, B: 1, D: 1, E: 1, F: 1}


def test_tree_sizes_and_weights_on_planned_forest() -> None:
    group = [Member(nid(i, 7), 1e6 * (1 + i % 5), i % 4 != 0) for i in range(20)]
    forest = plan_forest(SRC, group, stripes=3)
    assert forest.stripes == 3
    for tree in forest.trees:
        sizes = tree.sizes()
        assert set(sizes) == {SRC, *tree.parent}
        assert sizes[tree.root()] == len(tree.parent) + 1 == 21
        for node, size in sizes.items():
            kids = tree.children.get(node, ())
            assert size == 1 + sum(sizes[c] for c in kids)
            if not kids:
                assert size == 1
    msgs = tree_assigns(forest, b"pid")
    for node, assigns in msgs.items():
        for msg, tree in zip(assigns, forest.trees, strict=True):
            assert msg.stripe == tree.stripe
            assert len(msg.weights) == len(msg.children)
            assert msg.weights == tuple(tree.sizes()[c] for c in msg.children), node


def test_assists_no_helper() -> None:
    waiting = {n: Standing(False, (3, 3)) for n in (A, B, C, D, E, F)}
    assert assists(FOREST, waiting, members(), CHUNKS, active={}) == []
    # complete but busy (A's child C waits), cellular (D) or dead (B): still nobody
    st_ = standing()
    assert assists(FOREST, st_, members(), CHUNKS, active={}, dead={B}) == []
    # a helper but nobody waiting
    assert assists(FOREST, {n: DONE for n in (A, B, C, D, F)}, members(), CHUNKS, active={}) == []


def test_assists_order_stripe_and_count() -> None:
    # only B helps: A's child C is incomplete, D is cellular; E (B's other child) has no standing but is dead
    out = assists(FOREST, standing(), members(), CHUNKS, active={}, dead={E})
    # F misses 30 (10 + 20) so goes first, on stripe 1; C misses 15 + 2, stripe 0
    assert out == [(F, 1, B, max(4, 20 * 2 // 3)), (C, 0, B, 15 * 2 // 3)]
    # without E dead, B has a child with no standing: busy
    assert assists(FOREST, standing(), members(), CHUNKS, active={}) == []
    # min_chunks: C's stripe 0 missing 15 < 16 is left to the parent; F's 20 is not; count floors at min_chunks
    out = assists(FOREST, standing(), members(), CHUNKS, active={}, dead={E}, min_chunks=16)
    assert out == [(F, 1, B, 16)]


def test_assists_idle_and_cellular_helpers() -> None:
    # A is busy (C waits) unless idle
    out = assists(FOREST, standing(A=Standing(True, (20, 20), idle=True)), members(), CHUNKS, active={}, dead={E})
    first = min(A, B)
    assert out == [(F, 1, first, 13), (C, 0, max(A, B), 10)]
    # a cellular node is never a helper, idle or not; D (complete leaf) helps once relay_ok
    assert assists(FOREST, standing(), members(cellular=(B, D, E)), CHUNKS, active={}, dead={E}) == []
    out = assists(FOREST, standing(), members(cellular=(E,)), CHUNKS, active={}, dead={E})
    assert {h for *_, h, _ in out} <= {B, D} and len({h for *_, h, _ in out}) == 2
    # a member absent from ``members`` is not a helper
    only = [m for m in members() if m.node_id != B]
    assert assists(FOREST, standing(), only, CHUNKS, active={}, dead={E}) == []


def test_assists_helper_holding_one_stripe() -> None:
    # A is still receiving stripe 1 but holds all of stripe 0, which it forwards, and has sent it on
    # (idle): it may serve stripe 0, never stripe 1, and is itself helped in stripe 1
    part = Standing(False, (20, 5), idle=True)
    out = assists(FOREST, standing(A=part), members(), CHUNKS, active={}, dead={E})
    assert out == [(F, 1, B, 13), (C, 0, A, 10), (A, 1, B, 10)]
    # without B only stripe 0 has a helper: F takes stripe 0 (it misses more of 1) and A is not helped
    out = assists(FOREST, standing(A=part), members(), CHUNKS, active={}, dead={E, B})
    assert out == [(F, 0, A, 6), (C, 0, A, 10)]
    # C is linked to A, its parent in stripe 0, which is idle: A has sent C all of stripe 0 (what the
    # source last heard C lacks is on its way), so no helper for it there; unlinked, C is helped
    linked_c = Standing(False, (5, 18), linked=True)
    out = assists(FOREST, standing(A=part, C=linked_c), members(), CHUNKS, active={}, dead={E})
    assert out == [(F, 1, B, 13), (A, 1, B, 10)]
    out = assists(FOREST, standing(A=part, C=linked_c), members(), CHUNKS, active={}, dead={E, B})
    assert out == [(F, 0, A, 6)]
    # not idle (still sending stripe 0 to its children): no helper at all
    busy = Standing(False, (20, 5))
    assert assists(FOREST, standing(A=busy), members(), CHUNKS, active={}, dead={E, B}) == []


def test_assists_dead_receiver_and_bad_standing() -> None:
    assert assists(FOREST, standing(), members(), CHUNKS, active={}, dead={E, F}) == [(C, 0, B, 10)]
    # a standing with the wrong number of stripes is not a receiver
    bad = standing(F=Standing(False, (0,)))
    assert assists(FOREST, bad, members(), CHUNKS, active={}, dead={E}) == [(C, 0, B, 10)]


def test_assists_active_and_per_helper() -> None:
    # (F, 1) already running: F gets its other stripe (10 missing)
    out = assists(FOREST, standing(), members(), CHUNKS, active={(F, 1): B}, dead={E}, per_helper=3)
    assert out == [(F, 0, B, 6), (C, 0, B, 10)]
    # per_helper counts the active assists: B already serves one, so only F gets it
    out = assists(FOREST, standing(), members(), CHUNKS, active={(F, 1): B}, dead={E})
    assert out == [(F, 0, B, 6)]
    assert assists(FOREST, standing(), members(), CHUNKS, active={(C, 1): B}, dead={E}, per_helper=1) == []
    # C's only stripe with enough missing is active: C is skipped, not given stripe 1 (2 missing)
    assert assists(FOREST, standing(), members(), CHUNKS, active={(C, 0): A}, dead={E}) == [(F, 1, B, 13)]
    # the least-loaded helper goes first, whatever the NodeId order
    idle_a = standing(A=Standing(True, (20, 20), idle=True))
    out = assists(FOREST, idle_a, members(), CHUNKS, active={(nid("X"), 0): A}, dead={E})
    assert out[0] == (F, 1, B, 13) and out[1] == (C, 0, min(A, B), 10)


Scenario = tuple[
    Forest, dict[NodeId, Standing], list[Member], int, dict[tuple[NodeId, int], NodeId], set[NodeId], int, int
]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    salt = draw(st.integers(0, 2**16))
    n = draw(st.integers(1, 24))
    group = [Member(nid(i, salt), 1e6, draw(st.integers(0, 3)) > 0) for i in range(n)]
    forest = plan_forest(SRC, group, stripes=draw(st.integers(1, 4)))
    chunks = draw(st.integers(0, 60))
    sizes = stripe_sizes(chunks, forest.stripes)
    state: dict[NodeId, Standing] = {}
    for m in group:
        kind = draw(st.sampled_from(["done", "idle", "idle", "wait", "wait", "none", "short"]))
        if kind in ("done", "idle"):
            state[m.node_id] = Standing(True, tuple(sizes), idle=kind == "idle")
        elif kind == "wait":
            have = tuple(draw(st.integers(0, s + 2)) for s in sizes)
            state[m.node_id] = Standing(False, have, idle=draw(st.booleans()), linked=draw(st.booleans()))
        elif kind == "short":
            state[m.node_id] = Standing(False, (0,) * (forest.stripes + 1))
    ids = [m.node_id for m in group]
    dead = set(draw(st.lists(st.sampled_from(ids), max_size=3)))
    pairs = st.tuples(st.sampled_from(ids), st.integers(0, forest.stripes - 1))
    active = draw(st.dictionaries(pairs, st.sampled_from(ids), max_size=4))
    listed = [m for m in group if draw(st.integers(0, 9)) > 0]
    return forest, state, listed, chunks, active, dead, draw(st.integers(0, 3)), draw(st.integers(1, 6))


@PROPS
@given(scenarios())
def test_assists_properties(case: Scenario) -> None:
    forest, state, listed, chunks, active, dead, per_helper, min_chunks = case
    out = assists(forest, state, listed, chunks, active=active, dead=dead, per_helper=per_helper, min_chunks=min_chunks)
    k = forest.stripes
    sizes = stripe_sizes(chunks, k)
    relay = {m.node_id for m in listed if m.relay_ok}
    kids: dict[NodeId, set[NodeId]] = {}
    for tree in forest.trees:
        for node, cs in tree.children.items():
            kids.setdefault(node, set()).update(cs)

    def whole(x: NodeId) -> bool:
        return x in state and state[x].complete

    helpers = {
        h
        for h in forest.members()
        if h in relay
        and h not in dead
        and h in state
        and (state[h].idle or (whole(h) and all(whole(c) or c in dead for c in kids.get(h, ()))))
    }

    def holds(h: NodeId, j: int) -> bool:  # the whole stripe j
        return state[h].complete or (len(state[h].stripe_have) == k and state[h].stripe_have[j] >= sizes[j])

    def sent_all(r: NodeId, j: int) -> bool:  # linked to its parent in tree j, idle with the whole stripe
        p = forest.trees[j].parent.get(r)
        return state[r].linked and p in state and state[p].idle and holds(p, j)

    missing = {
        r: [max(0, sizes[j] - s.stripe_have[j]) for j in range(k)]
        for r, s in state.items()
        if r not in dead and not s.complete and len(s.stripe_have) == k
    }
    load = Counter(active.values())

    def free(r: NodeId, j: int) -> list[NodeId]:
        return [x for x in helpers if x != r and holds(x, j) and load[x] < per_helper]

    if not helpers:
        assert out == []
    for r, j, h, count in out:
        assert h in helpers and h != r and r in missing and r not in dead and holds(h, j)
        options = [
            x
            for x in range(k)
            if (r, x) not in active and missing[r][x] >= max(1, min_chunks) and not sent_all(r, x) and free(r, x)
        ]
        assert (r, j) not in active and j in options
        assert j == max(options, key=lambda x: (missing[r][x], -x))  # the stripe it misses most of, among those served
        assert count == max(min_chunks, missing[r][j] * 2 // 3) and count <= missing[r][j]
        assert h == min(free(r, j), key=lambda x: (load[x], x))  # least loaded, then NodeId
        load[h] += 1
    assert all(load[h] <= max(per_helper, Counter(active.values())[h]) for h in helpers)
    served = [r for r, *_ in out]
    assert len(served) == len(set(served))
    order = sorted(missing, key=lambda r: (-sum(missing[r]), r))
    assert served == [r for r in order if r in served]  # most missing first
    for r in order:  # one skipped had no stripe with a free helper then (loads only grow)
        if r not in served:
            assert not any(
                (r, x) not in active and missing[r][x] >= max(1, min_chunks) and not sent_all(r, x) and free(r, x)
                for x in range(k)
            )
