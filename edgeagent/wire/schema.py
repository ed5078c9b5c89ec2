"""Declarative wire schema: field kinds, structs, and the closed type-code registry.

Every wire type is a frozen dataclass whose fields carry a :class:`FieldSpec`
(number, kind, doc). From these one place derives

* the CBOR form: a map from the field *number* (small integer keys) to the value;
* the protobuf form: a message of the same name whose fields have the same
  numbers (``proto/edgeagent/v1/*.proto`` is generated from this schema by
  ``scripts/gen_proto.py`` and a test checks the committed files match);
* the hypothesis strategies used by the property tests.

Presence: a field equal to its default is left out of both encodings and
restored on decoding; a field with no default is required and its absence is a
``DecodeError``. Repeated and map fields default to empty. Unknown field numbers
are ignored (forward compatibility); unknown *type codes* are rejected.

Messages (things that travel as an Envelope body) get an integer type code
from one closed registry: ``REGISTRY[code] -> class``. No class is ever looked
up by a name from the wire.
"""

from __future__ import annotations

import abc
import dataclasses
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from cbor2 import CBORTag

from ..exceptions import DecodeError, EncodeError
from .nodeid import NodeId
from .tensor import DTYPES, Tensor

__all__ = [
    "BOOL",
    "BYTES",
    "F64",
    "I64",
    "NODEID",
    "REGISTRY",
    "STR",
    "TENSOR",
    "U32",
    "U64",
    "VALUE",
    "FieldSpec",
    "Kind",
    "Message",
    "ObjectRef",
    "Opt",
    "Rep",
    "StrMap",
    "Struct",
    "StructKind",
    "fld",
    "message",
    "struct",
]

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


class Opt(Kind):
    """The inner kind or None (None is left out of both encodings)."""

    def __init__(self, inner: Kind) -> None:
        self.inner = inner
        self.scalar = inner.scalar

    @property
    def proto(self) -> str:  # type: ignore[override]
        return self.inner.proto

    def check(self, v: Any) -> None:
        if v is not None:
            self.inner.check(v)

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        return None if v is None else self.inner.to_plain(v, splice)

    def from_plain(self, v: Any, depth: int) -> Any:
        return self.inner.from_plain(v, depth)

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        if v is not None:
            self.inner.pb_set(pb, name, v)

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return self.inner.pb_get(pb, name, depth)


class Rep(Kind):
    """A tuple of the inner kind (CBOR array; protobuf ``repeated``)."""

    scalar = False

    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    @property
    def proto(self) -> str:  # type: ignore[override]
        return self.inner.proto

    def check(self, v: Any) -> None:
        if type(v) is not tuple:
            raise EncodeError(f"expected tuple, got {type(v).__name__}")
        for x in v:
            self.inner.check(x)

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        if type(v) is not tuple:
            raise EncodeError(f"expected tuple, got {type(v).__name__}")
        f = self.inner.to_plain
        return [f(x, splice) for x in v]

    def from_plain(self, v: Any, depth: int) -> Any:
        if type(v) is not list:
            raise _fail(f"expected array, got {type(v).__name__}")
        f = self.inner.from_plain
        return tuple([f(x, depth + 1) for x in v])

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        if type(v) is not tuple:
            raise EncodeError(f"expected tuple, got {type(v).__name__}")
        container = getattr(pb, name)
        add = self.inner.pb_set_item
        for x in v:
            add(container, x)

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        if depth + 1 > MAX_STRUCT_DEPTH:
            raise _fail("nesting deeper than the depth cap")
        get = self.inner.pb_get_item
        return tuple([get(x, depth + 1) for x in getattr(pb, name)])

    def pb_present(self, pb: Any, name: str) -> bool:
        return len(getattr(pb, name)) > 0


class StrMap(Kind):
    """A dict from str to the inner kind (CBOR map; protobuf ``map<string, T>``)."""

    scalar = False

    def __init__(self, inner: Kind) -> None:
        self.inner = inner

    @property
    def proto(self) -> str:  # type: ignore[override]
        return f"map<string, {self.inner.proto}>"

    def check(self, v: Any) -> None:
        if type(v) is not dict:
            raise EncodeError(f"expected dict, got {type(v).__name__}")
        for k, x in v.items():
            if type(k) is not str:
                raise EncodeError(f"map keys must be str, got {type(k).__name__}")
            self.inner.check(x)

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        f = self.inner.to_plain
        return {k: f(x, splice) for k, x in v.items()}

    def from_plain(self, v: Any, depth: int) -> Any:
        if type(v) is not dict:
            raise _fail(f"expected map, got {type(v).__name__}")
        f = self.inner.from_plain
        out = {}
        for k, x in v.items():
            if type(k) is not str:
                raise _fail("map keys must be text")
            out[k] = f(x, depth + 1)
        return out

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        m = getattr(pb, name)
        inner = self.inner
        if inner.scalar:
            for k, x in v.items():
                m[k] = x
        elif isinstance(inner, _ValueKind):
            for k, x in v.items():
                inner.fill(m[k], x)
        else:
            raise EncodeError("unsupported map value kind")

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        if depth + 1 > MAX_STRUCT_DEPTH:
            raise _fail("nesting deeper than the depth cap")
        m = getattr(pb, name)
        inner = self.inner
        if isinstance(inner, _ValueKind):
            return {k: inner.read(x, depth + 2) for k, x in m.items()}
        return dict(m.items())

    def pb_present(self, pb: Any, name: str) -> bool:
        return len(getattr(pb, name)) > 0


