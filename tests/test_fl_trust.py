"""Federated-learning updates are checked where they are summed (issue 16, item 5).

The domain takes an ``Update`` only from a participant of the round, naming only devices inside
the subtree the round assigned to that sender, in the model's float32 shapes with finite values;
a relay checks its children the same way against the subtrees its ``RoundStart`` lists. A bad
update is answered with an ``Error`` (BAD_REQUEST for its form, UNAUTHORIZED for its sender or
the devices it speaks for, QUOTA for an over-long list), counted under ``limits.refused`` and
logged once per sender; the round goes on with the honest updates and the model stays finite.

The domain and the device run in process on a FakeHost (``tests/conftest.py``), the round driven
through ``FlDomain._round`` and the handlers exactly as the Node calls them; one test runs a
whole job between Nodes over loopback with a device that forges updates.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.fl import LogReg, RoundSum, apply_fedavg, model_bytes, to_tensors, weighted_delta
from edgeagent.fl.aggregate import MAX_MEAN_STEP, update_problem
from edgeagent.fl.checks import SUBTREES, child_subtrees, subtrees
from edgeagent.fl.device import FlDevice
from edgeagent.fl.job import JobSpec
from edgeagent.fl.service import FlDomain
from edgeagent.identity import Identity
from edgeagent.limits import Limiter, ResourceLimits
from edgeagent.netcost.battery import BatteryState
from edgeagent.payload.planner import Tree
from edgeagent.wire import Eligibility, Error, ErrorCode, JobAdvert, NodeId, RoundStart, Tensor, Update
from tests.conftest import FakeHost, FakeRoutes, peer_table, until

JOB = "trust"
FEATURES, CLASSES = 4, 2
SHAPES = [(FEATURES, CLASSES), (CLASSES,)]


def nid(name: str) -> NodeId:
    return NodeId.from_public_key(hashlib.sha256(f"fl-trust/{name}".encode()).digest())


IDENTITY = {n: Identity.generate() for n in "DABCEFX"}
D, A, B, C, E, F, X = (IDENTITY[n].node_id for n in "DABCEFX")
#: tree 0 of the round: D -> A -> {B, C}, B -> F; D -> E. A speaks for {A, B, C, F}, B for {B, F}.
PARENT = {A: D, B: A, C: A, F: B, E: D}
SAMPLES = {A: 10, B: 20, C: 30, E: 40, F: 50}
PARTICIPANTS = sorted(SAMPLES)


def tree0() -> Tree:
    children: dict[NodeId, tuple[NodeId, ...]] = {n: () for n in [D, *PARENT]}
    for kid, parent in PARENT.items():
        children[parent] = (*children[parent], kid)
    return Tree(0, dict(PARENT), children)


def own(who: NodeId, base: list[np.ndarray], seed: int, n: int | None = None) -> Update:
    """``who``'s honest update: a random trained model, weighted by its samples."""
    rng = np.random.default_rng(seed)
    n = SAMPLES[who] if n is None else n
    new = [(p + rng.normal(0, 0.1, p.shape)).astype(np.float32) for p in base]
    return Update(JOB, 0, to_tensors(weighted_delta(new, base, n)), n, (who,), (), {"train_loss": 0.5 * n})


def summed(*updates: Update) -> Update:
    rs = RoundSum(JOB, 0)
    for u in updates:
        assert rs.add(u)
    return rs.to_update()


def honest(base: list[np.ndarray]) -> dict[NodeId, Update]:
    """What reaches the domain in an honest round: A's sum of its subtree, and E's own."""
    mine = {n: own(n, base, i) for i, n in enumerate(PARTICIPANTS)}
    return {A: summed(mine[A], summed(mine[B], mine[F]), mine[C]), E: mine[E]}


def expected_model(base: list[np.ndarray], updates: dict[NodeId, Update]) -> list[np.ndarray]:
    rs = RoundSum(JOB, 0)
    for u in updates.values():
        assert rs.add(u)
    return apply_fedavg(base, rs)


def with_delta(upd: Update, arrays: list[np.ndarray] | tuple[Tensor, ...], **kw: Any) -> Update:
    tensors = tuple(arrays) if isinstance(arrays, tuple) else tuple(Tensor.from_numpy(a) for a in arrays)
    return dataclasses.replace(upd, weighted_delta=tensors, **kw)


