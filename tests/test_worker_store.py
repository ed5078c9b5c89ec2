"""The worker's object store (pure: time is passed in): accounting, quota, leases, tag index, search."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.exceptions import ObjectNotFound, QuotaExceeded
from edgeagent.identity import Identity
from edgeagent.wire import ObjectRef, Tensor
from edgeagent.worker import ObjectStore, value_size

OWNER = Identity.generate().node_id

Snapshot = tuple[dict[str, tuple[Any, frozenset[str], str, int, float]], int, dict[str, int]]


def snapshot(store: ObjectStore) -> Snapshot:
    """Everything observable about the store's contents."""
    objects = {o.id: (o.value, o.tags, o.description, o.size, o.expires_at) for o in store._objects.values()}
    return objects, store.used_bytes, store.tags()


def recomputed_tags(store: ObjectStore) -> dict[str, int]:
    counts: dict[str, int] = {}
    for obj in store._objects.values():
        for tag in obj.tags:
            counts[tag] = counts.get(tag, 0) + 1
    return counts


def assert_consistent(store: ObjectStore) -> None:
    assert store.used_bytes == sum(o.size for o in store._objects.values())
    assert store.tags() == recomputed_tags(store)
    for ids in store._tags.values():
        assert ids and all(i in store for i in ids)


# -- sizes and accounting ---------------------------------------------------------------------------


def test_value_size_of_each_kind() -> None:
    t = Tensor.from_numpy(np.zeros((2, 3), dtype="float32"))
    assert value_size(t) == 24 + 64
    assert value_size(b"abcd") == 4 + 16
    assert value_size(bytearray(3)) == 3 + 16
    assert value_size("hé") == 3 + 16
    assert value_size(ObjectRef("abc")) == 3 + 16
    assert value_size(7) == value_size(1.5) == value_size(None) == value_size(True) == 8
    assert value_size([b"ab", 1]) == 16 + 18 + 8
    assert value_size({"k": b"ab"}) == 16 + 1 + 18


def test_put_get_records_every_attribute() -> None:
    store = ObjectStore(quota_bytes=10_000, default_lease=100.0)
    t = Tensor.from_numpy(np.arange(4, dtype="float64"))
    obj = store.put("x", t, now=5.0, tags=("w", "layer1"), description="first layer", owner=OWNER, lease=10.0)
    got = store.get("x", now=6.0)
    assert got is obj
    assert (got.id, got.value, got.tags, got.description, got.owner) == (
        "x",
        t,
        frozenset({"w", "layer1"}),
        "first layer",
        OWNER,
    )
    assert got.size == value_size(t) == 32 + 64
    assert got.expires_at == 15.0
    assert store.used_bytes == got.size
    assert "x" in store and "y" not in store and len(store) == 1
    assert store.tags() == {"w": 1, "layer1": 1}


def test_put_many_sums_sizes() -> None:
    store = ObjectStore(quota_bytes=10_000)
    values: dict[str, Any] = {"a": b"x" * 10, "b": "text", "c": [1, 2, 3], "d": {"k": 1}, "e": ObjectRef("a"), "f": 3}
    for k, v in values.items():
        store.put(k, v, now=0.0)
    assert store.used_bytes == sum(value_size(v) for v in values.values())
    assert len(store) == len(values)


def test_get_unknown_raises_not_found() -> None:
    with pytest.raises(ObjectNotFound):
        ObjectStore().get("nope", now=0.0)


def test_replace_updates_bytes_tags_and_lease() -> None:
    store = ObjectStore(quota_bytes=10_000, default_lease=100.0)
    store.put("x", b"a" * 100, now=0.0, tags=("old", "both"), description="old words")
    store.put("y", b"b", now=0.0, tags=("both",))
    store.put("x", b"c" * 10, now=1.0, tags=("new", "both"), description="new words", lease=5.0)
    assert store.used_bytes == value_size(b"c" * 10) + value_size(b"b")
    assert store.tags() == {"new": 1, "both": 2}
    obj = store.get("x", now=1.0)
    assert obj.value == b"c" * 10 and obj.description == "new words" and obj.expires_at == 6.0
    assert store.search(["old"], now=1.0) == []
    assert_consistent(store)
    # the replacement's shorter lease is the one that counts (the old heap entry is stale)
    assert store.sweep(6.0) == ["x"]
    assert store.sweep(200.0) == ["y"]
    assert store.used_bytes == 0 and store.tags() == {}


