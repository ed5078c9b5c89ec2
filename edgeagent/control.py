"""The local control API (``<state>/control.sock``, mode 0600) and the documents it serves.

This module holds the contract of DESIGN section 11 that tools outside the project rely on:
one JSON request per connection (``{"cmd": ...}``), progress lines ``{"progress": ...}``
before the reply for long commands, and the reply ``{"ok": true, ...}`` or
``{"ok": false, "error": "..."}``. Commands: ``status``, ``peers``, ``routes``, ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .exceptions import EdgeAgentError
from .wire import NodeId

if TYPE_CHECKING:
    from .host import Service
    from .links.link import Link
    from .payload import PayloadService

__all__ = [
    "CONTROL_SOCKET",
    "ControlServer",
    "control_request",
    "document",
    "link_row",
    "loop_kind",
    "send_command",
    "status_document",
]

CONTROL_SOCKET: Final = "control.sock"
_MAX_CONTROL_REQUEST: Final = 64 * 1024
#: a command: (the request, a writer for progress lines) -> the reply's fields besides "ok"
Command = Callable[[dict[str, Any], Callable[[dict[str, Any]], None]], Awaitable[dict[str, Any]]]


def link_row(link: Link) -> dict[str, Any]:
    """One entry of ``status`` ``links``."""
    st = link.stats
    return {
        "peer": str(link.peer),
        "peer_role": link.peer_hello.role,
        "transport": link.transport_kind,
        "address": link.transport.remote_address,
        "codec": link.codec,
        "cipher": link.cipher,
        "authorised": link.authorised,
        "rtt_ms": None if st.rtt_ms is None else round(st.rtt_ms, 3),
        "send_bps": round(st.send_bps),
        "recv_bps": round(st.recv_bps),
        "failures": st.failures,
        "bytes_sent": st.bytes_sent,
        "bytes_received": st.bytes_received,
        "network_kind": st.network_kind,
        "refused": st.refused,
    }


def status_document(
    *,
    node_id: NodeId,
    role: str,
    listen: list[str],
    started: float,
    links: Iterable[Link],
    sent_by_type: Counter[str],
    services: Iterable[Service],
    extra: Mapping[str, Any] = {},
) -> dict[str, Any]:
    """The ``status --json`` document: the node's own fields, then each service's ``status_fields``."""
    rows = [link_row(link) for link in links]
    doc: dict[str, Any] = {
        "node_id": str(node_id),
        "role": role,
        "listen": listen,
        "uptime_s": round(time.time() - started, 1),
        "event_loop": loop_kind(),
        "links": rows,
        "bytes_sent_total": sum(r["bytes_sent"] for r in rows),
        "bytes_received_total": sum(r["bytes_received"] for r in rows),
        "bytes_sent_by_type": dict(sent_by_type.most_common()),
        "fl": None,  # a node that runs no federated learning says so
        **extra,
    }
    for service in services:
        doc.update(service.status_fields())
    return doc


def loop_kind() -> str:
    """The running event loop's implementation: "uvloop" or "asyncio"."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"


def document(key: str, make: Callable[[], Any]) -> Command:
    """A command that answers ``{key: make()}`` (``status``, ``peers``, ``routes``)."""

    async def run(request: dict[str, Any], line: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        return {key: make()}

    return run


def send_command(payloads: PayloadService) -> Command:
    """``edgeagent send``: send a file down a payload tree; with ``wait``, progress lines first."""

    async def run(request: dict[str, Any], line: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        from .payload.manifest import DEFAULT_CHUNK_SIZE

        path = Path(str(request["path"]))
        to_raw = request.get("to") or ["all"]
        to = None if "all" in to_raw else [NodeId.parse(str(t)) for t in to_raw]
        wait = bool(request.get("wait"))
        timeout = request.get("timeout")
        stripes = request.get("stripes")
        result = await payloads.send(
            path,
            to,
            wait=wait,
            timeout=None if timeout is None else float(timeout),
            stripes=None if stripes is None else int(stripes),
            progress=(lambda summary: line({"progress": summary})) if wait else None,
            star=bool(request.get("star")),
            chunk_size=int(request.get("chunk_size") or DEFAULT_CHUNK_SIZE),
        )
        return {"result": result.to_json()}

    return run


class ControlServer:
    """Serves the commands on ``<state_dir>/control.sock`` (mode 0600: only this user may ask)."""

    def __init__(self, state_dir: Path, commands: Mapping[str, Command]) -> None:
        self.path = state_dir / CONTROL_SOCKET
        self.commands = dict(commands)
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(self._serve, path=str(self.path))
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def line(obj: dict[str, Any]) -> None:
            writer.write(json.dumps(obj).encode() + b"\n")

        try:
            raw = await asyncio.wait_for(reader.readline(), 5.0)
            if len(raw) > _MAX_CONTROL_REQUEST:
                raise ValueError("request too large")
            request = json.loads(raw or b"{}")
            cmd = request.get("cmd")
            command = self.commands.get(cmd) if isinstance(cmd, str) else None
            if command is None:
                reply: dict[str, Any] = {"ok": False, "error": f"unknown command {cmd!r}"}
            else:
                reply = {"ok": True, **await command(request, line)}
        except (ValueError, TimeoutError, AttributeError, TypeError, KeyError) as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        except EdgeAgentError as exc:
            reply = {"ok": False, "error": str(exc)}
        line(reply)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def control_request(
    state_dir: Path,
    cmd: str,
    timeout: float = 5.0,
    *,
    args: dict[str, Any] | None = None,
    on_line: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Send one command to the node running with ``state_dir``; raises EdgeAgentError if none answers.

    ``args`` are added to the request; lines the node sends before its reply
    (``{"progress": ...}``) go to ``on_line``, each within ``timeout`` seconds.
    """
    path = state_dir / CONTROL_SOCKET
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path), limit=16 << 20), timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise EdgeAgentError(
            f"no node is running with state {state_dir}; start one with `edgeagent run --state {state_dir}`"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise EdgeAgentError(f"cannot reach the node's control socket {path}: {exc}") from None
    try:
        writer.write(json.dumps({"cmd": cmd, **(args or {})}).encode() + b"\n")
        await writer.drain()
        while True:
            line = await asyncio.wait_for(reader.readline(), timeout)
            if not line:
                raise EdgeAgentError(f"the node closed the control connection during {cmd}")
            reply = json.loads(line)
            if "progress" in reply and "ok" not in reply:
                if on_line is not None:
                    on_line(reply)
                continue
            break
    finally:
        writer.close()
    if not reply.get("ok"):
        raise EdgeAgentError(f"node refused {cmd}: {reply.get('error')}")
    return reply  # type: ignore[no-any-return]
