#!/usr/bin/env python3
"""NAT benchmark: one payload from a domain on a "public" network to devices behind home NAT routers.

Setup (root, iptables): the NAT lab of ``tests/natlab.py`` (read its docstring for the rules): a public
bridge with the domain's namespace at 10.210.0.1, and ``--homes`` homes, each a router namespace
(public address 10.210.h.1 with ``--public per-home``, the default: every home its own /24 as on the
internet; 10.210.0.(h+1), all in one /24, with ``--public shared``) doing ``iptables -t nat -A
POSTROUTING -o wan -j MASQUERADE`` (``--random-fully``, a symmetric mapping, in the last
``--carrier-homes`` homes: carrier-grade NAT), forwarding on, new inbound connections dropped, and a
LAN bridge with ``--per-home`` device namespaces at 192.168.h.11.. (default route via 192.168.h.1).
Devices dial out; nobody dials in; devices of one home reach each other; different homes cannot
reach each other's private addresses. The lab checks itself (``NatLab.self_check``) before any run.
Shaping: tc tbf on the domain's and every device's ``eth0`` egress (their uploads) at ``--rate-mbit``
(``--queue-ms`` tail-drop queue, ``--burst-kb`` bucket, as bench/bcast.py); with ``--home-rate-mbit``
also on each router's ``wan`` (the home's shared uplink). Download is not shaped. TCP ``reno`` in
every namespace (``--tcp-cc``; see bench/bcast.py for why not this host's bbr).

Nodes, as deployed today (``--auth domain`` of bench/bcast.py: keys made first, the domain allows
exactly the devices, each device authorises only its domain):

* domain: ``edgeagent -v domain --allow ID ... --listen ws://10.210.0.1:7400 --mdns off``
* devices: ``edgeagent -v run --domain ws://10.210.0.1:7400 --listen ws://0.0.0.0:7400 --mdns off
  --network wifi --unmetered`` (``--listen private``: ``ws://192.168.h.k:7400`` instead, the device's own
  private address, to see what a device that advertises a dialable-in-its-home address gets)

No ICE servers are configured (none by default; nothing here contacts anything outside the lab).

Per run (``--runs``), fresh processes, state and keys: start the domain, the devices (each one's
``started`` line awaited), wait until the domain's ``peers`` lists every device, then ``edgeagent send
FILE --state DOMAIN --wait --timeout T --json`` of ``--size-mib`` MiB of random bytes (``--timeout``,
default 300 s). Reported per run:

* completed / receivers (the send result) and the send's exit code and seconds;
* last receiver s: from the devices' logs ("payload ID complete", ms timestamps, one host clock)
  minus the domain's "payload ID: S bytes to N receivers" line; none unless every device completed
  (then also first/median of those that did);
* T_LB = S / min(source upload, per-device upload) (no tree can deliver S to a device faster than
  its one upstream link or the source's upload carry it), last / T_LB; also the DESIGN s.6 tree
  bound of bench/bcast.py (``planner.bound_seconds``) and the star time N*S/u_src (one copy to each
  device from the source: what the source can always do, since every device reaches it);
* source egress / S: the send result's ``source_wire_bytes`` / S (and the bytes that left the
  domain's eth0 / S, from its kernel counter);
* re-plans: the send result's ``repairs`` and the domain's "re-planned around X (WHY)" log lines
  (payload/source.py ``_apply_replan``), grouped by why; the edges the source saw fail
  (``unlinkable``);
* per incomplete device: its bytes held (send result ``per_node``) and the last reason it logged
  ("parent X unreachable: ...", "helper X unreachable: ..." from payload/receiver.py), with node ids
  replaced by lab names (h<home>d<device>, domain); and the WARNING/ERROR lines and tracebacks of
  every log, masked and counted.

The network rule: traffic goes only to addresses inside the namespaces this script creates; every
process is started here and ended by its PID (SIGTERM, then SIGKILL), every namespace is deleted in
``finally`` blocks, also after Ctrl-C or SIGTERM; every wait is bounded. No mDNS.

Usage: sudo .venv/bin/python bench/nat.py [--homes 6] [--per-home 1] [--carrier-homes 0] [--size-mib 32]
           [--rate-mbit 50] [--home-rate-mbit R] [--runs 1] [--timeout 300] [--public per-home|shared]
           [--listen any|private] [--queue-ms 100] [--burst-kb 64] [--tcp-cc reno|host|NAME]
           [--tmp DIR] [--keep] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import secrets
import selectors
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeagent.control import control_request  # noqa: E402
from edgeagent.identity import Identity  # noqa: E402
from edgeagent.payload.planner import bound_seconds  # noqa: E402
from tests.natlab import (  # noqa: E402
    DOMAIN_ADDRESS,
    PORT,
    Device,
    NatLab,
    agent_argv,
    domain_argv,
    netns_pids,
    reasons,
    replans,
)
from tests.netns import NetnsUnavailable  # noqa: E402

MiB: Final = 1 << 20
CHUNK: Final = 256 * 1024  # the send default
STOP_GRACE_S: Final = 10.0
REGISTER_TIMEOUT_S: Final = 60.0

_PROCS: list[subprocess.Popen[bytes]] = []  # every process this script started (ended by PID)

_TS = r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})"
START_RE: Final = re.compile(
    _TS + r" INFO edgeagent\.payload\.service: payload ([0-9a-f]{12}): (\d+) bytes to (\d+) rec"
)
DONE_RE: Final = re.compile(_TS + r" INFO edgeagent\.payload\.service: payload ([0-9a-f]{12}) complete")
LEVEL_RE: Final = re.compile(_TS + r" (WARNING|ERROR|CRITICAL) (\S+): (.*)")
_NOISE = re.compile(r"12D3Koo\w+|[0-9a-f]{12,}|\d+(\.\d+)?")


def _note(msg: str) -> None:
    print(f"[nat] {msg}", file=sys.stderr, flush=True)


def _ts(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# ============================================================================================
# processes
# ============================================================================================


@dataclass
class NodeProc:
    name: str
    popen: subprocess.Popen[bytes]
    state: Path
    log: Path
    info: dict[str, Any] = field(default_factory=dict)
    buffer: bytes = b""

    @property
    def node_id(self) -> str:
        return str(self.info.get("node_id", ""))

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""


def _spawn(argv: list[str], stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
    popen = subprocess.Popen(
        argv,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=stdout,
        stderr=stderr,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    _PROCS.append(popen)
    return popen


def start_node(name: str, argv: list[str], state: Path, logdir: Path) -> NodeProc:
    log = logdir / f"{name}.log"
    with log.open("wb") as err:
        popen = _spawn(argv, subprocess.PIPE, err)
    return NodeProc(name, popen, state, log)


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
                raise TimeoutError(
                    f"no 'started' line within {timeout:.0f}s from: {sorted(n.name for n in waiting.values())}"
                )
            for key, _ in sel.select(min(left, 1.0)):
                n = waiting[key.fd]
                data = os.read(key.fd, 65536)
                if not data:
                    raise RuntimeError(f"{n.name} exited ({n.popen.wait(5)}) before starting; log:\n{n.text()[-1500:]}")
                n.buffer += data
                if b"\n" in n.buffer:
                    n.info = json.loads(n.buffer.split(b"\n", 1)[0])
                    if n.info.get("event") != "started":
                        raise RuntimeError(f"{n.name}: unexpected first line {n.info!r:.200}")
                    sel.unregister(key.fd)
                    del waiting[key.fd]


def stop_nodes(nodes: list[NodeProc]) -> dict[str, int | None]:
    """SIGTERM each (by PID), wait up to STOP_GRACE_S in all, then SIGKILL what is left; exit codes."""
    for n in nodes:
        if n.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                n.popen.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for n in nodes:
        with contextlib.suppress(subprocess.TimeoutExpired):
            n.popen.wait(max(0.05, deadline - time.monotonic()))
    codes: dict[str, int | None] = {}
    for n in nodes:
        if n.popen.poll() is None:
            n.popen.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                n.popen.wait(10)
        if n.popen.stdout is not None:
            n.popen.stdout.close()
        codes[n.name] = n.popen.returncode
    return codes


def kill_everything() -> None:
    """Last resort (finally): every process this script started that still runs, by PID."""
    for p in _PROCS:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    for p in _PROCS:
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(10)


# ============================================================================================
# logs
# ============================================================================================


def send_start(domain_log: str, pid12: str) -> float | None:
    for line in domain_log.splitlines():
        m = START_RE.match(line)
        if m and m.group(2) == pid12:
            return _ts(m.group(1))
    return None


def completion(log: str, pid12: str) -> float | None:
    for line in log.splitlines():
        m = DONE_RE.match(line)
        if m and m.group(2) == pid12:
            return _ts(m.group(1))
    return None


def log_problems(nodes: list[NodeProc], extra: list[tuple[str, str]]) -> dict[str, Any]:
    """WARNING/ERROR lines and tracebacks of a run's logs, grouped by message with ids and numbers masked."""
    counts: Counter[str] = Counter()
    example: dict[str, str] = {}
    where: dict[str, set[str]] = {}
    for name, text in [(n.name, n.text()) for n in nodes] + extra:
        for line in text.splitlines():
            m = LEVEL_RE.match(line)
            if m:
                key = f"{m.group(2)} {m.group(3)}: {_NOISE.sub('#', m.group(4))[:160]}"
            elif line.startswith("Traceback"):
                key = "Traceback"
            else:
                continue
            counts[key] += 1
            example.setdefault(key, f"{name}: {line[:400]}")
            where.setdefault(key, set()).add(name)
    return {
        "lines": sum(counts.values()),
        "tracebacks": counts.get("Traceback", 0),
        "top": [
            {"count": c, "nodes": len(where[k]), "pattern": k, "example": example[k]} for k, c in counts.most_common(8)
        ],
    }


