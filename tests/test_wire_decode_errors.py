"""Specific bad frames: each is refused with a DecodeError whose reason says why.

After every refusal a valid frame is decoded again with the same limits, to show
the codec keeps no broken state between frames.
"""

from __future__ import annotations

from typing import Any

import cbor2
import pytest

from edgeagent.exceptions import DecodeError
from edgeagent.v1 import envelope_pb2
from edgeagent.wire import (
    CODECS,
    Close,
    Envelope,
    ForceObjectDeleteMessage,
    Hello,
    Hop,
    JobAdvert,
    Limits,
    NodeId,
    ObjectMessage,
    Operation,
    Pong,
    Response,
    RoundResult,
    Route,
    RouteReply,
    RouteSchema,
    RouteSegment,
    Tensor,
    Update,
    decode,
    encode,
)

SRC = NodeId.from_public_key(bytes(range(32)))
VALID = Envelope(Pong(5), SRC, msg_id=1)
VALID_FRAMES = {codec: encode(VALID, codec) for codec in CODECS}


def assert_refused(frame: bytes, codec: str, reason: str, limits: Limits | None = None) -> DecodeError:
    """``frame`` gives a DecodeError matching ``reason``; then a valid frame still decodes with the same limits."""
    lim = limits or Limits()
    with pytest.raises(DecodeError, match=reason) as info:
        decode(frame, codec, lim)  # type: ignore[arg-type]
    # the catch-all "malformed frame (SomeError: ...)" means an internal exception escaped a check
    assert not str(info.value).startswith("malformed frame ("), str(info.value)
    assert decode(VALID_FRAMES[codec], codec, lim) == VALID  # type: ignore[arg-type]
    return info.value


# -- CBOR helpers ------------------------------------------------------------------------------


def cbor_frame(body: bytes, *, code: int = 18, **header: Any) -> bytes:
    """An envelope map whose body (key 9) is the raw CBOR ``body``; header keys may be overridden or dropped."""
    fields: dict[int, Any] = {1: 1, 2: code, 3: 1, 4: SRC.to_bytes(), 8: 16}
    names = {"version": 1, "type": 2, "msg_id": 3, "source": 4, "destination": 5, "route": 6, "reply_to": 7, "ttl": 8}
    for name, v in header.items():
        if v is None:
            fields.pop(names[name], None)
        else:
            fields[names[name]] = v
    n = len(fields) + 1
    assert n < 24
    return bytes([0xA0 | n]) + b"".join(cbor2.dumps(k) + cbor2.dumps(v) for k, v in fields.items()) + b"\x09" + body


def response_value(raw_value: bytes, **header: Any) -> bytes:
    """A Response frame whose value (field 1) is the raw CBOR ``raw_value``."""
    return cbor_frame(b"\xa1\x01" + raw_value, code=Response.TYPE_CODE, **header)


def test_cbor_frame_helper_builds_valid_frames() -> None:
    assert decode(cbor_frame(b"\xa1\x01\x05"), "cbor") == VALID
    assert cbor_frame(b"\xa1\x01\x05") == VALID_FRAMES["cbor"]
    assert decode(response_value(b"\x82\x01\x61a"), "cbor").body == Response([1, "a"])


# -- both codecs -------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
def test_empty_frame(codec: str) -> None:
    assert_refused(b"", codec, "empty frame")


@pytest.mark.parametrize("codec", CODECS)
def test_frame_over_max_frame(codec: str) -> None:
    frame = encode(Envelope(Response(b"x" * 1000), SRC, msg_id=1), codec)
    limits = Limits(max_frame=len(frame) - 1)
    assert_refused(frame, codec, rf"frame of {len(frame)} bytes exceeds the {len(frame) - 1}-byte cap", limits)
    assert decode(frame, codec, Limits(max_frame=len(frame))).body == Response(b"x" * 1000)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_frame_over_max_frame_is_refused_unread(codec: str) -> None:
    """A frame over the cap is refused by its length alone, whatever its content."""
    assert_refused(b"\xff" * 101, codec, "exceeds the 100-byte cap", Limits(max_frame=100))


