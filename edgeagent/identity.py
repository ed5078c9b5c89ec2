"""Node identity: an Ed25519 key pair, its NodeId, signing and verifying.

The private key lives in ``<state>/identity.key`` (PKCS#8 PEM, unencrypted),
created with mode 0600 on first run. A key file that group or others can read
is refused, as ssh does, because anyone who reads it can impersonate the node.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Final, TypeVar

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .exceptions import IdentityError, SignatureError
from .wire.nodeid import NodeId

if TYPE_CHECKING:
    from .wire.envelope import Envelope

__all__ = [
    "KEY_FILE",
    "Identity",
    "NodeId",
    "origin_message",
    "origin_proven",
    "prove_origin",
    "sign_struct",
    "signing_bytes",
    "verify",
    "verify_struct",
]

KEY_FILE: Final = "identity.key"
_S = TypeVar("_S")


class Identity:
    """A node's key pair. ``node_id`` is derived from the public key."""

    __slots__ = ("_key", "node_id")

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.node_id = NodeId.from_public_key(raw)

    @classmethod
    def generate(cls) -> Identity:
        return cls(Ed25519PrivateKey.generate())

    def sign(self, data: bytes) -> bytes:
        """A 64-byte Ed25519 signature over ``data``."""
        return self._key.sign(data)

    def save(self, path: Path) -> None:
        """Write the private key to a new file with mode 0600 (never overwrites)."""
        pem = self._key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except FileExistsError:
            raise IdentityError(f"{path} already exists; refusing to overwrite a node key") from None
        except OSError as exc:
            raise IdentityError(f"cannot create {path}: {exc.strerror}") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(pem)
        os.chmod(path, 0o600)  # in case the umask or filesystem widened it

    @classmethod
    def load(cls, path: Path) -> Identity:
        """Read a key file; refuses a symlink, and a file readable by group or others."""
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            raise IdentityError(f"no key at {path}; run `edgeagent keygen --state {path.parent}`") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise IdentityError(f"{path} is a symbolic link; a node key must be a file of its own") from None
            raise IdentityError(f"cannot read {path}: {exc.strerror}") from None
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise IdentityError(f"{path} is not a regular file")
            if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise IdentityError(
                    f"{path} is accessible by others (mode {stat.S_IMODE(st.st_mode):o}); run `chmod 600 {path}`"
                )
            raw = fh.read()
        try:
            key = serialization.load_pem_private_key(raw, password=None)
        except (ValueError, TypeError) as exc:
            raise IdentityError(f"{path} is not a valid unencrypted PEM key: {exc}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise IdentityError(f"{path} holds a {type(key).__name__}, not an Ed25519 key")
        return cls(key)

    @classmethod
    def load_or_create(cls, state_dir: Path) -> tuple[Identity, bool]:
        """The node's identity from ``state_dir``, made on first run. Returns (identity, created)."""
        path = state_dir / KEY_FILE
        if path.exists():
            return cls.load(path), False
        ident = cls.generate()
        ident.save(path)
        return ident, True

    def __repr__(self) -> str:
        return f"Identity({self.node_id})"


def verify(node_id: NodeId, data: bytes, signature: bytes) -> None:
    """Check that ``node_id``'s key signed ``data``; raises ``SignatureError`` if not."""
    try:
        Ed25519PublicKey.from_public_bytes(node_id.public_key).verify(signature, data)
    except (InvalidSignature, ValueError):
        raise SignatureError(f"signature does not verify for {node_id}") from None


def signing_bytes(record: object) -> bytes:
    """The bytes a signed struct's signature covers: its CBOR form with ``signature`` empty.

    Fields a struct lists in ``UNSIGNED_FIELDS`` (hints others may set, like a
    PeerRecord's ``lan_group``) are blanked too.
    """
    import dataclasses

    from .wire.cbor import encode_struct

    blank: dict[str, object] = {"signature": b""}
    for name in getattr(type(record), "UNSIGNED_FIELDS", ()):
        blank[name] = type(getattr(record, name))()
    return encode_struct(dataclasses.replace(record, **blank))  # type: ignore[type-var]


def sign_struct(record: _S, identity: Identity) -> _S:
    """A copy of ``record`` (a PeerRecord, Manifest, ...) signed by ``identity``."""
    import dataclasses

    return dataclasses.replace(record, signature=identity.sign(signing_bytes(record)))  # type: ignore[type-var]


def verify_struct(record: object, signer: NodeId) -> None:
    """Check ``record.signature`` against ``signer``; raises ``SignatureError``."""
    sig = getattr(record, "signature", b"")
    if not sig:
        raise SignatureError(f"{type(record).__name__} is not signed")
    verify(signer, signing_bytes(record), sig)


#: domain separation: an origin proof can never be mistaken for a signature over a record
_ORIGIN_CONTEXT: Final = b"edgeagent origin proof v1\x00"


def origin_message(env: Envelope) -> bytes:
    """What an origin proof signs: a digest of the envelope without the fields relays may change
    (``ttl`` and ``route``) and without the proof; the body is covered whatever codec carried it."""
    import dataclasses

    from .wire.cbor import encode

    canonical = encode(dataclasses.replace(env, ttl=0, route=None, proof=None))
    return _ORIGIN_CONTEXT + hashlib.sha256(canonical).digest()


def prove_origin(env: Envelope, identity: Identity) -> Envelope:
    """``env`` with its source's proof attached (``identity`` must be the source)."""
    import dataclasses

    if env.source != identity.node_id:
        raise IdentityError(f"{identity.node_id} cannot prove an origin of {env.source}")
    return dataclasses.replace(env, proof=identity.sign(origin_message(env)))


def origin_proven(env: Envelope) -> bool:
    """Whether ``env`` carries a valid proof that its ``source`` sent it (as it is, ttl and route aside)."""
    if not env.proof:
        return False
    try:
        verify(env.source, origin_message(env), env.proof)
    except SignatureError:
        return False
    return True
