"""Every error edgeagent raises, in one tree.

::

    EdgeAgentError
    ├── ConfigError                 bad configuration or command-line value
    ├── IdentityError               key files: missing, unreadable, too open, malformed
    │   └── SignatureError          a signature did not verify
    ├── ProtocolError               the wire protocol was broken
    │   ├── LocalProtocolError      *we* misused it (e.g. encoding an out-of-range value)
    │   │   └── EncodeError
    │   └── RemoteProtocolError     *the peer* misbehaved: blame it, maybe drop it
    │       └── DecodeError         a frame could not be decoded (the reason says why)
    ├── LinkError                   a transport failed (transport exceptions are
    │   ├── HandshakeError          converted to these at the link boundary)
    │   ├── LinkClosed
    │   └── LinkTimeout
    ├── NoRoute                     no usable route to a destination
    ├── PayloadError                a payload transfer failed
    ├── Unauthorized                not allowed to do what was asked
    ├── ObjectStoreError            a worker's object store refused
    │   ├── ObjectNotFound          no object (or plan) by that id
    │   └── QuotaExceeded           the store's byte quota would be exceeded
    ├── OperationError              an allow-listed operation failed or was malformed
    ├── RequestTimeout              no reply within the request's deadline
    └── RemoteError                 the peer answered a request with an Error message;
        │                           :func:`remote_error` picks the subclass by code
        ├── RemoteBadRequest        BAD_REQUEST
        ├── RemoteDecodeError       DECODE        (also a ProtocolError)
        ├── RemoteUnauthorized      UNAUTHORIZED  (also an Unauthorized)
        ├── RemoteNotFound          NOT_FOUND     (also an ObjectNotFound)
        ├── RemoteQuotaExceeded     QUOTA         (also a QuotaExceeded)
        ├── RemoteTimeout           TIMEOUT       (also a RequestTimeout)
        ├── RemoteNoRoute           NO_ROUTE      (also a NoRoute)
        ├── RemoteUnsupported       UNSUPPORTED
        ├── RemoteInternalError     INTERNAL
        └── RemoteBusy              BUSY

A ``RemoteError`` subclass with a second base is caught both ways: ``except
RemoteError`` sees every Error reply, ``except NoRoute`` sees a local *and* a
remote lack of route. UNKNOWN and codes this version does not know give a plain
``RemoteError``.

Errors raised by the pure core (``wire``, ``routing``, ``relay`` bookkeeping) are
``ProtocolError``, ``PayloadError`` or ``NoRoute``; they never wrap I/O errors.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "DecodeError",
    "EdgeAgentError",
    "EncodeError",
    "HandshakeError",
    "IdentityError",
    "LinkClosed",
    "LinkError",
    "LinkTimeout",
    "LocalProtocolError",
    "NoRoute",
    "ObjectNotFound",
    "ObjectStoreError",
    "OperationError",
    "PayloadError",
    "ProtocolError",
    "QuotaExceeded",
    "RemoteBadRequest",
    "RemoteBusy",
    "RemoteDecodeError",
    "RemoteError",
    "RemoteInternalError",
    "RemoteNoRoute",
    "RemoteNotFound",
    "RemoteProtocolError",
    "RemoteQuotaExceeded",
    "RemoteTimeout",
    "RemoteUnauthorized",
    "RemoteUnsupported",
    "RequestTimeout",
    "SignatureError",
    "Unauthorized",
    "remote_error",
]


class EdgeAgentError(Exception):
    """Base class of every error edgeagent raises on purpose."""


class ConfigError(EdgeAgentError):
    """A configuration file, option or command-line value is invalid."""


class IdentityError(EdgeAgentError):
    """A node key could not be created, read or used."""


class SignatureError(IdentityError):
    """A signature did not verify against the claimed key."""


class ProtocolError(EdgeAgentError):
    """The wire protocol was broken, by us or by the peer."""


class LocalProtocolError(ProtocolError):
    """This process misused the protocol (a bug or bad input from our caller)."""


class EncodeError(LocalProtocolError):
    """A message could not be encoded: a field holds a value the wire cannot carry."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the protocol; it is to blame and may be dropped."""


class DecodeError(RemoteProtocolError):
    """A frame could not be decoded. ``str(err)`` gives the reason.

    Decoding raises this and nothing else, whatever the bytes.
    """


