from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DialResult(_message.Message):
    __slots__ = ("url", "ok", "error")
    URL_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    url: str
    ok: bool
    error: str
    def __init__(self, url: _Optional[str] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class DialBack(_message.Message):
    __slots__ = ("ports",)
    PORTS_FIELD_NUMBER: _ClassVar[int]
    ports: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ports: _Optional[_Iterable[int]] = ...) -> None: ...

class DialBackReply(_message.Message):
    __slots__ = ("observed", "results")
    OBSERVED_FIELD_NUMBER: _ClassVar[int]
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    observed: str
    results: _containers.RepeatedCompositeFieldContainer[DialResult]
    def __init__(self, observed: _Optional[str] = ..., results: _Optional[_Iterable[_Union[DialResult, _Mapping]]] = ...) -> None: ...
