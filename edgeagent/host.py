"""The one interface services see: a ``Host``, the messages it hands them, and the ``Service`` base.

A service (payload trees, pub-sub, streams, federated learning, the worker, the
registry, routing, WebRTC signalling) never sees the Node. It is given a Host
when it is built and declares, per message type it serves, a handler and a
``Policy``: who may send that type, whether it may arrive through a relay, and
its size class. The Node checks the policy once, before the handler runs (and
the link checks the same table before it buffers anything from a peer that is
not authorised); a handler only ever sees messages its policy let through.

::

    node.py (driver) --dispatch--> Policy check --> Service handler(Inbound)
        ^                                              |
        +------------- Host: send, request, ensure_link, spawn, peers, routes
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from .wire import Envelope, Error, ErrorCode, Message, NodeId, PeerRecord, Route

if TYPE_CHECKING:
    from .identity import Identity
    from .limits import Limiter
    from .links.base import LinkOptions
    from .links.link import Link
    from .routing import Traits

__all__ = [
    "ChangeSignal",
    "Handler",
    "Host",
    "Inbound",
    "PayloadApi",
    "PeerView",
    "Pick",
    "Policy",
    "Registration",
    "RouteView",
    "Sender",
    "Service",
]

M = TypeVar("M", bound=Message)
T = TypeVar("T")


class Sender(enum.Enum):
    """Who may send a message type."""

    ANYONE = "anyone"  # every authenticated peer (pings, peer records)
    DOMAIN = "domain"  # only this node's domain (by configuration), first-hand
    AUTHORISED = "authorised"  # the allow-list, open mode or the domain; or relayed by the domain (it vouches)
    MEMBER = "member"  # authorised, or a peer the serving service admits for this message (``Policy.admits``)


@dataclass(frozen=True)
class Policy:
    """A message type's declared policy, checked by the Node before its handler runs.

    ``relayable``: may arrive through a relay (source != the link's peer); else first-hand only.
    ``bulk``: a bulk size class (chunks, stream data): refused silently, never answered with an Error.
    ``admits``: for ``Sender.MEMBER``, whether a peer not otherwise authorised may send this message
    (e.g. a child of a payload this node relays, for that payload's messages only).
    """

    sender: Sender
    relayable: bool = False
    bulk: bool = False
    admits: Callable[[NodeId, Message], bool] | None = None

    def __post_init__(self) -> None:
        if (self.sender is Sender.MEMBER) != (self.admits is not None):
            raise ValueError("Sender.MEMBER needs an admits predicate, and only it")


class Inbound(Generic[M]):
    """One message a policy let through: the typed body, its envelope, the link it came on."""

    __slots__ = ("body", "env", "host", "link")

    def __init__(self, body: M, env: Envelope, link: Link, host: Host) -> None:
        self.body = body
        self.env = env
        self.link = link
        self.host = host

    @property
    def source(self) -> NodeId:
        return self.env.source

    @property
    def first_hand(self) -> bool:
        """True when the sender is the link's peer (not relayed)."""
        return self.env.source == self.link.peer

    @property
    def relayed_by(self) -> NodeId | None:
        """The domain that relayed this message (it vouches for the sender), else None: another relay
        only carried it (its origin is proven, nothing more) and vouches for nothing."""
        relayed = not self.first_hand and self.host.peers.is_domain(self.link.peer)
        return self.link.peer if relayed else None

    async def reply(self, body: Message) -> None:
        """Answer on the link the message came on (a closed link drops the answer)."""
        from .exceptions import LinkError

        with contextlib.suppress(LinkError):
            await self.link.send(self.env.reply(body, self.host.node_id))

    async def refuse(self, code: ErrorCode, reason: str) -> None:
        """Answer with an Error, unless the message was itself a reply (never answer an answer)."""
        if self.env.reply_to is None and not isinstance(self.body, Error):
            await self.reply(Error(code, reason))


Handler = Callable[[Inbound[Any]], Awaitable[None]]


@dataclass(frozen=True)
class Registration:
    """A handler with its policy (what ``Service.handlers`` returns per message type)."""

    policy: Policy
    handler: Handler


@dataclass(frozen=True)
class Pick:
    """Where a message for one destination leaves: the first link, the route to attach (None for
    one hop), a key naming the route (to notice changes), a label and the policy's reason."""

    link: Link
    route: Route | None
    key: Any
    label: str
    reason: str = ""


class PeerView(Protocol):
    """Authorisation facts and peer records, read-only."""

    @property
    def domain_ids(self) -> frozenset[NodeId]: ...

    def authorised(self, node: NodeId) -> bool:
        """By configuration (allow-list, open mode) or because it is this node's domain."""
        ...

    def is_domain(self, node: NodeId) -> bool: ...

    def record(self, node: NodeId) -> PeerRecord | None: ...

    def records(self) -> Mapping[NodeId, PeerRecord]: ...

    def links(self, node: NodeId) -> list[Link]:
        """The node's links to ``node`` (the first is the one to use), possibly closing."""
        ...

    def linked(self) -> Iterator[tuple[NodeId, list[Link]]]:
        """Every peer with at least one link, and its links."""
        ...

    def dialable(self, node: NodeId) -> bool | None:
        """Whether this node's own dial-back reached ``node`` (None: never checked)."""
        ...

    def found_dialable(self, node: NodeId, ok: bool) -> None:
        """Record what a dial-back of this node's found (the network service does)."""
        ...


class RouteView(Protocol):
    """Route picks and failures; route changes awaited, not polled."""

    @property
    def generation(self) -> int:
        """Grows on every route change (a link went down, a route failed, a report arrived)."""
        ...

    def pick(self, dst: NodeId, traits: Traits) -> Pick: ...

    def failed(self, link: Link) -> None:
        """Tell the route table that sending on ``link`` failed (or stalled)."""
        ...

    async def wait_change(self, *others: asyncio.Event) -> None:
        """Until one of ``others`` is set or any route changes."""
        ...


class Host(Protocol):
    """What a service may ask of the node it is mounted on."""

    @property
    def identity(self) -> Identity: ...

    @property
    def node_id(self) -> NodeId: ...

    @property
    def state_dir(self) -> Path: ...

    @property
    def role(self) -> str: ...

    @property
    def link_options(self) -> LinkOptions:
        """This node's current link options (its network kind, metered flag, capabilities)."""
        ...

    @property
    def listen_urls(self) -> list[str]: ...

    @property
    def peers(self) -> PeerView: ...

    @property
    def limiter(self) -> Limiter:
        """The node's resource limits and the one place their refusals are counted and logged."""
        ...

    @property
    def routes(self) -> RouteView: ...

    async def send(self, peer: NodeId, body: Message, traits: Traits | None = None) -> None: ...

    async def request(
        self, peer: NodeId, body: Message, *, timeout: float = 10.0, traits: Traits | None = None
    ) -> Message: ...

    async def ensure_link(self, peer: NodeId, addresses: tuple[str, ...] = (), timeout: float = 10.0) -> Link: ...

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        """Run ``coro`` as a task the node supervises: a failure is logged, and stop cancels it."""
        ...

    def wire_bytes_sent(self) -> int:
        """Every byte this node's links have sent (closed links included), for egress accounting."""
        ...


class PayloadApi(Protocol):
    """The payload service as other services use it (federated learning sends its model this way)."""

    async def start(self, path: Path, to: list[NodeId] | None = None, *, star: bool = False) -> bytes: ...

    def first_tree(self, pid: bytes) -> Any:
        """The first stripe tree (planner ``Tree``) of a payload this node sends."""
        ...

    async def wait(self, pid: bytes, timeout: float | None = None) -> Any: ...

    async def wait_complete(self, pid: bytes, timeout: float) -> Path:
        """Until the payload ``pid`` is whole here; its file. Raises PayloadError after ``timeout``."""
        ...


class Service:
    """A protocol mounted on a Host: its handlers with their policies, link hooks, status, close."""

    name: str = ""

    def handlers(self) -> Mapping[type[Message], Registration]:
        """The message types this service serves (each type is served by one service only)."""
        return {}

    def expects(self, peer: NodeId) -> bool:
        """Whether this service now expects large frames from ``peer``, a peer that is not authorised
        (a payload's parent or child, a round's child): the link then lifts its pre-authorisation
        frame cap for it. Only messages a MEMBER policy admits are let through all the same."""
        return False

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        """A link to ``peer`` came up."""

    def on_link_replaced(self, peer: NodeId) -> None:
        """One of several links to ``peer`` closed; another remains."""

    def on_link_down(self, peer: NodeId) -> None:
        """The last link to ``peer`` closed."""

    def status_fields(self) -> dict[str, Any]:
        """Keys this service adds to ``status --json``."""
        return {}

    async def aclose(self) -> None:
        """Stop the service's tasks and release what it holds."""


class ChangeSignal:
    """A generation count that grows on every change, and a wait for the next change (no polling)."""

    def __init__(self) -> None:
        self.generation = 0
        self._event = asyncio.Event()

    def note(self) -> None:
        self.generation += 1
        self._event.set()
        self._event = asyncio.Event()

    async def wait(self, *others: asyncio.Event) -> None:
        """Until one of ``others`` is set or the next change is noted."""
        waits = [asyncio.ensure_future(e.wait()) for e in (*others, self._event)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()


def on(policy: Policy, handler: Callable[[Inbound[M]], Awaitable[None]]) -> Registration:
    """``{Type: on(Policy(...), self.on_type)}``: one entry of ``Service.handlers``."""
    return Registration(policy, handler)