class FakePayloads:
    """The payload service as FL uses it: a fixed tree 0, and a model that arrives when ``ready`` is set."""

    def __init__(self, tree: Tree | None = None, model: Path | None = None) -> None:
        self.tree = tree
        self.model = model
        self.ready = asyncio.Event()
        self.ready.set()

    async def start(self, path: Path, to: list[NodeId] | None = None, *, star: bool = False) -> bytes:
        return hashlib.sha256(str(path).encode()).digest()

    def first_tree(self, pid: bytes) -> Any:
        return self.tree

    async def wait(self, pid: bytes, timeout: float | None = None) -> Any:
        return None

    async def wait_complete(self, pid: bytes, timeout: float) -> Path:
        await self.ready.wait()
        assert self.model is not None
        return self.model


def _host(
    state: Path, *, role: str, allow: list[NodeId], domains: tuple[NodeId, ...] = (), identity: Identity | None = None
) -> FakeHost:
    host = FakeHost(state, role=role, identity=identity or IDENTITY["D"])
    host.peers = peer_table(allow=allow, domains=domains)
    host.routes = FakeRoutes(host.peers)
    return host


class Domain:
    """An FlDomain on a FakeHost running round 0 of a job over ``tree0()``; outsider X is authorised too."""

    def __init__(self, tmp: Path, limiter: Limiter | None = None, deadline: float = 5.0) -> None:
        self.host = _host(tmp / "dom", role="domain", allow=[*PARTICIPANTS, X])
        if limiter is not None:
            self.host.limiter = limiter
        spec = JobSpec(JOB, "logreg", FEATURES, CLASSES, rounds=1, min_participants=2, round_deadline_s=deadline)
        self.fl = FlDomain(self.host, FakePayloads(tree0()), spec)
        self.fl.dir.mkdir(parents=True)
        self.fl._load_state()
        self.fl.joined = dict(SAMPLES)
        self.base = [p.copy() for p in self.fl.params]
        self.task: asyncio.Future[None] | None = None

    async def start(self) -> None:
        sent = self._round_starts()
        self.task = asyncio.ensure_future(self.fl._round(0, list(PARTICIPANTS)))
        want = sent + len(PARTICIPANTS)
        await until(lambda: self._round_starts() == want, 5, "round 0 to start")

    def _round_starts(self) -> int:
        return sum(isinstance(b, RoundStart) for _, b in self.host.sent)

    async def send(self, sender: NodeId, upd: Update) -> list[Error]:
        """Deliver ``upd`` from ``sender``; the Errors the domain answered with."""
        out = await self.host.deliver(self.fl, upd, sender)
        return [e.body for e in out if isinstance(e.body, Error)]

    async def finish(self) -> dict[str, Any]:
        assert self.task is not None
        await asyncio.wait_for(self.task, 5)
        assert len(self.fl.history) == 1, "round 0 did not complete"
        return dict(self.fl.history[0])

    def starts(self) -> dict[NodeId, RoundStart]:
        return {peer: body for peer, body in self.host.sent if isinstance(body, RoundStart)}


def assert_model(fl: FlDomain, want: list[np.ndarray]) -> None:
    assert len(fl.params) == len(want)
    for got, w in zip(fl.params, want, strict=True):
        assert got.dtype == np.float32 and np.isfinite(got).all()
        np.testing.assert_allclose(got, w, rtol=1e-6, atol=1e-7)


async def honest_round(dom: Domain, ups: dict[NodeId, Update], *, refused: int) -> None:
    """The honest updates are all taken; the round counts every participant; the model is their FedAvg."""
    for sender, upd in ups.items():
        assert await dom.send(sender, upd) == [], f"the honest update from {sender.short()} was refused"
    hist = await dom.finish()
    assert hist["participants"] == len(PARTICIPANTS) and hist["dropped"] == 0, hist
    assert hist["refused_updates"] == refused, hist
    assert dom.fl.round is None
    assert_model(dom.fl, expected_model(dom.base, ups))


# -- the domain -------------------------------------------------------------------------------------------


