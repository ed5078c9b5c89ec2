#!/usr/bin/env python3
"""Discovery benchmark: time from an agent's start to its first authenticated link with a discovered
peer (over mDNS and via the domain registry), and idle mDNS traffic per agent per hour.

Targets: discovery-to-link <= 2 s over mDNS, <= 0.5 s via the registry; idle mDNS traffic
<= 100 kB (100,000 bytes) per agent per hour.

1. mDNS (``mdns``), in two settings, both inside namespaces this script creates:
   ``bridge``   two host namespaces joined by a bridge (an emulated LAN), ``mdns="auto"`` on eth0,
                each node in its own thread and event loop (the realistic one);
   ``loopback`` one namespace, both nodes on its ``lo`` with ``mdns="loopback"`` (as the tests do).
   Node A starts (listening) and settles; then node B starts. Timed from just before ``B.start()``:
   when ``B.start()`` returns (B's own advert probed and announced), when B first sees A's verified
   record, when A first sees B's, and when B has an authenticated link to A (stamped by wrapping the
   nodes' ``_on_discovered``/``_on_link`` hooks: no polling error). The lower NodeId dials
   (Node._on_discovered), so rounds alternate "B dials A" / "A dials B" and are also reported apart.
2. Registry (``registry``, 127.0.0.1 only, mDNS off): a domain node and an already-registered device A;
   device B starts with ``domain=url``. Timed from just before ``B.start()`` until B's registration is
   answered with A's record in ``B.registry.records``, and until B holds an authenticated link to A dialled
   by this script from the record's address: the Node does not dial registry peers by itself yet.
3. Idle traffic (``idle``): N agents (default 3) on an emulated LAN (namespaces joined by a bridge,
   ``mdns="auto"`` on each host's eth0; falls back to one namespace and ``lo``), counted with an
   AF_PACKET socket per host that sees the frames the host sends (UDP port 5353 = mDNS; IGMP and
   everything else counted apart). Phases: startup (from the start until ``--idle-settle`` s after the
   last node is up: probes, announcements, zeroconf's 4 startup browse queries at ~0/1/5/14 s and their
   answers), the idle window (``--idle-seconds``, extrapolated to an hour), shutdown (goodbyes).
   zeroconf's browser then only re-queries a service's PTR at 75 % of its 4500 s TTL (3375 s), which
   no bench window can wait for: that refresh is added as a model from packet sizes seen here.

Multicast never touches the host's interfaces: mDNS runs only inside namespaces this script creates,
and they are deleted (and every node stopped) in ``finally`` blocks. Parts that need namespaces are
skipped, saying why, when they cannot be made. Every wait is bounded.

Nodes are stopped after closing their links (see ``_stop``: Node.stop() leaves mDNS-dialled links open).

Usage: python bench/discovery.py [--quick] [--json] [--rounds-mdns N] [--rounds-registry N] [--a-settle S]
                                 [--mdns-topology both|bridge|loopback] [--idle-seconds S] [--idle-settle S]
                                 [--idle-nodes N] [--idle-topology bridge|loopback] [--skip PART]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.metadata
import json
import logging
import os
import platform
import select
import signal
import socket
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeagent.identity import Identity  # noqa: E402
from edgeagent.links.websocket import dial  # noqa: E402
from edgeagent.node import Node, NodeConfig  # noqa: E402
from edgeagent.wire import NodeId  # noqa: E402
from tests.netns import Netns, NetnsUnavailable, create_bridged, create_netns  # noqa: E402

TARGET_MDNS_LINK_S: Final = 2.0
TARGET_REGISTRY_LINK_S: Final = 0.5
TARGET_IDLE_BYTES_PER_HOUR: Final = 100_000  # 100 kB, kB = 1000 bytes (the stricter reading)

MDNS_PORT: Final = 5353
PTR_TTL_S: Final = 4500  # zeroconf's _DNS_OTHER_TTL (PTR, TXT)
HOST_TTL_S: Final = 120  # zeroconf's _DNS_HOST_TTL (A, SRV)
PTR_REFRESH_S: Final = 0.75 * PTR_TTL_S  # zeroconf browser re-queries at 75 % of the TTL
ETH_P_ALL: Final = 0x0003
PACKET_OUTGOING: Final = 4
LINK_TIMEOUT_S: Final = 15.0
PART_TIMEOUT_S: Final = 600.0

_MADE: list[Netns] = []  # every namespace this script made, deleted again at exit whatever happens
_MADE_LOCK = threading.Lock()


def _track(*spaces: Netns) -> None:
    with _MADE_LOCK:
        _MADE.extend(spaces)


def _delete(*spaces: Netns) -> None:
    for ns in spaces:
        ns.delete()
        with _MADE_LOCK:
            if ns in _MADE:
                _MADE.remove(ns)


def _delete_all() -> None:
    with _MADE_LOCK:
        left = list(_MADE)
    _delete(*left)


def _note(msg: str) -> None:
    print(f"[discovery] {msg}", file=sys.stderr, flush=True)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def _summary(values: list[float]) -> dict[str, Any]:
    """Median/min/max in milliseconds of ``values`` (seconds)."""
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "median_ms": _ms(statistics.median(values)),
        "min_ms": _ms(min(values)),
        "max_ms": _ms(max(values)),
    }


def _identities(lower_first: bool) -> tuple[Identity, Identity]:
    """Two fresh identities; the first has the lower NodeId iff ``lower_first``."""
    a, b = Identity.generate(), Identity.generate()
    return (a, b) if (a.node_id < b.node_id) == lower_first else (b, a)


class _Job:
    """A daemon thread running ``fn``; :meth:`result` joins it (bounded) and returns or re-raises."""

    def __init__(self, fn: Callable[[], Any], name: str) -> None:
        self.name = name
        self.box: dict[str, Any] = {}

        def target() -> None:
            try:
                self.box["result"] = fn()
            except BaseException as exc:  # handed to the caller
                self.box["error"] = exc

        self.thread = threading.Thread(target=target, name=name, daemon=True)
        self.thread.start()

    def result(self, timeout: float) -> Any:
        self.thread.join(timeout)
        if self.thread.is_alive():
            raise TimeoutError(f"{self.name} still running after {timeout:.0f}s")
        if "error" in self.box:
            raise self.box["error"]
        return self.box.get("result")


def _netns_job(ns: Netns, coro: Callable[[], Awaitable[Any]], timeout: float, name: str) -> _Job:
    """Run ``coro()`` on a new event loop in a thread that lives inside ``ns`` (every socket it makes stays there)."""

    def body() -> Any:
        with ns.entered():
            return asyncio.run(asyncio.wait_for(coro(), timeout))

    return _Job(body, name)


async def _stop(node: Node) -> None:
    """Close the node's links, then stop it.

    Node.stop() alone leaves links it dialled after an mDNS discovery open (it cancels the serving
    tasks first, which drop each link from ``node.links`` before its close loop runs); the peer then
    keeps a dead link and its own stop waits ~10 s for a WebSocket close that never comes.
    """
    for links in list(node.links.values()):
        for link in list(links):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.close(1001, "bench stopping"), 5)
    await node.stop()


# ============================================================================================
# 1. mDNS: start -> sees the peer -> authenticated link
# ============================================================================================


@dataclass
class _Marks:
    """First-time stamps (perf_counter, one clock for every thread) of what one round observes."""

    t: dict[str, float] = field(default_factory=dict)
    linked: asyncio.Event = field(default_factory=asyncio.Event)  # used by B's event loop only

    def stamp(self, key: str) -> None:
        self.t.setdefault(key, time.perf_counter())

    def row(self, r: int, b_dials: bool) -> dict[str, Any]:
        row: dict[str, Any] = {"round": r, "dialler": "B" if b_dials else "A"}
        t0 = self.t.get("t0")
        for key in ("b_started", "b_saw", "a_saw", "b_link", "a_link"):
            row[f"{key}_ms"] = _ms(self.t[key] - t0) if key in self.t and t0 is not None else None
        if row["b_link_ms"] is None:
            row["error"] = f"no link within {LINK_TIMEOUT_S}s"
        return row


def _observe(node: Node, other: NodeId, marks: _Marks, tag: str, *, link_event: bool) -> None:
    """Wrap ``node``'s discovery and link hooks (instance attributes, before start) to stamp ``other``."""
    on_discovered = node._on_discovered
    on_link = node._on_link

    def discovered(peer: Any) -> None:
        if peer.node_id == other:
            marks.stamp(f"{tag}_saw")
        on_discovered(peer)

    async def linked(link: Any) -> None:
        if link.peer == other:
            marks.stamp(f"{tag}_link")
            if link_event:
                marks.linked.set()
        await on_link(link)

    node._on_discovered = discovered  # type: ignore[method-assign]
    node._on_link = linked  # type: ignore[method-assign]


