"""The asyncio driver: lifecycle, the link table, dispatch through one policy gate, pending replies.

A Node listens, keeps links to its domain and static peers up (reconnecting with backoff), hands each
envelope for it to the one service registered for its type (``edgeagent.host``), forwards the rest
(``services.routes``) and serves ``control.sock`` (``control.py``)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from .control import CONTROL_SOCKET, ControlServer, control_request, document, send_command, status_document
from .dispatch import Dispatch, Interceptor
from .exceptions import EdgeAgentError, HandshakeError, LinkError, NoRoute, RequestTimeout, remote_error
from .host import Pick, Service
from .identity import Identity
from .limits import Limiter, ResourceLimits, machine_memory
from .links.base import LinkOptions
from .links.link import Link
from .links.reconnect import keep_connected
from .links.websocket import Listener, dial, listen
from .nodeconfig import NodeConfig
from .peers import PeerTable
from .pending import PendingRequests
from .routing import Router, Traits
from .services.netwatch import NetworkService
from .services.registry import RegistryService
from .services.routes import RoutingConfig, RoutingService, traits_of
from .services.rtc import RtcService
from .services.worker import WorkerService
from .statedir import DOMAIN_PIN, StateLock, domain_pin, pin_domain, write_private
from .statedir import prepare as prepare_state_dir
from .wire import Envelope, Error, ErrorCode, Message, NodeId
from .worker import ObjectStore, Permissions, Worker

__all__ = ["CONTROL_SOCKET", "Node", "NodeConfig", "control_request"]

log = logging.getLogger(__name__)
T = TypeVar("T")


class Node:
    """One agent (or domain): links, dispatch and the services mounted on them."""

    def __init__(self, identity: Identity, state_dir: Path, config: NodeConfig) -> None:
        self.identity = identity
        self._state_dir = state_dir
        self.config = config
        self.started = time.time()
        self.peers = PeerTable(config.allow)
        self.links = self.peers.by_peer  # the link table: peer -> its links (the first is used)
        self.dispatch = Dispatch(self.peers)
        self.limiter = Limiter(config.resources or ResourceLimits.scaled(machine_memory()))
        forwards = config.forward if config.forward is not None else config.role == "domain"
        caps = tuple(config.link.capabilities) + (("relay",) if forwards else ())
        from .payload.manifest import hash_available

        if hash_available("blake3"):
            caps += ("blake3",)  # payload manifests may hash chunks with BLAKE3 for this node
        self._link_options = dataclasses.replace(
            config.link,
            authorize=self.peers.authorised,
            admit=self.dispatch.admits,
            expects=self.dispatch.expects,
            preauth_frame=self.limiter.limits.preauth_frame_bytes,
            on_limit=lambda name, peer, why: self.limiter.refuse(name, peer, why, time.monotonic()),
            role=config.role,
            capabilities=tuple(dict.fromkeys(caps)),
        )
        self.listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keepers: set[asyncio.Future[Any]] = set()  # the redial loops of the domain and static peers
        self._stopped = asyncio.Event()
        self._stopping = False  # link closures no longer reach the services
        self._pending = PendingRequests()
        self._dials: dict[NodeId, asyncio.Future[Link]] = {}  # dials under way (ensure_link shares them)
        self.services: list[Service] = []
        self._lock = StateLock(state_dir)  # taken by start(), after prepare() checked the directory
        self._started = False

        from .payload import PayloadService
        from .pubsub import PubSub
        from .stream import StreamService

        self.registry = self.mount(RegistryService(self, upload_bps=lambda: config.payload_upload_bps or 0.0))
        self.peers.records_by_id = self.registry.records
        self.network = self.mount(
            NetworkService(
                self,
                probe=config.net_probe,
                interval=config.probe_interval,
                run_conditions=config.run_conditions,
                mdns=config.mdns,
                mdns_listen_only=config.mdns_listen_only,
                adopt_network=self._adopt_network,
                register=self.registry.register,
                next_seq=self.registry.next_seq,
                listen_port=lambda: self.listeners[0].port if self.listeners else None,
                linked_or_dialing=lambda n: n in self.links or n in self._dials,
                dial=self._dial_url,
                adopt_link=self._on_link,
                on_relay_change=lambda: setattr(self.routing, "report_due", True),
            )
        )
        self.payloads = PayloadService(
            self, state_dir / "payloads", quota_bytes=config.payload_quota, upload_bps=config.payload_upload_bps
        )
        routing_config = RoutingConfig(
            config.role, forwards, config.priors, config.route_tick, config.hop_report_interval,
            config.link_probe_interval, config.probe_bytes,
        )  # fmt: skip
        self.routing = self.mount(
            RoutingService(self, routing_config, may_relay=lambda: self.network.may_relay, busy=self.payloads.busy)
        )
        self.streams = self.mount(StreamService(self, state_dir / "streams", max_bytes=config.stream_max_bytes))
        self.worker = Worker(
            ObjectStore(config.store_quota, config.default_lease),
            Permissions(domains=self.peers.domains, allowed=set(config.allow or ()), open=config.allow is None),
        )
        self.mount(WorkerService(self, self.worker, self.streams))
        self.rtc = self.mount(
            RtcService(self, ice_servers=config.ice_servers, link_to=self.routing.link_to, adopt=self._on_link)
        )
        self.mount(self.payloads)
        self.pubsub = self.mount(PubSub(self, state_dir / "pubsub.json"))
        from .services.fl import mount_fl

        self.fl_domain, self.fl_device = mount_fl(
            self, self.payloads, role=config.role, job=config.fl_job, data=config.fl_data,
            run_conditions=config.run_conditions,
        )  # fmt: skip

    # -- services ----------------------------------------------------------------------------

    def mount(self, service: T) -> T:
        """Register a service's handlers (a message type served twice is an error) and its link hooks."""
        assert isinstance(service, Service)
        self.dispatch.add(service)
        self.services.append(service)
        return service

    def intercept(self, kind: type[Message], spy: Interceptor) -> Callable[[], None]:
        """Call ``spy`` with each admitted ``kind`` before its handler (False skips it); returns the remover."""
        return self.dispatch.intercept(kind, spy)

    # -- Host --------------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        return self.identity.node_id

    @property
    def state_dir(self) -> Path:
        return self._state_dir

    @property
    def role(self) -> str:
        return self.config.role

    @property
    def link_options(self) -> LinkOptions:
        return self._link_options

    @property
    def routes(self) -> RoutingService:
        return self.routing

    @property
    def router(self) -> Router:
        return self.routing.router

    @property
    def listen_urls(self) -> list[str]:
        return [lst.url for lst in self.listeners]

    def spawn(self, coro: Coroutine[Any, Any, T], *, name: str | None = None) -> asyncio.Task[T]:
        task = asyncio.ensure_future(coro)
        if name:
            task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._reaped)
        return task

    def _reaped(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled() or (exc := task.exception()) is None or self._stopping:
            return
        if isinstance(exc, EdgeAgentError):
            log.warning("%s: %s", task.get_name(), exc)
        else:
            log.error("task %s failed", task.get_name(), exc_info=exc)

    def wire_bytes_sent(self) -> int:
        return self.peers.wire_bytes_sent()

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Lock the state directory (0700, ours, not writable by others), listen, link, serve control.sock."""
        prepare_state_dir(self.state_dir)
        self._lock.acquire()
        self._started = True
        try:
            await self._start()
        except BaseException:
            self._lock.release()
            raise

    async def _start(self) -> None:
        await self.network.start()
        for url in self.config.listen:
            self.listeners.append(
                await listen(url, self.identity, self._on_link, self.link_options, ssl_context=self.config.server_tls)
            )
        if self.listeners:
            self._link_options = dataclasses.replace(self._link_options, listen=tuple(self.listen_urls))
        for url in ([self.config.domain] if self.config.domain else []) + self.config.peers:
            task = asyncio.ensure_future(self._keep(url, is_domain=url == self.config.domain))
            self._keepers.add(task)
            task.add_done_callback(self._keepers.discard)
        await self.network.start_watching()
        self.spawn(self.routing.run(), name="routes")
        if self.fl_domain is not None:
            self.fl_domain.start()
        self._control = ControlServer(
            self.state_dir,
            {
                "status": document("status", self.status),
                "routes": document("routes", self.routing.routes_json),
                "peers": document("peers", self.registry.peers_json),
                "send": send_command(self.payloads),
            },
        )
        await self._control.start()
        info = {"node_id": str(self.identity.node_id), "pid": os.getpid(), "listen": self.listen_urls}
        write_private(self.state_dir / "node.json", json.dumps(info).encode())

    async def stop(self) -> None:
        if not self._started:  # never started (or refused the state directory): it owns nothing there
            self._stopped.set()
            return
        await asyncio.gather(self.network.aclose(), self.registry.goodbye())  # mDNS and registry goodbyes first
        # stop redialling first (a keeper closes its link when cancelled), then close every
        # other link before cancelling the tasks that serve them
        self._stopping = True
        for task in list(self._keepers):
            task.cancel()
        for task in list(self._keepers):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for links in list(self.links.values()):
            for link in list(links):
                await link.close(1001, "node stopping")
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        for lst in self.listeners:
            await lst.close()
        if getattr(self, "_control", None) is not None:
            await self._control.close()
        self._pending.cancel_all()
        for service in reversed(self.services):
            if service is not self.network:
                with contextlib.suppress(Exception):
                    await service.aclose()
        self._lock.release()
        self._stopped.set()

    async def run_forever(self) -> None:
        await self._stopped.wait()

    # -- links ---------------------------------------------------------------------------------

    async def _keep(self, url: str, is_domain: bool) -> None:
        async def dial_once() -> Link:
            opts = self.link_options
            overrides = self.config.peer_links.get(url)
            if overrides:
                opts = dataclasses.replace(opts, **overrides)
            expected = (self.config.domain_id or domain_pin(self._state_dir)) if is_domain else None
            if is_domain:  # the configured domain is authorised from its first frame
                opts = dataclasses.replace(opts, authorize=lambda _peer: True)
            try:
                return await dial(url, self.identity, opts, expected_peer=expected, ssl_context=self.config.client_tls)
            except HandshakeError as exc:
                if expected is not None and "answered" in str(exc):
                    how = "--expect" if self.config.domain_id else f"the pin in {self._state_dir / DOMAIN_PIN}"
                    log.error("domain %s is not the domain (%s, by %s); if its key changed, fix that", url, exc, how)
                raise

        async def on_link(link: Link) -> None:
            if is_domain:
                self.peers.domains.add(link.peer)
                link.authorised = True
                pin_domain(self._state_dir, link.peer, url)
            await self._on_link(link)
            if is_domain:
                self.spawn(self.registry.register(link.peer))

        await keep_connected(dial_once, on_link)

    async def _dial_url(self, url: str, *, expected_peer: NodeId | None = None) -> Link:
        return await dial(
            url, self.identity, self.link_options, expected_peer=expected_peer, ssl_context=self.config.client_tls
        )

    async def _on_link(self, link: Link) -> None:
        refused = self.peers.admit_link(link, self.limiter.limits)
        if refused is not None:  # the new link, or a stranger's that makes room for it, is closed
            loser, name, why = refused
            self.limiter.refuse(name, loser.peer, why, time.monotonic())
            await loser.close(1008, f"limit {name}: {why}"[:120])
            if loser is link:
                return
        self.peers.add(link)
        log.info("link up: %s over %s (%s, %s)", link.peer, link.transport_kind, link.codec, link.cipher)
        for service in self.services:
            service.on_link_up(link.peer, link)
        self.spawn(self._serve(link))

    async def _serve(self, link: Link) -> None:
        try:
            async for env in link:
                try:
                    await self._dispatch(link, env)
                except LinkError:
                    break
                except EdgeAgentError as exc:
                    log.warning("handling %s from %s failed: %s", type(env.body).__name__, link.peer, exc)
                except Exception:  # a bug in one handler must not stop serving the link
                    log.exception("handling %s from %s failed", type(env.body).__name__, link.peer)
        finally:
            self._link_closed(link)

    def _link_closed(self, link: Link) -> None:
        last = self.peers.remove(link)
        if not self._stopping:
            for service in self.services:
                if last:
                    service.on_link_down(link.peer)
                else:
                    service.on_link_replaced(link.peer)
        self._pending.link_closed(link)
        self.routing.on_link_closed(link)
        log.info("link down: %s (%s)", link.peer, link.close_error)

    async def _dispatch(self, link: Link, env: Envelope) -> None:
        me = self.identity.node_id
        relayed = env.source != link.peer
        if relayed and not self.routing.may_relay_to_me(link):
            # only the domain or an authorised peer carries others' messages; everyone else speaks for itself
            if env.reply_to is None:
                reason = "only a domain or an authorised relay may carry messages for others"
                await link.send(env.reply(Error(ErrorCode.UNAUTHORIZED, reason), me))
            return
        if env.destination is not None and env.destination != me:
            await self.routing.forward(link, env)
            return
        if relayed and not self.dispatch.proven(env):
            return  # a relayed envelope must prove its origin: dropped (and counted), never answered
        if env.reply_to is not None and self._pending.resolve(env, link):
            return
        await self.dispatch.deliver(link, env, self)

    # -- sending and requests ------------------------------------------------------------------

    async def request(
        self, peer: NodeId, body: Message, *, timeout: float = 10.0, traits: Traits | None = None
    ) -> Message:
        """Send ``body`` to ``peer`` over the best route and wait for its reply (the Response or the reply body).

        Raises a ``RemoteError`` (the subclass for its code) when the peer answers with an Error,
        ``RequestTimeout`` after ``timeout`` seconds, ``NoRoute`` when no link leads there;
        cancelling the call forgets the request (a late reply is dropped).
        """
        env = Envelope(body, self.identity.node_id, destination=peer)
        fut = self._pending.add(env.msg_id, peer)
        link: Link | None = None
        try:
            link = await self._send_env(env, traits or Traits("request"))
            self._pending.sent_on(env.msg_id, link)
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            if link is not None:
                self.routing.failed(link)
            raise RequestTimeout(f"{type(body).__name__} to {peer}: no reply within {timeout}s") from None
        finally:
            self._pending.discard(env.msg_id)
        if link is not None:
            self.routing.succeeded(link)
        if isinstance(reply.body, Error):
            raise remote_error(reply.body.code, reply.body.reason)
        return reply.body

    async def send(self, peer: NodeId, body: Message, traits: Traits | None = None) -> None:
        """Send one message to ``peer`` over the route the policy picks for ``traits``; no reply awaited."""
        await self._send_env(Envelope(body, self.identity.node_id, destination=peer), traits or traits_of(body))

    async def _send_env(self, env: Envelope, traits: Traits) -> Link:
        """Pick the route for ``env``, attach it when it passes relays, send; returns the first link."""
        assert env.destination is not None
        pick: Pick = self.routing.pick(env.destination, traits)
        if pick.route is not None:
            env = dataclasses.replace(env, route=pick.route)
        self.routing.sent(traits, pick)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s to %s via %s: %s", type(env.body).__name__, env.destination, pick.label, pick.reason)
        try:
            await pick.link.send(env)
        except LinkError:
            self.routing.failed(pick.link)
            raise
        return pick.link

    async def ensure_link(self, peer: NodeId, addresses: tuple[str, ...] = (), timeout: float = 10.0) -> Link:
        """A link to ``peer``: an existing one, or a new one dialled at ``addresses`` (or its record's).

        Concurrent callers share one dial. When the peer dials this node at the same time,
        both links stay (each carries what was sent on it; one idle link costs a keepalive).
        """
        for link in self.links.get(peer, []):
            if not link.closed:
                return link
        pending = self._dials.get(peer)
        if pending is None:
            pending = asyncio.ensure_future(self._dial_peer(peer, addresses, timeout))
            self._dials[peer] = pending
            pending.add_done_callback(lambda _: self._dials.pop(peer, None))
            # mark its failure seen: it is reported to whoever still awaits it, if anyone
            pending.add_done_callback(lambda f: f.cancelled() or f.exception())
        return await asyncio.shield(pending)

    async def _dial_peer(self, peer: NodeId, addresses: tuple[str, ...], timeout: float) -> Link:
        rec = self.registry.records.get(peer)
        urls = list(addresses) or (list(rec.addresses) if rec else [])
        errors = []
        for url in urls:
            try:
                async with asyncio.timeout(timeout):
                    link = await self._dial_url(url, expected_peer=peer)
            except (EdgeAgentError, TimeoutError) as exc:
                errors.append(f"{url}: {exc or 'timed out'}")
                continue
            # a link the peer dialled meanwhile stays too: closing either end's own dial (as this did
            # once) left both ends without a link, and closing any link loses what is in flight on it
            await self._on_link(link)
            return link
        raise NoRoute(f"cannot link to {peer}: " + ("; ".join(errors) if errors else "no address known"))

    def _adopt_network(self, info: Any) -> None:
        self._link_options = dataclasses.replace(
            self._link_options, network_kind=info.kind, metered=info.metered, cost_per_gb=info.cost_per_gb
        )

    # -- conveniences (the services' APIs) -----------------------------------------------------

    @property
    def registered(self) -> asyncio.Event:
        return self.registry.registered

    def subscribe(self, topic: str, *, maxsize: int = 4096) -> Any:
        """``async with node.subscribe(topic) as sub: async for msg in sub`` (see ``edgeagent.pubsub``)."""
        return self.pubsub.subscribe(topic, maxsize=maxsize)

    async def publish(self, topic: str, value: Any) -> int:
        """Publish ``value`` on ``topic`` (at-least-once to every subscriber); returns its sequence number."""
        return await self.pubsub.publish(topic, value)

    async def send_stream(self, peer: NodeId, source: bytes | bytearray | memoryview | Path, **kwargs: Any) -> Any:
        """Stream bytes or a file to ``peer`` over the best bulk route (see ``edgeagent.stream``)."""
        return await self.streams.send(peer, source, **kwargs)

    def open_stream(self, peer: NodeId, *, name: str = "", **kwargs: Any) -> Any:
        """``async with node.open_stream(peer, name=...) as s: await s.write(data)`` (an open-ended stream)."""
        return self.streams.open(peer, name=name, **kwargs)

    # -- status --------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return status_document(
            node_id=self.identity.node_id,
            role=self.config.role,
            listen=self.listen_urls,
            started=self.started,
            links=self.peers.every_link(),
            sent_by_type=self.peers.sent_by_type(),
            services=self.services,
            extra={"refused": self.dispatch.refusals(self._pending.foreign), "limits": self.limiter.to_json()},
        )