async def test_round_start_lists_each_childs_subtree(tmp_path: Path) -> None:
    dom = Domain(tmp_path)
    await dom.start()
    starts = dom.starts()
    assert set(starts) == set(PARTICIPANTS)
    assert starts[A].expected == (B, C) and starts[B].expected == (F,)
    assert child_subtrees(starts[A]) == {B: frozenset({B, F}), C: frozenset({C})}
    assert child_subtrees(starts[B]) == {F: frozenset({F})}
    for leaf in (C, E, F):
        assert SUBTREES not in starts[leaf].hyperparams and child_subtrees(starts[leaf]) == {}
    assert dom.fl.round is not None
    assert dom.fl.round.assigned[A] == {A, B, C, F} and dom.fl.round.assigned[E] == {E}
    await honest_round(dom, honest(dom.base), refused=0)


@pytest.mark.parametrize(
    ("sender", "contributors", "dropped"),
    [
        pytest.param(E, (E, B), (), id="E-claims-B-of-another-subtree"),
        pytest.param(E, (B,), (), id="E-claims-only-B"),
        pytest.param(F, (F, A), (), id="F-claims-its-ancestor-A"),
        pytest.param(B, (B, F, C), (), id="B-claims-its-sibling-C"),
        pytest.param(E, (E,), (A,), id="E-reports-A-dropped"),
        pytest.param(C, (), (A, C), id="C-leaves-and-reports-A-dropped"),
    ],
)
async def test_foreign_contributors_are_refused_and_the_honest_updates_still_count(
    tmp_path: Path, sender: NodeId, contributors: tuple[NodeId, ...], dropped: tuple[NodeId, ...]
) -> None:
    dom = Domain(tmp_path)
    await dom.start()
    ups = honest(dom.base)
    # the forgery comes first and looks like the real thing: same shapes, plausible samples
    forged = dataclasses.replace(
        ups[A] if contributors else Update(JOB, 0, (), 0, (), ()),
        contributors=contributors,
        dropped=dropped,
        num_samples=sum(SAMPLES[c] for c in contributors),
    )
    errors = await dom.send(sender, forged)
    assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED], errors
    assert "outside its assigned subtree" in errors[0].reason
    assert dom.host.limiter.refused["fl_contributors"] == 1
    assert dom.fl.round is not None and not dom.fl.round.sums.contributors and not dom.fl.round.sums.dropped
    assert not dom.fl.left
    await honest_round(dom, ups, refused=1)


async def test_an_update_within_the_senders_subtree_is_taken(tmp_path: Path) -> None:
    """B sends its subtree's sum straight to the domain (as when A is unreachable): B speaks for F."""
    dom = Domain(tmp_path)
    await dom.start()
    mine = {n: own(n, dom.base, i) for i, n in enumerate(PARTICIPANTS)}
    ups = {B: summed(mine[B], mine[F]), A: summed(mine[A], mine[C]), E: mine[E]}
    await honest_round(dom, ups, refused=0)


def _bad_updates() -> list[Any]:
    base = LogReg().init({}, FEATURES, CLASSES, 0)
    good = own(E, base, 99)
    w, b = (a.copy() for a in (np.asarray(t.to_numpy()) for t in good.weighted_delta))

    def nan() -> list[np.ndarray]:
        w2 = w.copy()
        w2[1, 1] = np.nan
        return [w2, b]

    def inf(sign: float) -> list[np.ndarray]:
        b2 = b.copy()
        b2[0] = sign * np.inf
        return [w, b2]

    return [
        pytest.param(with_delta(good, [w.T.copy(), b]), id="transposed"),
        pytest.param(with_delta(good, [w]), id="an-array-missing"),
        pytest.param(with_delta(good, [w, b, b]), id="an-array-more"),
        pytest.param(with_delta(good, [w.reshape(-1), b]), id="flattened"),
        pytest.param(with_delta(good, [w.astype(np.float64), b]), id="float64"),
        pytest.param(with_delta(good, [w.astype(np.float16), b.astype(np.float16)]), id="float16"),
        pytest.param(with_delta(good, [np.ones(w.shape, np.int32), b]), id="int32"),
        pytest.param(with_delta(good, nan()), id="nan"),
        pytest.param(with_delta(good, inf(1.0)), id="inf"),
        pytest.param(with_delta(good, inf(-1.0)), id="minus-inf"),
        pytest.param(with_delta(good, [np.full(w.shape, 3e38, np.float32), b]), id="huge-finite"),
        pytest.param(with_delta(good, [w, b], num_samples=0), id="weight-without-samples"),
        pytest.param(dataclasses.replace(good, metrics={"train_loss": float("nan")}), id="nan-metric"),
        pytest.param(dataclasses.replace(good, num_samples=SAMPLES[E] + 1), id="more-samples-than-joined"),
        pytest.param(dataclasses.replace(good, contributors=(E, E)), id="contributor-twice"),
        pytest.param(dataclasses.replace(good, contributors=(), num_samples=0), id="arrays-without-contributors"),
    ]


