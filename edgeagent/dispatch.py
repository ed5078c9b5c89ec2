"""One dispatch table and one policy gate: every message type is served by one registered handler,
and its declared ``Policy`` is checked here, once, before the handler runs.

The link's own gate (what a peer that is not authorised may send at all) asks ``admits``, so both
gates read the same table.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Final

from .exceptions import ConfigError
from .host import Inbound, PeerView, Policy, Registration, Sender, Service
from .identity import origin_proven
from .wire import Envelope, ErrorCode, Message, NodeId

if TYPE_CHECKING:
    from .host import Host
    from .links.link import Link

__all__ = ["Dispatch", "Interceptor"]

_SEEN_MAX: Final = 16384  # relayed envelopes remembered to refuse a replay

#: a spy called with each admitted message before its handler; returning False skips the handler
Interceptor = Callable[[Inbound[Any]], Awaitable[bool | None]]


class Dispatch:
    """The registrations of every mounted service, the policy gate, and test spies (``intercept``)."""

    def __init__(self, peers: PeerView) -> None:
        self.peers = peers
        self._table: dict[type[Message], Registration] = {}
        self._spies: dict[type[Message], list[Interceptor]] = {}
        self.refused: Counter[str] = Counter()  # messages the gate refused, per type
        self._services: list[Service] = []
        self._seen: OrderedDict[tuple[NodeId, int], None] = OrderedDict()  # relayed (source, msg_id) taken

    def proven(self, env: Envelope) -> bool:
        """Whether a relayed envelope for this node proves its origin and was not taken before
        (a relay may delay or drop what it carries, never forge or replay it); counts what is not."""
        key = (env.source, env.msg_id)
        if key in self._seen:
            self.refused["replayed (relayed twice)"] += 1
            return False
        if not origin_proven(env):
            self.refused["no origin proof"] += 1
            return False
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        return True

    def refusals(self, foreign_replies: int) -> dict[str, int]:
        """``status --json`` "refused": per message type, plus unproven, replayed and foreign replies."""
        out = dict(self.refused)
        if foreign_replies:
            out["reply from another node"] = foreign_replies
        return out

    def add(self, service: Service) -> None:
        """Register a service's handlers; a message type served twice is an error."""
        for kind, reg in service.handlers().items():
            if kind in self._table:
                raise ConfigError(f"{kind.__name__} is served twice (by {service.name!r} and another service)")
            self._table[kind] = reg
        if type(service).expects is not Service.expects:
            self._services.append(service)

    def intercept(self, kind: type[Message], spy: Interceptor) -> Callable[[], None]:
        """Call ``spy`` with each admitted ``kind`` before its handler (False skips it); returns the remover."""
        spies = self._spies.setdefault(kind, [])
        spies.append(spy)
        return lambda: spies.remove(spy)

    def expects(self, peer: NodeId) -> bool:
        """Whether a service expects large frames now from ``peer``, a peer that is not authorised."""
        return any(service.expects(peer) for service in self._services)

    def admits(self, peer: NodeId, body: Any) -> bool:
        """The link's gate for a peer that is not authorised: only what a MEMBER policy admits."""
        reg = self._table.get(type(body))
        policy = reg.policy if reg is not None else None
        return policy is not None and policy.admits is not None and bool(policy.admits(peer, body))

    def refusal(self, policy: Policy, link_peer: NodeId, env: Envelope) -> str:
        """Why ``policy`` refuses ``env`` arriving from ``link_peer`` ("" when it admits it)."""
        src, first_hand, kind = env.source, env.source == link_peer, type(env.body).__name__
        if not first_hand and not policy.relayable:
            return f"{kind} is accepted first-hand only"
        who = policy.sender
        if who is Sender.ANYONE:
            return ""
        if who is Sender.DOMAIN:
            return "" if self.peers.is_domain(src) else f"only the domain may send {kind}"
        vouched = not first_hand and self.peers.is_domain(link_peer)  # the domain vouches for what it relays
        if self.peers.authorised(src) or vouched:
            return ""
        if who is Sender.MEMBER and policy.admits is not None and policy.admits(src, env.body):
            return ""
        return f"{src} is not authorised to send {kind}"

    async def deliver(self, link: Link, env: Envelope, host: Host) -> None:
        """Run the handler of ``env``'s type if its policy admits the sender; else answer with an Error."""
        reg = self._table.get(type(env.body))
        inbound: Inbound[Any] = Inbound(env.body, env, link, host)
        if reg is None:
            await inbound.refuse(ErrorCode.UNSUPPORTED, f"{type(env.body).__name__} is not served here")
            return
        why = self.refusal(reg.policy, link.peer, env)
        if why:
            self.refused[type(env.body).__name__] += 1
            if not reg.policy.bulk:
                await inbound.refuse(ErrorCode.UNAUTHORIZED, why)
            return
        for spy in self._spies.get(type(env.body), ()):
            if await spy(inbound) is False:
                return
        await reg.handler(inbound)
