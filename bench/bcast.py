#!/usr/bin/env python3
"""Broadcast benchmark: one payload from a domain to N agents down a payload tree, against a star.

Setup (root): one network namespace per node, every namespace joined by a veth pair to a bridge
in a switch namespace (one emulated LAN). Addresses (``--subnets``): "shared" (default) puts every
node in 10.207.0.0/24; the domain then files all agents under one LAN group (it takes the /24 of
each peer's address) and the planner groups them as one LAN. "per-node" gives node i 10.207.i.1/16
on the same bridge: every node its own /24, so no LAN grouping (for comparison). Each node's
*upload* is shaped with ``tc`` tbf on its veth's egress inside its namespace (download is not
shaped):

* the source: ``edgeagent domain --allow AGENT ... --listen ws://10.207.0.1:7400`` at ``--rate-mbit``
  (``--auth domain``, the default: as deployed, agents' keys are made first so the domain allows exactly
  them, and each agent authorises only its domain; ``--auth open`` runs every node ``--open`` instead;
  ``--auth domain open`` interleaves both, run by run, and summarises each apart);
* 75 % "Wi-Fi" agents at ``--rate-mbit``, ``--network wifi --unmetered``;
* 25 % "cellular" agents (every 4th) at ``--cell-rate-mbit``, ``--network cellular --metered``;

all agents ``edgeagent -v run --listen ws://THEIR_ADDR:7400 --domain ws://10.207.0.1:7400`` (plus
``--open`` with ``--auth open``). Each run reports the messages the nodes refused (``refused``: their policy
gate's counts per type and their links' refusals, from ``status``) and the send result's ``repairs``.
The tbf queue is a tail-drop FIFO of ``--queue-ms`` (this kernel has no fq_codel/sfq/fq to put under
it); ``--gso off`` makes TCP hand it MTU-sized packets rather than 64 KiB GSO bursts (a short FIFO
fed 64 KiB bursts by a relay's dozen TCP flows drops a large share of packets: see the JSON's
``tbf_drops`` and ``tcp_retrans_segs``).
Every namespace runs TCP ``reno`` (``--tcp-cc``), not this host's ``bbr``: BBR v1 ignores loss and
keeps a short tail-drop queue overflowing (at N = 64 and 12.5 Mbit/s the tbf dropped 2.5 M of 4.4 M
packets and the retransmissions burnt a third of the CPU). Phones (Android) and Raspberry Pi OS run
CUBIC, which this kernel refuses in a namespace ("Operation not permitted"; only reno and bbr are
allowed); at these round trips (< 5 ms) CUBIC runs in its TCP-friendly region, which is Reno's
window growth, so Reno stands in for it.
Without root or ``ip netns`` the script says so and falls back to unshaped loopback (every node
on 127.0.0.1, own ports): the figures then show CPU limits, not the tree's network behaviour.

Per N (``--agents 16 64``) and run, fresh processes with fresh state and keys (a run never sees the
links, caches or stores of the one before): start the domain, start N agents in parallel (each one's
``started`` line awaited), wait until the domain's ``peers`` lists all N, then ``edgeagent send
FILE --state DOMAIN --wait --json`` (``--star`` for the baseline: one copy from the source to each
receiver) of ``--size-mib`` MiB of random bytes. Kinds of run, interleaved: ``tree`` (``--runs``,
medians), ``star`` (``--star-runs``; one by default: at N = 64 and 50 Mbit/s one star run takes
~11.5 min), and with ``--kill-relay`` ``kill`` runs: a tree run in which one interior relay (an
agent whose ``status`` ``payloads[0].children`` is non-empty, the one with the most children) is
SIGKILLed once the median agent holds half the payload.

How completion is timed. Each agent logs (``-v``, ms timestamps, one host clock) the moment its
last chunk is verified and the file renamed into place ("payload ID complete"); the domain logs the
moment it starts assigning ("payload ID: S bytes to N receivers"). Receiver times are the
differences: exact to the millisecond and free (no extra load on 2 cores). As a cross-check, and to
drive ``--kill-relay``, the script polls every agent's ``status`` over its control socket
(``control.sock`` in its state directory: the protocol ``edgeagent status --state DIR --json``
uses, reachable from here since Unix socket paths are not confined by network namespaces),
concurrently from this process every ``--poll`` s (0.5 s in kill runs): one request per agent
instead of one ``edgeagent`` process per agent, which at N = 64 would cost ~64 Python start-ups
per round. The poll's first "complete" sighting must agree with the log within one interval.
Tree and star runs are not polled unless ``--poll S`` is given: at N = 64 a 1 s poll cost the
agents ~5 % of the CPU and the tree ~0.07 T_LB (1.45-1.49 polled, 1.38-1.40 not); kill runs always
poll every 0.5 s (they need it), so their times include that load.

Per run: last and median receiver completion (s from the source's start), the bound
T_LB = max(S/u_src, N*S/(u_src + sum of Wi-Fi uploads)) + (ceil(log2(N+1)) - 1)*c/B_wifi
(``edgeagent.payload.planner.bound_seconds``, c = 256 KiB, cellular uploads not counted), last/T_LB,
source egress / S (the send result's ``source_wire_bytes``; also the bytes that left the source's
veth, from ``tc -s``), cellular upload / relayed bytes (send result), redundant payload bytes
(sent by source and relays beyond what the receivers stored: duplicates), tbf drops and TCP
retransmissions, and CPU: the utime+stime of every process of ours (/proc/PID/stat before and
after, plus reaped children) and the host's busy, softirq and iowait time (/proc/stat), as % of all
cores. When our processes use >= 90 % the run is CPU-bound, not network-bound: then run N = 64 at
25 Mbit/s (``--agents 16 64 --rate-mbit 50 25``); a busy host with a small share of ours means other
work competed. Each run records the edgeagent git HEAD (and uncommitted files) it ran.
Rates are nominal tc rates; TCP/IP/Ethernet headers take ~4.4 % of them, so last/T_LB >= ~1.05 is
the best reachable.

The network rule: traffic goes only to loopback or to addresses inside the namespaces this script
creates; every process is started here and ended by its PID, every namespace (and with it every
veth and the bridge) is deleted in ``finally`` blocks, also after Ctrl-C or SIGTERM; every wait is
bounded. No mDNS.

Usage: sudo .venv/bin/python bench/bcast.py [--agents 16 64] [--size-mib 64] [--rate-mbit 50 [25]]
           [--cell-rate-mbit 5] [--runs 3] [--star-runs 1] [--kill-relay] [--kill-runs 1]
           [--stripes K] [--poll 0] [--subnets shared|per-node] [--queue-ms 100] [--burst-kb 64] [--gso on|off]
           [--tcp-cc reno|host|NAME]
           [--auth domain|open ...] [--loopback] [--tmp DIR] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import resource
import secrets
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeagent.control import control_request  # noqa: E402
from edgeagent.identity import Identity  # noqa: E402
from edgeagent.payload.planner import bound_seconds  # noqa: E402
from tests.netns import Netns, NetnsUnavailable  # noqa: E402

MiB: Final = 1 << 20
CHUNK: Final = 256 * 1024  # the send default (PayloadService.send chunk_size); --chunk-kib changes it
PORT: Final = 7400
NET: Final = "10.207"  # 10.207.0.0/16: made only inside the namespaces of this script
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")
CPUS: Final = os.cpu_count() or 1
CPU_BOUND_PCT: Final = 90.0
STOP_GRACE_S: Final = 10.0
REGISTER_TIMEOUT_S: Final = 60.0

_PROCS: list[subprocess.Popen[bytes]] = []  # every process this script started (ended by PID at exit)
_NETNS: list[Netns] = []  # every namespace this script made (deleted at exit)
_LOCK = threading.Lock()


def _note(msg: str) -> None:
    print(f"[bcast] {msg}", file=sys.stderr, flush=True)


# ============================================================================================
# namespaces and shaping
# ============================================================================================


def _run(argv: list[str], timeout: float = 10.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def _ip(*args: str) -> None:
    step = _run(["ip", *args])
    if step.returncode != 0:
        raise RuntimeError(f"`ip {' '.join(args)}` failed: {step.stderr.strip()}")


def create_lan(count: int, subnets: str) -> tuple[Netns, list[Netns]]:
    """``count`` host namespaces, each joined by a veth pair to a bridge in a switch namespace.

    As ``tests.netns.create_bridged``, but addressed for ``subnets``: "shared" puts host i at
    10.207.0.(i+1)/24; "per-node" at 10.207.i.1/16, one L2 segment where every host has its own
    /24 (the domain derives a peer's LAN group from the /24 of its address). Every namespace made
    is recorded at once in ``_NETNS`` (deleted at exit, also when this fails half-way).
    """
    tag = secrets.token_hex(3)
    switch = Netns(f"ea-bcast-sw-{tag}", "")
    made = _run(["ip", "netns", "add", switch.name])
    if made.returncode != 0:
        raise NetnsUnavailable(f"`ip netns add` failed: {made.stderr.strip()}")
    with _LOCK:
        _NETNS.append(switch)
    _ip("-n", switch.name, "link", "add", "br0", "type", "bridge")
    _ip("-n", switch.name, "link", "set", "br0", "up")
    hosts = []
    for i in range(count):
        address, plen = (f"{NET}.0.{i + 1}", 24) if subnets == "shared" else (f"{NET}.{i}.1", 16)
        host = Netns(f"ea-bcast-{i}-{tag}", address)
        _ip("netns", "add", host.name)
        with _LOCK:
            _NETNS.append(host)
        hosts.append(host)
        veth = f"vb{tag}{i}"
        _ip("link", "add", veth, "type", "veth", "peer", "name", f"{veth}s")
        _ip("link", "set", veth, "netns", host.name)
        _ip("link", "set", f"{veth}s", "netns", switch.name)
        _ip("-n", host.name, "link", "set", veth, "name", "eth0")
        _ip("-n", host.name, "addr", "add", f"{address}/{plen}", "dev", "eth0")
        _ip("-n", host.name, "link", "set", "eth0", "up")
        _ip("-n", host.name, "link", "set", "lo", "up")
        _ip("-n", switch.name, "link", "set", f"{veth}s", "master", "br0")
        _ip("-n", switch.name, "link", "set", f"{veth}s", "up")
    return switch, hosts


class Lan:
    """Where the nodes live: host 0 is the domain, host i >= 1 is agent i-1."""

    def __init__(self, count: int, force_loopback: bool, subnets: str = "shared") -> None:
        self.hosts: list[Netns] = []
        self.mode = "loopback"
        self.why = ""
        if force_loopback:
            self.why = "--loopback given"
            return
        if os.geteuid() != 0:
            self.why = "not root: network namespaces and tc need root"
            return
        if shutil.which("ip") is None or shutil.which("tc") is None:
            self.why = "`ip` or `tc` (iproute2) not found"
            return
        try:
            _, hosts = create_lan(count, subnets)
        except (NetnsUnavailable, RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.why = f"cannot make bridged network namespaces: {exc}"
            self.delete()
            return
        self.hosts = hosts
        self.mode = "netns"

    @property
    def shaped(self) -> bool:
        return self.mode == "netns"

    def listen_url(self, i: int) -> str:
        return f"ws://{self.hosts[i].address}:{PORT}" if self.shaped else "ws://127.0.0.1:0"

    def argv(self, i: int, argv: list[str]) -> list[str]:
        # `ip netns exec` setns()es and then execs argv: the PID we get is the Python process's
        return self.hosts[i].argv(argv) if self.shaped else argv

    def set_tcp_cc(self, cc: str) -> str:
        """Every host namespace's TCP congestion control (a namespace inherits the host's otherwise).

        Returns what the namespaces use afterwards ("" unshaped); see the module docstring for why
        the default is ``reno`` rather than this host's ``bbr``.
        """
        if not self.shaped:
            return ""
        for host in self.hosts:
            path = "/proc/sys/net/ipv4/tcp_congestion_control"
            step = _run(["ip", "netns", "exec", host.name, "sh", "-c", f"echo {cc} > {path} && cat {path}"])
            if step.returncode != 0:
                raise RuntimeError(f"cannot set TCP congestion control {cc!r} in {host.name}: {step.stderr.strip()}")
        got = _run(["ip", "netns", "exec", self.hosts[0].name, "cat", "/proc/sys/net/ipv4/tcp_congestion_control"])
        return got.stdout.strip()

    def shape(self, i: int, mbit: float, queue_ms: float = 100.0, gso: bool = True, burst_kb: float = 64.0) -> None:
        """tbf on host i's eth0 egress (its upload): ``mbit`` Mbit/s (tc: 1 mbit = 1e6 bit/s).

        ``queue_ms``: tbf ``latency`` (its tail-drop queue holds that long at the rate; this kernel
        has no fq_codel/sfq to put under it). ``gso=False`` sets eth0's ``gso_max_segs`` to 1, so
        TCP hands the queue MTU-sized packets instead of 64 KiB bursts that overflow a short queue.
        ``burst_kb``: tbf's bucket. 64 KiB (default) lets a 64 KiB GSO packet through whole, as Wi-Fi
        sends up to 64 KiB per transmit opportunity (A-MPDU aggregation); a bucket smaller than a
        packet makes tbf cut it into MTU-sized ones, and each costs the receiver a wake-up and a
        read (with 64 processes on 2 cores, the CPU then limits, not the network).
        """
        if not self.shaped:
            return
        burst = int(burst_kb * 1024)
        ns = self.hosts[i].name
        argv = ["tc", "-n", ns, "qdisc", "replace", "dev", "eth0", "root", "tbf"]
        argv += ["rate", f"{mbit:g}mbit", "burst", str(burst), "latency", f"{queue_ms:g}ms"]
        steps = [argv, ["ip", "-n", ns, "link", "set", "eth0", "gso_max_segs", "1" if not gso else "65535"]]
        for step_argv in steps:
            step = _run(step_argv)
            if step.returncode != 0:
                raise RuntimeError(f"`{' '.join(step_argv)}` failed: {step.stderr.strip()}")

    def tx_stats(self, count: int) -> list[dict[str, int]]:
        """Root qdisc counters of eth0 (bytes/packets that left, drops) for hosts 0..count-1."""
        out = []
        for i in range(count):
            row = {"bytes": 0, "packets": 0, "drops": 0}
            if self.shaped:
                res = _run(["tc", "-n", self.hosts[i].name, "-s", "-j", "qdisc", "show", "dev", "eth0"])
                with contextlib.suppress(ValueError, IndexError, KeyError):
                    q = next(q for q in json.loads(res.stdout) if q.get("root"))
                    row = {"bytes": int(q["bytes"]), "packets": int(q["packets"]), "drops": int(q["drops"])}
            out.append(row)
        for i, segs in enumerate(self._retrans(count)):
            out[i]["retrans_segs"] = segs
        return out

    def _retrans(self, count: int) -> list[int]:
        """TCP RetransSegs of hosts 0..count-1 (/proc/thread-self/net/snmp read inside each namespace).

        Done in a helper thread that enters each namespace in turn (setns), so this thread never moves.
        """
        got = [0] * count
        if not self.shaped:
            return got

        def body() -> None:
            for i in range(count):
                with contextlib.suppress(Exception), self.hosts[i].entered():
                    lines = [ln.split() for ln in Path("/proc/thread-self/net/snmp").read_text().splitlines()]
                    tcp = [ln for ln in lines if ln and ln[0] == "Tcp:"]
                    got[i] = int(tcp[1][tcp[0].index("RetransSegs")])

        th = threading.Thread(target=body, name="retrans", daemon=True)
        th.start()
        th.join(30)
        return got

    def delete(self) -> None:
        with _LOCK:
            made = list(_NETNS)
            _NETNS.clear()
        for ns in made:
            ns.delete()


# ============================================================================================
# processes
# ============================================================================================


@dataclass
class NodeProc:
    name: str
    kind: str  # domain | wifi | cellular
    popen: subprocess.Popen[bytes]
    state: Path
    log: Path
    info: dict[str, Any] = field(default_factory=dict)
    buffer: bytes = b""
    cpu_at_kill: float | None = None

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def node_id(self) -> str:
        return str(self.info.get("node_id", ""))

    @property
    def url(self) -> str:
        return str(self.info["listen"][0])


def _spawn(argv: list[str], stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    with _LOCK:
        _PROCS.append(popen)
    return popen


def start_node(
    lan: Lan, host: int, name: str, kind: str, workdir: Path, logdir: Path, extra: list[str], *, open_: bool = True
) -> NodeProc:
    state = workdir / "state" / name
    log = logdir / f"{name}.log"
    cmd = "domain" if kind == "domain" else "run"
    argv = [sys.executable, "-m", "edgeagent.cli", "-v", cmd, "--state", str(state), "--listen", lan.listen_url(host)]
    argv += [*(["--open"] if open_ else []), *extra]
    with log.open("wb") as err:
        popen = _spawn(lan.argv(host, argv), subprocess.PIPE, err)
    return NodeProc(name, kind, popen, state, log)


def await_started(nodes: list[NodeProc], timeout: float) -> None:
    """Read each node's ``started`` JSON line (all at once, bounded by ``timeout``)."""
    deadline = time.monotonic() + timeout
    waiting = {n.popen.stdout.fileno(): n for n in nodes if n.popen.stdout is not None}
    with selectors.DefaultSelector() as sel:
        for fd in waiting:
            sel.register(fd, selectors.EVENT_READ)
        while waiting:
            left = deadline - time.monotonic()
            if left <= 0:
                names = ", ".join(sorted(n.name for n in waiting.values()))
                raise TimeoutError(f"no 'started' line within {timeout:.0f}s from: {names}")
            for key, _ in sel.select(min(left, 1.0)):
                n = waiting[key.fd]
                data = os.read(key.fd, 65536)
                if not data:
                    tail = n.log.read_text(errors="replace")[-1500:]
                    raise RuntimeError(f"{n.name} exited ({n.popen.wait(5)}) before starting; log:\n{tail}")
                n.buffer += data
                if b"\n" in n.buffer:
                    line = n.buffer.split(b"\n", 1)[0]
                    n.info = json.loads(line)
                    if n.info.get("event") != "started":
                        raise RuntimeError(f"{n.name}: unexpected first line {line[:200]!r}")
                    sel.unregister(key.fd)
                    del waiting[key.fd]


