from edgeagent.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Plan(_message.Message):
    __slots__ = ("name", "operations", "inputs", "outputs")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    name: str
    operations: _containers.RepeatedCompositeFieldContainer[Operation]
    inputs: _containers.RepeatedScalarFieldContainer[str]
    outputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., operations: _Optional[_Iterable[_Union[Operation, _Mapping]]] = ..., inputs: _Optional[_Iterable[str]] = ..., outputs: _Optional[_Iterable[str]] = ...) -> None: ...

class Operation(_message.Message):
    __slots__ = ("cmd_name", "cmd_owner", "cmd_args", "cmd_kwargs", "return_ids")
    class CmdKwargsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ...) -> None: ...
    CMD_NAME_FIELD_NUMBER: _ClassVar[int]
    CMD_OWNER_FIELD_NUMBER: _ClassVar[int]
    CMD_ARGS_FIELD_NUMBER: _ClassVar[int]
    CMD_KWARGS_FIELD_NUMBER: _ClassVar[int]
    RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    cmd_name: str
    cmd_owner: str
    cmd_args: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    cmd_kwargs: _containers.MessageMap[str, _common_pb2.Value]
    return_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, cmd_name: _Optional[str] = ..., cmd_owner: _Optional[str] = ..., cmd_args: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ..., cmd_kwargs: _Optional[_Mapping[str, _common_pb2.Value]] = ..., return_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class ObjectMessage(_message.Message):
    __slots__ = ("obj_id", "obj", "tags", "description", "lease_ms")
    OBJ_ID_FIELD_NUMBER: _ClassVar[int]
    OBJ_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    obj_id: str
    obj: _common_pb2.Value
    tags: _containers.RepeatedScalarFieldContainer[str]
    description: str
    lease_ms: int
    def __init__(self, obj_id: _Optional[str] = ..., obj: _Optional[_Union[_common_pb2.Value, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., description: _Optional[str] = ..., lease_ms: _Optional[int] = ...) -> None: ...

class ObjectRequestMessage(_message.Message):
    __slots__ = ("obj_id", "keep")
    OBJ_ID_FIELD_NUMBER: _ClassVar[int]
    KEEP_FIELD_NUMBER: _ClassVar[int]
    obj_id: str
    keep: bool
    def __init__(self, obj_id: _Optional[str] = ..., keep: _Optional[bool] = ...) -> None: ...

class IsNoneMessage(_message.Message):
    __slots__ = ("obj_id",)
    OBJ_ID_FIELD_NUMBER: _ClassVar[int]
    obj_id: str
    def __init__(self, obj_id: _Optional[str] = ...) -> None: ...

class GetShapeMessage(_message.Message):
    __slots__ = ("obj_id",)
    OBJ_ID_FIELD_NUMBER: _ClassVar[int]
    obj_id: str
    def __init__(self, obj_id: _Optional[str] = ...) -> None: ...

class ForceObjectDeleteMessage(_message.Message):
    __slots__ = ("obj_ids",)
    OBJ_IDS_FIELD_NUMBER: _ClassVar[int]
    obj_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, obj_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class SearchMessage(_message.Message):
    __slots__ = ("terms",)
    TERMS_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, terms: _Optional[_Iterable[str]] = ...) -> None: ...

class PlanCommandMessage(_message.Message):
    __slots__ = ("command", "plan_name", "plan", "args", "return_ids")
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    PLAN_NAME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ARGS_FIELD_NUMBER: _ClassVar[int]
    RETURN_IDS_FIELD_NUMBER: _ClassVar[int]
    command: str
    plan_name: str
    plan: Plan
    args: _containers.RepeatedCompositeFieldContainer[_common_pb2.Value]
    return_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, command: _Optional[str] = ..., plan_name: _Optional[str] = ..., plan: _Optional[_Union[Plan, _Mapping]] = ..., args: _Optional[_Iterable[_Union[_common_pb2.Value, _Mapping]]] = ..., return_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class RenewLeaseMessage(_message.Message):
    __slots__ = ("obj_ids", "lease_ms")
    OBJ_IDS_FIELD_NUMBER: _ClassVar[int]
    LEASE_MS_FIELD_NUMBER: _ClassVar[int]
    obj_ids: _containers.RepeatedScalarFieldContainer[str]
    lease_ms: int
    def __init__(self, obj_ids: _Optional[_Iterable[str]] = ..., lease_ms: _Optional[int] = ...) -> None: ...
