"""Federated learning, pure parts: in-tree aggregation, FedAvg, model files, plans, job and data files.

The central property: summing updates up a random tree with ``RoundSum``,
exactly as the relays do (each node adds its own ``Update`` and its children's
``to_update()``, every hop crossing the wire codec), gives the domain the same
weighted sum and the same FedAvg model as computing them centrally with numpy,
to float tolerance, and never counts a device twice.
"""

from __future__ import annotations

import hashlib
import io
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.exceptions import ConfigError, EdgeAgentError
from edgeagent.fl import (
    LogReg,
    Mlp,
    RoundSum,
    apply_fedavg,
    available_plans,
    from_tensors,
    load_data,
    load_job,
    load_model,
    load_plan,
    model_bytes,
    to_tensors,
    weighted_delta,
)
from edgeagent.wire import Eligibility, Envelope, NodeId, Update, decode, encode

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOB = ROOT / "configs" / "job.example.toml"
JOB = "job-1"
PROPS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SHAPE_POOL = [(), (1,), (7,), (3, 4), (64, 10), (2, 3, 5), (0, 3)]


def nid(i: int, salt: int = 0) -> NodeId:
    """A NodeId whose sort order is unrelated to ``i``."""
    return NodeId.from_public_key(hashlib.sha256(f"fl/{salt}/{i}".encode()).digest())


def over_wire(upd: Update, codec: str) -> Update:
    """The Update as the next hop decodes it."""
    env = Envelope(upd, nid(10_000), destination=nid(10_001))
    body = decode(encode(env, codec), codec).body  # type: ignore[arg-type]
    assert isinstance(body, Update)
    return body


def own_update(who: NodeId, new: list[np.ndarray], old: list[np.ndarray], n: int, loss: float, r: int = 0) -> Update:
    """A device's own update, built as ``FlDevice._train_round`` builds it."""
    return Update(
        JOB, r, to_tensors(weighted_delta(new, old, n)), n, (who,), (), {"train_loss": loss * n, "stopped_early": 0.0}
    )


# -- in-tree aggregation == centralised weighted sum ---------------------------------------------------


@st.composite
def rounds(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 30))
    # parent[i] in [-1, i): -1 is the domain; any forest of rooted trees (chains, stars, anything between)
    parent = [draw(st.integers(-1, i - 1)) for i in range(n)]
    shapes = draw(st.lists(st.sampled_from(SHAPE_POOL), min_size=1, max_size=4))
    samples = draw(st.lists(st.integers(1, 50_000), min_size=n, max_size=n))
    scale = draw(st.sampled_from([1e-4, 1e-2, 1.0, 1e3]))
    seed = draw(st.integers(0, 2**32 - 1))
    codec = draw(st.sampled_from(["cbor", "protobuf"]))
    salt = draw(st.integers(0, 2**16))
    return {"n": n, "parent": parent, "shapes": shapes, "samples": samples, "scale": scale, "seed": seed,
            "codec": codec, "salt": salt}  # fmt: skip


def _aggregate_in_tree(case: dict[str, Any]) -> tuple[RoundSum, dict[str, Any]]:
    """Run one round's upward aggregation over the case's tree; returns the domain's sum and the raw inputs."""
    n, parent, shapes = case["n"], case["parent"], case["shapes"]
    rng = np.random.default_rng(case["seed"])
    ids = [nid(i, case["salt"]) for i in range(n)]
    glob = [rng.normal(0, 1, s).astype(np.float32) for s in shapes]
    news = [[(g + rng.normal(0, case["scale"], g.shape)).astype(np.float32) for g in glob] for _ in range(n)]
    losses = [float(rng.uniform(0, 3)) for _ in range(n)]
    children: dict[int, list[int]] = {i: [] for i in range(-1, n)}
    for i, p in enumerate(parent):
        children[p].append(i)
    sums: dict[int, RoundSum] = {}
    for i in reversed(range(n)):  # children (higher index) are finished before their parent
        rs = RoundSum(JOB, 0)
        incoming = [own_update(ids[i], news[i], glob, case["samples"][i], losses[i])]
        incoming += [over_wire(sums[c].to_update(), case["codec"]) for c in children[i]]
        for k in rng.permutation(len(incoming)):  # children's sums may arrive before the own training ends
            assert rs.add(incoming[k])
        sums[i] = rs
    domain = RoundSum(JOB, 0)
    for k in rng.permutation(len(children[-1])):
        assert domain.add(over_wire(sums[children[-1][k]].to_update(), case["codec"]))
    return domain, {"ids": ids, "glob": glob, "news": news, "losses": losses, "sums": sums}


