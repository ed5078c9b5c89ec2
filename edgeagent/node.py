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
import math
import os
import ssl
import time
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from .exceptions import EdgeAgentError, LinkClosed, LinkError, NoRoute, RemoteError, RequestTimeout, SignatureError
from .identity import Identity, sign_struct, verify_struct
from .links.base import LinkOptions
from .links.link import Link
from .links.reconnect import keep_connected
from .links.websocket import Listener, dial, listen
from .routing import Choice, Priors, Router, RouteTable, Traits, rank
from .wire import (
    Answer,
    Assist,
    Candidate,
    Chunk,
    ChunkRequest,
    Deliver,
    Envelope,
    Error,
    ErrorCode,
    Have,
    HopReport,
    JobAdvert,
    JoinRequest,
    Message,
    NodeId,
    ObjectMessage,
    Offer,
    PeerList,
    PeerRecord,
    Progress,
    PubAck,
    Publish,
    Response,
    RoundResult,
    RoundStart,
    Route,
    RouteReply,
    RouteRequest,
    StreamAck,
    StreamData,
    StreamedObject,
    Subscribe,
    Tensor,
    TreeAssign,
    Unsubscribe,
    Update,
)
from .worker import WORKER_MESSAGES, ObjectStore, Permissions, Worker

__all__ = ["CONTROL_SOCKET", "Node", "NodeConfig", "control_request"]

log = logging.getLogger(__name__)
CONTROL_SOCKET: Final = "control.sock"
_MAX_CONTROL_REQUEST: Final = 64 * 1024
_MAX_WORKER_TASKS: Final = 32
_INLINE_WORK_BYTES: Final = 256 * 1024  # operations touching more than this run in a thread
_Handler = Callable[[Link, Envelope], Awaitable[None]]
_FIRST_PINGS: Final = 4  # RTT samples taken when a link comes up (averaged)
_SEEN_MAX: Final = 8192  # (source, msg_id) pairs a relay remembers to drop duplicates
_MAX_ROUTE_DESTINATIONS: Final = 16  # per RouteRequest


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
    peer_links: dict[str, dict[str, Any]] = field(default_factory=dict)  # url -> LinkOptions overrides
    priors: Priors | None = None  # routing priors per network kind ([routing.priors])
    route_tick: float = 1.0  # seconds between folding link health into the route table
    hop_report_interval: float = 60.0  # seconds between refreshes of this node's HopReport
    link_probe_interval: float = 300.0  # seconds between active probes of one link (0: never probe)
    probe_bytes: int = 256 * 1024  # throughput sample of one probe
    stream_max_bytes: int = 64 << 30  # largest stream this node accepts
    payload_quota: int | None = None  # bytes the payload store may hold (None: no limit)
    payload_upload_bps: float | None = None  # cap on this node's payload upload, bytes/s (None: none)
    fl_job: Any = None  # fl.JobSpec: the federated-learning job this domain runs
    fl_data: Path | None = None  # a device's local training data (.npz with x and y)


def _retrieve(fut: asyncio.Future[Any]) -> None:
    """Mark a future's exception as seen (its failure is reported to whoever awaited it, if anyone)."""
    if not fut.cancelled():
        fut.exception()