def test_replace_counts_the_freed_bytes_against_the_quota() -> None:
    size = value_size(b"a" * 50)
    store = ObjectStore(quota_bytes=size)
    store.put("x", b"a" * 50, now=0.0)
    store.put("x", b"b" * 50, now=0.0)  # fits only because the old value goes
    assert store.used_bytes == size
    with pytest.raises(QuotaExceeded):
        store.put("y", b"", now=0.0)


# -- quota ------------------------------------------------------------------------------------------


def test_quota_refusal_leaves_the_store_unchanged() -> None:
    store = ObjectStore(quota_bytes=200, default_lease=100.0)
    store.put("a", b"x" * 100, now=0.0, tags=("t", "u"), description="kept")
    before = snapshot(store)
    with pytest.raises(QuotaExceeded, match="quota"):
        store.put("b", b"y" * 100, now=1.0, tags=("t", "v"))
    assert snapshot(store) == before
    assert "b" not in store
    # a refused *replacement* keeps the old object, its tags and its lease
    with pytest.raises(QuotaExceeded):
        store.put("a", b"z" * 500, now=1.0, tags=("w",))
    assert snapshot(store) == before
    assert store.get("a", now=1.0).value == b"x" * 100
    assert_consistent(store)


def test_exactly_full_is_allowed() -> None:
    store = ObjectStore(quota_bytes=value_size(b"x" * 10) + value_size(b"y"))
    store.put("a", b"x" * 10, now=0.0)
    store.put("b", b"y", now=0.0)
    assert store.used_bytes == store.quota_bytes


def test_expired_objects_do_not_count_against_the_quota() -> None:
    store = ObjectStore(quota_bytes=value_size(b"x" * 100))
    store.put("a", b"x" * 100, now=0.0, lease=1.0)
    with pytest.raises(QuotaExceeded):
        store.put("b", b"x" * 100, now=0.5)
    store.put("b", b"x" * 100, now=1.0)  # "a" expired exactly now
    assert "a" not in store and store.used_bytes == value_size(b"x" * 100)


# -- leases -----------------------------------------------------------------------------------------


def test_lease_expires_exactly_at_expires_at() -> None:
    store = ObjectStore(default_lease=100.0)
    store.put("x", b"data", now=0.0, tags=("t",), lease=10.0)
    assert store.get("x", now=9.999).value == b"data"
    with pytest.raises(ObjectNotFound):
        store.get("x", now=10.0)
    assert "x" not in store and store.used_bytes == 0 and store.tags() == {}


def test_sweep_at_exact_expiry() -> None:
    store = ObjectStore()
    store.put("x", b"", now=0.0, lease=10.0)
    assert store.sweep(9.999) == []
    assert store.sweep(10.0) == ["x"]
    assert store.sweep(10.0) == []


@pytest.mark.parametrize(("lease", "expected"), [(None, 100.0), (0.0, 100.0), (-5.0, 100.0), (3.0, 3.0), (1e9, 500.0)])
def test_lease_default_and_cap(lease: float | None, expected: float) -> None:
    store = ObjectStore(default_lease=100.0, max_lease=500.0)
    assert store.put("x", b"", now=2.0, lease=lease).expires_at == 2.0 + expected
    store.put("y", b"", now=2.0, lease=5.0)
    assert store.renew(["y"], now=3.0, lease=lease) == ["y"]
    assert store.get("y", now=3.0).expires_at == 3.0 + expected


def test_renew_extends_the_lease() -> None:
    store = ObjectStore(default_lease=100.0)
    store.put("x", b"", now=0.0, lease=10.0)
    assert store.renew(["x", "unknown"], now=8.0, lease=10.0) == ["x"]
    assert store.get("x", now=17.9) is not None
    assert store.sweep(10.0) == []  # the original expiry is a stale heap entry now
    assert store.sweep(18.0) == ["x"]


def test_renew_with_a_shorter_lease_shortens_it() -> None:
    store = ObjectStore()
    store.put("x", b"", now=0.0, lease=100.0)
    assert store.renew(["x"], now=1.0, lease=2.0) == ["x"]
    assert store.sweep(3.0) == ["x"]


def test_renew_does_not_resurrect_an_expired_object() -> None:
    store = ObjectStore()
    store.put("x", b"abc", now=0.0, tags=("t",), lease=1.0)
    assert store.renew(["x"], now=1.0, lease=10.0) == []
    assert "x" not in store and store.used_bytes == 0 and store.tags() == {}


