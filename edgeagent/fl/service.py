"""Federated-learning jobs over the payload tree: the domain's job runner and the device's participant.

Per round the domain writes the global model (``.npz``), sends it down a
payload tree to the participants, and sends each a ``RoundStart`` naming its
parent and children in the forest's first tree; every device trains on its
local data, waits (until a cut-off that leaves its ancestors time) for its
children's updates, adds them to its own and sends one ``Update`` up. The
domain sums what reaches it, never counting a device twice, applies FedAvg,
stores a checkpoint (``<state>/fl/<job>/round-<r>.npz`` and ``state.json``)
and announces the ``RoundResult``. A domain restarted with the same job
resumes after its last checkpoint. A device whose parent's link drops before
the round closes sends its update straight to the domain instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import time
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import numpy as np

from ..exceptions import EdgeAgentError
from ..host import Inbound, Policy, Registration, Sender, Service, on
from ..wire import (
    JobAdvert,
    JoinReply,
    JoinRequest,
    Message,
    NodeId,
    RoundResult,
    RoundStart,
    Update,
)
from .aggregate import RoundSum, apply_fedavg, load_model, model_bytes, to_tensors, weighted_delta
from .job import JobSpec
from .plans import available_plans, load_plan

if TYPE_CHECKING:
    from ..host import Host, PayloadApi

__all__ = ["FlDevice", "FlDomain", "load_data"]

log = logging.getLogger(__name__)
ADVERT_EVERY: Final = 2.0
MIN_STEP_S: Final = 0.3  # each tree level above a node gets at least this long to aggregate and forward


def load_data(path: Path) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """A device's local data: an ``.npz`` with ``x`` (samples x features) and ``y`` (integer labels)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            x = np.asarray(z["x"], dtype=np.float32)
            y = np.asarray(z["y"]).astype(np.int64)
    except (OSError, ValueError, KeyError, EOFError, TypeError, AttributeError, zipfile.BadZipFile) as exc:
        raise EdgeAgentError(f"cannot read training data {path}: {exc} (an .npz with arrays x and y)") from None
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y):
        raise EdgeAgentError(f"{path}: x must be samples x features and y one label per sample")
    return x, y


# -- the domain ----------------------------------------------------------------------------------


@dataclass
class _RoundState:
    number: int  # the job's round (on the wire)
    attempt: int  # counts every try; a failed round is tried again with the same number and the same base model,
    # so a late update from the failed try is as good as a fresh one (and never counted twice)
    participants: list[NodeId]
    sums: RoundSum
    rerouted: list[Update] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    updated: asyncio.Event = field(default_factory=asyncio.Event)


