"""Requests this node awaits an answer to, and who may answer each.

A reply is taken only from the node that was asked. The one exception is an ``Error`` from
the relay the request left through (that relay saying it has no route, or may not carry
it): a relay can refuse to carry a request, never answer it. A reply from anyone else is
dropped and counted (``status --json`` "refused" under "reply from another node").
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from .exceptions import LinkClosed
from .wire import Envelope, Error, NodeId

if TYPE_CHECKING:
    from .links.link import Link

__all__ = ["PendingRequests"]


class PendingRequests:
    """msg_id -> (the future its reply resolves, the node asked, the link it left on)."""

    def __init__(self) -> None:
        self._futures: dict[int, asyncio.Future[Envelope]] = {}
        self._asked: dict[int, NodeId] = {}
        self._via: dict[int, Link] = {}
        self.foreign = 0  # replies dropped because someone other than the node asked sent them

    def add(self, msg_id: int, peer: NodeId) -> asyncio.Future[Envelope]:
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._futures[msg_id] = fut
        self._asked[msg_id] = peer
        return fut

    def sent_on(self, msg_id: int, link: Link) -> None:
        """The request left on ``link``: it fails at once if that link goes down."""
        self._via[msg_id] = link

    def discard(self, msg_id: int) -> None:
        self._futures.pop(msg_id, None)
        self._asked.pop(msg_id, None)
        self._via.pop(msg_id, None)

    def __contains__(self, msg_id: object) -> bool:
        return msg_id in self._futures

    def __len__(self) -> int:
        return len(self._futures)

    def resolve(self, env: Envelope, link: Link) -> bool:
        """Hand ``env`` (a reply) to its request; False when it is not one this node awaits.

        A reply from a node other than the one asked is swallowed (True) and counted."""
        mid = env.reply_to
        fut = self._futures.get(mid) if mid is not None else None
        if fut is None or mid is None:
            return False
        via = self._via.get(mid)
        relay_refusal = isinstance(env.body, Error) and via is not None and env.source == via.peer == link.peer
        if env.source != self._asked[mid] and not relay_refusal:
            self.foreign += 1
            return True
        self.discard(mid)
        if not fut.done():
            fut.set_result(env)
        return True

    def link_closed(self, link: Link) -> None:
        """Fail every request that left on ``link``."""
        for mid, via in list(self._via.items()):
            fut = self._futures.get(mid)
            if via is link and fut is not None and not fut.done():
                fut.set_exception(link.close_error or LinkClosed(f"link to {link.peer} closed"))

    def cancel_all(self) -> None:
        for fut in self._futures.values():
            if not fut.done():
                fut.cancel()