@pytest.mark.parametrize("bad", _bad_updates())
async def test_malformed_updates_are_refused_and_the_round_goes_on(tmp_path: Path, bad: Update) -> None:
    dom = Domain(tmp_path)
    await dom.start()
    errors = await dom.send(E, bad)
    assert [e.code for e in errors] == [ErrorCode.BAD_REQUEST], errors
    assert dom.host.limiter.refused["fl_update"] == 1
    assert dom.fl.round is not None and dom.fl.round.sums.total is None and not dom.fl.round.sums.contributors
    # E's own, well-formed update is still taken afterwards, and so is everyone else's
    await honest_round(dom, honest(dom.base), refused=1)


async def test_bad_rerouted_updates_are_refused_at_once(tmp_path: Path) -> None:
    """A re-routed update is held until the round ends: it is checked before it is held."""
    dom = Domain(tmp_path)
    await dom.start()
    ups = honest(dom.base)
    forged = dataclasses.replace(ups[A], rerouted=True)  # E re-routes "A's subtree"
    assert [e.code for e in await dom.send(E, forged)] == [ErrorCode.UNAUTHORIZED]
    nan = with_delta(ups[E], [np.full(s, np.nan, np.float32) for s in SHAPES], rerouted=True)
    assert [e.code for e in await dom.send(E, nan)] == [ErrorCode.BAD_REQUEST]
    assert dom.fl.round is not None and dom.fl.round.rerouted == []
    # C re-routes its own (as when A died); a second re-routed one from it is refused
    c_own = dataclasses.replace(own(C, dom.base, 7), rerouted=True)
    assert await dom.send(C, c_own) == []
    assert [e.code for e in await dom.send(C, c_own)] == [ErrorCode.BAD_REQUEST]
    # 3 refusals, and C's re-routed copy, added last, overlaps A's sum: not counted twice
    await honest_round(dom, ups, refused=4)


async def test_a_non_participants_update_is_refused(tmp_path: Path) -> None:
    dom = Domain(tmp_path)
    await dom.start()
    ups = honest(dom.base)
    x_own = dataclasses.replace(ups[E], contributors=(X,), metrics={})
    for forged in (x_own, ups[A], Update(JOB, 0, (), 0, (), (X,)), dataclasses.replace(ups[E], rerouted=True)):
        errors = await dom.send(X, forged)
        assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED], errors
        assert "not a participant" in errors[0].reason
    assert dom.host.limiter.refused["fl_sender"] == 4
    assert X not in dom.fl.left
    await honest_round(dom, ups, refused=4)


async def test_contributor_lists_are_capped(tmp_path: Path) -> None:
    """At most ``list_items`` names, unless the sender's assigned subtree is larger (A's has 4)."""
    dom = Domain(tmp_path, Limiter(ResourceLimits(list_items=2)))
    await dom.start()
    ups = honest(dom.base)
    many = tuple(nid(f"many-{i}") for i in range(50))
    for forged in (dataclasses.replace(ups[E], contributors=many), dataclasses.replace(ups[E], dropped=many)):
        errors = await dom.send(E, forged)
        assert [e.code for e in errors] == [ErrorCode.QUOTA], errors
    metrics = dataclasses.replace(ups[E], metrics={f"m{i}": 0.0 for i in range(3)})
    assert [e.code for e in await dom.send(E, metrics)] == [ErrorCode.QUOTA]
    assert dom.host.limiter.refused["list_items"] == 3
    await honest_round(dom, ups, refused=3)  # A's sum names 4 > list_items: its subtree is that large


