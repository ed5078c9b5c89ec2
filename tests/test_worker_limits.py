"""What a peer may make a worker hold (issue 16): tags and descriptions count in the store's quota, so
do a plan's intermediates; a StreamedObject is decided before its file is read; requests per peer."""

from __future__ import annotations

import asyncio
import os
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.exceptions import QuotaExceeded
from edgeagent.identity import Identity
from edgeagent.limits import Limiter, ResourceLimits
from edgeagent.services.worker import WorkerService
from edgeagent.stream import InboundStream, StreamService
from edgeagent.wire import (
    Error,
    ErrorCode,
    NodeId,
    ObjectMessage,
    ObjectRef,
    Operation,
    Plan,
    PlanCommandMessage,
    Response,
    SearchMessage,
    StreamedObject,
    Tensor,
)
from edgeagent.worker import ObjectStore, Permissions, Right, Worker, value_size
from edgeagent.worker.store import META_FREE, meta_size
from tests.conftest import FakeHost, FakeLink, until

MiB = 1 << 20
ALICE = Identity.generate().node_id
BOB = Identity.generate().node_id
MALLORY = Identity.generate().node_id  # authorised on the node, but may only pull from its worker


def t(array: Any, dtype: str = "float32") -> Tensor:
    return Tensor.from_numpy(np.asarray(array, dtype=dtype))


def worker(quota: int = 4096, max_result_bytes: int = 1 << 20) -> Worker:
    perms = Permissions(allowed={ALICE, BOB, MALLORY}, per_peer={MALLORY: Right.PULL | Right.SEARCH})
    return Worker(ObjectStore(quota_bytes=quota), perms, max_result_bytes=max_result_bytes)


def snapshot(w: Worker) -> tuple[Any, ...]:
    objects = {o.id: (o.value, o.tags, o.description, o.size) for o in w.store._objects.values()}
    return objects, w.store.used_bytes, w.store.tags()


# -- tags and descriptions count ------------------------------------------------------------------------------------


def test_big_tags_and_descriptions_count_against_the_quota() -> None:
    store = ObjectStore(quota_bytes=4096)
    with pytest.raises(QuotaExceeded, match="quota"):
        store.put("x", b"v", now=0.0, tags=("t" * 5000,))  # one byte of value, 5000 of tag
    with pytest.raises(QuotaExceeded, match="quota"):
        store.put("x", b"v", now=0.0, tags=tuple(f"tag{i}" for i in range(1000)))  # many small tags
    with pytest.raises(QuotaExceeded, match="quota"):
        store.put("x", b"v", now=0.0, description="word " * 1000)
    assert len(store) == 0 and store.used_bytes == 0 and store.tags() == {}
    # what fits is counted: the value plus the metadata beyond the free allowance
    obj = store.put("x", b"v", now=0.0, tags=("a" * 1000,), description="d" * 500)
    assert obj.size == value_size(b"v") + 1 + (1000 + 8) + 500 - META_FREE == store.used_bytes
    assert meta_size("x", ("w", "layer1"), "first layer") == 0  # small metadata rides free
    # replacing frees the old object's metadata too
    store.put("x", b"v", now=0.0)
    assert store.used_bytes == value_size(b"v")


def test_an_object_message_with_big_tags_is_refused_and_changes_nothing() -> None:
    w = worker()
    w.handle(ObjectMessage("keep", b"k", ("small",)), ALICE, 0.0)
    before = snapshot(w)
    reply = w.handle(ObjectMessage("x", b"v", tuple("t" * 100 + str(i) for i in range(50)), "x" * 2000), ALICE, 0.0)
    assert isinstance(reply, Error) and reply.code == ErrorCode.QUOTA, reply
    assert snapshot(w) == before


def test_the_object_count_is_bounded() -> None:
    store = ObjectStore(quota_bytes=1 << 20, max_objects=3)
    for i in range(3):
        store.put(f"o{i}", i, now=0.0)
    with pytest.raises(QuotaExceeded, match="3 objects"):
        store.put("o3", 3, now=0.0)
    store.put("o0", b"replaced", now=0.0)  # replacing adds none
    assert len(store) == 3


# -- plan intermediates count ---------------------------------------------------------------------------------------


