"""Clients: the API for one remote node (the seed's *Client*).

A client talks to one node through the local :class:`~edgeagent.node.Node`,
which picks the link: a direct link when there is one, else the link to the
domain, which forwards (so every client of a device behind a domain shares the
one domain link — the domain is the intentional bottleneck). Every method is
one request/response with a timeout; an ``Error`` reply raises
:class:`~edgeagent.exceptions.RemoteError`.

Objects a client stores are reached through :class:`ObjectPointer`; holding a
pointer open (``async with pointer.held():``) renews its lease in the
background, and letting go lets the worker drop it when the lease runs out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from .exceptions import EdgeAgentError, NoRoute, ProtocolError
from .routing import STREAM_THRESHOLD, choose_mode
from .wire import (
    ForceObjectDeleteMessage,
    GetShapeMessage,
    IsNoneMessage,
    Message,
    NodeId,
    ObjectMessage,
    ObjectRef,
    ObjectRequestMessage,
    Operation,
    Plan,
    PlanCommandMessage,
    RenewLeaseMessage,
    Response,
    SearchMessage,
    StreamedObject,
    Tensor,
)
from .wire.cbor import decode_plain
from .wire.schema import struct_from_plain

if TYPE_CHECKING:  # pragma: no cover
    from .node import Node

log = logging.getLogger(__name__)

__all__ = ["Client", "DeviceClient", "DomainClient", "ObjectPointer"]


class ObjectPointer:
    """A reference to an object held by a remote worker."""

    def __init__(self, client: Client, obj_id: str, lease: float | None = None) -> None:
        self.client = client
        self.id = obj_id
        self.lease = lease

    def __repr__(self) -> str:
        return f"<ObjectPointer {self.id!r} on {self.client.target.short()}>"

    def ref(self) -> ObjectRef:
        return ObjectRef(self.id)

    async def get(self, *, keep: bool = False) -> Any:
        return await self.client.get(self.id, keep=keep)

    async def shape(self) -> tuple[int, ...]:
        return await self.client.shape(self.id)

    async def delete(self) -> None:
        await self.client.delete(self.id)

    async def renew(self) -> bool:
        return self.id in await self.client.renew(self.id, lease=self.lease)

    @contextlib.asynccontextmanager
    async def held(self, every: float | None = None) -> AsyncIterator[ObjectPointer]:
        """Renew the lease every ``every`` seconds (a third of the lease by default) while inside."""
        period = every or max(0.05, (self.lease or self.client.default_lease) / 3)

        async def renew_loop() -> None:
            while True:
                await asyncio.sleep(period)
                with contextlib.suppress(EdgeAgentError):
                    await self.renew()

        task = asyncio.create_task(renew_loop())
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _arg(value: Any) -> Any:
    if isinstance(value, ObjectPointer):
        return value.ref()
    if isinstance(value, tuple):
        return [_arg(v) for v in value]
    if isinstance(value, list):
        return [_arg(v) for v in value]
    if isinstance(value, dict):
        return {k: _arg(v) for k, v in value.items()}
    return value


class Client:
    """The API for one remote node. ``timeout`` applies to every request."""

    kind = "node"

    def __init__(
        self,
        node: Node,
        target: NodeId,
        *,
        timeout: float = 10.0,
        default_lease: float = 600.0,
        stream_threshold: int = STREAM_THRESHOLD,
    ) -> None:
        self.stream_threshold = stream_threshold
        self.node = node
        self.target = target
        self.timeout = timeout
        self.default_lease = default_lease

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.target}>"

    async def call(self, body: Message) -> Any:
        """Send one request; returns the Response's value."""
        reply = await self.node.request(self.target, body, timeout=self.timeout)
        if not isinstance(reply, Response):
            raise ProtocolError(f"expected a Response to {type(body).__name__}, got {type(reply).__name__}")
        return reply.value

    # -- objects --------------------------------------------------------------------------------

    async def send(
        self,
        obj: Any,
        *,
        obj_id: str | None = None,
        tags: tuple[str, ...] = (),
        description: str = "",
        lease: float | None = None,
    ) -> ObjectPointer:
        """Store ``obj`` (a Tensor, bytes, or any wire value) on the node; returns a pointer.

        Objects of ``STREAM_THRESHOLD`` bytes or more (tensors, bytes) go as a stream
        (acknowledged, flow-controlled, surviving route changes), then a small
        ``StreamedObject`` request stores them; smaller ones ride one ObjectMessage.
        """
        obj_id = obj_id or secrets.token_hex(8)
        lease_ms = int(lease * 1000) if lease else 0
        data = obj.data if isinstance(obj, Tensor) else obj if isinstance(obj, bytes | bytearray | memoryview) else None
        size = len(data) if data is not None else 0
        mode, why = choose_mode(receivers=1, size=size, blocking=True, threshold=self.stream_threshold)
        self.node.routing.mode_counts[mode] += 1
        log.debug("object %s to %s: %s (%s)", obj_id, self.target, mode, why)
        if mode == "stream" and data is not None:
            res = await self.node.send_stream(self.target, data, name=f"object-{obj_id}")
            dtype, shape = (obj.dtype, tuple(obj.shape)) if isinstance(obj, Tensor) else ("", ())
            await self.call(StreamedObject(res.stream_id, obj_id, dtype, shape, tuple(tags), description, lease_ms))
        else:
            await self.call(ObjectMessage(obj_id, _arg(obj), tuple(tags), description, lease_ms))
        return ObjectPointer(self, obj_id, lease)

    async def get(self, obj_id: str, *, keep: bool = False) -> Any:
        """Fetch an object; it is moved off the node unless ``keep``."""
        return await self.call(ObjectRequestMessage(obj_id, keep))

    async def search(self, *terms: str) -> list[str]:
        """Ids of the objects matching every term (id, tag or description word)."""
        return list(await self.call(SearchMessage(tuple(terms))))

    async def delete(self, *obj_ids: str) -> int:
        """Delete objects (unknown ids are fine); returns how many went."""
        return int(await self.call(ForceObjectDeleteMessage(tuple(obj_ids))))

    async def is_none(self, obj_id: str) -> bool:
        """True when the node does *not* hold ``obj_id``."""
        return bool(await self.call(IsNoneMessage(obj_id)))

    async def shape(self, obj_id: str) -> tuple[int, ...]:
        return tuple(await self.call(GetShapeMessage(obj_id)))

    async def renew(self, *obj_ids: str, lease: float | None = None) -> list[str]:
        """Extend leases; returns the ids still held."""
        return list(await self.call(RenewLeaseMessage(tuple(obj_ids), int(lease * 1000) if lease else 0)))

    def pointer(self, obj_id: str, lease: float | None = None) -> ObjectPointer:
        return ObjectPointer(self, obj_id, lease)

    # -- operations and plans ------------------------------------------------------------------

    async def run(
        self, cmd: str, *args: Any, owner: str | None = None, return_id: str | None = None, **kwargs: Any
    ) -> ObjectPointer:
        """Run allow-listed operation ``cmd`` on the node; the result stays there (a pointer)."""
        rid = return_id or secrets.token_hex(8)
        op = Operation(cmd, owner, tuple(_arg(a) for a in args), {k: _arg(v) for k, v in kwargs.items()}, (rid,))
        await self.call(op)
        return ObjectPointer(self, rid)

    async def register_plan(self, plan: Plan) -> str:
        return str(await self.call(PlanCommandMessage("register", plan.name, plan)))

    async def fetch_plan(self, name: str) -> Plan:
        raw = await self.call(PlanCommandMessage("fetch", name))
        plan = struct_from_plain(Plan, decode_plain(raw), 1000)
        assert isinstance(plan, Plan)
        return plan

    async def run_plan(self, name: str, *args: Any, return_ids: tuple[str, ...] = ()) -> list[ObjectPointer]:
        ids = await self.call(PlanCommandMessage("run", name, None, tuple(_arg(a) for a in args), return_ids))
        return [ObjectPointer(self, i) for i in ids]

    async def list_plans(self) -> list[str]:
        return list(await self.call(PlanCommandMessage("list")))


class DomainClient(Client):
    """The node's domain (found among its links)."""

    kind = "domain"

    def __init__(self, node: Node, domain: NodeId | None = None, **kw: Any) -> None:
        if domain is None:
            ids = sorted(node.peers.domain_ids)
            if not ids:
                raise NoRoute("this node has no domain link yet")
            domain = ids[0]
        super().__init__(node, domain, **kw)


class DeviceClient(Client):
    """A device, reached directly if linked, else through the domain (sharing its link)."""

    kind = "device"