class LinkError(EdgeAgentError):
    """A network link failed."""


class HandshakeError(LinkError):
    """The link handshake failed: wrong identity, bad proof, timeout, garbage."""


class LinkClosed(LinkError):
    """The link is closed; nothing more can be sent or received on it."""


class LinkTimeout(LinkError):
    """The link did not answer in time and is presumed dead."""


class NoRoute(EdgeAgentError):
    """No usable route leads to the destination."""


class PayloadError(EdgeAgentError):
    """A payload could not be stored, verified or transferred."""


class Unauthorized(EdgeAgentError):
    """Not allowed to do what was asked: a peer refused us (:class:`RemoteUnauthorized`)."""


class ObjectStoreError(EdgeAgentError):
    """A worker's object store refused the request."""


class ObjectNotFound(ObjectStoreError):
    """No object (or plan) is stored under that id (or its lease expired)."""


class QuotaExceeded(ObjectStoreError):
    """Storing the object would exceed the store's byte quota."""


class OperationError(EdgeAgentError):
    """An operation is not allow-listed, has malformed arguments, or failed."""


class RequestTimeout(EdgeAgentError):
    """No reply arrived before the request's deadline."""


# The wire's ErrorCode (edgeagent.wire.messages.link), by value: the wire imports this
# module, so this module does not import the wire. tests/test_exceptions.py pins the two.
_CODE_NAMES: dict[int, str] = {
    0: "UNKNOWN",
    1: "BAD_REQUEST",
    2: "DECODE",
    3: "UNAUTHORIZED",
    4: "NOT_FOUND",
    5: "QUOTA",
    6: "TIMEOUT",
    7: "NO_ROUTE",
    8: "UNSUPPORTED",
    9: "INTERNAL",
    10: "BUSY",
}


class RemoteError(EdgeAgentError):
    """The remote node answered with an Error message.

    ``code`` is the wire error code, ``reason`` the peer's explanation. Build one from
    an Error reply with :func:`remote_error`, which picks the subclass for the code.
    """

    def __init__(self, code: int, reason: str) -> None:
        name = _CODE_NAMES.get(code)
        label = f"{code} ({name})" if name else f"{code}"
        super().__init__(f"remote error {label}: {reason}" if reason else f"remote error {label}")
        self.code = code
        self.reason = reason


class RemoteBadRequest(RemoteError):
    """BAD_REQUEST: the peer refused the request as malformed or failed carrying it out."""


class RemoteDecodeError(RemoteError, ProtocolError):
    """DECODE: the peer could not decode what we sent."""


class RemoteUnauthorized(RemoteError, Unauthorized):
    """UNAUTHORIZED: the peer (or the domain relaying for it) does not allow us this."""


class RemoteNotFound(RemoteError, ObjectNotFound):
    """NOT_FOUND: the peer holds no object, plan or stream by that id."""


class RemoteQuotaExceeded(RemoteError, QuotaExceeded):
    """QUOTA: the peer's store would exceed its byte quota."""


class RemoteTimeout(RemoteError, RequestTimeout):
    """TIMEOUT: the peer gave up waiting on its side."""


class RemoteNoRoute(RemoteError, NoRoute):
    """NO_ROUTE: a relay on the way has no route to the destination."""


class RemoteUnsupported(RemoteError):
    """UNSUPPORTED: the peer does not handle this kind of request."""


class RemoteInternalError(RemoteError):
    """INTERNAL: the peer failed with a bug of its own."""


class RemoteBusy(RemoteError):
    """BUSY: the peer is overloaded; try again later."""


_BY_CODE: dict[int, type[RemoteError]] = {
    1: RemoteBadRequest,
    2: RemoteDecodeError,
    3: RemoteUnauthorized,
    4: RemoteNotFound,
    5: RemoteQuotaExceeded,
    6: RemoteTimeout,
    7: RemoteNoRoute,
    8: RemoteUnsupported,
    9: RemoteInternalError,
    10: RemoteBusy,
}


def remote_error(code: int, reason: str) -> RemoteError:
    """The exception for an Error reply: the :class:`RemoteError` subclass for ``code``.

    UNKNOWN, and any code this version does not know, give a plain ``RemoteError``.
    """
    return _BY_CODE.get(code, RemoteError)(code, reason)
