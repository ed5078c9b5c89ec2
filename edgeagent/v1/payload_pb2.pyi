from edgeagent.v1 import route_pb2 as _route_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IndexRange(_message.Message):
    __slots__ = ("start", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class Manifest(_message.Message):
    __slots__ = ("size", "chunk_size", "hash_alg", "chunk_hashes", "origin", "name", "created_ms", "signature")
    SIZE_FIELD_NUMBER: _ClassVar[int]
    CHUNK_SIZE_FIELD_NUMBER: _ClassVar[int]
    HASH_ALG_FIELD_NUMBER: _ClassVar[int]
    CHUNK_HASHES_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    size: int
    chunk_size: int
    hash_alg: str
    chunk_hashes: bytes
    origin: bytes
    name: str
    created_ms: int
    signature: bytes
    def __init__(self, size: _Optional[int] = ..., chunk_size: _Optional[int] = ..., hash_alg: _Optional[str] = ..., chunk_hashes: _Optional[bytes] = ..., origin: _Optional[bytes] = ..., name: _Optional[str] = ..., created_ms: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class TreeAssign(_message.Message):
    __slots__ = ("payload_id", "stripe", "stripes", "parent", "children", "subtree", "manifest", "parent_addresses", "weights", "admission")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    STRIPE_FIELD_NUMBER: _ClassVar[int]
    STRIPES_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    SUBTREE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    PARENT_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    stripe: int
    stripes: int
    parent: bytes
    children: _containers.RepeatedScalarFieldContainer[bytes]
    subtree: _route_pb2.RouteSegment
    manifest: Manifest
    parent_addresses: _containers.RepeatedScalarFieldContainer[str]
    weights: _containers.RepeatedScalarFieldContainer[int]
    admission: bytes
    def __init__(self, payload_id: _Optional[bytes] = ..., stripe: _Optional[int] = ..., stripes: _Optional[int] = ..., parent: _Optional[bytes] = ..., children: _Optional[_Iterable[bytes]] = ..., subtree: _Optional[_Union[_route_pb2.RouteSegment, _Mapping]] = ..., manifest: _Optional[_Union[Manifest, _Mapping]] = ..., parent_addresses: _Optional[_Iterable[str]] = ..., weights: _Optional[_Iterable[int]] = ..., admission: _Optional[bytes] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("payload_id", "index", "data")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    INDEX_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    index: int
    data: bytes
    def __init__(self, payload_id: _Optional[bytes] = ..., index: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class ChunkRequest(_message.Message):
    __slots__ = ("payload_id", "ranges")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    RANGES_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    ranges: _containers.RepeatedCompositeFieldContainer[IndexRange]
    def __init__(self, payload_id: _Optional[bytes] = ..., ranges: _Optional[_Iterable[_Union[IndexRange, _Mapping]]] = ...) -> None: ...

class Have(_message.Message):
    __slots__ = ("payload_id", "bitmap", "source", "admission")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    BITMAP_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    ADMISSION_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    bitmap: bytes
    source: bytes
    admission: bytes
    def __init__(self, payload_id: _Optional[bytes] = ..., bitmap: _Optional[bytes] = ..., source: _Optional[bytes] = ..., admission: _Optional[bytes] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("payload_id", "have_bytes", "complete", "bytes_sent", "lost_parent", "bad_parent", "bad_chunks", "stripe_have", "stalled", "linked", "idle")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    HAVE_BYTES_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    LOST_PARENT_FIELD_NUMBER: _ClassVar[int]
    BAD_PARENT_FIELD_NUMBER: _ClassVar[int]
    BAD_CHUNKS_FIELD_NUMBER: _ClassVar[int]
    STRIPE_HAVE_FIELD_NUMBER: _ClassVar[int]
    STALLED_FIELD_NUMBER: _ClassVar[int]
    LINKED_FIELD_NUMBER: _ClassVar[int]
    IDLE_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    have_bytes: int
    complete: bool
    bytes_sent: int
    lost_parent: bytes
    bad_parent: bytes
    bad_chunks: int
    stripe_have: _containers.RepeatedScalarFieldContainer[int]
    stalled: bool
    linked: bool
    idle: bool
    def __init__(self, payload_id: _Optional[bytes] = ..., have_bytes: _Optional[int] = ..., complete: _Optional[bool] = ..., bytes_sent: _Optional[int] = ..., lost_parent: _Optional[bytes] = ..., bad_parent: _Optional[bytes] = ..., bad_chunks: _Optional[int] = ..., stripe_have: _Optional[_Iterable[int]] = ..., stalled: _Optional[bool] = ..., linked: _Optional[bool] = ..., idle: _Optional[bool] = ...) -> None: ...

class Assist(_message.Message):
    __slots__ = ("payload_id", "receiver", "helper", "helper_addresses", "stripe", "count")
    PAYLOAD_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVER_FIELD_NUMBER: _ClassVar[int]
    HELPER_FIELD_NUMBER: _ClassVar[int]
    HELPER_ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    STRIPE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    payload_id: bytes
    receiver: bytes
    helper: bytes
    helper_addresses: _containers.RepeatedScalarFieldContainer[str]
    stripe: int
    count: int
    def __init__(self, payload_id: _Optional[bytes] = ..., receiver: _Optional[bytes] = ..., helper: _Optional[bytes] = ..., helper_addresses: _Optional[_Iterable[str]] = ..., stripe: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...
