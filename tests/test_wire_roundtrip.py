"""Round trips of every message type through both codecs, the CBOR forms, large payloads, encode errors."""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import cbor2
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgeagent.exceptions import EncodeError
from edgeagent.v1 import envelope_pb2
from edgeagent.wire import (
    CODECS,
    DTYPES,
    REGISTRY,
    Chunk,
    Close,
    Envelope,
    Hello,
    Limits,
    NodeId,
    ObjectRef,
    Pong,
    Response,
    Tensor,
    Update,
    decode,
    encode,
)
from edgeagent.wire.route import Route, RouteSchema
from edgeagent.wire.schema import STRUCTS, Splicer
from tests.strategies import envelope_strategy, message_strategy, struct_strategy

CODES = sorted(REGISTRY)
SRC = NodeId.from_public_key(bytes(range(32)))
DST = NodeId.from_public_key(bytes(range(32, 64)))
MiB = 1024 * 1024

# a fixed number of examples per message type keeps the whole module at a few seconds;
# database=None: no .hypothesis directory is written into the repository
PROPERTY = settings(
    max_examples=40,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def assert_identical(a: Any, b: Any, path: str = "envelope") -> None:
    """Deep equality that also requires equal *types* (``1 == 1.0 == True`` would hide codec bugs)."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} != {type(b).__name__} ({a!r} vs {b!r})"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            assert_identical(getattr(a, f.name), getattr(b, f.name), f"{path}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{path}: length {len(a)} != {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_identical(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), f"{path}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_identical(a[k], b[k], f"{path}[{k!r}]")
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b), f"{path}: {a!r} != {b!r}"
    else:
        assert a == b, f"{path}: {a!r} != {b!r}"


def roundtrip(env: Envelope, codec: str, limits: Limits | None = None) -> Envelope:
    frame = encode(env, codec)  # type: ignore[arg-type]
    assert type(frame) is bytes
    return decode(frame, codec, limits) if limits else decode(frame, codec)  # type: ignore[arg-type]


# -- (a) every registered type, both codecs, and across codecs --------------------------------


def _envelopes_of(code: int) -> st.SearchStrategy[Envelope]:
    return envelope_strategy(body=struct_strategy(REGISTRY[code]))


@pytest.mark.parametrize("code", CODES, ids=[f"{c}-{REGISTRY[c].__name__}" for c in CODES])
@PROPERTY
@given(data=st.data())
def test_cbor_roundtrip(code: int, data: st.DataObject) -> None:
    env = data.draw(_envelopes_of(code))
    back = roundtrip(env, "cbor")
    assert back == env
    assert_identical(back, env)
    assert back.type == code


@pytest.mark.parametrize("code", CODES, ids=[f"{c}-{REGISTRY[c].__name__}" for c in CODES])
@PROPERTY
@given(data=st.data())
def test_protobuf_roundtrip(code: int, data: st.DataObject) -> None:
    env = data.draw(_envelopes_of(code))
    back = roundtrip(env, "protobuf")
    assert back == env
    assert_identical(back, env)
    assert back.type == code


@pytest.mark.parametrize("code", CODES, ids=[f"{c}-{REGISTRY[c].__name__}" for c in CODES])
@PROPERTY
@given(data=st.data())
def test_cbor_to_protobuf_is_identity(code: int, data: st.DataObject) -> None:
    env = data.draw(_envelopes_of(code))
    via_cbor = decode(encode(env, "cbor"), "cbor")
    via_both = decode(encode(via_cbor, "protobuf"), "protobuf")
    assert_identical(via_both, env)
    # and back again: protobuf -> object -> CBOR
    assert_identical(decode(encode(via_both, "cbor"), "cbor"), env)


@PROPERTY
@given(env=envelope_strategy())
def test_mixed_envelopes_roundtrip_and_encode_deterministically(env: Envelope) -> None:
    for codec in CODECS:
        frame = encode(env, codec)
        assert_identical(decode(frame, codec), env)
        assert encode(decode(frame, codec), codec) == frame


@PROPERTY
@given(env=envelope_strategy())
def test_decode_accepts_bytearray_and_memoryview(env: Envelope) -> None:
    for codec in CODECS:
        frame = encode(env, codec)
        assert_identical(decode(bytearray(frame), codec), env)
        assert_identical(decode(memoryview(frame), codec), env)


@pytest.mark.parametrize("name", sorted(STRUCTS))
@settings(max_examples=5, deadline=None, database=None)
@given(data=st.data())
def test_strategies_cover_every_struct(name: str, data: st.DataObject) -> None:
    """Every struct (not only messages) can be generated: a new kind or struct must not break the tests."""
    cls = STRUCTS[name]
    assert type(data.draw(struct_strategy(cls))) is cls
    assert type(data.draw(message_strategy())) in REGISTRY.values()


# -- (b) the registry covers the design's message families -------------------------------------

DESIGN_FAMILIES = (
    "Operation",
    "ObjectMessage",
    "ObjectRequestMessage",
    "IsNoneMessage",
    "GetShapeMessage",
    "ForceObjectDeleteMessage",
    "SearchMessage",
    "PlanCommandMessage",
    "Response",
    "Error",
    "Hello",
    "Ping",
    "Pong",
    "Close",
    "PeerRecord",
    "RouteRequest",
    "RouteReply",
    "Offer",
    "Answer",
    "Candidate",
    "Manifest",
    "TreeAssign",
    "Chunk",
    "ChunkRequest",
    "Have",
    "Progress",
    "JobAdvert",
    "JoinRequest",
    "JoinReply",
    "RoundStart",
    "Update",
    "RoundResult",
)


def test_registry_covers_design_families() -> None:
    names = {cls.__name__ for cls in REGISTRY.values()}
    missing = sorted(set(DESIGN_FAMILIES) - names)
    assert not missing, f"message families missing from REGISTRY: {missing}"


def test_registry_is_consistent() -> None:
    for code, cls in REGISTRY.items():
        assert code == cls.TYPE_CODE
        assert 16 <= code <= 2047
        assert STRUCTS[cls.__name__] is cls
        assert dataclasses.is_dataclass(cls)
        assert cls.__dataclass_params__.frozen  # type: ignore[attr-defined]
    assert len({cls.__name__ for cls in REGISTRY.values()}) == len(REGISTRY)


def test_protobuf_body_field_number_is_type_code() -> None:
    env_desc = envelope_pb2.Envelope.DESCRIPTOR
    body_fields = {f.number: f.message_type.name for f in env_desc.oneofs_by_name["body"].fields}
    assert body_fields == {code: cls.__name__ for code, cls in REGISTRY.items()}


# -- (c) CBOR forms ---------------------------------------------------------------------------


def _tag_items(tag: Any) -> list[Any]:
    assert isinstance(tag.value, (list, tuple)), tag.value
    return list(tag.value)


def test_cbor_tensor_is_rfc8746_tag40_over_typed_array() -> None:
    data = bytes(range(24))
    env = Envelope(Response(Tensor("float32", (2, 3), data)), SRC, msg_id=7)
    frame = encode(env, "cbor")
    plain = cbor2.loads(frame)
    value = plain[9][1]
    assert isinstance(value, cbor2.CBORTag)  # a generic reader sees the RFC 8746 tags
    assert value.tag == 40
    shape, typed = _tag_items(value)
    assert list(shape) == [2, 3]
    assert isinstance(typed, cbor2.CBORTag)
    assert typed.tag == 85  # float32, little endian
    assert typed.value == data
    # the same, on the bytes: tag(40) [ [2, 3], tag(85) bytes(24) ]
    assert b"\xd8\x28\x82\x82\x02\x03\xd8\x55\x58\x18" + data in frame


@pytest.mark.parametrize("dtype", sorted(DTYPES))
def test_cbor_typed_array_tag_per_dtype(dtype: str) -> None:
    size, tag = DTYPES[dtype]
    t = Tensor(dtype, (2,), bytes(range(2 * size)))
    frame = encode(Envelope(Response(t), SRC, msg_id=1), "cbor")
    value = cbor2.loads(frame)[9][1]
    assert isinstance(value, cbor2.CBORTag)
    assert value.tag == 40
    typed = _tag_items(value)[1]
    assert isinstance(typed, cbor2.CBORTag)
    assert typed.tag == tag
    assert typed.value == t.data
    assert decode(frame, "cbor").body == Response(t)


def test_cbor_object_ref_is_tag39() -> None:
    frame = encode(Envelope(Response([ObjectRef("w1/x")]), SRC, msg_id=1), "cbor")
    (ref,) = cbor2.loads(frame)[9][1]
    assert isinstance(ref, cbor2.CBORTag)
    assert (ref.tag, ref.value) == (39, "w1/x")


def test_cbor_envelope_keys_are_small_integers() -> None:
    full = Envelope(
        Hello(SRC, versions=(1,), codecs=("cbor", "protobuf")),
        SRC,
        destination=DST,
        msg_id=2**64 - 1,
        reply_to=3,
        route=Route(RouteSchema(SRC, (DST,))),
        ttl=9,
    )
    plain = cbor2.loads(encode(full, "cbor"))
    assert set(plain) == set(range(1, 10))
    assert all(type(k) is int for k in plain)
    assert plain[1] == 1
    assert plain[2] == Hello.TYPE_CODE
    assert plain[3] == 2**64 - 1
    assert plain[4] == SRC.to_bytes()
    assert plain[5] == DST.to_bytes()
    assert plain[7] == 3
    assert plain[8] == 9
    # body and nested structs use their field numbers as keys too
    assert plain[9] == {1: SRC.to_bytes(), 2: [1], 3: ["cbor", "protobuf"]}
    assert plain[6] == {1: {1: SRC.to_bytes(), 2: [DST.to_bytes()]}}

    minimal = cbor2.loads(encode(Envelope(Pong(5), SRC, msg_id=1), "cbor"))
    assert set(minimal) == {1, 2, 3, 4, 8, 9}


@PROPERTY
@given(env=envelope_strategy())
def test_cbor_keys_are_field_numbers(env: Envelope) -> None:
    plain = cbor2.loads(encode(env, "cbor"))
    assert set(plain) <= set(range(1, 10))
    numbers = {f.number for f in type(env.body).WIRE_FIELDS}
    assert set(plain[9]) <= numbers


def test_defaults_are_left_out() -> None:
    for codec in CODECS:
        small = encode(Envelope(Close(), SRC, msg_id=0), codec)
        assert decode(small, codec).body == Close(1000, "")
    plain = cbor2.loads(encode(Envelope(Close(), SRC, msg_id=0), "cbor"))
    assert plain[9] == {}


# -- (d) large payloads ------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_large_chunk_roundtrip(codec: str) -> None:
    data = os.urandom(300 * 1024)
    env = Envelope(Chunk(b"p" * 32, 7, data), SRC, destination=DST, msg_id=11)
    frame = encode(env, codec)
    assert len(data) < len(frame) < len(data) + 256  # no base64, no second copy
    assert frame.endswith(data)  # the data is the last field, spliced in whole
    assert_identical(decode(frame, codec), env)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("size", [Splicer.THRESHOLD - 1, Splicer.THRESHOLD, Splicer.THRESHOLD + 1])
@settings(max_examples=10, deadline=None, database=None)
@given(payload_id=st.binary(max_size=40), index=st.integers(0, 2**32 - 1), env=envelope_strategy(st.just(Pong(0))))
def test_chunks_around_the_splice_threshold(
    codec: str, size: int, payload_id: bytes, index: int, env: Envelope
) -> None:
    """Chunks just below, at and above the size where the encoders splice the data in instead of copying it."""
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    chunk = dataclasses.replace(env, body=Chunk(payload_id, index, data))
    assert_identical(decode(encode(chunk, codec), codec), chunk)


@pytest.mark.parametrize("kind", ["chunk", "stream"])
@pytest.mark.parametrize("size", [0, Splicer.THRESHOLD - 1, Splicer.THRESHOLD, 300 * 1024])
def test_spliced_frames_are_the_canonical_encodings(size: int, kind: str) -> None:
    """Splicing chunk/stream data in gives exactly the bytes the libraries themselves would produce."""
    from edgeagent.v1 import envelope_pb2
    from edgeagent.wire import StreamData

    data = (bytes(range(251)) * (size // 251 + 1))[:size]
    body = Chunk(b"p" * 32, 7, data) if kind == "chunk" else StreamData(b"s" * 16, 1 << 33, 1 << 34, "n", True, data)
    env = Envelope(body, SRC, destination=DST, msg_id=11)
    assert decode(encode(env, "protobuf"), "protobuf") == env
    pb_frame = encode(env, "protobuf")
    parsed = envelope_pb2.Envelope()
    parsed.ParseFromString(pb_frame)
    assert parsed.SerializeToString(deterministic=True) == pb_frame
    cbor_frame = encode(env, "cbor")
    assert cbor2.dumps(cbor2.loads(cbor_frame)) == cbor_frame


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("wrap", [bytearray, memoryview])
def test_large_chunk_from_buffer_types(codec: str, wrap: type) -> None:
    data = os.urandom(64 * 1024)
    env = Envelope(Chunk(b"id", 1, wrap(data)), SRC, msg_id=11)
    back = decode(encode(env, codec), codec)
    assert type(back.body.data) is bytes
    assert back.body.data == data


@pytest.mark.parametrize("codec", CODECS)
def test_4mib_tensor_roundtrip(codec: str) -> None:
    data = os.urandom(4 * MiB)
    t = Tensor("float32", (1024, 1024), data)
    env = Envelope(Response(t), SRC, msg_id=12, reply_to=11)
    frame = encode(env, codec)
    assert len(data) < len(frame) < len(data) + 256
    assert_identical(decode(frame, codec), env)
    assert_identical(decode(memoryview(frame), codec), env)


@pytest.mark.parametrize("codec", CODECS)
def test_several_large_buffers_in_one_frame(codec: str) -> None:
    """Several spliced buffers in one CBOR frame land in the right places."""
    a, b, c = (os.urandom(n) for n in (20_000, 300_000, 17_000))
    upd = Update(
        job_id="job",
        round=3,
        weighted_delta=(Tensor("uint8", (len(a),), a), Tensor("int16", (len(b) // 2,), b)),
        num_samples=9,
        metrics={"loss": 0.25},
    )
    env = Envelope(upd, SRC, msg_id=13)
    assert_identical(decode(encode(env, codec), codec), env)
    val = Envelope(Response({"x": c, "y": [a, "z"], "t": Tensor("float64", (len(b) // 8,), b)}), SRC, msg_id=14)
    assert_identical(decode(encode(val, codec), codec), val)


# -- (e) encode rejects what the wire cannot carry --------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "body",
    [
        pytest.param(Close(code=2**32), id="u32-too-big"),
        pytest.param(Close(code=-1), id="u32-negative"),
        pytest.param(Pong(2**64), id="u64-too-big"),
        pytest.param(Pong("1"), id="str-for-int"),  # type: ignore[arg-type]
        pytest.param(Pong(1.0), id="float-for-int"),  # type: ignore[arg-type]
        pytest.param(Pong(True), id="bool-for-int"),
        pytest.param(Close(reason=b"x"), id="bytes-for-str"),  # type: ignore[arg-type]
        pytest.param(Response({1: 2}), id="value-dict-int-key"),
        pytest.param(Response({"a": {(1,): 2}}), id="value-nested-dict-tuple-key"),
        pytest.param(Response(2**63), id="value-int-too-big"),
        pytest.param(Response(-(2**63) - 1), id="value-int-too-small"),
        pytest.param(Response({1, 2}), id="value-set"),
        pytest.param(Response(object()), id="value-object"),
        pytest.param(Hello(SRC, versions=[1]), id="rep-as-list"),  # type: ignore[arg-type]
        pytest.param(Hello(b"\0" * 38), id="bytes-for-nodeid"),  # type: ignore[arg-type]
        pytest.param(Update("j", 1, metrics={"a": "b"}), id="strmap-f64-str"),
        pytest.param(Update("j", 1, metrics={1: 1.0}), id="strmap-int-key"),  # type: ignore[dict-item]
    ],
)
def test_encode_rejects_bad_values(codec: str, body: Any) -> None:
    with pytest.raises(EncodeError):
        encode(Envelope(body, SRC, msg_id=1), codec)


@pytest.mark.parametrize("codec", CODECS)
def test_encode_rejects_unregistered_body(codec: str) -> None:
    from edgeagent.wire import Plan

    with pytest.raises(EncodeError, match="not a registered message"):
        encode(Envelope(Plan("p"), SRC, msg_id=1), codec)  # type: ignore[arg-type]

    @dataclasses.dataclass(frozen=True)
    class FakePong(Pong):
        pass

    with pytest.raises(EncodeError, match="not a registered message"):
        encode(Envelope(FakePong(1), SRC, msg_id=1), codec)
    with pytest.raises(EncodeError):
        encode(Envelope("hello", SRC, msg_id=1), codec)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "changes",
    [
        {"msg_id": 2**64},
        {"msg_id": -1},
        {"ttl": 2**32},
        {"reply_to": 2**64},
        {"source": b"\0" * 38},
        {"destination": "12D3KooW"},
        {"route": "r"},
    ],
    ids=lambda c: next(iter(c)),
)
def test_encode_rejects_bad_header(codec: str, changes: dict[str, Any]) -> None:
    env = dataclasses.replace(Envelope(Pong(1), SRC, msg_id=1), **changes)
    with pytest.raises(EncodeError):
        encode(env, codec)


@pytest.mark.parametrize("codec", CODECS)
def test_nan_is_carried(codec: str) -> None:
    """NaN is a float like any other: allowed in VALUE and F64 fields (it just never compares equal)."""
    nan = float("nan")
    back = decode(encode(Envelope(Response([nan, {"x": nan}]), SRC, msg_id=1), codec), codec)
    assert math.isnan(back.body.value[0])
    assert math.isnan(back.body.value[1]["x"])
    upd = decode(encode(Envelope(Update("j", 0, metrics={"m": nan}), SRC, msg_id=1), codec), codec)
    assert math.isnan(upd.body.metrics["m"])
    route = Route(RouteSchema(SRC), health=nan)
    env = decode(encode(Envelope(Pong(1), SRC, msg_id=1, route=route), codec), codec)
    assert env.route is not None
    assert math.isnan(env.route.health)


@pytest.mark.parametrize("codec", CODECS)
def test_infinities_and_negative_zero(codec: str) -> None:
    vals = [float("inf"), float("-inf"), -0.0, 5e-324, 1.7976931348623157e308, 0.1, 65504.0, 1e-8]
    back = decode(encode(Envelope(Response(vals), SRC, msg_id=1), codec), codec).body.value
    assert [repr(x) for x in back] == [repr(x) for x in vals]