async def test_refusals_are_counted_each_and_logged_once_per_sender(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dom = Domain(tmp_path)
    await dom.start()
    ups = honest(dom.base)
    nan = with_delta(ups[E], [np.full(s, np.nan, np.float32) for s in SHAPES])
    with caplog.at_level(logging.WARNING, logger="edgeagent.limits"):
        for _ in range(5):
            assert [e.code for e in await dom.send(E, nan)] == [ErrorCode.BAD_REQUEST]
        assert [e.code for e in await dom.send(F, dataclasses.replace(nan, contributors=(F,)))] == [
            ErrorCode.BAD_REQUEST
        ]
    assert dom.host.limiter.refused["fl_update"] == 6
    assert dom.host.limiter.to_json()["refused"]["fl_update"] == 6
    lines = [r.getMessage() for r in caplog.records if "fl_update" in r.getMessage()]
    assert len(lines) == 2, lines  # one for E, one for F
    assert E.short() in lines[0] and "NaN" in lines[0]
    await honest_round(dom, ups, refused=6)


async def test_late_update_of_an_earlier_attempt_is_checked_against_that_attempt(tmp_path: Path) -> None:
    """A round repeated with the same number: an update from the failed try counts if it fits that try."""
    dom = Domain(tmp_path, deadline=1.0)
    await dom.start()
    assert dom.task is not None
    await asyncio.wait_for(dom.task, 3)  # nobody sent: too few updates, the round is to be repeated
    assert dom.fl.history == [] and dom.fl.round is None
    # the repeat puts E above C: D -> A -> B -> F; D -> E -> C
    tree = tree0()
    tree.parent[C] = E
    tree.children[A] = (B,)
    tree.children[E] = (C,)
    assert isinstance(dom.fl.payloads, FakePayloads)
    dom.fl.payloads.tree = tree
    await dom.start()
    ups = honest(dom.base)
    late_a = ups[A]  # A's sum from the first try: A, B, C, F (C was A's then)
    assert await dom.send(A, late_a) == []
    # E may speak for C now, but C is already counted (A's late sum): refused as overlap, not as foreign
    mine_c, mine_e = own(C, dom.base, 2), own(E, dom.base, 4)
    assert await dom.send(E, summed(mine_e, mine_c)) == []
    assert await dom.send(E, mine_e) == []
    hist = await dom.finish()
    assert hist["participants"] == len(PARTICIPANTS) and hist["refused_updates"] == 1, hist
    assert_model(dom.fl, expected_model(dom.base, {A: late_a, E: mine_e}))


# -- the pure parts -----------------------------------------------------------------------------------------


def test_subtrees_follow_parents_through_members_only() -> None:
    got = subtrees(PARENT, PARTICIPANTS)
    assert got == {
        A: {A, B, C, F},
        B: {B, F},
        C: {C},
        E: {E},
        F: {F},
    }
    assert subtrees({A: D, B: X, F: B}, [A, B, F]) == {A: {A}, B: {B, F}, F: {F}}  # X is no member
    assert subtrees({A: B, B: A}, [A, B]) == {A: {A, B}, B: {A, B}}  # a cycle ends


def test_update_problem_and_round_sum_refuse_what_does_not_fit() -> None:
    base = LogReg().init({}, FEATURES, CLASSES, 0)
    good = own(E, base, 1)
    assert update_problem(good, SHAPES) is None and update_problem(good, None) is None
    nan = with_delta(good, [np.full(s, np.nan, np.float32) for s in SHAPES])
    f64 = with_delta(good, [np.zeros(s, np.float64) for s in SHAPES])
    wrong = with_delta(good, [np.zeros(s[::-1], np.float32) for s in SHAPES])
    big = with_delta(good, [np.full(s, SAMPLES[E] * MAX_MEAN_STEP * 2, np.float32) for s in SHAPES])
    assert "NaN" in (update_problem(nan, None) or "")
    assert "float64" in (update_problem(f64, None) or "")
    assert "shape" in (update_problem(wrong, SHAPES) or "") and update_problem(wrong, None) is None
    assert "per sample" in (update_problem(big, SHAPES) or "")
    # RoundSum refuses them too, whoever adds (a relay adding its own update, a caller that skipped the check)
    rs = RoundSum(JOB, 0, shapes=list(SHAPES))
    for bad in (nan, f64, wrong, big):
        assert not rs.add(bad)
    assert rs.refused == 4 and rs.total is None and rs.shapes == SHAPES
    assert rs.add(good) and rs.contributors == {E}
    out = apply_fedavg(base, rs)
    assert all(np.isfinite(p).all() for p in out)


def test_apply_fedavg_never_produces_nan_or_inf() -> None:
    base = [np.full((2,), 3e38, np.float32)]
    rs = RoundSum(JOB, 0)
    assert rs.add(Update(JOB, 0, to_tensors([np.full((2,), 1e6, np.float32)]), 1, (E,), ()))
    assert rs.total is not None
    rs.total[0][:] = 1e39  # beyond float32, as no checked sum gets
    out = apply_fedavg(base, rs)
    np.testing.assert_array_equal(out[0], base[0])  # the model stays as it was
    rs.total[0][:] = np.nan
    np.testing.assert_array_equal(apply_fedavg(base, rs)[0], base[0])


# -- a relay checks its children ----------------------------------------------------------------------------


class Relay:
    """Device A of ``tree0()`` on a FakeHost, in round 0: parent D (the domain), children B (over F) and C."""

    def __init__(self, tmp: Path, *, subtrees_listed: bool = True) -> None:
        self.host = _host(tmp / "a", role="device", allow=[X], domains=(D,), identity=IDENTITY["A"])
        rng = np.random.default_rng(0)
        data = tmp / "a.npz"
        np.savez(data, x=rng.normal(0, 1, (SAMPLES[A], FEATURES)).astype(np.float32), y=np.arange(SAMPLES[A]) % 2)
        self.base = LogReg().init({}, FEATURES, CLASSES, 0)
        model = tmp / "model.npz"
        model.write_bytes(model_bytes(self.base))
        self.payloads = FakePayloads(model=model)
        self.fl = FlDevice(
            self.host,
            self.payloads,
            data,
            battery=lambda: BatteryState(80.0, True, "test"),
        )
        self.fl.jobs[JOB] = JobAdvert(JOB, "logreg", None, {}, 1, 1, Eligibility(), 5000)
        self.fl.joined.add(JOB)
        self.fl.joined_at[JOB] = D
        now_ms = int(time.time() * 1000)
        hyper: dict[str, Any] = {"_send_by_ms": now_ms + 2000, "_step_ms": 300, "seed": 0, "epochs": 1}
        if subtrees_listed:
            hyper[SUBTREES] = [[str(F)], []]
        self.start_msg = RoundStart(JOB, 0, b"model", now_ms + 5000, D, (B, C), hyper)

    async def round_start(self) -> None:
        await self.host.deliver(self.fl, self.start_msg, D)
        if self.payloads.ready.is_set():  # the model is here: wait until the relay has read it
            await until(lambda: self.fl.rounds[(JOB, 0)].sums.shapes is not None, 5, "the model to be read")

    async def send(self, sender: NodeId, upd: Update) -> list[Error]:
        out = await self.host.deliver(self.fl, upd, sender)
        return [e.body for e in out if isinstance(e.body, Error)]

    def sent_up(self) -> list[tuple[NodeId, Update]]:
        return [(p, b) for p, b in self.host.sent if isinstance(b, Update)]

    async def result(self) -> Update:
        await until(self.sent_up, 8, "the relay's update")
        got = self.sent_up()
        assert len(got) == 1, got
        peer, upd = got[0]
        assert peer == D
        return upd

    async def close(self) -> None:
        self.fl.close()
        await asyncio.sleep(0)


def children_updates(base: list[np.ndarray]) -> dict[NodeId, Update]:
    return {B: summed(own(B, base, 1), own(F, base, 2)), C: own(C, base, 3)}


def assert_sum(upd: Update, who: set[NodeId], children: dict[NodeId, Update]) -> None:
    assert set(upd.contributors) == who and upd.dropped == ()
    assert upd.num_samples == sum(SAMPLES[n] for n in who)
    assert update_problem(upd, SHAPES) is None
    # the children's part of the sum is exactly theirs (A's own is the rest)
    kids = RoundSum(JOB, 0)
    for u in children.values():
        assert kids.add(u)
    assert kids.total is not None
    a_part = [np.asarray(t.to_numpy(), np.float64) - k for t, k in zip(upd.weighted_delta, kids.total, strict=True)]
    assert all(np.isfinite(p).all() and np.abs(p).max() < SAMPLES[A] * 10 for p in a_part)


@pytest.mark.parametrize("model_first", [True, False], ids=["model-here", "model-still-coming"])
async def test_relay_refuses_a_child_that_speaks_for_its_sibling(tmp_path: Path, model_first: bool) -> None:
    relay = Relay(tmp_path)
    if not model_first:
        relay.payloads.ready.clear()
    try:
        await relay.round_start()
        kids = children_updates(relay.base)
        forged = dataclasses.replace(kids[B], contributors=(B, F, C), num_samples=100)
        errors = await relay.send(B, forged)
        assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED] and "outside" in errors[0].reason
        errors = await relay.send(C, dataclasses.replace(kids[C], dropped=(B,)))  # C says B dropped
        assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED]
        errors = await relay.send(X, dataclasses.replace(kids[C], contributors=(X,)))  # not a child of A
        assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED] and "not a child" in errors[0].reason
        assert relay.host.limiter.refused["fl_contributors"] == 2 and relay.host.limiter.refused["fl_sender"] == 1
        for sender, upd in kids.items():
            assert await relay.send(sender, upd) == []
        relay.payloads.ready.set()
        up = await relay.result()
        assert_sum(up, {A, B, C, F}, kids)
    finally:
        await relay.close()


