"""Identity: keys, NodeIds, signatures, key-file permissions."""

from __future__ import annotations

import dataclasses
import stat
from pathlib import Path

import pytest

from edgeagent.exceptions import DecodeError, IdentityError, SignatureError
from edgeagent.identity import KEY_FILE, Identity, sign_struct, verify, verify_struct
from edgeagent.wire import Manifest, NodeId, PeerRecord


def test_sign_and_verify() -> None:
    ident = Identity.generate()
    sig = ident.sign(b"hello")
    assert len(sig) == 64
    verify(ident.node_id, b"hello", sig)


@pytest.mark.parametrize("flip", [0, 31, 63])
def test_tampered_signature_rejected(flip: int) -> None:
    ident = Identity.generate()
    sig = bytearray(ident.sign(b"hello"))
    sig[flip] ^= 0x01
    with pytest.raises(SignatureError):
        verify(ident.node_id, b"hello", bytes(sig))


def test_tampered_data_and_wrong_key_rejected() -> None:
    a, b = Identity.generate(), Identity.generate()
    sig = a.sign(b"hello")
    with pytest.raises(SignatureError):
        verify(a.node_id, b"hellO", sig)
    with pytest.raises(SignatureError):
        verify(b.node_id, b"hello", sig)
    with pytest.raises(SignatureError):
        verify(a.node_id, b"hello", sig[:10])


def test_node_id_is_libp2p_peer_id() -> None:
    ident = Identity.generate()
    text = str(ident.node_id)
    assert text.startswith("12D3KooW")
    assert NodeId.parse(text) == ident.node_id
    assert ident.node_id.to_bytes()[:6] == bytes.fromhex("002408011220")


def test_libp2p_spec_vector() -> None:
    # the Ed25519 test vector of libp2p's peer-ids specification
    key = bytes.fromhex("1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e")
    assert str(NodeId.from_public_key(key)) == "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq"


@pytest.mark.parametrize("bad", ["", "12D3KooW", "0OIl", "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"])
def test_bad_node_id_text(bad: str) -> None:
    with pytest.raises(DecodeError):
        NodeId.parse(bad)


def test_key_file_created_0600_and_reloaded(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ident, created = Identity.load_or_create(state)
    assert created
    path = state / KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    again, created2 = Identity.load_or_create(state)
    assert not created2 and again.node_id == ident.node_id


def test_key_file_never_overwritten(tmp_path: Path) -> None:
    Identity.generate().save(tmp_path / KEY_FILE)
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        Identity.generate().save(tmp_path / KEY_FILE)


def test_open_key_file_refused(tmp_path: Path) -> None:
    path = tmp_path / KEY_FILE
    Identity.generate().save(path)
    path.chmod(0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)


BAD_PEM = b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"


@pytest.mark.parametrize("content", [b"", b"not a key", BAD_PEM])
def test_garbage_key_file_is_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / KEY_FILE
    path.write_bytes(content)
    path.chmod(0o600)
    with pytest.raises(IdentityError, match="not a valid"):
        Identity.load(path)


def test_missing_key_file_says_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="edgeagent keygen"):
        Identity.load(tmp_path / KEY_FILE)


def test_signed_structs() -> None:
    ident = Identity.generate()
    rec = sign_struct(PeerRecord(ident.node_id, seq=1, addresses=("ws://127.0.0.1:1",)), ident)
    verify_struct(rec, ident.node_id)
    with pytest.raises(SignatureError):
        verify_struct(dataclasses.replace(rec, addresses=("ws://evil:1",)), ident.node_id)
    with pytest.raises(SignatureError):
        verify_struct(dataclasses.replace(rec, signature=b""), ident.node_id)
    man = sign_struct(Manifest(0, 1024, origin=ident.node_id), ident)
    verify_struct(man, ident.node_id)
    with pytest.raises(SignatureError):
        verify_struct(man, Identity.generate().node_id)