def _chain(n: int) -> Plan:
    """``n`` element-wise steps, each keeping a tensor as large as the input, then a sum (a scalar out)."""
    steps = [Operation("mul", None, (ObjectRef("i"), 2.0), {}, ("s0",))]
    steps += [Operation("add", None, (ObjectRef(f"s{k - 1}"), 1.0), {}, (f"s{k}",)) for k in range(1, n)]
    steps.append(Operation("sum", None, (ObjectRef(f"s{n - 1}"),), {}, ("out",)))
    return Plan("chain", tuple(steps), ("i",), ("out",))


def test_plan_intermediates_over_the_quota_are_refused() -> None:
    w = worker(quota=4096)
    assert isinstance(w.handle(PlanCommandMessage("register", "chain", _chain(3)), ALICE, 0.0), Response)
    before = snapshot(w)
    # three intermediates of 400 float32 (1664 bytes accounted each) hold 4992 > 4096 bytes, while the
    # only output (a scalar) would fit
    reply = w.handle(PlanCommandMessage("run", "chain", None, (t(np.ones(400)),)), ALICE, 1.0)
    assert isinstance(reply, Error) and reply.code == ErrorCode.QUOTA, reply
    assert "plan 'chain'" in reply.reason and "quota" in reply.reason
    assert snapshot(w) == before
    # what fits runs, and what it held counts only while it runs
    ok = w.handle(PlanCommandMessage("run", "chain", None, (t(np.ones(200)),)), ALICE, 1.0)
    assert isinstance(ok, Response) and ok.value == ["chain:out"]
    assert float(w.store.get("chain:out", now=1.0).value.to_numpy()) == 200 * (1 * 2 + 1 + 1)
    # the quota left is what counts: filled by stored objects, the same plan no longer fits
    w.handle(ObjectMessage("filler", b"f" * 2800), ALICE, 1.0)
    reply = w.handle(PlanCommandMessage("run", "chain", None, (t(np.ones(200)),), ("again",)), ALICE, 1.0)
    assert isinstance(reply, Error) and reply.code == ErrorCode.QUOTA, reply


# -- StreamedObject: decided before the stream is read ---------------------------------------------------------------


def _streamed(
    tmp_path: Path, size: int, source: NodeId, name: str = "obj"
) -> tuple[FakeHost, WorkerService, bytes, Path]:
    host = FakeHost(tmp_path / "host")
    host.peers.allow = None  # authorised on the node: the worker's rights decide
    streams = StreamService(host, tmp_path / "streams")
    svc = WorkerService(host, worker(quota=1 * MiB), streams)
    path = tmp_path / "streams" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        fh.truncate(size)  # sparse: costs no disk, but reading it would cost its size in memory
    sid = os.urandom(16)
    ins = InboundStream(source, sid, size, name, path.with_suffix(".part"), path=path, complete=True)
    streams.inbound[(source, sid)] = ins
    return host, svc, sid, path


async def _traced(coro: Any) -> tuple[Any, int]:
    tracemalloc.start()
    try:
        got = await coro
        return got, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize(
    ("who", "dtype", "shape", "code", "match"),
    [
        (MALLORY, "", (), ErrorCode.UNAUTHORIZED, "push right"),  # no right to push
        (ALICE, "", (), ErrorCode.QUOTA, "quota"),  # 64 MiB into a 1 MiB store
        (ALICE, "float32", (3,), ErrorCode.BAD_REQUEST, "not a tensor"),  # the shape does not match the size
    ],
    ids=["no-right", "over-quota", "bad-shape"],
)
async def test_a_streamed_object_is_refused_without_reading_the_stream(
    tmp_path: Path, who: NodeId, dtype: str, shape: tuple[int, ...], code: ErrorCode, match: str
) -> None:
    host, svc, sid, path = _streamed(tmp_path, 64 * MiB, who)
    sent, peak = await _traced(host.deliver(svc, StreamedObject(sid, "big", dtype, shape), who))
    assert [type(e.body) for e in sent] == [Error], sent
    err = sent[0].body
    assert isinstance(err, Error) and err.code == code and match in err.reason, err
    assert peak < 16 * MiB, f"{peak} bytes traced: the stream was read"
    assert "big" not in svc.worker.store
    assert not path.exists() and (who, sid) not in svc.streams.inbound  # consumed: not left on disk


