"""The leaf field kinds of the wire schema (scalars, bytes, NodeIds, tensors, generic values) and
the base ``Kind`` every field kind implements; containers and structs build on them in ``schema``."""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass
from typing import Any, ClassVar, Final

from cbor2 import CBORTag

from ..exceptions import DecodeError, EncodeError
from .nodeid import NodeId
from .tensor import DTYPES, Tensor

__all__ = [
    "MAX_STRUCT_DEPTH",
    "BOOL",
    "BYTES",
    "F64",
    "I64",
    "NODEID",
    "STR",
    "TENSOR",
    "U32",
    "U64",
    "VALUE",
    "Kind",
    "ObjectRef",
    "Splicer",
]

#: Conversions count nesting like the CBOR decoder does (one level per map, array,
#: struct or repeated field; tensors and object references are leaves) and refuse
#: to go past this. Codecs start the count at ``MAX_STRUCT_DEPTH - Limits.max_depth``
#: so the refusal comes at the configured cap.
MAX_STRUCT_DEPTH: Final = 1024

U64_MAX: Final = 2**64 - 1
I64_MIN: Final = -(2**63)
I64_MAX: Final = 2**63 - 1


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A reference to an object held in a worker's store (CBOR tag 39, "identifier")."""

    id: str


class Kind(abc.ABC):
    """How one field's value is checked, encoded and decoded in both codecs.

    ``check`` raises ``EncodeError`` for a value the wire cannot carry;
    ``from_plain`` turns a decoded CBOR value into the Python value or raises
    ``DecodeError``; ``pb_set``/``pb_get`` move the value into/out of a
    protobuf message field.
    """

    proto: str = ""  # the protobuf type spelling
    scalar: bool = True  # proto scalar: declared ``optional`` for explicit presence

    @abc.abstractmethod
    def check(self, v: Any) -> None:
        """Raise EncodeError unless ``v`` can be carried."""

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return v

    @abc.abstractmethod
    def from_plain(self, v: Any, depth: int) -> Any:
        """The Python value of a decoded CBOR value, or DecodeError."""

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        setattr(pb, name, v)

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return getattr(pb, name)

    def pb_present(self, pb: Any, name: str) -> bool:
        return bool(pb.HasField(name))

    def pb_set_item(self, container: Any, v: Any) -> None:
        """Append ``v`` to a repeated protobuf field."""
        self.check(v)
        container.append(v)

    def pb_get_item(self, item: Any, depth: int) -> Any:
        return item


class Splicer:
    """Collects large byte strings during CBOR encoding so they are copied only once.

    ``to_plain`` replaces a large buffer by a short random marker; after cbor2
    encodes the small remainder, :func:`edgeagent.wire.cbor.encode` puts each
    buffer in place of its marker in one ``b"".join``.
    """

    __slots__ = ("parts",)
    THRESHOLD: ClassVar[int] = 16 * 1024

    def __init__(self) -> None:
        self.parts: list[tuple[bytes, bytes | bytearray | memoryview]] = []

    def maybe(self, buf: bytes | bytearray | memoryview) -> Any:
        if len(buf) < self.THRESHOLD:
            return bytes(buf) if not isinstance(buf, bytes) else buf
        marker = os.urandom(16)
        self.parts.append((marker, buf))
        return marker


def _fail(msg: str) -> DecodeError:
    return DecodeError(msg)


class _Scalar(Kind):
    """A protobuf scalar carried as one Python type, range-checked when ``lo``/``hi`` are set.

    Integers accept int subclasses such as IntEnum members (never bool) and
    travel as plain ints; doubles accept ints and travel as floats.
    """

    def __init__(self, proto: str, pytype: type, lo: int | None = None, hi: int | None = None) -> None:
        self.proto = proto
        self.pytype = pytype
        self.lo = lo
        self.hi = hi

    def _in_range(self, v: Any) -> bool:
        return self.lo is None or self.lo <= v <= (self.hi if self.hi is not None else v)

    def check(self, v: Any) -> None:
        t = type(v)
        if t is not self.pytype and (t is bool or not isinstance(v, int) or self.pytype not in (int, float)):
            raise EncodeError(f"expected {self.proto}, got {v!r}")
        if not self._in_range(v):
            raise EncodeError(f"{v} is outside {self.proto}")
        if t is int and self.pytype is float and abs(v) > 2**1023:
            raise EncodeError(f"a {v.bit_length()}-bit integer is too large for a double")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return v if type(v) is self.pytype else self.pytype(v)

    def from_plain(self, v: Any, depth: int) -> Any:
        if type(v) is not self.pytype or not self._in_range(v):
            raise _fail(f"expected {self.proto}, got {type(v).__name__}")
        return v