def test_sweep_returns_exactly_the_expired_ids() -> None:
    store = ObjectStore()
    for i, lease in enumerate([1.0, 2.0, 3.0, 4.0, 5.0]):
        store.put(f"o{i}", b"x" * i, now=0.0, tags=(f"t{i % 2}",), lease=lease)
    store.renew(["o0"], now=0.5, lease=10.0)
    assert sorted(store.sweep(3.0)) == ["o1", "o2"]
    assert sorted(store._objects) == ["o0", "o3", "o4"]
    assert_consistent(store)
    assert sorted(store.sweep(100.0)) == ["o0", "o3", "o4"]
    assert store.used_bytes == 0 and store.tags() == {} and len(store) == 0


# -- delete and the tag index ----------------------------------------------------------------------


def test_delete_is_batched_and_idempotent() -> None:
    store = ObjectStore()
    for k in "abc":
        store.put(k, b"x", now=0.0, tags=("t",))
    assert store.delete(["a", "b", "zz"]) == 2
    assert store.delete(["a", "b"]) == 0
    assert store.delete([]) == 0
    assert sorted(store._objects) == ["c"]
    assert store.tags() == {"t": 1}
    assert store.used_bytes == value_size(b"x")


def test_tag_index_after_delete_expiry_and_replace() -> None:
    store = ObjectStore()
    store.put("a", b"", now=0.0, tags=("shared", "only-a"))
    store.put("b", b"", now=0.0, tags=("shared", "only-b"), lease=5.0)
    store.put("c", b"", now=0.0, tags=("shared", "only-c"))
    assert store.tags() == {"shared": 3, "only-a": 1, "only-b": 1, "only-c": 1}
    store.delete(["a"])
    assert store.tags() == {"shared": 2, "only-b": 1, "only-c": 1}
    store.sweep(5.0)
    assert store.tags() == {"shared": 1, "only-c": 1}
    store.put("c", b"", now=6.0, tags=("fresh",))
    assert store.tags() == {"fresh": 1}
    assert store.search(["shared"], now=6.0) == []
    assert_consistent(store)


def test_duplicate_tags_count_once() -> None:
    store = ObjectStore()
    store.put("a", b"", now=0.0, tags=("t", "t"))
    assert store.tags() == {"t": 1}
    store.delete(["a"])
    assert store.tags() == {}


# -- search -----------------------------------------------------------------------------------------


@pytest.fixture
def searchable() -> ObjectStore:
    store = ObjectStore()
    store.put("w1", b"", now=0.0, tags=("weights", "mnist"), description="Layer1 weights of the MNIST model")
    store.put("w2", b"", now=0.0, tags=("weights", "cifar"), description="layer2 weights")
    store.put("d1", b"", now=0.0, tags=("data", "mnist"), description="training images")
    store.put("short", b"", now=0.0, tags=("data",), description="expires soon", lease=5.0)
    return store


def test_search_no_terms_returns_everything(searchable: ObjectStore) -> None:
    assert searchable.search([], now=1.0) == ["d1", "short", "w1", "w2"]


def test_search_by_tag_id_and_description_word(searchable: ObjectStore) -> None:
    assert searchable.search(["weights"], now=1.0) == ["w1", "w2"]
    assert searchable.search(["mnist"], now=1.0) == ["d1", "w1"]
    assert searchable.search(["d1"], now=1.0) == ["d1"]
    assert searchable.search(["training"], now=1.0) == ["d1"]
    assert searchable.search(["LAYER1"], now=1.0) == ["w1"]  # description words ignore case
    assert searchable.search(["layer"], now=1.0) == []  # a word, not a substring
    assert searchable.search(["w"], now=1.0) == []  # an id matches exactly, not by prefix


def test_search_ands_its_terms(searchable: ObjectStore) -> None:
    assert searchable.search(["weights", "mnist"], now=1.0) == ["w1"]
    assert searchable.search(["mnist", "weights"], now=1.0) == ["w1"]
    assert searchable.search(["data", "mnist"], now=1.0) == ["d1"]
    assert searchable.search(["w2", "weights"], now=1.0) == ["w2"]
    assert searchable.search(["w2", "mnist"], now=1.0) == []