@pytest.mark.parametrize("codec", CODECS)
def test_unsupported_version(codec: str) -> None:
    frame = encode(Envelope(Pong(5), SRC, msg_id=1, version=2), codec)
    assert_refused(frame, codec, "unsupported protocol version 2")


@pytest.mark.parametrize("codec", CODECS)
def test_version_zero(codec: str) -> None:
    frame = encode(Envelope(Pong(5), SRC, msg_id=1, version=0), codec)
    assert_refused(frame, codec, "bad protocol version")


@pytest.mark.parametrize("codec", CODECS)
def test_missing_required_field(codec: str) -> None:
    # Pong.nonce is required; an encoder cannot leave it out, so craft the frame
    if codec == "cbor":
        frame = cbor_frame(b"\xa0")
    else:
        pb = envelope_pb2.Envelope()
        pb.ParseFromString(VALID_FRAMES["protobuf"])
        pb.pong.ClearField("nonce")
        pb.pong.SetInParent()
        frame = pb.SerializeToString()
    assert_refused(frame, codec, r"Pong: required field nonce \(1\) missing")


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("length", [0, 32, 37, 39, 64])
def test_bad_source_node_id_length(codec: str, length: int) -> None:
    raw = SRC.to_bytes()[:length] + bytes(max(0, length - 38))
    if codec == "cbor":
        frame = cbor_frame(b"\xa1\x01\x05", source=raw)
    else:
        pb = envelope_pb2.Envelope()
        pb.ParseFromString(VALID_FRAMES["protobuf"])
        pb.source = raw
        frame = pb.SerializeToString()
    assert_refused(frame, codec, rf"not an Ed25519 NodeId: expected 38 bytes .* got {length} bytes")


@pytest.mark.parametrize("codec", CODECS)
def test_bad_node_id_in_body(codec: str) -> None:
    bad = b"\x01" + SRC.to_bytes()[1:]  # right length, wrong multihash prefix
    if codec == "cbor":
        frame = cbor_frame(b"\xa1\x01" + cbor2.dumps(bad), code=Hello.TYPE_CODE)
    else:
        pb = envelope_pb2.Envelope()
        pb.ParseFromString(VALID_FRAMES["protobuf"])
        pb.hello.node_id = bad
        frame = pb.SerializeToString()
    assert_refused(frame, codec, "Hello.node_id: not an Ed25519 NodeId")


@pytest.mark.parametrize("codec", CODECS)
def test_collection_over_max_collection(codec: str) -> None:
    limits = Limits(max_collection=8)
    ok = encode(Envelope(ForceObjectDeleteMessage(tuple("abcdefgh")), SRC, msg_id=1), codec)
    assert decode(ok, codec, limits).body == ForceObjectDeleteMessage(tuple("abcdefgh"))  # type: ignore[arg-type]
    frame = encode(Envelope(ForceObjectDeleteMessage(tuple("abcdefghi")), SRC, msg_id=1), codec)
    assert len(frame) > limits.max_collection  # (protobuf pre-scans only frames larger than the cap)
    reason = "array of 9 items exceeds the cap of 8" if codec == "cbor" else "repeated field 1 .* exceeds the cap of 8"
    assert_refused(frame, codec, reason, limits)


# Repeated string/bytes fields count one element per item. (The protobuf pre-scan once counted the bytes
# below 0x80 inside each item, as for a packed varint run: empty or non-ASCII items were not counted at
# all, and long ASCII strings or NodeIds full of small bytes counted many times over.)


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("item", ["", "\u00e9"], ids=["empty", "non-ascii"])
def test_repeated_strings_over_max_collection(codec: str, item: str) -> None:
    limits = Limits(max_collection=16)
    frame = encode(Envelope(ForceObjectDeleteMessage((item,) * 100), SRC, msg_id=1), codec)
    assert len(frame) > limits.max_collection
    assert_refused(frame, codec, "exceeds the cap of 16", limits)