class _Bytes(Kind):
    proto = "bytes"

    def check(self, v: Any) -> None:
        if not isinstance(v, (bytes, bytearray, memoryview)):
            raise EncodeError(f"expected bytes, got {type(v).__name__}")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return splice.maybe(v)

    def from_plain(self, v: Any, depth: int) -> Any:
        if type(v) is not bytes:
            raise _fail(f"expected bytes, got {type(v).__name__}")
        return v

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        setattr(pb, name, v if type(v) is bytes else bytes(v))

    def pb_set_item(self, container: Any, v: Any) -> None:
        self.check(v)
        container.append(v if type(v) is bytes else bytes(v))


class _NodeIdKind(Kind):
    proto = "bytes"

    def check(self, v: Any) -> None:
        if type(v) is not NodeId:
            raise EncodeError(f"expected NodeId, got {type(v).__name__}")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return v.to_bytes()

    def from_plain(self, v: Any, depth: int) -> Any:
        if type(v) is not bytes:
            raise _fail(f"expected NodeId bytes, got {type(v).__name__}")
        return NodeId.from_bytes(v)

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        setattr(pb, name, v.to_bytes())

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return NodeId.from_bytes(getattr(pb, name))

    def pb_set_item(self, container: Any, v: Any) -> None:
        self.check(v)
        container.append(v.to_bytes())

    def pb_get_item(self, item: Any, depth: int) -> Any:
        return NodeId.from_bytes(item)


class _TensorKind(Kind):
    """RFC 8746: tag 40 over [shape, typed array]; protobuf message ``Tensor``."""

    proto = "Tensor"
    scalar = False

    def check(self, v: Any) -> None:
        if type(v) is not Tensor:
            raise EncodeError(f"expected Tensor, got {type(v).__name__}")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return CBORTag(40, [list(v.shape), CBORTag(DTYPES[v.dtype][1], splice.maybe(v.data))])

    def from_plain(self, v: Any, depth: int) -> Any:
        # the CBOR decoder builds Tensor objects itself while checking the caps
        if type(v) is not Tensor:
            raise _fail(f"expected tensor, got {type(v).__name__}")
        return v

    def _fill(self, t: Any, v: Tensor) -> None:
        t.dtype = v.dtype
        t.shape.extend(v.shape)
        t.data = v.data if type(v.data) is bytes else bytes(v.data)

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        self._fill(getattr(pb, name), v)

    def pb_set_item(self, container: Any, v: Any) -> None:
        self.check(v)
        self._fill(container.add(), v)

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return self.pb_get_item(getattr(pb, name), depth)

    def pb_get_item(self, item: Any, depth: int) -> Any:
        try:
            return Tensor(item.dtype, tuple(item.shape), item.data)
        except EncodeError as exc:
            raise _fail(f"bad tensor: {exc}") from None


