"""The asyncio driver: one place that wires identity, links and (as they land) the other layers.

A Node listens on its URLs, keeps links to its domain and static peers up
(reconnecting with backoff), verifies the PeerRecords peers present, answers
what it does not serve yet with an Error, and serves a local control API on
``<state>/control.sock`` (mode 0600) for ``edgeagent status``.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import ssl
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .exceptions import EdgeAgentError, LinkError, NoRoute, RemoteError, RequestTimeout, SignatureError
from .identity import Identity, sign_struct, verify_struct
from .links.base import LinkOptions
from .links.link import Link
from .links.reconnect import keep_connected
from .links.websocket import Listener, dial, listen
from .wire import (
    Answer,
    Candidate,
    Envelope,
    Error,
    ErrorCode,
    Message,
    NodeId,
    Offer,
    PeerList,
    PeerRecord,
    Response,
)
from .worker import WORKER_MESSAGES, ObjectStore, Permissions, Worker

__all__ = ["CONTROL_SOCKET", "Node", "NodeConfig", "control_request"]

log = logging.getLogger(__name__)
CONTROL_SOCKET: Final = "control.sock"
_MAX_CONTROL_REQUEST: Final = 64 * 1024
_MAX_WORKER_TASKS: Final = 32
_INLINE_WORK_BYTES: Final = 256 * 1024  # operations touching more than this run in a thread


@dataclass
class NodeConfig:
    """What a node does.

    ``allow``: the peers authorised besides the node's domain (default none); None makes the
    node open (every authenticated peer is authorised).
    """

    role: str = "device"
    listen: list[str] = field(default_factory=list)
    peers: list[str] = field(default_factory=list)
    domain: str | None = None
    allow: set[NodeId] | None = field(default_factory=set)
    link: LinkOptions = field(default_factory=LinkOptions)
    server_tls: ssl.SSLContext | None = None  # for wss:// listen URLs
    client_tls: ssl.SSLContext | None = None  # for dialling wss:// URLs (None: system CAs)
    ice_servers: tuple[str, ...] = ()  # STUN/TURN URLs for WebRTC; none by default
    mdns: str = "off"  # "off", "loopback" (127.0.0.1 only) or "auto" (non-cellular LAN interfaces)
    net_probe: Callable[[], Any] | None = None  # returns a netcost.NetInfo; None: take link's settings as given
    probe_interval: float = 60.0  # seconds between network re-probes (a change re-advertises at once)
    run_conditions: Any = None  # netcost.RunConditions (default: relay only when unmetered)
    mdns_listen_only: bool = False  # browse without advertising
    store_quota: int = 256 << 20  # bytes the worker's object store may hold
    default_lease: float = 600.0  # seconds an object lives unless its lease is renewed
    forward: bool | None = None  # relay envelopes addressed to other nodes (default: domains do)


class Node:
    def __init__(self, identity: Identity, state_dir: Path, config: NodeConfig) -> None:
        self.identity = identity
        self.state_dir = state_dir
        self.config = config
        self.started = time.time()
        allow = config.allow
        domain_ids: set[NodeId] = set()
        self._domain_ids = domain_ids

        def authorize(peer: NodeId) -> bool:
            return allow is None or peer in allow or peer in domain_ids

        self.link_options = dataclasses.replace(config.link, authorize=authorize, role=config.role)
        self.links: dict[NodeId, list[Link]] = {}
        self.peer_records: dict[NodeId, PeerRecord] = {}
        self.listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._control: asyncio.AbstractServer | None = None
        self._stopped = asyncio.Event()
        self.worker = Worker(
            ObjectStore(config.store_quota, config.default_lease),
            Permissions(domains=domain_ids, allowed=set(allow or ()), open=allow is None),
        )
        self._worker_lock = asyncio.Lock()
        self._worker_slots = asyncio.Semaphore(_MAX_WORKER_TASKS)
        self._pending: dict[int, asyncio.Future[Envelope]] = {}
        self.handlers: dict[type, Callable[[Link, Envelope], Awaitable[None]]] = {
            **dict.fromkeys(WORKER_MESSAGES, self._on_worker),
            PeerRecord: self._on_peer_record,
            Offer: self._on_offer,
            Answer: self._on_signal,
            Candidate: self._on_signal,
        }
        self._rtc_sessions: dict[str, Any] = {}  # session id -> QueueSignaller
        self.mdns: Any = None  # MdnsDiscovery when enabled
        self._record_seq = 0
        self.network: Any = None  # the last netcost.NetInfo
        self.may_relay = (True, "network not probed")
        self.registered = asyncio.Event()  # set once a domain has answered our registration
        self._dialing: set[NodeId] = set()
        self.forwarded = 0

    # -- life cycle ------------------------------------------------------------------------

    async def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.config.net_probe is not None:
            self._apply_network(await asyncio.to_thread(self.config.net_probe))
        for url in self.config.listen:
            self.listeners.append(
                await listen(url, self.identity, self._on_link, self.link_options, ssl_context=self.config.server_tls)
            )
        if self.listeners:
            urls = tuple(lst.url for lst in self.listeners)
            self.link_options = dataclasses.replace(self.link_options, listen=urls)
        for url in ([self.config.domain] if self.config.domain else []) + self.config.peers:
            self._spawn(self._keep(url, is_domain=url == self.config.domain))
        if self.config.mdns != "off":
            await self._start_mdns()
        if self.config.net_probe is not None:
            self._spawn(self._watch_network())
        await self._start_control()
        (self.state_dir / "node.json").write_text(
            json.dumps({"node_id": str(self.identity.node_id), "pid": os.getpid(), "listen": self.listen_urls})
        )

    @property
    def domain_ids(self) -> set[NodeId]:
        """NodeIds of this node's domains (learnt when their links come up)."""
        return set(self._domain_ids)

    @property
    def listen_urls(self) -> list[str]:
        return [lst.url for lst in self.listeners]

    async def stop(self) -> None:
        if self.mdns is not None:
            await self.mdns.stop()  # goodbye packets first
        # close every link before cancelling the tasks that serve them (a serve task's exit
        # unregisters its link, which would hide it from this loop)
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
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / CONTROL_SOCKET).unlink()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self._stopped.set()

    async def run_forever(self) -> None:
        await self._stopped.wait()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- links -----------------------------------------------------------------------------

    async def _keep(self, url: str, is_domain: bool) -> None:
        async def dial_once() -> Link:
            return await dial(url, self.identity, self.link_options, ssl_context=self.config.client_tls)

        async def on_link(link: Link) -> None:
            if is_domain:
                self._domain_ids.add(link.peer)
                link.authorised = True
            await self._on_link(link)
            if is_domain:
                self._spawn(self.register(link.peer))

        await keep_connected(dial_once, on_link)

    async def _on_link(self, link: Link) -> None:
        self.links.setdefault(link.peer, []).append(link)
        log.info("link up: %s over %s (%s, %s)", link.peer, link.transport_kind, link.codec, link.cipher)
        self._spawn(self._serve(link))

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
            peers = self.links.get(link.peer, [])
            if link in peers:
                peers.remove(link)
            if not peers:
                self.links.pop(link.peer, None)
            log.info("link down: %s (%s)", link.peer, link.close_error)

    async def _dispatch(self, link: Link, env: Envelope) -> None:
        me = self.identity.node_id
        if env.source != link.peer and link.peer not in self._domain_ids:
            # only a domain relays for other nodes; everyone else speaks for itself
            if env.reply_to is None:
                await link.send(env.reply(Error(ErrorCode.UNAUTHORIZED, "only a domain may relay for others"), me))
            return
        if env.reply_to is not None and env.reply_to in self._pending and env.destination in (None, me):
            fut = self._pending.pop(env.reply_to)
            if not fut.done():
                fut.set_result(env)
            return
        if env.destination is not None and env.destination != me:
            await self._forward(link, env)
            return
        handler = self.handlers.get(type(env.body))
        if handler is not None:
            await handler(link, env)
        elif env.reply_to is None:
            reason = f"{type(env.body).__name__} is not served here"
            await link.send(env.reply(Error(ErrorCode.UNSUPPORTED, reason), me))

    # -- network cost and changes -----------------------------------------------------------------

    def _apply_network(self, info: Any) -> bool:
        """Adopt a NetInfo; returns True when what peers are told changed."""
        from .netcost import NetWatcher, RunConditions

        if not hasattr(self, "_net_watcher"):
            self._net_watcher = NetWatcher()
        change = self._net_watcher.update(info)
        self.network = info
        conditions = self.config.run_conditions or RunConditions()
        self.may_relay = conditions.may_relay(info)
        if change is None:
            return False
        self.link_options = dataclasses.replace(
            self.link_options, network_kind=info.kind, metered=info.metered, cost_per_gb=info.cost_per_gb
        )
        log.info(
            "network: %s, %s (%s); relaying %s",
            info.kind,
            "metered" if info.metered else "unmetered",
            info.decided_by,
            "on" if self.may_relay[0] else "off",
        )
        return True

    async def _watch_network(self) -> None:
        assert self.config.net_probe is not None
        while True:
            await asyncio.sleep(self.config.probe_interval)
            info = await asyncio.to_thread(self.config.net_probe)
            if self._apply_network(info):
                await self._readvertise()

    async def _readvertise(self) -> None:
        """Tell the LAN (mDNS) and the domains (registry) about a change, at once."""
        if self.mdns is not None and self.listeners:
            from .discovery import MdnsRecord

            opts = self.link_options
            self._record_seq = max(self._record_seq + 1, int(time.time() * 1000))
            record = MdnsRecord(
                self.identity.node_id,
                self.listeners[0].port,
                seq=self._record_seq,
                capabilities=opts.capabilities,
                network_kind=opts.network_kind,
                metered=opts.metered,
            )
            with contextlib.suppress(Exception):
                await self.mdns.update(record)
        for domain in list(self._domain_ids):
            try:
                await self.register(domain)
            except EdgeAgentError as exc:
                log.warning("re-registering with %s failed: %s", domain, exc)

    # -- mDNS ------------------------------------------------------------------------------------

    async def _start_mdns(self) -> None:
        from .discovery import MdnsDiscovery, MdnsRecord, interface_addresses

        self.mdns = MdnsDiscovery(
            self.identity,
            interface_addresses(self.config.mdns),
            on_peer=self._on_discovered,
            listen_only=self.config.mdns_listen_only,
        )
        record = None
        if self.listeners:
            opts = self.link_options
            record = MdnsRecord(
                self.identity.node_id,
                self.listeners[0].port,
                capabilities=opts.capabilities,
                network_kind=opts.network_kind,
                metered=opts.metered,
            )
        await self.mdns.start(record)

    def _on_discovered(self, peer: Any) -> None:
        """A verified mDNS peer: link to it unless linked already (the lower NodeId dials)."""
        node: NodeId = peer.node_id
        advertising = bool(self.listeners) and not self.config.mdns_listen_only
        if node in self.links or node in self._dialing or (advertising and not self.identity.node_id < node):
            return
        self._dialing.add(node)
        self._spawn(self._dial_discovered(peer))

    async def _dial_discovered(self, peer: Any) -> None:
        try:
            for url in peer.urls():
                try:
                    link = await dial(url, self.identity, self.link_options, expected_peer=peer.node_id)
                except EdgeAgentError as exc:
                    log.info("mDNS peer %s at %s: %s", peer.node_id, url, exc)
                    continue
                await self._on_link(link)
                return
        finally:
            self._dialing.discard(peer.node_id)

    # -- worker and requests -------------------------------------------------------------------

    async def _on_worker(self, link: Link, env: Envelope) -> None:
        # Requests run as tasks (at most _MAX_WORKER_TASKS at once) so a long operation does
        # not hold up the link's other traffic, including replies to this node's own requests.
        await self._worker_slots.acquire()
        task = asyncio.create_task(self._answer(link, env))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        task.add_done_callback(lambda _: self._worker_slots.release())

    async def _answer(self, link: Link, env: Envelope) -> None:
        relayed_by = link.peer if link.peer != env.source else None
        # one request at a time touches the store; only heavy ones leave the event loop (a
        # thread hop costs ~100-300 us here, far more than answering a small request)
        async with self._worker_lock:
            now = time.monotonic()
            if self.worker.cost(env.body, now) >= _INLINE_WORK_BYTES:
                reply = await asyncio.to_thread(self.worker.handle, env.body, env.source, now, relayed_by)
            else:
                reply = self.worker.handle(env.body, env.source, now, relayed_by)
        with contextlib.suppress(LinkError):
            await link.send(env.reply(reply, self.identity.node_id))

    def link_to(self, peer: NodeId, *, exclude: tuple[str, ...] = ()) -> Link:
        """The link a message for ``peer`` leaves on: a direct link, else the domain's (which forwards).

        ``exclude`` skips transports by kind (signalling for WebRTC must not ride a WebRTC link).
        """
        for candidate in [peer, *self._domain_ids]:
            for link in self.links.get(candidate, []):
                if link.transport_kind not in exclude:
                    return link
        raise NoRoute(f"no link to {peer} and no domain to reach it through")

    async def request(self, peer: NodeId, body: Message, *, timeout: float = 10.0) -> Message:
        """Send ``body`` to ``peer`` and wait for its reply (the Response or the reply body).

        Raises ``RemoteError`` when the peer answers with an Error, ``RequestTimeout``
        after ``timeout`` seconds, ``NoRoute`` when no link leads there; cancelling the
        call forgets the request (a late reply is dropped).
        """
        link = self.link_to(peer)
        env = Envelope(body, self.identity.node_id, destination=peer)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[env.msg_id] = fut
        try:
            await link.send(env)
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            raise RequestTimeout(f"{type(body).__name__} to {peer}: no reply within {timeout}s") from None
        finally:
            self._pending.pop(env.msg_id, None)
        if isinstance(reply.body, Error):
            raise RemoteError(reply.body.code, reply.body.reason)
        return reply.body

    # -- forwarding (the domain is the intentional bottleneck between its devices) ---------

    async def _forward(self, link: Link, env: Envelope) -> None:
        forward = self.config.forward if self.config.forward is not None else self.config.role == "domain"
        dst = env.destination
        assert dst is not None
        reason = ""
        if not forward:
            reason = "this node does not forward"
        elif not link.authorised:
            reason = "only authorised peers may send through this node"
        elif env.ttl <= 1:
            reason = "hop limit (ttl) reached"
        targets = [t for t in self.links.get(dst, []) if t.authorised] if not reason else []
        if not reason and not targets:
            reason = f"no link to {dst}" if dst not in self.links else f"{dst} is not authorised here"
        if reason:
            if env.reply_to is None and not isinstance(env.body, Error):
                code = ErrorCode.NO_ROUTE if "no link" in reason or "ttl" in reason else ErrorCode.UNAUTHORIZED
                await link.send(env.reply(Error(code, reason), self.identity.node_id))
            return
        self.forwarded += 1
        await targets[0].send(dataclasses.replace(env, ttl=env.ttl - 1))

    # -- WebRTC -------------------------------------------------------------------------------

    def _signaller(self, via: Link, peer: NodeId, session_id: str) -> Any:
        from .links.webrtc import QueueSignaller

        async def send(body: Any) -> None:
            await via.send(Envelope(body, self.identity.node_id, destination=peer))

        sig = QueueSignaller(send)
        self._rtc_sessions[session_id] = sig
        return sig

    async def connect_rtc(self, peer: NodeId, timeout: float = 30.0) -> Link:
        """Open a WebRTC link to ``peer``, signalling through the domain (needs the webrtc extra)."""
        import secrets

        from .links.webrtc import rtc_dial

        session_id = secrets.token_hex(8)
        sig = self._signaller(self.link_to(peer, exclude=("webrtc",)), peer, session_id)
        try:
            link = await rtc_dial(
                self.identity,
                sig,
                self.link_options,
                expected_peer=peer,
                ice_servers=self.config.ice_servers,
                session_id=session_id,
                timeout=timeout,
            )
        finally:
            self._rtc_sessions.pop(session_id, None)
        await self._on_link(link)
        return link

    async def _on_offer(self, link: Link, env: Envelope) -> None:
        offer = env.body
        assert isinstance(offer, Offer)
        if not link.authorised:  # the domain vouches for what it relays; others must be authorised
            await link.send(
                env.reply(Error(ErrorCode.UNAUTHORIZED, "not authorised to open WebRTC links"), self.identity.node_id)
            )
            return
        if len(self._rtc_sessions) >= 64 or offer.session_id in self._rtc_sessions:
            await link.send(env.reply(Error(ErrorCode.BUSY, "too many WebRTC negotiations"), self.identity.node_id))
            return
        sig = self._signaller(link, env.source, offer.session_id)
        self._spawn(self._accept_rtc(env, sig))

    async def _accept_rtc(self, env: Envelope, sig: Any) -> None:
        from .links.webrtc import rtc_accept

        session_id = env.body.session_id  # type: ignore[attr-defined]
        try:
            link = await rtc_accept(self.identity, env, sig, self.link_options, ice_servers=self.config.ice_servers)
        except EdgeAgentError as exc:
            log.warning("WebRTC from %s failed: %s", env.source, exc)
            return
        finally:
            self._rtc_sessions.pop(session_id, None)
        await self._on_link(link)

    async def _on_signal(self, link: Link, env: Envelope) -> None:
        sig = self._rtc_sessions.get(env.body.session_id)  # type: ignore[attr-defined]
        if sig is not None:
            sig.feed(env.body)

    async def _on_peer_record(self, link: Link, env: Envelope) -> None:
        rec = env.body
        assert isinstance(rec, PeerRecord)
        try:
            verify_struct(rec, rec.node_id)
        except SignatureError as exc:
            await link.send(env.reply(Error(ErrorCode.UNAUTHORIZED, str(exc)), self.identity.node_id))
            return
        if rec.node_id != env.source:
            await link.send(
                env.reply(Error(ErrorCode.UNAUTHORIZED, "a peer may only register itself"), self.identity.node_id)
            )
            return
        if self.config.role == "domain" and link.peer == rec.node_id:
            rec = dataclasses.replace(rec, lan_group=_lan_group(link.transport.remote_address))
        old = self.peer_records.get(rec.node_id)
        if old is None or rec.seq > old.seq:
            self.peer_records[rec.node_id] = rec
        if self.config.role == "domain":  # the registry: answer with the other peers it may reach
            others = tuple(r for n, r in sorted(self.peer_records.items(), key=lambda kv: kv[0]) if n != rec.node_id)
            if link.authorised:
                await link.send(env.reply(PeerList(others), self.identity.node_id))
            else:
                await link.send(env.reply(PeerList(()), self.identity.node_id))
        elif env.reply_to is None:
            await link.send(env.reply(Response(None), self.identity.node_id))

    def own_record(self) -> PeerRecord:
        """This node's signed PeerRecord; ``seq`` grows with every call (ms clock, never repeats)."""
        now_ms = int(time.time() * 1000)
        self._record_seq = max(self._record_seq + 1, now_ms)
        opts = self.link_options
        rec = PeerRecord(
            self.identity.node_id,
            self._record_seq,
            role=self.config.role,
            addresses=tuple(self.listen_urls),
            capabilities=opts.capabilities,
            network_kind=opts.network_kind,
            metered=opts.metered,
            cost_per_gb=opts.cost_per_gb,
            issued_ms=now_ms,
        )
        return sign_struct(rec, self.identity)

    async def register(self, domain: NodeId, timeout: float = 10.0) -> list[PeerRecord]:
        """Register with the domain's registry; returns (and keeps) the verified peer records it lists."""
        reply = await self.request(domain, self.own_record(), timeout=timeout)
        if not isinstance(reply, PeerList):
            raise EdgeAgentError(f"the domain answered registration with {type(reply).__name__}")
        good = []
        for rec in reply.peers:
            try:
                verify_struct(rec, rec.node_id)
            except SignatureError:
                log.warning("domain listed a peer record that does not verify: %s", rec.node_id)
                continue
            old = self.peer_records.get(rec.node_id)
            if old is None or rec.seq >= old.seq:
                self.peer_records[rec.node_id] = rec
            good.append(rec)
        self.registered.set()
        return good

    # -- status and control ----------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        links = []
        sent = received = 0
        for peer, peer_links in self.links.items():
            for link in peer_links:
                st = link.stats
                sent += st.bytes_sent
                received += st.bytes_received
                links.append(
                    {
                        "peer": str(peer),
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
                )
        return {
            "node_id": str(self.identity.node_id),
            "role": self.config.role,
            "listen": self.listen_urls,
            "uptime_s": round(time.time() - self.started, 1),
            "links": links,
            "bytes_sent_total": sent,
            "bytes_received_total": received,
            "payloads": [],
            "network": None
            if self.network is None
            else {**self.network.to_json(), "may_relay": self.may_relay[0], "relay_reason": self.may_relay[1]},
            "mdns": None
            if self.mdns is None
            else {"mode": self.config.mdns, "peers": len(self.mdns.peers), "ignored": self.mdns.ignored},
        }

    async def _start_control(self) -> None:
        path = self.state_dir / CONTROL_SOCKET
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old = os.umask(0o177)
        try:
            self._control = await asyncio.start_unix_server(self._on_control, path=str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)

    async def _on_control(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            if len(line) > _MAX_CONTROL_REQUEST:
                raise ValueError("request too large")
            request = json.loads(line or b"{}")
            cmd = request.get("cmd")
            if cmd == "status":
                reply: dict[str, Any] = {"ok": True, "status": self.status()}
            elif cmd == "peers":
                reply = {"ok": True, "peers": [self._peer_json(r) for r in self.peer_records.values()]}
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except (ValueError, TimeoutError, AttributeError) as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    @staticmethod
    def _peer_json(rec: PeerRecord) -> dict[str, Any]:
        return {
            "node_id": str(rec.node_id),
            "seq": rec.seq,
            "role": rec.role,
            "addresses": list(rec.addresses),
            "network_kind": rec.network_kind,
            "metered": rec.metered,
            "lan_group": rec.lan_group,
        }


def _lan_group(remote_address: str) -> str:
    """The LAN group hint for a peer seen at ``host:port``: its /24 (IPv4) or /64 (IPv6) subnet."""
    import ipaddress

    host = remote_address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


async def control_request(state_dir: Path, cmd: str, timeout: float = 5.0) -> dict[str, Any]:
    """Send one command to the node running with ``state_dir``; raises EdgeAgentError if none answers."""
    path = state_dir / CONTROL_SOCKET
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(str(path)), timeout)
    except (FileNotFoundError, ConnectionRefusedError):
        raise EdgeAgentError(
            f"no node is running with state {state_dir}; start one with `edgeagent run --state {state_dir}`"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise EdgeAgentError(f"cannot reach the node's control socket {path}: {exc}") from None
    try:
        writer.write(json.dumps({"cmd": cmd}).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
    finally:
        writer.close()
    reply = json.loads(line)
    if not reply.get("ok"):
        raise EdgeAgentError(f"node refused {cmd}: {reply.get('error')}")
    return reply  # type: ignore[no-any-return]