@PROPS
@given(rounds())
def test_in_tree_aggregation_equals_centralised_weighted_sum(case: dict[str, Any]) -> None:
    domain, raw = _aggregate_in_tree(case)
    ids, glob, news, losses, samples = raw["ids"], raw["glob"], raw["news"], raw["losses"], case["samples"]
    n_total = sum(samples)
    # centrally, in float64 straight from every device's model
    terms = [[w * (new[j].astype(np.float64) - glob[j].astype(np.float64)) for j in range(len(glob))]
             for new, w in zip(news, samples, strict=True)]  # fmt: skip
    central = [np.sum([t[j] for t in terms], axis=0) for j in range(len(glob))]
    magnitude = [np.sum([np.abs(t[j]) for t in terms], axis=0) for j in range(len(glob))]

    assert domain.refused == 0
    assert domain.contributors == set(ids)
    assert domain.dropped == set()
    assert domain.num_samples == n_total
    assert domain.shapes == [g.shape for g in glob]
    assert domain.total is not None
    for got, want, mag in zip(domain.total, central, magnitude, strict=True):
        assert got.shape == want.shape
        # float32 on every hop: the error is bounded relative to the summed magnitudes, whatever the tree
        assert np.all(np.abs(got - want) <= 1e-5 * mag + 1e-30), np.max(np.abs(got - want) - 1e-5 * mag)
    loss_sum = sum(loss * w for loss, w in zip(losses, samples, strict=True))
    assert domain.metrics["train_loss"] == pytest.approx(loss_sum, rel=1e-9)
    assert domain.mean_metrics()["train_loss"] == pytest.approx(loss_sum / n_total, rel=1e-9)
    assert domain.mean_metrics()["stopped_early"] == 0.0

    # FedAvg: global + sum(n_i * delta_i) / sum(n_i) == the sample-weighted mean of the devices' models
    fed = apply_fedavg(glob, domain)
    for j, (f, g) in enumerate(zip(fed, glob, strict=True)):
        assert f.dtype == np.float32 and f.shape == g.shape
        mean = np.sum([w * m[j].astype(np.float64) for m, w in zip(news, samples, strict=True)], axis=0) / n_total
        via_delta = g.astype(np.float64) + central[j] / n_total
        tol = 1e-5 * magnitude[j] / n_total + 1e-6 * np.abs(via_delta) + 1e-30
        assert np.all(np.abs(f - via_delta) <= tol)
        assert np.all(np.abs(f - mean) <= tol + 1e-6 * np.abs(mean))

    # re-routed copies of any subtree's sum (a child whose parent died) are refused whole: never counted twice
    rng = np.random.default_rng(case["seed"] + 1)
    before = [t.copy() for t in domain.total]
    again = rng.choice(case["n"], size=min(case["n"], 5), replace=False)
    for k, i in enumerate(again):
        assert not domain.add(raw["sums"][int(i)].to_update())
        assert domain.refused == k + 1
    for t, b in zip(domain.total, before, strict=True):
        np.testing.assert_array_equal(t, b)
    assert domain.num_samples == n_total and domain.contributors == set(ids)


