"""Choosing a route per message, behind a pluggable policy.

A message's :class:`Traits` say what it needs: a request that blocks for a
reply wants the lowest latency; a bulk transfer or stream of ``size`` bytes
wants the cheapest route that meets its deadline (expected time = RTT + size /
bandwidth), and never a metered hop when an unmetered route exists; pub-sub
wants a BroadcastRoute. Dead routes (link down, repeated failures, expired)
are never chosen while a live one exists; failing ones are demoted by their
health. The :class:`Router` remembers the current choice per destination and
purpose and keeps it unless a challenger is clearly better (hysteresis), and
every choice carries a reason string for logs and ``edgeagent routes``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal, Protocol

from ..wire.nodeid import NodeId
from ..wire.route import Route
from .priors import Priors
from .table import BroadcastRoute, Candidate, RouteTable

__all__ = [
    "STREAM_THRESHOLD",
    "Choice",
    "DefaultPolicy",
    "Policy",
    "Purpose",
    "Router",
    "Traits",
    "choose_mode",
    "rank",
]

Purpose = Literal["request", "bulk", "stream", "pubsub"]
PURPOSES: Final = ("request", "bulk", "stream", "pubsub")


@dataclass(frozen=True, slots=True)
class Traits:
    """What a message needs from its route."""

    purpose: Purpose = "request"
    size: int = 0  # bytes the message (or the whole transfer) moves
    deadline_s: float | None = None  # bulk/stream: finish within this many seconds

    @property
    def bulky(self) -> bool:
        return self.purpose in ("bulk", "stream")


@dataclass(frozen=True, slots=True)
class Choice:
    """The route picked for a message, with the evidence."""

    candidate: Candidate
    reason: str
    considered: int

    @property
    def link_id(self) -> str:
        return self.candidate.link_id

    @property
    def next_hop(self) -> NodeId:
        return self.candidate.path[0].dst

    def route(self, priors: Priors | None = None) -> Route:
        return self.candidate.to_route(priors)


class Policy(Protocol):
    """Picks one candidate for a message; ``current`` is the previous choice (for hysteresis)."""

    def choose(
        self, candidates: Sequence[Candidate], traits: Traits, now: float, current: Candidate | None
    ) -> Choice | None: ...


@dataclass(frozen=True)
class DefaultPolicy:
    """The rules of DESIGN s.3.

    ``hysteresis``: a challenger must beat the current route's score by this
    fraction (and requests by at least ``min_gain_ms``) before the route
    changes; a dead current route is always abandoned.
    """

    hysteresis: float = 0.2
    min_gain_ms: float = 1.0

    def choose(
        self, candidates: Sequence[Candidate], traits: Traits, now: float, current: Candidate | None
    ) -> Choice | None:
        if not candidates:
            return None
        live = [c for c in candidates if not c.dead]
        note = ""
        if not live:
            # nothing is known to work: try the least bad (the caller may succeed and revive it)
            live = list(candidates)
            note = "; every route is down or failing, trying the least bad"
        if traits.bulky:
            return self._bulk(live, traits, current, len(candidates), note)
        return self._request(live, current, len(candidates), note)

    # request-response (and pub-sub per destination): lowest expected latency, demoted by health
    def _request(self, live: list[Candidate], current: Candidate | None, n: int, note: str) -> Choice:
        def score(c: Candidate) -> float:
            return c.latency_ms / max(c.health, 0.05)

        best = min(live, key=lambda c: (score(c), c.cost_per_gb, len(c.path)))
        cur = _same(current, live)
        if cur is not None and cur is not best:
            gain = score(cur) - score(best)
            if gain < max(self.min_gain_ms, self.hysteresis * score(cur)):
                return Choice(
                    cur,
                    f"request: kept {cur.describe()} ({score(cur):.2f} ms; best alternative only {gain:.2f} ms better)"
                    + note,
                    n,
                )
        why = f"request: lowest expected latency {best.latency_ms:.2f} ms"
        if best.health < 0.999:
            why += f" (health {best.health:.2f})"
        return Choice(best, f"{why} via {best.describe()} of {n} routes" + note, n)

    # bulk and streams: cheapest route meeting the deadline; metered hops only if nothing else
    def _bulk(self, live: list[Candidate], traits: Traits, current: Candidate | None, n: int, note: str) -> Choice:
        unmetered = [c for c in live if not c.metered]
        pool = unmetered or live
        why = "bulk" if traits.purpose == "bulk" else "stream"
        if unmetered and len(unmetered) < len(live):
            why += f": {len(live) - len(unmetered)} metered route(s) excluded"
        elif not unmetered:
            why += ": only metered routes exist"
        size = traits.size
        meets = pool if traits.deadline_s is None else [c for c in pool if c.transfer_s(size) <= traits.deadline_s]
        if meets:
            best = min(meets, key=lambda c: (c.cost_per_gb, c.transfer_s(size) / max(c.health, 0.05), c.key))
            what = f"cheapest ({best.cost_per_gb:g}/GB) expected {best.transfer_s(size):.2f} s"
            if traits.deadline_s is not None:
                what += f" within the {traits.deadline_s:g} s deadline"
        else:
            best = min(pool, key=lambda c: (c.transfer_s(size), c.cost_per_gb, c.key))
            what = f"no route meets the {traits.deadline_s:g} s deadline; fastest {best.transfer_s(size):.2f} s"
        cur = _same(current, meets or pool)
        if cur is not None and cur is not best:
            t_cur, t_best = cur.transfer_s(size), best.transfer_s(size)
            cheaper = best.cost_per_gb < cur.cost_per_gb - 1e-12
            faster = t_best < (1 - self.hysteresis) * t_cur
            if not cheaper and not faster and cur.cost_per_gb <= best.cost_per_gb + 1e-12:
                return Choice(
                    cur,
                    f"{why}; kept {cur.describe()} ({t_cur:.2f} s; best alternative {t_best:.2f} s, not "
                    f"{self.hysteresis:.0%} faster)" + note,
                    n,
                )
        return Choice(best, f"{why}; {what} via {best.describe()} of {n} routes" + note, n)


def _same(current: Candidate | None, pool: Iterable[Candidate]) -> Candidate | None:
    """The candidate in ``pool`` that is the same path as ``current`` (re-evaluated), if any."""
    if current is None:
        return None
    key = current.key
    for c in pool:
        if c.key == key:
            return c
    return None


@dataclass
class Router:
    """The route table plus a policy and the current choice per (destination, purpose)."""

    table: RouteTable
    policy: Policy = field(default_factory=DefaultPolicy)
    _current: dict[tuple[NodeId, str], Choice] = field(default_factory=dict)
    selections: int = 0
    changes: int = 0

    def select(self, dst: NodeId, traits: Traits, now: float, *, exclude_first: NodeId | None = None) -> Choice | None:
        """The route for one message to ``dst``; None when this node knows no way there."""
        self.selections += 1
        cands = self.table.candidates(dst, now, exclude_first=exclude_first)
        key = (dst, traits.purpose)
        prev = self._current.get(key)
        choice = self.policy.choose(cands, traits, now, prev.candidate if prev is not None else None)
        if choice is None:
            return None
        if exclude_first is None:
            if prev is not None and prev.candidate.key != choice.candidate.key:
                self.changes += 1
            self._current[key] = choice
        return choice

    def select_broadcast(self, dsts: Iterable[NodeId], now: float) -> tuple[Route, dict[str, list[NodeId]]] | None:
        """A BroadcastRoute to every reachable destination, and the destinations grouped by first link.

        Each destination gets its request-policy route; paths that share first
        hops merge into one tree. Unreachable destinations are left out of the
        groups (the caller reports them).
        """
        chosen: list[Candidate] = []
        groups: dict[str, list[NodeId]] = {}
        dests = list(dsts)
        for d in dests:
            ch = self.select(d, Traits("pubsub"), now)
            if ch is None:
                continue
            chosen.append(ch.candidate)
            groups.setdefault(ch.link_id, []).append(d)
        if not chosen:
            return None
        reached = [d for ds in groups.values() for d in ds]
        return BroadcastRoute(reached, chosen, self.table.priors), groups

    def current(self) -> dict[tuple[NodeId, str], Choice]:
        return dict(self._current)

    def forget(self, dst: NodeId) -> None:
        for p in PURPOSES:
            self._current.pop((dst, p), None)


def rank(candidates: Iterable[Candidate], traits: Traits) -> list[Candidate]:
    """Candidates best first by the default rules (for RouteReply answers and ``edgeagent routes``)."""
    if traits.bulky:
        size = traits.size
        return sorted(
            candidates, key=lambda c: (c.dead, c.metered, c.cost_per_gb, c.transfer_s(size) / max(c.health, 0.05))
        )
    return sorted(candidates, key=lambda c: (c.dead, c.latency_ms / max(c.health, 0.05), c.cost_per_gb))


#: messages at least this large go as streams (and to many receivers as payload trees)
STREAM_THRESHOLD: Final = 4 << 20


def choose_mode(*, receivers: int, size: int, blocking: bool, threshold: int = STREAM_THRESHOLD) -> tuple[str, str]:
    """The delivery mode for one message, and why: request, message, stream, pubsub or payload-tree."""
    if receivers > 1:
        if size >= threshold:
            return "payload-tree", f"{receivers} receivers and {size} bytes: one copy down a forwarding tree"
        return "pubsub", f"{receivers} receivers: one publish, fanned out by the topic's home"
    if size >= threshold:
        return "stream", f"{size} bytes >= {threshold}: an acknowledged stream that survives route changes"
    if blocking:
        return "request", "waits for a reply: request-response over the lowest-latency route"
    return "message", "one-way and small: one envelope over the lowest-latency route"