def stop_nodes(nodes: list[NodeProc]) -> None:
    """SIGTERM each (by PID), wait up to STOP_GRACE_S in all, then SIGKILL what is left."""
    for n in nodes:
        if n.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                n.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for n in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            n.popen.wait(max(0.05, deadline - time.monotonic()))
    for n in nodes:
        if n.popen.poll() is None:
            n.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.popen.wait(10)
        if n.popen.stdout is not None:
            n.popen.stdout.close()


def kill_everything() -> None:
    """Last resort (finally/atexit): every process we started that still runs, by PID."""
    with _LOCK:
        procs = list(_PROCS)
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    for p in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)


# ============================================================================================
# CPU accounting
# ============================================================================================


def proc_cpu(pid: int) -> float | None:
    """utime + stime of a process (all its threads), seconds; None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = raw.rsplit(")", 1)[1].split()  # fields[0] is field 3 (state): utime = field 14, stime = 15
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_stime(pid: int) -> float | None:
    """stime of a process (kernel time in its context: syscalls, socket copies, TCP), seconds."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(raw.rsplit(")", 1)[1].split()[12]) / CLK_TCK


def host_cpu() -> tuple[float, float, float, float]:
    """(busy, total, iowait, softirq) jiffies of the whole host, from /proc/stat."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    idle = vals[3] + vals[4]  # idle + iowait
    total = sum(vals)
    return total - idle, total, vals[4], vals[6]


@dataclass
class CpuMark:
    t: float
    per_proc: dict[int, float]
    per_proc_sys: dict[int, float]
    children: float
    me: float
    host: tuple[float, float, float, float]


def cpu_mark(nodes: list[NodeProc]) -> CpuMark:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    me = os.times()
    per = {}
    per_sys = {}
    for n in nodes:
        c = proc_cpu(n.pid) if n.cpu_at_kill is None else n.cpu_at_kill
        if c is not None:
            per[n.pid] = c
        st = proc_stime(n.pid) if n.cpu_at_kill is None else None
        if st is not None:
            per_sys[n.pid] = st
    return CpuMark(time.monotonic(), per, per_sys, ru.ru_utime + ru.ru_stime, me.user + me.system, host_cpu())


def cpu_use(a: CpuMark, b: CpuMark) -> dict[str, Any]:
    """Our processes' CPU between two marks, and the host's, as % of all cores.

    Nodes: /proc deltas (a killed relay's figure is frozen just before its SIGKILL; it is reaped
    only after ``b``). The send command starts after ``a`` and is reaped before ``b``: it is in
    the RUSAGE_CHILDREN delta, whole. Plus this script's own process (the poller).
    """
    wall = max(b.t - a.t, 1e-6)
    nodes = sum(b.per_proc[p] - a.per_proc[p] for p in b.per_proc if p in a.per_proc)
    nodes_sys = sum(b.per_proc_sys[p] - a.per_proc_sys[p] for p in b.per_proc_sys if p in a.per_proc_sys)
    children = b.children - a.children
    me = b.me - a.me
    ours = nodes + children + me
    busy = b.host[0] - a.host[0]
    total = max(b.host[1] - a.host[1], 1)
    return {
        "wall_s": round(wall, 2),
        "ours_cpu_s": round(ours, 1),
        "ours_pct": round(100 * ours / (wall * CPUS), 1),
        "host_pct": round(100 * busy / total, 1),
        "others_pct": round(max(0.0, 100 * busy / total - 100 * ours / (wall * CPUS)), 1),
        "iowait_pct": round(100 * (b.host[2] - a.host[2]) / total, 1),
        # network softirq (veth, tbf, TCP) mostly runs outside any process's utime/stime: it is in
        # host_pct and others_pct, and much of it is our traffic's
        "softirq_pct": round(100 * (b.host[3] - a.host[3]) / total, 1),
        "nodes_cpu_s": round(nodes, 1),
        "nodes_sys_s": round(nodes_sys, 1),
        "send_cli_cpu_s": round(children, 2),
        "bench_cpu_s": round(me, 2),
    }


# ============================================================================================
# polling agents (control socket) and reading their logs
# ============================================================================================


async def _status(state: Path) -> dict[str, Any] | None:
    try:
        reply = await control_request(state, "status", timeout=5.0)
    except Exception:  # a killed or stopping node: no answer
        return None
    st = reply.get("status")
    return st if isinstance(st, dict) else None


async def poll_all(agents: list[NodeProc], skip: set[str]) -> dict[str, dict[str, Any] | None]:
    todo = [a for a in agents if a.name not in skip]
    got = await asyncio.gather(*(_status(a.state) for a in todo))
    return {a.name: st for a, st in zip(todo, got, strict=True)}


@dataclass
class Poller:
    """Polls every agent's status until stopped; in kill mode SIGKILLs one interior relay at ~50 %."""

    agents: list[NodeProc]
    size: int
    interval: float
    kill: bool
    deadline: float
    first_complete: dict[str, float] = field(default_factory=dict)  # wall time of the first "complete" seen
    rounds: int = 0
    round_ms: list[float] = field(default_factory=list)
    killed: dict[str, Any] | None = None
    kill_note: str = ""
    stop: threading.Event = field(default_factory=threading.Event)
    error: str | None = None
    trace: Path | None = None  # one JSON line per round: each agent's progress, parents and children (by name)

    def run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as exc:  # reported, never raised in the thread
            self.error = f"{type(exc).__name__}: {exc}"

    async def _loop(self) -> None:
        skip: set[str] = set()
        while not self.stop.is_set() and time.monotonic() < self.deadline:
            t0 = time.monotonic()
            res = await poll_all(self.agents, skip)
            now = time.time()
            self.rounds += 1
            self.round_ms.append((time.monotonic() - t0) * 1000)
            haves = []
            for name, st in res.items():
                p = (st or {}).get("payloads") or []
                item = p[0] if p else {}
                haves.append(int(item.get("have_bytes", 0)))
                if item.get("complete") and name not in self.first_complete:
                    self.first_complete[name] = now
            if self.trace is not None:
                self._trace(now, res)
            if self.kill and self.killed is None and haves and statistics.median(haves) >= self.size / 2:
                self._kill(res, statistics.median(haves), skip)
            if len(self.first_complete) >= len(self.agents) - len(skip):
                return
            left = self.interval - (time.monotonic() - t0)
            if left > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.to_thread(self.stop.wait, left), left + 1)

    def _trace(self, now: float, res: dict[str, dict[str, Any] | None]) -> None:
        assert self.trace is not None
        names = {a.node_id: a.name for a in self.agents}
        names.update({str(st.get("node_id")): "?" for st in res.values() if st and str(st.get("node_id")) not in names})
        row: dict[str, Any] = {"t": round(now, 3)}
        for name, st in res.items():
            p = (st or {}).get("payloads") or []
            if not p:
                row[name] = None
                continue
            item = p[0]
            row[name] = {
                "have": item.get("have_bytes"),
                "sent": item.get("bytes_sent"),
                "parents": [names.get(x, "domain") for x in item.get("parents") or []],
                "children": [names.get(x, x[-6:]) for x in item.get("children") or []],
            }
        with self.trace.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def _kill(self, res: dict[str, dict[str, Any] | None], median_have: float, skip: set[str]) -> None:
        best: tuple[int, int, str] | None = None
        for name, st in res.items():
            p = (st or {}).get("payloads") or []
            if not p or p[0].get("role") != "receiver":
                continue
            kids = p[0].get("children") or []
            if kids:
                key = (len(kids), -int(p[0].get("have_bytes", 0)), name)
                if best is None or key > best:
                    best = key
        if best is None:
            self.killed = {}
            self.kill_note = "no agent had children when the median reached 50 %: nothing killed"
            return
        victim = next(a for a in self.agents if a.name == best[2])
        st = res[victim.name] or {}
        victim.cpu_at_kill = proc_cpu(victim.pid)
        if victim.popen.poll() is None:
            victim.popen.send_signal(signal.SIGKILL)  # by PID, a process we started
        skip.add(victim.name)
        self.killed = {
            "name": victim.name,
            "node_id": victim.node_id,
            "kind": victim.kind,
            "children": len(st["payloads"][0].get("children") or []),
            "its_have_bytes": int(st["payloads"][0].get("have_bytes", 0)),
            "median_have_fraction": round(median_have / self.size, 3),
            "t_wall": time.time(),
        }
        _note(f"killed relay {victim.name} ({self.killed['children']} children) at median {median_have / MiB:.1f} MiB")


