"""wss:// listeners and dialling: TLS under the Noise link, for domain endpoints."""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgeagent.config import load_config
from edgeagent.exceptions import ConfigError, HandshakeError
from edgeagent.identity import Identity
from edgeagent.links.link import Link
from edgeagent.links.websocket import client_tls, dial, listen, server_tls


def _self_signed(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "edgeagent test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def _noop(link: Link) -> None:
    return None


async def test_wss_link_with_trusted_certificate(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    server, client = Identity.generate(), Identity.generate()
    lst = await listen("wss://127.0.0.1:0", server, _noop, ssl_context=server_tls(str(cert), str(key)))
    try:
        assert lst.url.startswith("wss://")
        link = await dial(lst.url, client, expected_peer=server.node_id, ssl_context=client_tls(str(cert)))
        assert await link.ping() > 0
        await link.close()
        # the system CAs do not trust a self-signed certificate: refused, and the listener keeps serving
        with pytest.raises(HandshakeError, match="TLS"):
            await dial(lst.url, client)
        link = await dial(lst.url, client, ssl_context=client_tls(str(cert)))
        await link.close()
    finally:
        await lst.close()


async def test_wss_listen_needs_a_certificate() -> None:
    with pytest.raises(ConfigError, match="certificate"):
        await listen("wss://127.0.0.1:0", Identity.generate(), _noop)


def test_tls_config(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text('[tls]\ncert_file = "c.pem"\nkey_file = "k.pem"\n')
    tls = load_config(p).tls
    assert tls.cert_file == str(tmp_path / "c.pem") and tls.key_file == str(tmp_path / "k.pem")
    p.write_text('[tls]\ncert_file = "c.pem"\n')
    with pytest.raises(ConfigError, match="go together"):
        load_config(p)
    with pytest.raises(ConfigError, match="cannot load TLS"):
        server_tls(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
