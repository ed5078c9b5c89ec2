"""Federated jobs between in-process Nodes over loopback WebSockets.

A domain node runs the example job (shortened) and 4-6 device nodes train
logistic regression on slices of the handwritten-digits data. Covered: every
device takes part in every round and nothing is refused; status and
checkpoints; a restarted domain resumes after its last checkpoint; a device
that turns metered or is unplugged leaves at the next round; a relay that dies
during upward aggregation loses none of its subtree's updates and none is
counted twice (updates re-routed around a dead relay are added last, only when
no aggregate already holds them).

The tests reach into the nodes (wrapping ``FlDomain._round``/``_gather``/
``on_update`` and ``FlDevice.on_round_start``/``_send_up``) only to record what
happened and to pick the moment of a fault; the federated logic runs as is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edgeagent.fl import JobSpec, LogReg, load_job, load_model
from edgeagent.identity import Identity
from edgeagent.netcost.battery import BatteryState
from edgeagent.netcost.detect import NetInfo
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import NodeId, RoundStart, Update
from tests.conftest import until as _until
from tests.procs import free_port

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_JOB = ROOT / "configs" / "job.example.toml"


# -- helpers ------------------------------------------------------------------------------------------------


def _digits(tmp: Path, n: int) -> tuple[list[Path], Path]:
    """The digits data (x/16 as float32), 300 held out, the rest split over ``n`` devices; .npz paths."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:300], order[300:]
    tpath = tmp / "test.npz"
    np.savez(tpath, x=x[test], y=y[test])
    paths = []
    for i, part in enumerate(np.array_split(train, n)):
        p = tmp / f"data-{i}.npz"
        np.savez(p, x=x[part], y=y[part])
        paths.append(p)
    return paths, tpath


def _samples(path: Path) -> int:
    with np.load(path) as z:
        return len(z["y"])


def _spec(test_data: Path, **kw: Any) -> JobSpec:
    base = load_job(EXAMPLE_JOB)
    kw.setdefault("join_wait_s", 3.0)
    kw.setdefault("round_deadline_s", 10.0)
    return dataclasses.replace(base, test_data=test_data, **kw)


def _wifi(metered: bool = False) -> NetInfo:
    kind = "cellular" if metered else "wifi"
    return NetInfo("test0", kind, metered, 2.0 if metered else 0.0, "EUR", "test", "test")