async def _start_b_and_wait(b: Node, marks: _Marks) -> None:
    marks.stamp("t0")
    await b.start()
    marks.stamp("b_started")
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(marks.linked.wait(), LINK_TIMEOUT_S)


async def _loopback_rounds(rounds: int, settle: float, tmp: Path) -> list[dict[str, Any]]:
    """Both nodes in this thread's namespace, mDNS on its lo."""
    out: list[dict[str, Any]] = []
    for r in range(rounds):
        b_dials = r % 2 == 0  # alternate who has the lower NodeId (the lower one dials)
        ib, ia = _identities(lower_first=b_dials)
        a = Node(ia, tmp / f"m{r}a", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
        b = Node(ib, tmp / f"m{r}b", NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback"))
        marks = _Marks()
        _observe(a, ib.node_id, marks, "a", link_event=False)
        _observe(b, ia.node_id, marks, "b", link_event=True)
        try:
            await a.start()
            await asyncio.sleep(settle)  # A's advert is announced (start() waits for that) and its browser runs
            await _start_b_and_wait(b, marks)
        finally:
            await _stop(b)
            await _stop(a)
        out.append(marks.row(r, b_dials))
        _note(f"mdns loopback round {r}: {out[-1]}")
    return out


def _bridge_round(r: int, host_a: Netns, host_b: Netns, settle: float, tmp: Path) -> dict[str, Any]:
    """A in one host namespace, B in another (each its own thread and event loop), mDNS on eth0."""
    b_dials = r % 2 == 0
    ib, ia = _identities(lower_first=b_dials)
    marks = _Marks()
    a_ready, b_done = threading.Event(), threading.Event()
    bound = settle + LINK_TIMEOUT_S + 40

    async def side_a() -> None:
        a = Node(ia, tmp / f"l{r}a", NodeConfig(listen=[f"ws://{host_a.address}:0"], allow=None, mdns="auto"))
        _observe(a, ib.node_id, marks, "a", link_event=False)
        try:
            await a.start()
            a_ready.set()
            end = time.monotonic() + bound
            while not b_done.is_set() and time.monotonic() < end:
                await asyncio.sleep(0.02)
        finally:
            await _stop(a)

    async def side_b() -> None:
        b = Node(ib, tmp / f"l{r}b", NodeConfig(listen=[f"ws://{host_b.address}:0"], allow=None, mdns="auto"))
        _observe(b, ia.node_id, marks, "b", link_event=True)
        try:
            end = time.monotonic() + 30
            while not a_ready.is_set() and time.monotonic() < end:
                await asyncio.sleep(0.02)
            if a_ready.is_set():
                await asyncio.sleep(settle)
                await _start_b_and_wait(b, marks)
        finally:
            with contextlib.suppress(Exception):
                await _stop(b)
            b_done.set()

    job_a = _netns_job(host_a, side_a, bound, f"lan-a{r}")
    job_b = _netns_job(host_b, side_b, bound, f"lan-b{r}")
    try:
        job_b.result(bound + 30)
    finally:
        b_done.set()
        job_a.result(bound + 30)
    row = marks.row(r, b_dials)
    _note(f"mdns bridge round {r}: {row}")
    return row


def _mdns_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    def col(key: str, dialler: str | None = None) -> list[float]:
        return [
            row[key] / 1000
            for row in rows
            if row.get(key) is not None and (dialler is None or row["dialler"] == dialler)
        ]

    return {
        key: {"all": _summary(col(key)), "B_dials": _summary(col(key, "B")), "A_dials": _summary(col(key, "A"))}
        for key in ("b_started_ms", "b_saw_ms", "a_saw_ms", "b_link_ms")
    }


def run_mdns(rounds: int, settle: float, topology: str) -> dict[str, Any]:
    """``topology``: "loopback" (one namespace, both on its lo) or "bridge" (two hosts on an emulated LAN)."""
    made: list[Netns] = []
    try:
        if topology == "loopback":
            made.append(create_netns("ea-bdisc", address="10.203.0.1"))
        else:
            switch, hosts = create_bridged(2, prefix="ea-bdlan", subnet="10.206.0")
            made.extend([switch, *hosts])
        _track(*made)
    except (NetnsUnavailable, RuntimeError) as exc:
        return {"skipped": f"network namespaces cannot be made (mDNS must stay off the host's interfaces): {exc}"}
    try:
        with tempfile.TemporaryDirectory(prefix="ea-bdisc-") as tmp:
            if topology == "loopback":
                where = "one namespace created by this script, mDNS on its lo (127.0.0.1), both nodes in one loop"
                job = _netns_job(made[0], lambda: _loopback_rounds(rounds, settle, Path(tmp)), PART_TIMEOUT_S, "mdns")
                rows = job.result(PART_TIMEOUT_S + 30)
            else:
                where = "two host namespaces on a bridge (emulated LAN), mdns=auto on eth0, one thread+loop per node"
                deadline = time.monotonic() + PART_TIMEOUT_S
                rows = []
                for r in range(rounds):
                    if time.monotonic() > deadline:
                        break
                    rows.append(_bridge_round(r, made[1], made[2], settle, Path(tmp)))
    finally:
        _delete(*made)
    return {
        "where": where,
        "rounds": len(rows),
        "a_settle_s": settle,
        "failed_rounds": sum(1 for row in rows if "error" in row),
        "summary": _mdns_summary(rows),
        "rows": rows,
    }


# ============================================================================================
# 2. registry: start -> registered with the peer's record -> authenticated link dialled from it
# ============================================================================================


async def _registry_rounds(rounds: int, tmp: Path) -> dict[str, Any]:
    domain = Node(
        Identity.generate(), tmp / "domain", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], allow=None)
    )
    await domain.start()
    a: Node | None = None
    rows: list[dict[str, Any]] = []
    try:
        url = domain.listen_urls[0]
        a = Node(Identity.generate(), tmp / "a", NodeConfig(domain=url, listen=["ws://127.0.0.1:0"], allow=None))
        await a.start()
        await asyncio.wait_for(a.registered.wait(), LINK_TIMEOUT_S)
        a_id = a.identity.node_id
        for r in range(rounds + 1):  # round 0 warms up (imports, first handshakes) and is not counted
            b = Node(
                Identity.generate(), tmp / f"b{r}", NodeConfig(domain=url, listen=["ws://127.0.0.1:0"], allow=None)
            )
            row: dict[str, Any] = {"round": r, "warmup": r == 0}
            try:
                t0 = time.perf_counter()
                await b.start()
                t_started = time.perf_counter()
                await asyncio.wait_for(b.registered.wait(), LINK_TIMEOUT_S)
                t_reg = time.perf_counter()
                record = b.registry.records.get(a_id)
                if record is None:  # not in the first answer: the registry's answer did not list A
                    row["error"] = "A not in B's first peer list"
                else:
                    link = None
                    for address in record.addresses:  # the Node does not dial registry peers itself yet
                        with contextlib.suppress(Exception):
                            link = await dial(address, b.identity, b.link_options, expected_peer=a_id)
                            break
                    t_link = time.perf_counter()
                    if link is None:
                        row["error"] = f"could not dial A at {record.addresses}"
                    else:
                        row["link_cipher"] = link.cipher
                        await link.close(1000, "bench done")
                        row["link_ms"] = _ms(t_link - t0)
                        row["dial_only_ms"] = _ms(t_link - t_reg)
                row["started_ms"] = _ms(t_started - t0)
                row["registered_ms"] = _ms(t_reg - t0)
            finally:
                await b.stop()
            rows.append(row)
            _note(f"registry round {r}: {row}")
    finally:
        if a is not None:
            await a.stop()
        await domain.stop()
    counted = [row for row in rows if not row["warmup"]]

    def col(key: str) -> list[float]:
        return [row[key] / 1000 for row in counted if row.get(key) is not None]

    return {
        "where": "127.0.0.1 only, mDNS off, in-process nodes",
        "rounds": rounds,
        "failed_rounds": sum(1 for row in counted if "error" in row),
        "summary": {key: _summary(col(key)) for key in ("started_ms", "registered_ms", "dial_only_ms", "link_ms")},
        "rows": rows,
        "note": "the link is dialled by this benchmark from the registry record's addresses "
        "(edgeagent.links.websocket.dial with expected_peer); Node does not auto-dial registry peers yet",
    }