def named(text: str, names: dict[str, str]) -> str:
    for nid, name in names.items():
        text = text.replace(nid, name)
    return text


# ============================================================================================
# one run
# ============================================================================================


@dataclass
class Setup:
    lab: NatLab
    workdir: Path
    payload: Path
    size: int
    rate_mbit: float
    timeout: float
    listen: str
    keep: bool


def bounds(setup: Setup, n: int) -> dict[str, float]:
    u_src = u_dev = setup.rate_mbit * 1e6 / 8  # --rate-mbit shapes the source and every device alike
    return {
        "t_lb_s": round(setup.size / min(u_src, u_dev), 2),
        "tree_bound_s": round(bound_seconds(setup.size, CHUNK, u_src, [u_dev] * n, n, u_dev), 2),
        "star_s": round(n * setup.size / u_src, 2),
    }


def _peers(state: Path) -> set[str]:
    reply = asyncio.run(control_request(state, "peers", timeout=5.0))
    return {p["node_id"] for p in reply["peers"] if p.get("role") != "domain"}


def one_run(setup: Setup, index: int) -> dict[str, Any]:
    lab = setup.lab
    devices: list[Device] = lab.devices
    n = len(devices)
    tag = f"run{index}"
    logdir = setup.workdir / "logs" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    runwork = setup.workdir / "runs" / tag
    row: dict[str, Any] = {"run": index, "git": _git_state(), **bounds(setup, n)}
    nodes: list[NodeProc] = []
    send_proc: subprocess.Popen[bytes] | None = None
    try:
        states = {d.name: runwork / "state" / d.name for d in devices}
        ids = {d.name: str(Identity.load_or_create(states[d.name])[0].node_id) for d in devices}
        names = {nid: name for name, nid in ids.items()}
        dstate = runwork / "state" / "domain"
        domain = start_node("domain", lab.domain.argv(domain_argv(str(dstate), ids.values())), dstate, logdir)
        nodes.append(domain)
        await_started([domain], 30)
        names[domain.node_id] = "domain"
        agents = []
        for d in devices:
            extra = ["--listen", f"ws://{d.address}:{PORT}"] if setup.listen == "private" else []
            argv = agent_argv(str(states[d.name]))
            if extra:  # replace the ws://0.0.0.0 listen URL
                i = argv.index("--listen")
                argv[i : i + 2] = extra
            agents.append(start_node(d.name, d.argv(argv), states[d.name], logdir))
        nodes.extend(agents)
        await_started(agents, 30 + 1.5 * n)
        deadline = time.monotonic() + REGISTER_TIMEOUT_S
        listed: set[str] = set()
        for _ in range(int(REGISTER_TIMEOUT_S / 0.25) + 1):  # bounded: count and time
            listed = _peers(dstate)
            if set(ids.values()) <= listed or time.monotonic() > deadline:
                break
            time.sleep(0.25)
        if not set(ids.values()) <= listed:
            raise RuntimeError(f"only {len(set(ids.values()) & listed)}/{n} devices registered with the domain")
        (logdir / "nodes.json").write_text(json.dumps({v: k for k, v in names.items()}, indent=1))

        argv = [sys.executable, "-m", "edgeagent.cli", "send", str(setup.payload), "--state", str(dstate)]
        argv += ["--wait", "--json", "--timeout", f"{setup.timeout:.0f}"]
        tx0 = lab.tx_bytes(lab.domain)
        out_path = logdir / "send.json"
        t_send = time.monotonic()
        with out_path.open("wb") as out, (logdir / "send.stderr").open("wb") as err:
            send_proc = _spawn(argv, out, err)
        try:
            rc = send_proc.wait(setup.timeout + 90)
        except subprocess.TimeoutExpired:
            send_proc.kill()
            send_proc.wait(10)
            raise TimeoutError(f"`edgeagent send` still running {setup.timeout + 90:.0f}s after it started") from None
        row["send_wall_s"] = round(time.monotonic() - t_send, 1)
        tx1 = lab.tx_bytes(lab.domain)
        send_err = (logdir / "send.stderr").read_text(errors="replace")
        row["send_exit"] = rc
        try:
            res = json.loads(out_path.read_text())
        except ValueError:
            raise RuntimeError(f"send printed no JSON (exit {rc}): {send_err[-600:]}") from None
        size = int(res["size"])
        pid12 = res["payload_id"][:12]
        dlog = domain.text()
        t0 = send_start(dlog, pid12)
        done: dict[str, float | None] = {}
        for a in agents:
            t = completion(a.text(), pid12)
            done[a.name] = None if t is None or t0 is None else round(t - t0, 2)
        times = [t for t in done.values() if t is not None]
        row["receivers"] = res["receivers"]
        row["completed"] = res["completed"]
        row["completed_in_logs"] = len(times)
        row["send_seconds"] = res["seconds"]
        row["stripes"] = res["stripes"]
        row["last_s"] = max(times) if times and len(times) == n else None
        row["first_s"] = min(times) if times else None
        row["median_completed_s"] = round(statistics.median(times), 2) if times else None
        row["last_over_tlb"] = round(row["last_s"] / row["t_lb_s"], 2) if row["last_s"] else None
        row["source_egress_over_s"] = round(res["source_wire_bytes"] / size, 3)
        row["source_eth0_over_s"] = round((tx1 - tx0) / size, 3)
        row["relayed_over_s"] = round(int(res["relayed_bytes"]) / size, 2)
        row["repairs"] = res["repairs"]
        row["assists"] = res.get("assists")
        plans = replans(dlog, pid12)
        row["replans"] = len(plans)
        whys = Counter(re.sub(r"h\d+d\d+", "DEV", named(p["why"], names)) for p in plans)
        row["replans_by_why"] = dict(whys.most_common())
        row["unlinkable"] = [[names.get(p, p), names.get(c, c)] for p, c in res.get("unlinkable") or []]
        incomplete = {}
        per_node = res.get("per_node") or {}
        for a in agents:
            if done[a.name] is not None:
                continue
            why = reasons(a.text(), pid12)
            held = per_node.get(a.node_id, {}).get("have_bytes", 0)
            incomplete[a.name] = {
                "have_over_s": round(held / size, 3),
                "reason": named(why[-1], names) if why else "no reason logged",
                "reason_lines": len(why),
            }
        row["incomplete"] = incomplete
        row["per_device_s"] = done
        row["log_problems"] = log_problems(nodes, [("send", send_err)])
        return row
    except Exception as exc:
        row["error"] = f"{type(exc).__name__}: {exc}"[:2000]
        _note(f"{tag} failed: {row['error'][:400]}")
        row["log_problems"] = log_problems(nodes, [])
        return row
    finally:
        if send_proc is not None and send_proc.poll() is None:
            send_proc.kill()
            send_proc.wait(10)
        row["exit_codes"] = stop_nodes(nodes)
        left = {ns.name: pids for ns in lab.made if (pids := netns_pids(ns))}
        if left:
            row["left_running"] = left
        shutil.rmtree(runwork, ignore_errors=True)  # payload copies; logs stay in logdir


