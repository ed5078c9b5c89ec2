from edgeagent.v1 import common_pb2 as _common_pb2
from edgeagent.v1 import payload_pb2 as _payload_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Eligibility(_message.Message):
    __slots__ = ("unmetered", "charging", "min_battery", "needs_data")
    UNMETERED_FIELD_NUMBER: _ClassVar[int]
    CHARGING_FIELD_NUMBER: _ClassVar[int]
    MIN_BATTERY_FIELD_NUMBER: _ClassVar[int]
    NEEDS_DATA_FIELD_NUMBER: _ClassVar[int]
    unmetered: bool
    charging: bool
    min_battery: int
    needs_data: bool
    def __init__(self, unmetered: _Optional[bool] = ..., charging: _Optional[bool] = ..., min_battery: _Optional[int] = ..., needs_data: _Optional[bool] = ...) -> None: ...

class JobAdvert(_message.Message):
    __slots__ = ("job_id", "plan", "model", "hyperparams", "rounds", "min_participants", "eligibility", "round_deadline_ms")
    class HyperparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMS_FIELD_NUMBER: _ClassVar[int]
    ROUNDS_FIELD_NUMBER: _ClassVar[int]
    MIN_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    ELIGIBILITY_FIELD_NUMBER: _ClassVar[int]
    ROUND_DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    plan: str
    model: _payload_pb2.Manifest
    hyperparams: _containers.MessageMap[str, _common_pb2.Value]
    rounds: int
    min_participants: int
    eligibility: Eligibility
    round_deadline_ms: int
    def __init__(self, job_id: _Optional[str] = ..., plan: _Optional[str] = ..., model: _Optional[_Union[_payload_pb2.Manifest, _Mapping]] = ..., hyperparams: _Optional[_Mapping[str, _common_pb2.Value]] = ..., rounds: _Optional[int] = ..., min_participants: _Optional[int] = ..., eligibility: _Optional[_Union[Eligibility, _Mapping]] = ..., round_deadline_ms: _Optional[int] = ...) -> None: ...

class JoinRequest(_message.Message):
    __slots__ = ("job_id", "num_samples", "capabilities", "declined")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    DECLINED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    num_samples: int
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    declined: str
    def __init__(self, job_id: _Optional[str] = ..., num_samples: _Optional[int] = ..., capabilities: _Optional[_Iterable[str]] = ..., declined: _Optional[str] = ...) -> None: ...

class JoinReply(_message.Message):
    __slots__ = ("job_id", "accepted", "reason")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    accepted: bool
    reason: str
    def __init__(self, job_id: _Optional[str] = ..., accepted: _Optional[bool] = ..., reason: _Optional[str] = ...) -> None: ...

class RoundStart(_message.Message):
    __slots__ = ("job_id", "round", "model_id", "deadline_ms", "parent", "expected", "hyperparams")
    class HyperparamsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _common_pb2.Value
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[_common_pb2.Value, _Mapping]] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DEADLINE_MS_FIELD_NUMBER: _ClassVar[int]
    PARENT_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMS_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    model_id: bytes
    deadline_ms: int
    parent: bytes
    expected: _containers.RepeatedScalarFieldContainer[bytes]
    hyperparams: _containers.MessageMap[str, _common_pb2.Value]
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., model_id: _Optional[bytes] = ..., deadline_ms: _Optional[int] = ..., parent: _Optional[bytes] = ..., expected: _Optional[_Iterable[bytes]] = ..., hyperparams: _Optional[_Mapping[str, _common_pb2.Value]] = ...) -> None: ...

class Update(_message.Message):
    __slots__ = ("job_id", "round", "weighted_delta", "num_samples", "contributors", "dropped", "metrics", "rerouted")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    WEIGHTED_DELTA_FIELD_NUMBER: _ClassVar[int]
    NUM_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTORS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    REROUTED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    weighted_delta: _containers.RepeatedCompositeFieldContainer[_common_pb2.Tensor]
    num_samples: int
    contributors: _containers.RepeatedScalarFieldContainer[bytes]
    dropped: _containers.RepeatedScalarFieldContainer[bytes]
    metrics: _containers.ScalarMap[str, float]
    rerouted: bool
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., weighted_delta: _Optional[_Iterable[_Union[_common_pb2.Tensor, _Mapping]]] = ..., num_samples: _Optional[int] = ..., contributors: _Optional[_Iterable[bytes]] = ..., dropped: _Optional[_Iterable[bytes]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., rerouted: _Optional[bool] = ...) -> None: ...

class RoundResult(_message.Message):
    __slots__ = ("job_id", "round", "participants", "dropped", "metrics", "next_model_id", "done", "checkpoint")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ROUND_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    NEXT_MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    round: int
    participants: int
    dropped: int
    metrics: _containers.ScalarMap[str, float]
    next_model_id: bytes
    done: bool
    checkpoint: str
    def __init__(self, job_id: _Optional[str] = ..., round: _Optional[int] = ..., participants: _Optional[int] = ..., dropped: _Optional[int] = ..., metrics: _Optional[_Mapping[str, float]] = ..., next_model_id: _Optional[bytes] = ..., done: _Optional[bool] = ..., checkpoint: _Optional[str] = ...) -> None: ...
