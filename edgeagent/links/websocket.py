"""WebSocket transport (websockets' asyncio API): dial and listen.

Compression is off (payloads are encrypted and often already compressed),
websockets' own keepalive pings are off (the Link pings and measures RTT), and
each transport message is one binary WebSocket message of at most
``MAX_MESSAGE`` bytes. ``wss://`` URLs use TLS (for domain endpoints behind a
certificate); the link is encrypted end to end by Noise either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any, Final
from urllib.parse import urlsplit

from websockets.asyncio.client import connect
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI, WebSocketException

from ..exceptions import ConfigError, HandshakeError, LinkClosed, LinkError, LinkTimeout, RemoteProtocolError
from ..identity import Identity
from ..wire import NodeId
from .base import FrameTransport, LinkOptions
from .link import Link, establish, peer_log

__all__ = ["MAX_MESSAGE", "Listener", "WebSocketTransport", "client_tls", "dial", "listen", "server_tls"]

log = logging.getLogger(__name__)
MAX_MESSAGE: Final = 1 << 20
SUBPROTOCOL: Final = "edgeagent.v1"
#: bytes a link may queue beyond the frame being written, in websockets' buffer (high-water mark)
#: and unsent in the kernel (TCP_NOTSENT_LOWAT). Kept small so a Ping, a Progress report or a
#: control message never waits behind megabytes of bulk data on a slow uplink: with the kernel's
#: default (up to 4 MiB of send buffer) a Pong on a 3 Mbit/s share of a phone's uplink waited
#: ~10 s and busy relays were declared dead. Throughput does not suffer: the kernel still keeps
#: the congestion window full; only the unsent backlog is bounded.
SEND_BACKLOG: Final = 128 * 1024


class WebSocketTransport(FrameTransport):
    kind = "websocket"
    max_message_size = MAX_MESSAGE

    def __init__(self, ws: Any, remote: str) -> None:
        self._ws = ws
        self.remote_address = remote
        local = getattr(ws, "local_address", None)
        self.local_address = "{}:{}".format(*local[:2]) if local else ""
        _bound_backlog(ws)

    @property
    def closed(self) -> bool:
        return bool(self._ws.state.name in ("CLOSING", "CLOSED"))

    async def send(self, message: bytes | bytearray) -> None:
        try:
            await self._ws.send(message)
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket to {self.remote_address} closed: {exc}") from None
        except (OSError, WebSocketException) as exc:
            raise LinkError(f"websocket to {self.remote_address} failed: {exc}") from None

    async def recv(self) -> bytes:
        try:
            message = await self._ws.recv()
        except ConnectionClosed as exc:
            raise LinkClosed(f"websocket to {self.remote_address} closed: {exc}") from None
        except (OSError, WebSocketException) as exc:
            raise LinkError(f"websocket to {self.remote_address} failed: {exc}") from None
        if isinstance(message, str):
            raise RemoteProtocolError("text frame on a binary link")
        return message  # type: ignore[no-any-return]

    async def close(self, code: int = 1000, reason: str = "") -> None:
        with contextlib.suppress(TimeoutError, OSError, WebSocketException):
            await asyncio.wait_for(self._ws.close(code, reason[:120]), 2.0)


def _bound_backlog(ws: Any) -> None:
    """Limit the kernel's unsent backlog on the WebSocket's TCP socket (see ``SEND_BACKLOG``)."""
    lowat = getattr(socket, "TCP_NOTSENT_LOWAT", None)
    transport = getattr(ws, "transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if lowat is None or sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError):  # not every kernel has it; links work without
        sock.setsockopt(socket.IPPROTO_TCP, lowat, SEND_BACKLOG)


def server_tls(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A TLS context for a ``wss://`` listener from PEM certificate and key files."""
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load TLS certificate {cert_file} / key {key_file}: {exc}") from None
    return ctx