# ============================================================================================
# printing, main
# ============================================================================================


def _f(v: Any, fmt: str = "{:.2f}") -> str:
    return "-" if v is None else fmt.format(v)


def print_table(out: dict[str, Any]) -> None:
    p = out["params"]
    print(
        f"NAT benchmark: {p['homes']} homes x {p['per_home']} device(s) ({p['carrier_homes']} carrier-NAT), "
        f"{p['size_mib']} MiB, {p['rate_mbit']:g} Mbit/s uploads"
        f"{', home uplinks ' + format(p['home_rate_mbit'], 'g') + ' Mbit/s' if p['home_rate_mbit'] else ''}, "
        f"public {p['public']}, listen {p['listen']}, timeout {p['timeout']:g} s; elapsed {out['elapsed_s']} s"
    )
    print(f"edgeagent checkout: {out['environment']['git']}")
    print(f"lab self-check: {'ok' if out['lab_check']['ok'] else 'FAILED'}")
    head = f"{'#':>2} {'done':>5} {'last s':>7} {'T_LB s':>6} {'last/LB':>7} {'star s':>6} {'src/S':>6} {'eth0/S':>6} "
    print(head + f"{'rep':>4} {'replan':>6} {'exit':>4} {'send s':>7}  notes")
    for r in out["runs"]:
        if "error" in r:
            print(f"{r['run']:>2} ERROR {r['error'][:200]}")
            continue
        print(
            f"{r['run']:>2} {r['completed']:>2}/{r['receivers']:<2} {_f(r['last_s']):>7} {r['t_lb_s']:>6.2f} "
            f"{_f(r['last_over_tlb']):>7} {r['star_s']:>6.1f} {r['source_egress_over_s']:>6.2f} "
            f"{r['source_eth0_over_s']:>6.2f} {r['repairs']:>4} {r['replans']:>6} {r['send_exit']:>4} "
            f"{r['send_seconds']:>7.1f}  first {_f(r['first_s'])} s, median completed {_f(r['median_completed_s'])} s"
        )
        for why, c in r["replans_by_why"].items():
            print(f"     re-plan x{c}: {why}")
        for name, inc in sorted(r["incomplete"].items()):
            print(
                f"     {name} incomplete (holds {inc['have_over_s']:.2f} S): {inc['reason']} "
                f"[{inc['reason_lines']} lines]"
            )
        if r.get("left_running"):
            print(f"     PROCESSES LEFT RUNNING: {r['left_running']}")
        if r["log_problems"]["tracebacks"]:
            print(f"     {r['log_problems']['tracebacks']} traceback(s) in the logs")
    print(
        "done: completed/receivers (send result); last s: last device's completion after the domain started "
        "assigning (logs; - unless all completed); T_LB = S / min(source, device upload); star s = N*S/u_src; "
        "src/S: source_wire_bytes / S; eth0/S: bytes out of the domain's eth0 / S; rep: the send result's repairs; "
        "replan: the domain's 're-planned around' lines"
    )
    if out.get("logs"):
        print(f"logs kept in {out['logs']}")


