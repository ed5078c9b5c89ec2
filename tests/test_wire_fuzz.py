"""Mutation fuzzing of both decoders: whatever the bytes, ``decode`` returns an Envelope or raises DecodeError.

The corpus starts from valid frames of every message type (generated once,
deterministically, from the schema strategies) and applies seeded random
mutations: bit flips, byte edits, inserts, deletes, truncation, splicing two
frames, random bytes, and hostile fragments (huge declared lengths, deep
nesting, indefinite lengths, forbidden tags, bad wire types). A seeded
``random.Random`` (not hypothesis) keeps 20,000+ frames per codec fast and
every failure reproducible from the printed seed and index.

Memory is checked with ``tracemalloc`` for every frame: decoding must allocate
in proportion to the bytes actually present, never to a length the frame
merely *declares*.
"""

from __future__ import annotations

import contextlib
import random
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, given, settings

from edgeagent.exceptions import DecodeError, EncodeError
from edgeagent.wire import (
    CODECS,
    REGISTRY,
    Chunk,
    Envelope,
    Hello,
    Limits,
    NodeId,
    ObjectRef,
    Response,
    Tensor,
    decode,
    encode,
)
from tests.strategies import envelope_strategy, struct_strategy

N_FRAMES = 20_000
SEED = 20240917
SRC = NodeId.from_public_key(bytes(range(32)))
#: the limits every fuzz frame is decoded with: small enough that the caps are hit often
LIMITS = Limits(max_frame=256 * 1024, max_depth=32, max_collection=4096, max_tensor_bytes=64 * 1024)
KiB = 1024
MiB = 1024 * KiB


# -- the seed corpus ---------------------------------------------------------------------------


