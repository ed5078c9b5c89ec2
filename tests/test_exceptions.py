"""Error replies become typed exceptions: every wire ErrorCode has its RemoteError subclass."""

from __future__ import annotations

import pytest

from edgeagent import exceptions
from edgeagent.exceptions import (
    EdgeAgentError,
    NoRoute,
    ObjectNotFound,
    ProtocolError,
    QuotaExceeded,
    RemoteBadRequest,
    RemoteBusy,
    RemoteDecodeError,
    RemoteError,
    RemoteInternalError,
    RemoteNoRoute,
    RemoteNotFound,
    RemoteQuotaExceeded,
    RemoteTimeout,
    RemoteUnauthorized,
    RemoteUnsupported,
    RequestTimeout,
    Unauthorized,
    remote_error,
)
from edgeagent.wire.messages.link import ErrorCode

# code -> (class remote_error returns, the local error it also is, or None)
MAPPING: dict[ErrorCode, tuple[type[RemoteError], type[EdgeAgentError] | None]] = {
    ErrorCode.UNKNOWN: (RemoteError, None),
    ErrorCode.BAD_REQUEST: (RemoteBadRequest, None),
    ErrorCode.DECODE: (RemoteDecodeError, ProtocolError),
    ErrorCode.UNAUTHORIZED: (RemoteUnauthorized, Unauthorized),
    ErrorCode.NOT_FOUND: (RemoteNotFound, ObjectNotFound),
    ErrorCode.QUOTA: (RemoteQuotaExceeded, QuotaExceeded),
    ErrorCode.TIMEOUT: (RemoteTimeout, RequestTimeout),
    ErrorCode.NO_ROUTE: (RemoteNoRoute, NoRoute),
    ErrorCode.UNSUPPORTED: (RemoteUnsupported, None),
    ErrorCode.INTERNAL: (RemoteInternalError, None),
    ErrorCode.BUSY: (RemoteBusy, None),
}


def test_the_mapping_covers_every_error_code() -> None:
    assert set(MAPPING) == set(ErrorCode)


def test_the_code_table_matches_the_wire() -> None:
    # exceptions.py cannot import the wire (the wire imports it), so it keeps its own copy
    assert {int(c): c.name for c in ErrorCode} == exceptions._CODE_NAMES


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_each_code_maps_to_its_subclass(code: ErrorCode) -> None:
    cls, extra = MAPPING[code]
    err = remote_error(code, "why it failed")
    assert type(err) is cls
    assert isinstance(err, RemoteError) and isinstance(err, EdgeAgentError)
    if extra is not None:
        assert isinstance(err, extra)
    assert err.code == code and err.reason == "why it failed"
    assert str(err) == f"remote error {int(code)} ({code.name}): why it failed"


@pytest.mark.parametrize("code", list(ErrorCode), ids=lambda c: c.name)
def test_a_plain_int_code_maps_the_same(code: ErrorCode) -> None:
    err = remote_error(int(code), "r")  # decoded Error bodies carry a plain int
    assert type(err) is MAPPING[code][0] and err.code == code


def test_the_extra_bases_are_only_where_the_code_names_a_local_error() -> None:
    locals_ = (ProtocolError, Unauthorized, ObjectNotFound, QuotaExceeded, RequestTimeout, NoRoute)
    for code, (cls, extra) in MAPPING.items():
        assert [b for b in locals_ if issubclass(cls, b)] == ([extra] if extra else []), code.name


def test_an_unknown_code_is_a_plain_remote_error() -> None:
    err = remote_error(999, "from a newer peer")
    assert type(err) is RemoteError
    assert (err.code, err.reason) == (999, "from a newer peer")
    assert str(err) == "remote error 999: from a newer peer"


def test_an_empty_reason_still_reads_well() -> None:
    assert str(remote_error(ErrorCode.BUSY, "")) == "remote error 10 (BUSY)"


def test_callers_can_catch_either_way() -> None:
    with pytest.raises(RemoteError):
        raise remote_error(ErrorCode.NO_ROUTE, "no link to x")
    with pytest.raises(NoRoute, match="no link to x"):
        raise remote_error(ErrorCode.NO_ROUTE, "no link to x")
    with pytest.raises(Unauthorized):
        raise remote_error(ErrorCode.UNAUTHORIZED, "not allowed")
    with pytest.raises(ObjectNotFound):
        raise remote_error(ErrorCode.NOT_FOUND, "no object 'x'")


def test_remote_error_constructor_is_unchanged() -> None:
    err = RemoteError(ErrorCode.BAD_REQUEST, "bad")
    assert (err.code, err.reason) == (ErrorCode.BAD_REQUEST, "bad")
    assert "bad" in str(err) and "BAD_REQUEST" in str(err)


def test_chunk_verify_error_is_gone() -> None:
    # the payload store reports a bad chunk by refusing it (ChunkStore.put returns False)
    assert not hasattr(exceptions, "ChunkVerifyError")
    assert "ChunkVerifyError" not in exceptions.__all__
    assert "ChunkVerifyError" not in (exceptions.__doc__ or "")