async def test_a_streamed_object_with_the_right_and_room_is_stored(tmp_path: Path) -> None:
    host, svc, sid, path = _streamed(tmp_path, 4096, ALICE)
    path.write_bytes(np.arange(1024, dtype="float32").tobytes())
    sent = await host.deliver(svc, StreamedObject(sid, "w", "float32", (32, 32), ("layer",), "weights"), ALICE)
    assert [e.body for e in sent] == [Response("w")]
    obj = svc.worker.store.get("w", now=0.0)
    assert obj.tags == frozenset({"layer"}) and obj.value.to_numpy().shape == (32, 32)
    assert not path.exists()


# -- worker slots per peer ------------------------------------------------------------------------------------------


async def test_requests_past_a_peers_slots_are_answered_busy_and_others_are_served(tmp_path: Path) -> None:
    host = FakeHost(tmp_path / "host")
    host.peers.allow = None
    host.limiter = Limiter(ResourceLimits(worker_slots_per_peer=2))
    svc = WorkerService(host, worker(), StreamService(host, tmp_path / "streams"))
    alice, bob = FakeLink(ALICE), FakeLink(BOB)
    await svc._lock.acquire()  # the store is busy: requests wait for it, holding their slots
    try:
        for _ in range(2):
            assert await host.deliver(svc, SearchMessage(()), ALICE, link=alice) == []
        busy = await host.deliver(svc, SearchMessage(()), ALICE, link=alice)
        assert [type(e.body) for e in busy] == [Error]
        err = busy[0].body
        assert isinstance(err, Error) and err.code == ErrorCode.BUSY and "worker_slots_per_peer" in err.reason
        streamed = await host.deliver(svc, StreamedObject(os.urandom(16), "x"), ALICE, link=alice)
        assert isinstance(streamed[0].body, Error) and streamed[0].body.code == ErrorCode.BUSY  # counted alike
        assert await host.deliver(svc, SearchMessage(()), BOB, link=bob) == []  # another peer has its own slots
        assert host.limiter.refused["worker_slots_per_peer"] == 2
        assert svc.status_fields() == {"worker_busy": {str(ALICE): 2, str(BOB): 1}}
    finally:
        svc._lock.release()
    await until(lambda: len(alice.sent) == 4 and len(bob.sent) == 1, what="the queued requests answered")
    assert [type(e.body) for e in alice.sent] == [Error, Error, Response, Response]  # refused at once, then served
    assert isinstance(bob.sent[0].body, Response)
    await until(lambda: not svc._busy, what="the slots freed")
    more = await host.deliver(svc, SearchMessage(()), ALICE, link=alice)  # freed: served again
    assert more == []
    await until(lambda: len(alice.sent) == 5, what="the next request answered")
    assert isinstance(alice.sent[4].body, Response)
    await asyncio.gather(*host.tasks)


def test_plan_outputs_past_the_object_count_store_none() -> None:
    w = worker(quota=1 << 20)
    w.store.max_objects = 3
    plan = Plan(
        "two",
        (
            Operation("mul", None, (ObjectRef("i"), 2.0), {}, ("a",)),
            Operation("add", None, (ObjectRef("i"), 1.0), {}, ("b",)),
        ),
        ("i",),
        ("a", "b"),
    )
    assert isinstance(w.handle(PlanCommandMessage("register", "two", plan), ALICE, 0.0), Response)
    w.handle(ObjectMessage("one", b"1"), ALICE, 0.0)
    w.handle(ObjectMessage("two:a", b"old"), ALICE, 0.0)  # replaced by the run: takes no new slot
    ok = w.handle(PlanCommandMessage("run", "two", None, (t([1.0]),)), ALICE, 0.0)
    assert isinstance(ok, Response) and len(w.store) == 3
    w.handle(ObjectMessage("two:a", b"old"), ALICE, 0.0)
    w.store.delete(["two:b"])
    w.handle(ObjectMessage("three", b"3"), ALICE, 0.0)  # full: one, two:a, three
    before = snapshot(w)
    reply = w.handle(PlanCommandMessage("run", "two", None, (t([1.0]),)), ALICE, 0.0)
    assert isinstance(reply, Error) and reply.code == ErrorCode.QUOTA, reply
    assert snapshot(w) == before  # neither output stored