def _bad_child_updates() -> list[Any]:
    base = LogReg().init({}, FEATURES, CLASSES, 0)
    good = own(C, base, 3)
    w, b = (np.asarray(t.to_numpy()).copy() for t in good.weighted_delta)
    w_nan = w.copy()
    w_nan[0, 0] = np.nan
    return [
        pytest.param(with_delta(good, [w.T.copy(), b]), True, id="transposed"),
        pytest.param(with_delta(good, [w]), True, id="an-array-missing"),
        pytest.param(with_delta(good, [w.astype(np.float64), b]), False, id="float64"),
        pytest.param(with_delta(good, [w_nan, b]), False, id="nan"),
        pytest.param(with_delta(good, [w, np.full(b.shape, np.inf, np.float32)]), False, id="inf"),
    ]


@pytest.mark.parametrize(("bad", "needs_model"), _bad_child_updates())
@pytest.mark.parametrize("model_first", [True, False], ids=["model-here", "model-still-coming"])
async def test_relay_refuses_malformed_child_updates(
    tmp_path: Path, bad: Update, needs_model: bool, model_first: bool
) -> None:
    relay = Relay(tmp_path)
    if not model_first:
        relay.payloads.ready.clear()
    try:
        await relay.round_start()
        kids = children_updates(relay.base)
        errors = await relay.send(C, bad)
        if needs_model and not model_first:
            # the shapes are known only once the model is here: then it is refused (counted, logged)
            assert errors == []
            relay.payloads.ready.set()
            await until(lambda: relay.host.limiter.refused["fl_update"] == 1, 5, "the deferred refusal")
        else:
            assert [e.code for e in errors] == [ErrorCode.BAD_REQUEST], errors
            assert relay.host.limiter.refused["fl_update"] == 1
            assert await relay.send(C, kids[C]) == []  # C's good one is still taken
        assert await relay.send(B, kids[B]) == []
        relay.payloads.ready.set()
        up = await relay.result()
        if needs_model and not model_first:
            assert up.dropped == (C,)  # its one update did not fit the model: C counts as dropped
            assert_sum(dataclasses.replace(up, dropped=()), {A, B, F}, {B: kids[B]})
        else:
            assert_sum(up, {A, B, C, F}, kids)
    finally:
        await relay.close()


