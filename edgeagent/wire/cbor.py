"""The CBOR codec.

Encoding uses cbor2 for the (small) structure and splices large byte strings
(chunk data, tensor bytes) into the output in a single ``b"".join``, so payload
bytes are copied once.

Decoding uses this module's own strict decoder of the CBOR subset the protocol
uses, rather than ``cbor2.loads``, because it must

* check every cap *before* allocating: frame size, nesting depth, collection
  lengths (against the cap and against the bytes left), tensor bytes;
* refuse what the protocol never sends: indefinite lengths, undefined and other
  simple values, duplicate or non-scalar map keys, and every tag except 39
  (object reference), 40 (multi-dimensional array) and the RFC 8746
  little-endian typed arrays: no datetime, regex, bignum or shared-reference
  tags (cbor2 decodes those, and their behaviour differs between cbor2 5 and 6);
* raise :class:`~edgeagent.exceptions.DecodeError` and nothing else;
* behave the same whichever cbor2 version is installed.
"""

from __future__ import annotations

import struct as _struct
from typing import Any, Final

import cbor2

from ..exceptions import DecodeError, EncodeError
from .envelope import PROTOCOL_VERSION, Envelope
from .kinds import MAX_STRUCT_DEPTH, Splicer
from .limits import DEFAULT_LIMITS, Limits
from .nodeid import NodeId
from .route import Route
from .schema import REGISTRY, ObjectRef, struct_from_plain, struct_to_plain
from .tensor import DTYPES, MAX_DIMS, TAG_TO_DTYPE, Tensor, tensor_problem

__all__ = ["decode", "decode_plain", "encode", "encode_struct"]

_HALF: Final = _struct.Struct(">e")
_SINGLE: Final = _struct.Struct(">f")
_DOUBLE: Final = _struct.Struct(">d")


def _head(length: int, major: int) -> bytes:
    mt = major << 5
    if length < 24:
        return bytes((mt | length,))
    if length < 0x100:
        return bytes((mt | 24, length))
    if length < 0x10000:
        return bytes((mt | 25,)) + length.to_bytes(2, "big")
    if length < 0x100000000:
        return bytes((mt | 26,)) + length.to_bytes(4, "big")
    return bytes((mt | 27,)) + length.to_bytes(8, "big")


def _dumps(plain: Any, splice: Splicer) -> bytes:
    try:
        out = cbor2.dumps(plain)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError) as exc:
        raise EncodeError(f"cbor: {exc}") from None
    if not splice.parts:
        return out
    view = memoryview(out)
    found = []
    for marker, buf in splice.parts:
        at = out.find(b"\x50" + marker)
        if at < 0:  # pragma: no cover - would be a bug in Splicer
            raise EncodeError("internal: splice marker lost")
        found.append((at, buf))
    found.sort(key=lambda p: p[0])
    pieces: list[bytes | bytearray | memoryview] = []
    pos = 0
    for at, buf in found:
        pieces.append(view[pos:at])
        pieces.append(_head(len(buf), 2))
        pieces.append(buf)
        pos = at + 17
    pieces.append(view[pos:])
    return b"".join(pieces)


