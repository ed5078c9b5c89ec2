from edgeagent.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PubEntry(_message.Message):
    __slots__ = ("publisher", "seq", "value", "published_ms")
    PUBLISHER_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_MS_FIELD_NUMBER: _ClassVar[int]
    publisher: bytes
    seq: int
    value: _common_pb2.Value
    published_ms: int
    def __init__(self, publisher: _Optional[bytes] = ..., seq: _Optional[int] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ..., published_ms: _Optional[int] = ...) -> None: ...

class Subscribe(_message.Message):
    __slots__ = ("topic", "publishers", "seqs")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    PUBLISHERS_FIELD_NUMBER: _ClassVar[int]
    SEQS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    publishers: _containers.RepeatedScalarFieldContainer[bytes]
    seqs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, topic: _Optional[str] = ..., publishers: _Optional[_Iterable[bytes]] = ..., seqs: _Optional[_Iterable[int]] = ...) -> None: ...

class Unsubscribe(_message.Message):
    __slots__ = ("topic",)
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    topic: str
    def __init__(self, topic: _Optional[str] = ...) -> None: ...

class Publish(_message.Message):
    __slots__ = ("topic", "first_seq", "values", "published_ms")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQ_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_MS_FIELD_NUMBER: _ClassVar[int]
    topic: str
    first_seq: int
    values: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    published_ms: int
    def __init__(self, topic: _Optional[str] = ..., first_seq: _Optional[int] = ..., values: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ..., published_ms: _Optional[int] = ...) -> None: ...

class PubAck(_message.Message):
    __slots__ = ("topic", "seq")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    topic: str
    seq: int
    def __init__(self, topic: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class Deliver(_message.Message):
    __slots__ = ("topic", "entries")
    TOPIC_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    topic: str
    entries: _containers.RepeatedCompositeFieldContainer[PubEntry]
    def __init__(self, topic: _Optional[str] = ..., entries: _Optional[_Iterable[_Union[PubEntry, _Mapping]]] = ...) -> None: ...
