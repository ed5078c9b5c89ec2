"""Federated-learning jobs over the payload tree: the domain's job runner (the device's side is
``device.FlDevice``, the update checks are in ``checks``; both are re-exported here).

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

Updates are checked where they are summed. The domain takes one only from a
participant of the round, naming only contributors (and dropped devices) in
the subtree the round assigned to that sender, and only in the model's float32
shapes with finite values (``aggregate.update_problem``); a device checks its
children the same way against the subtrees its ``RoundStart`` lists for them
(hyper-parameter ``_subtrees``). A refused update is answered with an ``Error``,
counted and logged by sender (``limits.refused``: ``fl_sender``,
``fl_contributors``, ``fl_update``, ``list_items``), and the round goes on
without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

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
from .aggregate import RoundSum, apply_fedavg, load_model, model_bytes
from .job import JobSpec
from .plans import load_plan

if TYPE_CHECKING:
    from ..host import Host, PayloadApi


from .checks import N_CLASSES, N_FEATURES, SUBTREES, Refusal, contributors_refusal, form_refusal, refuse, subtrees
from .device import FlDevice, load_data

__all__ = ["FlDevice", "FlDomain", "load_data"]

log = logging.getLogger(__name__)
ADVERT_EVERY: Final = 2.0
MIN_STEP_S: Final = 0.3  # each tree level above a node gets at least this long to aggregate and forward
_DECLINED_KEPT: Final = 4096  # devices whose reasons for not taking part the domain keeps
_ATTEMPTS_KEPT: Final = 4  # assignments of a round's earlier attempts whose late updates still count


# -- the domain ----------------------------------------------------------------------------------


@dataclass
class _RoundState:
    number: int  # the job's round (on the wire)
    attempt: int  # counts every try; a failed round is tried again with the same number and the same base model,
    # so a late update from the failed try is as good as a fresh one (and never counted twice)
    participants: list[NodeId]
    sums: RoundSum
    assigned: dict[NodeId, frozenset[NodeId]] = field(default_factory=dict)  # participant -> its subtree
    rerouted: list[Update] = field(default_factory=list)
    rerouted_from: set[NodeId] = field(default_factory=set)
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
        self.declined: dict[NodeId, str] = {}  # device -> why it does not take part (it said so)
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
        self._assigned: list[tuple[int, dict[NodeId, frozenset[NodeId]]]] = []  # (round, subtrees) per attempt

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
        hyper = {**s.hyperparams, N_FEATURES: s.n_features, N_CLASSES: s.n_classes}
        return JobAdvert(
            s.id, s.plan, None, hyper, s.rounds, s.min_participants, s.eligibility, int(s.round_deadline_s * 1000),
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
        elif req.declined:  # the device will not take part, and says why: reported by device
            if env.source in self.declined or len(self.declined) < _DECLINED_KEPT:
                self.declined[env.source] = req.declined[:200]
            log.info("job %s: %s does not take part: %s", self.spec.id, env.source.short(), req.declined[:200])
            reply = JoinReply(req.job_id, False, "noted")
        elif self.host.peers.is_domain(env.source):
            reply = JoinReply(req.job_id, False, "not authorised by this domain")
        elif self.spec.plan not in req.capabilities:
            reply = JoinReply(req.job_id, False, f"the device lacks plan {self.spec.plan!r}")
        else:
            self.joined[env.source] = req.num_samples
            self.declined.pop(env.source, None)
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
        rs = _RoundState(r, attempt, participants, RoundSum(spec.id, r, shapes=[tuple(p.shape) for p in self.params]))
        self.round = rs
        deadline_wall = time.time() + spec.round_deadline_s
        deadline = time.monotonic() + spec.round_deadline_s
        pid = await self.payloads.start(path, list(participants), star=self.star)
        send = asyncio.ensure_future(self.payloads.wait(pid, spec.round_deadline_s))
        tree = self.payloads.first_tree(pid)  # updates go up the first tree of the model's forest
        step = max(MIN_STEP_S, spec.round_deadline_s * 0.05)
        parents = {n: me if self.star else tree.parent.get(n, me) for n in participants}
        rs.assigned = subtrees(parents, participants)
        # updates of this round's earlier attempts (same number, same base model) may still arrive
        earlier = [a for a in self._assigned if a[0] == r][-(_ATTEMPTS_KEPT - 1) :]
        self._assigned = [*earlier, (r, rs.assigned)]
        for n in participants:
            parent = parents[n]
            depth = 1 if self.star else _depth(tree, n)
            send_by = int((deadline_wall - step * depth) * 1000)  # deeper nodes send earlier
            hyper = {**spec.hyperparams, "_send_by_ms": send_by, "_step_ms": int(step * 1000), "seed": spec.seed + r}
            kids = () if self.star else tuple(c for c in tree.children.get(n, ()) if c in participants)
            if kids:  # what each child may speak for, so this node can check their sums
                hyper[SUBTREES] = [[str(d) for d in sorted(rs.assigned[c] - {c})] for c in kids]
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
        try:
            self.params = apply_fedavg(self.params, rs.sums)
        except EdgeAgentError as exc:  # not reached: every summed update matched the model
            log.warning("job %s round %d: %s; the round is repeated", spec.id, r, exc)
            self.round = None
            return
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

    def update_refusal(self, rs: _RoundState, sender: NodeId, upd: Update) -> Refusal | None:
        """Why this round does not take ``upd`` from ``sender`` (None when it does). No clock, no I/O.

        The sender is a participant of this round (or of an earlier attempt of it); everything it
        names lies in the subtree that attempt assigned to it; it claims no more samples than its
        contributors said they hold when they joined; the arrays fit the model and are finite.
        """
        mine = [a[sender] for num, a in self._assigned if num == rs.number and sender in a]
        if not mine:
            return "fl_sender", ErrorCode.UNAUTHORIZED, f"not a participant of job {self.spec.id} round {rs.number}"
        refusal = contributors_refusal(upd, mine, self.host.limiter.limits.list_items)
        if refusal is not None:
            return refusal
        declared = sum(self.joined.get(c, 0) for c in upd.contributors)
        if upd.num_samples > declared:
            why = f"it claims {upd.num_samples} samples, its contributors joined with {declared}"
            return "fl_update", ErrorCode.BAD_REQUEST, why
        if upd.rerouted and sender in rs.rerouted_from:
            return "fl_update", ErrorCode.BAD_REQUEST, "a second re-routed update from the same sender"
        return form_refusal(upd, rs.sums.shapes)

    async def on_update(self, m: Inbound[Update]) -> None:
        upd, env = m.body, m.env
        rs = self.round
        if rs is None or upd.job_id != self.spec.id or upd.round != rs.number:
            return
        refusal = self.update_refusal(rs, env.source, upd)
        if refusal is not None:
            rs.sums.refused += 1
            await refuse(m, refusal)
            return
        if not upd.contributors and env.source in upd.dropped and env.source in rs.participants:
            self.left.add(env.source)  # the device no longer meets the job's conditions
            log.info("job %s: %s leaves (not eligible any more)", self.spec.id, env.source)
        if upd.rerouted:
            rs.rerouted_from.add(env.source)
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
            "not_eligible": {str(n): why for n, why in list(self.declined.items())[:100]},
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