def _git_state() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        )
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--short", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    changed = [ln.strip() for ln in dirty.stdout.split("\n") if ln.strip()]
    return head.stdout.strip() + (f" + uncommitted: {', '.join(changed)}" if changed else "")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--homes", type=int, default=6, help="homes, each behind its own NAT router (default 6)")
    ap.add_argument("--per-home", type=int, default=1, help="devices per home, 1..6 (default 1)")
    ap.add_argument("--carrier-homes", type=int, default=0, help="the last K homes are carrier-NAT (--random-fully)")
    ap.add_argument("--size-mib", type=float, default=32, help="payload size, MiB of random bytes (default 32)")
    ap.add_argument("--rate-mbit", type=float, default=50.0, help="source and per-device upload, Mbit/s (default 50)")
    ap.add_argument("--home-rate-mbit", type=float, help="also shape each home's uplink (router wan), Mbit/s")
    ap.add_argument("--runs", type=int, default=1, help="runs (default 1)")
    ap.add_argument("--timeout", type=float, default=300.0, help="send --timeout, s (default 300)")
    ap.add_argument("--public", choices=("per-home", "shared"), default="per-home", help="public addressing")
    ap.add_argument(
        "--listen",
        choices=("any", "private"),
        default="any",
        help="devices listen on ws://0.0.0.0:7400 (any, the default) or on their private address",
    )
    ap.add_argument("--queue-ms", type=float, default=100.0, help="tbf latency (its queue), ms (default 100)")
    ap.add_argument("--burst-kb", type=float, default=64.0, help="tbf bucket, KiB (default 64)")
    ap.add_argument("--tcp-cc", default="reno", help="TCP congestion control in every namespace ('host': leave it)")
    ap.add_argument("--tmp", help="where the work directory goes (default: the system temp dir)")
    ap.add_argument("--keep", action="store_true", help="keep the nodes' logs (payload copies are always deleted)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    if not 1 <= args.homes <= 200 or not 1 <= args.per_home <= 6 or not 0 <= args.carrier_homes <= args.homes:
        ap.error("--homes 1..200, --per-home 1..6, --carrier-homes 0..homes")
    if args.size_mib <= 0 or args.runs < 1 or args.rate_mbit <= 0 or args.timeout <= 0:
        ap.error("--size-mib, --rate-mbit, --timeout > 0 and --runs >= 1 are required")
    if os.geteuid() != 0:
        _note("not root: the NAT lab needs network namespaces and iptables")
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the finally blocks
    signal.signal(signal.SIGINT, signal.default_int_handler)
    started = time.perf_counter()
    git_at_start = _git_state()
    workdir = Path(tempfile.mkdtemp(prefix=f"ea-nat-{secrets.token_hex(2)}-", dir=args.tmp))
    size = int(args.size_mib * MiB)
    carrier = range(args.homes - args.carrier_homes + 1, args.homes + 1)
    lab = NatLab([args.per_home] * args.homes, carrier, public=args.public)
    runs: list[dict[str, Any]] = []
    check: dict[str, Any] = {"ok": False}
    layout: dict[str, Any] = {}
    try:
        try:
            lab.build()
        except NetnsUnavailable as exc:
            _note(f"the NAT lab cannot be built here: {exc}")
            return 2
        layout = lab.layout()
        check = lab.self_check()
        if not check["ok"]:
            _note(f"the lab failed its self-check: {[c for c in check['checks'] if not c['ok']]}")
            return 1
        lab.shape(lab.domain, args.rate_mbit, queue_ms=args.queue_ms, burst_kb=args.burst_kb)
        lab.shape_devices(args.rate_mbit, queue_ms=args.queue_ms, burst_kb=args.burst_kb)
        if args.home_rate_mbit:
            for home in lab.homes:
                lab.shape(home.router, args.home_rate_mbit, "wan", queue_ms=args.queue_ms, burst_kb=args.burst_kb)
        if args.tcp_cc != "host":
            lab.set_tcp_cc(args.tcp_cc)
        payload = workdir / "payload.bin"
        with payload.open("wb") as f:
            for _ in range(size // MiB):
                f.write(os.urandom(MiB))
            f.write(os.urandom(size % MiB))
        setup = Setup(lab, workdir, payload, size, args.rate_mbit, args.timeout, args.listen, args.keep)
        for r in range(1, args.runs + 1):
            _note(f"run {r}: {args.homes} homes x {args.per_home}, {args.size_mib:g} MiB at {args.rate_mbit:g} Mbit/s")
            row = one_run(setup, r)
            _note(
                f"  -> {row.get('completed')}/{row.get('receivers')} completed, last {row.get('last_s')} s, "
                f"re-plans {row.get('replans')}, src/S {row.get('source_egress_over_s')}"
            )
            runs.append(row)
    finally:
        kill_everything()
        lab.close()
        left = lab.leftovers()
        if left:
            _note(f"namespaces left over: {left}")
        if args.keep:
            (workdir / "payload.bin").unlink(missing_ok=True)
            shutil.rmtree(workdir / "runs", ignore_errors=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    out: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "git": git_at_start,
            "git_at_end": _git_state(),
        },
        "params": {
            "homes": args.homes,
            "per_home": args.per_home,
            "carrier_homes": args.carrier_homes,
            "size_mib": args.size_mib,
            "rate_mbit": args.rate_mbit,
            "home_rate_mbit": args.home_rate_mbit,
            "runs": args.runs,
            "timeout": args.timeout,
            "public": args.public,
            "listen": args.listen,
            "queue_ms": args.queue_ms,
            "burst_kb": args.burst_kb,
            "tcp_cc": args.tcp_cc,
            "domain": DOMAIN_ADDRESS,
        },
        "lab": layout,
        "lab_check": check,
        "runs": runs,
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