class Cluster:
    """A domain and its devices, all in this process; ``close`` stops whatever is still running."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.domain: Node | None = None
        self.devices: list[Node] = []
        self._nodes: list[Node] = []

    async def start_domain(
        self,
        spec: JobSpec,
        *,
        port: int = 0,
        identity: Identity | None = None,
        before_start: Callable[[Node], None] | None = None,
    ) -> Node:
        cfg = NodeConfig(
            role="domain", listen=[f"ws://127.0.0.1:{port}"], allow=None, fl_job=spec, link_probe_interval=0
        )
        node = Node(identity or Identity.generate(), self.tmp / "dom", cfg)
        self._nodes.append(node)
        if before_start is not None:
            before_start(node)
        await node.start()
        self.domain = node
        return node

    async def start_devices(self, paths: list[Path], domain_url: str, **cfg: Any) -> list[Node]:
        for i, p in enumerate(paths):
            config = NodeConfig(
                listen=["ws://127.0.0.1:0"], domain=domain_url, allow=None, fl_data=p, link_probe_interval=0, **cfg
            )
            node = Node(Identity.generate(), self.tmp / f"d{i}", config)
            self._nodes.append(node)
            await node.start()
            self.devices.append(node)
        return self.devices

    async def close(self) -> None:
        for node in reversed(self._nodes):
            if not node._stopped.is_set():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(node.stop(), 10)


@contextlib.asynccontextmanager
async def cluster(tmp: Path) -> AsyncIterator[Cluster]:
    c = Cluster(tmp)
    try:
        yield c
    finally:
        await c.close()


def _fl(node: Node) -> Any:
    fl = node.fl_domain if node.fl_domain is not None else node.fl_device
    assert fl is not None
    return fl


async def _rounds_done(domain: Node, count: int, timeout: float) -> list[dict[str, Any]]:
    fl = domain.fl_domain
    await _until(lambda: len(fl.history) >= count, timeout, f"{count} rounds to complete")
    return list(fl.history)


def _device_job(node: Node, job: str) -> dict[str, Any]:
    st = node.status()["fl"]
    assert st is not None and st["role"] == "device"
    jobs = [j for j in st["jobs"] if j["job"] == job]
    assert jobs, st
    return dict(jobs[0])


# -- a. every device, every round; status; checkpoints; resume -------------------------------------------


async def test_every_device_every_round_checkpoints_and_resume(tmp_path: Path) -> None:
    n = 5
    paths, tpath = _digits(tmp_path, n)
    port = free_port()
    spec = _spec(tpath, rounds=3, min_participants=n)  # every round waits for all devices
    async with cluster(tmp_path) as c:
        dom = await c.start_domain(spec, port=port)
        url = dom.listen_urls[0]
        devices = await c.start_devices(paths, url)
        hist = await _rounds_done(dom, 3, 30)
        await asyncio.wait_for(dom.fl_domain.done.wait(), 5)

        assert [h["round"] for h in hist] == [0, 1, 2]
        for h in hist:
            assert h["participants"] == n, hist
            assert h["dropped"] == 0 and h["refused_updates"] == 0, hist
            assert "test_accuracy" in h["metrics"] and "train_accuracy" in h["metrics"]
        accs = [h["metrics"]["test_accuracy"] for h in hist]
        assert accs[-1] > 0.8, accs

        st = dom.status()["fl"]
        assert st["role"] == "domain" and st["job"] == spec.id and st["plan"] == "logreg"
        assert st["round"] == 3 and st["rounds"] == 3 and st["done"] is True
        assert st["joined"] == n and st["participants"] == n
        assert st["accuracy"] == pytest.approx(accs[-1])

        # checkpoints: a model per round and the state the domain resumes from
        jdir = tmp_path / "dom" / "fl" / spec.id
        for r in range(3):
            assert (jdir / f"round-{r}.npz").is_file()
        state = json.loads((jdir / "state.json").read_text())
        assert state["job"] == spec.id and state["next_round"] == 3 and state["history"] == hist
        last = load_model((jdir / "round-2.npz").read_bytes())
        with np.load(tpath) as test:
            tx, ty = test["x"], test["y"].astype(np.int64)
        assert LogReg().evaluate(last, tx, ty)["accuracy"] == pytest.approx(accs[-1])

        # every device saw the results (the last one says done)
        await _until(lambda: all(_device_job(d, spec.id)["done"] for d in devices), 5, "the devices to see the end")
        for d in devices:
            job = _device_job(d, spec.id)
            assert job["done"] is True and job["not_eligible"] is None and job["round"] == 2
            assert job["accuracy"] == pytest.approx(accs[-1])

        # restart: the same identity and state, a job with more rounds -> resumes at round 3 from round-2.npz
        ident = dom.identity
        await dom.stop()
        started: list[tuple[int, list[np.ndarray]]] = []

        def record_rounds(node: Node) -> None:
            fl, orig = node.fl_domain, node.fl_domain._round

            async def _round(r: int, participants: list[NodeId]) -> None:
                started.append((r, [p.copy() for p in fl.params]))
                await orig(r, participants)

            fl._round = _round

        dom2 = await c.start_domain(
            dataclasses.replace(spec, rounds=5), port=port, identity=ident, before_start=record_rounds
        )
        assert dom2.listen_urls[0] == url
        hist2 = await _rounds_done(dom2, 5, 30)
        assert [h["round"] for h in hist2] == [0, 1, 2, 3, 4]
        assert hist2[:3] == hist
        for h in hist2[3:]:
            assert h["participants"] == n and h["refused_updates"] == 0, hist2
        # the first new round is round 3 and starts from the round-2 checkpoint, not from a fresh model
        assert [r for r, _ in started] == [3, 4]
        for a, b in zip(started[0][1], last, strict=True):
            np.testing.assert_array_equal(a, b)
        assert (jdir / "round-4.npz").is_file()
        assert json.loads((jdir / "state.json").read_text())["next_round"] == 5


async def test_domain_restarted_mid_job_resumes_with_the_same_devices(tmp_path: Path) -> None:
    n = 4
    paths, tpath = _digits(tmp_path, n)
    port = free_port()
    spec = _spec(tpath, rounds=3, min_participants=n, join_wait_s=1.0)
    async with cluster(tmp_path) as c:
        dom = await c.start_domain(spec, port=port)
        devices = await c.start_devices(paths, dom.listen_urls[0])
        await _rounds_done(dom, 1, 20)
        ident = dom.identity
        await dom.stop()  # mid-job: at least one round is still to run
        k = json.loads((tmp_path / "dom" / "fl" / spec.id / "state.json").read_text())["next_round"]
        assert 1 <= k < 3
        dom2 = await c.start_domain(spec, port=port, identity=ident)
        await _until(lambda: all(ident.node_id in d.links for d in devices), 10, "the devices to re-link")
        with contextlib.suppress(AssertionError):
            await _rounds_done(dom2, k + 1, 3)
        still_joined = [spec.id in d.fl_device.joined for d in devices]
        hist = dom2.fl_domain.history
        assert len(hist) > k, (
            f"no round after the restart: the devices believe they joined ({still_joined}), "
            f"the restarted domain knows {len(dom2.fl_domain.joined)} participants"
        )
        assert hist[k]["round"] == k and hist[k]["participants"] == n, hist


# -- b. a device that turns metered or is unplugged leaves at the next round -------------------------------


def _current_tree0(dom: Node) -> Any:
    """Tree 0 of the payload forest of the round the domain is running (updates go up this tree)."""
    pid = list(dom.payloads.plans)[-1]
    return dom.payloads.plans[pid].forest.trees[0]


class DomainLog:
    """What the domain did: every round attempt (number, participants) and every round's sum.

    With ``first_round`` set, round 0 waits for that many devices to join (min_participants is that
    number until the first round's participants are gathered, then the job's own again), so a device
    that links a little late under load does not miss round 0.
    """

    def __init__(self, first_round: int | None = None) -> None:
        self.first_round = first_round
        self.attempts: list[tuple[int, list[NodeId]]] = []
        self.sums: list[Any] = []  # _RoundState objects, one per attempt that received an update
        self.updates: list[tuple[int, NodeId, frozenset[NodeId]]] = []  # (round, sender, contributors)

    def install(self, node: Node) -> None:
        fl = node.fl_domain
        orig_round = fl._round

        async def _round(r: int, participants: list[NodeId]) -> None:
            self.attempts.append((r, list(participants)))
            await orig_round(r, participants)

        async def on_update(m: Any) -> None:  # seen before the handler runs
            rs = fl.round
            if rs is not None and all(x is not rs for x in self.sums):
                self.sums.append(rs)
            self.updates.append((m.body.round, m.source, frozenset(m.body.contributors)))

        fl._round = _round
        node.intercept(Update, on_update)
        if self.first_round is not None:
            orig_gather, job_min = fl._gather, fl.spec.min_participants
            fl.spec = dataclasses.replace(fl.spec, min_participants=self.first_round)

            async def _gather() -> list[NodeId]:
                try:
                    return list(await orig_gather())
                finally:
                    fl.spec = dataclasses.replace(fl.spec, min_participants=job_min)

            fl._gather = _gather


async def _run_leaving(tmp: Path, cause: str, who: str) -> dict[str, Any]:
    """Four devices, three rounds; as round 1's RoundStart reaches it, one device (a leaf or the relay of
    tree 0) turns metered (the node adopts a new NetInfo and re-registers, as on a network change) or is
    unplugged (its battery callable says not charging; the job requires charging)."""
    n = 4
    paths, tpath = _digits(tmp, n)
    elig = dataclasses.replace(load_job(EXAMPLE_JOB).eligibility, unmetered=True, charging=cause == "unplugged")
    spec = _spec(tpath, rounds=3, round_deadline_s=2.0, eligibility=elig)
    switch_round = 1
    power: dict[NodeId, BatteryState] = {}
    victim: list[NodeId] = []
    log = DomainLog(first_round=n)
    async with cluster(tmp) as c:
        dom = await c.start_domain(spec, before_start=log.install)
        devices = await c.start_devices(paths, dom.listen_urls[0], net_probe=_wifi, probe_interval=3600)
        me = dom.identity.node_id
        by_id = {d.identity.node_id: d for d in devices}
        for d in devices:
            nid = d.identity.node_id
            power[nid] = BatteryState(80.0, True, "test")
            d.fl_device.battery = lambda nid=nid: power[nid]

            async def on_round_start(m: Any, d: Node = d) -> None:  # before the handler runs
                env = m.env
                if env.body.round == switch_round and not victim:
                    tree = _current_tree0(dom)
                    (top,) = tree.children[me]  # the domain's one child in tree 0: a relay
                    leaves = [x for x in tree.children[top] if not tree.children.get(x)]  # leaves right under it
                    victim.append(top if who == "relay" else leaves[0])
                if env.body.round == switch_round and victim[0] == d.identity.node_id:
                    if cause == "metered":
                        assert d.network.apply(_wifi(metered=True))
                        d.spawn(d.network.readvertise())  # what the network watch does on a change
                    else:
                        power[d.identity.node_id] = BatteryState(80.0, False, "test")

            d.intercept(RoundStart, on_round_start)

        hist = await _rounds_done(dom, 3, 25)
        v = by_id[victim[0]]
        others = [d for d in devices if d is not v]
        await _until(lambda: all(_device_job(d, spec.id)["done"] for d in others), 5, "the others to see the end")
        return {
            "n": n,
            "spec": spec,
            "hist": hist,
            "log": log,
            "victim": victim[0],
            "victim_job": _device_job(v, spec.id),
            "victim_metered": v.link_options.metered,
            "others": {d.identity.node_id: _device_job(d, spec.id) for d in others},
            "left": set(dom.fl_domain.left),
        }


@pytest.mark.parametrize(("cause", "who"), [("metered", "leaf"), ("unplugged", "relay")])
async def test_device_that_becomes_ineligible_stops_taking_part(tmp_path: Path, cause: str, who: str) -> None:
    out = await _run_leaving(tmp_path, cause, who)
    n, hist, log, v = out["n"], out["hist"], out["log"], out["victim"]
    assert hist[0]["participants"] == n
    # from the switch on, the device's update is never in a round's sum, and it is never asked again after it left
    for rs in log.sums:
        if rs.number >= 1:
            assert v not in rs.sums.contributors
    assert v in out["left"]
    assert [r for r, parts in log.attempts if v in parts] == [0, 1]  # round 1's RoundStart was its last
    last = [rs for rs in log.sums if rs.number == 2]
    assert len(last) == 1 and last[0].sums.contributors == set(out["others"]), hist
    assert hist[-1]["round"] == 2 and hist[-1]["participants"] == n - 1 and hist[-1]["refused_updates"] == 0
    # it says why in status --json; the others finished the job
    job = out["victim_job"]
    assert job["joined"] is False
    assert job["not_eligible"] and ("metered" if cause == "metered" else "not charging") in job["not_eligible"]
    assert out["victim_metered"] is (cause == "metered")
    for other in out["others"].values():
        assert other["done"] is True and other["not_eligible"] is None


@pytest.mark.parametrize(("cause", "who"), [("metered", "leaf"), ("unplugged", "relay")])
async def test_the_round_after_a_device_leaves_counts_everyone_else(tmp_path: Path, cause: str, who: str) -> None:
    out = await _run_leaving(tmp_path, cause, who)
    n, hist, log = out["n"], out["hist"], out["log"]
    attempts = [(r, len(p)) for r, p in log.attempts]
    assert attempts == [(0, n), (1, n), (2, n - 1)], (attempts, hist)  # no round repeated
    assert [h["participants"] for h in hist] == [n, n - 1, n - 1], hist
    assert [h["dropped"] for h in hist] == [0, 1, 0], hist
    assert hist[1]["seconds"] < out["spec"].round_deadline_s, hist  # the leaver said so: nobody waits for it


# -- c. a relay killed during upward aggregation ---------------------------------------------------------


async def test_relay_killed_before_forwarding_its_children_reroute(tmp_path: Path) -> None:
    """Tree 0 is domain -> R -> the others. R dies after its children's updates reached it, before it
    forwards their sum: the children re-route their updates to the domain, each counted once."""
    n = 5
    paths, tpath = _digits(tmp_path, n)
    spec = _spec(tpath, rounds=3, round_deadline_s=2.0)
    kill_round = 1
    log = DomainLog(first_round=n)
    killed = asyncio.Event()
    seen: dict[str, Any] = {}
    async with cluster(tmp_path) as c:
        dom = await c.start_domain(spec, before_start=log.install)
        devices = await c.start_devices(paths, dom.listen_urls[0])
        me = dom.identity.node_id
        for d in devices:
            orig = d.fl_device._send_up

            async def _send_up(st: Any, d: Node = d, orig: Any = orig) -> None:
                rs = st.start
                if rs.round == kill_round and rs.expected and rs.parent == me and not killed.is_set():
                    seen["relay"] = d
                    seen["expected"] = set(rs.expected)
                    seen["had"] = set(st.sums.contributors)
                    seen["tree"] = _current_tree0(dom)
                    killed.set()
                    await asyncio.Future()  # never forwards: the test stops this node now
                await orig(st)

            d.fl_device._send_up = _send_up

        await asyncio.wait_for(killed.wait(), 20)
        relay: Node = seen["relay"]
        rid = relay.identity.node_id
        tree = seen["tree"]
        assert tree.children.get(me) == (rid,) and set(tree.children[rid]) == seen["expected"]
        assert seen["had"] == seen["expected"] | {rid}  # every child's update had reached the relay
        await asyncio.wait_for(relay.stop(), 10)

        hist = await _rounds_done(dom, 3, 20)
        survivors = {d.identity.node_id for d in devices} - {rid}
        r1 = [rs for rs in log.sums if rs.number == kill_round]
        assert len(r1) == 1, log.attempts
        assert r1[0].sums.contributors == survivors
        assert r1[0].sums.num_samples == sum(_samples(p) for p, d in zip(paths, devices, strict=True) if d is not relay)
        assert hist[kill_round]["participants"] == n - 1 and hist[kill_round]["dropped"] == 1, hist
        # the children's updates came straight from them (re-routed), each once
        direct = [(src, who) for r, src, who in log.updates if r == kill_round and src != rid]
        assert sorted(src for src, _ in direct) == sorted(survivors)
        assert all(who == frozenset({src}) for src, who in direct)
        assert not [1 for r, src, _ in log.updates if r == kill_round and src == rid]
        # the next round runs without the dead relay
        assert hist[2]["participants"] == n - 1 and hist[2]["refused_updates"] == 0, hist
        assert [len(p) for r, p in log.attempts] == [n, n, n - 1]


async def test_relay_killed_after_forwarding_loses_nothing_and_counts_nothing_twice(tmp_path: Path) -> None:
    """Tree 0 is domain -> A -> {B, C}, B -> {D} (four devices). B forwards {B, D} to A and dies; D re-routes
    its update to the domain; A (slow) forwards {A, B, C, D} after that. Every device's update reached the
    domain once (D's twice): the round should count all four (or at least the three survivors), once each."""
    n = 4
    paths, tpath = _digits(tmp_path, n)
    spec = _spec(tpath, rounds=2, round_deadline_s=2.0)
    kill_round = 1
    log = DomainLog(first_round=n)
    killed = asyncio.Event()
    seen: dict[str, Any] = {}
    async with cluster(tmp_path) as c:
        dom = await c.start_domain(spec, before_start=log.install)
        devices = await c.start_devices(paths, dom.listen_urls[0])
        me = dom.identity.node_id
        for d in devices:
            orig = d.fl_device._send_up

            async def _send_up(st: Any, d: Node = d, orig: Any = orig) -> None:
                rs = st.start
                if rs.round == kill_round and rs.expected and rs.parent != me:  # B: forwards, then dies
                    seen["b"], seen["d"] = d, set(rs.expected)
                    await orig(st)
                    killed.set()
                    return
                if rs.round == kill_round and rs.expected and rs.parent == me:  # A: slow to forward
                    with contextlib.suppress(AssertionError):
                        await _until(
                            lambda: (
                                killed.is_set()
                                and dom.fl_domain.round is not None
                                and seen["d"] <= dom.fl_domain.round.sums.contributors
                            ),
                            1.5,
                            "the re-routed update to reach the domain",
                        )
                await orig(st)

            d.fl_device._send_up = _send_up

        await asyncio.wait_for(killed.wait(), 20)
        tree = _current_tree0(dom)
        (a,) = tree.children[me]
        assert seen["b"].identity.node_id in tree.children[a] and tree.depth() == 3, tree
        await asyncio.wait_for(seen["b"].stop(), 10)
        hist = await _rounds_done(dom, 2, 15)
        attempts = [(r, len(p)) for r, p in log.attempts]
        assert attempts[:2] == [(0, n), (1, n)] and len(attempts) == 2, (attempts, hist)  # not repeated
        assert hist[1]["participants"] >= n - 1, hist
