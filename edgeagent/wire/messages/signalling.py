"""WebRTC signalling, carried over an existing authenticated link."""

from __future__ import annotations

from dataclasses import dataclass

from ..schema import BYTES, STR, U32, Message, fld, message

__all__ = ["Answer", "Candidate", "Offer"]


@message(56)
@dataclass(frozen=True, slots=True)
class Offer(Message):
    """An SDP offer, signed so a relaying domain cannot substitute its own DTLS endpoint.

    ``fingerprint_sig`` is the sender's Ed25519 signature over
    ``b"edgeagent-dtls-fingerprint:"`` followed by every ``a=fingerprint:``
    value of the SDP as ``"<hash lower-case> <HEX upper-case>"``, joined by newlines.
    """

    session_id: str = fld(1, STR, "identifies the negotiation")
    sdp: str = fld(2, STR, "the SDP text")
    fingerprint_sig: bytes = fld(3, BYTES, "Ed25519 signature over the SDP's DTLS fingerprints", default=b"")


@message(57)
@dataclass(frozen=True, slots=True)
class Answer(Message):
    """An SDP answer to an Offer with the same ``session_id``, signed like the Offer."""

    session_id: str = fld(1, STR, "the Offer's session id")
    sdp: str = fld(2, STR, "the SDP text")
    fingerprint_sig: bytes = fld(3, BYTES, "Ed25519 signature over the SDP's DTLS fingerprints", default=b"")


@message(58)
@dataclass(frozen=True, slots=True)
class Candidate(Message):
    """A trickled ICE candidate (empty ``candidate`` = end of candidates)."""

    session_id: str = fld(1, STR, "the negotiation")
    candidate: str = fld(2, STR, "the candidate line", default="")
    sdp_mid: str = fld(3, STR, "media stream id", default="")
    sdp_mline_index: int = fld(4, U32, "media line index", default=0)