def run_registry(rounds: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="ea-breg-") as tmp:
        return asyncio.run(asyncio.wait_for(_registry_rounds(rounds, Path(tmp)), PART_TIMEOUT_S))


# ============================================================================================
# 3. idle mDNS traffic
# ============================================================================================


@dataclass
class _Frame:
    t: float
    host: int  # index of the capturing host; -1 when one capture serves every node (loopback)
    frame_len: int
    ip_len: int
    kind: str  # probe | query | response | igmp | other


def _classify(frame: bytes) -> tuple[str, int]:
    """(kind, IP datagram length) of one captured Ethernet(-like) frame."""
    if len(frame) < 34:
        return "other", max(0, len(frame) - 14)
    ethertype = int.from_bytes(frame[12:14], "big")
    udp: bytes | None = None
    if ethertype == 0x0800:
        ip = frame[14:]
        ihl = (ip[0] & 0x0F) * 4
        ip_len = int.from_bytes(ip[2:4], "big")
        if ip[9] == 2:
            return "igmp", ip_len
        if ip[9] == 17:
            udp = ip[ihl:]
    elif ethertype == 0x86DD:
        ip = frame[14:]
        ip_len = 40 + int.from_bytes(ip[4:6], "big")
        if ip[6] == 17:
            udp = ip[40:]
    else:
        return "other", len(frame) - 14
    if udp is None or len(udp) < 20:
        return "other", ip_len
    sport, dport = int.from_bytes(udp[0:2], "big"), int.from_bytes(udp[2:4], "big")
    if MDNS_PORT not in (sport, dport):
        return "other", ip_len
    dns = udp[8:]
    flags = int.from_bytes(dns[2:4], "big")
    nscount = int.from_bytes(dns[8:10], "big")
    if flags & 0x8000:
        return "response", ip_len
    return ("probe" if nscount else "query"), ip_len