@cache
def seed_envelopes() -> tuple[Envelope, ...]:
    """A few valid envelopes of every message type (deterministic), plus hand-made edge cases."""
    out: list[Envelope] = []
    for code in sorted(REGISTRY):

        @settings(
            max_examples=8,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(env=envelope_strategy(body=struct_strategy(REGISTRY[code])))
        def collect(env: Envelope) -> None:
            out.append(env)

        collect()
    deep: Any = [1.5, "x"]
    for _ in range(20):
        deep = [deep, {"k": ObjectRef("r")}]
    out += [
        Envelope(Chunk(b"p" * 32, 3, bytes(range(256)) * 80), SRC, msg_id=1),  # 20 KiB: spliced data
        Envelope(Response(Tensor("float32", (4, 8), bytes(128))), SRC, msg_id=2),
        Envelope(Response(Tensor("uint16", (3, 0, 2), b"")), SRC, msg_id=3),
        Envelope(Response(deep), SRC, msg_id=4),
        Envelope(Response({"a": [None, True, -(2**63), 2**63 - 1, b"\0" * 40, 1e300]}), SRC, msg_id=5),
        Envelope(Hello(SRC, versions=tuple(range(300))), SRC, msg_id=6),
    ]
    return tuple(out)


@cache
def seed_frames(codec: str) -> tuple[bytes, ...]:
    return tuple(encode(env, codec) for env in seed_envelopes())  # type: ignore[arg-type]


# -- hostile fragments -------------------------------------------------------------------------


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _pb_len(field: int, payload: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(payload)) + payload


def pb_deep_value(levels: int) -> bytes:
    """Response{value: Value{list_value: {items: [Value{list_value: ...}]}}} nested ``levels`` deep."""
    v = b""
    for _ in range(levels):
        v = _pb_len(9, _pb_len(1, v))  # Value.list_value = ValueList{items = [v]}
    return _pb_len(1, v)  # Response.value


def pb_frame(body_field: int, body: bytes) -> bytes:
    head = b"\x08\x01\x19" + bytes(8) + _pb_len(4, SRC.to_bytes()) + b"\x40\x10"
    return head + _pb_len(body_field, body)


BIG = 2**40

CBOR_HOSTILE: tuple[bytes, ...] = (
    b"\x9b" + BIG.to_bytes(8, "big"),  # array of 2**40 items
    b"\xbb" + BIG.to_bytes(8, "big"),  # map of 2**40 entries
    b"\x5b" + BIG.to_bytes(8, "big"),  # byte string of 2**40 bytes
    b"\x7b" + BIG.to_bytes(8, "big"),  # text string of 2**40 bytes
    b"\x9b" + (2**64 - 1).to_bytes(8, "big"),
    b"\x5a\xff\xff\xff\xff",
    b"\x99\xff\xff",  # array of 65535 (over the cap of 4096)
    b"\x99\x10\x00",  # array of exactly the cap
    b"\xdb" + BIG.to_bytes(8, "big"),  # tag 2**40
    b"\x81" * 10_000,  # deep nesting
    b"\xa1\x00" * 5_000,
    b"\xd8\x27" * 1_000,  # tag 39 over tag 39 ...
    b"\x9f" * 100,  # indefinite arrays
    b"\xbf",
    b"\xff",
    b"\xf7",  # undefined
    b"\xfb\x7f\xf8\x00\x00\x00\x00\x00\x01",  # a NaN
    b"\xc1\x00",
    b"\xd8\x23\x61a",
    b"\xd8\x28\x82\x98\x20" + b"\x1b" + BIG.to_bytes(8, "big") * 1,  # tensor of 32 dims (truncated)
    b"\xd8\x28\x82\x82\x1b" + BIG.to_bytes(8, "big") + b"\x1b" + BIG.to_bytes(8, "big") + b"\xd8\x55\x40",
    b"\xd8\x28\x82\x81\x1b" + (2**62).to_bytes(8, "big") + b"\xd8\x56\x5b" + BIG.to_bytes(8, "big"),
    b"\xd8\x55\x5b" + BIG.to_bytes(8, "big"),  # typed array of 2**40 bytes
    b"\xd8\x40\x5a\x7f\xff\xff\xff",
)

PB_HOSTILE: tuple[bytes, ...] = (
    varint(4 << 3 | 2) + varint(BIG),  # bytes field declaring 2**40 bytes
    varint(20 << 3 | 2) + varint(BIG),  # body message declaring 2**40 bytes
    varint(2000 << 3 | 2) + varint(BIG),  # unknown field declaring 2**40 bytes
    varint(20 << 3 | 2) + varint(2**63),
    b"\x22" + b"\xff" * 10 + b"\x01",  # overlong varint length
    b"\x08" + b"\xff" * 12,  # overlong varint value
    b"\x0e",  # wire type 6
    b"\x0f",  # wire type 7
    b"\x0b" * 5_000,  # deeply nested (unknown) groups
    b"\x0c",  # end group without start
    pb_frame(20, pb_deep_value(150)),
    pb_frame(20, pb_deep_value(5_000)),
    pb_frame(16, _pb_len(2, b"\x01" * 10_000)),  # Hello.versions: 10,000 packed varints (> cap)
    pb_frame(16, b"\x10\x01" * 5_000),  # Hello.versions: 5,000 unpacked varints (> cap)
    pb_frame(37, b"\x0a\x00" * 5_000),  # ForceObjectDeleteMessage.obj_ids: 5,000 empty strings (> cap)
    pb_frame(20, _pb_len(1, _pb_len(7, b"\x12" + varint(10) + b"\x80\x80\x80\x80\x80\x80\x80\x80\x80\x01"))),
    pb_frame(20, _pb_len(1, _pb_len(7, b"\x0a\x07float32\x12\x02\xff\x7f\x1a\x00"))),  # tensor 16383 x 0
)


# -- mutations ---------------------------------------------------------------------------------

INTERESTING = bytes([0x00, 0x01, 0x17, 0x18, 0x1B, 0x1F, 0x3F, 0x5F, 0x7F, 0x80, 0x9F, 0xBF, 0xC0, 0xD8, 0xF7, 0xFF])


def _bit_flips(rng: random.Random, f: bytearray) -> None:
    for _ in range(rng.randint(1, 8)):
        if f:
            i = rng.randrange(len(f))
            f[i] ^= 1 << rng.randrange(8)


def _byte_set(rng: random.Random, f: bytearray) -> None:
    for _ in range(rng.randint(1, 4)):
        if f:
            f[rng.randrange(len(f))] = rng.choice(INTERESTING) if rng.random() < 0.5 else rng.randrange(256)


def _insert(rng: random.Random, f: bytearray) -> None:
    i = rng.randint(0, len(f))
    f[i:i] = rng.randbytes(rng.randint(1, 16))


def _delete(rng: random.Random, f: bytearray) -> None:
    if f:
        i = rng.randrange(len(f))
        del f[i : i + rng.randint(1, 16)]


def _truncate(rng: random.Random, f: bytearray) -> None:
    del f[rng.randint(0, len(f)) :]


def _duplicate(rng: random.Random, f: bytearray) -> None:
    if f:
        i = rng.randrange(len(f))
        j = min(len(f), i + rng.randint(1, 32))
        k = rng.randint(0, len(f))
        f[k:k] = f[i:j]


def _splice(rng: random.Random, f: bytearray, seeds: tuple[bytes, ...]) -> None:
    other = rng.choice(seeds)
    i = rng.randint(0, len(f))
    j = rng.randint(0, len(other))
    f[i:] = other[j:]


def _hostile(rng: random.Random, f: bytearray, fragments: tuple[bytes, ...]) -> None:
    frag = rng.choice(fragments)
    i = rng.randint(0, len(f))
    if rng.random() < 0.5:
        f[i:i] = frag  # insert
    else:
        f[i : i + len(frag)] = frag  # overwrite


def mutate(rng: random.Random, frame: bytes, codec: str, seeds: tuple[bytes, ...]) -> bytes:
    r = rng.random()
    if r < 0.03:
        return rng.randbytes(rng.randint(0, 300))  # pure noise
    if r < 0.05:
        return rng.choice(CBOR_HOSTILE if codec == "cbor" else PB_HOSTILE)  # a fragment on its own
    fragments = CBOR_HOSTILE if codec == "cbor" else PB_HOSTILE
    ops: list[Callable[[random.Random, bytearray], None]] = [
        _bit_flips,
        _byte_set,
        _insert,
        _delete,
        _truncate,
        _duplicate,
        lambda g, b: _splice(g, b, seeds),
        lambda g, b: _hostile(g, b, fragments),
    ]
    f = bytearray(frame)
    for _ in range(1 if rng.random() < 0.6 else rng.randint(2, 4)):
        rng.choice(ops)(rng, f)
    return bytes(f)


# -- the checks --------------------------------------------------------------------------------


def allocation_bound(frame: bytes) -> int:
    """The most memory decoding ``frame`` may allocate (Python allocations traced by tracemalloc).

    Decoding may copy the frame (bytes of a bytearray, string and byte-string values, tensor data) and
    builds a few small Python objects per *item present* in the frame; every item takes at least one
    byte of the frame, and the worst items (an empty map ``a0`` or an empty protobuf sub-message)
    cost a few hundred bytes of dicts, list slots and message wrappers in the plain tree and again in
    the converted one. So the bound is linear in the bytes actually present: 64 KiB of fixed overhead
    (first-use caches, the exception and its traceback) plus 512 bytes per frame byte. A decoder that
    trusted a *declared* length (2**40 in the hostile fragments) would overshoot it by orders of
    magnitude. (protobuf's C parser allocates its arena with malloc, which tracemalloc does not see;
    the hostile-frame test below therefore also checks the process's peak RSS.)
    """
    return 64 * KiB + 512 * len(frame)


def decode_peak(frame: bytes, codec: str, limits: Limits) -> int:
    """Peak traced allocation while decoding ``frame`` (tracemalloc must be tracing)."""
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    with contextlib.suppress(DecodeError):
        decode(frame, codec, limits)  # type: ignore[arg-type]
    return tracemalloc.get_traced_memory()[1] - before


def check_frame(frame: bytes, codec: str, limits: Limits, stats: Counter[str], failures: list[str], label: str) -> None:
    tracemalloc.reset_peak()
    before = tracemalloc.get_traced_memory()[0]
    try:
        env = decode(frame, codec, limits)  # type: ignore[arg-type]
    except DecodeError as exc:
        stats["rejected"] += 1
        reason = str(exc)
        if reason.startswith("malformed frame ("):
            stats["catch-all: " + reason.split(":", 1)[0]] += 1
        env = None
    except BaseException as exc:  # anything but DecodeError escaping is the failure this test looks for
        failures.append(f"{label}: {type(exc).__name__}: {exc!s:.200} frame={frame.hex()[:400]}")
        return
    peak = tracemalloc.get_traced_memory()[1] - before
    if peak > allocation_bound(frame):
        # Once in a while an interpreter-wide table grows during the decode (e.g. the interned-string
        # dict: ~150 KB at once); that is not the decoder's doing and does not recur. An allocation
        # that follows a declared length recurs on every decode of the frame, so measure again.
        peak = decode_peak(frame, codec, limits)
        if peak > allocation_bound(frame):
            failures.append(f"{label}: decoding {len(frame)} bytes allocated {peak} bytes; frame={frame.hex()[:400]}")
    stats["max_peak"] = max(stats["max_peak"], peak)
    if env is None:
        return
    stats["accepted"] += 1
    if type(env) is not Envelope:
        failures.append(f"{label}: decode returned {type(env).__name__}")
        return
    # whatever the decoder accepts, both encoders can carry, and the result is stable
    for c in CODECS:
        try:
            again = encode(env, c)
            assert encode(decode(again, c), c) == again
        except (EncodeError, DecodeError, AssertionError) as exc:
            failures.append(f"{label}: accepted frame does not re-encode in {c}: {exc!r}; frame={frame[:64].hex()}")


@pytest.mark.parametrize("codec", CODECS)
def test_seed_frames_decode(codec: str) -> None:
    seeds = seed_frames(codec)
    assert len(seeds) >= 8 * len(REGISTRY)
    assert {decode(f, codec, LIMITS).type for f in seeds} == set(REGISTRY)  # type: ignore[arg-type]


@pytest.mark.parametrize("codec", CODECS)
def test_fuzz_decode_raises_only_decode_error(codec: str) -> None:
    seeds = seed_frames(codec)
    rng = random.Random(f"{SEED}-{codec}")
    stats: Counter[str] = Counter()
    failures: list[str] = []
    started = time.perf_counter()
    tracemalloc.start()
    try:
        for i in range(N_FRAMES):
            frame = mutate(rng, rng.choice(seeds), codec, seeds)
            check_frame(frame, codec, LIMITS, stats, failures, f"{codec} seed={SEED} #{i}")
            if len(failures) >= 20:
                break
    finally:
        tracemalloc.stop()
    elapsed = time.perf_counter() - started
    print(f"\n{codec}: {N_FRAMES} frames in {elapsed:.1f}s: {dict(stats)}")
    assert not failures, "\n".join(failures)
    assert stats["rejected"] + stats["accepted"] == N_FRAMES
    # the corpus exercises both outcomes: mutations that stay valid and ones that do not
    assert stats["accepted"] > N_FRAMES // 50
    assert stats["rejected"] > N_FRAMES // 2


@pytest.mark.parametrize("codec", CODECS)
def test_fuzz_no_internal_errors_behind_decode_error(codec: str) -> None:
    """Every refusal comes from a check, not from the catch-all that wraps an unexpected exception."""
    seeds = seed_frames(codec)
    rng = random.Random(f"{SEED}-{codec}-reasons")
    leaks: Counter[str] = Counter()
    for _ in range(5_000):
        try:
            decode(mutate(rng, rng.choice(seeds), codec, seeds), codec, LIMITS)  # type: ignore[arg-type]
        except DecodeError as exc:
            if str(exc).startswith("malformed frame ("):
                leaks[str(exc)[:120]] += 1
    assert not leaks, leaks.most_common(10)


def _hostile_frames(codec: str) -> list[bytes]:
    seed = seed_frames(codec)[0]
    if codec == "cbor":
        wrap = [
            lambda frag: frag,
            lambda frag: seed[:-1] + frag,  # in place of the body's last item
            lambda frag: b"\xa1\x01" + frag,
            lambda frag: b"\x82" + frag + frag,
        ]
        return [w(frag) for frag in CBOR_HOSTILE for w in wrap]
    wrap = [
        lambda frag: frag,
        lambda frag: seed + frag,
        lambda frag: frag + seed,
    ]
    return [w(frag) for frag in PB_HOSTILE for w in wrap]


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize(
    "limits",
    [Limits(), LIMITS, Limits(max_collection=16, max_depth=8)],
    ids=["default", "fuzz", "tight"],
)
def test_hostile_frames_allocate_little(codec: str, limits: Limits) -> None:
    """Frames that declare huge lengths or nest deeply are refused cheaply: < 1 MiB each, never 2**40 bytes."""
    stats: Counter[str] = Counter()
    failures: list[str] = []
    frames = _hostile_frames(codec)
    tracemalloc.start()
    try:
        for i, frame in enumerate(frames):
            check_frame(frame, codec, limits, stats, failures, f"hostile #{i}")
            peak = min(decode_peak(frame, codec, limits) for _ in range(2))
            if peak >= MiB:
                failures.append(f"hostile #{i}: {peak} bytes allocated for a {len(frame)}-byte frame")
    finally:
        tracemalloc.stop()
    assert not failures, "\n".join(failures)
    # a few fragments are legal where they land (e.g. 10,000 packed versions under the default cap)
    assert stats["rejected"] > len(frames) * 3 // 4


@pytest.mark.parametrize("codec", CODECS)
def test_hostile_frames_do_not_grow_the_process(codec: str) -> None:
    """The same frames, measured as the process sees it (includes the protobuf C parser's own mallocs)."""
    resource = pytest.importorskip("resource")
    frames = _hostile_frames(codec) * 3
    for frame in frames:  # warm up: first-use allocations
        with contextlib.suppress(DecodeError):
            decode(frame, codec)  # type: ignore[arg-type]
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    for frame in frames:
        with contextlib.suppress(DecodeError):
            decode(frame, codec)  # type: ignore[arg-type]
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before  # KiB on Linux
    assert grown_kib < 64 * 1024, f"peak RSS grew by {grown_kib} KiB"


@pytest.mark.parametrize("codec", CODECS)
def test_bytearray_and_memoryview_fuzz(codec: str) -> None:
    """The decoders accept any buffer type and behave the same on each."""
    seeds = seed_frames(codec)
    rng = random.Random(f"{SEED}-{codec}-buffers")
    for _ in range(2_000):
        frame = mutate(rng, rng.choice(seeds), codec, seeds)
        outcomes = []
        for buf in (frame, bytearray(frame), memoryview(frame)):
            try:
                # compare re-encodings, not Envelopes: a decoded NaN is not equal to itself
                outcomes.append(("ok", encode(decode(buf, codec, LIMITS), codec)))  # type: ignore[arg-type]
            except DecodeError as exc:
                outcomes.append(("refused", str(exc)))
        assert outcomes[0] == outcomes[1] == outcomes[2], frame.hex()