@pytest.mark.parametrize("codec", CODECS)
def test_repeated_node_ids_under_max_collection(codec: str) -> None:
    """4,000 contributors (a 160 KB Update) are well under the default cap of 65,536 elements."""
    ids = tuple(NodeId.from_public_key(i.to_bytes(32, "little")) for i in range(4000))
    frame = encode(Envelope(Update("job", 1, contributors=ids), SRC, msg_id=1), codec)
    assert decode(frame, codec).body.contributors == ids  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_one_long_string_is_one_element(codec: str) -> None:
    frame = encode(Envelope(ObjectMessage("x", tags=("a" * 70_000,)), SRC, msg_id=1), codec)
    assert decode(frame, codec).body.tags == ("a" * 70_000,)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_packed_repeated_over_max_collection(codec: str) -> None:
    limits = Limits(max_collection=8)
    frame = encode(Envelope(Hello(SRC, versions=tuple(range(1, 10))), SRC, msg_id=1), codec)
    assert_refused(frame, codec, "exceeds the cap of 8", limits)
    ok = encode(Envelope(Hello(SRC, versions=tuple(range(1, 9))), SRC, msg_id=1), codec)
    assert decode(ok, codec, limits).body.versions == tuple(range(1, 9))  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_map_over_max_collection(codec: str) -> None:
    limits = Limits(max_collection=8)
    metrics = {f"m{i}": float(i) for i in range(9)}
    frame = encode(Envelope(RoundResult("job", 1, metrics=metrics), SRC, msg_id=1), codec)
    assert_refused(frame, codec, "exceeds the cap of 8", limits)


@pytest.mark.parametrize("codec", CODECS)
def test_tensor_bytes_do_not_match_shape(codec: str) -> None:
    if codec == "cbor":
        # tag 40 [[2, 3], tag 85 (float32) h'00' * 20]: 6 float32 need 24 bytes
        frame = response_value(b"\xd8\x28\x82\x82\x02\x03\xd8\x55\x54" + bytes(20))
    else:
        pb = envelope_pb2.Envelope()
        pb.ParseFromString(VALID_FRAMES["protobuf"])
        t = pb.response.value.tensor_value
        t.dtype, t.data = "float32", bytes(20)
        t.shape.extend([2, 3])
        frame = pb.SerializeToString()
    assert_refused(frame, codec, r"tensor float32\[2, 3\] needs 24 bytes, got 20")


@pytest.mark.parametrize("codec", CODECS)
def test_tensor_unknown_dtype(codec: str) -> None:
    if codec == "cbor":
        # tag 40 over a big-endian float32 typed array (tag 81): only little-endian tags are accepted
        frame = response_value(b"\xd8\x28\x82\x81\x01\xd8\x51\x44" + bytes(4))
        reason = "typed-array tag 81 not accepted"
    else:
        pb = envelope_pb2.Envelope()
        pb.ParseFromString(VALID_FRAMES["protobuf"])
        t = pb.response.value.tensor_value
        t.dtype, t.data = "complex64", bytes(8)
        t.shape.append(1)
        frame = pb.SerializeToString()
        reason = "unknown tensor dtype 'complex64'"
    assert_refused(frame, codec, reason)


@pytest.mark.parametrize("codec", CODECS)
def test_tensor_over_max_tensor_bytes(codec: str) -> None:
    limits = Limits(max_tensor_bytes=64)
    ok = encode(Envelope(Response(Tensor("float64", (8,), bytes(64))), SRC, msg_id=1), codec)
    assert decode(ok, codec, limits).body.value.shape == (8,)  # type: ignore[arg-type]
    big = Tensor("float64", (9,), bytes(72))
    for body in (Response(big), Response([{"t": big}]), Update("j", 0, weighted_delta=(big,))):
        frame = encode(Envelope(body, SRC, msg_id=1), codec)
        assert_refused(frame, codec, "tensor of 72 bytes exceeds the cap of 64", limits)