def encode(env: Envelope) -> bytes:
    """Encode an Envelope as one CBOR frame."""
    body = env.body
    code = getattr(body, "TYPE_CODE", 0)
    if REGISTRY.get(code) is not type(body):
        raise EncodeError(f"{type(body).__name__} is not a registered message")
    if type(env.source) is not NodeId:
        raise EncodeError("Envelope.source must be a NodeId")
    if type(env.msg_id) is not int or not 0 <= env.msg_id < 2**64:
        raise EncodeError("Envelope.msg_id must be a 64-bit unsigned int")
    if type(env.ttl) is not int or not 0 <= env.ttl < 2**32:
        raise EncodeError("Envelope.ttl must be a 32-bit unsigned int")
    if type(env.version) is not int or not 0 <= env.version < 2**32:
        raise EncodeError("Envelope.version must be a 32-bit unsigned int")
    splice = Splicer()
    plain: dict[int, Any] = {1: env.version, 2: code, 3: env.msg_id, 4: env.source.to_bytes()}
    if env.destination is not None:
        if type(env.destination) is not NodeId:
            raise EncodeError("Envelope.destination must be a NodeId or None")
        plain[5] = env.destination.to_bytes()
    if env.route is not None:
        if type(env.route) is not Route:
            raise EncodeError("Envelope.route must be a Route or None")
        plain[6] = struct_to_plain(env.route, splice)
    if env.reply_to is not None:
        if type(env.reply_to) is not int or not 0 <= env.reply_to < 2**64:
            raise EncodeError("Envelope.reply_to must be a 64-bit unsigned int")
        plain[7] = env.reply_to
    plain[8] = env.ttl
    if env.proof is not None:
        if type(env.proof) is not bytes or len(env.proof) > 128:
            raise EncodeError("Envelope.proof must be bytes (at most 128)")
        plain[10] = env.proof
    plain[9] = struct_to_plain(body, splice)  # last: its large bytes end the frame
    return _dumps(plain, splice)


def encode_struct(obj: Any) -> bytes:
    """Encode one struct on its own (used for signing and content ids)."""
    splice = Splicer()
    return _dumps(struct_to_plain(obj, splice), splice)