_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
START_RE: Final = re.compile(
    _TS + r" INFO edgeagent\.payload\.service: payload ([0-9a-f]{12}): (\d+) bytes to (\d+) rec"
)
DONE_RE: Final = re.compile(_TS + r" INFO edgeagent\.payload\.service: payload ([0-9a-f]{12}) complete")
LEVEL_RE: Final = re.compile(_TS + r" (WARNING|ERROR|CRITICAL) (\S+): (.*)")
_NOISE = re.compile(r"12D3Koo\w+|[0-9a-f]{12,}|ws://\S+|/\S+|\d+(\.\d+)?")


def _ts(text: str) -> float:
    """A logging asctime (local time, ms) as a Unix time."""
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


def send_start(domain_log: Path, after: float) -> tuple[float, str] | None:
    """(time, payload id prefix) of the domain's last "payload X: ... receivers" line after ``after``."""
    found = None
    for line in domain_log.read_text(errors="replace").splitlines():
        m = START_RE.match(line)
        if m and _ts(m.group(1)) >= after - 1:
            found = (_ts(m.group(1)), m.group(2))
    return found


def completion(log: Path, pid12: str) -> float | None:
    for line in log.read_text(errors="replace").splitlines():
        m = DONE_RE.match(line)
        if m and m.group(2) == pid12:
            return _ts(m.group(1))
    return None


