"""Worker.handle (pure): every message, rights, and refusals that leave the store exactly as it was."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.identity import Identity
from edgeagent.wire import (
    Error,
    ErrorCode,
    ForceObjectDeleteMessage,
    GetShapeMessage,
    IsNoneMessage,
    Message,
    NodeId,
    ObjectMessage,
    ObjectRef,
    ObjectRequestMessage,
    Operation,
    Ping,
    Plan,
    PlanCommandMessage,
    RenewLeaseMessage,
    Response,
    SearchMessage,
    Tensor,
)
from edgeagent.wire.cbor import decode_plain
from edgeagent.wire.schema import struct_from_plain
from edgeagent.worker import OPS, WORKER_MESSAGES, ObjectStore, Permissions, Right, Worker, value_size

from .strategies import struct_strategy, tensors, values

ALICE = Identity.generate().node_id  # allowed
BOB = Identity.generate().node_id  # allowed
DOMAIN = Identity.generate().node_id  # the worker's domain
MALLORY = Identity.generate().node_id  # not allowed
QUOTA = 4096
LEASE = 100.0


def t(array: Any, dtype: str = "float32") -> Tensor:
    return Tensor.from_numpy(np.asarray(array, dtype=dtype))


@pytest.fixture
def worker() -> Worker:
    return Worker(
        ObjectStore(quota_bytes=QUOTA, default_lease=LEASE),
        Permissions(domains={DOMAIN}, allowed={ALICE, BOB}),
        max_result_bytes=1024,
    )


def snapshot(w: Worker) -> tuple[Any, ...]:
    objects = {o.id: (o.value, o.tags, o.description, o.owner, o.size, o.expires_at) for o in w.store._objects.values()}
    plans = {name: (plan, owner) for name, (plan, owner) in w.plans.items()}
    return objects, w.store.used_bytes, w.store.tags(), plans


def ok(reply: Response | Error) -> Any:
    assert isinstance(reply, Response), reply
    return reply.value


def refused(reply: Response | Error, code: ErrorCode, match: str = "") -> str:
    assert isinstance(reply, Error), reply
    assert reply.code == code, reply
    assert match.lower() in reply.reason.lower(), reply.reason
    return reply.reason


def push(w: Worker, obj_id: str, obj: Any, who: NodeId = ALICE, now: float = 0.0, **kw: Any) -> None:
    ok(w.handle(ObjectMessage(obj_id, obj, **kw), who, now))


def assert_refused_unchanged(
    w: Worker, body: Message, who: NodeId, code: ErrorCode, match: str = "", now: float = 1.0, **kw: Any
) -> str:
    before = snapshot(w)
    reason = refused(w.handle(body, who, now, **kw), code, match)
    assert snapshot(w) == before
    return reason


# -- every reply is a Response or an Error -----------------------------------------------------------


def test_a_message_that_is_not_a_worker_request_is_unsupported(worker: Worker) -> None:
    refused(worker.handle(Ping(1), ALICE, 0.0), ErrorCode.UNSUPPORTED, "not a worker request")
    refused(worker.handle(Response(1), ALICE, 0.0), ErrorCode.UNSUPPORTED)


def stocked_worker() -> Worker:
    w = Worker(
        ObjectStore(quota_bytes=QUOTA, default_lease=LEASE),
        Permissions(domains={DOMAIN}, allowed={ALICE, BOB}),
        max_result_bytes=1024,
    )
    push(w, "t", t(np.arange(6).reshape(2, 3)), tags=("a",), description="some words")
    push(w, "b", b"bytes", who=BOB)
    ok(w.handle(PlanCommandMessage("register", "p", Plan("p", (step(),), ("i",), ("o",))), ALICE, 0.0))
    return w


FUZZ = settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


MESSAGES = st.one_of(*(struct_strategy(cls) for cls in WORKER_MESSAGES))  # type: ignore[arg-type]


@FUZZ
@given(MESSAGES, st.sampled_from([ALICE, BOB, DOMAIN, MALLORY]))
def test_any_worker_message_gets_a_response_or_an_error(body: Message, who: NodeId) -> None:
    w = stocked_worker()
    before = snapshot(w)
    reply = w.handle(body, who, 1.0)
    assert isinstance(reply, (Response, Error))
    if isinstance(reply, Error):
        assert snapshot(w) == before


_arg = st.one_of(values, tensors(), st.sampled_from([ObjectRef("t"), ObjectRef("b"), ObjectRef("none")]),
                 st.integers(-3, 3), st.lists(st.integers(-2, 4), max_size=3))  # fmt: skip


@FUZZ
@given(
    st.sampled_from(sorted(OPS)),
    st.lists(_arg, max_size=3).map(tuple),
    st.dictionaries(st.sampled_from(sorted({k for op in OPS.values() for k in op.kwargs})), _arg, max_size=2),
)
def test_any_allowed_operation_gets_a_response_or_an_error(
    name: str, args: tuple[Any, ...], kw: dict[str, Any]
) -> None:
    w = stocked_worker()
    before = snapshot(w)
    reply = w.handle(Operation(name, None, args, kw, ("r",)), ALICE, 1.0)
    assert isinstance(reply, (Response, Error))
    if isinstance(reply, Error):
        assert snapshot(w) == before
    else:
        assert isinstance(w.store.get("r", now=1.0).value, Tensor)


# -- ObjectMessage (push) --------------------------------------------------------------------------


def test_push_stores_value_tags_description_owner_and_lease(worker: Worker) -> None:
    x = t([1, 2, 3])
    assert ok(worker.handle(ObjectMessage("x", x, ("w", "l1"), "layer one", 5000), ALICE, 10.0)) == "x"
    obj = worker.store.get("x", now=10.0)
    assert (obj.value, obj.tags, obj.description, obj.owner) == (x, frozenset({"w", "l1"}), "layer one", ALICE)
    assert obj.expires_at == 15.0
    push(worker, "y", b"raw", now=10.0)
    assert worker.store.get("y", now=10.0).expires_at == 10.0 + LEASE  # lease_ms 0: the worker's default
    push(worker, "z", {"nested": [1, "two", ObjectRef("x")]})
    assert worker.store.get("z", now=0.0).value == {"nested": [1, "two", ObjectRef("x")]}
    assert worker.store.used_bytes == sum(value_size(v) for v in (x, b"raw", {"nested": [1, "two", ObjectRef("x")]}))


def test_push_replaces_own_object_and_the_domain_may_replace_any(worker: Worker) -> None:
    push(worker, "x", b"one", tags=("a",))
    push(worker, "x", b"two", tags=("b",))
    assert worker.store.get("x", now=0.0).value == b"two" and worker.store.tags() == {"b": 1}
    push(worker, "x", b"three", who=DOMAIN)
    obj = worker.store.get("x", now=0.0)
    assert obj.value == b"three" and obj.owner == DOMAIN


def test_push_over_another_peers_object_is_refused(worker: Worker) -> None:
    push(worker, "x", b"alice's", tags=("a",))
    assert_refused_unchanged(worker, ObjectMessage("x", b"bob's"), BOB, ErrorCode.UNAUTHORIZED, "another peer")


def test_push_over_quota_is_refused_and_changes_nothing(worker: Worker) -> None:
    push(worker, "small", b"x" * 100, tags=("t",))
    reason = assert_refused_unchanged(
        worker, ObjectMessage("big", b"y" * QUOTA, ("t", "u")), ALICE, ErrorCode.QUOTA, "quota"
    )
    assert "big" in reason
    # nor may a replacement exceed it
    assert_refused_unchanged(worker, ObjectMessage("small", b"z" * QUOTA, ("v",)), ALICE, ErrorCode.QUOTA)


def test_push_without_the_right_is_refused(worker: Worker) -> None:
    assert_refused_unchanged(worker, ObjectMessage("x", b"v"), MALLORY, ErrorCode.UNAUTHORIZED, "push")
    worker.permissions.per_peer[ALICE] = Right.ALL & ~Right.PUSH
    assert_refused_unchanged(worker, ObjectMessage("x", b"v"), ALICE, ErrorCode.UNAUTHORIZED, "push")


@pytest.mark.parametrize("obj_id", ["", "x" * 257])
def test_push_with_a_bad_id_is_refused(worker: Worker, obj_id: str) -> None:
    assert_refused_unchanged(worker, ObjectMessage(obj_id, b"v"), ALICE, ErrorCode.BAD_REQUEST, "ids")


def test_push_with_the_longest_id(worker: Worker) -> None:
    push(worker, "x" * 256, b"v")
    assert "x" * 256 in worker.store


def test_push_over_an_expired_object_of_another_peer(worker: Worker) -> None:
    push(worker, "x", b"old", lease_ms=1000)
    assert ok(worker.handle(ObjectMessage("x", b"new"), BOB, 5.0)) == "x"


# -- ObjectRequestMessage (pull) -------------------------------------------------------------------


def test_pull_moves_the_object_by_default(worker: Worker) -> None:
    push(worker, "x", t([1, 2]), tags=("w",))
    assert ok(worker.handle(ObjectRequestMessage("x"), ALICE, 1.0)) == t([1, 2])
    assert "x" not in worker.store and worker.store.used_bytes == 0 and worker.store.tags() == {}
    refused(worker.handle(ObjectRequestMessage("x"), ALICE, 1.0), ErrorCode.NOT_FOUND)


def test_pull_with_keep_leaves_the_object(worker: Worker) -> None:
    push(worker, "x", b"data", tags=("w",))
    before = snapshot(worker)
    assert ok(worker.handle(ObjectRequestMessage("x", keep=True), ALICE, 1.0)) == b"data"
    assert snapshot(worker) == before


def test_pull_of_a_missing_or_expired_object_is_not_found(worker: Worker) -> None:
    assert_refused_unchanged(worker, ObjectRequestMessage("nope"), ALICE, ErrorCode.NOT_FOUND, "nope")
    push(worker, "x", b"data", lease_ms=1000)
    refused(worker.handle(ObjectRequestMessage("x", keep=True), ALICE, 1.0), ErrorCode.NOT_FOUND)
    assert "x" not in worker.store and worker.store.used_bytes == 0


def test_pull_without_the_right_is_refused(worker: Worker) -> None:
    push(worker, "x", b"data")
    assert_refused_unchanged(worker, ObjectRequestMessage("x"), MALLORY, ErrorCode.UNAUTHORIZED, "pull")
    worker.permissions.per_peer[ALICE] = Right.PUSH | Right.SEARCH
    assert_refused_unchanged(worker, ObjectRequestMessage("x"), ALICE, ErrorCode.UNAUTHORIZED, "pull")


def test_pull_of_another_peers_object_is_refused(worker: Worker) -> None:
    push(worker, "x", b"alice's", tags=("a",))
    for keep in (False, True):
        assert_refused_unchanged(worker, ObjectRequestMessage("x", keep), BOB, ErrorCode.UNAUTHORIZED, "another peer")


def test_the_domain_may_pull_any_object(worker: Worker) -> None:
    push(worker, "x", b"alice's")
    assert ok(worker.handle(ObjectRequestMessage("x"), DOMAIN, 1.0)) == b"alice's"
    assert "x" not in worker.store


# -- IsNoneMessage, GetShapeMessage ----------------------------------------------------------------


def test_is_none(worker: Worker) -> None:
    push(worker, "x", b"v", lease_ms=2000)
    assert ok(worker.handle(IsNoneMessage("x"), ALICE, 1.0)) is False
    assert ok(worker.handle(IsNoneMessage("x"), BOB, 1.0)) is False  # existence is not secret to a searcher
    assert ok(worker.handle(IsNoneMessage("y"), ALICE, 1.0)) is True
    assert ok(worker.handle(IsNoneMessage("x"), ALICE, 2.0)) is True  # the lease ran out
    assert_refused_unchanged(worker, IsNoneMessage("x"), MALLORY, ErrorCode.UNAUTHORIZED, "search")


def test_get_shape(worker: Worker) -> None:
    push(worker, "m", t(np.zeros((2, 3, 4))))
    push(worker, "s", t(5.0))
    push(worker, "b", b"bytes")
    assert ok(worker.handle(GetShapeMessage("m"), ALICE, 1.0)) == [2, 3, 4]
    assert ok(worker.handle(GetShapeMessage("s"), ALICE, 1.0)) == []
    assert_refused_unchanged(worker, GetShapeMessage("b"), ALICE, ErrorCode.BAD_REQUEST, "not a tensor")
    assert_refused_unchanged(worker, GetShapeMessage("zz"), ALICE, ErrorCode.NOT_FOUND)
    assert_refused_unchanged(worker, GetShapeMessage("m"), MALLORY, ErrorCode.UNAUTHORIZED)


# -- ForceObjectDeleteMessage ----------------------------------------------------------------------


def test_force_delete_is_batched_and_idempotent(worker: Worker) -> None:
    for k in "abc":
        push(worker, k, b"v", tags=("t",))
    assert ok(worker.handle(ForceObjectDeleteMessage(("a", "b", "unknown")), ALICE, 1.0)) == 2
    assert ok(worker.handle(ForceObjectDeleteMessage(("a", "b", "unknown")), ALICE, 1.0)) == 0
    assert ok(worker.handle(ForceObjectDeleteMessage(()), ALICE, 1.0)) == 0
    assert sorted(worker.store._objects) == ["c"] and worker.store.tags() == {"t": 1}
    assert worker.store.used_bytes == value_size(b"v")


def test_force_delete_skips_other_peers_objects(worker: Worker) -> None:
    push(worker, "mine", b"v", who=BOB)
    push(worker, "alice's", b"v")
    assert ok(worker.handle(ForceObjectDeleteMessage(("mine", "alice's")), BOB, 1.0)) == 1
    assert "alice's" in worker.store and "mine" not in worker.store


def test_the_domain_may_delete_any_object(worker: Worker) -> None:
    push(worker, "a", b"v")
    push(worker, "b", b"v", who=BOB)
    assert ok(worker.handle(ForceObjectDeleteMessage(("a", "b")), DOMAIN, 1.0)) == 2
    assert len(worker.store) == 0 and worker.store.used_bytes == 0


def test_force_delete_without_the_right_is_refused(worker: Worker) -> None:
    push(worker, "a", b"v")
    assert_refused_unchanged(worker, ForceObjectDeleteMessage(("a",)), MALLORY, ErrorCode.UNAUTHORIZED)


# -- SearchMessage ---------------------------------------------------------------------------------


@pytest.fixture
def stocked(worker: Worker) -> Worker:
    push(worker, "w1", b"", tags=("weights", "mnist"), description="layer1 weights")
    push(worker, "w2", b"", tags=("weights",), description="layer2 weights", who=BOB)
    push(worker, "d1", b"", tags=("data", "mnist"), description="training images")
    return worker


@pytest.mark.parametrize(
    ("terms", "expected"),
    [((), ["d1", "w1", "w2"]), (("weights",), ["w1", "w2"]), (("weights", "mnist"), ["w1"]), (("d1",), ["d1"]),
     (("layer2",), ["w2"]), (("images", "data", "mnist"), ["d1"]), (("weights", "nothing"), []),
     (("nothing", "weights"), []), (("w1", "w2"), [])],
    ids=str,
)  # fmt: skip
def test_search_semantics(stocked: Worker, terms: tuple[str, ...], expected: list[str]) -> None:
    assert ok(stocked.handle(SearchMessage(terms), ALICE, 1.0)) == expected


def test_search_without_the_right_is_refused(stocked: Worker) -> None:
    assert_refused_unchanged(stocked, SearchMessage(("weights",)), MALLORY, ErrorCode.UNAUTHORIZED, "search")


# -- RenewLeaseMessage -----------------------------------------------------------------------------


def test_renew_lease(worker: Worker) -> None:
    push(worker, "x", b"v", lease_ms=1000)
    assert ok(worker.handle(RenewLeaseMessage(("x", "unknown"), 5000), ALICE, 0.5)) == ["x"]
    assert worker.store.get("x", now=5.4) is not None
    assert ok(worker.handle(IsNoneMessage("x"), ALICE, 5.5)) is True
    assert ok(worker.handle(RenewLeaseMessage(("x",)), ALICE, 6.0)) == []  # too late
    push(worker, "y", b"v", lease_ms=1000)
    assert ok(worker.handle(RenewLeaseMessage(("y",)), ALICE, 0.5)) == ["y"]  # 0: the worker's default
    assert worker.store.get("y", now=0.5).expires_at == 0.5 + LEASE
    assert_refused_unchanged(worker, RenewLeaseMessage(("y",), 5000), MALLORY, ErrorCode.UNAUTHORIZED)


# -- Operation -------------------------------------------------------------------------------------


def test_operation_on_stored_objects_stores_the_result_under_return_id(worker: Worker) -> None:
    a = np.array([[1, 2], [3, 4]], dtype="float32")
    push(worker, "a", t(a))
    assert ok(worker.handle(Operation("matmul", None, (ObjectRef("a"), ObjectRef("a")), {}, ("r",)), ALICE, 1.0)) == "r"
    obj = worker.store.get("r", now=1.0)
    assert obj.owner == ALICE and obj.expires_at == 1.0 + LEASE
    np.testing.assert_array_equal(obj.value.to_numpy(), a @ a)
    # plain tensors, numbers, cmd_owner (the object the command is a method of) and kwargs
    ok(worker.handle(Operation("sub", "a", (1.0,), {}, ("s",)), ALICE, 1.0))
    np.testing.assert_array_equal(worker.store.get("s", now=1.0).value.to_numpy(), a - 1)
    ok(worker.handle(Operation("add", None, (t([1, 1]), ObjectRef("a")), {}, ("p",)), ALICE, 1.0))
    np.testing.assert_array_equal(worker.store.get("p", now=1.0).value.to_numpy(), a + 1)
    ok(worker.handle(Operation("sum", None, (ObjectRef("r"),), {"axis": 0, "keepdims": True}, ("k",)), ALICE, 1.0))
    np.testing.assert_array_equal(worker.store.get("k", now=1.0).value.to_numpy(), (a @ a).sum(0, keepdims=True))
    ok(worker.handle(Operation("reshape", "a", (), {"shape": [-1]}, ("f",)), ALICE, 1.0))
    assert worker.store.get("f", now=1.0).value.shape == (4,)
    # the result may replace the caller's own object
    ok(worker.handle(Operation("neg", None, (ObjectRef("a"),), {}, ("a",)), ALICE, 1.0))
    np.testing.assert_array_equal(worker.store.get("a", now=1.0).value.to_numpy(), -a)


def test_operation_on_another_peers_object_as_the_domain(worker: Worker) -> None:
    push(worker, "a", t([1, 2]))
    ok(worker.handle(Operation("mul", None, (ObjectRef("a"), 2), {}, ("r",)), DOMAIN, 1.0))
    assert worker.store.get("r", now=1.0).owner == DOMAIN


@pytest.mark.parametrize(
    ("op", "code", "match"),
    [
        (Operation("eval", None, (ObjectRef("a"),), {}, ("r",)), ErrorCode.BAD_REQUEST, "not allowed"),
        (Operation("__import__", None, ("os",), {}, ("r",)), ErrorCode.BAD_REQUEST, "not allowed"),
        (Operation("add", None, (ObjectRef("a"),), {}, ("r",)), ErrorCode.BAD_REQUEST, "operand"),
        (Operation("add", None, (ObjectRef("a"), "text"), {}, ("r",)), ErrorCode.BAD_REQUEST, "tensors or numbers"),
        (Operation("add", None, (ObjectRef("a"), [1, 2]), {}, ("r",)), ErrorCode.BAD_REQUEST, "tensors or numbers"),
        (Operation("add", None, (ObjectRef("a"), ObjectRef("b")), {}, ("r",)), ErrorCode.BAD_REQUEST, "tensors"),
        (Operation("add", None, (ObjectRef("a"), t(np.ones(4))), {}, ("r",)), ErrorCode.BAD_REQUEST, "broadcast"),
        (Operation("matmul", None, (ObjectRef("a"), ObjectRef("a")), {}, ("r",)), ErrorCode.BAD_REQUEST, "align"),
        (Operation("sum", None, (ObjectRef("a"),), {"axis": 5}, ("r",)), ErrorCode.BAD_REQUEST, "out of range"),
        (Operation("sum", None, (ObjectRef("a"),), {"out": 1}, ("r",)), ErrorCode.BAD_REQUEST, "does not take"),
        (Operation("reshape", None, (ObjectRef("a"),), {"shape": [7]}, ("r",)), ErrorCode.BAD_REQUEST, "reshape"),
        (Operation("reshape", None, (ObjectRef("a"),), {"shape": ObjectRef("a")}, ("r",)), ErrorCode.BAD_REQUEST, ""),
        (Operation("astype", None, (ObjectRef("a"),), {"dtype": "bool"}, ("r",)), ErrorCode.BAD_REQUEST, "dtype"),
        (Operation("add", None, (True, False), {}, ("r",)), ErrorCode.BAD_REQUEST, "wire form"),
        (Operation("add", None, (ObjectRef("a"), 1), {}, ()), ErrorCode.BAD_REQUEST, "one return id"),
        (Operation("add", None, (ObjectRef("a"), 1), {}, ("r", "s")), ErrorCode.BAD_REQUEST, "one return id"),
        (Operation("add", None, (ObjectRef("a"), 1), {}, ("",)), ErrorCode.BAD_REQUEST, "ids"),
        (Operation("add", None, (ObjectRef("a"), 1), {}, ("r" * 300,)), ErrorCode.BAD_REQUEST, "ids"),
        (Operation("add", None, (ObjectRef("missing"), 1), {}, ("r",)), ErrorCode.NOT_FOUND, "missing"),
        (Operation("add", "missing", (1,), {}, ("r",)), ErrorCode.NOT_FOUND, "missing"),
        (Operation("add", None, (ObjectRef("bobs"), 1), {}, ("r",)), ErrorCode.UNAUTHORIZED, "another peer"),
        (Operation("mul", None, (ObjectRef("big"), ObjectRef("big")), {}, ("r",)), ErrorCode.BAD_REQUEST, "larger"),
    ],
    ids=lambda v: v.cmd_name if isinstance(v, Operation) else None,
)
def test_bad_operations_give_an_error_and_change_nothing(
    worker: Worker, op: Operation, code: ErrorCode, match: str
) -> None:
    push(worker, "a", t(np.ones((2, 3))), tags=("t",))
    push(worker, "b", b"bytes")
    push(worker, "bobs", t([1.0]), who=BOB)
    push(worker, "big", t(np.ones(200)))  # 200 elements x 8 > max_result_bytes (1024)
    push(worker, "r", b"previous", tags=("old",))  # an existing result id is left alone too
    assert_refused_unchanged(worker, op, ALICE, code, match)


def test_operation_result_over_quota_is_refused_and_changes_nothing(worker: Worker) -> None:
    push(worker, "a", t(np.ones(100)))  # 464 bytes: 8 such objects fit in the quota, 9 do not
    for i in range(7):
        ok(worker.handle(Operation("add", None, (ObjectRef("a"), ObjectRef("a")), {}, (f"r{i}",)), ALICE, 1.0))
    assert_refused_unchanged(
        worker, Operation("add", None, (ObjectRef("a"), 1), {}, ("r9",)), ALICE, ErrorCode.QUOTA, "quota"
    )


def test_operation_without_the_right_is_refused(worker: Worker) -> None:
    push(worker, "a", t([1.0]))
    op = Operation("add", None, (ObjectRef("a"), 1), {}, ("r",))
    assert_refused_unchanged(worker, op, MALLORY, ErrorCode.UNAUTHORIZED, "operate")
    worker.permissions.per_peer[ALICE] = Right.ALL & ~Right.OPERATE
    assert_refused_unchanged(worker, op, ALICE, ErrorCode.UNAUTHORIZED, "operate")


def test_operation_may_not_overwrite_another_peers_object(worker: Worker) -> None:
    push(worker, "x", b"alice's")
    assert_refused_unchanged(worker, Operation("add", None, (1, 2), {}, ("x",)), BOB, ErrorCode.UNAUTHORIZED)


# -- plans -----------------------------------------------------------------------------------------

AFFINE = Plan(
    "affine",
    (
        Operation("matmul", None, (ObjectRef("x"), ObjectRef("w")), {}, ("xw",)),
        Operation("add", None, (ObjectRef("xw"), ObjectRef("b")), {}, ("y",)),
        Operation("sum", None, (ObjectRef("y"),), {"axis": 0}, ("total",)),
    ),
    ("x", "w", "b"),
    ("y", "total"),
)


def register(w: Worker, plan: Plan, who: NodeId = ALICE) -> Response | Error:
    return w.handle(PlanCommandMessage("register", plan.name, plan), who, 0.0)


def test_register_list_fetch_plans(worker: Worker) -> None:
    assert ok(worker.handle(PlanCommandMessage("list"), ALICE, 0.0)) == []
    assert ok(register(worker, AFFINE)) == "affine"
    double = Plan("double", (Operation("add", None, (ObjectRef("i"), ObjectRef("i")), {}, ("o",)),), ("i",), ("o",))
    assert ok(worker.handle(PlanCommandMessage("register", "", double), BOB, 0.0)) == "double"  # name from the plan
    assert ok(worker.handle(PlanCommandMessage("list"), BOB, 0.0)) == ["affine", "double"]
    raw = ok(worker.handle(PlanCommandMessage("fetch", "affine"), BOB, 0.0))
    assert isinstance(raw, bytes)
    assert struct_from_plain(Plan, decode_plain(raw), 1000) == AFFINE
    assert worker.store.used_bytes == 0  # plans are not objects


def test_run_plan_with_default_and_explicit_return_ids(worker: Worker) -> None:
    ok(register(worker, AFFINE))
    x = np.arange(6, dtype="float32").reshape(2, 3)
    w = np.ones((3, 2), dtype="float32")
    b = np.array([10.0, 20.0], dtype="float32")
    push(worker, "W", t(w))  # arguments may name stored objects or carry values
    ids = ok(worker.handle(PlanCommandMessage("run", "affine", None, (t(x), ObjectRef("W"), t(b))), ALICE, 1.0))
    assert ids == ["affine:y", "affine:total"]
    y = worker.store.get("affine:y", now=1.0)
    assert y.owner == ALICE
    np.testing.assert_allclose(y.value.to_numpy(), x @ w + b)
    np.testing.assert_allclose(worker.store.get("affine:total", now=1.0).value.to_numpy(), (x @ w + b).sum(0))
    assert "xw" not in worker.store and "x" not in worker.store  # intermediates stay in the run's scope
    ids = ok(worker.handle(PlanCommandMessage("run", "affine", None, (t(x), t(w), t(b)), ("out", "sum")), BOB, 1.0))
    assert ids == ["out", "sum"] and worker.store.get("out", now=1.0).owner == BOB


def test_plan_steps_may_use_stored_objects_not_bound_by_inputs(worker: Worker) -> None:
    plan = Plan("shift", (Operation("add", None, (ObjectRef("i"), ObjectRef("offset")), {}, ("o",)),), ("i",), ("o",))
    ok(register(worker, plan))
    push(worker, "offset", t([100.0]))
    ids = ok(worker.handle(PlanCommandMessage("run", "shift", None, (t([1.0, 2.0]),)), ALICE, 1.0))
    np.testing.assert_array_equal(worker.store.get(ids[0], now=1.0).value.to_numpy(), [101.0, 102.0])


def step(name: str = "add", returns: tuple[str, ...] = ("o",)) -> Operation:
    return Operation(name, None, (ObjectRef("i"), ObjectRef("i")), {}, returns)


@pytest.mark.parametrize(
    ("plan", "match"),
    [
        (Plan("p", (step("eval"),), ("i",), ("o",)), "not an allowed operation"),
        (Plan("p", (step(), step("__import__")), ("i",), ("o",)), "not an allowed operation"),
        (Plan("p", (step(returns=("o", "o2")),), ("i",), ("o",)), "exactly one result"),
        (Plan("p", (step(returns=()),), ("i",), ("o",)), "exactly one result"),
        (Plan("p", (), ("i",), ("o",)), "operations"),
        (Plan("p", (step(),) * 257, ("i",), ("o",)), "operations"),
        (Plan("", (step(),), ("i",), ("o",)), "name"),
    ],
    ids=["disallowed", "disallowed-later", "two-results", "no-result", "empty", "too-long", "no-name"],
)
def test_bad_plans_are_not_registered(worker: Worker, plan: Plan, match: str) -> None:
    assert_refused_unchanged(
        worker, PlanCommandMessage("register", plan.name, plan), ALICE, ErrorCode.BAD_REQUEST, match
    )


def test_register_needs_a_plan_and_a_matching_name(worker: Worker) -> None:
    plan = Plan("p", (step(),), ("i",), ("o",))
    assert_refused_unchanged(worker, PlanCommandMessage("register", "p"), ALICE, ErrorCode.BAD_REQUEST, "plan")
    assert_refused_unchanged(worker, PlanCommandMessage("register", "q", plan), ALICE, ErrorCode.BAD_REQUEST, "differ")


def test_plan_ownership(worker: Worker) -> None:
    plan = Plan("p", (step(),), ("i",), ("o",))
    ok(register(worker, plan))
    other = Plan("p", (step("mul"),), ("i",), ("o",))
    assert_refused_unchanged(worker, PlanCommandMessage("register", "p", other), BOB, ErrorCode.UNAUTHORIZED, "another")
    ok(register(worker, other))  # the owner may replace it
    assert worker.plans["p"] == (other, ALICE)
    ok(register(worker, plan, who=DOMAIN))  # and so may the domain
    assert worker.plans["p"] == (plan, DOMAIN)


def test_plan_count_is_limited(worker: Worker) -> None:
    worker.max_plans = 2
    for name in ("a", "b"):
        ok(register(worker, Plan(name, (step(),), ("i",), ("o",))))
    ok(register(worker, Plan("a", (step("mul"),), ("i",), ("o",))))  # replacing does not count
    assert_refused_unchanged(
        worker, PlanCommandMessage("register", "c", Plan("c", (step(),), ("i",), ("o",))), ALICE,
        ErrorCode.BAD_REQUEST, "too many",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("body", "code", "match"),
    [
        (PlanCommandMessage("run", "unknown", None, (1,)), ErrorCode.NOT_FOUND, "no plan"),
        (PlanCommandMessage("fetch", "unknown"), ErrorCode.NOT_FOUND, "no plan"),
        (PlanCommandMessage("run", "affine", None, (1, 2)), ErrorCode.BAD_REQUEST, "takes 3 argument"),
        (PlanCommandMessage("run", "affine", None, ()), ErrorCode.BAD_REQUEST, "takes 3 argument"),
        (PlanCommandMessage("run", "affine", None, ("x", "w", "b"), ("only-one",)), ErrorCode.BAD_REQUEST, "output"),
        (PlanCommandMessage("run", "affine", None, (ObjectRef("nope"), 1, 1)), ErrorCode.NOT_FOUND, "nope"),
        (PlanCommandMessage("run", "affine", None, (ObjectRef("bobs"), 1, 1)), ErrorCode.UNAUTHORIZED, "another"),
        (PlanCommandMessage("run", "affine", None, (1.0, 2.0, 3.0)), ErrorCode.BAD_REQUEST, "1-D"),  # fails in step 1
        (PlanCommandMessage("run", "affine", None, ("a", "b", "c")), ErrorCode.BAD_REQUEST, "tensors or numbers"),
        (PlanCommandMessage("run", "broken", None, (1.0,)), ErrorCode.BAD_REQUEST, "never computes"),
        (PlanCommandMessage("run", "late-fail", None, (t([1.0, 2.0]),)), ErrorCode.BAD_REQUEST, "broadcast"),
        (PlanCommandMessage("run", "affine", None, (t(np.ones((2, 3))), t(np.ones((3, 2))), 0.0), ("ok", "")),
         ErrorCode.BAD_REQUEST, "ids"),
        (PlanCommandMessage("destroy", "affine"), ErrorCode.BAD_REQUEST, "unknown plan command"),
    ],
    ids=["unknown-run", "unknown-fetch", "too-few-args", "no-args", "return-ids", "missing-arg", "foreign-arg",
         "bad-step", "bad-arg", "missing-output", "late-step-fails", "bad-return-id", "unknown-command"],
)  # fmt: skip
def test_plan_errors_change_nothing(worker: Worker, body: PlanCommandMessage, code: ErrorCode, match: str) -> None:
    ok(register(worker, AFFINE))
    ok(register(worker, Plan("broken", (step(),), ("i",), ("never",))))
    late = Plan(
        "late-fail", (step(), Operation("add", None, (ObjectRef("o"), t(np.ones(3))), {}, ("p",))), ("i",), ("p",)
    )
    ok(register(worker, late))
    push(worker, "bobs", t([1.0]), who=BOB)
    push(worker, "affine:y", b"previous", tags=("old",))
    assert_refused_unchanged(worker, body, ALICE, code, match)


def test_plan_outputs_over_quota_store_nothing(worker: Worker) -> None:
    # two outputs of 1664 bytes each: the first fits in what is left, both do not -> neither is stored
    plan = Plan(
        "two",
        (step("add", ("a",)), Operation("mul", None, (ObjectRef("i"), 2.0), {}, ("b",))),
        ("i",),
        ("a", "b"),
    )
    ok(register(worker, plan))
    worker.max_result_bytes = 1 << 20
    push(worker, "filler", b"f" * (QUOTA - 2 * 1664 + 500))
    assert_refused_unchanged(
        worker, PlanCommandMessage("run", "two", None, (t(np.ones(400)),)), ALICE, ErrorCode.QUOTA, "quota"
    )


def test_plans_without_the_right_are_refused(worker: Worker) -> None:
    ok(register(worker, AFFINE))
    worker.permissions.per_peer[BOB] = Right.ALL & ~Right.PLAN
    for who in (MALLORY, BOB):
        for body in (
            PlanCommandMessage("list"),
            PlanCommandMessage("fetch", "affine"),
            PlanCommandMessage("run", "affine", None, (1, 2, 3)),
            PlanCommandMessage("register", "double", Plan("double", (step(),), ("i",), ("o",))),
        ):
            assert_refused_unchanged(worker, body, who, ErrorCode.UNAUTHORIZED, "plan")


def test_unknown_plan_command_without_a_plan_is_a_bad_request(worker: Worker) -> None:
    refused(worker.handle(PlanCommandMessage("destroy"), ALICE, 0.0), ErrorCode.BAD_REQUEST, "unknown plan command")


def test_plan_run_may_not_overwrite_another_peers_object(worker: Worker) -> None:
    ok(register(worker, Plan("p", (step(),), ("i",), ("o",))))
    push(worker, "x", b"alice's")
    body = PlanCommandMessage("run", "p", None, (1.0,), ("x",))
    assert_refused_unchanged(worker, body, BOB, ErrorCode.UNAUTHORIZED)


# -- requests relayed by a domain ------------------------------------------------------------------


def test_a_request_relayed_by_the_domain_is_vouched_for(worker: Worker) -> None:
    # MALLORY has no rights of its own; the domain forwarded the request, and the domain has every right
    assert ok(worker.handle(ObjectMessage("m", b"via domain"), MALLORY, 0.0, relayed_by=DOMAIN)) == "m"
    obj = worker.store.get("m", now=0.0)
    assert obj.owner == MALLORY  # the object is the requester's, not the domain's
    assert ok(worker.handle(SearchMessage(()), MALLORY, 0.0, relayed_by=DOMAIN)) == ["m"]
    assert ok(worker.handle(ObjectRequestMessage("m", True), MALLORY, 0.0, relayed_by=DOMAIN)) == b"via domain"
    # vouching gives the domain's rights, not its ownership of everything
    push(worker, "alice's", b"v")
    assert_refused_unchanged(
        worker, ObjectRequestMessage("alice's"), MALLORY, ErrorCode.UNAUTHORIZED, "another peer", relayed_by=DOMAIN
    )
    # and nothing sticks: the next direct request from MALLORY is judged on MALLORY's own rights
    assert_refused_unchanged(worker, SearchMessage(()), MALLORY, ErrorCode.UNAUTHORIZED)


def test_the_domain_vouches_only_with_the_rights_it_has(worker: Worker) -> None:
    worker.permissions.per_peer[DOMAIN] = Right.SEARCH
    assert ok(worker.handle(SearchMessage(()), MALLORY, 0.0, relayed_by=DOMAIN)) == []
    assert_refused_unchanged(worker, ObjectMessage("m", b"v"), MALLORY, ErrorCode.UNAUTHORIZED, relayed_by=DOMAIN)
    # a requester with rights of its own keeps them
    assert ok(worker.handle(ObjectMessage("a", b"v"), ALICE, 0.0, relayed_by=DOMAIN)) == "a"


def test_a_relay_that_is_not_a_domain_vouches_for_nothing(worker: Worker) -> None:
    for relay in (ALICE, MALLORY):
        assert_refused_unchanged(worker, ObjectMessage("m", b"v"), MALLORY, ErrorCode.UNAUTHORIZED, relayed_by=relay)
        assert_refused_unchanged(worker, SearchMessage(()), MALLORY, ErrorCode.UNAUTHORIZED, relayed_by=relay)


def test_a_non_domain_relay_cannot_borrow_the_rights_of_the_peer_it_names(worker: Worker) -> None:
    worker.permissions.per_peer[MALLORY] = Right.SEARCH
    push(worker, "alice's", b"secret")
    assert_refused_unchanged(worker, ObjectMessage("m", b"v"), ALICE, ErrorCode.UNAUTHORIZED, relayed_by=MALLORY)
    assert_refused_unchanged(worker, ObjectRequestMessage("alice's"), ALICE, ErrorCode.UNAUTHORIZED, relayed_by=MALLORY)


def test_astype_with_an_unhashable_dtype_gives_an_error(worker: Worker) -> None:
    push(worker, "a", t([1.0]))
    body = Operation("astype", None, (ObjectRef("a"),), {"dtype": ["float32"]}, ("r",))
    assert_refused_unchanged(worker, body, ALICE, ErrorCode.BAD_REQUEST)


# -- permissions ----------------------------------------------------------------------------------


def test_default_permissions() -> None:
    perms = Permissions(domains={DOMAIN}, allowed={ALICE})
    assert perms.rights(DOMAIN) == perms.rights(ALICE) == Right.ALL
    assert perms.rights(MALLORY) == Right.NONE
    assert perms.is_domain(DOMAIN) and not perms.is_domain(ALICE)
    perms.per_peer[MALLORY] = Right.SEARCH | Right.PULL
    assert perms.allows(MALLORY, Right.PULL) and not perms.allows(MALLORY, Right.PUSH)
    perms.per_peer[ALICE] = Right.NONE
    assert not perms.allows(ALICE, Right.SEARCH)
    assert Permissions(open=True).rights(MALLORY) == Right.ALL
    assert Permissions(open=True, default=Right.SEARCH).rights(MALLORY) == Right.SEARCH
