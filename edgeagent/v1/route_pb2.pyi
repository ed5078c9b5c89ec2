from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Hop(_message.Message):
    __slots__ = ("src", "dst", "transport", "address", "rtt_ms", "bandwidth_bps", "cost_per_gb", "network_kind", "metered")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RTT_MS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    COST_PER_GB_FIELD_NUMBER: _ClassVar[int]
    NETWORK_KIND_FIELD_NUMBER: _ClassVar[int]
    METERED_FIELD_NUMBER: _ClassVar[int]
    src: bytes
    dst: bytes
    transport: str
    address: str
    rtt_ms: float
    bandwidth_bps: float
    cost_per_gb: float
    network_kind: str
    metered: bool
    def __init__(self, src: _Optional[bytes] = ..., dst: _Optional[bytes] = ..., transport: _Optional[str] = ..., address: _Optional[str] = ..., rtt_ms: _Optional[float] = ..., bandwidth_bps: _Optional[float] = ..., cost_per_gb: _Optional[float] = ..., network_kind: _Optional[str] = ..., metered: _Optional[bool] = ...) -> None: ...

class Route(_message.Message):
    __slots__ = ("schema", "stops", "kind", "latency_ms", "bandwidth_bps", "health", "cost_per_gb")
    SCHEMA_FIELD_NUMBER: _ClassVar[int]
    STOPS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_BPS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    COST_PER_GB_FIELD_NUMBER: _ClassVar[int]
    schema: RouteSchema
    stops: RouteSegment
    kind: int
    latency_ms: float
    bandwidth_bps: float
    health: float
    cost_per_gb: float
    def __init__(self, schema: _Optional[_Union[RouteSchema, _Mapping]] = ..., stops: _Optional[_Union[RouteSegment, _Mapping]] = ..., kind: _Optional[int] = ..., latency_ms: _Optional[float] = ..., bandwidth_bps: _Optional[float] = ..., health: _Optional[float] = ..., cost_per_gb: _Optional[float] = ...) -> None: ...

class RouteSchema(_message.Message):
    __slots__ = ("source", "destinations")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    source: bytes
    destinations: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, source: _Optional[bytes] = ..., destinations: _Optional[_Iterable[bytes]] = ...) -> None: ...

class RouteSegment(_message.Message):
    __slots__ = ("hops", "children")
    HOPS_FIELD_NUMBER: _ClassVar[int]
    CHILDREN_FIELD_NUMBER: _ClassVar[int]
    hops: _containers.RepeatedCompositeFieldContainer[Hop]
    children: _containers.RepeatedCompositeFieldContainer[RouteSegment]
    def __init__(self, hops: _Optional[_Iterable[_Union[Hop, _Mapping]]] = ..., children: _Optional[_Iterable[_Union[RouteSegment, _Mapping]]] = ...) -> None: ...