def log_problems(logs: list[Path]) -> dict[str, Any]:
    """WARNING/ERROR lines of a run's logs, grouped by message with ids and numbers masked."""
    counts: dict[str, int] = {}
    example: dict[str, str] = {}
    nodes: dict[str, set[str]] = {}
    for log in logs:
        with contextlib.suppress(OSError):
            for line in log.read_text(errors="replace").splitlines():
                m = LEVEL_RE.match(line)
                if not m:
                    if line.startswith("Traceback"):
                        key = "Traceback"
                        counts[key] = counts.get(key, 0) + 1
                        example.setdefault(key, f"{log.name}: {line}")
                        nodes.setdefault(key, set()).add(log.stem)
                    continue
                key = f"{m.group(2)} {m.group(3)}: {_NOISE.sub('#', m.group(4))[:160]}"
                counts[key] = counts.get(key, 0) + 1
                example.setdefault(key, f"{log.name}: {line[:400]}")
                nodes.setdefault(key, set()).add(log.stem)
    top = sorted(counts, key=lambda k: -counts[k])
    return {
        "lines": sum(counts.values()),
        "top": [{"count": counts[k], "nodes": len(nodes[k]), "pattern": k, "example": example[k]} for k in top[:8]],
    }


# ============================================================================================
# one run
# ============================================================================================


@dataclass
class Setup:
    lan: Lan
    workdir: Path
    payload: Path
    size: int
    rate_mbit: float
    cell_mbit: float
    poll: float
    stripes: int | None
    keep: bool
    queue_ms: float = 100.0
    gso: bool = True
    burst_kb: float = 64.0
    chunk: int = CHUNK


def kind_of(j: int) -> str:
    """Agent j (0-based): every 4th is cellular (25 % of any multiple of 4)."""
    return "cellular" if j % 4 == 3 else "wifi"


def t_lb(n: int, size: int, rate_mbit: float, chunk: int = CHUNK) -> float:
    u = rate_mbit * 1e6 / 8
    n_wifi = sum(1 for j in range(n) if kind_of(j) == "wifi")
    return bound_seconds(size, chunk, u, [u] * n_wifi, n, u)