def test_fedavg_two_devices_by_hand() -> None:
    glob = [np.array([1.0, 2.0], np.float32)]
    a, b = nid(1), nid(2)
    rs = RoundSum(JOB, 3)
    assert rs.add(own_update(a, [np.array([3.0, 2.0], np.float32)], glob, 1, 0.5, r=3))
    assert rs.add(own_update(b, [np.array([1.0, 6.0], np.float32)], glob, 3, 0.1, r=3))
    # weighted mean of the models: (1*[3,2] + 3*[1,6]) / 4 = [1.5, 5]
    np.testing.assert_allclose(apply_fedavg(glob, rs)[0], [1.5, 5.0], rtol=1e-6)
    assert rs.mean_metrics()["train_loss"] == pytest.approx((0.5 + 0.3) / 4)
    up = rs.to_update()
    assert up.num_samples == 4 and set(up.contributors) == {a, b} and up.dropped == ()
    np.testing.assert_allclose(from_tensors(up.weighted_delta)[0], [2.0, 12.0])


# -- RoundSum refusals ----------------------------------------------------------------------------------


def _upd(who: tuple[NodeId, ...], arrays: list[np.ndarray], n: int = 1, *, job: str = JOB, r: int = 0,
         dropped: tuple[NodeId, ...] = ()) -> Update:  # fmt: skip
    return Update(job, r, to_tensors(arrays), n, who, dropped, {"m": float(n)})


def test_round_sum_refuses_overlap_whole() -> None:
    a, b, c = nid(1), nid(2), nid(3)
    rs = RoundSum(JOB, 0)
    assert rs.add(_upd((a,), [np.ones(3, np.float32)], 2))
    assert not rs.add(_upd((a,), [np.ones(3, np.float32)], 2))  # the same device again
    assert not rs.add(_upd((b, a), [np.full(3, 5, np.float32)], 7))  # an aggregate that overlaps: refused whole
    assert rs.refused == 2
    assert rs.contributors == {a} and rs.num_samples == 2 and rs.metrics == {"m": 2.0}
    assert rs.total is not None
    np.testing.assert_array_equal(rs.total[0], np.ones(3))
    assert rs.add(_upd((b, c), [np.full(3, 2, np.float32)], 5))  # disjoint: taken
    assert rs.contributors == {a, b, c} and rs.num_samples == 7
    np.testing.assert_array_equal(rs.total[0], np.full(3, 3.0))


@pytest.mark.parametrize(
    ("kw", "what"),
    [({"job": "other-job"}, "job"), ({"r": 1}, "round"), ({"r": 2**31}, "round")],
)
def test_round_sum_refuses_other_job_or_round(kw: dict[str, Any], what: str) -> None:
    rs = RoundSum(JOB, 0)
    assert not rs.add(_upd((nid(1),), [np.ones(2, np.float32)], **kw)), what
    assert rs.refused == 1 and rs.contributors == set() and rs.total is None and rs.num_samples == 0
    assert rs.dropped == set()


@pytest.mark.parametrize(
    "second",
    [
        [np.ones((3, 2), np.float32)],  # transposed
        [np.ones((2, 3), np.float32), np.ones(1, np.float32)],  # one array more
        [],  # no arrays at all (but a contributor)
        [np.ones(6, np.float32)],  # same size, other shape
    ],
)
def test_round_sum_refuses_shape_mismatch(second: list[np.ndarray]) -> None:
    a, b = nid(1), nid(2)
    rs = RoundSum(JOB, 0)
    assert rs.add(_upd((a,), [np.ones((2, 3), np.float32)], 4))
    assert not rs.add(_upd((b,), second, 3))
    assert rs.refused == 1
    assert rs.contributors == {a} and rs.num_samples == 4 and rs.shapes == [(2, 3)]
    assert rs.metrics == {"m": 4.0}
    glob = [np.zeros((2, 3), np.float32)]
    np.testing.assert_allclose(apply_fedavg(glob, rs)[0], np.full((2, 3), 0.25))  # the sum of deltas / 4 samples


