"""Discovery: signed mDNS adverts on the LAN (the domain registry lives in the Node)."""

from __future__ import annotations

from .mdns import DiscoveredPeer, MdnsDiscovery, interface_addresses
from .records import SERVICE_TYPE, MdnsRecord, sign_txt, verify_txt

__all__ = [
    "SERVICE_TYPE",
    "DiscoveredPeer",
    "MdnsDiscovery",
    "MdnsRecord",
    "interface_addresses",
    "sign_txt",
    "verify_txt",
]