def shape_all(setup: Setup, n: int) -> None:
    lan = setup.lan
    lan.shape(0, setup.rate_mbit, setup.queue_ms, setup.gso, setup.burst_kb)
    for j in range(n):
        rate = setup.cell_mbit if kind_of(j) == "cellular" else setup.rate_mbit
        lan.shape(j + 1, rate, setup.queue_ms, setup.gso, setup.burst_kb)


def agent_ids(runwork: Path, n: int) -> list[str]:
    """Make each agent's key in its state directory beforehand (so the domain can be started with --allow)."""
    return [str(Identity.load_or_create(runwork / "state" / f"agent{j:02d}")[0].node_id) for j in range(n)]


def refused_counts(nodes: list[NodeProc]) -> dict[str, int]:
    """Messages every node refused: by its policy gate (status "refused", per type) and by its links' gate."""
    total: dict[str, int] = {}

    async def one(n: NodeProc) -> dict[str, Any]:
        return (await control_request(n.state, "status", timeout=10.0))["status"]  # type: ignore[no-any-return]

    async def every() -> list[Any]:
        return await asyncio.gather(*(one(n) for n in nodes if n.popen.poll() is None), return_exceptions=True)

    for st in asyncio.run(every()):
        if isinstance(st, BaseException):
            continue
        for kind, count in st.get("refused", {}).items():
            total[kind] = total.get(kind, 0) + count
        links = sum(int(ln.get("refused", 0)) for ln in st.get("links", []))
        if links:
            total["at links"] = total.get("at links", 0) + links
    return total


def one_run(setup: Setup, n: int, mode: str, index: int, auth: str = "open") -> dict[str, Any]:
    """Fresh domain + n agents, one send (mode: tree | star | kill), everything stopped again.

    ``auth``: "open" runs every node with ``--open``; "domain" as deployments run: the domain allows
    exactly the n agents (``--allow``), each agent authorises only its domain.
    """
    lan = setup.lan
    tag = f"n{n}-{mode}-{auth}-{index}"
    logdir = setup.workdir / "logs" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    runwork = setup.workdir / "runs" / tag
    bound = t_lb(n, setup.size, setup.rate_mbit, setup.chunk)
    star_theory = n * setup.size / (setup.rate_mbit * 1e6 / 8)
    row: dict[str, Any] = {
        "n": n, "mode": mode, "auth": auth, "run": index, "t_lb_s": round(bound, 2), "git": _git_state(),
    }  # fmt: skip
    nodes: list[NodeProc] = []
    send_proc: subprocess.Popen[bytes] | None = None
    poller: Poller | None = None
    poll_thread: threading.Thread | None = None
    try:
        t_boot = time.monotonic()
        secure = auth == "domain"
        allow = [x for nid in agent_ids(runwork, n) for x in ("--allow", nid)] if secure else []
        domain = start_node(lan, 0, "domain", "domain", runwork, logdir, allow, open_=not secure)
        nodes.append(domain)
        await_started([domain], 30)
        durl = domain.url
        agents = []
        for j in range(n):
            kind = kind_of(j)
            net = ["--network", "cellular", "--metered"] if kind == "cellular" else ["--network", "wifi", "--unmetered"]
            extra = ["--domain", durl, *net]
            agents.append(start_node(lan, j + 1, f"agent{j:02d}", kind, runwork, logdir, extra, open_=not secure))
        nodes.extend(agents)
        await_started(agents, 30 + 1.5 * n)
        t_started = time.monotonic()
        want = {a.node_id for a in agents}
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        listed: set[str] = set()
        for _ in range(int(REGISTER_TIMEOUT_S / 0.25) + 1):  # bounded: count and time
            peers = asyncio.run(control_request(domain.state, "peers", timeout=5.0))["peers"]
            listed = {p["node_id"] for p in peers if p.get("role") != "domain"}
            if want <= listed or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not want <= listed:
            raise RuntimeError(f"only {len(want & listed)}/{n} agents registered with the domain in time")
        nodes_map = {
            n_.name: {"node_id": n_.node_id, "kind": n_.kind, "listen": n_.info.get("listen"), "pid": n_.pid}
            for n_ in nodes
        }
        (logdir / "nodes.json").write_text(json.dumps(nodes_map, indent=1))
        row["startup_s"] = round(t_started - t_boot, 1)
        row["register_s"] = round(time.monotonic() - t_started, 1)

        timeout = max(120.0, 6 * bound) if mode != "star" else max(120.0, 2 * star_theory + 60)
        if mode == "kill":
            timeout += 60
        argv = [sys.executable, "-m", "edgeagent.cli", "send", str(setup.payload), "--state", str(domain.state)]
        argv += ["--wait", "--json", "--timeout", f"{timeout:.0f}"]
        if mode == "star":
            argv.append("--star")
        elif setup.stripes:
            argv += ["--stripes", str(setup.stripes)]
        if setup.chunk != CHUNK:
            argv += ["--chunk-kib", str(setup.chunk >> 10)]
        tx0 = lan.tx_stats(n + 1)
        interval = min(setup.poll or 0.5, 0.5) if mode == "kill" else setup.poll  # kill runs always poll
        mark0 = cpu_mark(nodes)
        wall0 = time.time()
        out_path = logdir / "send.json"
        with out_path.open("wb") as out, (logdir / "send.stderr").open("wb") as err:
            send_proc = _spawn(argv, out, err)
        if interval > 0:
            poller = Poller(agents, setup.size, interval, mode == "kill", time.monotonic() + timeout + 30)
            if setup.keep:
                poller.trace = logdir / "poll.jsonl"
            poll_thread = threading.Thread(target=poller.run, name="poller", daemon=True)
            poll_thread.start()
        try:
            rc = send_proc.wait(timeout + 90)
        except subprocess.TimeoutExpired:
            send_proc.kill()
            send_proc.wait(10)
            raise TimeoutError(f"`edgeagent send` still running {timeout + 90:.0f}s after it started") from None
        mark1 = cpu_mark(nodes)
        tx1 = lan.tx_stats(n + 1)
        if poller is not None and poll_thread is not None:
            poller.stop.set()
            poll_thread.join(15)
        try:
            res = json.loads(out_path.read_text())
        except ValueError:
            err_text = (logdir / "send.stderr").read_text(errors="replace")[-600:]
            raise RuntimeError(f"send printed no JSON (exit {rc}): {err_text}") from None
        row["cpu"] = cpu_use(mark0, mark1)
        row["send_exit"] = rc

        # -- figures
        size = int(res["size"])
        start = send_start(domain.log, wall0)
        killed_name = poller.killed.get("name") if poller and poller.killed else None
        done: dict[str, float | None] = {}
        if start is not None:
            t0, pid12 = start
            for a in agents:
                if a.name == killed_name:
                    continue
                t = completion(a.log, pid12)
                done[a.name] = None if t is None else t - t0
        else:
            t0 = wall0
            row["note"] = "no start line in the domain log: times from the send command's start"
        times = [t for t in done.values() if t is not None]
        all_done = len(times) == len(done) and len(done) > 0
        row["receivers"] = res["receivers"]
        row["completed"] = res["completed"]
        row["failed"] = len(res.get("failed") or [])
        row["stripes"] = res["stripes"]
        row["repairs"] = res["repairs"]
        row["send_seconds"] = res["seconds"]
        row["last_s"] = round(max(times), 2) if all_done else None
        row["median_s"] = round(statistics.median(times), 2) if times else None
        row["first_s"] = round(min(times), 2) if times else None
        row["incomplete"] = sorted(k for k, v in done.items() if v is None)
        row["last_over_tlb"] = round(row["last_s"] / bound, 2) if row["last_s"] else None
        row["star_theory_s"] = round(star_theory, 1)
        row["source_egress_over_s"] = round(res["source_wire_bytes"] / size, 3)
        row["source_payload_over_s"] = round(res["source_bytes_sent"] / size, 3)
        relayed = int(res["relayed_bytes"])
        row["relayed_over_s"] = round(relayed / size, 2)
        row["cellular_uploaded_bytes"] = int(res["cellular_uploaded_bytes"])
        row["cellular_over_relayed"] = round(res["cellular_uploaded_bytes"] / relayed, 4) if relayed else 0.0
        if lan.shaped:
            dtx = [{k: b[k] - a[k] for k in a} for a, b in zip(tx0, tx1, strict=True)]
            row["source_veth_over_s"] = round(dtx[0]["bytes"] / size, 3)
            row["cellular_veth_bytes"] = sum(dtx[j + 1]["bytes"] for j in range(n) if kind_of(j) == "cellular")
            row["tbf_drops"] = sum(d["drops"] for d in dtx)
            row["tcp_retrans_segs"] = sum(d["retrans_segs"] for d in dtx)
            row["wire_packets"] = sum(d["packets"] for d in dtx)
            wifi_up = [dtx[j + 1]["bytes"] / size for j in range(n) if kind_of(j) == "wifi"]
            row["wifi_veth_upload_over_s"] = {
                "min": round(min(wifi_up), 2),
                "median": round(statistics.median(wifi_up), 2),
                "max": round(max(wifi_up), 2),
            }
        stored = sum(int(v["have_bytes"]) for v in res["per_node"].values())
        # payload bytes put on links (source + relays) beyond what the receivers stored: duplicates
        # (a dead relay's last Progress can lag by PROGRESS_EVERY, so a little is counted for it)
        row["redundant_over_s"] = round((int(res["source_bytes_sent"]) + relayed - stored) / size, 2)
        uploads = [v["bytes_uploaded"] / size for v in res["per_node"].values() if v["relay_ok"]]
        if uploads:
            row["relay_upload_over_s"] = {"max": round(max(uploads), 2), "idle_relays": sum(u == 0 for u in uploads)}
        row["per_agent_s"] = {k: (None if v is None else round(v, 3)) for k, v in sorted(done.items())}
        if poller is not None:
            row["poll"] = {
                "interval_s": interval,
                "rounds": poller.rounds,
                "round_ms_median": round(statistics.median(poller.round_ms), 1) if poller.round_ms else None,
                "error": poller.error,
            }
            diffs = [
                poller.first_complete[k] - t0 - v
                for k, v in done.items()
                if v is not None and k in poller.first_complete
            ]
            if diffs:  # poll sighting minus log time: in [0, interval + round time] when both agree
                row["poll"]["seen_minus_log_s"] = {"min": round(min(diffs), 2), "max": round(max(diffs), 2)}
            if mode == "kill":
                row["killed"] = poller.killed
                if poller.killed is None:
                    row["kill_note"] = "nothing killed: the median receiver was not seen at 50 % before the end"
                if poller.kill_note:
                    row["kill_note"] = poller.kill_note
                if poller.killed:
                    row["killed"]["at_s"] = round(poller.killed.pop("t_wall") - t0, 2)
        row["refused"] = refused_counts(nodes)
        row["log_problems"] = log_problems([*sorted(logdir.glob("*.log")), logdir / "send.stderr"])
        return row
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        _note(f"{tag} failed: {row['error'][:400]}")
        row["log_problems"] = log_problems(sorted(logdir.glob("*.log")))
        return row
    finally:
        if poller is not None:
            poller.stop.set()
        if poll_thread is not None:
            poll_thread.join(15)
        if send_proc is not None and send_proc.poll() is None:
            send_proc.kill()
            send_proc.wait(10)
        stop_nodes(nodes)
        shutil.rmtree(runwork, ignore_errors=True)  # payload copies (n x size); logs stay in logdir