@pytest.mark.parametrize("codec", CODECS)
def test_nesting_deeper_than_max_depth(codec: str) -> None:
    # for protobuf a small max_collection makes the codec pre-scan (and depth-check) this small frame
    limits = Limits(max_depth=8, max_collection=16)
    deep: Any = 1
    for _ in range(12):
        deep = [deep]
    frame = encode(Envelope(Response(deep), SRC, msg_id=1), codec)
    assert len(frame) > limits.max_collection
    assert_refused(frame, codec, "nesting deeper than 8", limits)
    shallow = encode(Envelope(Response([[1]]), SRC, msg_id=1), codec)
    assert decode(shallow, codec, limits).body == Response([[1]])  # type: ignore[arg-type]


def test_protobuf_nesting_deeper_than_max_depth_in_small_frame() -> None:
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    frame = encode(Envelope(Response(deep), SRC, msg_id=1), "protobuf")
    assert len(frame) < Limits().max_collection
    assert_refused(frame, "protobuf", "nesting deeper than")


def _nested(levels: int) -> Any:
    deep: Any = 1
    for _ in range(levels):
        deep = [deep]
    return deep


def _accepted_depths(codec: str, limits: Limits, pad: bytes = b"") -> list[int]:
    out = []
    for n in range(limits.max_depth + 4):
        frame = encode(Envelope(Response({"pad": pad, "v": _nested(n)}), SRC, msg_id=1), codec)
        try:
            decode(frame, codec, limits)  # type: ignore[arg-type]
        except DecodeError:
            continue
        out.append(n)
    return out


@pytest.mark.parametrize("codec", ["cbor", "protobuf"])
def test_nesting_cap_does_not_depend_on_frame_size(codec: str) -> None:
    """The same nesting is accepted or refused whether or not the frame also carries 70 KB of padding."""
    limits = Limits()
    assert _accepted_depths(codec, limits, b"x" * 70_000) == _accepted_depths(codec, limits)


@pytest.mark.parametrize("max_depth", [4, 8, 13])
def test_codecs_agree_on_nesting_cap(max_depth: int) -> None:
    limits = Limits(max_depth=max_depth)
    accepted = _accepted_depths("cbor", limits)
    assert accepted == _accepted_depths("protobuf", limits)
    assert accepted and max(accepted) < max_depth


def _route_tree(levels: int) -> Route:
    seg = RouteSegment()
    for _ in range(levels):
        seg = RouteSegment(hops=(Hop(SRC, SRC),), children=(seg,))
    return Route(RouteSchema(SRC, (SRC,)), stops=seg)


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda n: Operation("add", None, (_nested(n),), {}, ()), id="value-in-repeated"),
        pytest.param(lambda n: JobAdvert("j", "p", None, {"h": _nested(n)}), id="value-in-map"),
        pytest.param(lambda n: RouteReply((_route_tree(n),)), id="route-tree"),
    ],
)
def test_codecs_agree_on_nesting_cap_in_every_container(make: Any) -> None:
    limits = Limits(max_depth=10)
    verdicts = {}
    for codec in ("cbor", "protobuf"):
        ok = []
        for n in range(12):
            frame = encode(Envelope(make(n), SRC, msg_id=1), codec)  # type: ignore[arg-type]
            try:
                decode(frame, codec, limits)  # type: ignore[arg-type]
                ok.append(n)
            except DecodeError:
                pass
        verdicts[codec] = ok
    assert verdicts["cbor"] == verdicts["protobuf"]
    assert 0 in verdicts["cbor"] and 11 not in verdicts["cbor"]


# -- CBOR only ---------------------------------------------------------------------------------


def test_cbor_unknown_type_code() -> None:
    assert_refused(cbor_frame(b"\xa1\x01\x05", code=2000), "cbor", "unknown message type code 2000")