def test_leave_update_is_accepted_and_recorded_as_dropped() -> None:
    a, me = nid(1), nid(2)
    rs = RoundSum(JOB, 0)
    leave = Update(JOB, 0, (), 0, (), (me,), {})  # what a device that is not eligible any more sends
    assert rs.add(leave)
    assert rs.refused == 0 and rs.dropped == {me} and rs.contributors == set() and rs.total is None
    assert rs.add(_upd((a,), [np.ones(2, np.float32)], 3))
    up = rs.to_update()
    assert up.contributors == (a,) and up.dropped == (me,) and up.num_samples == 3
    # a relay's sum names the children that missed its cut-off; the domain keeps them as dropped
    dom = RoundSum(JOB, 0)
    assert dom.add(over_wire(up, "cbor"))
    assert dom.dropped == {me} and dom.contributors == {a}
    # a device reported dropped whose update arrives later after all is not dropped any more
    assert dom.add(_upd((me,), [np.ones(2, np.float32)], 1))
    assert dom.dropped == set() and dom.to_update().dropped == ()
    # a second leave from the same device (repeated message) is harmless
    assert dom.add(leave) and dom.refused == 0


def test_scalar_parameter_keeps_its_shape() -> None:
    glob = [np.array(1.0, np.float32), np.zeros(2, np.float32)]
    new = [np.array(2.0, np.float32), np.ones(2, np.float32)]
    rs = RoundSum(JOB, 0)
    assert rs.add(own_update(nid(1), new, glob, 4, 0.0))
    assert rs.shapes == [(), (2,)]
    out = apply_fedavg(glob, rs)
    assert out[0].shape == () and float(out[0]) == pytest.approx(2.0)


def test_empty_round_sum() -> None:
    rs = RoundSum(JOB, 0)
    up = rs.to_update()
    assert up.weighted_delta == () and up.num_samples == 0 and up.contributors == ()
    glob = [np.arange(3, dtype=np.float32)]
    out = apply_fedavg(glob, rs)
    np.testing.assert_array_equal(out[0], glob[0])
    assert out[0] is not glob[0]
    assert rs.mean_metrics() == {}


def test_apply_fedavg_and_weighted_delta_refuse_mismatched_shapes() -> None:
    rs = RoundSum(JOB, 0)
    assert rs.add(_upd((nid(1),), [np.ones(3, np.float32)], 1))
    with pytest.raises(EdgeAgentError):
        apply_fedavg([np.zeros(4, np.float32)], rs)
    with pytest.raises(EdgeAgentError):
        apply_fedavg([np.zeros(3, np.float32), np.zeros(1, np.float32)], rs)
    with pytest.raises(EdgeAgentError):
        weighted_delta([np.zeros(3, np.float32)], [np.zeros(4, np.float32)], 2)
    with pytest.raises(EdgeAgentError):
        weighted_delta([np.zeros(3, np.float32)], [], 2)


# -- model files ------------------------------------------------------------------------------------------


@PROPS
@given(
    st.lists(st.sampled_from(SHAPE_POOL), min_size=1, max_size=12),
    st.integers(0, 2**32 - 1),
    st.sampled_from([np.float32, np.float64, np.int32]),
)
def test_model_bytes_round_trip(shapes: list[tuple[int, ...]], seed: int, dtype: Any) -> None:
    rng = np.random.default_rng(seed)
    params = [(rng.normal(0, 100, s)).astype(dtype) for s in shapes]
    data = model_bytes(params)
    back = load_model(data)
    assert len(back) == len(params)
    for b, p in zip(back, params, strict=True):
        assert b.dtype == np.float32 and b.shape == p.shape
        np.testing.assert_array_equal(b, p.astype(np.float32))
    assert model_bytes(back) == model_bytes([p.astype(np.float32) for p in params])


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _npy(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a)
    return buf.getvalue()