# ============================================================================================
# summary and printing
# ============================================================================================


def _med(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return round(statistics.median(vals), 2) if vals else None


def summarise(n: int, rows: list[dict[str, Any]], setup: Setup) -> dict[str, Any]:
    # times: runs in which every (surviving) receiver completed; the others are counted apart
    tree_all = [r for r in rows if r["mode"] == "tree" and "error" not in r]
    tree = [r for r in tree_all if r.get("last_s") is not None]
    star = [r for r in rows if r["mode"] == "star" and "error" not in r and r.get("last_s") is not None]
    kill_all = [r for r in rows if r["mode"] == "kill" and "error" not in r]
    kill = [r for r in kill_all if r.get("last_s") is not None]
    bound = t_lb(n, setup.size, setup.rate_mbit, setup.chunk)
    out: dict[str, Any] = {
        "n": n,
        "rate_mbit": setup.rate_mbit,
        "cell_rate_mbit": setup.cell_mbit,
        "t_lb_s": round(bound, 2),
        "star_theory_s": round(n * setup.size / (setup.rate_mbit * 1e6 / 8), 1),
        "tree_runs": len(tree),
        "tree_runs_incomplete": len(tree_all) - len(tree),
        "tree_cpu_ours_pct_all_runs": [r["cpu"]["ours_pct"] for r in tree_all],
        "tree_last_s": _med(tree, "last_s"),
        "tree_median_s": _med(tree, "median_s"),
        "tree_last_over_tlb": _med(tree, "last_over_tlb"),
        "tree_source_egress_over_s": _med(tree, "source_egress_over_s"),
        "tree_source_veth_over_s": _med(tree, "source_veth_over_s"),
        "tree_cellular_over_relayed": _med(tree, "cellular_over_relayed"),
        "tree_redundant_over_s": _med(tree, "redundant_over_s"),
        "star_runs": len(star),
        "star_last_s": _med(star, "last_s"),
        "star_median_s": _med(star, "median_s"),
        "star_source_egress_over_s": _med(star, "source_egress_over_s"),
        "star_source_veth_over_s": _med(star, "source_veth_over_s"),
        "tree_cpu_ours_pct": round(statistics.median([r["cpu"]["ours_pct"] for r in tree]), 1) if tree else None,
        "tree_cpu_host_pct": round(statistics.median([r["cpu"]["host_pct"] for r in tree]), 1) if tree else None,
        "star_cpu_ours_pct": round(statistics.median([r["cpu"]["ours_pct"] for r in star]), 1) if star else None,
        "failed_runs": sum(1 for r in rows if "error" in r),
    }
    if out["tree_last_s"] and out["star_last_s"]:
        out["speedup_over_star"] = round(out["star_last_s"] / out["tree_last_s"], 1)
    if out["tree_last_s"]:
        out["speedup_over_star_theory"] = round(out["star_theory_s"] / out["tree_last_s"], 1)
    if kill_all:
        out["kill_runs_incomplete"] = len(kill_all) - len(kill)
        out["kill_all_redundant_over_s"] = [r.get("redundant_over_s") for r in kill_all]
    if kill:
        out["kill_last_s"] = _med(kill, "last_s")
        out["kill_last_over_tlb"] = _med(kill, "last_over_tlb")
        out["kill_redundant_over_s"] = _med(kill, "redundant_over_s")
        out["kill_all_last_over_tlb"] = [r.get("last_over_tlb") for r in kill_all]
        out["kill_target"] = "<= 1.5"
    ours, host = out["tree_cpu_ours_pct"], out["tree_cpu_host_pct"]
    if ours is not None and ours >= CPU_BOUND_PCT:
        out["cpu_bound"] = (
            f"our processes used {ours} % of the cores during tree runs: the CPU, not the shaped links, sets the "
            "pace; rerun this N at a lower --rate-mbit (e.g. 25)"
        )
    elif host is not None and ours is not None and host >= CPU_BOUND_PCT:
        out["cpu_contended"] = (
            f"the host was {host} % busy during tree runs but only {ours} % was ours: other work on this machine "
            "competed for the cores; times may be inflated"
        )
    return out


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(out: dict[str, Any]) -> None:
    p = out["params"]
    print(
        f"bcast benchmark: {p['size_mib']} MiB payload, chunk {p['chunk'] >> 10} KiB, {out['network']['mode']} "
        f"({out['network']['detail']}); {out['environment']['cpus']} CPUs; elapsed {out['elapsed_s']} s"
    )
    env = out["environment"]
    print(f"edgeagent checkout: {env['git']}")
    if env["git_at_end"] != env["git"]:
        print(f"NOTE: the checkout changed during the benchmark (now {env['git_at_end']}); see each run's 'git'")
    if out["network"]["why"]:
        print(f"NOTE: {out['network']['why']}")
    head = (
        f"{'N':>3} {'mode':<5} {'auth':<6} {'#':>1} {'Mbit':>5} {'last s':>7} {'med s':>7} {'T_LB s':>6} "
        f"{'last/LB':>7} "
        f"{'src/S':>6} {'veth/S':>6} {'cell/rel':>8} {'dup/S':>5} {'k':>2} {'rep':>3} {'drops':>6} {'cpu ours%':>9} "
        f"{'host%':>6}  notes"
    )
    print(head)
    for n_res in out["results"]:
        for r in n_res["runs"]:
            cpu = r.get("cpu", {})
            notes = []
            if "error" in r:
                notes.append("ERROR " + r["error"][:100])
            if r.get("incomplete"):
                notes.append(f"incomplete: {len(r['incomplete'])}")
            if r.get("killed"):
                k = r["killed"]
                notes.append(
                    f"killed {k['name']} ({k['children']} kids) at {k['at_s']} s, "
                    f"median at {k['median_have_fraction']:.0%}"
                )
            if r.get("kill_note"):
                notes.append(r["kill_note"])
            lp = r.get("log_problems", {})
            if lp.get("lines"):
                notes.append(f"{lp['lines']} warn/err log lines")
            if r.get("refused"):
                notes.append(f"refused {r['refused']}")
            print(
                f"{r['n']:>3} {r['mode']:<5} {r.get('auth', 'open'):<6} {r['run']:>1} "
                f"{n_res['summary']['rate_mbit']:>5g} "
                f"{_f(r.get('last_s')):>7} "
                f"{_f(r.get('median_s')):>7} {_f(r.get('t_lb_s')):>6} {_f(r.get('last_over_tlb')):>7} "
                f"{_f(r.get('source_egress_over_s')):>6} {_f(r.get('source_veth_over_s')):>6} "
                f"{_f(r.get('cellular_over_relayed'), '{:.4f}'):>8} {_f(r.get('redundant_over_s')):>5} "
                f"{_f(r.get('stripes'), '{}'):>2} {_f(r.get('repairs'), '{}'):>3} {_f(r.get('tbf_drops'), '{}'):>6} "
                f"{_f(cpu.get('ours_pct'), '{:.0f}'):>9} {_f(cpu.get('host_pct'), '{:.0f}'):>6}  {'; '.join(notes)}"
            )
    print()
    for n_res in out["results"]:
        s = n_res["summary"]
        print(
            f"N={s['n']} ({s.get('auth', 'open')}) at {s['rate_mbit']:g}/{s['cell_rate_mbit']:g} Mbit/s: "
            f"tree last {_f(s['tree_last_s'])} s "
            f"(median receiver {_f(s['tree_median_s'])} s; {s['tree_runs']} runs, medians) vs T_LB {s['t_lb_s']} s "
            f"= {_f(s['tree_last_over_tlb'])}x; star last {_f(s['star_last_s'])} s ({s['star_runs']} run(s)), "
            f"star theory N*S/u_src {s['star_theory_s']} s; speed-up over star {_f(s.get('speedup_over_star'), '{}')}x "
            f"(over star theory {_f(s.get('speedup_over_star_theory'), '{}')}x); source egress/S tree "
            f"{_f(s['tree_source_egress_over_s'])}, star {_f(s['star_source_egress_over_s'])}; cellular/relayed "
            f"{_f(s['tree_cellular_over_relayed'], '{:.4f}')}; CPU during tree runs ours "
            f"{_f(s['tree_cpu_ours_pct'], '{}')} %, "
            f"host {_f(s['tree_cpu_host_pct'], '{}')} % of {CPUS} cores"
        )
        if s.get("tree_runs_incomplete"):
            print(f"  {s['tree_runs_incomplete']} tree run(s) ended with receivers incomplete (not in the medians)")
        if "kill_runs_incomplete" in s:
            print(
                f"  kill-relay: last {_f(s.get('kill_last_s'))} s = {_f(s.get('kill_last_over_tlb'))} x T_LB "
                f"(target <= 1.5; median of complete runs); {s['kill_runs_incomplete']} kill run(s) incomplete; "
                f"redundant payload bytes / S per kill run {s['kill_all_redundant_over_s']}"
            )
        if "cpu_bound" in s:
            print(f"  CPU-BOUND: {s['cpu_bound']}")
        if "cpu_contended" in s:
            print(f"  CPU CONTENDED: {s['cpu_contended']}")
        if s["failed_runs"]:
            print(f"  {s['failed_runs']} run(s) failed (see JSON/logs)")
    problems: dict[str, int] = {}
    for n_res in out["results"]:
        for r in n_res["runs"]:
            for t in r.get("log_problems", {}).get("top", []):
                problems[t["pattern"]] = problems.get(t["pattern"], 0) + t["count"]
    if problems:
        print("warnings/errors in the nodes' logs (all runs; ids and numbers masked as #):")
        for k in sorted(problems, key=lambda k: -problems[k])[:10]:
            print(f"  {problems[k]:>6}  {k}")
    print(
        "last/med: receiver completion from the agents' logs, s after the source started assigning; "
        "T_LB: DESIGN s.6 bound at the nominal tc rates (headers cost ~4.4 %); src/S: send result "
        "source_wire_bytes / S; veth/S: bytes that left the source's veth (tc) / S; "
        "cell/rel: cellular_uploaded_bytes / relayed_bytes; dup/S: payload bytes sent (source + relays) beyond what "
        "the receivers stored, / S; k: stripes; rep: repairs; "
        "drops: tbf drops; cpu: our processes and the whole host (which includes the kernel's network softirq "
        "work for our traffic, see softirq_pct in the JSON), % of all cores over the send"
    )
    if out.get("logs"):
        print(f"logs kept in {out['logs']}")


# ============================================================================================
# main
# ============================================================================================


def _git_state() -> str:
    """HEAD of the checkout under test, and the files that differ from it (results depend on them)."""
    try:
        head = _run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = _run(["git", "-C", str(ROOT), "status", "--short", "--untracked-files=no"]).stdout.split("\n")
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    changed = [ln.strip() for ln in dirty if ln.strip()]
    return head + (f" + uncommitted: {', '.join(changed)}" if changed else "")


def per_n(values: list[float], agents: list[int], flag: str, ap: argparse.ArgumentParser) -> list[float]:
    if len(values) == 1:
        return values * len(agents)
    if len(values) != len(agents):
        ap.error(f"{flag}: give one value, or one per --agents value ({len(agents)})")
    return values


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, nargs="+", default=[16, 64], help="receiver counts (default 16 64)")
    ap.add_argument("--size-mib", type=float, default=64, help="payload size, MiB of random bytes (default 64)")
    ap.add_argument(
        "--rate-mbit", type=float, nargs="+", default=[50.0], help="source and Wi-Fi upload, Mbit/s (one, or per N)"
    )
    ap.add_argument("--cell-rate-mbit", type=float, nargs="+", default=[5.0], help="cellular upload (one, or per N)")
    ap.add_argument("--runs", type=int, default=3, help="tree runs per N (medians; default 3)")
    ap.add_argument("--star-runs", type=int, default=1, help="star baseline runs per N (default 1; 0: none)")
    ap.add_argument("--kill-relay", action="store_true", help="add tree runs that SIGKILL an interior relay at ~50 %%")
    ap.add_argument("--kill-runs", type=int, default=1, help="with --kill-relay: such runs per N (default 1)")
    ap.add_argument("--stripes", type=int, help="pass --stripes K to tree sends (default: the planner's choice)")
    ap.add_argument(
        "--chunk-kib", type=int, default=CHUNK >> 10, help="chunk size of sends in KiB (T_LB's pipeline term uses it)"
    )
    ap.add_argument(
        "--poll", type=float, default=0.0, help="status poll interval, s (cross-check; 0: off, the default; kill: 0.5)"
    )
    ap.add_argument(
        "--subnets",
        choices=("shared", "per-node"),
        default="shared",
        help="shared: every node in 10.207.0.0/24, so the domain puts all in one LAN group (default); "
        "per-node: each node its own /24 on the same bridge (no LAN grouping)",
    )
    ap.add_argument("--queue-ms", type=float, default=100.0, help="tbf latency (its queue), ms (default 100)")
    ap.add_argument(
        "--burst-kb",
        type=float,
        default=64.0,
        help="tbf bucket, KiB (default 64: a Wi-Fi A-MPDU; a whole GSO packet)",
    )
    ap.add_argument(
        "--gso",
        choices=("on", "off"),
        default="on",
        help="off: MTU-sized packets into tbf (gso_max_segs 1 on each veth) instead of 64 KiB GSO bursts",
    )
    ap.add_argument(
        "--tcp-cc",
        default="reno",
        help="TCP congestion control in every namespace (default reno: CUBIC's behaviour at LAN round trips; "
        "'host': leave the host's)",
    )
    ap.add_argument("--loopback", action="store_true", help="skip namespaces: unshaped loopback")
    ap.add_argument("--tmp", help="where the work directory goes (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' logs (payload copies are always deleted)")
    ap.add_argument(
        "--auth",
        nargs="+",
        choices=["domain", "open"],
        default=["domain"],
        help="how nodes authorise: 'domain' as deployed (the domain --allows the agents, agents trust their "
        "domain only; default), 'open' (every node --open); several: interleaved run by run, summarised apart",
    )
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if any(n < 1 or n > 200 for n in args.agents) or args.size_mib <= 0 or args.runs < 0 or args.star_runs < 0:
        ap.error("--agents 1..200, --size-mib > 0, --runs and --star-runs >= 0 are required")
    if args.kill_runs < 0 or args.poll < 0:
        ap.error("--kill-runs and --poll must be >= 0")
    rates = per_n(args.rate_mbit, args.agents, "--rate-mbit", ap)
    cells = per_n(args.cell_rate_mbit, args.agents, "--cell-rate-mbit", ap)
    if min(rates + cells) <= 0:
        ap.error("rates must be positive")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C even when started with SIGINT ignored
    started = time.perf_counter()
    git_at_start = _git_state()  # every run records its own too: the checkout may change while this runs
    workdir = Path(tempfile.mkdtemp(prefix="ea-bcast-", dir=args.tmp))
    size = int(args.size_mib * MiB)
    lan: Lan | None = None
    tcp_cc = ""
    results: list[dict[str, Any]] = []
    try:
        lan = Lan(max(args.agents) + 1, args.loopback, args.subnets)
        if not lan.shaped:
            _note(f"NO SHAPING: {lan.why}; falling back to unshaped loopback (127.0.0.1, own ports)")
        elif args.tcp_cc != "host":
            tcp_cc = lan.set_tcp_cc(args.tcp_cc)
        else:
            tcp_cc = Path("/proc/sys/net/ipv4/tcp_congestion_control").read_text().strip()
        payload = workdir / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
            f.write(os.urandom(size % MiB))
        for n, rate, cell in zip(args.agents, rates, cells, strict=True):
            setup = Setup(
                lan,
                workdir,
                payload,
                size,
                rate,
                cell,
                args.poll,
                args.stripes,
                args.keep,
                args.queue_ms,
                args.gso == "on",
                args.burst_kb,
                args.chunk_kib * 1024,
            )
            shape_all(setup, n)
            plan: list[tuple[str, int, str]] = []  # (mode, run, auth): the auth modes interleaved run by run
            for r in range(max(args.runs, args.star_runs)):
                for auth in args.auth:
                    if r < args.runs:
                        plan.append(("tree", r + 1, auth))
                    if r < args.star_runs:
                        plan.append(("star", r + 1, auth))
            if args.kill_relay:
                plan += [("kill", r + 1, auth) for r in range(args.kill_runs) for auth in args.auth]
            rows = []
            for mode, idx, auth in plan:
                bound = t_lb(n, size, rate, args.chunk_kib * 1024)
                _note(f"N={n} {mode} ({auth}) run {idx} ({rate:g}/{cell:g} Mbit/s, T_LB {bound:.1f} s)")
                row = one_run(setup, n, mode, idx, auth)
                _note(
                    f"  -> last {row.get('last_s')} s, median {row.get('median_s')} s, last/T_LB "
                    f"{row.get('last_over_tlb')}, cpu {row.get('cpu', {}).get('host_pct')} % host, "
                    f"repairs {row.get('repairs')}, refused {row.get('refused')}"
                )
                rows.append(row)
            for auth in args.auth:
                mine = [r for r in rows if r["auth"] == auth]
                results.append({"summary": {**summarise(n, mine, setup), "auth": auth}, "runs": mine})
    finally:
        kill_everything()
        if lan is not None:
            lan.delete()
        if args.keep:
            (workdir / "payload.bin").unlink(missing_ok=True)
            shutil.rmtree(workdir / "state", ignore_errors=True)
            shutil.rmtree(workdir / "runs", ignore_errors=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": CPUS,
            "loadavg": [round(x, 2) for x in os.getloadavg()],
            "git": git_at_start,
            "git_at_end": _git_state(),
        },
        "network": {
            "mode": lan.mode if lan else "none",
            "why": lan.why if lan else "",
            "detail": f"one namespace per node on a bridge, subnets {args.subnets}, tc tbf on each veth's egress "
            f"(queue {args.queue_ms:g} ms, bucket {args.burst_kb:g} KiB, GSO {args.gso}), TCP {tcp_cc}"
            if lan and lan.shaped
            else "all nodes on 127.0.0.1, unshaped",
        },
        "params": {
            "agents": args.agents,
            "size_mib": args.size_mib,
            "rate_mbit": rates,
            "cell_rate_mbit": cells,
            "runs": args.runs,
            "auth": args.auth,
            "star_runs": args.star_runs,
            "kill_runs": args.kill_runs if args.kill_relay else 0,
            "stripes": args.stripes,
            "poll_s": args.poll,
            "subnets": args.subnets,
            "queue_ms": args.queue_ms,
            "gso": args.gso,
            "burst_kb": args.burst_kb,
            "tcp_cc": tcp_cc,
            "chunk": args.chunk_kib * 1024,
        },
        "results": results,
        "logs": str(workdir / "logs") if args.keep else None,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print_table(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
