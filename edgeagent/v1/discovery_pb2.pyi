from edgeagent.v1 import route_pb2 as _route_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PeerRecord(_message.Message):
    __slots__ = ("node_id", "seq", "role", "addresses", "capabilities", "network_kind", "metered", "cost_per_gb", "upload_bps", "lan_group", "issued_ms", "ttl_s", "signature")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ADDRESSES_FIELD_NUMBER: _ClassVar[int]
    CAPABILITIES_FIELD_NUMBER: _ClassVar[int]
    NETWORK_KIND_FIELD_NUMBER: _ClassVar[int]
    METERED_FIELD_NUMBER: _ClassVar[int]
    COST_PER_GB_FIELD_NUMBER: _ClassVar[int]
    UPLOAD_BPS_FIELD_NUMBER: _ClassVar[int]
    LAN_GROUP_FIELD_NUMBER: _ClassVar[int]
    ISSUED_MS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    SIGNATURE_FIELD_NUMBER: _ClassVar[int]
    node_id: bytes
    seq: int
    role: str
    addresses: _containers.RepeatedScalarFieldContainer[str]
    capabilities: _containers.RepeatedScalarFieldContainer[str]
    network_kind: str
    metered: bool
    cost_per_gb: float
    upload_bps: float
    lan_group: str
    issued_ms: int
    ttl_s: int
    signature: bytes
    def __init__(self, node_id: _Optional[bytes] = ..., seq: _Optional[int] = ..., role: _Optional[str] = ..., addresses: _Optional[_Iterable[str]] = ..., capabilities: _Optional[_Iterable[str]] = ..., network_kind: _Optional[str] = ..., metered: _Optional[bool] = ..., cost_per_gb: _Optional[float] = ..., upload_bps: _Optional[float] = ..., lan_group: _Optional[str] = ..., issued_ms: _Optional[int] = ..., ttl_s: _Optional[int] = ..., signature: _Optional[bytes] = ...) -> None: ...

class PeerList(_message.Message):
    __slots__ = ("peers", "removed", "page", "pages", "registration")
    PEERS_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    PAGE_FIELD_NUMBER: _ClassVar[int]
    PAGES_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    peers: _containers.RepeatedCompositeFieldContainer[PeerRecord]
    removed: _containers.RepeatedScalarFieldContainer[bytes]
    page: int
    pages: int
    registration: int
    def __init__(self, peers: _Optional[_Iterable[_Union[PeerRecord, _Mapping]]] = ..., removed: _Optional[_Iterable[bytes]] = ..., page: _Optional[int] = ..., pages: _Optional[int] = ..., registration: _Optional[int] = ...) -> None: ...

class RouteRequest(_message.Message):
    __slots__ = ("destinations", "purpose", "size_hint", "max_routes")
    DESTINATIONS_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    SIZE_HINT_FIELD_NUMBER: _ClassVar[int]
    MAX_ROUTES_FIELD_NUMBER: _ClassVar[int]
    destinations: _containers.RepeatedScalarFieldContainer[bytes]
    purpose: str
    size_hint: int
    max_routes: int
    def __init__(self, destinations: _Optional[_Iterable[bytes]] = ..., purpose: _Optional[str] = ..., size_hint: _Optional[int] = ..., max_routes: _Optional[int] = ...) -> None: ...

class RouteReply(_message.Message):
    __slots__ = ("routes",)
    ROUTES_FIELD_NUMBER: _ClassVar[int]
    routes: _containers.RepeatedCompositeFieldContainer[_route_pb2.Route]
    def __init__(self, routes: _Optional[_Iterable[_Union[_route_pb2.Route, _Mapping]]] = ...) -> None: ...

class HopReport(_message.Message):
    __slots__ = ("hops", "relays", "ttl_s")
    HOPS_FIELD_NUMBER: _ClassVar[int]
    RELAYS_FIELD_NUMBER: _ClassVar[int]
    TTL_S_FIELD_NUMBER: _ClassVar[int]
    hops: _containers.RepeatedCompositeFieldContainer[_route_pb2.Hop]
    relays: bool
    ttl_s: int
    def __init__(self, hops: _Optional[_Iterable[_Union[_route_pb2.Hop, _Mapping]]] = ..., relays: _Optional[bool] = ..., ttl_s: _Optional[int] = ...) -> None: ...