@dataclass(frozen=True, slots=True)
class FieldSpec:
    number: int
    kind: Kind
    doc: str


@dataclass(frozen=True, slots=True)
class BoundField:
    """A FieldSpec bound to its dataclass attribute."""

    name: str
    number: int
    kind: Kind
    doc: str
    required: bool
    default: Any  # the value left out of encodings (dataclasses.MISSING if required)


def fld(
    number: int,
    kind: Kind,
    doc: str,
    *,
    default: Any = dataclasses.MISSING,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """Declare a wire field: its number (CBOR key and protobuf field number), kind and doc."""
    if not 1 <= number <= 2047:
        raise ValueError("field numbers are 1..2047")
    if isinstance(kind, (Rep, StrMap)) and default is dataclasses.MISSING:
        default_factory = tuple if isinstance(kind, Rep) else dict
    if isinstance(kind, Opt) and default is dataclasses.MISSING:
        default = None
    meta = {"wire": FieldSpec(number, kind, doc)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class Struct:
    """Base of every wire struct: a frozen dataclass with numbered fields."""

    __slots__ = ()
    WIRE_FIELDS: ClassVar[tuple[BoundField, ...]] = ()
    RESERVED: ClassVar[tuple[int, ...]] = ()  # field numbers retired, never reused


class Message(Struct):
    """Base of every message that travels as an Envelope body."""

    __slots__ = ()
    TYPE_CODE: ClassVar[int] = 0


#: the closed registry: type code -> message class
REGISTRY: dict[int, type[Message]] = {}
#: every struct and message class, by name (for proto generation and tests only)
STRUCTS: dict[str, type[Struct]] = {}

S = TypeVar("S", bound=type[Struct])


def _bind(cls: type[Struct]) -> None:
    fields = []
    seen: set[int] = set()
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        spec = f.metadata.get("wire")
        if not isinstance(spec, FieldSpec):
            raise TypeError(f"{cls.__name__}.{f.name} has no wire spec")
        if spec.number in seen or spec.number in cls.RESERVED:
            raise TypeError(f"{cls.__name__}: field number {spec.number} reused")
        seen.add(spec.number)
        if f.default is not dataclasses.MISSING:
            default, required = f.default, False
        elif f.default_factory is not dataclasses.MISSING:
            default, required = f.default_factory(), False
        else:
            default, required = dataclasses.MISSING, True
        fields.append(BoundField(f.name, spec.number, spec.kind, spec.doc, required, default))
    cls.WIRE_FIELDS = tuple(fields)
    if cls.__name__ in STRUCTS:
        raise TypeError(f"wire struct name {cls.__name__} used twice")
    STRUCTS[cls.__name__] = cls


def struct(cls: S) -> S:
    """Register a wire struct (a frozen dataclass subclassing :class:`Struct`)."""
    _bind(cls)
    return cls


def message(code: int) -> Callable[[S], S]:
    """Register a message class under a type code (16..2047, unique forever)."""

    def deco(cls: S) -> S:
        if not 16 <= code <= 2047:
            raise ValueError("type codes are 16..2047 (they are Envelope oneof field numbers)")
        if code in REGISTRY:
            raise TypeError(f"type code {code} already used by {REGISTRY[code].__name__}")
        if not issubclass(cls, Message):
            raise TypeError("messages subclass Message")
        cls.TYPE_CODE = code
        _bind(cls)
        REGISTRY[code] = cls
        return cls

    return deco


class StructKind(Kind):
    """A nested struct: CBOR map of field numbers; protobuf sub-message."""

    scalar = False

    def __init__(self, cls: type[Struct] | Callable[[], type[Struct]]) -> None:
        self._cls = cls

    @property
    def cls(self) -> type[Struct]:
        c = self._cls
        if not isinstance(c, type):
            c = c()
            self._cls = c
        return c

    @property
    def proto(self) -> str:  # type: ignore[override]
        return self.cls.__name__

    def check(self, v: Any) -> None:
        if type(v) is not self.cls:
            raise EncodeError(f"expected {self.cls.__name__}, got {type(v).__name__}")

    def to_plain(self, v: Any, splice: Splicer) -> Any:
        self.check(v)
        return struct_to_plain(v, splice)

    def from_plain(self, v: Any, depth: int) -> Any:
        return struct_from_plain(self.cls, v, depth + 1)

    def pb_set(self, pb: Any, name: str, v: Any) -> None:
        self.check(v)
        sub = getattr(pb, name)
        sub.SetInParent()
        struct_to_pb(v, sub)

    def pb_get(self, pb: Any, name: str, depth: int) -> Any:
        return struct_from_pb(self.cls, getattr(pb, name), depth + 1)

    def pb_set_item(self, container: Any, v: Any) -> None:
        self.check(v)
        struct_to_pb(v, container.add())

    def pb_get_item(self, item: Any, depth: int) -> Any:
        return struct_from_pb(self.cls, item, depth + 1)


def struct_to_plain(obj: Struct, splice: Splicer) -> dict[int, Any]:
    out: dict[int, Any] = {}
    for f in obj.WIRE_FIELDS:
        v = getattr(obj, f.name)
        if v is None or (not f.required and v == f.default):
            if v is None and f.required:
                raise EncodeError(f"{type(obj).__name__}.{f.name} is required")
            continue
        try:
            out[f.number] = f.kind.to_plain(v, splice)
        except EncodeError as exc:
            raise EncodeError(f"{type(obj).__name__}.{f.name}: {exc}") from None
    return out


#: Conversions count nesting like the CBOR decoder does (one level per map, array,
#: struct or repeated field; tensors and object references are leaves) and refuse
#: to go past this. Codecs start the count at ``MAX_STRUCT_DEPTH - Limits.max_depth``
#: so the refusal comes at the configured cap.
MAX_STRUCT_DEPTH: Final = 1024


def struct_from_plain(cls: type[Struct], d: Any, depth: int) -> Any:
    if type(d) is not dict:
        raise _fail(f"{cls.__name__}: expected a map, got {type(d).__name__}")
    if depth > MAX_STRUCT_DEPTH:
        raise _fail("nesting deeper than the depth cap")
    kwargs: dict[str, Any] = {}
    for f in cls.WIRE_FIELDS:
        v = d.get(f.number, _ABSENT)
        if v is _ABSENT:
            if f.required:
                raise _fail(f"{cls.__name__}: required field {f.name} ({f.number}) missing")
            continue
        try:
            kwargs[f.name] = f.kind.from_plain(v, depth)
        except DecodeError as exc:
            raise _fail(f"{cls.__name__}.{f.name}: {exc}") from None
    return _construct(cls, kwargs)


def _construct(cls: type[Struct], kwargs: Mapping[str, Any]) -> Any:
    try:
        return cls(**kwargs)
    except DecodeError:
        raise
    except (EncodeError, ValueError, TypeError) as exc:
        raise _fail(f"{cls.__name__}: {exc}") from None


def struct_to_pb(obj: Struct, pb: Any) -> None:
    for f in obj.WIRE_FIELDS:
        v = getattr(obj, f.name)
        if v is None or (not f.required and v == f.default):
            if v is None and f.required:
                raise EncodeError(f"{type(obj).__name__}.{f.name} is required")
            continue
        try:
            f.kind.pb_set(pb, f.name, v)
        except EncodeError as exc:
            raise EncodeError(f"{type(obj).__name__}.{f.name}: {exc}") from None
        except (ValueError, TypeError) as exc:  # protobuf's own range checks
            raise EncodeError(f"{type(obj).__name__}.{f.name}: {exc}") from None


def struct_from_pb(cls: type[Struct], pb: Any, depth: int) -> Any:
    if depth > MAX_STRUCT_DEPTH:
        raise _fail("nesting deeper than the depth cap")
    kwargs: dict[str, Any] = {}
    for f in cls.WIRE_FIELDS:
        kind = f.kind
        if not kind.pb_present(pb, f.name):
            if f.required:
                raise _fail(f"{cls.__name__}: required field {f.name} ({f.number}) missing")
            continue
        try:
            kwargs[f.name] = kind.pb_get(pb, f.name, depth)
        except DecodeError as exc:
            raise _fail(f"{cls.__name__}.{f.name}: {exc}") from None
    return _construct(cls, kwargs)


class _Absent:
    pass


_ABSENT: Final = _Absent()

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
