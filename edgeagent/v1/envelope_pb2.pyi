from edgeagent.v1 import discovery_pb2 as _discovery_pb2
from edgeagent.v1 import fl_pb2 as _fl_pb2
from edgeagent.v1 import link_pb2 as _link_pb2
from edgeagent.v1 import payload_pb2 as _payload_pb2
from edgeagent.v1 import pubsub_pb2 as _pubsub_pb2
from edgeagent.v1 import reach_pb2 as _reach_pb2
from edgeagent.v1 import route_pb2 as _route_pb2
from edgeagent.v1 import signalling_pb2 as _signalling_pb2
from edgeagent.v1 import stream_pb2 as _stream_pb2
from edgeagent.v1 import worker_pb2 as _worker_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Envelope(_message.Message):
    __slots__ = ("version", "msg_id", "source", "destination", "route", "reply_to", "ttl", "proof", "hello", "ping", "pong", "close", "response", "error", "credit", "operation", "object_message", "object_request_message", "is_none_message", "get_shape_message", "force_object_delete_message", "search_message", "plan_command_message", "renew_lease_message", "peer_record", "peer_list", "route_request", "route_reply", "hop_report", "dial_back", "dial_back_reply", "offer", "answer", "candidate", "manifest", "tree_assign", "chunk", "chunk_request", "have", "progress", "assist", "stream_data", "stream_ack", "streamed_object", "job_advert", "join_request", "join_reply", "round_start", "update", "round_result", "subscribe", "unsubscribe", "publish", "pub_ack", "deliver")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MSG_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    REPLY_TO_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    HELLO_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    CLOSE_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREDIT_FIELD_NUMBER: _ClassVar[int]
    OPERATION_FIELD_NUMBER: _ClassVar[int]
    OBJECT_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    OBJECT_REQUEST_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    IS_NONE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    GET_SHAPE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FORCE_OBJECT_DELETE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_COMMAND_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    RENEW_LEASE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    PEER_RECORD_FIELD_NUMBER: _ClassVar[int]
    PEER_LIST_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REQUEST_FIELD_NUMBER: _ClassVar[int]
    ROUTE_REPLY_FIELD_NUMBER: _ClassVar[int]
    HOP_REPORT_FIELD_NUMBER: _ClassVar[int]
    DIAL_BACK_FIELD_NUMBER: _ClassVar[int]
    DIAL_BACK_REPLY_FIELD_NUMBER: _ClassVar[int]
    OFFER_FIELD_NUMBER: _ClassVar[int]
    ANSWER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_FIELD_NUMBER: _ClassVar[int]
    TREE_ASSIGN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    CHUNK_REQUEST_FIELD_NUMBER: _ClassVar[int]
    HAVE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    ASSIST_FIELD_NUMBER: _ClassVar[int]
    STREAM_DATA_FIELD_NUMBER: _ClassVar[int]
    STREAM_ACK_FIELD_NUMBER: _ClassVar[int]
    STREAMED_OBJECT_FIELD_NUMBER: _ClassVar[int]
    JOB_ADVERT_FIELD_NUMBER: _ClassVar[int]
    JOIN_REQUEST_FIELD_NUMBER: _ClassVar[int]
    JOIN_REPLY_FIELD_NUMBER: _ClassVar[int]
    ROUND_START_FIELD_NUMBER: _ClassVar[int]
    UPDATE_FIELD_NUMBER: _ClassVar[int]
    ROUND_RESULT_FIELD_NUMBER: _ClassVar[int]
    SUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    UNSUBSCRIBE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    PUB_ACK_FIELD_NUMBER: _ClassVar[int]
    DELIVER_FIELD_NUMBER: _ClassVar[int]
    version: int
    msg_id: int
    source: bytes
    destination: bytes
    route: _route_pb2.Route
    reply_to: int
    ttl: int
    proof: bytes
    hello: _link_pb2.Hello
    ping: _link_pb2.Ping
    pong: _link_pb2.Pong
    close: _link_pb2.Close
    response: _link_pb2.Response
    error: _link_pb2.Error
    credit: _link_pb2.Credit
    operation: _worker_pb2.Operation
    object_message: _worker_pb2.ObjectMessage
    object_request_message: _worker_pb2.ObjectRequestMessage
    is_none_message: _worker_pb2.IsNoneMessage
    get_shape_message: _worker_pb2.GetShapeMessage
    force_object_delete_message: _worker_pb2.ForceObjectDeleteMessage
    search_message: _worker_pb2.SearchMessage
    plan_command_message: _worker_pb2.PlanCommandMessage
    renew_lease_message: _worker_pb2.RenewLeaseMessage
    peer_record: _discovery_pb2.PeerRecord
    peer_list: _discovery_pb2.PeerList
    route_request: _discovery_pb2.RouteRequest
    route_reply: _discovery_pb2.RouteReply
    hop_report: _discovery_pb2.HopReport
    dial_back: _reach_pb2.DialBack
    dial_back_reply: _reach_pb2.DialBackReply
    offer: _signalling_pb2.Offer
    answer: _signalling_pb2.Answer
    candidate: _signalling_pb2.Candidate
    manifest: _payload_pb2.Manifest
    tree_assign: _payload_pb2.TreeAssign
    chunk: _payload_pb2.Chunk
    chunk_request: _payload_pb2.ChunkRequest
    have: _payload_pb2.Have
    progress: _payload_pb2.Progress
    assist: _payload_pb2.Assist
    stream_data: _stream_pb2.StreamData
    stream_ack: _stream_pb2.StreamAck
    streamed_object: _stream_pb2.StreamedObject
    job_advert: _fl_pb2.JobAdvert
    join_request: _fl_pb2.JoinRequest
    join_reply: _fl_pb2.JoinReply
    round_start: _fl_pb2.RoundStart
    update: _fl_pb2.Update
    round_result: _fl_pb2.RoundResult
    subscribe: _pubsub_pb2.Subscribe
    unsubscribe: _pubsub_pb2.Unsubscribe
    publish: _pubsub_pb2.Publish
    pub_ack: _pubsub_pb2.PubAck
    deliver: _pubsub_pb2.Deliver
    def __init__(self, version: _Optional[int] = ..., msg_id: _Optional[int] = ..., source: _Optional[bytes] = ..., destination: _Optional[bytes] = ..., route: _Optional[_Union[_route_pb2.Route, _Mapping]] = ..., reply_to: _Optional[int] = ..., ttl: _Optional[int] = ..., proof: _Optional[bytes] = ..., hello: _Optional[_Union[_link_pb2.Hello, _Mapping]] = ..., ping: _Optional[_Union[_link_pb2.Ping, _Mapping]] = ..., pong: _Optional[_Union[_link_pb2.Pong, _Mapping]] = ..., close: _Optional[_Union[_link_pb2.Close, _Mapping]] = ..., response: _Optional[_Union[_link_pb2.Response, _Mapping]] = ..., error: _Optional[_Union[_link_pb2.Error, _Mapping]] = ..., credit: _Optional[_Union[_link_pb2.Credit, _Mapping]] = ..., operation: _Optional[_Union[_worker_pb2.Operation, _Mapping]] = ..., object_message: _Optional[_Union[_worker_pb2.ObjectMessage, _Mapping]] = ..., object_request_message: _Optional[_Union[_worker_pb2.ObjectRequestMessage, _Mapping]] = ..., is_none_message: _Optional[_Union[_worker_pb2.IsNoneMessage, _Mapping]] = ..., get_shape_message: _Optional[_Union[_worker_pb2.GetShapeMessage, _Mapping]] = ..., force_object_delete_message: _Optional[_Union[_worker_pb2.ForceObjectDeleteMessage, _Mapping]] = ..., search_message: _Optional[_Union[_worker_pb2.SearchMessage, _Mapping]] = ..., plan_command_message: _Optional[_Union[_worker_pb2.PlanCommandMessage, _Mapping]] = ..., renew_lease_message: _Optional[_Union[_worker_pb2.RenewLeaseMessage, _Mapping]] = ..., peer_record: _Optional[_Union[_discovery_pb2.PeerRecord, _Mapping]] = ..., peer_list: _Optional[_Union[_discovery_pb2.PeerList, _Mapping]] = ..., route_request: _Optional[_Union[_discovery_pb2.RouteRequest, _Mapping]] = ..., route_reply: _Optional[_Union[_discovery_pb2.RouteReply, _Mapping]] = ..., hop_report: _Optional[_Union[_discovery_pb2.HopReport, _Mapping]] = ..., dial_back: _Optional[_Union[_reach_pb2.DialBack, _Mapping]] = ..., dial_back_reply: _Optional[_Union[_reach_pb2.DialBackReply, _Mapping]] = ..., offer: _Optional[_Union[_signalling_pb2.Offer, _Mapping]] = ..., answer: _Optional[_Union[_signalling_pb2.Answer, _Mapping]] = ..., candidate: _Optional[_Union[_signalling_pb2.Candidate, _Mapping]] = ..., manifest: _Optional[_Union[_payload_pb2.Manifest, _Mapping]] = ..., tree_assign: _Optional[_Union[_payload_pb2.TreeAssign, _Mapping]] = ..., chunk: _Optional[_Union[_payload_pb2.Chunk, _Mapping]] = ..., chunk_request: _Optional[_Union[_payload_pb2.ChunkRequest, _Mapping]] = ..., have: _Optional[_Union[_payload_pb2.Have, _Mapping]] = ..., progress: _Optional[_Union[_payload_pb2.Progress, _Mapping]] = ..., assist: _Optional[_Union[_payload_pb2.Assist, _Mapping]] = ..., stream_data: _Optional[_Union[_stream_pb2.StreamData, _Mapping]] = ..., stream_ack: _Optional[_Union[_stream_pb2.StreamAck, _Mapping]] = ..., streamed_object: _Optional[_Union[_stream_pb2.StreamedObject, _Mapping]] = ..., job_advert: _Optional[_Union[_fl_pb2.JobAdvert, _Mapping]] = ..., join_request: _Optional[_Union[_fl_pb2.JoinRequest, _Mapping]] = ..., join_reply: _Optional[_Union[_fl_pb2.JoinReply, _Mapping]] = ..., round_start: _Optional[_Union[_fl_pb2.RoundStart, _Mapping]] = ..., update: _Optional[_Union[_fl_pb2.Update, _Mapping]] = ..., round_result: _Optional[_Union[_fl_pb2.RoundResult, _Mapping]] = ..., subscribe: _Optional[_Union[_pubsub_pb2.Subscribe, _Mapping]] = ..., unsubscribe: _Optional[_Union[_pubsub_pb2.Unsubscribe, _Mapping]] = ..., publish: _Optional[_Union[_pubsub_pb2.Publish, _Mapping]] = ..., pub_ack: _Optional[_Union[_pubsub_pb2.PubAck, _Mapping]] = ..., deliver: _Optional[_Union[_pubsub_pb2.Deliver, _Mapping]] = ...) -> None: ...
