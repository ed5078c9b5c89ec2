from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from typing import ClassVar as _ClassVar, Optional as _Optional

DESCRIPTOR: _descriptor.FileDescriptor

class Offer(_message.Message):
    __slots__ = ("session_id", "sdp", "fingerprint_sig")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_SIG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sdp: str
    fingerprint_sig: bytes
    def __init__(self, session_id: _Optional[str] = ..., sdp: _Optional[str] = ..., fingerprint_sig: _Optional[bytes] = ...) -> None: ...

class Answer(_message.Message):
    __slots__ = ("session_id", "sdp", "fingerprint_sig")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_SIG_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    sdp: str
    fingerprint_sig: bytes
    def __init__(self, session_id: _Optional[str] = ..., sdp: _Optional[str] = ..., fingerprint_sig: _Optional[bytes] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("session_id", "candidate", "sdp_mid", "sdp_mline_index")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SDP_MID_FIELD_NUMBER: _ClassVar[int]
    SDP_MLINE_INDEX_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    candidate: str
    sdp_mid: str
    sdp_mline_index: int
    def __init__(self, session_id: _Optional[str] = ..., candidate: _Optional[str] = ..., sdp_mid: _Optional[str] = ..., sdp_mline_index: _Optional[int] = ...) -> None: ...
