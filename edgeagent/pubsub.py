"""Pub-sub topics: publishers send to the topic's home (the domain), the home fans out to subscribers.

Guarantees and policies:

* **At-least-once, each message once to the application.** A publisher keeps
  what its home has not acknowledged (``PubAck``) and sends it again after a
  reconnect; the home drops what it already holds (sequence numbers per
  publisher and topic). A subscriber drops duplicates by (publisher, seq).
* **Per-publisher order.** Sequence numbers are consecutive per publisher and
  topic; a subscriber delivers them in order, holding back (bounded) what
  arrives after a gap and asking the home to replay from retention.
* **Retention.** The home keeps the last ``retain_count`` messages of each
  topic for ``retain_s`` seconds (default: the node's ``retention`` limit),
  trimmed on a timer and whenever a topic is read, not only on publish. A
  subscriber that reconnects (or restarts with the same state directory)
  subscribes again with the last sequence number it saw from each publisher
  and is sent what it missed, if retained.
* **Topic limits.** A topic is held at the home while it has subscribers or
  retained messages, then forgotten. Each peer (the source of the ``Publish``
  or ``Subscribe`` that made the home create it) may have the home hold at
  most ``topics_per_publisher`` topics; past that a new topic is refused with
  an ``Error`` (QUOTA) through ``host.limiter``. The home's own topics are not
  counted.
* **Slow subscribers.** The home queues at most ``queue_max`` messages per
  subscriber; when a subscriber falls further behind, the oldest are dropped
  and counted (``dropped`` in the topic's stats) — it then recovers them from
  retention through the gap logic while they are retained. A slow subscriber
  never slows the publisher or the other subscribers.
* **Batching.** Senders coalesce what is queued into one ``Publish`` or
  ``Deliver`` frame (up to ``batch_max`` messages), so per-message cost falls
  as the rate rises.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from .exceptions import EdgeAgentError, NoRoute
from .host import Host, Inbound, Policy, Registration, Sender, Service, on
from .wire import Deliver, Error, ErrorCode, NodeId, PubAck, PubEntry, Publish, Response, Subscribe, Unsubscribe
from .wire import Message as WireMessage

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Mapping

    from .links.link import Link

__all__ = ["Message", "PubSub", "Subscription"]

log = logging.getLogger(__name__)
BATCH_MAX: Final = 256
QUEUE_MAX: Final = 4096
RETAIN_COUNT: Final = 10_000
GAP_WAIT_S: Final = 10.0  # a gap that has not shrunk for this long is not retained any more: skip it


@dataclass(frozen=True, slots=True)
class Message:
    """One message as a subscriber sees it."""

    topic: str
    publisher: NodeId
    seq: int
    value: Any
    published_ms: int


@dataclass
class _SubState:
    """The home's view of one subscriber of one topic."""

    queue: deque[PubEntry] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    dropped: int = 0
    delivered: int = 0


@dataclass
class _Topic:
    subscribers: dict[NodeId, _SubState] = field(default_factory=dict)
    retained: deque[tuple[float, PubEntry]] = field(default_factory=deque)
    last_seq: dict[NodeId, int] = field(default_factory=dict)
    published: int = 0
    creator: NodeId | None = None  # the peer whose Publish or Subscribe made the home create it (None: the home)


