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

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Final, TypeVar

from ..exceptions import DecodeError, EncodeError
from .kinds import (
    BOOL,
    BYTES,
    F64,
    I64,
    MAX_STRUCT_DEPTH,
    NODEID,
    STR,
    TENSOR,
    U32,
    U64,
    VALUE,
    Kind,
    ObjectRef,
    Splicer,
    _fail,
    _ValueKind,
)

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