_GOOD_MODEL = model_bytes([np.ones((4, 3), np.float32), np.zeros(3, np.float32)])


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"hello, not a model", id="text"),
        pytest.param(_npz(p0=np.array([{"a": 1}], dtype=object)), id="pickled-object-array"),
        pytest.param(_npz(weights=np.ones(3)), id="wrong-array-names"),
        pytest.param(_npz(p0=np.ones(3), extra=np.ones(2)), id="extra-array"),
        pytest.param(_npz(), id="no-arrays"),
        pytest.param(_npz(p0=np.array(["a", "b"])), id="strings"),
        pytest.param(b"", id="empty"),
        pytest.param(_GOOD_MODEL[: len(_GOOD_MODEL) // 2], id="truncated-npz"),
        pytest.param(b"PK\x03\x04" + b"\0" * 64, id="zip-magic-then-garbage"),
        pytest.param(_npy(np.ones(3, np.float32)), id="plain-npy"),
    ],
)
def test_load_model_refuses_anything_else(data: bytes) -> None:
    with pytest.raises(EdgeAgentError):
        load_model(data)


def test_load_model_never_unpickles(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[Any, ...]:
            return (Path(tmp_path / "pwned").touch, ())

    with pytest.raises(EdgeAgentError, match=r"[Oo]bject arrays|pickle"):
        load_model(_npz(p0=np.array([Boom()], dtype=object)))
    assert not (tmp_path / "pwned").exists()


def test_load_model_orders_arrays_numerically() -> None:
    params = [np.full(1, i, np.float32) for i in range(12)]  # p10 and p11 must not sort before p2
    back = load_model(model_bytes(params))
    assert [float(b[0]) for b in back] == list(range(12))


# -- plans ----------------------------------------------------------------------------------------------


def _blobs(n: int = 300, d: int = 6, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 4, (k, d))
    y = rng.integers(0, k, n).astype(np.int64)
    x = (centers[y] + rng.normal(0, 0.5, (n, d))).astype(np.float32)
    return x, y


def test_available_plans_and_load_plan() -> None:
    names = available_plans()
    assert {"logreg", "mlp"} <= set(names) and names == sorted(names)
    assert isinstance(load_plan("logreg"), LogReg) and load_plan("logreg").name == "logreg"
    assert isinstance(load_plan("mlp"), Mlp) and load_plan("mlp").name == "mlp"
    with pytest.raises(EdgeAgentError, match="nope") as exc:
        load_plan("nope")
    assert "logreg" in str(exc.value) and "mlp" in str(exc.value)


def test_plan_init_shapes() -> None:
    lr = LogReg().init({}, 64, 10, 0)
    assert [p.shape for p in lr] == [(64, 10), (10,)]
    assert all(p.dtype == np.float32 for p in lr)
    mlp = Mlp()
    p = mlp.init({}, 64, 10, 0)
    assert [a.shape for a in p] == [(64, 32), (32,), (32, 10), (10,)]  # hidden defaults to 32
    assert all(a.dtype == np.float32 for a in p)
    p8 = mlp.init({"hidden": 8}, 5, 3, 1)
    assert [a.shape for a in p8] == [(5, 8), (8,), (8, 3), (3,)]
    # the seed decides the initial model: same seed same model, other seed another
    for a, b in zip(mlp.init({}, 64, 10, 7), mlp.init({}, 64, 10, 7), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(mlp.init({}, 64, 10, 7)[0], mlp.init({}, 64, 10, 8)[0])


@pytest.mark.parametrize("plan", [LogReg(), Mlp()], ids=["logreg", "mlp"])
def test_train_improves_accuracy_on_separable_data(plan: Any) -> None:
    x, y = _blobs()
    params = plan.init({"hidden": 16}, x.shape[1], 3, 0)
    before = plan.evaluate(params, x, y)
    hyper = {"lr": 0.1, "epochs": 20, "batch_size": 16, "hidden": 16}
    frozen = [p.copy() for p in params]
    new, metrics = plan.train(params, x, y, hyper, time.monotonic() + 60)
    after = plan.evaluate(new, x, y)
    assert after["accuracy"] >= 0.97 > before["accuracy"] + 0.2, (before, after)
    assert after["loss"] < before["loss"]
    assert metrics["stopped_early"] == 0.0
    assert metrics["train_accuracy"] == pytest.approx(after["accuracy"])
    assert metrics["train_loss"] == pytest.approx(after["loss"])
    for p, f in zip(params, frozen, strict=True):  # the input model is not modified in place
        np.testing.assert_array_equal(p, f)
    assert [a.shape for a in new] == [a.shape for a in params]
    assert all(a.dtype == np.float32 for a in new)
    # the seed hyper-parameter makes training reproducible
    again, _ = plan.train(params, x, y, hyper, time.monotonic() + 60)
    for a, b in zip(new, again, strict=True):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("plan", [LogReg(), Mlp()], ids=["logreg", "mlp"])
def test_train_honours_a_past_deadline(plan: Any) -> None:
    x, y = _blobs()
    params = plan.init({}, x.shape[1], 3, 0)
    t0 = time.monotonic()
    new, metrics = plan.train(params, x, y, {"epochs": 1000, "batch_size": 1}, time.monotonic() - 1)
    assert time.monotonic() - t0 < 1.0
    assert metrics["stopped_early"] == 1.0
    for a, b in zip(new, params, strict=True):
        np.testing.assert_array_equal(a, b)


def test_train_stops_at_a_deadline_mid_training() -> None:
    x, y = _blobs(n=2000)
    plan = LogReg()
    params = plan.init({}, x.shape[1], 3, 0)
    t0 = time.monotonic()
    _, metrics = plan.train(params, x, y, {"epochs": 100_000, "batch_size": 1}, t0 + 0.3)
    assert metrics["stopped_early"] == 1.0
    assert time.monotonic() - t0 < 1.5


@pytest.mark.parametrize(
    "hyper",
    [{"lr": "fast"}, {"epochs": True}, {"batch_size": None}, {"l2": [0.1]}, {"seed": "0"}],
    ids=["lr-str", "epochs-bool", "batch-none", "l2-list", "seed-str"],
)
@pytest.mark.parametrize("plan", [LogReg(), Mlp()], ids=["logreg", "mlp"])
def test_bad_hyper_parameter_type(plan: Any, hyper: dict[str, Any]) -> None:
    x, y = _blobs(n=20)
    params = plan.init({}, x.shape[1], 3, 0)
    key = next(iter(hyper))
    with pytest.raises(EdgeAgentError, match=key):
        plan.train(params, x, y, hyper, time.monotonic() + 10)


def test_mlp_bad_hidden() -> None:
    with pytest.raises(EdgeAgentError, match="hidden"):
        Mlp().init({"hidden": "many"}, 4, 2, 0)


# -- job files --------------------------------------------------------------------------------------------


def test_example_job_file_parses() -> None:
    spec = load_job(EXAMPLE_JOB)
    assert spec.id == "digits-logreg"
    assert spec.plan == "logreg"
    assert (spec.n_features, spec.n_classes) == (64, 10)
    assert spec.rounds == 10
    assert spec.min_participants == 2
    assert spec.round_deadline_s == 60.0 and spec.join_wait_s == 30.0
    assert spec.seed == 0 and spec.test_data is None
    assert spec.hyperparams == {"lr": 0.5, "epochs": 5, "batch_size": 32}
    assert spec.eligibility == Eligibility(unmetered=True, charging=False, min_battery=0, needs_data=True)
    assert spec.plan in available_plans()
    # the model the job describes can be built
    assert [p.shape for p in load_plan(spec.plan).init(spec.hyperparams, spec.n_features, spec.n_classes, 0)] == [
        (64, 10),
        (10,),
    ]


MINIMAL = 'id = "j"\nplan = "logreg"\nn_features = 4\nn_classes = 2\n'


def _job(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "job.toml"
    p.write_text(text)
    return p


def test_minimal_job_defaults_and_relative_test_data(tmp_path: Path) -> None:
    spec = load_job(_job(tmp_path, "[job]\n" + MINIMAL))
    assert (spec.rounds, spec.min_participants, spec.round_deadline_s, spec.join_wait_s) == (5, 2, 60.0, 30.0)
    assert spec.hyperparams == {} and spec.eligibility == Eligibility()
    sub = tmp_path / "jobs"
    sub.mkdir()
    spec = load_job(_job(sub, "[job]\n" + MINIMAL + 'test_data = "data/test.npz"\nround_deadline_s = 10\n'))
    assert spec.test_data == (sub / "data" / "test.npz").resolve()
    assert spec.round_deadline_s == 10.0 and isinstance(spec.round_deadline_s, float)


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("[job]\n" + MINIMAL + "colour = 1\n", "job.colour"),
        ("[job]\n" + MINIMAL.replace('plan = "logreg"\n', ""), "job.plan"),
        ("[job]\n" + MINIMAL.replace('plan = "logreg"', 'plan = ""'), "job.plan"),
        ("[job]\n" + MINIMAL.replace('plan = "logreg"', "plan = 3"), "job.plan"),
        ("[job]\n" + MINIMAL.replace('id = "j"\n', ""), "job.id"),
        ("[job]\n" + MINIMAL + "rounds = 0\n", "job.rounds"),
        ("[job]\n" + MINIMAL + "rounds = 2.0\n", "job.rounds"),
        ("[job]\n" + MINIMAL + "rounds = true\n", "job.rounds"),
        ("[job]\n" + MINIMAL.replace('id = "j"', 'id = "a b"'), "job.id"),
        ("[job]\n" + MINIMAL.replace('id = "j"', 'id = "../etc"'), "job.id"),
        ("[job]\n" + MINIMAL.replace('id = "j"', f'id = "{"x" * 65}"'), "job.id"),
        ("[job]\n" + MINIMAL.replace('id = "j"', 'id = ""'), "job.id"),
        ("[job]\n" + MINIMAL.replace("n_classes = 2", "n_classes = 1"), "job.n_classes"),
        ("[job]\n" + MINIMAL.replace("n_features = 4", "n_features = 0"), "job.n_features"),
        ("[job]\n" + MINIMAL + "round_deadline_s = 0.5\n", "job.round_deadline_s"),
        ("[job]\n" + MINIMAL + "round_deadline_s = nan\n", "job.round_deadline_s"),
        ("[job]\n" + MINIMAL + 'join_wait_s = "5"\n', "job.join_wait_s"),
        ("[job]\n" + MINIMAL + "min_participants = 0\n", "job.min_participants"),
        ("[job]\n" + MINIMAL + "test_data = 1\n", "job.test_data"),
        ("[job]\n" + MINIMAL + "[job.eligibility]\nmin_battery = 200\n", "job.eligibility.min_battery"),
        ("[job]\n" + MINIMAL + "[job.eligibility]\nmin_battery = -1\n", "job.eligibility.min_battery"),
        ("[job]\n" + MINIMAL + "[job.eligibility]\nmin_battery = 50.0\n", "job.eligibility.min_battery"),
        ("[job]\n" + MINIMAL + "[job.eligibility]\nunmetered = 1\n", "job.eligibility.unmetered"),
        ("[job]\n" + MINIMAL + "[job.eligibility]\nwifi_only = true\n", "job.eligibility.wifi_only"),
        ("[job]\n" + MINIMAL + "eligibility = 3\n", "job.eligibility"),
        ("[job]\n" + MINIMAL + "[job.hyperparams]\nlr = [0.1, 0.2]\n", "job.hyperparams"),
        ("[job]\n" + MINIMAL + "[job.hyperparams]\nuse_bias = true\n", "job.hyperparams"),
        ("[job]\n" + MINIMAL + "[job.hyperparams.inner]\nlr = 0.1\n", "job.hyperparams"),
        ("[job]\n" + MINIMAL + "hyperparams = 1\n", "job.hyperparams"),
        ("[job]\n" + MINIMAL + "[other]\nx = 1\n", "[job]"),
        ("[jobs]\n" + MINIMAL, "[job]"),
        ("job = 1\n", "[job]"),
        ("", "[job]"),
        ("[job]\n" + MINIMAL + "rounds = \n", "not valid TOML"),
    ],
)
def test_bad_job_files_name_the_key(tmp_path: Path, text: str, named: str) -> None:
    path = _job(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_job(path)
    msg = str(exc.value)
    assert named in msg, msg
    assert str(path) in msg, msg


def test_missing_job_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_job(tmp_path / "nope.toml")


def test_job_spec_is_immutable_but_replaceable() -> None:
    spec = load_job(EXAMPLE_JOB)
    with pytest.raises(AttributeError):
        spec.rounds = 3  # type: ignore[misc]
    assert replace(spec, rounds=3).rounds == 3


# -- training data files -------------------------------------------------------------------------------


def test_load_data_reads_x_and_y(tmp_path: Path) -> None:
    p = tmp_path / "d.npz"
    np.savez(p, x=np.ones((5, 3), np.float64), y=np.array([0, 1, 2, 1, 0], np.int32))
    x, y = load_data(p)
    assert x.dtype == np.float32 and x.shape == (5, 3)
    assert y.dtype == np.int64 and list(y) == [0, 1, 2, 1, 0]


@pytest.mark.parametrize(
    ("make", "what"),
    [
        pytest.param(None, "missing file", id="missing"),
        pytest.param(lambda p: np.savez(p, a=np.ones((2, 2)), b=np.ones(2)), "wrong keys", id="wrong-keys"),
        pytest.param(lambda p: np.savez(p, x=np.ones((2, 2))), "no y", id="no-y"),
        pytest.param(lambda p: np.savez(p, x=np.ones((3, 2)), y=np.zeros(2)), "lengths", id="mismatched-lengths"),
        pytest.param(lambda p: np.savez(p, x=np.ones(3), y=np.zeros(3)), "x not 2-D", id="x-1d"),
        pytest.param(lambda p: np.savez(p, x=np.ones((3, 2)), y=np.zeros((3, 1))), "y not 1-D", id="y-2d"),
        pytest.param(
            lambda p: np.savez(p, x=np.array([{"a": 1}], dtype=object), y=np.zeros(1)), "pickle", id="pickled-x"
        ),
        pytest.param(lambda p: np.savez(p, x=np.array([["a"]]), y=np.zeros(1)), "strings", id="string-x"),
        pytest.param(lambda p: p.write_bytes(b"not an npz at all"), "garbage", id="garbage"),
        pytest.param(lambda p: p.write_bytes(b""), "empty", id="empty"),
        pytest.param(lambda p: p.mkdir(), "a directory", id="directory"),
        pytest.param(lambda p: p.write_bytes(b"PK\x03\x04" + b"\0" * 64), "corrupt zip", id="corrupt-zip"),
        pytest.param(lambda p: p.write_bytes(_npz(x=np.ones((3, 2)), y=np.zeros(3))[:100]), "cut", id="truncated"),
        pytest.param(lambda p: p.write_bytes(_npy(np.ones((3, 2)))), "a .npy, not an .npz", id="npy-not-npz"),
    ],
)
def test_load_data_errors(tmp_path: Path, make: Any, what: str) -> None:
    p = tmp_path / "data.npz"
    if make is not None:
        make(p)
    with pytest.raises(EdgeAgentError) as exc:
        load_data(p)
    assert "data.npz" in str(exc.value), what