@pytest.mark.parametrize("code", [0, 15, 2047, 2**32])
def test_cbor_unregistered_type_codes(code: int) -> None:
    assert_refused(cbor_frame(b"\xa0", code=code), "cbor", f"unknown message type code {code}")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"type": None}, "missing or bad type code"),
        ({"type": "18"}, "missing or bad type code"),
        ({"version": None}, "missing or bad protocol version"),
        ({"msg_id": None}, "missing or bad message id"),
        ({"msg_id": -1}, "missing or bad message id"),
        ({"source": None}, "missing or bad source"),
        ({"source": "text"}, "missing or bad source"),
        ({"destination": 5}, "bad destination"),
        ({"reply_to": -1}, "bad reply_to"),
        ({"ttl": None}, "missing or bad ttl"),
        ({"ttl": 2**32}, "missing or bad ttl"),
        ({"route": 7}, "Route: expected a map"),
    ],
    ids=lambda x: repr(x) if isinstance(x, dict) else None,
)
def test_cbor_bad_header(header: dict[str, Any], reason: str) -> None:
    assert_refused(cbor_frame(b"\xa1\x01\x05", **header), "cbor", reason)


def test_cbor_missing_body() -> None:
    frame = VALID_FRAMES["cbor"]
    no_body = b"\xa5" + frame[1 : -len(b"\x09\xa1\x01\x05")]
    assert_refused(no_body, "cbor", "missing body")


@pytest.mark.parametrize("top", [b"\x80", b"\x01", b"\x40", b"\xf6", b"\xc1\x00"], ids=lambda b: b.hex())
def test_cbor_frame_not_a_map(top: bytes) -> None:
    assert_refused(top, "cbor", "frame is not a CBOR map|tag 1 not accepted")


@pytest.mark.parametrize("extra", [b"\x00", b"\xa0", VALID_FRAMES["cbor"]], ids=["int", "map", "frame"])
def test_cbor_trailing_bytes(extra: bytes) -> None:
    assert_refused(VALID_FRAMES["cbor"] + extra, "cbor", f"{len(extra)} trailing bytes")


@pytest.mark.parametrize(
    "raw",
    [
        b"\x9f\x01\xff",  # indefinite array
        b"\xbf\x61a\x01\xff",  # indefinite map
        b"\x5f\x41a\xff",  # indefinite byte string
        b"\x7f\x61a\xff",  # indefinite text string
    ],
    ids=["array", "map", "bytes", "text"],
)
def test_cbor_indefinite_lengths(raw: bytes) -> None:
    assert_refused(response_value(raw), "cbor", "indefinite-length items are not accepted")


def test_cbor_indefinite_top_level_map() -> None:
    frame = VALID_FRAMES["cbor"]
    assert_refused(b"\xbf" + frame[1:] + b"\xff", "cbor", "indefinite-length")


@pytest.mark.parametrize(
    ("raw", "tag"),
    [
        (b"\xc0\x74" + b"2024-01-01T00:00:00Z", 0),  # datetime string
        (b"\xc1\x1a\x65\x92\x00\x80", 1),  # epoch datetime
        (b"\xc2\x41\x01", 2),  # bignum
        (b"\xc3\x41\x01", 3),  # negative bignum
        (b"\xc4\x82\x21\x19\x6a\xb3", 4),  # decimal fraction
        (b"\xd8\x1c\x80", 28),  # shareable
        (b"\xd8\x1d\x00", 29),  # shared reference
        (b"\xd8\x20\x63a.b", 32),  # URI
        (b"\xd8\x23\x62a+", 35),  # regex
        (b"\xd8\x25\x50" + bytes(16), 37),  # UUID
        (b"\xd9\x01\x02\x80", 258),  # set
        (b"\xd9\xd9\xf7\x01", 55799),  # self-describe
        (b"\xd8\x51\x44" + bytes(4), 81),  # big-endian float32 typed array
        (b"\xdb" + (2**40).to_bytes(8, "big") + b"\x00", 2**40),
    ],
    ids=lambda x: str(x) if isinstance(x, int) else None,
)
def test_cbor_forbidden_tags(raw: bytes, tag: int) -> None:
    assert_refused(response_value(raw), "cbor", f"CBOR tag {tag} not accepted")