class _ValueKind(Kind):
    """A dynamically typed value: None, bool, int64, float, str, bytes, Tensor,
    ObjectRef, list of values, or map from str to values."""

    proto = "Value"
    scalar = False

    def check(self, v: Any, depth: int = 0) -> None:
        t = type(v)
        if v is None or t is bool or t is float or t is str or t is Tensor or t is ObjectRef:
            return
        if t is int:
            if not I64_MIN <= v <= I64_MAX:
                raise EncodeError(f"integer {v} outside int64")
            return
        if depth > 64:
            raise EncodeError("value nested too deeply")
        if isinstance(v, (bytes, bytearray, memoryview)):
            return
        if t is list:
            for x in v:
                self.check(x, depth + 1)
            return
        if t is dict:
            for k, x in v.items():
                if type(k) is not str:
                    raise EncodeError(f"value map keys must be str, got {type(k).__name__}")
                self.check(x, depth + 1)
            return
        raise EncodeError(f"cannot carry a {t.__name__} as a value")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        t = type(v)
        if v is None or t is bool or t is float or t is str:
            return v
        if t is int:
            self.check(v)
            return v
        if t is list:
            return [self.to_plain(x, splice) for x in v]
        if t is dict:
            out = {}
            for k, x in v.items():
                if type(k) is not str:
                    raise EncodeError(f"value map keys must be str, got {type(k).__name__}")
                out[k] = self.to_plain(x, splice)
            return out
        if t is Tensor:
            return TENSOR.to_plain(v, splice)
        if t is ObjectRef:
            if type(v.id) is not str:
                raise EncodeError("ObjectRef.id must be str")
            return CBORTag(39, v.id)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return splice.maybe(v)
        raise EncodeError(f"cannot carry a {t.__name__} as a value")

    def from_plain(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is int:
            if not I64_MIN <= v <= I64_MAX:
                raise _fail("integer value outside int64")
            return v
        if v is None or t is bool or t is float or t is str or t is bytes:
            return v
        if t is Tensor or t is ObjectRef:
            return v
        if t is list:
            return [self.from_plain(x, depth + 1) for x in v]
        if t is dict:
            for k in v:
                if type(k) is not str:
                    raise _fail("value map keys must be text")
            return {k: self.from_plain(x, depth + 1) for k, x in v.items()}
        raise _fail(f"unexpected {t.__name__} in a value")

    def fill(self, pb: Any, v: Any, depth: int = 0) -> None:
        t = type(v)
        if depth > 64:
            raise EncodeError("value nested too deeply")
        if v is None:
            pb.null_value = 0
        elif t is bool:
            pb.bool_value = v
        elif t is int:
            self.check(v)
            pb.int_value = v
        elif t is float:
            pb.double_value = v
        elif t is str:
            pb.text_value = v
        elif isinstance(v, (bytes, bytearray, memoryview)):
            pb.bytes_value = bytes(v)
        elif t is Tensor:
            TENSOR._fill(pb.tensor_value, v)
        elif t is ObjectRef:
            pb.ref = v.id
        elif t is list:
            items = pb.list_value.items
            pb.list_value.SetInParent()
            for x in v:
                self.fill(items.add(), x, depth + 1)
        elif t is dict:
            entries = pb.map_value.entries
            pb.map_value.SetInParent()
            for k, x in v.items():
                if type(k) is not str:
                    raise EncodeError(f"value map keys must be str, got {type(k).__name__}")
                self.fill(entries[k], x, depth + 1)
        else:
            raise EncodeError(f"cannot carry a {t.__name__} as a value")

    def read(self, pb: Any, depth: int) -> Any:
        """Read a Value whose container (if it is a list or map) sits at ``depth``."""
        which = pb.WhichOneof("kind")
        if which is None or which == "null_value":
            return None
        if which == "tensor_value":
            return TENSOR.pb_get_item(pb.tensor_value, depth)
        if which == "ref":
            return ObjectRef(pb.ref)
        if which == "list_value":
            if depth > MAX_STRUCT_DEPTH:
                raise _fail("nesting deeper than the depth cap")
            return [self.read(x, depth + 1) for x in pb.list_value.items]
        if which == "map_value":
            if depth > MAX_STRUCT_DEPTH:
                raise _fail("nesting deeper than the depth cap")
            return {k: self.read(x, depth + 1) for k, x in pb.map_value.entries.items()}
        return getattr(pb, which)

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.fill(getattr(pb, name), v)
        getattr(pb, name).SetInParent()

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return self.read(getattr(pb, name), depth + 1)

    def pb_set_item(self, container: Any, v: Any) -> None:
        self.fill(container.add(), v)

    def pb_get_item(self, item: Any, depth: int) -> Any:
        return self.read(item, depth + 1)


U64: Final[Kind] = _Scalar("uint64", int, 0, U64_MAX)
U32: Final[Kind] = _Scalar("uint32", int, 0, 2**32 - 1)
I64: Final[Kind] = _Scalar("sint64", int, I64_MIN, I64_MAX)
F64: Final[Kind] = _Scalar("double", float)
BOOL: Final[Kind] = _Scalar("bool", bool)
STR: Final[Kind] = _Scalar("string", str)
BYTES: Final[Kind] = _Bytes()
NODEID: Final[Kind] = _NodeIdKind()
TENSOR: Final = _TensorKind()
VALUE: Final = _ValueKind()
