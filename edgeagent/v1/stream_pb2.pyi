from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class StreamData(_message.Message):
    __slots__ = ("stream_id", "offset", "size", "name", "fin", "data")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FIN_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    stream_id: bytes
    offset: int
    size: int
    name: str
    fin: bool
    data: bytes
    def __init__(self, stream_id: _Optional[bytes] = ..., offset: _Optional[int] = ..., size: _Optional[int] = ..., name: _Optional[str] = ..., fin: _Optional[bool] = ..., data: _Optional[bytes] = ...) -> None: ...

class StreamAck(_message.Message):
    __slots__ = ("stream_id", "offset", "gap", "complete", "error")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    GAP_FIELD_NUMBER: _ClassVar[int]
    COMPLETE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    stream_id: bytes
    offset: int
    gap: bool
    complete: bool
    error: str
    def __init__(self, stream_id: _Optional[bytes] = ..., offset: _Optional[int] = ..., gap: _Optional[bool] = ..., complete: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class StreamedObject(_message.Message):
    __slots__ = ("stream_id", "obj_id", "dtype", "shape", "tags", "description", "lease_ms")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    OBJ_ID_FIELD_NUMBER: _ClassVar[int]
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    stream_id: bytes
    obj_id: str
    dtype: str
    shape: _containers.RepeatedScalarFieldContainer[int]
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    lease_ms: int
    def __init__(self, stream_id: _Optional[bytes] = ..., obj_id: _Optional[str] = ..., dtype: _Optional[str] = ..., shape: _Optional[_Iterable[int]] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...