class _Capture:
    """AF_PACKET sockets (one per host namespace) counting the frames each host sends; bounded by a deadline."""

    def __init__(self) -> None:
        self.socks: list[tuple[int, socket.socket]] = []
        self.frames: list[_Frame] = []
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.drops = 0

    def add(self, ns: Netns, ifname: str, host: int) -> None:
        with ns.entered():  # the socket belongs to the namespace it was made in
            sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
        sock.bind((ifname, ETH_P_ALL))
        sock.setblocking(False)
        self.socks.append((host, sock))

    def start(self, deadline: float) -> None:
        self.thread = threading.Thread(target=self._run, args=(deadline,), name="capture", daemon=True)
        self.thread.start()

    def _run(self, deadline: float) -> None:
        by_fd = {sock.fileno(): (host, sock) for host, sock in self.socks}
        while not self.stop.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select(list(by_fd), [], [], 0.2)
            now = time.monotonic()
            for fd in ready:
                host, sock = by_fd[fd]
                for _ in range(256):  # drain what is queued, bounded
                    try:
                        data, addr = sock.recvfrom(65536)
                    except BlockingIOError:
                        break
                    if addr[2] != PACKET_OUTGOING:  # count each frame once, where it leaves its sender
                        continue
                    kind, ip_len = _classify(data)
                    self.frames.append(_Frame(now, host, len(data), ip_len, kind))

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(5)
        for _, sock in self.socks:
            sock.close()


@dataclass
class _HostCtl:
    """Shared between the orchestrator and one host thread."""

    stop: threading.Event = field(default_factory=threading.Event)
    started: list[float] = field(default_factory=list)  # monotonic, one per node up
    snapshot: list[tuple[int, int]] = field(default_factory=list)  # (mDNS peers, linked peers) per node
    error: str | None = None
    done: threading.Event = field(default_factory=threading.Event)


async def _host_main(configs: list[NodeConfig], tmp: Path, ctl: _HostCtl, deadline: float) -> None:
    nodes = [Node(Identity.generate(), tmp / f"n{i}", cfg) for i, cfg in enumerate(configs)]
    up: list[Node] = []
    try:
        for node in nodes:
            await node.start()
            up.append(node)
            ctl.started.append(time.monotonic())
        while not ctl.stop.is_set() and time.monotonic() < deadline:
            ctl.snapshot = [(len(n.network.mdns.peers), len(n.links)) for n in nodes]
            await asyncio.sleep(0.1)
    finally:
        for node in up:
            with contextlib.suppress(Exception):
                await _stop(node)