async def test_relay_checks_what_it_passes_on_and_what_came_early(tmp_path: Path) -> None:
    relay = Relay(tmp_path)
    try:
        kids = children_updates(relay.base)
        # before its RoundStart: kept, checked once it comes (B's forgery refused, C's taken)
        assert await relay.send(C, kids[C]) == []
        assert await relay.send(B, dataclasses.replace(kids[B], contributors=(B, C))) == []
        assert relay.sent_up() == []
        await relay.round_start()
        assert relay.host.limiter.refused["fl_contributors"] == 1
        assert await relay.send(B, kids[B]) == []
        up = await relay.result()
        assert_sum(up, {A, B, C, F}, kids)
        # after it sent: a forged late update is refused, not passed on to the domain under A's name
        late = dataclasses.replace(kids[B], contributors=(B, C), round=0)
        assert [e.code for e in await relay.send(B, late)] == [ErrorCode.UNAUTHORIZED]
        assert len(relay.sent_up()) == 1
        # a good late one is passed on
        f_late = own(F, relay.base, 9)
        assert await relay.send(B, f_late) == []
        assert [u for _, u in relay.sent_up()][1:] == [f_late]
    finally:
        await relay.close()


async def test_relay_without_listed_subtrees_refuses_names_of_its_own_tree(tmp_path: Path) -> None:
    relay = Relay(tmp_path, subtrees_listed=False)
    relay.host.limiter = Limiter(ResourceLimits(list_items=4))
    try:
        await relay.round_start()
        kids = children_updates(relay.base)
        for claim in ((B, C), (B, A), (B, D)):
            errors = await relay.send(B, dataclasses.replace(kids[B], contributors=claim))
            assert [e.code for e in errors] == [ErrorCode.UNAUTHORIZED], claim
        many = (B, *(nid(f"many-{i}") for i in range(10)))
        errors = await relay.send(B, dataclasses.replace(kids[B], contributors=many))
        assert [e.code for e in errors] == [ErrorCode.QUOTA] and relay.host.limiter.refused["list_items"] == 1
        for sender, upd in kids.items():  # B's grandchild F is not known here: B may name it
            assert await relay.send(sender, upd) == []
        assert_sum(await relay.result(), {A, B, C, F}, kids)
    finally:
        await relay.close()