class FlDomain(Service):
    """Runs one job from a job file on a domain node."""

    name = "fl"

    def __init__(self, host: Host, payloads: PayloadApi, spec: JobSpec, *, star: bool = False) -> None:
        self.host = host
        self.payloads = payloads
        self.spec = spec
        self.star = star  # baseline: the model to every device from here, every update straight back
        self.dir = host.state_dir / "fl" / spec.id
        self.plan = load_plan(spec.plan)
        self.joined: dict[NodeId, int] = {}  # device -> samples
        self.left: set[NodeId] = set()
        self.round: _RoundState | None = None
        self.history: list[dict[str, Any]] = []
        self.next_round = 0
        self.attempts = 0
        self._gathered = False
        self.params: list[Any] = []
        self.done = asyncio.Event()
        self.test: tuple[Any, Any] | None = load_data(spec.test_data) if spec.test_data else None
        self._task: asyncio.Task[None] | None = None

    def handlers(self) -> Mapping[type[Message], Registration]:
        return {
            JoinRequest: on(Policy(Sender.AUTHORISED), self.on_join),
            Update: on(Policy(Sender.AUTHORISED, relayable=True), self.on_update),
        }

    def start(self) -> None:
        self._task = self.host.spawn(self._run(), name=f"fl-job-{self.spec.id}")

    def status_fields(self) -> dict[str, Any]:
        return {"fl": self.status()}

    async def aclose(self) -> None:
        await self.stop()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task

    def advert(self) -> JobAdvert:
        s = self.spec
        return JobAdvert(
            s.id, s.plan, None, dict(s.hyperparams), s.rounds, s.min_participants, s.eligibility,
            int(s.round_deadline_s * 1000),
        )  # fmt: skip

    def _load_state(self) -> None:
        state = self.dir / "state.json"
        if state.exists():
            st = json.loads(state.read_text())
            self.next_round = int(st["next_round"])
            self.attempts = int(st.get("attempts", self.next_round))
            self.history = list(st.get("history", []))
            ckpt = self.dir / f"round-{self.next_round - 1}.npz"
            if self.next_round > 0 and ckpt.exists():
                self.params = load_model(ckpt.read_bytes())
                log.info("job %s: resuming at round %d from %s", self.spec.id, self.next_round, ckpt)
                return
        self.params = self.plan.init(self.spec.hyperparams, self.spec.n_features, self.spec.n_classes, self.spec.seed)
        self.next_round = 0

    def _save_state(self) -> None:
        tmp = self.dir / "state.json.tmp"
        state = {"job": self.spec.id, "next_round": self.next_round, "attempts": self.attempts, "history": self.history}
        tmp.write_text(json.dumps(state))
        tmp.replace(self.dir / "state.json")

    async def _run(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        await asyncio.to_thread(self._load_state)
        while self.next_round < self.spec.rounds:
            participants = await self._gather()
            if len(participants) < self.spec.min_participants:
                log.warning("job %s: %d participants, fewer than %d; waiting", self.spec.id, len(participants),
                            self.spec.min_participants)  # fmt: skip
                continue
            await self._round(self.next_round, participants)
        self.done.set()  # the last RoundResult said done=True

    async def _gather(self) -> list[NodeId]:
        """Advertise until enough eligible devices joined; returns the participants.

        The first round waits up to ``join_wait_s`` for every linked device to
        answer (they join, or decline by staying silent); later rounds start as
        soon as ``min_participants`` are there (newcomers join the next round).
        """
        deadline = time.monotonic() + self.spec.join_wait_s
        warned = False
        while True:
            devices = [
                p
                for p, links in self.host.peers.linked()
                if links[0].authorised and links[0].peer_hello.role != "domain"
            ]
            for peer in devices:
                with contextlib.suppress(EdgeAgentError):
                    await self.host.send(peer, self.advert())
            live = [n for n in self.joined if self.host.peers.links(n) and n not in self.left]
            enough = len(live) >= self.spec.min_participants
            everyone = set(devices) <= set(live)
            if enough and (everyone or self._gathered or time.monotonic() >= deadline):
                self._gathered = True
                return sorted(live)
            if time.monotonic() >= deadline and not warned:
                warned = True
                log.warning("job %s: %d of %d participants needed have joined; waiting", self.spec.id, len(live),
                            self.spec.min_participants)  # fmt: skip
            await asyncio.sleep(0.5 if time.monotonic() < deadline else ADVERT_EVERY)

    async def on_join(self, m: Inbound[JoinRequest]) -> None:
        req, env = m.body, m.env
        if req.job_id != self.spec.id:
            reply = JoinReply(req.job_id, False, "no such job here")
        elif self.host.peers.is_domain(env.source):
            reply = JoinReply(req.job_id, False, "not authorised by this domain")
        elif self.spec.plan not in req.capabilities:
            reply = JoinReply(req.job_id, False, f"the device lacks plan {self.spec.plan!r}")
        else:
            self.joined[env.source] = req.num_samples
            self.left.discard(env.source)
            reply = JoinReply(req.job_id, True)
        await m.reply(reply)

    async def _round(self, r: int, participants: list[NodeId]) -> None:
        spec = self.spec
        me = self.host.node_id
        path = self.dir / f"model-{r}.npz"
        blob = model_bytes(self.params)
        await asyncio.to_thread(path.write_bytes, blob)
        sent0, recv0 = self._wire()
        self.attempts += 1
        attempt = self.attempts
        rs = _RoundState(r, attempt, participants, RoundSum(spec.id, r))
        self.round = rs
        deadline_wall = time.time() + spec.round_deadline_s
        deadline = time.monotonic() + spec.round_deadline_s
        pid = await self.payloads.start(path, list(participants), star=self.star)
        send = asyncio.ensure_future(self.payloads.wait(pid, spec.round_deadline_s))
        tree = self.payloads.first_tree(pid)  # updates go up the first tree of the model's forest
        step = max(MIN_STEP_S, spec.round_deadline_s * 0.05)
        for n in participants:
            parent = me if self.star else tree.parent.get(n, me)
            depth = 1 if self.star else _depth(tree, n)
            send_by = int((deadline_wall - step * depth) * 1000)  # deeper nodes send earlier
            hyper = {**spec.hyperparams, "_send_by_ms": send_by, "_step_ms": int(step * 1000), "seed": spec.seed + r}
            kids = () if self.star else tuple(c for c in tree.children.get(n, ()) if c in participants)
            start = RoundStart(spec.id, r, pid, int(deadline_wall * 1000), parent, kids, hyper)
            try:
                await self.host.send(n, start)
            except EdgeAgentError as exc:
                log.warning("job %s round %d: cannot start %s: %s", spec.id, r, n, exc)
        # collect until every participant is accounted for, or the deadline
        while time.monotonic() < deadline:
            rerouted = {c for u in rs.rerouted for c in u.contributors}
            accounted = rs.sums.contributors | rs.sums.dropped | self.left | rerouted
            if all(n in accounted for n in participants):
                break
            rs.updated.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await rs.updated.wait()
        send.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await send
        # updates sent around a dead parent count only if no aggregate already holds them
        for upd in rs.rerouted:
            rs.sums.add(upd)
        got = len(rs.sums.contributors)
        dropped = len(participants) - got
        if got < spec.min_participants:
            log.warning("job %s round %d: %d updates, fewer than %d; the round is repeated", spec.id, r, got,
                        spec.min_participants)  # fmt: skip
            self.round = None
            return
        self.params = apply_fedavg(self.params, rs.sums)
        await asyncio.to_thread((self.dir / f"round-{r}.npz").write_bytes, model_bytes(self.params))
        metrics = rs.sums.mean_metrics()
        if self.test is not None:
            metrics.update({f"test_{k}": v for k, v in self.plan.evaluate(self.params, *self.test).items()})
        sent1, recv1 = self._wire()
        entry = {
            "round": r,
            "attempt": attempt,
            "model_bytes": len(blob),
            "domain_bytes_sent": sent1 - sent0,
            "domain_bytes_received": recv1 - recv0,
            "participants": got,
            "dropped": dropped,
            "metrics": metrics,
            "seconds": round(time.monotonic() - rs.started, 3),
            "refused_updates": rs.sums.refused,
        }
        self.history.append(entry)
        self.next_round = r + 1
        await asyncio.to_thread(self._save_state)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        log.info("job %s round %d: %d updates, %d dropped, %s", spec.id, r, got, dropped, metrics)
        result = RoundResult(spec.id, r, got, dropped, metrics, b"", r + 1 >= spec.rounds,
                             str(self.dir / f"round-{r}.npz"))  # fmt: skip
        for n in participants:
            with contextlib.suppress(EdgeAgentError):
                await self.host.send(n, result)
        self.round = None

    async def on_update(self, m: Inbound[Update]) -> None:
        upd, env = m.body, m.env
        rs = self.round
        if rs is None or upd.job_id != self.spec.id or upd.round != rs.number:
            return
        if not upd.contributors and env.source in upd.dropped and env.source in rs.participants:
            self.left.add(env.source)  # the device no longer meets the job's conditions
            log.info("job %s: %s leaves (not eligible any more)", self.spec.id, env.source)
        if upd.rerouted:
            rs.rerouted.append(upd)
            rs.updated.set()
            return
        if not rs.sums.add(upd):
            log.info("job %s round %d: refused an update from %s (overlap or mismatch)", self.spec.id, rs.number,
                     env.source)  # fmt: skip
        rs.updated.set()

    def on_link_down(self, peer: NodeId) -> None:
        """A participant went away mid-round: do not wait for it (its update, if sent, still counts)."""
        rs = self.round
        if rs is not None and peer in rs.participants and peer not in rs.sums.contributors:
            rs.sums.dropped.add(peer)
            rs.updated.set()

    def _wire(self) -> tuple[int, int]:
        links = [lk for _, lks in self.host.peers.linked() for lk in lks]
        return sum(lk.stats.bytes_sent for lk in links), sum(lk.stats.bytes_received for lk in links)

    def status(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else None
        metrics = last["metrics"] if last else {}
        return {
            "role": "domain",
            "job": self.spec.id,
            "plan": self.spec.plan,
            "round": self.round.number if self.round else self.next_round,
            "attempts": self.attempts,
            "rounds": self.spec.rounds,
            "done": self.done.is_set(),
            "joined": len(self.joined),
            "participants": len(self.round.participants) if self.round else (last["participants"] if last else 0),
            "accuracy": metrics.get("test_accuracy", metrics.get("train_accuracy")),
            "history": self.history[-20:],
        }


def _depth(tree: Any, node: NodeId) -> int:
    """Edges from the root to ``node`` in a planner Tree (1 for the root's children)."""
    d = 0
    while node in tree.parent and d <= len(tree.parent):
        node = tree.parent[node]
        d += 1
    return d


# -- the device ------------------------------------------------------------------------------------


@dataclass
class _DeviceRound:
    start: RoundStart
    domain: NodeId
    sums: RoundSum
    children_in: asyncio.Event = field(default_factory=asyncio.Event)
    sent: Update | None = None
    sent_to: NodeId | None = None
    closed: bool = False


class FlDevice(Service):
    """Takes part in jobs its domain advertises, when the job's conditions hold here."""

    name = "fl"

    def __init__(
        self,
        host: Host,
        payloads: PayloadApi,
        data_path: Path | None,
        *,
        run_conditions: Any = None,
        battery: Callable[[], Any] | None = None,
    ) -> None:
        self.host = host
        self.payloads = payloads
        self.run_conditions = run_conditions
        self.data_path = data_path
        self._data: tuple[Any, Any] | None = None
        self.battery = battery
        self.jobs: dict[str, JobAdvert] = {}
        self.joined: set[str] = set()
        self.joined_at: dict[str, NodeId] = {}  # job -> the domain that admitted us
        self.rounds: dict[tuple[str, int], _DeviceRound] = {}
        self.results: dict[str, RoundResult] = {}
        self.not_eligible: dict[str, str] = {}
        self._tasks: set[asyncio.Future[Any]] = set()
        self._joining: set[str] = set()

    def handlers(self) -> Mapping[type[Message], Registration]:
        from_domain = Policy(Sender.DOMAIN)
        return {
            JobAdvert: on(from_domain, self.on_advert),
            RoundStart: on(from_domain, self.on_round_start),
            RoundResult: on(from_domain, self.on_result),
            # children in a round's tree send their sums here (the domain relays when no link is up)
            Update: on(Policy(Sender.MEMBER, relayable=True, admits=self.admits), self.on_update),
        }

    def admits(self, peer: NodeId, body: Message) -> bool:
        """An Update from a child this node expects in that round (or, before its RoundStart, of a job it joined)."""
        if not isinstance(body, Update):
            return False
        st = self.rounds.get((body.job_id, body.round))
        if st is not None:
            return peer in st.start.expected
        return body.job_id in self.joined

    def status_fields(self) -> dict[str, Any]:
        return {"fl": self.status()}

    async def aclose(self) -> None:
        self.close()

    def data(self) -> tuple[Any, Any] | None:
        if self._data is None and self.data_path is not None:
            self._data = load_data(self.data_path)
        return self._data

    def eligible(self, advert: JobAdvert) -> tuple[bool, str]:
        """Whether this device may take part now (it decides for itself)."""
        e = advert.eligibility
        opts = self.host.link_options
        if e.unmetered and opts.metered:
            return False, "on a metered network"
        if advert.plan not in available_plans():
            return False, f"no plan {advert.plan!r} here"
        if e.needs_data:
            try:
                if self.data() is None:
                    return False, "no local training data (set [fl] data)"
            except EdgeAgentError as exc:
                return False, str(exc)
        from ..netcost import RunConditions
        from ..netcost.battery import read_battery

        battery = self.battery() if self.battery is not None else read_battery()
        if e.charging and battery is not None and not battery.charging:
            return False, f"not charging (battery {battery.percent:.0f}%)"
        if e.min_battery and battery is not None and not battery.charging and battery.percent < e.min_battery:
            return False, f"battery {battery.percent:.0f}% < {e.min_battery}%"
        conditions = self.run_conditions or RunConditions()
        ok, why = conditions.may_train(battery)
        return (True, why) if ok else (False, why)

    def _spawn(self, coro: Any) -> None:
        t = self.host.spawn(coro)
        self._tasks.add(t)
        t.add_done_callback(self._tasks.discard)

    async def on_advert(self, m: Inbound[JobAdvert]) -> None:
        ad, env = m.body, m.env
        self.jobs[ad.job_id] = ad
        if ad.job_id in self.joined or ad.job_id in self._joining:
            return
        ok, why = self.eligible(ad)
        if not ok:
            self.not_eligible[ad.job_id] = why
            return
        self._joining.add(ad.job_id)
        self._spawn(self._join(env.source, ad))

    async def _join(self, domain: NodeId, ad: JobAdvert) -> None:
        try:
            data = self.data()
            n = len(data[1]) if data is not None else 0
            reply = await self.host.request(domain, JoinRequest(ad.job_id, n, tuple(available_plans())), timeout=10)
            if isinstance(reply, JoinReply) and reply.accepted:
                self.joined.add(ad.job_id)
                self.joined_at[ad.job_id] = domain
                self.not_eligible.pop(ad.job_id, None)
                log.info("joined job %s (%d samples)", ad.job_id, n)
            elif isinstance(reply, JoinReply):
                self.not_eligible[ad.job_id] = f"refused: {reply.reason}"
        except EdgeAgentError as exc:
            log.info("joining job %s failed: %s", ad.job_id, exc)
        finally:
            self._joining.discard(ad.job_id)

    async def on_round_start(self, m: Inbound[RoundStart]) -> None:
        rs, env = m.body, m.env
        if rs.job_id not in self.joined:
            return
        key = (rs.job_id, rs.round)
        st = self.rounds.get(key)
        if st is not None and st.start.model_id != rs.model_id:
            st = None  # a different round under the same id (a restarted domain): start afresh
        if st is None:
            st = _DeviceRound(rs, env.source, RoundSum(rs.job_id, rs.round))
            self.rounds[key] = st
            for old in [k for k in self.rounds if k[0] == rs.job_id and k[1] < rs.round - 2]:
                del self.rounds[old]
        st.start = rs
        ad = self.jobs.get(rs.job_id)
        ok, why = self.eligible(ad) if ad is not None else (True, "")
        if not ok:
            log.info("job %s round %d: not taking part (%s)", rs.job_id, rs.round, why)
            self.joined.discard(rs.job_id)
            self.not_eligible[rs.job_id] = why
            me = self.host.node_id
            leave = Update(rs.job_id, rs.round, (), 0, (), (me,), {})
            # the domain stops counting on it; the parent stops waiting for it
            for target in dict.fromkeys([st.domain, rs.parent or st.domain]):
                with contextlib.suppress(EdgeAgentError):
                    await self.host.send(target, leave)
            st.sent = leave  # not summing here: children's updates are passed on to the domain
            return
        self._spawn(self._train_round(st))

    async def _train_round(self, st: _DeviceRound) -> None:
        rs = st.start
        me = self.host.node_id
        deadline = time.monotonic() + max(0.0, rs.deadline_ms / 1000 - time.time())
        send_by = time.monotonic() + max(
            0.0, float(rs.hyperparams.get("_send_by_ms", rs.deadline_ms)) / 1000 - time.time()
        )
        try:
            params = await self._model(rs.model_id, deadline)
            data = self.data()
            if data is None:
                raise EdgeAgentError("no local training data")
            ad = self.jobs[rs.job_id]
            plan = load_plan(ad.plan)
            x, y = data
            step = float(rs.hyperparams.get("_step_ms", 0)) / 1000
            train_until = send_by - step / 2  # the children send a step earlier; keep time to add them
            new, metrics = await asyncio.to_thread(plan.train, params, x, y, rs.hyperparams, train_until)
            n = len(y)
            own = Update(
                rs.job_id, rs.round, to_tensors(weighted_delta(new, params, n)), n, (me,), (),
                {k: v * n for k, v in metrics.items()},
            )  # fmt: skip
            st.sums.add(own)
        except EdgeAgentError as exc:
            log.warning("job %s round %d: training failed: %s", rs.job_id, rs.round, exc)
            st.sums.dropped.add(me)
        # wait for the children (their sums), then send one update up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, send_by - time.monotonic())):
                while not all(c in st.sums.contributors or c in st.sums.dropped for c in rs.expected):
                    st.children_in.clear()
                    await st.children_in.wait()
        for c in rs.expected:
            if c not in st.sums.contributors:
                st.sums.dropped.add(c)
        await self._send_up(st)

    async def _send_up(self, st: _DeviceRound) -> None:
        rs = st.start
        upd = st.sums.to_update()
        parent = rs.parent if rs.parent is not None else st.domain
        st.sent = upd
        for target in dict.fromkeys([parent, st.domain]):
            try:
                await self.host.send(target, upd)
                st.sent_to = target
                return
            except EdgeAgentError as exc:
                log.info("job %s round %d: update to %s failed (%s); re-routing", rs.job_id, rs.round, target, exc)

    async def _model(self, pid: bytes, deadline: float) -> list[Any]:
        """Wait for the round's model payload to be complete here, then load it."""
        try:
            path = await self.payloads.wait_complete(pid, max(0.0, deadline - time.monotonic()))
        except EdgeAgentError:
            raise EdgeAgentError("the model did not arrive before the round's deadline") from None
        return load_model(await asyncio.to_thread(path.read_bytes))

    async def on_update(self, m: Inbound[Update]) -> None:
        upd = m.body
        st = self.rounds.get((upd.job_id, upd.round))
        if st is None or st.sent is not None:
            # not summing (too late, or not taking part): pass it straight on to the domain
            domain = st.domain if st is not None else self.joined_at.get(upd.job_id)
            if domain is None and self.host.peers.domain_ids:
                domain = sorted(self.host.peers.domain_ids)[0]
            if domain is not None:
                with contextlib.suppress(EdgeAgentError):
                    await self.host.send(domain, upd)
            return
        st.sums.add(upd)
        st.children_in.set()

    async def on_result(self, m: Inbound[RoundResult]) -> None:
        res = m.body
        self.results[res.job_id] = res
        st = self.rounds.get((res.job_id, res.round))
        if st is not None:
            st.closed = True
        if res.done:
            self.joined.discard(res.job_id)

    def on_link_down(self, peer: NodeId) -> None:
        """A parent died before its round closed: send this node's (sub)tree sum to the domain instead.

        The copy is marked ``rerouted``: the domain adds it only if no aggregate that
        reached it already holds these contributors (the parent may have forwarded
        before it died). Losing the link to the domain itself ends this node's
        membership: it joins again when the domain advertises after the reconnect.
        """
        for job, dom in list(self.joined_at.items()):
            if dom == peer:
                self.joined.discard(job)
                del self.joined_at[job]
        for st in self.rounds.values():
            if st.sent is not None and not st.closed and st.sent_to == peer and peer != st.domain:
                log.info("job %s round %d: parent %s went down; re-routing the update to the domain",
                         st.start.job_id, st.start.round, peer)  # fmt: skip
                st.sent_to = st.domain
                upd = dataclasses.replace(st.sent, rerouted=True)
                self._spawn(self._send_quietly(st.domain, upd))

    async def _send_quietly(self, peer: NodeId, body: Update) -> None:
        with contextlib.suppress(EdgeAgentError):
            await self.host.send(peer, body)

    def status(self) -> dict[str, Any]:
        out = []
        for jid, ad in self.jobs.items():
            res = self.results.get(jid)
            rounds = [k[1] for k in self.rounds if k[0] == jid]
            out.append(
                {
                    "job": jid,
                    "plan": ad.plan,
                    "joined": jid in self.joined,
                    "not_eligible": self.not_eligible.get(jid),
                    "round": max(rounds) if rounds else None,
                    "accuracy": None
                    if res is None
                    else res.metrics.get("test_accuracy", res.metrics.get("train_accuracy")),
                    "done": bool(res and res.done),
                }
            )
        return {"role": "device", "jobs": out}

    def close(self) -> None:
        for t in list(self._tasks):
            t.cancel()
