"""Every message family of the protocol (importing this registers them all)."""

from __future__ import annotations

from .discovery import HopReport, PeerList, PeerRecord, RouteReply, RouteRequest
from .fl import Eligibility, JobAdvert, JoinReply, JoinRequest, RoundResult, RoundStart, Update
from .link import Close, Credit, Error, ErrorCode, HandshakeOffer, HandshakePayload, Hello, Ping, Pong, Response
from .payload import HASH_SIZES, Assist, Chunk, ChunkRequest, Have, IndexRange, Manifest, Progress, TreeAssign
from .pubsub import Deliver, PubAck, PubEntry, Publish, Subscribe, Unsubscribe
from .reach import DialBack, DialBackReply, DialResult
from .signalling import Answer, Candidate, Offer
from .stream import StreamAck, StreamData, StreamedObject
from .worker import (
    ForceObjectDeleteMessage,
    GetShapeMessage,
    IsNoneMessage,
    ObjectMessage,
    ObjectRequestMessage,
    Operation,
    Plan,
    PlanCommandMessage,
    RenewLeaseMessage,
    SearchMessage,
)

__all__ = [
    "DialBack",
    "DialBackReply",
    "DialResult",
    "StreamedObject",
    "Unsubscribe",
    "Subscribe",
    "Publish",
    "PubEntry",
    "PubAck",
    "Deliver",
    "HASH_SIZES",
    "Answer",
    "Candidate",
    "Chunk",
    "ChunkRequest",
    "Close",
    "Credit",
    "Eligibility",
    "Error",
    "ErrorCode",
    "ForceObjectDeleteMessage",
    "GetShapeMessage",
    "HandshakeOffer",
    "HandshakePayload",
    "Have",
    "HopReport",
    "Hello",
    "IndexRange",
    "IsNoneMessage",
    "JobAdvert",
    "JoinReply",
    "JoinRequest",
    "Manifest",
    "ObjectMessage",
    "ObjectRequestMessage",
    "Offer",
    "Operation",
    "PeerList",
    "PeerRecord",
    "RouteReply",
    "RouteRequest",
    "Ping",
    "Plan",
    "PlanCommandMessage",
    "Pong",
    "Progress",
    "RenewLeaseMessage",
    "Response",
    "RoundResult",
    "RoundStart",
    "SearchMessage",
    "StreamAck",
    "StreamData",
    "TreeAssign",
    "Assist",
    "Update",
]