class Subscription:
    """``async with node.subscribe(topic) as sub: async for msg in sub`` — a bounded queue of messages."""

    def __init__(self, pubsub: PubSub, topic: str, maxsize: int) -> None:
        self.pubsub = pubsub
        self.topic = topic
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize)
        self.dropped = 0  # kept for the status: the application queue never drops (it pushes back instead)

    async def put(self, msg: Message) -> None:
        """Queue for the application; waits while it is full (backpressure to the link and the home)."""
        await self.queue.put(msg)

    async def get(self) -> Message:
        return await self.queue.get()

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Message]:
        while True:
            yield await self.queue.get()

    async def __aenter__(self) -> Subscription:
        await self.pubsub._attach(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.pubsub._detach(self)


class PubSub(Service):
    """Pub-sub for one Node: the home's hub (when it hosts topics) and the local publisher/subscriber side."""

    name = "pubsub"

    def __init__(
        self,
        host: Host,
        state_file: Path | None = None,
        *,
        queue_max: int = QUEUE_MAX,
        retain_count: int = RETAIN_COUNT,
        retain_s: float | None = None,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.host = host
        self.queue_max = queue_max
        self.retain_count = retain_count
        self._retain_s = retain_s
        self.batch_max = batch_max
        self.topics: dict[str, _Topic] = {}  # hosted here
        self._created: Counter[NodeId] = Counter()  # topics held here per peer that made the home create them
        self._expiry_task: asyncio.Task[None] | None = None
        # local side
        self.subs: dict[str, list[Subscription]] = {}
        self.seen: dict[str, dict[NodeId, int]] = {}  # topic -> publisher -> last delivered seq
        self._held: dict[tuple[str, NodeId], dict[int, PubEntry]] = {}  # out-of-order entries waiting for a gap
        self._gap_since: dict[tuple[str, NodeId], float] = {}
        self._replay_asked: dict[str, float] = {}
        self._next_seq: dict[str, int] = {}
        self._unacked: dict[str, deque[tuple[int, Any, int]]] = {}
        self._acked: dict[str, int] = {}
        self._pub_wake = asyncio.Event()
        self._pub_task: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Future[Any]] = set()
        self.state_file = state_file
        self.duplicates = 0
        self.missed = 0
        self.counters: dict[str, int] = {"published": 0, "delivered": 0}
        self._load()

    def handlers(self) -> Mapping[type[WireMessage], Registration]:
        peers, home = Policy(Sender.AUTHORISED), Policy(Sender.DOMAIN)  # a device's topics live at its domain
        return {
            Publish: on(peers, self.on_publish),
            Subscribe: on(peers, self.on_subscribe),
            Unsubscribe: on(peers, self.on_unsubscribe),
            PubAck: on(home, self.on_puback),
            Deliver: on(home, self.on_deliver),
        }

    def on_link_up(self, peer: NodeId, link: Link) -> None:
        if peer == self.home():
            self.on_home_link()

    @property
    def retain_s(self) -> float:
        """Seconds a message is retained: the constructor's ``retain_s``, else the ``retention`` limit."""
        return self._retain_s if self._retain_s is not None else self.host.limiter.limits.retention

    def status_fields(self) -> dict[str, Any]:
        return {"pubsub": self.status()}

    async def aclose(self) -> None:
        self.close()

    # -- which node hosts a topic -------------------------------------------------------------

    def home(self) -> NodeId:
        """The node that hosts this node's topics: its (first) domain, or itself when it is one or has none."""
        domains = sorted(self.host.peers.domain_ids)
        if self.host.role == "domain" or not domains:
            return self.host.node_id
        return domains[0]

    def _spawn(self, coro: Any) -> None:
        t = self.host.spawn(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    # -- publishing (local API) -------------------------------------------------------------------

    async def publish(self, topic: str, value: Any) -> int:
        """Publish ``value`` on ``topic``; returns its sequence number. Waits only when too much is unacknowledged."""
        unacked = self._unacked.setdefault(topic, deque())
        while len(unacked) >= self.queue_max:
            self._pub_wake.set()
            await asyncio.sleep(0.01)
        seq = self._next_seq.get(topic, 0) + 1
        self._next_seq[topic] = seq
        unacked.append((seq, value, int(time.time() * 1000)))
        self.counters["published"] += 1
        if self._pub_task is None or self._pub_task.done():
            self._pub_task = self.host.spawn(self._pub_loop(), name="pubsub-publish")
        self._pub_wake.set()
        return seq

    async def _pub_loop(self) -> None:
        """Send what is unacknowledged and not yet sent, in batches, to the home (or the local hub)."""
        sent_upto: dict[str, int] = {}
        while True:
            self._pub_wake.clear()
            progressed = False
            for topic, unacked in list(self._unacked.items()):
                start = max(sent_upto.get(topic, 0), self._acked.get(topic, 0))
                batch = [e for e in unacked if e[0] > start][: self.batch_max]
                if not batch:
                    continue
                body = Publish(topic, batch[0][0], tuple(v for _, v, _ in batch), batch[0][2])
                home = self.home()
                try:
                    if home == self.host.node_id:
                        await self._on_publish_local(self.host.node_id, body)
                    else:
                        await self.host.send(home, body)
                except (EdgeAgentError, NoRoute) as exc:
                    log.debug("publish to %s failed (%s); will resend", home, exc)
                    await asyncio.sleep(0.2)
                    sent_upto.pop(topic, None)
                    continue
                sent_upto[topic] = batch[-1][0]
                progressed = True
            if not progressed:
                try:
                    async with asyncio.timeout(1.0):
                        await self._pub_wake.wait()
                except TimeoutError:
                    # nothing new: resend what is still unacknowledged (the home may have missed it)
                    for topic, unacked in self._unacked.items():
                        if unacked:
                            sent_upto[topic] = self._acked.get(topic, 0)

    async def on_puback(self, m: Inbound[PubAck]) -> None:
        ack = m.body
        self._ack(ack.topic, ack.seq)

    def _ack(self, topic: str, seq: int) -> None:
        if seq <= self._acked.get(topic, 0):
            return
        self._acked[topic] = seq
        unacked = self._unacked.get(topic)
        while unacked and unacked[0][0] <= seq:
            unacked.popleft()

    def on_home_link(self) -> None:
        """The link to the home came (back) up: resend the unacknowledged, subscribe again with resume points."""
        self._pub_wake.set()
        if self._pub_task is not None and not self._pub_task.done():
            self._pub_task.cancel()
            self._pub_task = self.host.spawn(self._pub_loop(), name="pubsub-publish")
        for topic in self.subs:
            self._spawn(self._subscribe_remote(topic))

    # -- the home's hub -----------------------------------------------------------------------------

    def _topic(self, name: str, who: NodeId) -> _Topic | Error:
        """The hosted topic ``name``, created for ``who`` if new; the Error to send if ``who`` may not create it."""
        t = self.topics.get(name)
        if t is not None:
            return t
        if who == self.host.node_id:
            t = self.topics[name] = _Topic()
            return t
        cap = self.host.limiter.limits.topics_per_publisher
        if self._created[who] >= cap:
            why = f"this peer already has {self._created[who]} topics here, the most allowed; {name!r} not created"
            return self.host.limiter.refuse("topics_per_publisher", who, why, time.monotonic())
        self._created[who] += 1
        t = self.topics[name] = _Topic(creator=who)
        return t

    def _forget_if_unused(self, name: str) -> None:
        """Forget a hosted topic with no subscriber and nothing retained (its creator may create another)."""
        t = self.topics.get(name)
        if t is None or t.subscribers or t.retained:
            return
        del self.topics[name]
        if t.creator is not None:
            self._created[t.creator] -= 1
            if self._created[t.creator] <= 0:
                del self._created[t.creator]

    async def on_publish(self, m: Inbound[Publish]) -> None:
        refused = await self._on_publish_local(m.source, m.body)
        if refused is not None:
            await m.refuse(ErrorCode(refused.code), refused.reason)

    async def _on_publish_local(self, publisher: NodeId, body: Publish) -> Error | None:
        """Hold and fan out a batch at the home; the Error to answer when the topic may not be created."""
        t = self._topic(body.topic, publisher)
        if isinstance(t, Error):
            return t
        last = t.last_seq.get(publisher, 0)
        now = time.monotonic()
        for i, value in enumerate(body.values):
            seq = body.first_seq + i
            if seq <= last:
                continue  # already held: a resend
            last = seq
            entry = PubEntry(publisher, seq, value, body.published_ms)
            t.retained.append((now, entry))
            t.published += 1
            for sub in t.subscribers.values():
                self._enqueue(sub, entry)
        t.last_seq[publisher] = last
        self._trim(t, now)
        if t.retained and (self._expiry_task is None or self._expiry_task.done()):
            self._expiry_task = self.host.spawn(self._expire(), name="pubsub-retention")
        self._forget_if_unused(body.topic)  # an empty batch must not leave a topic held
        if publisher == self.host.node_id:
            self._ack(body.topic, last)
        else:
            with contextlib.suppress(EdgeAgentError):
                await self.host.send(publisher, PubAck(body.topic, last))
        return None

    def _trim(self, t: _Topic, now: float) -> None:
        keep = self.retain_s
        while t.retained and (len(t.retained) > self.retain_count or now - t.retained[0][0] > keep):
            t.retained.popleft()

    def _trim_all(self, now: float) -> None:
        """Trim every hosted topic's retention by count and age; forget the topics left unused."""
        for name, t in list(self.topics.items()):
            self._trim(t, now)
            self._forget_if_unused(name)

    async def _expire(self) -> None:
        """While anything is retained: drop messages as they pass ``retain_s`` (no publish needed)."""
        while True:
            now = time.monotonic()
            self._trim_all(now)
            oldest = min((t.retained[0][0] for t in self.topics.values() if t.retained), default=None)
            if oldest is None:
                return  # started again by the next publish
            keep = self.retain_s
            # at most an eighth of retain_s (and a second) late, and never a busy loop
            await asyncio.sleep(max(oldest + keep - now, min(1.0, keep / 8)))

    def _enqueue(self, sub: _SubState, entry: PubEntry) -> None:
        if len(sub.queue) >= self.queue_max:
            sub.queue.popleft()  # drop-oldest: this subscriber is behind (it recovers from retention)
            sub.dropped += 1
        sub.queue.append(entry)
        sub.wake.set()

    async def on_subscribe(self, m: Inbound[Subscribe]) -> None:
        refused = self._host_subscribe(m.source, m.body)
        if refused is not None:
            await m.refuse(ErrorCode(refused.code), refused.reason)
        elif m.env.reply_to is None:
            await m.reply(Response(None))

    def _host_subscribe(self, who: NodeId, req: Subscribe) -> Error | None:
        """Add ``who`` as a subscriber and queue its replay; the Error to answer when the topic may not be created."""
        t = self._topic(req.topic, who)
        if isinstance(t, Error):
            return t
        self._trim(t, time.monotonic())  # replay only what is still retained
        sub = t.subscribers.get(who)
        if sub is None:
            sub = t.subscribers[who] = _SubState()
        resume = dict(zip(req.publishers, req.seqs, strict=False))
        if resume:
            # replay what the subscriber missed (per publisher, after what it saw), if still retained; at most
            # what fits in its queue (a replay must not push out what is queued: it asks again for the rest)
            queued = {(e.publisher, e.seq) for e in sub.queue}
            missing = [
                e
                for _, e in t.retained
                if e.publisher in resume and e.seq > resume[e.publisher] and (e.publisher, e.seq) not in queued
            ]
            room = max(0, self.queue_max - len(sub.queue))
            if missing and room:
                keep = missing[:room]
                rest = list(sub.queue)
                sub.queue.clear()
                sub.queue.extend(sorted(keep + rest, key=lambda e: (e.publisher, e.seq)))
                sub.wake.set()
        if sub.task is None or sub.task.done():
            sub.task = self.host.spawn(self._deliver_loop(req.topic, who, sub), name="pubsub-deliver")
        return None

    async def on_unsubscribe(self, m: Inbound[Unsubscribe]) -> None:
        self._host_unsubscribe(m.source, m.body.topic)

    def _host_unsubscribe(self, who: NodeId, topic: str) -> None:
        t = self.topics.get(topic)
        if t is not None:
            sub = t.subscribers.pop(who, None)
            if sub is not None and sub.task is not None:
                sub.task.cancel()
            self._forget_if_unused(topic)

    def on_link_down(self, peer: NodeId) -> None:
        """A subscriber went away: stop its sender (it resumes from retention when it subscribes again)."""
        for name, t in list(self.topics.items()):
            sub = t.subscribers.pop(peer, None)
            if sub is not None and sub.task is not None:
                sub.task.cancel()
            self._forget_if_unused(name)

    async def _deliver_loop(self, topic: str, who: NodeId, sub: _SubState) -> None:
        me = self.host.node_id
        while True:
            if not sub.queue:
                sub.wake.clear()
                await sub.wake.wait()
                continue
            batch: list[PubEntry] = []
            while sub.queue and len(batch) < self.batch_max:
                batch.append(sub.queue.popleft())
            if who == me:
                await self.on_entries(topic, batch)
            else:
                try:
                    await self.host.send(who, Deliver(topic, tuple(batch)))
                except (EdgeAgentError, NoRoute):
                    await asyncio.sleep(0.5)  # not reachable now; it resumes from retention on re-subscribe
                    continue
            sub.delivered += len(batch)

    # -- subscribing (local API) --------------------------------------------------------------------

    def subscribe(self, topic: str, *, maxsize: int = QUEUE_MAX) -> Subscription:
        """A subscription to ``topic``, active inside ``async with``."""
        return Subscription(self, topic, maxsize)

    async def _attach(self, sub: Subscription) -> None:
        first = sub.topic not in self.subs
        self.subs.setdefault(sub.topic, []).append(sub)
        if first:
            await self._subscribe_remote(sub.topic)

    async def _detach(self, sub: Subscription) -> None:
        subs = self.subs.get(sub.topic, [])
        if sub in subs:
            subs.remove(sub)
        if not subs:
            self.subs.pop(sub.topic, None)
            home = self.home()
            if home == self.host.node_id:
                self._host_unsubscribe(home, sub.topic)
            else:
                with contextlib.suppress(EdgeAgentError):
                    await self.host.send(home, Unsubscribe(sub.topic))

    async def _subscribe_remote(self, topic: str) -> None:
        seen = self.seen.get(topic, {})
        req = Subscribe(topic, tuple(seen), tuple(seen.values()))
        home = self.home()
        if home == self.host.node_id:
            self._host_subscribe(home, req)
            return
        try:
            await self.host.request(home, req, timeout=10.0)
        except EdgeAgentError as exc:
            log.info("subscribing to %s at %s failed: %s (again when the link is back)", topic, home, exc)

    async def on_deliver(self, m: Inbound[Deliver]) -> None:
        d = m.body  # only the topic's home (the domain) delivers: the policy admits no one else
        await self.on_entries(d.topic, list(d.entries))

    async def on_entries(self, topic: str, entries: list[PubEntry]) -> None:
        """Deliver in per-publisher order, once; hold back what follows a gap (bounded) and ask for a replay."""
        subs = self.subs.get(topic)
        if not subs:
            return
        seen = self.seen.setdefault(topic, {})
        gap = False
        for e in entries:
            last = seen.get(e.publisher)
            if last is not None and e.seq <= last:
                self.duplicates += 1
                continue
            if last is not None and e.seq > last + 1:
                held = self._held.setdefault((topic, e.publisher), {})
                if len(held) < self.queue_max:
                    held[e.seq] = e
                self._gap_since.setdefault((topic, e.publisher), time.monotonic())
                gap = True
                continue
            await self._emit(topic, e, subs)
            await self._drain_held(topic, e.publisher, subs)
        if gap:
            await self._resolve_gaps(topic, subs)
        self._save_soon()

    async def _emit(self, topic: str, e: PubEntry, subs: list[Subscription]) -> None:
        msg = Message(topic, e.publisher, e.seq, e.value, e.published_ms)
        for s in subs:
            await s.put(msg)
        self.seen.setdefault(topic, {})[e.publisher] = e.seq  # seen once the application holds it
        self.counters["delivered"] += 1

    async def _drain_held(self, topic: str, publisher: NodeId, subs: list[Subscription]) -> None:
        key = (topic, publisher)
        held = self._held.get(key)
        progressed = False
        while held:
            nxt = self.seen[topic][publisher] + 1
            e = held.pop(nxt, None)
            if e is None:
                if progressed:
                    self._gap_since[key] = time.monotonic()  # the gap shrank: give the replay more time
                return
            await self._emit(topic, e, subs)
            progressed = True
        self._held.pop(key, None)
        self._gap_since.pop(key, None)

    async def _resolve_gaps(self, topic: str, subs: list[Subscription]) -> None:
        """Ask for a replay (at most once a second); a gap that stops shrinking for GAP_WAIT_S is skipped."""
        now = time.monotonic()
        for (t, pub), since in list(self._gap_since.items()):
            if t != topic:
                continue
            held = self._held.get((t, pub), {})
            if not held:
                self._gap_since.pop((t, pub), None)
                continue
            if now - since > GAP_WAIT_S:
                first = min(held)
                self.missed += first - self.seen[t][pub] - 1
                self.seen[t][pub] = first - 1
                await self._drain_held(t, pub, subs)
        if now - self._replay_asked.get(topic, -1e9) >= 1.0:
            self._replay_asked[topic] = now
            self._spawn(self._subscribe_remote(topic))

    # -- persistence of what was seen (so a restarted subscriber resumes) ---------------------------

    def _load(self) -> None:
        if self.state_file is None or not self.state_file.exists():
            return
        try:
            raw = json.loads(self.state_file.read_text())
            self.seen = {t: {NodeId.parse(p): int(s) for p, s in pubs.items()} for t, pubs in raw["seen"].items()}
        except (OSError, ValueError, KeyError, TypeError, EdgeAgentError) as exc:
            log.warning("ignoring %s: %s", self.state_file, exc)

    def _save_soon(self) -> None:
        if self.state_file is None or getattr(self, "_saving", False):
            return
        self._saving = True

        async def later() -> None:
            await asyncio.sleep(0.2)
            self._saving = False
            self.save()

        self._spawn(later())

    def save(self) -> None:
        if self.state_file is None:
            return
        data = {"seen": {t: {str(p): s for p, s in pubs.items()} for t, pubs in self.seen.items()}}
        tmp = self.state_file.with_suffix(".tmp")
        with contextlib.suppress(OSError):
            tmp.write_text(json.dumps(data))
            tmp.replace(self.state_file)

    def status(self) -> dict[str, Any]:
        self._trim_all(time.monotonic())
        return {
            "home": str(self.home()),
            "hosted": {
                name: {
                    "subscribers": len(t.subscribers),
                    "published": t.published,
                    "retained": len(t.retained),
                    "dropped": sum(s.dropped for s in t.subscribers.values()),
                    "queued": sum(len(s.queue) for s in t.subscribers.values()),
                }
                for name, t in self.topics.items()
            },
            "subscribed": {t: sum(s.dropped for s in subs) for t, subs in self.subs.items()},
            "duplicates_dropped": self.duplicates,
            "missed": self.missed,
            **self.counters,
        }

    def close(self) -> None:
        self.save()
        for t in self.topics.values():
            for sub in t.subscribers.values():
                if sub.task is not None:
                    sub.task.cancel()
        if self._pub_task is not None:
            self._pub_task.cancel()
        if self._expiry_task is not None:
            self._expiry_task.cancel()
        for task in list(self._tasks):
            task.cancel()
