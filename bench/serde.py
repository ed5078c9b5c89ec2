#!/usr/bin/env python3
"""Serialisation benchmark: the ``edgeagent.wire`` codecs against the bare library calls.

For each codec (CBOR, protobuf) and each case it times one encode+decode round
trip of *our* codec (``decode(encode(env, codec), codec)``) and of the *bare*
library on the same data, in the same run:

* bare CBOR:     ``cbor2.loads(cbor2.dumps(plain))`` where ``plain`` is the plain
  dict of the envelope's CBOR form ({1: version, 2: type, 3: msg_id, 4: source,
  5: destination, 8: ttl, 9: body}); a tensor is ``CBORTag(40, [shape,
  CBORTag(85, data)])``;
* bare protobuf: fill a fresh ``envelope_pb2.Envelope`` with the same fields,
  ``SerializeToString``, ``ParseFromString`` into a fresh Envelope and read every
  field back (including ``WhichOneof("body")``, which any receiver needs).

The script checks first that both sides round-trip correctly and reports
whether our frame is byte-identical to the bare one (so "same data" is shown,
not assumed).

Cases: a small Ping envelope with source and destination (messages/s); a Chunk
envelope carrying 256 KiB; a Response envelope carrying a 4 MiB float32 tensor
(MB/s).

Method (the machine is shared and noisy): ours and bare are measured
alternately (the order flips every round), every measurement is bounded by an
iteration count and by a time budget, each is repeated ``--rounds`` times and
the medians are reported. The cost ratio is the median over rounds of
(our time / bare time) for the pair measured back to back. The garbage
collector is disabled while a batch runs (as ``timeit`` does).

Units: MB = 1e6 bytes, GB = 1e9 bytes. Throughput = payload bytes (chunk data or
tensor data) / time of one encode+decode round trip.

Targets: our codec costs <= 1.5x the bare library; a chunk message >= 1 GB/s
(1000 MB/s) encode+decode.

Usage::

    .venv/bin/python bench/serde.py            # full run (~30 s)
    .venv/bin/python bench/serde.py --quick    # smoke run (~2 s)
    .venv/bin/python bench/serde.py --json     # one JSON object on stdout
"""

from __future__ import annotations

import argparse
import gc
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final

import cbor2
import google.protobuf
from cbor2 import CBORTag
from google.protobuf.internal import api_implementation

import edgeagent
from edgeagent.v1 import envelope_pb2
from edgeagent.wire import Chunk, Codec, Envelope, NodeId, Ping, Response, Tensor, decode, encode

MB: Final = 1_000_000  # bytes
GB: Final = 1_000_000_000  # bytes
KiB: Final = 1024
MiB: Final = 1024 * 1024

COST_TARGET: Final = 1.5  # our time / bare time
CHUNK_TARGET_MBPS: Final = GB / MB  # 1 GB/s, printed in MB/s

CHUNK_BYTES: Final = 256 * KiB
TENSOR_BYTES: Final = 4 * MiB
MSG_ID: Final = 0xF00D_CAFE_1234_5678  # fixed, so frame sizes do not vary between runs

FULL_ROUNDS: Final = 7
FULL_BUDGET_S: Final = 0.3
QUICK_ROUNDS: Final = 3
QUICK_BUDGET_S: Final = 0.02

SMALL_BATCH: Final = 64  # calls between clock reads for small messages
SMALL_MAX_ITERS: Final = 2_000_000
BULK_MAX_ITERS: Final = 10_000

_PbEnvelope: Any = envelope_pb2.Envelope


@dataclass
class Side:
    """Per-round seconds per encode+decode round trip of one implementation."""

    per_round_s: list[float] = field(default_factory=list)
    iters: list[int] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.per_round_s)