def client_tls(ca_file: str | None = None) -> ssl.SSLContext:
    """A TLS context for dialling ``wss://``: the system CAs, or only ``ca_file`` when given."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot load CA file {ca_file}: {exc}") from None


def _check_url(url: str) -> tuple[str, int, bool]:
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss"):
        raise ConfigError(f"{url!r} is not a ws:// or wss:// URL")
    if not parts.hostname:
        raise ConfigError(f"{url!r} has no host")
    try:
        port = parts.port if parts.port is not None else (443 if parts.scheme == "wss" else 80)
    except ValueError:
        raise ConfigError(f"{url!r} has a bad port") from None
    return parts.hostname, port, parts.scheme == "wss"


async def dial(
    url: str,
    identity: Identity,
    options: LinkOptions | None = None,
    *,
    expected_peer: NodeId | None = None,
    ssl_context: ssl.SSLContext | None = None,
    open_timeout: float = 10.0,
) -> Link:
    """Open a WebSocket to ``url`` and run the link handshake as the dialler."""
    options = options or LinkOptions()
    _, _, secure = _check_url(url)
    try:
        ws = await connect(
            url,
            compression=None,
            max_size=MAX_MESSAGE + 1024,
            ping_interval=None,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            open_timeout=open_timeout,
            ssl=(ssl_context or ssl.create_default_context()) if secure else None,
            write_limit=SEND_BACKLOG,
        )
    except TimeoutError:
        raise LinkTimeout(f"no answer from {url} within {open_timeout}s") from None
    except ssl.SSLError as exc:
        raise HandshakeError(f"TLS with {url} failed: {exc.reason or exc}") from None
    except (OSError, InvalidHandshake, InvalidURI) as exc:
        raise LinkError(f"cannot reach {url}: {exc}") from None
    return await establish(WebSocketTransport(ws, url), identity, options, initiator=True, expected_peer=expected_peer)


class Listener:
    """A listening WebSocket endpoint; ``async with`` it, or call :meth:`close`."""

    def __init__(self, server: Server, url: str) -> None:
        self.server = server
        self.url = url
        self.links: set[Link] = set()
        self.rejected = 0

    @property
    def port(self) -> int:
        return int(next(iter(self.server.sockets)).getsockname()[1])

    async def close(self) -> None:
        for link in list(self.links):
            await link.close(1001, "going away")
        self.server.close()
        await self.server.wait_closed()

    async def __aenter__(self) -> Listener:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


async def listen(
    url: str,
    identity: Identity,
    on_link: Callable[[Link], Awaitable[None]],
    options: LinkOptions | None = None,
    *,
    ssl_context: ssl.SSLContext | None = None,
) -> Listener:
    """Accept links on ``url`` (``ws://host:port``; port 0 picks a free one).

    ``on_link(link)`` runs for each authenticated link; the connection stays
    open until the link closes. Peers that fail or stall the handshake are
    dropped with one log line; the listener keeps serving everyone else.
    """
    options = options or LinkOptions()
    host, port, secure = _check_url(url)
    if secure and ssl_context is None:
        raise ConfigError(f"{url} needs a TLS certificate (ssl_context)")
    listener: Listener

    async def handler(ws: ServerConnection) -> None:
        remote = "{}:{}".format(*ws.remote_address[:2]) if ws.remote_address else "?"
        try:
            link = await establish(WebSocketTransport(ws, remote), identity, options, initiator=False)
        except (HandshakeError, LinkTimeout) as exc:
            listener.rejected += 1
            peer_log.warning("listener %s: dropped %s: %s", listener.url, remote, exc)
            return
        except (LinkError, RemoteProtocolError) as exc:
            listener.rejected += 1
            peer_log.warning("listener %s: dropped %s: %s", listener.url, remote, exc)
            await ws.close(1002, "protocol error")
            return
        listener.links.add(link)
        try:
            await on_link(link)
            await link.wait_closed()
        finally:
            listener.links.discard(link)
            await link.close()

    try:
        server = await serve(
            handler,
            host,
            port,
            compression=None,
            max_size=MAX_MESSAGE + 1024,
            ping_interval=None,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            ssl=ssl_context if secure else None,
            write_limit=SEND_BACKLOG,
            open_timeout=options.handshake_timeout,
        )
    except OSError as exc:
        raise ConfigError(f"cannot listen on {url}: {exc.strerror}") from None
    bound = next(iter(server.sockets)).getsockname()
    listener = Listener(server, f"{'wss' if secure else 'ws'}://{host}:{bound[1]}")
    return listener
