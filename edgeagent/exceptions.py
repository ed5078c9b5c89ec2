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
    │   └── ChunkVerifyError        a chunk's hash did not match its manifest
    ├── Unauthorized                the peer may not do what it asked
    ├── ObjectStoreError            a worker's object store refused
    │   ├── ObjectNotFound          no object (or plan) by that id
    │   └── QuotaExceeded           the store's byte quota would be exceeded
    ├── OperationError              an allow-listed operation failed or was malformed
    ├── RemoteError                 the peer answered a request with an Error message
    └── RequestTimeout              no reply within the request's deadline

Errors raised by the pure core (``wire``, ``routing``, ``relay`` bookkeeping) are
``ProtocolError``, ``PayloadError`` or ``NoRoute``; they never wrap I/O errors.
"""

from __future__ import annotations

__all__ = [
    "ChunkVerifyError",
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
    "RemoteError",
    "RemoteProtocolError",
    "RequestTimeout",
    "SignatureError",
    "Unauthorized",
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


class ChunkVerifyError(PayloadError):
    """A chunk's bytes do not match the hash in its signed manifest."""


class Unauthorized(EdgeAgentError):
    """The peer is not allowed to do what it asked."""


class ObjectStoreError(EdgeAgentError):
    """A worker's object store refused the request."""


class ObjectNotFound(ObjectStoreError):
    """No object (or plan) is stored under that id (or its lease expired)."""


class QuotaExceeded(ObjectStoreError):
    """Storing the object would exceed the store's byte quota."""


class OperationError(EdgeAgentError):
    """An operation is not allow-listed, has malformed arguments, or failed."""


class RemoteError(EdgeAgentError):
    """The remote node answered with an Error message.

    ``code`` is the wire error code, ``reason`` the peer's explanation.
    """

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(f"remote error {code}: {reason}")
        self.code = code
        self.reason = reason


class RequestTimeout(EdgeAgentError):
    """No reply arrived before the request's deadline."""