@dataclass
class Case:
    """One message shape in one codec, with our round trip and the bare one."""

    key: str  # "ping", "chunk" or "tensor"
    name: str
    kind: str  # "small" or "bulk"
    codec: Codec
    ours: Callable[[], object]
    bare: Callable[[], object]
    payload_bytes: int  # bytes counted for MB/s (0 for small messages)
    frame_bytes: int  # our encoded frame size
    same_bytes: bool  # our frame == the bare library's frame
    bare_frame_bytes: int  # the bare library's frame size
    ours_side: Side = field(default_factory=Side)
    bare_side: Side = field(default_factory=Side)
    ratios: list[float] = field(default_factory=list)

    @property
    def batch(self) -> int:
        return SMALL_BATCH if self.kind == "small" else 1

    @property
    def max_iters(self) -> int:
        return SMALL_MAX_ITERS if self.kind == "small" else BULK_MAX_ITERS

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


# -- the data ------------------------------------------------------------------


def _tensor_data(nbytes: int) -> bytes:
    """``nbytes`` of little-endian float32 values."""
    values = array("f", [0.25, -1.5, 3.0, 1e-3]) * (nbytes // 16)
    if sys.byteorder == "big":  # pragma: no cover - the wire is little-endian
        values.byteswap()
    return values.tobytes()


def _plain_header(env: Envelope) -> dict[int, Any]:
    """The CBOR form of the envelope header, as a plain dict (without the body, key 9)."""
    plain: dict[int, Any] = {1: env.version, 2: env.type, 3: env.msg_id, 4: env.source.to_bytes()}
    if env.destination is not None:
        plain[5] = env.destination.to_bytes()
    plain[8] = env.ttl
    return plain


def _pb_header(env: Envelope) -> Any:
    """A fresh generated Envelope with the header fields of ``env`` filled in."""
    pb = _PbEnvelope()
    pb.version = env.version
    pb.msg_id = env.msg_id
    pb.source = env.source.to_bytes()
    if env.destination is not None:
        pb.destination = env.destination.to_bytes()
    pb.ttl = env.ttl
    return pb


def _pb_read_header(pb: Any) -> tuple[Any, ...]:
    return (pb.version, pb.msg_id, pb.source, pb.destination, pb.ttl, pb.WhichOneof("body"))


def _ours(env: Envelope, codec: Codec) -> Callable[[], object]:
    def run() -> object:
        return decode(encode(env, codec), codec)

    return run


def _bare_cbor(plain: dict[int, Any]) -> Callable[[], object]:
    dumps, loads = cbor2.dumps, cbor2.loads

    def run() -> object:
        return loads(dumps(plain))

    return run


PbFill = Callable[[Any], None]  # fills the body of a generated Envelope
PbRead = Callable[[Any], tuple[Any, ...]]  # reads the body back from a parsed one


def _bare_pb_frame(env: Envelope, fill: PbFill) -> bytes:
    pb = _pb_header(env)
    fill(pb)
    return bytes(pb.SerializeToString())


def _bare_pb(env: Envelope, fill: PbFill, read: PbRead) -> Callable[[], object]:
    def run() -> object:
        pb = _pb_header(env)
        fill(pb)
        frame = pb.SerializeToString()
        out = _PbEnvelope()
        out.ParseFromString(frame)
        return read(out)

    return run


def _check(case_name: str, ok: bool, what: str) -> None:
    if not ok:
        raise SystemExit(f"{case_name}: {what}")


def build_cases() -> list[Case]:
    """Build every case and check both sides round-trip the same data."""
    src = NodeId.from_public_key(os.urandom(32))
    dst = NodeId.from_public_key(os.urandom(32))
    cases: list[Case] = []

    # 1. small: Ping with source and destination
    nonce = 0x1234_5678_9ABC
    ping = Envelope(Ping(nonce=nonce), src, dst, msg_id=MSG_ID)
    plain_ping = {**_plain_header(ping), 9: {1: nonce}}

    def fill_ping(pb: Any) -> None:
        pb.ping.nonce = nonce

    def read_ping(out: Any) -> tuple[Any, ...]:
        return (*_pb_read_header(out), out.ping.nonce)

    # 2. bulk: Chunk with 256 KiB of data
    c = Chunk(payload_id=os.urandom(32), index=7, data=os.urandom(CHUNK_BYTES))
    chunk = Envelope(c, src, dst, msg_id=MSG_ID)
    plain_chunk = {**_plain_header(chunk), 9: {1: c.payload_id, 2: c.index, 3: c.data}}

    def fill_chunk(pb: Any) -> None:
        sub = pb.chunk
        sub.payload_id = c.payload_id
        sub.index = c.index
        sub.data = c.data

    def read_chunk(out: Any) -> tuple[Any, ...]:
        got = out.chunk
        return (*_pb_read_header(out), got.payload_id, got.index, got.data)

    # 3. bulk: Response carrying a 4 MiB float32 tensor
    n = TENSOR_BYTES // 4
    t = Tensor(dtype="float32", shape=(n,), data=_tensor_data(TENSOR_BYTES))
    tensor = Envelope(Response(t), src, dst, msg_id=MSG_ID)
    plain_tensor = {**_plain_header(tensor), 9: {1: CBORTag(40, [list(t.shape), CBORTag(85, t.data)])}}

    def fill_tensor(pb: Any) -> None:
        tv = pb.response.value.tensor_value
        tv.dtype = t.dtype
        tv.shape.extend(t.shape)
        tv.data = t.data

    def read_tensor(out: Any) -> tuple[Any, ...]:
        value = out.response.value
        got = value.tensor_value
        return (*_pb_read_header(out), value.WhichOneof("kind"), got.dtype, tuple(got.shape), got.data)

    pb_parts: dict[str, tuple[PbFill, PbRead]] = {
        "ping": (fill_ping, read_ping),
        "chunk": (fill_chunk, read_chunk),
        "tensor": (fill_tensor, read_tensor),
    }
    specs: list[tuple[str, str, str, Envelope, dict[int, Any], int]] = [
        ("ping", "Ping (src+dst)", "small", ping, plain_ping, 0),
        ("chunk", "Chunk 256 KiB", "bulk", chunk, plain_chunk, CHUNK_BYTES),
        ("tensor", "Tensor 4 MiB f32", "bulk", tensor, plain_tensor, TENSOR_BYTES),
    ]
    for key, name, kind, env, plain, payload in specs:
        fill, read = pb_parts[key]
        for codec in ("cbor", "protobuf"):
            ours = _ours(env, codec)
            _check(name, ours() == env, f"our {codec} round trip changed the envelope")
            frame = encode(env, codec)
            if codec == "cbor":
                bare = _bare_cbor(plain)
                bare_frame = cbor2.dumps(plain)
                # cbor2 6 gives tag contents back as tuples, so compare the re-encoded bytes
                _check(name, cbor2.dumps(bare()) == bare_frame, "bare cbor2 round trip changed the data")
            else:
                bare = _bare_pb(env, fill, read)
                bare_frame = _bare_pb_frame(env, fill)
                back = bare()
                _check(name, isinstance(back, tuple) and back[1] == env.msg_id, "bare protobuf round trip failed")
            cases.append(
                Case(key, name, kind, codec, ours, bare, payload, len(frame), frame == bare_frame, len(bare_frame))
            )
    return cases


# -- timing --------------------------------------------------------------------


def time_per_call(fn: Callable[[], object], batch: int, max_iters: int, budget_s: float) -> tuple[float, int]:
    """Seconds per call of ``fn``, running batches until ``max_iters`` calls or ``budget_s`` seconds."""
    clock = time.perf_counter
    calls = range(batch)
    done = 0
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        start = clock()
        deadline = start + budget_s
        while True:
            for _ in calls:
                fn()
            done += batch
            now = clock()
            if done >= max_iters or now >= deadline:
                break
    finally:
        if gc_was_enabled:
            gc.enable()
    return (now - start) / done, done


def warm_up(cases: list[Case], budget_s: float) -> None:
    for case in cases:
        for fn in (case.ours, case.bare):
            time_per_call(fn, case.batch, case.max_iters, budget_s)


def run(cases: list[Case], rounds: int, budget_s: float) -> None:
    """Interleave ours and bare for every case; the order within a pair flips every round."""
    for r in range(rounds):
        for case in cases:
            order = ((case.ours, case.ours_side), (case.bare, case.bare_side))
            if r % 2:
                order = order[::-1]
            for fn, side in order:
                gc.collect()
                per_call, iters = time_per_call(fn, case.batch, case.max_iters, budget_s)
                side.per_round_s.append(per_call)
                side.iters.append(iters)
            case.ratios.append(case.ours_side.per_round_s[-1] / case.bare_side.per_round_s[-1])


# -- report --------------------------------------------------------------------


def environment() -> dict[str, Any]:
    try:
        load: list[float] | None = [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - not on every platform
        load = None
    return {
        "python": platform.python_version(),
        "python_implementation": platform.python_implementation(),
        "cbor2": importlib.metadata.version("cbor2"),
        "protobuf": google.protobuf.__version__,
        "protobuf_backend": api_implementation.Type(),
        "edgeagent": edgeagent.__version__,
        "platform": f"{platform.system()} {platform.machine()}",
        "cpus": os.cpu_count(),
        "loadavg": load,
    }


def mbps(payload: int, seconds: float) -> float:
    return payload / seconds / MB


def side_json(case: Case, side: Side) -> dict[str, Any]:
    out: dict[str, Any] = {
        "median_s": side.median_s,
        "per_round_s": side.per_round_s,
        "iterations_per_round": side.iters,
        "ops_per_s": 1.0 / side.median_s,
    }
    if case.payload_bytes:
        out["mb_per_s"] = mbps(case.payload_bytes, side.median_s)
    return out


def to_json(cases: list[Case], env: dict[str, Any], args: argparse.Namespace, elapsed: float) -> dict[str, Any]:
    results = []
    for case in cases:
        item: dict[str, Any] = {
            "case": case.name,
            "kind": case.kind,
            "codec": case.codec,
            "payload_bytes": case.payload_bytes,
            "frame_bytes": case.frame_bytes,
            "same_bytes_as_bare": case.same_bytes,
            "bare_frame_bytes": case.bare_frame_bytes,
            "ours": side_json(case, case.ours_side),
            "bare": side_json(case, case.bare_side),
            "cost_ratio": case.ratio,
            "cost_ratio_min": min(case.ratios),
            "cost_ratio_max": max(case.ratios),
            "cost_ratio_per_round": case.ratios,
            "meets_cost_target": case.ratio <= COST_TARGET,
        }
        if case.key == "chunk":
            item["meets_chunk_target"] = mbps(case.payload_bytes, case.ours_side.median_s) >= CHUNK_TARGET_MBPS
        results.append(item)
    return {
        "environment": env,
        "method": {
            "rounds": args.rounds,
            "budget_s_per_measurement": args.budget,
            "statistic": "median over rounds; ours and bare interleaved, order flipped every round",
            "cost_ratio": "median over rounds of (our time / bare time) for back-to-back pairs",
            "throughput": "payload bytes / seconds per encode+decode round trip",
            "units": {"MB": MB, "GB": GB},
        },
        "targets": {"cost_ratio_max": COST_TARGET, "chunk_mb_per_s_min": CHUNK_TARGET_MBPS},
        "results": results,
        "elapsed_s": elapsed,
    }


def _verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_report(cases: list[Case], env: dict[str, Any], args: argparse.Namespace, elapsed: float) -> None:
    print("edgeagent.wire serialisation benchmark: our codec vs the bare library, same data, same run")
    print(
        f"Python {env['python']} ({env['python_implementation']}) | cbor2 {env['cbor2']} | "
        f"protobuf {env['protobuf']} (backend: {env['protobuf_backend']}) | edgeagent {env['edgeagent']} | "
        f"{env['platform']}, {env['cpus']} CPUs, loadavg {env['loadavg']}"
    )
    print(
        f"Method: {args.rounds} rounds, ours/bare interleaved (order flipped each round), <= {args.budget:g} s "
        "per measurement, medians reported."
    )
    print("Units: MB = 1e6 bytes, GB = 1e9 bytes; throughput = payload bytes / (encode+decode) time.")
    print(
        f"Cost ratio = our time / bare time (median of per-round pairs, [min-max]); target <= {COST_TARGET}x. "
        f"Chunk target: ours >= 1 GB/s = {CHUNK_TARGET_MBPS:.0f} MB/s."
    )
    print()
    print("1. Small messages: Ping envelope with source and destination, encode+decode per second")
    head = (
        f"{'codec':<9}{'frame B':>8}{'same bytes':>11}{'ours msg/s':>13}{'bare msg/s':>13}"
        f"{'ours us':>9}{'bare us':>9}{'cost ratio':>12}  {'range':<13}{'<=1.5x':>7}"
    )
    print(head)
    for case in cases:
        if case.kind != "small":
            continue
        o, b = case.ours_side.median_s, case.bare_side.median_s
        print(
            f"{case.codec:<9}{case.frame_bytes:>8}{'yes' if case.same_bytes else 'no':>11}"
            f"{1 / o:>13,.0f}{1 / b:>13,.0f}{o * 1e6:>9.2f}{b * 1e6:>9.2f}{case.ratio:>11.2f}x  "
            f"[{min(case.ratios):.2f}-{max(case.ratios):.2f}]".ljust(15)
            + f"{_verdict(case.ratio <= COST_TARGET):>7}"
        )
    print()
    print("2. Bulk messages: encode+decode throughput in MB/s (1 MB = 1e6 bytes)")
    head = (
        f"{'case':<18}{'codec':<9}{'payload B':>10}{'same bytes':>11}{'ours MB/s':>11}{'bare MB/s':>11}"
        f"{'cost ratio':>12}  {'range':<13}{'<=1.5x':>7}{'>=1000MB/s':>12}"
    )
    print(head)
    for case in cases:
        if case.kind != "bulk":
            continue
        ours_mbps = mbps(case.payload_bytes, case.ours_side.median_s)
        bare_mbps = mbps(case.payload_bytes, case.bare_side.median_s)
        chunk = _verdict(ours_mbps >= CHUNK_TARGET_MBPS) if case.key == "chunk" else "-"
        print(
            f"{case.name:<18}{case.codec:<9}{case.payload_bytes:>10}{'yes' if case.same_bytes else 'no':>11}"
            f"{ours_mbps:>11,.0f}{bare_mbps:>11,.0f}{case.ratio:>11.2f}x  "
            f"[{min(case.ratios):.2f}-{max(case.ratios):.2f}]".ljust(15)
            + f"{_verdict(case.ratio <= COST_TARGET):>7}{chunk:>12}"
        )
    for case in cases:
        if not case.same_bytes:
            print(
                f"note: {case.name}/{case.codec}: our frame ({case.frame_bytes} B) differs from the bare "
                f"library's ({case.bare_frame_bytes} B) for the same data"
            )
    print()
    print(f"elapsed {elapsed:.1f} s")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--json", action="store_true", help="print one JSON object with every figure")
    parser.add_argument(
        "--quick", action="store_true", help=f"smoke run: {QUICK_ROUNDS} rounds of {QUICK_BUDGET_S} s (a few seconds)"
    )
    parser.add_argument("--rounds", type=int, default=None, help=f"rounds per measurement (default {FULL_ROUNDS})")
    parser.add_argument(
        "--budget", type=float, default=None, help=f"max seconds per measurement (default {FULL_BUDGET_S})"
    )
    args = parser.parse_args(argv)
    if args.rounds is None:
        args.rounds = QUICK_ROUNDS if args.quick else FULL_ROUNDS
    if args.budget is None:
        args.budget = QUICK_BUDGET_S if args.quick else FULL_BUDGET_S
    if args.rounds < 1 or not 0 < args.budget <= 1.0:
        parser.error("--rounds must be >= 1 and --budget in (0, 1] seconds")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()
    cases = build_cases()
    warm_up(cases, min(args.budget, 0.05))
    run(cases, args.rounds, args.budget)
    elapsed = time.perf_counter() - started
    env = environment()
    if args.json:
        json.dump(to_json(cases, env, args, elapsed), sys.stdout, indent=2)
        print()
    else:
        print_report(cases, env, args, elapsed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