def _host_thread(ns: Netns, configs: list[NodeConfig], tmp: Path, ctl: _HostCtl, deadline: float) -> None:
    try:
        with ns.entered():
            asyncio.run(asyncio.wait_for(_host_main(configs, tmp, ctl, deadline), deadline - time.monotonic() + 10))
    except BaseException as exc:
        ctl.error = f"{type(exc).__name__}: {exc}"
    finally:
        ctl.done.set()


def _make_lan(count: int, topology: str) -> tuple[str, list[Netns], list[Netns], str]:
    """(topology, namespaces to delete, host namespaces, why a fallback happened)."""
    why = ""
    if topology == "bridge":
        try:
            switch, hosts = create_bridged(count, prefix="ea-bidle", subnet="10.204.0")
            return "bridge", [switch, *hosts], hosts, ""
        except (NetnsUnavailable, RuntimeError) as exc:
            why = f"bridged namespaces failed ({exc}); fell back to one namespace's lo"
    ns = create_netns("ea-bidle", address="10.205.0.1")  # raises NetnsUnavailable: the caller skips
    return "loopback", [ns], [ns], why


def run_idle(nodes: int, settle: float, window: float, topology: str) -> dict[str, Any]:
    try:
        topo, made, hosts, why = _make_lan(nodes, topology)
        _track(*made)
    except NetnsUnavailable as exc:
        return {"skipped": f"network namespaces cannot be made (mDNS must stay off the host's interfaces): {exc}"}
    capture = _Capture()
    ctls: list[_HostCtl] = []
    threads: list[threading.Thread] = []
    deadline = time.monotonic() + 60 + settle + window + 30
    try:
        with tempfile.TemporaryDirectory(prefix="ea-bidle-") as tmp:
            if topo == "bridge":
                plan = [(ns, [NodeConfig(listen=[f"ws://{ns.address}:0"], allow=None, mdns="auto")]) for ns in hosts]
                for i, ns in enumerate(hosts):
                    capture.add(ns, "eth0", i)
            else:
                cfg = [NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, mdns="loopback") for _ in range(nodes)]
                plan = [(hosts[0], cfg)]
                capture.add(hosts[0], "lo", -1)
            capture.start(deadline)
            t_begin = time.monotonic()
            for i, (ns, cfgs) in enumerate(plan):
                ctl = _HostCtl()
                ctls.append(ctl)
                th = threading.Thread(
                    target=_host_thread,
                    args=(ns, cfgs, Path(tmp) / f"h{i}", ctl, deadline),
                    name=f"host{i}",
                    daemon=True,
                )
                threads.append(th)
                th.start()
            while sum(len(c.started) for c in ctls) < nodes and time.monotonic() < t_begin + 30:
                if any(c.error for c in ctls):
                    break
                time.sleep(0.05)
            errors = [c.error for c in ctls if c.error]
            if errors or sum(len(c.started) for c in ctls) < nodes:
                return {"skipped": f"idle nodes did not start: {errors or 'timeout'}", "topology": topo}
            t_up = max(t for c in ctls for t in c.started)
            t_settled = t_up + settle
            time.sleep(max(0.0, t_settled - time.monotonic()))
            snap_settled = [s for c in ctls for s in c.snapshot]
            t_end = t_settled + window
            while time.monotonic() < t_end:
                time.sleep(min(1.0, max(0.0, t_end - time.monotonic())))
            snap_end = [s for c in ctls for s in c.snapshot]
            for c in ctls:
                c.stop.set()
            for c in ctls:
                c.done.wait(max(0.1, deadline - time.monotonic()))
            time.sleep(0.5)  # let the goodbyes be captured
            t_stopped = time.monotonic()
    finally:
        for c in ctls:
            c.stop.set()
        for th in threads:
            th.join(15)
        capture.close()
        _delete(*made)
    return _idle_report(
        capture.frames,
        topo,
        why,
        nodes,
        settle,
        window,
        t_begin,
        t_up,
        t_settled,
        t_end,
        t_stopped,
        snap_settled,
        snap_end,
    )