def test_cbor_forbidden_tag_around_whole_frame() -> None:
    assert_refused(b"\xd9\xd9\xf7" + VALID_FRAMES["cbor"], "cbor", "CBOR tag 55799 not accepted")


@pytest.mark.parametrize(
    "body",
    [b"\xa2\x01\x05\x01\x06", b"\xa2\x01\x05\x01\x05"],
    ids=["different-values", "same-values"],
)
def test_cbor_duplicate_map_key_in_body(body: bytes) -> None:
    assert_refused(cbor_frame(body), "cbor", "duplicate map key 1")


def test_cbor_duplicate_map_key_in_envelope() -> None:
    frame = VALID_FRAMES["cbor"]
    # one more entry: a second version key, placed first
    assert_refused(b"\xa7\x01\x01" + frame[1:], "cbor", "duplicate map key 1")


def test_cbor_duplicate_text_key_in_value() -> None:
    assert_refused(response_value(b"\xa2\x61k\x01\x61k\x02"), "cbor", "duplicate map key 'k'")


@pytest.mark.parametrize("raw", [b"\xff\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"a\x80"], ids=lambda b: b.hex())
def test_cbor_non_utf8_text(raw: bytes) -> None:
    bad = bytes([0x60 | len(raw)]) + raw
    assert_refused(cbor_frame(b"\xa1\x02" + bad, code=Close.TYPE_CODE), "cbor", "text string is not valid UTF-8")
    assert_refused(response_value(bad), "cbor", "not valid UTF-8")
    assert_refused(response_value(b"\xa1" + bad + b"\x01"), "cbor", "not valid UTF-8")


def test_cbor_nesting_limit_boundary() -> None:
    limits = Limits(max_depth=8)
    results = []
    for n in range(12):
        try:
            decode(response_value(b"\x81" * n + b"\x01"), "cbor", limits)
        except DecodeError as exc:
            results.append(str(exc))
        else:
            results.append("ok")
    # envelope map (depth 0) and body map (1) leave max_depth - 2 levels for the value
    assert results == ["ok"] * 7 + ["nesting deeper than 8"] * 5


@pytest.mark.parametrize("n", [33, 10_000, 200_000])
def test_cbor_very_deep_nesting_default_limits(n: int) -> None:
    assert_refused(response_value(b"\x81" * n + b"\x01"), "cbor", "nesting deeper than 32")
    assert_refused(b"\x81" * n + b"\x01", "cbor", "nesting deeper than 32")


def test_cbor_deep_nesting_through_maps_and_tags() -> None:
    raw = b"\xa1\x61k\xd8\x27" * 5 + b"\x61x"  # map -> tag 39 wrapping a map: refused (tag 39 holds text)
    assert_refused(response_value(raw), "cbor", "tag 39")
    assert_refused(response_value(b"\xa1\x61k" * 40 + b"\x01"), "cbor", "nesting deeper than 32")


def test_cbor_route_tree_deeper_than_limit() -> None:
    # RouteSegment children nest maps inside arrays: {2: [{2: [...]}]}
    seg = b"\xa0"
    for _ in range(20):
        seg = b"\xa1\x02\x81" + seg
    route = b"\xa2\x01\xa1\x01" + cbor2.dumps(SRC.to_bytes()) + b"\x02" + seg
    frame = cbor_frame(b"\xa1\x01\x05")
    frame = b"\xa7" + frame[1:-4] + b"\x06" + route + frame[-4:]
    assert_refused(frame, "cbor", "nesting deeper than 16", Limits(max_depth=16))


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\x9b" + (2**40).to_bytes(8, "big"), "array of 1099511627776 items exceeds the cap"),
        (b"\xbb" + (2**40).to_bytes(8, "big"), "map of 1099511627776 entries exceeds the cap"),
        (b"\x5b" + (2**40).to_bytes(8, "big"), "string of 1099511627776 bytes overruns the frame"),
        (b"\x7b" + (2**64 - 1).to_bytes(8, "big"), "overruns the frame"),
        (b"\x99\x10\x00", "array of 4096 items overruns the frame"),  # under the cap, over the bytes left
        (b"\xb9\x10\x00", "map of 4096 entries overruns the frame"),
        (b"\x5a\x00\x01\x00\x00", "string of 65536 bytes overruns"),
        (b"\xd8\x55\x5b" + (2**40).to_bytes(8, "big"), "tensor of 1099511627776 bytes exceeds the cap"),
        (b"\xd8\x28\x82\x81\x01\xd8\x55\x5a\x00\x10\x00\x00", "typed array of 1048576 bytes overruns"),
    ],
    ids=["array", "map", "bytes", "text", "array-overrun", "map-overrun", "bytes-overrun", "tensor", "tensor-overrun"],
)
def test_cbor_huge_declared_lengths(raw: bytes, reason: str) -> None:
    assert_refused(response_value(raw), "cbor", reason)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xf7", "simple value 23 not accepted"),  # undefined
        (b"\xf0", "simple value 16 not accepted"),
        (b"\xf8\x20", "simple value 24 not accepted"),
        (b"\x1c", "reserved additional information 28"),
        (b"\x3e", "reserved additional information 30"),
        (b"\x1b\x00", "truncated frame"),
        (b"\xfb\x00", "truncated frame"),
        (b"\xa1\x01\x01", "map key of type int|value map keys must be text"),
        (b"\xa1\x81\x01\x01", "map key of type list not accepted"),
        (b"\xa1\x41k\x01", "map key of type bytes not accepted"),
        (b"\xd8\x27\x01", "object reference \\(tag 39\\) must hold text"),
        (b"\xd8\x28\x83\x80\x80\x80", "tag 40 must hold a two-element array"),
        (b"\xd8\x28\x82\x01\x01", "tensor shape must be an array"),
        (b"\xd8\x28\x82\x81\x20\xd8\x40\x40", "tensor dimensions must be unsigned integers"),
        (b"\xd8\x28\x82\x98\x21" + b"\x00" * 33 + b"\xd8\x40\x40", "tensor with 33 dimensions"),
        (b"\xd8\x28\x82\x80\x40", "tensor data must be a typed array"),
        (b"\xd8\x55\x01", "typed array \\(tag 85\\) must hold a byte string"),
        (b"\xd8\x55\x43\x00\x00\x00", "not a multiple of its item size"),
        (b"\x3b\x80\x00\x00\x00\x00\x00\x00\x00", "integer value outside int64"),
        (b"\x1b\xff\xff\xff\xff\xff\xff\xff\xff", "integer value outside int64"),
    ],
    ids=lambda x: x.hex() if isinstance(x, bytes) else None,
)
def test_cbor_other_malformed_items(raw: bytes, reason: str) -> None:
    assert_refused(response_value(raw), "cbor", reason)


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"\xa1\x01\x61x", "Pong.nonce: expected uint64, got str"),
        (b"\xa1\x01\x20", "Pong.nonce: expected uint64, got int"),
        (b"\xa1\x01\xf5", "Pong.nonce: expected uint64, got bool"),
        (b"\xa1\x01\xf9\x3c\x00", "Pong.nonce: expected uint64, got float"),
        (b"\x80", "Pong: expected a map, got list"),
    ],
    ids=["str", "negative", "bool", "float", "array"],
)
def test_cbor_wrong_field_types(body: bytes, reason: str) -> None:
    assert_refused(cbor_frame(body), "cbor", reason)


