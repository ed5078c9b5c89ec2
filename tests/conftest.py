"""Shared test helpers: one polling helper, links into a Node over a memory pipe, and a FakeHost to
unit-test a service without a Node."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edgeagent.exceptions import NoRoute
from edgeagent.host import ChangeSignal, Host, Inbound, Pick, Service
from edgeagent.identity import Identity
from edgeagent.limits import Limiter
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import memory_pipe
from edgeagent.peers import PeerTable
from edgeagent.wire import Envelope, Message, NodeId

T = TypeVar("T")


async def attach(node: Any, ident: Identity, options: LinkOptions | None = None) -> Link:
    """A link from ``ident`` to ``node`` (a Node) over a memory pipe, served by the node as an accepted
    link; the test sends and reads frames on the link returned."""
    ta, tb = memory_pipe()
    mine, theirs = await asyncio.gather(
        establish(ta, ident, options or LinkOptions(), initiator=True),
        establish(tb, node.identity, node.link_options, initiator=False),
    )
    await node._on_link(theirs)
    return mine


async def ask(link: Link, env: Envelope, timeout: float = 5.0) -> Envelope:
    """Send ``env`` on ``link`` and return the reply to it (other frames are skipped)."""
    await link.send(env)
    async with asyncio.timeout(timeout):
        while True:
            got = await link.recv()
            if got.reply_to == env.msg_id:
                return got


async def until(
    check: Callable[[], Any], timeout: float = 5.0, what: str = "the condition", interval: float = 0.05
) -> Any:
    """Poll ``check`` until it returns something truthy (returned), or fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = check()
        if got:
            return got
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


class FakeLink:
    """A link that records what is sent on it (``sent``), to one peer."""

    def __init__(self, peer: NodeId, *, authorised: bool = True) -> None:
        self.peer = peer
        self.authorised = authorised
        self.closed = False
        self.sent: list[Envelope] = []
        self.idle_seconds = 0.0

    async def send(self, env: Envelope) -> None:
        if self.closed:
            from edgeagent.exceptions import LinkClosed

            raise LinkClosed("fake link closed")
        self.sent.append(env)


def peer_table(*, allow: Iterable[NodeId] = (), domains: Iterable[NodeId] = ()) -> PeerTable:
    """The node's own PeerView (``edgeagent.peers.PeerTable``), with an allow-list and domains filled in."""
    table = PeerTable(set(allow))
    table.domains.update(domains)
    return table


class FakeRoutes:
    """RouteView: every destination is reached over its own FakeLink (or fails with NoRoute)."""

    def __init__(self, peers: PeerTable) -> None:
        self.peers = peers
        self.failures: list[Any] = []
        self._changes = ChangeSignal()

    @property
    def generation(self) -> int:
        return self._changes.generation

    def pick(self, dst: NodeId, traits: Any) -> Pick:
        links = self.peers.links(dst)
        if not links:
            raise NoRoute(f"no link to {dst}")
        return Pick(links[0], None, ("direct", dst), f"direct to {dst.short()}")

    def failed(self, link: Any) -> None:
        self.failures.append(link)
        self._changes.note()

    async def wait_change(self, *others: asyncio.Event) -> None:
        await self._changes.wait(*others)


class FakeHost:
    """A Host for one service under test: what it sends is recorded in ``sent`` as (peer, body)."""

    def __init__(self, state_dir: Path, *, role: str = "device", identity: Identity | None = None) -> None:
        self.identity = identity or Identity.generate()
        self.state_dir = state_dir
        self.role = role
        self.link_options = LinkOptions()
        self.listen_urls: list[str] = []
        self.peers = peer_table()
        self.routes = FakeRoutes(self.peers)
        self.sent: list[tuple[NodeId, Message]] = []
        self.replies: dict[type[Message], Callable[[NodeId, Message], Message]] = {}
        self.dialable: dict[NodeId, Any] = {}  # peer -> the link ensure_link returns
        self.tasks: set[asyncio.Task[Any]] = set()
        self.bytes_sent = 0
        self.limiter = Limiter()

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    async def send(self, peer: NodeId, body: Message, traits: Any = None) -> None:
        self.sent.append((peer, body))

    async def request(self, peer: NodeId, body: Message, *, timeout: float = 10.0, traits: Any = None) -> Message:
        self.sent.append((peer, body))
        answer = self.replies.get(type(body))
        if answer is None:
            raise NoRoute(f"FakeHost has no answer for {type(body).__name__}")
        return answer(peer, body)

    async def ensure_link(self, peer: NodeId, addresses: tuple[str, ...] = (), timeout: float = 10.0) -> Any:
        link = self.dialable.get(peer)
        if link is None:
            raise NoRoute(f"cannot link to {peer}")
        self.peers.by_peer.setdefault(peer, []).append(link)
        return link

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    def wire_bytes_sent(self) -> int:
        return self.bytes_sent

    async def deliver(self, service: Service, body: Message, source: NodeId, *, link: Any = None) -> list[Envelope]:
        """Hand ``body`` from ``source`` to ``service``'s handler as the Node would once its policy admits it.

        Returns what the handler answered on the link. Raises PermissionError when the declared
        policy refuses the sender (checked with the Node's own rules).
        """
        from edgeagent.host import Sender

        reg = service.handlers()[type(body)]
        policy = reg.policy
        admitted = (
            policy.sender is Sender.ANYONE
            or (policy.sender is Sender.DOMAIN and self.peers.is_domain(source))
            or (policy.sender is not Sender.DOMAIN and self.peers.authorised(source))
            or (policy.sender is Sender.MEMBER and policy.admits is not None and policy.admits(source, body))
        )
        if not admitted:
            raise PermissionError(f"{type(body).__name__} from {source} refused by its policy")
        link = link or FakeLink(source)
        env = Envelope(body, source, destination=self.node_id)
        before = len(link.sent)
        await reg.handler(Inbound(body, env, link, self))
        return list(link.sent[before:])


@pytest.fixture
def fake_host(tmp_path: Path) -> FakeHost:
    """A FakeHost with its state directory under the test's tmp_path."""
    return FakeHost(tmp_path / "host")


def _is_host(h: FakeHost) -> Host:
    return h  # type-checks that FakeHost satisfies the Host protocol
