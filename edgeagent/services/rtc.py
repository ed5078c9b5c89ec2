"""WebRTC signalling: Offer/Answer/Candidate relayed by the domain, links opened and accepted
(aiortc is imported only when a WebRTC link is actually made: the ``webrtc`` extra)."""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..exceptions import EdgeAgentError
from ..host import Host, Inbound, Policy, Registration, Sender, Service, on
from ..wire import Answer, Candidate, Envelope, ErrorCode, Message, NodeId, Offer

if TYPE_CHECKING:
    from ..links.link import Link

__all__ = ["RtcService"]

log = logging.getLogger(__name__)
_MAX_NEGOTIATIONS: Final = 64


class RtcService(Service):
    """Opens WebRTC links to peers and accepts theirs; the new links are adopted by ``adopt``."""

    name = "webrtc"

    def __init__(
        self,
        host: Host,
        *,
        ice_servers: tuple[str, ...],
        link_to: Callable[..., Link],
        adopt: Callable[[Link], Awaitable[None]],
    ) -> None:
        self.host = host
        self.ice_servers = ice_servers
        self._link_to = link_to
        self._adopt = adopt
        self.sessions: dict[str, Any] = {}  # session id -> QueueSignaller

    def handlers(self) -> Mapping[type[Message], Registration]:
        # the domain vouches for what it relays; others must be authorised
        offers = Policy(Sender.AUTHORISED, relayable=True)
        return {
            Offer: on(offers, self._on_offer),
            Answer: on(offers, self._on_signal),
            Candidate: on(offers, self._on_signal),
        }

    def _signaller(self, via: Link, peer: NodeId, session_id: str) -> Any:
        from ..links.webrtc import QueueSignaller

        async def send(body: Any) -> None:
            await via.send(Envelope(body, self.host.node_id, destination=peer))

        sig = QueueSignaller(send)
        self.sessions[session_id] = sig
        return sig

    async def connect(self, peer: NodeId, timeout: float = 30.0) -> Link:
        """Open a WebRTC link to ``peer``, signalling through the domain (needs the webrtc extra)."""
        from ..links.webrtc import rtc_dial

        session_id = secrets.token_hex(8)
        sig = self._signaller(self._link_to(peer, exclude=("webrtc",)), peer, session_id)
        try:
            link = await rtc_dial(
                self.host.identity,
                sig,
                self.host.link_options,
                expected_peer=peer,
                ice_servers=self.ice_servers,
                session_id=session_id,
                timeout=timeout,
            )
        finally:
            self.sessions.pop(session_id, None)
        await self._adopt(link)
        return link

    async def _on_offer(self, m: Inbound[Offer]) -> None:
        if not m.link.authorised:  # relayed offers: only a domain's (or an authorised relay's) link
            await m.refuse(ErrorCode.UNAUTHORIZED, "not authorised to open WebRTC links")
            return
        if len(self.sessions) >= _MAX_NEGOTIATIONS or m.body.session_id in self.sessions:
            await m.refuse(ErrorCode.BUSY, "too many WebRTC negotiations")
            return
        sig = self._signaller(m.link, m.source, m.body.session_id)
        self.host.spawn(self._accept(m.env, sig))

    async def _accept(self, env: Envelope, sig: Any) -> None:
        from ..links.webrtc import rtc_accept

        session_id = env.body.session_id  # type: ignore[attr-defined]
        try:
            link = await rtc_accept(self.host.identity, env, sig, self.host.link_options, ice_servers=self.ice_servers)
        except EdgeAgentError as exc:
            log.warning("WebRTC from %s failed: %s", env.source, exc)
            return
        finally:
            self.sessions.pop(session_id, None)
        await self._adopt(link)

    async def _on_signal(self, m: Inbound[Answer | Candidate]) -> None:
        sig = self.sessions.get(m.body.session_id)
        if sig is not None:
            sig.feed(m.body)
