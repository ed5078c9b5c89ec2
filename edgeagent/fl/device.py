"""The device's side of a federated-learning job: join, train, sum the children's updates, send one up.

A device that the round's tree makes a parent waits (until a cut-off that leaves its ancestors
time) for its children's updates, checks each (``checks``), adds them to its own and sends one
``Update`` up; one whose parent's link drops before the round closes sends straight to the domain.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
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
    ErrorCode,
    JobAdvert,
    JoinReply,
    JoinRequest,
    Message,
    NodeId,
    RoundResult,
    RoundStart,
    Update,
)
from .aggregate import RoundSum, load_model, to_tensors, update_problem, weighted_delta
from .plans import available_plans, load_plan

if TYPE_CHECKING:
    from ..host import Host, PayloadApi


from .checks import Refusal, child_subtrees, contributors_refusal, data_problem, form_refusal, plan_hyperparams, refuse

__all__ = ["FlDevice", "load_data"]

log = logging.getLogger(__name__)
_EARLY_KEPT: Final = 16  # updates a device keeps that came before their round's RoundStart


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
    below: dict[NodeId, frozenset[NodeId]] | None = None  # expected child -> its assigned subtree (None: unknown)
    pending: dict[NodeId, Update] = field(default_factory=dict)  # children's sums that came before the model


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
        self._early: dict[tuple[str, int], dict[NodeId, Update]] = {}  # updates ahead of their RoundStart

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

    def expects(self, peer: NodeId) -> bool:
        """A child this node expects an update from in a round still open (updates are model-sized)."""
        return any(peer in st.start.expected for st in self.rounds.values() if not st.closed)

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
                data = self.data()
            except EdgeAgentError as exc:
                return False, str(exc)
            if data is None:
                return False, "no local training data (run with --data FILE)"
            problem = data_problem(tuple(data[0].shape), data[1], advert.hyperparams)
            if problem is not None:
                return False, problem
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
            if self.not_eligible.get(ad.job_id) != why:  # said once per reason: here, and to the domain
                log.warning("not taking part in job %s: %s", ad.job_id, why)
                self._spawn(self._decline(env.source, ad.job_id, why))
            self.not_eligible[ad.job_id] = why
            return
        self._joining.add(ad.job_id)
        self._spawn(self._join(env.source, ad))

    async def _decline(self, domain: NodeId, job_id: str, why: str) -> None:
        """Tell the domain why this device does not take part (it reports that by device)."""
        with contextlib.suppress(EdgeAgentError):
            await self.host.request(domain, JoinRequest(job_id, 0, tuple(available_plans()), declined=why), timeout=10)

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
        st.below = child_subtrees(rs)
        early = self._early.pop(key, {})
        for k in [k for k in self._early if k[0] == rs.job_id and k[1] <= rs.round]:
            del self._early[k]
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
            await self._take_early(st, early)
            return
        self._spawn(self._train_round(st))
        await self._take_early(st, early)

    async def _take_early(self, st: _DeviceRound, early: Mapping[NodeId, Update]) -> None:
        for sender, upd in early.items():
            refusal = await self._take(st, sender, upd)
            if refusal is not None:
                limit, code, why = refusal
                self.host.limiter.refuse(limit, sender, f"early update for job {upd.job_id}: {why}", time.monotonic(),
                                         code=code)  # fmt: skip

    async def _train_round(self, st: _DeviceRound) -> None:
        rs = st.start
        me = self.host.node_id
        deadline = time.monotonic() + max(0.0, rs.deadline_ms / 1000 - time.time())
        send_by = time.monotonic() + max(
            0.0, float(rs.hyperparams.get("_send_by_ms", rs.deadline_ms)) / 1000 - time.time()
        )
        try:
            params = await self._model(rs.model_id, deadline)
            self._model_known(st, [tuple(p.shape) for p in params])
            data = self.data()
            if data is None:
                raise EdgeAgentError("no local training data")
            ad = self.jobs[rs.job_id]
            plan = load_plan(ad.plan)
            x, y = data
            step = float(rs.hyperparams.get("_step_ms", 0)) / 1000
            train_until = send_by - step / 2  # the children send a step earlier; keep time to add them
            hyper = plan_hyperparams(rs.hyperparams)
            new, metrics = await asyncio.to_thread(plan.train, params, x, y, hyper, train_until)
            n = len(y)
            own = Update(
                rs.job_id, rs.round, to_tensors(weighted_delta(new, params, n)), n, (me,), (),
                {k: v * n for k, v in metrics.items()},
            )  # fmt: skip
            problem = update_problem(own, st.sums.shapes)
            if problem is not None:  # e.g. training diverged: send the children's sums, not this
                raise EdgeAgentError(f"the trained model is not a usable update: {problem}")
            st.sums.add(own)
        except EdgeAgentError as exc:
            log.warning("job %s round %d: training failed: %s", rs.job_id, rs.round, exc)
            st.sums.dropped.add(me)
        # wait for the children (their sums), then send one update up
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.0, send_by - time.monotonic())):
                while not all(
                    c in st.sums.contributors or c in st.sums.dropped or c in st.pending for c in rs.expected
                ):
                    st.children_in.clear()
                    await st.children_in.wait()
        for c in rs.expected:
            if c not in st.sums.contributors and c not in st.pending:
                st.sums.dropped.add(c)
        await self._send_up(st)

    def _model_known(self, st: _DeviceRound, shapes: list[tuple[int, ...]]) -> None:
        """The round's model is here: children's sums are checked against its shapes from now on."""
        if st.sums.total is None:
            st.sums.shapes = shapes
        pending, st.pending = st.pending, {}
        for sender, upd in pending.items():
            refusal = form_refusal(upd, st.sums.shapes)
            if refusal is None and st.sums.add(upd):
                continue
            limit, code, why = refusal or ("fl_update", ErrorCode.BAD_REQUEST, "it overlaps updates already summed")
            st.sums.refused += 1
            self.host.limiter.refuse(limit, sender, f"update for job {upd.job_id} round {upd.round}: {why}",
                                     time.monotonic(), code=code)  # fmt: skip
        st.children_in.set()

    async def _send_up(self, st: _DeviceRound) -> None:
        rs = st.start
        # children's sums this node could not check against the model (it never arrived here): the
        # domain checks them; they come from this node, so they must lie in its subtree, as they do
        pending, st.pending = st.pending, {}
        for upd in pending.values():
            await self._send_quietly(st.domain, upd)
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

    def child_refusal(self, st: _DeviceRound, sender: NodeId, upd: Update) -> Refusal | None:
        """Why this node does not take ``upd`` from ``sender`` in round ``st`` (None when it does). No clock.

        The sender is a child this round assigned to this node; everything it names lies in that
        child's assigned subtree (when the RoundStart does not list subtrees: nothing of this node
        or of its other children); the arrays fit the model (once it is here) and are finite.
        """
        rs = st.start
        if sender not in rs.expected:
            return "fl_sender", ErrorCode.UNAUTHORIZED, f"not a child of this node in job {rs.job_id} round {rs.round}"
        max_items = self.host.limiter.limits.list_items
        if st.below is not None:
            allowed = st.below.get(sender, frozenset({sender}))
        elif max(len(upd.contributors), len(upd.dropped)) > max_items:
            allowed = frozenset()  # refused below as too long
        else:  # not told: anything but this node, its parent and its other children
            others = {self.host.node_id, st.domain, *([rs.parent] if rs.parent else []), *rs.expected} - {sender}
            allowed = frozenset(set(upd.contributors) | set(upd.dropped)) - others
        refusal = contributors_refusal(upd, [allowed], max_items)
        if refusal is not None:
            return refusal
        return form_refusal(upd, st.sums.shapes)

    async def _take(self, st: _DeviceRound, sender: NodeId, upd: Update) -> Refusal | None:
        """Check a child's update, then sum it (or keep it until the model is here), or pass it on."""
        refusal = self.child_refusal(st, sender, upd)
        if refusal is not None:
            st.sums.refused += 1
            return refusal
        if st.sent is not None:
            # not summing any more (too late, or not taking part): pass it on to the domain
            await self._send_quietly(st.domain, upd)
        elif upd.contributors and st.sums.shapes is None:
            if sender in st.pending:
                return "fl_update", ErrorCode.BAD_REQUEST, "a second update from this child before the model came"
            st.pending[sender] = upd  # checked against the model's shapes when it is here
            st.children_in.set()
        elif not st.sums.add(upd):
            log.info("job %s round %d: refused an update from %s (overlap)", upd.job_id, upd.round, sender)
        else:
            st.children_in.set()
        return None

    async def on_update(self, m: Inbound[Update]) -> None:
        upd = m.body
        key = (upd.job_id, upd.round)
        st = self.rounds.get(key)
        if st is None:
            # no RoundStart for it here (yet): nothing to check it against, so it is neither summed nor
            # passed on; one per sender is kept for a round ahead of the newest seen
            newest = max((k[1] for k in self.rounds if k[0] == upd.job_id), default=-1)
            if upd.job_id in self.joined and upd.round > newest:
                early = self._early.setdefault(key, {})
                if m.source not in early and sum(len(e) for e in self._early.values()) < _EARLY_KEPT:
                    early[m.source] = upd
            return
        refusal = await self._take(st, m.source, upd)
        if refusal is not None:
            await refuse(m, refusal)

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