def _idle_report(
    frames: list[_Frame],
    topo: str,
    why: str,
    nodes: int,
    settle: float,
    window: float,
    t_begin: float,
    t_up: float,
    t_settled: float,
    t_end: float,
    t_stopped: float,
    snap_settled: list[tuple[int, int]],
    snap_end: list[tuple[int, int]],
) -> dict[str, Any]:
    mdns_kinds = ("probe", "query", "response")
    phases = {"startup": (t_begin, t_settled), "idle": (t_settled, t_end), "shutdown": (t_end, t_stopped + 1)}

    def pick(phase: str, kinds: tuple[str, ...], host: int | None = None) -> list[_Frame]:
        lo, hi = phases[phase]
        return [f for f in frames if lo <= f.t < hi and f.kind in kinds and (host is None or f.host == host)]

    def per_kind(sel: list[_Frame]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for f in sel:
            k = out.setdefault(f.kind, {"packets": 0, "ip_bytes": 0})
            k["packets"] += 1
            k["ip_bytes"] += f.ip_len
        return out

    phase_totals: dict[str, Any] = {}
    for phase in phases:
        sel = pick(phase, mdns_kinds)
        phase_totals[phase] = {
            "mdns_ip_bytes_all_agents": sum(f.ip_len for f in sel),
            "mdns_frame_bytes_all_agents": sum(f.frame_len for f in sel),
            "mdns_packets_all_agents": len(sel),
            "by_kind": per_kind(sel),
            "igmp_ip_bytes_all_agents": sum(f.ip_len for f in pick(phase, ("igmp",))),
            "other_ip_bytes_all_agents": sum(f.ip_len for f in pick(phase, ("other",))),
        }
        if topo == "bridge":
            phase_totals[phase]["mdns_ip_bytes_per_host"] = [
                sum(f.ip_len for f in pick(phase, mdns_kinds, h)) for h in range(nodes)
            ]
    idle_total = phase_totals["idle"]["mdns_ip_bytes_all_agents"]
    sent_per_agent_h = idle_total / nodes / window * 3600
    recv_per_agent_h = idle_total * (nodes - 1) / nodes / window * 3600  # multicast reaches every other agent
    startup_per_agent = phase_totals["startup"]["mdns_ip_bytes_all_agents"] / nodes
    shutdown_per_agent = phase_totals["shutdown"]["mdns_ip_bytes_all_agents"] / nodes
    # zeroconf's steady state (not observable in the window): per agent and 3375 s cycle, at most one PTR
    # query for each of its (nodes - 1) peers (known-answer list inside) and one full answer about itself
    queries = [f.ip_len for f in frames if f.kind == "query"]
    responses = [f.ip_len for f in frames if f.kind == "response" and phases["startup"][0] <= f.t < t_end]
    q_size = max(queries, default=0)
    r_size = max(responses, default=0)
    cycles_h = 3600 / PTR_REFRESH_S
    refresh_model_h = cycles_h * ((nodes - 1) * q_size + r_size)
    steady_h = sent_per_agent_h + refresh_model_h
    first_hour = startup_per_agent + sent_per_agent_h * (3600 - (t_settled - t_begin)) / 3600 + refresh_model_h
    return {
        "topology": topo,
        "fallback_reason": why or None,
        "agents": nodes,
        "where": "bridge: one namespace per agent on a bridge, mdns=auto on eth0, frames counted where they "
        "leave each host"
        if topo == "bridge"
        else "one namespace, every agent on its lo (mdns=loopback), frames counted once as they leave lo",
        "settle_s": settle,
        "window_s": window,
        "startup_phase_s": round(t_settled - t_begin, 1),
        "agents_up_after_s": round(t_up - t_begin, 2),
        "mdns_peers_and_links_at_window_start": snap_settled,
        "mdns_peers_and_links_at_window_end": snap_end,
        "phases": phase_totals,
        "bytes_unit": "IP datagram bytes (IP+UDP+DNS headers); add 14-18 B per packet for Ethernet framing",
        "per_agent": {
            "startup_burst_bytes": round(startup_per_agent),
            "shutdown_goodbye_bytes": round(shutdown_per_agent),
            "idle_sent_bytes_per_hour_measured": round(sent_per_agent_h),
            "idle_received_bytes_per_hour_measured": round(recv_per_agent_h),
            "ptr_refresh_bytes_per_hour_modelled": round(refresh_model_h),
            "idle_non_mdns_sent_bytes_per_hour_measured": round(
                phase_totals["idle"]["other_ip_bytes_all_agents"] / nodes / window * 3600
            ),
            "idle_sent_bytes_per_hour_estimate": round(steady_h),
            "first_hour_sent_bytes_estimate": round(first_hour),
        },
        "model": {
            "ptr_refresh_every_s": PTR_REFRESH_S,
            "largest_query_ip_bytes": q_size,
            "largest_response_ip_bytes": r_size,
            "formula": "3600/3375 * ((agents-1) * largest query + largest response), an upper bound per agent; "
            "query suppression and known answers make it smaller; host records (A/SRV, TTL 120 s) are not "
            "re-queried by the browser (peers resolve once)",
            "host_record_ttl_s": HOST_TTL_S,
            "window_covers_host_ttl": t_end - t_begin > HOST_TTL_S,
        },
    }


# ============================================================================================
# report
# ============================================================================================


def _environment() -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "platform": platform.platform(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "zeroconf": version("zeroconf"),
        "websockets": version("websockets"),
    }


def _verdict(value: float | None, target: float) -> str:
    if value is None:
        return "n/a"
    return "met" if value <= target else "MISSED"


def _rows(out: dict[str, Any]) -> Iterator[tuple[str, str, str, str]]:
    for topo, label in (("bridge", "LAN/bridge"), ("loopback", "same host/lo")):
        mdns = out["mdns"].get(topo)
        if mdns is None:
            continue
        if "skipped" in mdns:
            yield f"mDNS start -> link ({label})", "skipped", f"<= {TARGET_MDNS_LINK_S:g} s", mdns["skipped"]
            continue
        s = mdns["summary"]
        c = s["b_link_ms"]["all"]
        link = c.get("median_ms")
        yield (
            f"mDNS start -> link, {label} (median)",
            f"{link} ms [{c.get('min_ms')}-{c.get('max_ms')}]",
            f"<= {TARGET_MDNS_LINK_S * 1000:g} ms",
            _verdict(None if link is None else link / 1000, TARGET_MDNS_LINK_S) + f" (n={c['n']})",
        )
        for case, what in (("B_dials", "B dials (B lower id)"), ("A_dials", "A dials (A lower id)")):
            c = s["b_link_ms"][case]
            if c["n"]:
                yield (
                    f"  {what}",
                    f"{c['median_ms']} ms [{c['min_ms']}-{c['max_ms']}]",
                    f"<= {TARGET_MDNS_LINK_S * 1000:g} ms",
                    _verdict(c["median_ms"] / 1000, TARGET_MDNS_LINK_S) + f" (n={c['n']})",
                )
        for key, what in (
            ("b_started_ms", "  B.start() returned (own probe+announce)"),
            ("b_saw_ms", "  B saw A's verified record"),
            ("a_saw_ms", "  A saw B's verified record"),
        ):
            c = s[key]["all"]
            if c["n"]:
                yield what, f"{c['median_ms']} ms [{c['min_ms']}-{c['max_ms']}]", "", f"n={c['n']}"
        if mdns["failed_rounds"]:
            yield "  failed rounds", str(mdns["failed_rounds"]), "0", "MISSED"
    reg = out["registry"]
    if "skipped" in reg:
        yield "registry start -> link", "skipped", f"<= {TARGET_REGISTRY_LINK_S:g} s", reg["skipped"]
    else:
        s = reg["summary"]
        link = s["link_ms"].get("median_ms")
        yield (
            "registry start -> link (median)",
            f"{link} ms",
            f"<= {TARGET_REGISTRY_LINK_S * 1000:g} ms",
            _verdict(None if link is None else link / 1000, TARGET_REGISTRY_LINK_S),
        )
        for key, label in (
            ("started_ms", "  B.start() returned"),
            ("registered_ms", "  registered, A's record known"),
            ("dial_only_ms", "  dial A from the record"),
            ("link_ms", "  link up (range)"),
        ):
            c = s[key]
            if c["n"]:
                yield label, f"{c['median_ms']} ms [{c['min_ms']}-{c['max_ms']}]", "", f"n={c['n']}"
        if reg["failed_rounds"]:
            yield "  failed rounds", str(reg["failed_rounds"]), "0", "MISSED"
    idle = out["idle"]
    target = f"<= {TARGET_IDLE_BYTES_PER_HOUR:,} B/h"
    if "skipped" in idle:
        yield "idle mDNS per agent", "skipped", target, idle["skipped"]
    else:
        p = idle["per_agent"]
        yield (
            "idle mDNS sent/agent/h (measured)",
            f"{p['idle_sent_bytes_per_hour_measured']:,} B/h",
            target,
            _verdict(p["idle_sent_bytes_per_hour_measured"], TARGET_IDLE_BYTES_PER_HOUR),
        )
        yield (
            "  + PTR refresh (modelled)",
            f"{p['ptr_refresh_bytes_per_hour_modelled']:,} B/h",
            "",
            "",
        )
        yield (
            "idle mDNS sent/agent/h (estimate)",
            f"{p['idle_sent_bytes_per_hour_estimate']:,} B/h",
            target,
            _verdict(p["idle_sent_bytes_per_hour_estimate"], TARGET_IDLE_BYTES_PER_HOUR),
        )
        yield (
            f"  received/agent/h ({idle['agents']} agents)",
            f"{p['idle_received_bytes_per_hour_measured']:,} B/h",
            "",
            "measured",
        )
        yield (
            "  not mDNS: link keepalives etc.",
            f"{p['idle_non_mdns_sent_bytes_per_hour_measured']:,} B/h",
            "",
            f"sent/agent, {idle['agents'] - 1} idle links each; outside the mDNS target",
        )
        yield "  startup burst per agent", f"{p['startup_burst_bytes']:,} B", "", "once per start"
        yield "  goodbyes per agent", f"{p['shutdown_goodbye_bytes']:,} B", "", "once per stop"
        yield (
            "first hour sent/agent (estimate)",
            f"{p['first_hour_sent_bytes_estimate']:,} B",
            target,
            _verdict(p["first_hour_sent_bytes_estimate"], TARGET_IDLE_BYTES_PER_HOUR),
        )


def _print_table(out: dict[str, Any]) -> None:
    env = out["environment"]
    print(f"discovery benchmark ({'quick' if out['quick'] else 'full'} run, {out['elapsed_s']} s)")
    print(
        f"{env['python']} on {env['platform']} ({env['machine']}, {env['cpus']} CPUs, load {env['loadavg']}); "
        f"zeroconf {env['zeroconf']}, websockets {env['websockets']}"
    )
    rows = list(_rows(out))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    head = ("metric", "figure", "target", "verdict")
    widths = [max(w, len(h)) for w, h in zip(widths, head, strict=False)]
    print(f"{head[0]:<{widths[0]}}  {head[1]:>{widths[1]}}  {head[2]:<{widths[2]}}  {head[3]}")
    for metric, figure, target, verdict in rows:
        print(f"{metric:<{widths[0]}}  {figure:>{widths[1]}}  {target:<{widths[2]}}  {verdict}")
    reg, idle = out["registry"], out["idle"]
    for mdns in out["mdns"].values():
        if "skipped" not in mdns:
            print(
                f"mDNS: {mdns['rounds']} rounds ({mdns['where']}); A settles {mdns['a_settle_s']} s before B starts; "
                "times from just before B.start(); [min-max]"
            )
    if "skipped" not in reg:
        print(f"registry: {reg['rounds']} rounds after 1 warm-up ({reg['where']}); {reg['note']}")
    if "skipped" not in idle:
        ph = idle["phases"]
        print(
            f"idle: {idle['agents']} agents, {idle['topology']} ({idle['where']}); startup phase "
            f"{idle['startup_phase_s']} s, idle window {idle['window_s']} s; {idle['bytes_unit']}"
        )
        if idle["fallback_reason"]:
            print(f"  note: {idle['fallback_reason']}")
        for phase in ("startup", "idle", "shutdown"):
            t = ph[phase]
            kinds = ", ".join(f"{k} {v['packets']} pkt/{v['ip_bytes']} B" for k, v in sorted(t["by_kind"].items()))
            extra = f"; per host {t['mdns_ip_bytes_per_host']}" if "mdns_ip_bytes_per_host" in t else ""
            print(
                f"  {phase:<8} mDNS {t['mdns_ip_bytes_all_agents']} B in {t['mdns_packets_all_agents']} packets "
                f"({kinds or 'none'}){extra}; IGMP {t['igmp_ip_bytes_all_agents']} B; "
                f"other (links, ARP) {t['other_ip_bytes_all_agents']} B"
            )
        m = idle["model"]
        print(
            f"  model: {m['formula']}; largest query {m['largest_query_ip_bytes']} B, "
            f"largest response {m['largest_response_ip_bytes']} B"
        )
        print(
            f"  (mDNS peers, links) per agent at window start {idle['mdns_peers_and_links_at_window_start']}, "
            f"at end {idle['mdns_peers_and_links_at_window_end']}"
        )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fast smoke run (< 30 s; idle part runs alongside)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--rounds-mdns", type=int, default=8, help="mDNS rounds (alternating who dials)")
    ap.add_argument("--rounds-registry", type=int, default=10, help="registry rounds (after one warm-up)")
    ap.add_argument("--a-settle", type=float, default=1.0, help="seconds node A runs before B starts (mDNS)")
    ap.add_argument("--idle-seconds", type=float, default=120.0, help="idle measurement window (s)")
    ap.add_argument(
        "--idle-settle", type=float, default=15.0, help="seconds after the last agent is up before the window opens"
    )
    ap.add_argument("--idle-nodes", type=int, default=3, help="idle agents")
    ap.add_argument("--idle-topology", choices=("bridge", "loopback"), default="bridge")
    ap.add_argument("--mdns-topology", choices=("both", "bridge", "loopback"), default="both")
    ap.add_argument("--skip", action="append", choices=("mdns", "registry", "idle"), default=[], help="skip a part")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks: namespaces get deleted
    if args.quick:
        args.rounds_mdns = min(args.rounds_mdns, 2)
        args.rounds_registry = min(args.rounds_registry, 3)
        args.idle_seconds = min(args.idle_seconds, 8.0)
    if args.rounds_mdns < 1 or args.rounds_registry < 1 or args.idle_nodes < 2 or args.idle_seconds <= 0:
        ap.error("rounds >= 1, --idle-nodes >= 2 and --idle-seconds > 0 are required")
    started = time.perf_counter()
    out: dict[str, Any] = {"quick": args.quick, "environment": _environment()}
    idle_box: dict[str, Any] = {}

    def idle_part() -> None:
        if "idle" in args.skip:
            idle_box["r"] = {"skipped": "--skip idle"}
            return
        _note(f"idle: {args.idle_nodes} agents, settle {args.idle_settle} s, window {args.idle_seconds} s")
        t = time.perf_counter()
        try:
            idle_box["r"] = run_idle(args.idle_nodes, args.idle_settle, args.idle_seconds, args.idle_topology)
        except Exception as exc:
            idle_box["r"] = {"skipped": f"idle part failed: {type(exc).__name__}: {exc}"}
        idle_box["r"]["elapsed_s"] = round(time.perf_counter() - t, 1)

    idle_thread = threading.Thread(target=idle_part, name="idle", daemon=True)
    if args.quick:  # alongside the other parts, in its own namespaces: only CPU is shared
        idle_thread.start()
    try:
        out["mdns"] = {}
        for topo in ("bridge", "loopback") if args.mdns_topology == "both" else (args.mdns_topology,):
            if "mdns" in args.skip:
                out["mdns"][topo] = {"skipped": "--skip mdns"}
                continue
            _note(f"mdns ({topo}): {args.rounds_mdns} rounds")
            t = time.perf_counter()
            try:
                out["mdns"][topo] = run_mdns(args.rounds_mdns, args.a_settle, topo)
            except Exception as exc:
                out["mdns"][topo] = {"skipped": f"mDNS part failed: {type(exc).__name__}: {exc}"}
            out["mdns"][topo]["elapsed_s"] = round(time.perf_counter() - t, 1)
        if "registry" in args.skip:
            out["registry"] = {"skipped": "--skip registry"}
        else:
            _note(f"registry: {args.rounds_registry} rounds")
            t = time.perf_counter()
            try:
                out["registry"] = run_registry(args.rounds_registry)
            except Exception as exc:
                out["registry"] = {"skipped": f"registry part failed: {type(exc).__name__}: {exc}"}
            out["registry"]["elapsed_s"] = round(time.perf_counter() - t, 1)
        if not args.quick:
            idle_thread.start()
        if idle_thread.ident is not None:
            idle_thread.join(args.idle_settle + args.idle_seconds + 180)
    finally:
        _delete_all()  # normally nothing is left; after an interrupt, what the parts could not delete
    out["idle"] = idle_box.get("r", {"skipped": "idle part did not finish in time"})
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    out["targets"] = {
        "mdns_link_s": TARGET_MDNS_LINK_S,
        "registry_link_s": TARGET_REGISTRY_LINK_S,
        "idle_mdns_bytes_per_agent_hour": TARGET_IDLE_BYTES_PER_HOUR,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