def test_cbor_struct_invariant_violation() -> None:
    # Manifest with 2 chunks but no chunk hashes: refused by Manifest.__post_init__
    body = cbor2.dumps({1: 10, 2: 5})
    assert_refused(cbor_frame(body, code=64), "cbor", "Manifest: 2 chunks need 64 hash bytes")
    # IndexRange with stop < start, inside a ChunkRequest
    body = cbor2.dumps({1: b"p", 2: [{1: 5, 2: 4}]})
    assert_refused(cbor_frame(body, code=67), "cbor", "IndexRange stop < start")


def test_cbor_unknown_body_fields_are_ignored() -> None:
    """Forward compatibility: unknown field numbers are skipped (but still checked for well-formedness)."""
    assert decode(cbor_frame(b"\xa2\x01\x05\x18\x63\x61x"), "cbor") == VALID
    assert_refused(cbor_frame(b"\xa2\x01\x05\x18\x63\xc1\x00"), "cbor", "CBOR tag 1 not accepted")


# -- protobuf only -----------------------------------------------------------------------------


def _pb(**changes: Any) -> Any:
    pb = envelope_pb2.Envelope()
    pb.ParseFromString(VALID_FRAMES["protobuf"])
    for name, v in changes.items():
        if v is None:
            pb.ClearField(name)
        else:
            setattr(pb, name, v)
    return pb