# -- a whole job between Nodes, one device forging ----------------------------------------------------------


async def test_a_forging_device_does_not_spoil_a_job_between_nodes(tmp_path: Path) -> None:
    """Four devices, two rounds; in round 0 a leaf of tree 0, as its RoundStart reaches it, sends the domain
    an update that speaks for every other device, one with NaN and one of the wrong shape, before its own."""
    from tests.test_fl_nodes_inprocess import _digits, _spec, cluster

    n = 4
    paths, tpath = _digits(tmp_path, n)
    spec = _spec(tpath, rounds=2, min_participants=n, round_deadline_s=5.0)
    shapes = [(64, 10), (10,)]
    evil: list[Any] = []
    async with cluster(tmp_path) as c:
        dom = await c.start_domain(spec)
        devices = await c.start_devices(paths, dom.listen_urls[0])
        me = dom.identity.node_id

        def forgeries(liar: NodeId) -> list[Update]:
            others = tuple(d.identity.node_id for d in devices if d.identity.node_id != liar)
            zeros = [np.zeros(s, np.float32) for s in shapes]
            nan = [np.full(s, np.nan, np.float32) for s in shapes]
            return [
                Update(spec.id, 0, to_tensors(zeros), 3, others, ()),  # speaks for everyone else
                Update(spec.id, 0, to_tensors(nan), 3, (liar,), ()),
                Update(spec.id, 0, to_tensors([zeros[0].T.copy(), zeros[1]]), 3, (liar,), ()),
            ]

        for d in devices:

            async def on_round_start(m: Any, d: Any = d) -> None:  # before the handler runs: forge first
                if m.body.round == 0 and not m.body.expected and not evil:
                    evil.append(d)
                    for upd in forgeries(d.identity.node_id):
                        await d.send(me, upd)

            d.intercept(RoundStart, on_round_start)
        fl = dom.fl_domain
        await until(lambda: len(fl.history) >= 2, 30, "two rounds")
        hist = fl.history
        assert evil, "no leaf forged"
        assert hist[0]["participants"] == n and hist[0]["refused_updates"] == 3, hist
        assert hist[1]["participants"] == n and hist[1]["refused_updates"] == 0, hist
        assert [h["attempt"] for h in hist] == [1, 2], hist  # round 0 was not repeated
        assert all(np.isfinite(p).all() for p in fl.params)
        assert hist[-1]["metrics"]["test_accuracy"] > 0.7, hist
        refused = dom.limiter.refused
        assert refused["fl_contributors"] == 1 and refused["fl_update"] == 2, dict(refused)
