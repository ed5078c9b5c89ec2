"""Signed mDNS TXT records (pure).

A node advertises ``<NodeId>._edgeagent._tcp.local.`` with TXT keys

    id    NodeId (base58)            v     protocol version
    seq   increases with every change  port  WebSocket port (also the SRV port)
    caps  capabilities, comma-separated
    net   network kind                metered  "1" or "0"
    sig   base64 Ed25519 signature by ``id`` over the other keys

Every value is at most ``_MAX_VALUE`` characters (a longer one is refused unverified, as the
signer refuses to make one), so an advert's capabilities stay a short list.

The signature covers ``b"edgeagent-mdns:" + "\\n".join(f"{k}={v}")`` over the
other keys sorted by name, so a record whose signature does not verify against
its own NodeId is ignored: nobody on the LAN can advertise as another node or
change a node's advertised kind or metered flag.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Final

from ..exceptions import DecodeError, SignatureError
from ..identity import Identity, verify
from ..wire import PROTOCOL_VERSION, NodeId

__all__ = ["SERVICE_TYPE", "MdnsRecord", "sign_txt", "verify_txt"]

SERVICE_TYPE: Final = "_edgeagent._tcp.local."
_PREFIX: Final = b"edgeagent-mdns:"
_KEYS: Final = ("id", "v", "seq", "port", "caps", "net", "metered")
_MAX_VALUE: Final = 200


@dataclass(frozen=True)
class MdnsRecord:
    node_id: NodeId
    port: int
    seq: int = 1
    capabilities: tuple[str, ...] = ()
    network_kind: str = "unknown"
    metered: bool = False
    version: int = PROTOCOL_VERSION

    def fields(self) -> dict[str, str]:
        return {
            "id": str(self.node_id),
            "v": str(self.version),
            "seq": str(self.seq),
            "port": str(self.port),
            "caps": ",".join(self.capabilities),
            "net": self.network_kind,
            "metered": "1" if self.metered else "0",
        }


def _signed_bytes(fields: dict[str, str]) -> bytes:
    return _PREFIX + "\n".join(f"{k}={fields[k]}" for k in sorted(fields)).encode()


def sign_txt(record: MdnsRecord, identity: Identity) -> dict[str, str]:
    """TXT properties for ``record``, signed by ``identity`` (which must be the record's node)."""
    if identity.node_id != record.node_id:
        raise SignatureError("a node may only advertise itself")
    fields = record.fields()
    if any(len(v) > _MAX_VALUE for v in fields.values()):
        raise ValueError("a TXT value is too long for mDNS")
    return {**fields, "sig": base64.b64encode(identity.sign(_signed_bytes(fields))).decode()}


def verify_txt(props: dict[bytes, bytes | None] | dict[str, str]) -> MdnsRecord:
    """The record in TXT properties; raises ``DecodeError`` or ``SignatureError`` unless it is sound."""
    try:
        text = {
            (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else (v or ""))
            for k, v in props.items()
        }
    except UnicodeDecodeError:
        raise DecodeError("TXT record is not UTF-8") from None
    missing = [k for k in (*_KEYS, "sig") if k not in text]
    if missing:
        raise DecodeError(f"TXT record lacks {missing}")
    fields = {k: text[k] for k in _KEYS}
    long = sorted(k for k in (*_KEYS, "sig") if len(text[k]) > _MAX_VALUE)
    if long:
        raise DecodeError(f"TXT values too long: {long} (the most is {_MAX_VALUE} characters)")
    node_id = NodeId.parse(fields["id"])
    try:
        sig = base64.b64decode(text["sig"], validate=True)
    except (binascii.Error, ValueError):
        raise DecodeError("TXT signature is not base64") from None
    verify(node_id, _signed_bytes(fields), sig)
    try:
        port, seq, version = int(fields["port"]), int(fields["seq"]), int(fields["v"])
    except ValueError:
        raise DecodeError("TXT numbers are malformed") from None
    if not 0 < port < 65536 or seq < 0 or version < 1:
        raise DecodeError("TXT numbers out of range")
    return MdnsRecord(
        node_id=node_id,
        port=port,
        seq=seq,
        capabilities=tuple(c for c in fields["caps"].split(",") if c),
        network_kind=fields["net"],
        metered=fields["metered"] == "1",
        version=version,
    )