def test_protobuf_unknown_type_code() -> None:
    # field 2000 (wire type 2) holding an empty message: an unknown field, so no known body is set
    pb = _pb()
    pb.ClearField("pong")
    frame = pb.SerializeToString() + b"\x82\x7d\x00"
    assert_refused(frame, "protobuf", "missing body")


@pytest.mark.parametrize("name", ["msg_id", "source", "ttl"])
def test_protobuf_missing_header_field(name: str) -> None:
    assert_refused(_pb(**{name: None}).SerializeToString(), "protobuf", f"missing {name}")


def test_protobuf_missing_version() -> None:
    assert_refused(_pb(version=None).SerializeToString(), "protobuf", "missing or bad protocol version")


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        (b"\xff", "truncated varint"),  # a field key with no end
        (b"\x0e", "wire type 6 not accepted"),
        (b"\x0f", "wire type 7 not accepted"),
        (b"\x22\x05ab", "field 4 of 5 bytes overruns its message"),  # bytes field longer than what is left
        (b"\x22" + b"\x80" * 10 + b"\x01", "varint too long"),  # 11-byte varint
        (b"\x22\x80\x80\x80\x80\x80\x20", "field 4 of 1099511627776 bytes overruns"),  # length 2**40
        (b"\xa2\x01\xff\xff\x03", "field 20 of 65535 bytes overruns"),  # a body longer than the frame
    ],
    ids=["open-key", "wt6", "wt7", "overrun", "long-varint", "huge-length", "body-overrun"],
)
def test_protobuf_malformed_tail(extra: bytes, reason: str) -> None:
    frame = VALID_FRAMES["protobuf"] + extra
    # parsed directly (frame smaller than max_collection bytes): protobuf's own error
    assert_refused(frame, "protobuf", "protobuf: Error parsing message .*Wire format was corrupt")
    # pre-scanned (frame larger than max_collection bytes): the pre-scan names the fault
    assert_refused(frame, "protobuf", reason, Limits(max_collection=8))


def test_protobuf_non_utf8_string() -> None:
    frame = encode(Envelope(Close(reason="ab"), SRC, msg_id=1), "protobuf")
    assert frame.count(b"ab") == 1
    assert_refused(frame.replace(b"ab", b"\xff\xfe"), "protobuf", "UTF-8")


def test_protobuf_frame_is_not_a_protobuf() -> None:
    assert_refused(VALID_FRAMES["cbor"], "protobuf", "protobuf: Error parsing message")


def test_protobuf_struct_invariant_violation() -> None:
    pb = _pb()
    pb.manifest.size = 10
    pb.manifest.chunk_size = 0
    assert_refused(pb.SerializeToString(), "protobuf", "Manifest: chunk_size must be positive")