class Node:
    def __init__(self, identity: Identity, state_dir: Path, config: NodeConfig) -> None:
        self.identity = identity
        self.state_dir = state_dir
        self.config = config
        self.started = time.time()
        allow = config.allow
        domain_ids: set[NodeId] = set()
        self._domain_ids = domain_ids
        payload_peers: set[NodeId] = set()  # parents and children a payload's planner named

        def authorize(peer: NodeId) -> bool:
            return allow is None or peer in allow or peer in domain_ids or peer in payload_peers

        self._forwards = config.forward if config.forward is not None else config.role == "domain"
        caps = tuple(config.link.capabilities) + (("relay",) if self._forwards else ())
        from .payload.manifest import hash_available

        if hash_available("blake3"):
            caps += ("blake3",)  # payload manifests may hash chunks with BLAKE3 for this node
        self.link_options = dataclasses.replace(
            config.link, authorize=authorize, role=config.role, capabilities=tuple(dict.fromkeys(caps))
        )
        self._authorize = authorize
        self.links: dict[NodeId, list[Link]] = {}
        self.peer_records: dict[NodeId, PeerRecord] = {}
        self.listeners: list[Listener] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._keepers: set[asyncio.Future[Any]] = set()  # the redial loops of the domain and static peers
        self._control: asyncio.AbstractServer | None = None
        self._stopped = asyncio.Event()
        self.worker = Worker(
            ObjectStore(config.store_quota, config.default_lease),
            Permissions(domains=domain_ids, allowed=set(allow or ()), open=allow is None),
        )
        self._worker_lock = asyncio.Lock()
        self._worker_slots = asyncio.Semaphore(_MAX_WORKER_TASKS)
        self._pending: dict[int, asyncio.Future[Envelope]] = {}
        self._pending_on: dict[int, Link] = {}  # request id -> the link it left on
        self.handlers: dict[type, Callable[[Link, Envelope], Awaitable[None]]] = {
            **dict.fromkeys(WORKER_MESSAGES, self._on_worker),
            PeerRecord: self._on_peer_record,
            Offer: self._on_offer,
            Answer: self._on_signal,
            Candidate: self._on_signal,
            HopReport: self._on_hop_report,
            RouteRequest: self._on_route_request,
            StreamData: self._on_stream_data,
            StreamAck: self._on_stream_ack,
            StreamedObject: self._on_streamed_object,
        }
        self._rtc_sessions: dict[str, Any] = {}  # session id -> QueueSignaller
        self.mdns: Any = None  # MdnsDiscovery when enabled
        self._record_seq = 0
        self.network: Any = None  # the last netcost.NetInfo
        self.may_relay = (True, "network not probed")
        self.registered = asyncio.Event()  # set once a domain has answered our registration
        self._dialing: set[NodeId] = set()
        self.forwarded = 0
        self.closed_bytes_sent = 0  # bytes sent on links since closed (egress accounting)
        self.closed_sent_by_type: Counter[str] = Counter()  # frame bytes per message type on closed links
        self._dials: dict[NodeId, asyncio.Future[Link]] = {}  # dials under way (ensure_link shares them)
        # routing: the table of hops, the policy, and the live links their ids name
        self.router = Router(RouteTable(identity.node_id, config.priors or Priors()))
        self._link_ids: dict[int, str] = {}  # id(link) -> link id
        self._by_link_id: dict[str, Link] = {}
        self._link_seq = 0
        self._seen: OrderedDict[tuple[NodeId, int], None] = OrderedDict()
        self.duplicates = 0
        self.rerouted = 0
        self.route_counts: Counter[str] = Counter()
        self.mode_counts: Counter[str] = Counter()  # delivery modes chosen per message (routing.choose_mode)
        self.route_generation = 0
        self._route_changed = asyncio.Event()
        self._hop_report_due = True
        self._hop_report_sent = -math.inf
        self._told_relaying = False
        self._probed: dict[str, float] = {}
        self._discovery_asked: dict[NodeId, float] = {}
        from .stream import StreamService

        self.streams = StreamService(self, state_dir / "streams", max_bytes=config.stream_max_bytes)
        from .payload import PayloadService

        self.payloads = PayloadService(
            self, state_dir / "payloads", quota_bytes=config.payload_quota, upload_bps=config.payload_upload_bps
        )
        self.payloads.peers = payload_peers
        from .pubsub import PubSub

        self.pubsub = PubSub(self, state_dir / "pubsub.json")
        self.handlers.update(
            {
                Publish: self.pubsub.on_publish,
                PubAck: self.pubsub.on_puback,
                Subscribe: self.pubsub.on_subscribe,
                Unsubscribe: self.pubsub.on_unsubscribe,
                Deliver: self.pubsub.on_deliver,
            }
        )
        self.fl_domain: Any = None
        self.fl_device: Any = None
        if config.fl_job is not None:
            from .fl import FlDomain

            self.fl_domain = FlDomain(self, config.fl_job)
        elif config.role != "domain":
            try:
                from .fl import FlDevice

                self.fl_device = FlDevice(self, config.fl_data)
            except ImportError:  # numpy missing: this device cannot train (install the fl extra)
                log.info("federated learning off: numpy is not installed (pip install 'edgeagent[fl]')")
        self.handlers.update(
            {
                JobAdvert: self._fl("on_advert", device=True),
                JoinRequest: self._fl("on_join", device=False),
                RoundStart: self._fl("on_round_start", device=True),
                RoundResult: self._fl("on_result", device=True),
                Update: self._on_update,
            }
        )
        self.handlers.update(
            {
                TreeAssign: self._guard(self.payloads.on_assign),
                Chunk: self._guard(self.payloads.on_chunk),
                ChunkRequest: self._guard(self.payloads.on_chunk_request),
                Assist: self._guard(self.payloads.on_assist),
                Have: self._guard(self.payloads.on_have),
                Progress: self._guard(self.payloads.on_progress),
            }
        )

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
            task = asyncio.ensure_future(self._keep(url, is_domain=url == self.config.domain))
            self._keepers.add(task)
            task.add_done_callback(self._keepers.discard)
        if self.config.mdns != "off":
            await self._start_mdns()
        if self.config.net_probe is not None:
            self._spawn(self._watch_network())
        self._spawn(self._route_loop())
        if self.fl_domain is not None:
            self.fl_domain.start()
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
        # stop redialling first (a keeper closes its link when cancelled), then close every
        # other link before cancelling the tasks that serve them
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
        if self._control is not None:
            self._control.close()
            await self._control.wait_closed()
            with contextlib.suppress(FileNotFoundError):
                (self.state_dir / CONTROL_SOCKET).unlink()
        for fut in self._pending.values():
            if not fut.done():
                fut.cancel()
        self.streams.close()
        self.payloads.close()
        self.pubsub.close()
        if self.fl_domain is not None:
            await self.fl_domain.stop()
        if self.fl_device is not None:
            self.fl_device.close()
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
            opts = self.link_options
            overrides = self.config.peer_links.get(url)
            if overrides:
                opts = dataclasses.replace(opts, **overrides)
            return await dial(url, self.identity, opts, ssl_context=self.config.client_tls)

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
        self._link_seq += 1
        lid = f"{link.transport_kind}-{self._link_seq}"
        self._link_ids[id(link)] = lid
        self._by_link_id[lid] = link
        hello = link.peer_hello
        self.router.table.link_up(
            lid,
            link.peer,
            transport=link.transport_kind,
            address=link.transport.remote_address,
            now=time.monotonic(),
            local_kind=link.options.network_kind,
            local_metered=link.options.metered,
            local_cost_per_gb=link.options.cost_per_gb,
            peer_kind=hello.network_kind,
            peer_metered=hello.metered,
            peer_relays=hello.role == "domain" or "relay" in hello.capabilities,
        )
        self._hop_report_due = True
        log.info("link up: %s over %s (%s, %s)", link.peer, link.transport_kind, link.codec, link.cipher)
        self._spawn(self._serve(link))
        self._spawn(self._first_ping(link))
        self.payloads.on_link_up(link.peer)
        if link.peer == self.pubsub.home():
            self.pubsub.on_home_link()

    async def _first_ping(self, link: Link) -> None:
        """Measure a new link's RTT at once (routing would otherwise rely on priors until the keepalive)."""
        with contextlib.suppress(EdgeAgentError):
            for i in range(_FIRST_PINGS):
                await link.ping(timeout=5.0)
                if i == 0 or i == _FIRST_PINGS - 1:
                    self._hop_report_due = True
                await asyncio.sleep(0.05)

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
            if peers and not self._stopped.is_set():
                self.payloads.on_link_replaced(link.peer)
            if not peers:
                self.links.pop(link.peer, None)
                if not self._stopped.is_set():
                    self.payloads.on_link_down(link.peer)
                    self.pubsub.on_link_down(link.peer)
                    if self.fl_device is not None:
                        self.fl_device.on_link_down(link.peer)
                    if self.fl_domain is not None:
                        self.fl_domain.on_link_down(link.peer)
            for mid, via in list(self._pending_on.items()):
                fut = self._pending.get(mid)
                if via is link and fut is not None and not fut.done():
                    fut.set_exception(link.close_error or LinkClosed(f"link to {link.peer} closed"))
            self.closed_bytes_sent += link.stats.bytes_sent
            self.closed_sent_by_type.update(link.stats.sent_by_type)
            lid = self._link_ids.pop(id(link), None)
            if lid is not None:
                self._by_link_id.pop(lid, None)
                self.router.table.link_down(lid, time.monotonic())
                self._note_route_change()
            self._hop_report_due = True
            log.info("link down: %s (%s)", link.peer, link.close_error)

    async def _dispatch(self, link: Link, env: Envelope) -> None:
        me = self.identity.node_id
        if env.source != link.peer and not self._may_relay_to_me(link):
            # only a domain or an authorised relay carries others' messages; everyone else speaks for itself
            if env.reply_to is None:
                reason = "only a domain or an authorised relay may carry messages for others"
                await link.send(env.reply(Error(ErrorCode.UNAUTHORIZED, reason), me))
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
        was = self.may_relay[0]
        self.may_relay = conditions.may_relay(info)
        if self.may_relay[0] != was:
            self._hop_report_due = True  # neighbours route through relays: tell them at once
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

    async def request(
        self, peer: NodeId, body: Message, *, timeout: float = 10.0, traits: Traits | None = None
    ) -> Message:
        """Send ``body`` to ``peer`` over the best route and wait for its reply (the Response or the reply body).

        Raises ``RemoteError`` when the peer answers with an Error, ``RequestTimeout``
        after ``timeout`` seconds, ``NoRoute`` when no link leads there; cancelling the
        call forgets the request (a late reply is dropped).
        """
        env = Envelope(body, self.identity.node_id, destination=peer)
        fut: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._pending[env.msg_id] = fut
        link: Link | None = None
        try:
            link = await self._send_env(env, traits or Traits("request"))
            self._pending_on[env.msg_id] = link  # fails at once if this link goes down
            async with asyncio.timeout(timeout):
                reply = await fut
        except TimeoutError:
            if link is not None:
                self._route_failed(link)
            raise RequestTimeout(f"{type(body).__name__} to {peer}: no reply within {timeout}s") from None
        finally:
            self._pending.pop(env.msg_id, None)
            self._pending_on.pop(env.msg_id, None)
        if link is not None:
            lid = self._link_ids.get(id(link))
            if lid is not None:
                self.router.table.record(lid, True, time.monotonic())
        if isinstance(reply.body, Error):
            raise RemoteError(reply.body.code, reply.body.reason)
        return reply.body

    async def send(self, peer: NodeId, body: Message, traits: Traits | None = None) -> None:
        """Send one message to ``peer`` over the route the policy picks for ``traits``; no reply awaited."""
        env = Envelope(body, self.identity.node_id, destination=peer)
        await self._send_env(env, traits or _traits_of(body))

    async def _send_env(self, env: Envelope, traits: Traits) -> Link:
        """Pick the route for ``env``, attach it when it passes relays, send; returns the first link."""
        dst = env.destination
        assert dst is not None
        choice = self.router.select(dst, traits, time.monotonic())
        link, route, _, label = self._resolve_choice(dst, choice)
        if route is not None:
            env = dataclasses.replace(env, route=route)
        self.route_counts[f"{traits.purpose}:{'relayed' if route is not None else 'direct'}"] += 1
        if log.isEnabledFor(logging.DEBUG):
            log.debug("%s to %s via %s: %s", type(env.body).__name__, dst, label, choice.reason if choice else "")
        try:
            await link.send(env)
        except LinkError:
            self._route_failed(link)
            raise
        return link

    def _resolve_choice(self, dst: NodeId, choice: Choice | None) -> tuple[Link, Route | None, Any, str]:
        """The live link a choice starts on, the route to attach (None for one hop), a key and a label.

        Without a choice (no route known) the message goes to the domain, which forwards.
        """
        if choice is not None:
            link = self._by_link_id.get(choice.link_id)
            if link is not None and not link.closed:
                multi = len(choice.candidate.path) > 1
                route = choice.route(self.router.table.priors) if multi else None
                return link, route, choice.candidate.key, choice.candidate.describe()
        link = self.link_to(dst)
        return link, None, ("fallback", id(link)), f"via {link.peer.short()} (no route known: the domain forwards)"

    def _route_failed(self, link: Link) -> None:
        lid = self._link_ids.get(id(link))
        if lid is not None:
            self.router.table.record(lid, False, time.monotonic())
        self._note_route_change()

    def _note_route_change(self) -> None:
        self.route_generation += 1
        self._route_changed.set()
        self._route_changed = asyncio.Event()

    async def wait_route_change(self, *others: asyncio.Event) -> None:
        """Wait until one of ``others`` is set or any route changes (a link went down, a route failed)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (*others, self._route_changed)]
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

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
            pending.add_done_callback(_retrieve)  # a dial all its callers stopped waiting for
        return await asyncio.shield(pending)

    async def _dial_peer(self, peer: NodeId, addresses: tuple[str, ...], timeout: float) -> Link:
        rec = self.peer_records.get(peer)
        urls = list(addresses) or (list(rec.addresses) if rec else [])
        errors = []
        for url in urls:
            try:
                async with asyncio.timeout(timeout):
                    link = await dial(
                        url, self.identity, self.link_options, expected_peer=peer, ssl_context=self.config.client_tls
                    )
            except (EdgeAgentError, TimeoutError) as exc:
                errors.append(f"{url}: {exc or 'timed out'}")
                continue
            # a link the peer dialled meanwhile stays too: closing either end's own dial (as this did
            # once) left both ends without a link, and closing any link loses what is in flight on it
            await self._on_link(link)
            return link
        raise NoRoute(f"cannot link to {peer}: " + ("; ".join(errors) if errors else "no address known"))

    def refresh_authorisation(self, peers: set[NodeId]) -> None:
        """Re-evaluate the authorisation of existing links to ``peers`` (after the allow rules grew)."""
        for peer in peers:
            for link in self.links.get(peer, []):
                link.authorised = link.authorised or self._authorize(peer)

    def _guard(
        self, handler: Callable[[Link, Envelope], Awaitable[None]]
    ) -> Callable[[Link, Envelope], Awaitable[None]]:
        """Payload messages come first-hand (no relays) from authorised peers."""

        async def run(link: Link, env: Envelope) -> None:
            if env.source != link.peer and not isinstance(env.body, TreeAssign | Progress):
                return
            await handler(link, env)

        return run

    def _fl(self, name: str, *, device: bool) -> _Handler:
        async def run(link: Link, env: Envelope) -> None:
            target = self.fl_device if device else self.fl_domain
            if target is not None:
                await getattr(target, name)(link, env)
            elif env.reply_to is None:
                reason = "no federated-learning job here" if not device else "this node does not train"
                await link.send(env.reply(Error(ErrorCode.UNSUPPORTED, reason), self.identity.node_id))

        return run

    async def _on_update(self, link: Link, env: Envelope) -> None:
        if self.fl_domain is not None:
            await self.fl_domain.on_update(link, env)
        elif self.fl_device is not None:
            await self.fl_device.on_update(link, env)

    def subscribe(self, topic: str, *, maxsize: int = 4096) -> Any:
        """``async with node.subscribe(topic) as sub: async for msg in sub`` (see ``edgeagent.pubsub``)."""
        return self.pubsub.subscribe(topic, maxsize=maxsize)

    async def publish(self, topic: str, value: Any) -> int:
        """Publish ``value`` on ``topic`` (at-least-once to every subscriber); returns its sequence number."""
        return await self.pubsub.publish(topic, value)

    def authorised(self, node: NodeId) -> bool:
        """Whether ``node`` is authorised here (allow list, open mode, or a domain of this node)."""
        return self._authorize(node)

    def _may_relay_to_me(self, link: Link) -> bool:
        return link.peer in self._domain_ids or (link.authorised and link.peer in self.router.table.relays)

    async def send_stream(self, peer: NodeId, source: bytes | bytearray | memoryview | Path, **kwargs: Any) -> Any:
        """Stream bytes or a file to ``peer`` over the best bulk route (see ``edgeagent.stream``)."""
        return await self.streams.send(peer, source, **kwargs)

    def open_stream(self, peer: NodeId, *, name: str = "", **kwargs: Any) -> Any:
        """``async with node.open_stream(peer, name=...) as s: await s.write(data)`` (an open-ended stream)."""
        return self.streams.open(peer, name=name, **kwargs)

    async def _on_stream_data(self, link: Link, env: Envelope) -> None:
        await self.streams.on_data(link, env)

    async def _on_stream_ack(self, link: Link, env: Envelope) -> None:
        self.streams.on_ack(env)

    async def _on_streamed_object(self, link: Link, env: Envelope) -> None:
        """Store a completed stream from the sender as a worker object (the worker's rights apply)."""
        req = env.body
        assert isinstance(req, StreamedObject)
        me = self.identity.node_id
        ins = self.streams.inbound.get((env.source, req.stream_id))
        if ins is None or not ins.complete or ins.path is None:
            reason = "no completed stream with that id from you"
            await link.send(env.reply(Error(ErrorCode.NOT_FOUND, reason), me))
            return
        path = ins.path
        data = await asyncio.to_thread(path.read_bytes)
        try:
            value: Any = Tensor(req.dtype, tuple(req.shape), data) if req.dtype else data
        except (ValueError, EdgeAgentError) as exc:
            await link.send(env.reply(Error(ErrorCode.BAD_REQUEST, f"not a tensor: {exc}"), me))
            return
        msg = ObjectMessage(req.obj_id, value, req.tags, req.description, req.lease_ms)
        relayed_by = link.peer if link.peer != env.source else None
        async with self._worker_lock:
            reply = await asyncio.to_thread(self.worker.handle, msg, env.source, time.monotonic(), relayed_by)
        with contextlib.suppress(FileNotFoundError):
            await asyncio.to_thread(path.unlink)
        self.streams.inbound.pop((env.source, req.stream_id), None)
        with contextlib.suppress(LinkError):
            await link.send(env.reply(reply, me))

    # -- forwarding (domains always; devices that opted in while unmetered) ------------------

    async def _forward(self, link: Link, env: Envelope) -> None:
        dst = env.destination
        assert dst is not None
        me = self.identity.node_id
        key = (env.source, env.msg_id)
        if key in self._seen:
            self.duplicates += 1  # the same message by two paths (or a loop): deliver it once
            return
        self._seen[key] = None
        if len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)
        reason = ""
        if not self._forwards:
            reason = "this node does not forward"
        elif self.config.role != "domain" and not self.may_relay[0]:
            reason = f"this node stopped relaying ({self.may_relay[1]})"
        elif not link.authorised:
            reason = "only authorised peers may send through this node"
        elif env.ttl <= 1:
            reason = "hop limit (ttl) reached"
        elif env.route is not None and env.route.stops is not None and _loops(env.route, me):
            reason = "the attached route loops through this node"
        target: Link | None = None
        if not reason:
            target, why = self._next_hop(link, env)
            if target is None:
                reason = why
        if reason or target is None:
            if env.reply_to is None and not isinstance(env.body, Error):
                no_route = reason.startswith(("no link", "hop limit", "the attached route loops"))
                code = ErrorCode.NO_ROUTE if no_route else ErrorCode.UNAUTHORIZED
                with contextlib.suppress(LinkError):
                    await link.send(env.reply(Error(code, reason), me))
            return
        self.forwarded += 1
        try:
            await target.send(dataclasses.replace(env, ttl=env.ttl - 1))
        except LinkError:
            self._route_failed(target)

    def _next_hop(self, came_from: Link, env: Envelope) -> tuple[Link | None, str]:
        """Where a relayed envelope goes next: its attached route, unless this node knows better."""
        dst = env.destination
        assert dst is not None
        me = self.identity.node_id
        now = time.monotonic()
        traits = _traits_of(env.body)
        cands = [
            c
            for c in self.router.table.candidates(dst, now, exclude_first=came_from.peer)
            if (lk := self._by_link_id.get(c.link_id)) is not None and lk.authorised and not lk.closed
        ]
        want: NodeId | None = None
        if env.route is not None and env.route.stops is not None:
            want = next((h.dst for h in env.route.stops.hops if h.src == me), None)
        own = self.router.policy.choose(cands, traits, now, None)
        attached = rank([c for c in cands if c.path[0].dst == want], traits) if want is not None else []
        if attached and not attached[0].dead:
            chosen = attached[0]
            if (
                own is not None
                and own.candidate.path[0].dst != want
                and (own.candidate.cost_per_gb < chosen.cost_per_gb - 1e-9)
            ):
                self.rerouted += 1
                log.info("re-routing %s for %s: %s", type(env.body).__name__, dst, own.reason)
                chosen = own.candidate
        elif own is not None:
            chosen = own.candidate
            if want is not None:
                self.rerouted += 1
                log.info(
                    "re-routing %s for %s: attached hop to %s is down; %s",
                    type(env.body).__name__,
                    dst,
                    want,
                    own.reason,
                )
        else:
            return None, f"no link to {dst}" if dst not in self.links else f"{dst} is not authorised here"
        return self._by_link_id.get(chosen.link_id), ""

    # -- route discovery ----------------------------------------------------------------------

    async def _route_loop(self) -> None:
        """Fold link health into the route table, refresh HopReports, expire learned hops, probe links."""
        tick = self.config.route_tick
        last_expire = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            table = self.router.table
            for lid, link in list(self._by_link_id.items()):
                st = link.stats
                hop = table.local(lid)
                bw = st.send_bps if hop is not None and st.send_bps > (hop.bandwidth_bps or 0.0) else None
                table.observe(
                    lid, now, rtt_ms=st.rtt_ms, failures=st.failures, bytes_sent=st.bytes_sent, bandwidth_bps=bw
                )
            if now - last_expire >= 10.0:
                last_expire = now
                table.expire(now)
            report_due = self._hop_report_due or now - self._hop_report_sent >= self.config.hop_report_interval
            if report_due and now - self._hop_report_sent >= min(1.0, tick):
                self._hop_report_due = False
                self._hop_report_sent = now
                await self._send_hop_reports()
            if self.config.link_probe_interval > 0:
                self._maybe_probe(now)

    def _relaying_now(self) -> bool:
        return self._forwards and (self.config.role == "domain" or self.may_relay[0])

    async def _send_hop_reports(self) -> None:
        """Tell domains (and, when this node relays, its authorised neighbours) which hops leave here."""
        table = self.router.table
        hops = tuple(h.to_hop(table.priors) for h in table.local_hops())
        relays = self._relaying_now()
        report = HopReport(hops, relays=relays)
        for peer, links in list(self.links.items()):
            if not links:
                continue
            link = links[0]
            is_domain = peer in self._domain_ids or link.peer_hello.role == "domain"
            if self.config.role == "domain" or not link.authorised:
                continue  # a domain answers RouteRequests instead of pushing its (large) view
            if not is_domain and not relays and not self._told_relaying:
                continue
            with contextlib.suppress(LinkError):
                await link.send(Envelope(report, self.identity.node_id, destination=peer))
        self._told_relaying = relays  # a relay that stops tells its neighbours once more

    async def _on_hop_report(self, link: Link, env: Envelope) -> None:
        report = env.body
        assert isinstance(report, HopReport)
        if env.source != link.peer or not link.authorised:
            return  # a node reports only its own hops, first-hand
        table = self.router.table
        table.set_relay(env.source, report.relays)
        own = [h for h in report.hops if h.src == env.source]
        table.learn(own, time.monotonic(), learned_from=env.source, ttl_s=max(report.ttl_s, 1), replace=True)
        self._note_route_change()

    async def _on_route_request(self, link: Link, env: Envelope) -> None:
        req = env.body
        assert isinstance(req, RouteRequest)
        me = self.identity.node_id
        if len(req.destinations) > _MAX_ROUTE_DESTINATIONS:
            reason = f"at most {_MAX_ROUTE_DESTINATIONS} destinations per RouteRequest"
            await link.send(env.reply(Error(ErrorCode.BAD_REQUEST, reason), me))
            return
        purpose = req.purpose if req.purpose in ("request", "bulk", "stream", "pubsub") else "request"
        traits = Traits(purpose, req.size_hint)  # type: ignore[arg-type]
        now = time.monotonic()
        routes: list[Route] = []
        table = self.router.table
        for d in req.destinations:
            cands = table.routes_between(env.source, d, now, via_me=self._relaying_now())
            for c in rank(cands, traits)[: max(1, min(req.max_routes, 16))]:
                if not c.dead:
                    routes.append(c.to_route(table.priors))
        with contextlib.suppress(LinkError):
            await link.send(env.reply(RouteReply(tuple(routes)), me))

    async def discover_routes(
        self, dst: NodeId, *, purpose: str = "request", size: int = 0, timeout: float = 5.0
    ) -> int:
        """Ask the domains (or, without one, the relays this node links to) for routes to ``dst``.

        Returns how many suggested routes were taken into the table. At most one
        round of questions per destination every 5 seconds.
        """
        now = time.monotonic()
        if now - self._discovery_asked.get(dst, -math.inf) < 5.0:
            return 0
        self._discovery_asked[dst] = now
        askers = [p for p in self._domain_ids if p in self.links] or [
            p for p in self.router.table.relays if p in self.links and p != dst
        ]
        taken = 0
        for peer in askers[:4]:
            try:
                reply = await self.request(peer, RouteRequest((dst,), purpose, size), timeout=timeout)
            except EdgeAgentError as exc:
                log.info("route request to %s failed: %s", peer, exc)
                continue
            if isinstance(reply, RouteReply):
                for route in reply.routes:
                    taken += self.router.table.suggest(route, time.monotonic())
        if taken:
            self._note_route_change()
        return taken

    def _maybe_probe(self, now: float) -> None:
        """Start at most one active probe per tick, on the link measured longest ago (never on metered links)."""
        if any(t > now for t in self._probed.values()) or self.payloads.busy():
            return  # a probe is running (its entry is in the future until it ends), or payloads are moving
        due = None
        for lid, link in self._by_link_id.items():
            hop = self.router.table.local(lid)
            if hop is None or hop.metered or link.closed:
                continue
            last = self._probed.get(lid, -math.inf)
            older = due is None or last < self._probed.get(due, -math.inf)
            if now - last >= self.config.link_probe_interval and older:
                due = lid
        if due is not None:
            self._probed[due] = now + 60.0
            self._spawn(self._probe(due))

    async def _probe(self, lid: str) -> None:
        link = self._by_link_id.get(lid)
        try:
            if link is None:
                return
            rtt, bw = await link.probe(self.config.probe_bytes, timeout=10.0)
            self.router.table.observe(lid, time.monotonic(), bandwidth_bps=bw)
            log.debug("probe %s: rtt %.2f ms, %.1f MB/s", lid, rtt, bw / 1e6)
        except EdgeAgentError as exc:
            log.info("probe of %s failed: %s", lid, exc)
        finally:
            if lid in self._by_link_id:
                self._probed[lid] = time.monotonic()
            else:
                self._probed.pop(lid, None)

    def routes_json(self) -> dict[str, Any]:
        """The route table, its measured figures and the current choice per destination."""
        table = self.router.table
        now = time.monotonic()
        priors = table.priors
        hops = []
        for h in table.hops():
            hops.append(
                {
                    "from": str(h.src),
                    "to": str(h.dst),
                    "link": h.link_id,
                    "transport": h.transport,
                    "network_kind": h.network_kind,
                    "metered": h.metered,
                    "cost_per_gb": h.cost_per_gb,
                    "rtt_ms": None if h.rtt_ms is None else round(h.rtt_ms, 3),
                    "expected_rtt_ms": round(h.expected_rtt_ms(priors), 3),
                    "bandwidth_bps": None if h.bandwidth_bps is None else round(h.bandwidth_bps),
                    "expected_bandwidth_bps": round(h.expected_bandwidth(priors)),
                    "health": round(h.health(now), 3),
                    "failures": h.failures,
                    "dead": h.dead(now),
                    "bytes_sent": h.bytes_sent,
                    "learned_from": None if h.learned_from is None else str(h.learned_from),
                    "expires_in_s": None if h.expires == math.inf else round(h.expires - now, 1),
                }
            )
        choices = []
        dests = sorted(table.destinations() - {self.identity.node_id})
        for dst in dests[:1000]:
            for purpose in ("request", "bulk"):
                ch = self.router.policy.choose(
                    table.candidates(dst, now), Traits(purpose, 32 << 20 if purpose == "bulk" else 0), now, None
                )
                if ch is not None:
                    c = ch.candidate
                    choices.append(
                        {
                            "destination": str(dst),
                            "purpose": purpose,
                            "path": [str(h.dst) for h in c.path],
                            "via": c.describe(),
                            "latency_ms": round(c.latency_ms, 3),
                            "bandwidth_bps": round(c.bandwidth_bps),
                            "cost_per_gb": c.cost_per_gb,
                            "metered": c.metered,
                            "health": round(c.health, 3),
                            "reason": ch.reason,
                            "alternatives": ch.considered,
                        }
                    )
        return {
            "node_id": str(self.identity.node_id),
            "hops": hops,
            "choices": choices,
            "relays": sorted(str(r) for r in table.relays),
            "counters": {
                "selections": self.router.selections,
                "route_changes": self.router.changes,
                "forwarded": self.forwarded,
                "rerouted": self.rerouted,
                "duplicates_dropped": self.duplicates,
                "sent": dict(self.route_counts),
                "modes": dict(self.mode_counts),
            },
        }

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
            # the payload planner sizes fan-out by it; 0 = unknown (the planner assumes 50 Mbit/s)
            upload_bps=self.config.payload_upload_bps or 0.0,
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
            "event_loop": _loop_kind(),
            "links": links,
            "bytes_sent_total": sent,
            "bytes_received_total": received,
            "bytes_sent_by_type": dict(self.sent_by_type().most_common()),
            "payloads": self.payloads.status(),
            "payload_bytes_sent_by_kind": dict(self.payloads.sent_by_kind),
            "pubsub": self.pubsub.status(),
            "fl": self.fl_domain.status()
            if self.fl_domain is not None
            else (self.fl_device.status() if self.fl_device is not None else None),
            "streams": [s.to_json() for s in self.streams.inbound.values()],
            "routing": {
                "hops": len(self.router.table),
                "forwarded": self.forwarded,
                "rerouted": self.rerouted,
                "duplicates_dropped": self.duplicates,
            },
            "network": None
            if self.network is None
            else {**self.network.to_json(), "may_relay": self.may_relay[0], "relay_reason": self.may_relay[1]},
            "mdns": None
            if self.mdns is None
            else {"mode": self.config.mdns, "peers": len(self.mdns.peers), "ignored": self.mdns.ignored},
        }

    def sent_by_type(self) -> Counter[str]:
        """Frame bytes this node has sent per message type, over all its links, closed ones included."""
        total = Counter(self.closed_sent_by_type)
        for peer_links in self.links.values():
            for link in peer_links:
                total.update(link.stats.sent_by_type)
        return total

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
            elif cmd == "routes":
                reply = {"ok": True, "routes": self.routes_json()}
            elif cmd == "peers":
                reply = {"ok": True, "peers": [self._peer_json(r) for r in self.peer_records.values()]}
            elif cmd == "send":
                reply = await self._control_send(request, writer)
            else:
                reply = {"ok": False, "error": f"unknown command {cmd!r}"}
        except (ValueError, TimeoutError, AttributeError, TypeError) as exc:
            reply = {"ok": False, "error": f"bad control request: {exc}"}
        except EdgeAgentError as exc:
            reply = {"ok": False, "error": str(exc)}
        writer.write(json.dumps(reply).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _control_send(self, request: dict[str, Any], writer: asyncio.StreamWriter) -> dict[str, Any]:
        """``edgeagent send``: send a file down a payload tree; with ``wait``, stream progress lines."""
        path = Path(str(request["path"]))
        to_raw = request.get("to") or ["all"]
        to = None if "all" in to_raw else [NodeId.parse(str(t)) for t in to_raw]
        wait = bool(request.get("wait"))
        timeout = request.get("timeout")
        stripes = request.get("stripes")
        from .payload.manifest import DEFAULT_CHUNK_SIZE

        chunk_size = int(request.get("chunk_size") or DEFAULT_CHUNK_SIZE)

        def progress(summary: dict[str, Any]) -> None:
            writer.write(json.dumps({"progress": summary}).encode() + b"\n")

        result = await self.payloads.send(
            path,
            to,
            wait=wait,
            timeout=None if timeout is None else float(timeout),
            stripes=None if stripes is None else int(stripes),
            progress=progress if wait else None,
            star=bool(request.get("star")),
            chunk_size=chunk_size,
        )
        return {"ok": True, "result": result.to_json()}

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


def _traits_of(body: Message) -> Traits:
    """What a message needs from its route when the sender did not say."""
    if isinstance(body, StreamData):
        return Traits("stream", max(len(body.data), body.size - body.offset))
    if isinstance(body, Chunk):
        return Traits("bulk", len(body.data))
    return Traits("request")


def _loops(route: Route, me: NodeId) -> bool:
    """True when the route's hops leave ``me`` more than once."""
    assert route.stops is not None
    return sum(1 for h in route.stops.hops if h.src == me) > 1


def _lan_group(remote_address: str) -> str:
    """The LAN group hint for a peer seen at ``host:port``: its /24 (IPv4) or /64 (IPv6) subnet."""
    import ipaddress

    host = remote_address.rsplit(":", 1)[0].strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return ""
    return str(ipaddress.ip_network(f"{ip}/{24 if ip.version == 4 else 64}", strict=False))


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


def _loop_kind() -> str:
    """The running event loop's implementation: "uvloop" or "asyncio"."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return "none"
    return "uvloop" if type(loop).__module__.startswith("uvloop") else "asyncio"
