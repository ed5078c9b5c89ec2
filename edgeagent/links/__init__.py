"""Links: one Connection interface, one Link implementation, several transports.

WebRTC lives in :mod:`edgeagent.links.webrtc` and is imported only when used
(it needs the ``webrtc`` extra: aiortc and av).
"""

from __future__ import annotations

from .base import Connection, FrameTransport, LinkOptions, LinkStats
from .link import Link, establish
from .memory import MemoryTransport, memory_pipe
from .reconnect import Backoff, keep_connected
from .websocket import Listener, WebSocketTransport, client_tls, dial, listen, server_tls

__all__ = [
    "Backoff",
    "Connection",
    "FrameTransport",
    "Link",
    "LinkOptions",
    "LinkStats",
    "Listener",
    "MemoryTransport",
    "WebSocketTransport",
    "client_tls",
    "dial",
    "establish",
    "keep_connected",
    "listen",
    "memory_pipe",
    "server_tls",
]