@pytest.mark.parametrize("position", [0, 1, 2])
def test_search_a_term_matching_nothing_empties_the_result(searchable: ObjectStore, position: int) -> None:
    terms = ["weights", "mnist"]
    terms.insert(position, "nothing-matches-this")
    assert searchable.search(terms, now=1.0) == []


def test_search_skips_expired_objects(searchable: ObjectStore) -> None:
    assert searchable.search(["data"], now=4.9) == ["d1", "short"]
    assert searchable.search(["data"], now=5.0) == ["d1"]
    assert "short" not in searchable
    assert_consistent(searchable)


def test_search_empty_term_matches_no_description(searchable: ObjectStore) -> None:
    assert searchable.search([""], now=1.0) == []


# -- property: random operation sequences keep the books straight -------------------------------------

IDS = ["a", "b", "c", "d"]
TAGS = ["t1", "t2", "t3"]

put_op = st.tuples(
    st.just("put"),
    st.sampled_from(IDS),
    st.binary(max_size=60),
    st.lists(st.sampled_from(TAGS), max_size=3).map(tuple),
    st.sampled_from([None, 0.5, 1.0, 3.0]),
)
delete_op = st.tuples(st.just("delete"), st.lists(st.sampled_from([*IDS, "zz"]), max_size=3))
renew_op = st.tuples(st.just("renew"), st.lists(st.sampled_from(IDS), max_size=3), st.sampled_from([None, 0.5, 2.0]))
sweep_op = st.tuples(st.just("sweep"))
get_op = st.tuples(st.just("get"), st.sampled_from(IDS))
step = st.tuples(st.sampled_from([0.0, 0.0, 0.25, 0.5, 1.0]), st.one_of(put_op, delete_op, renew_op, sweep_op, get_op))


@settings(max_examples=300, deadline=None, database=None)
@given(st.lists(step, max_size=40))
def test_random_sequences_keep_bytes_and_tag_index_consistent(steps: list[tuple[float, tuple[Any, ...]]]) -> None:
    quota = 200
    default_lease = 2.0
    store = ObjectStore(quota_bytes=quota, default_lease=default_lease)
    model: dict[str, tuple[int, frozenset[str], float]] = {}  # id -> (size, tags, expires_at), unswept included
    now = 0.0

    def model_sweep() -> list[str]:
        gone = sorted(i for i, (_, _, exp) in model.items() if exp <= now)
        for i in gone:
            del model[i]
        return gone

    def live() -> dict[str, tuple[int, frozenset[str], float]]:
        return {i: v for i, v in model.items() if v[2] > now}

    for dt, op in steps:
        now += dt
        kind = op[0]
        if kind == "put":
            _, obj_id, data, tags, lease = op
            model_sweep()  # put sweeps first
            size = value_size(data)
            used = sum(s for s, _, _ in model.values())
            freed = model[obj_id][0] if obj_id in model else 0
            if used - freed + size > quota:
                with pytest.raises(QuotaExceeded):
                    store.put(obj_id, data, now=now, tags=tags, lease=lease)
            else:
                store.put(obj_id, data, now=now, tags=tags, lease=lease)
                model[obj_id] = (size, frozenset(tags), now + (lease or default_lease))
        elif kind == "delete":
            n = store.delete(op[1])
            assert n == len(set(op[1]) & set(model))
            for i in op[1]:
                model.pop(i, None)
        elif kind == "renew":
            _, ids, lease = op
            model_sweep()  # renew sweeps first
            renewed = store.renew(ids, now=now, lease=lease)
            assert renewed == [i for i in ids if i in model]
            for i in renewed:
                size, tags, _ = model[i]
                model[i] = (size, tags, now + (lease or default_lease))
        elif kind == "sweep":
            assert sorted(store.sweep(now)) == model_sweep()
        else:
            obj_id = op[1]
            if obj_id in live():
                assert store.get(obj_id, now=now).size == model[obj_id][0]
            else:
                with pytest.raises(ObjectNotFound):
                    store.get(obj_id, now=now)
                model.pop(obj_id, None)  # get drops the one expired object it finds
        assert sorted(store._objects) == sorted(model)
        assert {o.id: (o.size, o.tags, o.expires_at) for o in store._objects.values()} == model
        assert_consistent(store)
        assert store.used_bytes <= quota
    store.sweep(now)
    assert sorted(store._objects) == sorted(live())
    expected_tags = {t: c for t in TAGS if (c := sum(1 for _, tags, _ in live().values() if t in tags))}
    assert store.tags() == expected_tags