def decode(frame: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Envelope:
    """Decode one CBOR frame into an Envelope; raises only ``DecodeError``."""
    try:
        plain = decode_plain(frame, limits)
        return _envelope(plain, MAX_STRUCT_DEPTH - limits.max_depth + 1)
    except DecodeError:
        raise
    except RecursionError:
        raise DecodeError("nesting too deep") from None
    except Exception as exc:  # a bug must still not escape as another type
        raise DecodeError(f"malformed frame ({type(exc).__name__}: {exc})") from None


def _envelope(plain: Any, depth: int) -> Envelope:
    if type(plain) is not dict:
        raise DecodeError("frame is not a CBOR map")
    version = plain.get(1)
    if type(version) is not int or version < 1:
        raise DecodeError("missing or bad protocol version")
    if version > PROTOCOL_VERSION:
        raise DecodeError(f"unsupported protocol version {version} (this node speaks {PROTOCOL_VERSION})")
    code = plain.get(2)
    if type(code) is not int:
        raise DecodeError("missing or bad type code")
    cls = REGISTRY.get(code)
    if cls is None:
        raise DecodeError(f"unknown message type code {code}")
    msg_id = plain.get(3)
    if type(msg_id) is not int or not 0 <= msg_id < 2**64:
        raise DecodeError("missing or bad message id")
    src = plain.get(4)
    if type(src) is not bytes:
        raise DecodeError("missing or bad source")
    dst = plain.get(5)
    if dst is not None and type(dst) is not bytes:
        raise DecodeError("bad destination")
    reply_to = plain.get(7)
    if reply_to is not None and (type(reply_to) is not int or not 0 <= reply_to < 2**64):
        raise DecodeError("bad reply_to")
    ttl = plain.get(8)
    if type(ttl) is not int or not 0 <= ttl < 2**32:
        raise DecodeError("missing or bad ttl")
    proof = plain.get(10)
    if proof is not None and (type(proof) is not bytes or len(proof) > 128):
        raise DecodeError("bad origin proof")
    route_plain = plain.get(6)
    route = None if route_plain is None else struct_from_plain(Route, route_plain, depth + 1)
    if 9 not in plain:
        raise DecodeError("missing body")
    body = struct_from_plain(cls, plain[9], depth + 1)
    return Envelope(
        body=body,
        source=NodeId.from_bytes(src),
        destination=None if dst is None else NodeId.from_bytes(dst),
        msg_id=msg_id,
        reply_to=reply_to,
        route=route,
        ttl=ttl,
        version=version,
        proof=proof,
    )


def decode_plain(frame: bytes | bytearray | memoryview, limits: Limits = DEFAULT_LIMITS) -> Any:
    """Decode one CBOR item (the whole frame) into plain Python values, strictly."""
    n = len(frame)
    if n > limits.max_frame:
        raise DecodeError(f"frame of {n} bytes exceeds the {limits.max_frame}-byte cap")
    if n == 0:
        raise DecodeError("empty frame")
    d = _Decoder(frame, limits)
    value = d.item(0)
    if d.pos != n:
        raise DecodeError(f"{n - d.pos} trailing bytes after the frame's item")
    return value


class _Decoder:
    __slots__ = ("buf", "end", "max_coll", "max_depth", "max_tensor", "pos", "view")

    def __init__(self, frame: bytes | bytearray | memoryview, limits: Limits) -> None:
        self.view = memoryview(frame).cast("B") if not isinstance(frame, bytes) else memoryview(frame)
        self.buf = frame if isinstance(frame, bytes) else self.view
        self.pos = 0
        self.end = len(self.view)
        self.max_depth = limits.max_depth
        self.max_coll = limits.max_collection
        self.max_tensor = limits.max_tensor_bytes

    def _arg(self, ai: int) -> int:
        """Read the argument of a head whose first byte (already consumed) had info ``ai``."""
        pos = self.pos
        if ai < 24:
            return ai
        if ai == 24:
            size = 1
        elif ai == 25:
            size = 2
        elif ai == 26:
            size = 4
        elif ai == 27:
            size = 8
        elif ai == 31:
            raise DecodeError("indefinite-length items are not accepted")
        else:
            raise DecodeError(f"reserved additional information {ai}")
        if pos + size > self.end:
            raise DecodeError("truncated frame")
        self.pos = pos + size
        return int.from_bytes(self.buf[pos : pos + size], "big")

    def item(self, depth: int) -> Any:
        pos = self.pos
        if pos >= self.end:
            raise DecodeError("truncated frame")
        ib = self.buf[pos]
        self.pos = pos = pos + 1
        if ib < 24:  # the commonest item: a small unsigned integer
            return ib
        mt = ib >> 5
        ai = ib & 31
        if mt == 7:
            return self._simple(ai)
        if ai < 24:
            val = ai
        elif ai == 24 and pos < self.end:
            val = self.buf[pos]
            self.pos = pos + 1
        else:
            val = self._arg(ai)
        if mt == 0:
            return val
        if mt == 1:
            return -1 - val
        if mt in {2, 3}:
            start = self.pos
            if val > self.end - start:
                raise DecodeError(f"string of {val} bytes overruns the frame")
            self.pos = start + val
            if mt == 2:
                return bytes(self.view[start : start + val])
            try:
                return str(self.view[start : start + val], "utf-8")
            except UnicodeDecodeError:
                raise DecodeError("text string is not valid UTF-8") from None
        if mt == 4:
            if depth >= self.max_depth:
                raise DecodeError(f"nesting deeper than {self.max_depth}")
            if val > self.max_coll:
                raise DecodeError(f"array of {val} items exceeds the cap of {self.max_coll}")
            if val > self.end - self.pos:
                raise DecodeError(f"array of {val} items overruns the frame")
            return [self.item(depth + 1) for _ in range(val)]
        if mt == 5:
            if depth >= self.max_depth:
                raise DecodeError(f"nesting deeper than {self.max_depth}")
            if val > self.max_coll:
                raise DecodeError(f"map of {val} entries exceeds the cap of {self.max_coll}")
            if 2 * val > self.end - self.pos:
                raise DecodeError(f"map of {val} entries overruns the frame")
            out: dict[Any, Any] = {}
            for _ in range(val):
                key = self.item(depth + 1)
                if type(key) is not int and type(key) is not str:
                    raise DecodeError(f"map key of type {type(key).__name__} not accepted")
                if key in out:
                    raise DecodeError(f"duplicate map key {key!r}")
                out[key] = self.item(depth + 1)
            return out
        # mt == 6: tags
        # tags hold fixed shapes, so they are leaves for the nesting count
        if val == 39:
            if self.pos >= self.end or self.buf[self.pos] >> 5 != 3:
                raise DecodeError("object reference (tag 39) must hold text")
            return ObjectRef(self.item(depth))
        if val == 40:
            return self._tensor(depth)
        if val in TAG_TO_DTYPE:
            data = self._typed_bytes(val)
            size = DTYPES[TAG_TO_DTYPE[val]][0]
            if len(data) % size:
                raise DecodeError("typed array length is not a multiple of its item size")
            return Tensor(TAG_TO_DTYPE[val], (len(data) // size,), data)
        raise DecodeError(f"CBOR tag {val} not accepted")

    def _simple(self, ai: int) -> Any:
        pos = self.pos
        if ai == 20:
            return False
        if ai == 21:
            return True
        if ai == 22:
            return None
        if ai == 25:
            if pos + 2 > self.end:
                raise DecodeError("truncated frame")
            self.pos = pos + 2
            return _HALF.unpack_from(self.buf, pos)[0]
        if ai == 26:
            if pos + 4 > self.end:
                raise DecodeError("truncated frame")
            self.pos = pos + 4
            return _SINGLE.unpack_from(self.buf, pos)[0]
        if ai == 27:
            if pos + 8 > self.end:
                raise DecodeError("truncated frame")
            self.pos = pos + 8
            return _DOUBLE.unpack_from(self.buf, pos)[0]
        raise DecodeError(f"simple value {ai} not accepted")

    def _typed_bytes(self, tag: int) -> bytes:
        pos = self.pos
        if pos >= self.end:
            raise DecodeError("truncated frame")
        ib = self.buf[pos]
        if ib >> 5 != 2:
            raise DecodeError(f"typed array (tag {tag}) must hold a byte string")
        self.pos = pos + 1
        n = self._arg(ib & 31)
        if n > self.max_tensor:
            raise DecodeError(f"tensor of {n} bytes exceeds the cap of {self.max_tensor}")
        start = self.pos
        if n > self.end - start:
            raise DecodeError(f"typed array of {n} bytes overruns the frame")
        self.pos = start + n
        return bytes(self.view[start : start + n])

    def _tensor(self, depth: int) -> Tensor:
        pos = self.pos
        if pos >= self.end or self.buf[pos] != 0x82:
            raise DecodeError("tag 40 must hold a two-element array [shape, typed array]")
        self.pos = pos + 1
        pos = self.pos
        if pos >= self.end or self.buf[pos] >> 5 != 4:
            raise DecodeError("tensor shape must be an array")
        self.pos = pos + 1
        ndim = self._arg(self.buf[pos] & 31)
        if ndim > MAX_DIMS:
            raise DecodeError(f"tensor with {ndim} dimensions (at most {MAX_DIMS})")
        shape = []
        for _ in range(ndim):
            d = self.item(depth + 2)
            if type(d) is not int or d < 0:
                raise DecodeError("tensor dimensions must be unsigned integers")
            shape.append(d)
        pos = self.pos
        if pos >= self.end or self.buf[pos] >> 5 != 6:
            raise DecodeError("tensor data must be a typed array")
        self.pos = pos + 1
        tag = self._arg(self.buf[pos] & 31)
        dtype = TAG_TO_DTYPE.get(tag)
        if dtype is None:
            raise DecodeError(f"typed-array tag {tag} not accepted (little-endian tags only)")
        data = self._typed_bytes(tag)
        problem = tensor_problem(dtype, tuple(shape), len(data))
        if problem:
            raise DecodeError(problem)
        return Tensor(dtype, tuple(shape), data)
