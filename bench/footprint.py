#!/usr/bin/env python3
"""Footprint of a relay-only device agent: idle memory, what it maps, start-up time, idle traffic.

Each run starts, on 127.0.0.1 and as the CLI is used (separate processes, stdin from
/dev/null, mDNS off, fresh state directories), a domain
``edgeagent domain --listen ws://127.0.0.1:DPORT --open --mdns off --state D`` and then the
device under test ``edgeagent run --listen ws://127.0.0.1:PORT --domain ws://127.0.0.1:DPORT
--mdns off --state DIR`` (no ``--data``, no job), and measures:

* start-up: seconds from just before the device process is spawned to its first successful
  ``status`` over the control socket, polled every 5 ms from this process with
  ``edgeagent.control.control_request`` ("control"). Then, after the idle window, the same
  from the spawn of a second device (fresh state) to the first ``edgeagent status --state DIR
  --json`` subprocess that exits 0, polled back to back ("cli"; each try pays the CLI's own
  interpreter start, on the same CPUs the starting agent uses), and the time one such
  subprocess takes against a node that is up ("cli_once", median of 3);
* idle memory, once the device's link to the domain is authorised, its registration answered
  and ``--settle`` seconds have passed (its first active link probe is done by then), and again
  at the end of the idle window: VmRSS from /proc/PID/status and Pss (shared pages divided
  among the processes that map them) from /proc/PID/smaps_rollup;
* what is mapped: whether numpy, aiortc, av (PyAV / libavcodec) or google.protobuf (its upb
  extension module) appear in /proc/PID/maps, and the site-packages each mapped file is from
  (pure-Python modules are read, not mapped: a shared object shows that a package is in use);
* idle traffic between device and domain over a ``--window`` of seconds (60, or 10 with
  ``--quick``), nothing else happening: the link's own counters at both ends (``status``
  ``links[].bytes_sent/bytes_received``: transport messages, i.e. encrypted records without
  WebSocket framing) with the bytes by message type, and the kernel's counters for the TCP
  connection (``ss -ti`` at the domain's end: bytes_sent/bytes_received and segments), from
  which the IP bytes are payload + 52 bytes a segment (IPv4 20 + TCP 20 + timestamps 12; a
  real medium adds its own framing, 38 bytes a frame on Ethernet). Each figure is scaled to an
  hour (x 3600 / window), per run and for all the windows pooled. KB = 1000 bytes.

  Either end of a link sends a Ping when, at one of its ticks (every ``keepalive`` seconds),
  it has received nothing for ``keepalive`` seconds (LinkOptions, edgeagent/links/base.py:
  15 s; dead after 45 s): one exchange every ~22 s, alternating ends, each a ~111-byte Ping
  record and a ~121-byte Pong (both name source and destination); the device refreshes its
  HopReport (~239 bytes) every
  ``hop_report_interval`` (60 s) and re-registers only when its network changes; each end
  probes each unmetered link every ``[routing] probe_interval`` (300 s) with one Ping padded to
  ``probe_bytes`` (256 KiB). A window shorter than that interval sees no probe (the first one
  runs at link-up, before the window), so the hourly figure "with probes" adds, at the
  configured interval, the Ping bytes each end sent before the window (that first probe and a
  keepalive or two), and says whether a probe fell inside the window instead. A window at least
  as long as the interval adds nothing: it shows the probes that happen, or that none do
  (``--window 300`` checks a change to the probing).

Figures are medians over ``--runs`` runs (5; ``--quick`` 1), each from a fresh domain. The
agents run with bytecode caching on, as an installed package does (pip writes the .pyc files):
PYTHONDONTWRITEBYTECODE is cleared for them and PYTHONPYCACHEPREFIX points into this run's
temporary directory, filled by one untimed start first. ``--cold`` keeps the environment as it
is instead (with PYTHONDONTWRITEBYTECODE=1 every start compiles edgeagent from source, ~0.2 s).
Targets (issue 18): idle RSS <= 35 MiB with neither numpy nor aiortc mapped; start to status
<= 0.5 s; idle traffic to the domain <= 100 KB/h on the wire.

Usage: python bench/footprint.py [--quick] [--json] [--runs N] [--window S] [--settle S]
                                 [--config FILE] [--cold]
``--config`` is passed to both agents (e.g. a ``[routing]`` table to try other intervals).
Only 127.0.0.1 is used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edgeagent.control import control_request  # noqa: E402
from edgeagent.exceptions import EdgeAgentError  # noqa: E402
from tests.procs import Proc, ProcGroup, free_port  # noqa: E402

#: substrings of /proc/PID/maps paths that show a package in use
MAPPED: dict[str, tuple[str, ...]] = {
    "numpy": ("/numpy/", "/numpy.libs/"),
    "aiortc": ("/aiortc/",),
    "av": ("/av/", "/av.libs/", "libavcodec"),
    "google.protobuf": ("/google/_upb/", "/google/protobuf/"),
}
IP_TCP_HEADER = 52  # IPv4 20 + TCP 20 + timestamps option 12
TARGETS = {"rss_mib": 35.0, "start_to_status_s": 0.5, "idle_kb_per_hour": 100.0}
POLL = 0.005


def edgeagent(*args: str) -> list[str]:
    return [sys.executable, "-m", "edgeagent.cli", *args]


# -- /proc and ss -----------------------------------------------------------------------------


def memory_kib(pid: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:", "RssAnon:", "RssFile:")):
            key, value = line.split(":", 1)
            out[key] = int(value.split()[0])
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith(("Pss:", "Pss_Anon:", "Pss_File:")):
                key, value = line.split(":", 1)
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def mapped(pid: int) -> tuple[dict[str, bool], list[str]]:
    paths = set()
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(None, 5)
        if len(parts) == 6 and parts[5].startswith("/"):
            paths.add(parts[5])
    found = {name: any(s in p for p in paths for s in subs) for name, subs in MAPPED.items()}
    packages = sorted({m.group(1) for p in paths if (m := re.search(r"site-packages/([^/]+)", p))})
    return found, packages


def tcp_counters(port: int) -> dict[str, int] | None:
    """Kernel counters of the established TCP connections whose local port is ``port`` (summed)."""
    if shutil.which("ss") is None:
        return None
    run = subprocess.run(
        ["ss", "-tinH", "state", "established", f"( sport = :{port} )"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=10,
    )
    if run.returncode != 0:
        return None
    total = {"bytes_sent": 0, "bytes_received": 0, "segs_out": 0, "segs_in": 0, "connections": 0}
    for key in ("bytes_sent", "bytes_received", "segs_out", "segs_in"):
        for m in re.finditer(rf"\b{key}:(\d+)", run.stdout):
            total[key] += int(m.group(1))
    total["connections"] = len(re.findall(r"\bsegs_out:", run.stdout))
    return total


# -- the agents -------------------------------------------------------------------------------


async def _status(state: Path, timeout: float = 5.0) -> dict[str, Any]:
    reply = await control_request(state, "status", timeout=timeout)
    return dict(reply["status"])


def status(state: Path) -> dict[str, Any]:
    return asyncio.run(_status(state))


async def _first_status(state: Path, proc: Proc, t0: float, limit: float) -> float:
    while True:
        try:
            await _status(state, timeout=2.0)
            return time.monotonic() - t0
        except EdgeAgentError:
            if not proc.alive():
                raise RuntimeError(f"the device exited ({proc.popen.poll()}); log:\n{proc.log_text()}") from None
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"no status within {limit}s; log:\n{proc.log_text()}") from None
            await asyncio.sleep(POLL)


def first_cli_status(state: Path, proc: Proc, t0: float, limit: float, env: dict[str, str]) -> float:
    while True:
        run = subprocess.run(
            edgeagent("status", "--state", str(state), "--json"),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            timeout=30,
            env=env,
        )
        if run.returncode == 0:
            return time.monotonic() - t0
        if not proc.alive() or time.monotonic() - t0 > limit:
            raise RuntimeError(f"no CLI status within {limit}s; log:\n{proc.log_text()}")


def cli_once(state: Path, env: dict[str, str]) -> float:
    t0 = time.monotonic()
    run = subprocess.run(
        edgeagent("status", "--state", str(state), "--json"),
        capture_output=True,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
        env=env,
    )
    if run.returncode != 0:
        raise RuntimeError(f"edgeagent status failed: {run.stderr.decode(errors='replace')[-300:]}")
    return time.monotonic() - t0


def link_to(doc: dict[str, Any], peer: str) -> dict[str, Any] | None:
    return next((ln for ln in doc["links"] if ln["peer"] == peer), None)


def wait_settled(state: Path, domain_id: str, proc: Proc, limit: float) -> dict[str, Any]:
    """The device's status once its link to the domain is authorised and its registration answered."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        doc = status(state)
        row = link_to(doc, domain_id)
        if row is not None and row["authorised"] and doc.get("bytes_sent_by_type", {}).get("PeerRecord"):
            return doc
        if not proc.alive():
            break
        time.sleep(0.05)
    raise RuntimeError(f"the device did not register with the domain within {limit}s; log:\n{proc.log_text()}")


def stop(proc: Proc) -> None:
    """SIGTERM by PID, then SIGKILL after 5 s."""
    if proc.alive():
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.popen.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
    proc.kill()  # reaps and closes the pipe (a no-op signal-wise once it has exited)


def device_argv(dport: int, state: Path, config: Sequence[str]) -> list[str]:
    """The relay-only device: ``edgeagent run --listen ... --domain ... --mdns off --state DIR``."""
    argv = ["run", "--listen", f"ws://127.0.0.1:{free_port()}", "--domain", f"ws://127.0.0.1:{dport}"]
    return edgeagent(*argv, "--mdns", "off", "--state", str(state), *config)


def start_domain(group: ProcGroup, work: Path, config: Sequence[str], env: dict[str, str]) -> tuple[Proc, int]:
    dport = free_port()
    argv = ["domain", "--listen", f"ws://127.0.0.1:{dport}", "--open", "--mdns", "off", "--state", str(work / "domain")]
    dom = group.spawn("domain", edgeagent(*argv, *config), env=env)
    dom.info = dom.read_json_line(30.0)
    if dom.info.get("event") != "started":
        raise RuntimeError(f"the domain did not start: {dom.info}")
    return dom, dport


def warm_up(work: Path, config: Sequence[str], env: dict[str, str]) -> None:
    """One untimed start of a domain and a device, so that both run from cached bytecode after."""
    with ProcGroup(work) as group:
        dom, dport = start_domain(group, work, config, env)
        dev = group.spawn("device", device_argv(dport, work / "device", config), env=env)
        asyncio.run(_first_status(work / "device", dev, time.monotonic(), 60.0))
        cli_once(work / "device", env)
        stop(dev)
        stop(dom)


def one_run(args: argparse.Namespace, config: Sequence[str], work: Path, env: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with ProcGroup(work) as group:  # every process it started is killed by PID on exit
        dom, dport = start_domain(group, work, config, env)
        dom_id, dom_state = str(dom.info["node_id"]), work / "domain"
        # the device under test: start-up measured with control_request
        state = work / "device"
        t0 = time.monotonic()
        dev = group.spawn("device", device_argv(dport, state, config), env=env)
        out["start_to_status_s"] = asyncio.run(_first_status(state, dev, t0, 30.0))
        doc = wait_settled(state, dom_id, dev, 30.0)
        out["start_to_registered_s"] = time.monotonic() - t0
        dev_id = doc["node_id"]
        time.sleep(args.settle)
        out["memory_kib"] = memory_kib(dev.pid)
        out["mapped"], out["mapped_packages"] = mapped(dev.pid)
        out["domain_memory_kib"] = memory_kib(dom.pid)
        # the idle window
        d0, m0, k0 = status(state), status(dom_state), tcp_counters(dport)
        w0 = time.monotonic()
        time.sleep(args.window)
        d1, m1, k1 = status(state), status(dom_state), tcp_counters(dport)
        window = time.monotonic() - w0
        out["memory_end_kib"] = memory_kib(dev.pid)
        out["mapped_end"], _ = mapped(dev.pid)
        out["traffic"] = traffic(d0, d1, m0, m1, k0, k1, dom_id, dev_id, window, args.probe)
        stop(dev)
        # a second device: start-up measured with the CLI, then one CLI call against it when up
        state2 = work / "device-cli"
        t0 = time.monotonic()
        dev2 = group.spawn("device-cli", device_argv(dport, state2, config), env=env)
        out["start_to_cli_status_s"] = first_cli_status(state2, dev2, t0, 30.0, env)
        out["cli_status_once_s"] = statistics.median(cli_once(state2, env) for _ in range(3))
        stop(dev2)
        stop(dom)
    return out


def traffic(
    d0: dict[str, Any],
    d1: dict[str, Any],
    m0: dict[str, Any],
    m1: dict[str, Any],
    k0: dict[str, int] | None,
    k1: dict[str, int] | None,
    dom_id: str,
    dev_id: str,
    window: float,
    probe: tuple[float, int],
) -> dict[str, Any]:
    per_hour = 3600.0 / window
    a0, a1 = link_to(d0, dom_id), link_to(d1, dom_id)
    b0, b1 = link_to(m0, dev_id), link_to(m1, dev_id)
    if a0 is None or a1 is None or b0 is None or b1 is None:
        raise RuntimeError("the device's link to the domain went away during the window")
    sent = a1["bytes_sent"] - a0["bytes_sent"]
    received = a1["bytes_received"] - a0["bytes_received"]

    def by_type(before: dict[str, Any], after: dict[str, Any]) -> dict[str, int]:
        x, y = before["bytes_sent_by_type"], after["bytes_sent_by_type"]
        return {k: y[k] - x.get(k, 0) for k in sorted(y) if y[k] - x.get(k, 0)}

    interval, probe_bytes = probe
    dev_types, dom_types = by_type(d0, d1), by_type(m0, m1)
    # the Ping bytes each end sent before the window: its link-up probe (and a keepalive or two)
    probe_cost = d0["bytes_sent_by_type"].get("Ping", 0) + m0["bytes_sent_by_type"].get("Ping", 0)
    probe_in_window = max(dev_types.get("Ping", 0), dom_types.get("Ping", 0)) > probe_bytes // 2
    out: dict[str, Any] = {
        "window_s": round(window, 1),
        "link": {
            "device_sent": sent,
            "device_received": received,
            "domain_sent": b1["bytes_sent"] - b0["bytes_sent"],
            "domain_received": b1["bytes_received"] - b0["bytes_received"],
            "bytes_per_hour": round((sent + received) * per_hour),
        },
        "device_sent_by_type": dev_types,
        "domain_sent_by_type": dom_types,
        "probe": {
            "interval_s": interval,
            "probe_bytes": probe_bytes,
            "in_window": probe_in_window,
            "ping_bytes_before_window": probe_cost,
            # a window as long as the interval shows the probes that happen (or that none do) itself
            "bytes_per_hour": 0
            if probe_in_window or interval <= 0 or window >= interval
            else round(probe_cost * 3600.0 / interval),
        },
    }
    if k0 is not None and k1 is not None and k0["connections"] == k1["connections"] == 1:
        payload = (k1["bytes_sent"] - k0["bytes_sent"]) + (k1["bytes_received"] - k0["bytes_received"])
        segs = (k1["segs_out"] - k0["segs_out"]) + (k1["segs_in"] - k0["segs_in"])
        ip = payload + IP_TCP_HEADER * segs
        out["tcp"] = {
            "payload_bytes": payload,
            "segments": segs,
            "ip_bytes": ip,
            "ip_bytes_per_hour": round(ip * per_hour),
            "ip_bytes_per_hour_with_probes": round(ip * per_hour) + out["probe"]["bytes_per_hour"],
        }
    else:
        out["tcp"] = None
    return out


# -- main -------------------------------------------------------------------------------------


def med(runs: list[dict[str, Any]], *path: str) -> float | None:
    vals = []
    for r in runs:
        v: Any = r
        for key in path:
            v = v.get(key) if isinstance(v, dict) else None
        if isinstance(v, int | float):
            vals.append(float(v))
    return statistics.median(vals) if vals else None


def pooled(runs: list[dict[str, Any]]) -> float | None:
    """IP bytes an hour over all the windows together: idle traffic comes in events 15-60 s apart,
    so one short window sees one more or one fewer of them; the pooled figure averages that out."""
    tcp = [r["traffic"]["tcp"] for r in runs]
    if any(t is None for t in tcp):
        return None
    return round(sum(t["ip_bytes"] for t in tcp) * 3600.0 / sum(r["traffic"]["window_s"] for r in runs))


def probe_settings(config: str | None) -> tuple[float, int]:
    from edgeagent.config import load_config

    routing = load_config(Path(config) if config else None).routing
    return float(routing.probe_interval), int(routing.probe_bytes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="one run with a 10 s window (smoke test)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--window", type=float, help="seconds of idle traffic measured (default 60; --quick 10)")
    ap.add_argument("--settle", type=float, help="seconds after registration before memory is read (5; --quick 3)")
    ap.add_argument("--config", metavar="FILE", help="a TOML config passed to both agents")
    ap.add_argument("--cold", action="store_true", help="leave bytecode caching as the environment has it")
    args = ap.parse_args()
    runs_n = 1 if args.quick else max(1, args.runs)
    args.window = args.window if args.window is not None else (10.0 if args.quick else 60.0)
    args.settle = args.settle if args.settle is not None else (3.0 if args.quick else 5.0)
    args.probe = probe_settings(args.config)
    config = ["--config", str(Path(args.config).resolve())] if args.config else []
    from edgeagent.links.base import LinkOptions

    keepalive = LinkOptions().keepalive
    started = time.perf_counter()
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="ea-footprint-") as tmp:
        env = dict(os.environ)
        if not args.cold:
            env["PYTHONDONTWRITEBYTECODE"] = ""  # empty: bytecode is written (as pip does at install)
            env["PYTHONPYCACHEPREFIX"] = str(Path(tmp) / "pycache")
            (Path(tmp) / "warm").mkdir()
            warm_up(Path(tmp) / "warm", config, env)
        for i in range(runs_n):
            work = Path(tmp) / f"run{i}"
            work.mkdir()
            runs.append(one_run(args, config, work, env))
    mib = {k: (med(runs, "memory_kib", k) or 0) / 1024 for k in ("VmRSS", "Pss", "Pss_Anon", "Pss_File", "VmHWM")}
    mib_end = {k: (med(runs, "memory_end_kib", k) or 0) / 1024 for k in ("VmRSS", "Pss")}
    summary: dict[str, Any] = {
        "rss_mib": round(mib["VmRSS"], 1),
        "pss_mib": round(mib["Pss"], 1),
        "pss_anon_mib": round(mib["Pss_Anon"], 1),
        "pss_file_mib": round(mib["Pss_File"], 1),
        "hwm_mib": round(mib["VmHWM"], 1),
        "rss_end_mib": round(mib_end["VmRSS"], 1),
        "pss_end_mib": round(mib_end["Pss"], 1),
        "domain_rss_mib": round((med(runs, "domain_memory_kib", "VmRSS") or 0) / 1024, 1),
        "mapped_in_any_run": {k: any(r["mapped"][k] or r["mapped_end"][k] for r in runs) for k in MAPPED},
        "start_to_status_s": round(med(runs, "start_to_status_s") or 0, 3),
        "start_to_registered_s": round(med(runs, "start_to_registered_s") or 0, 3),
        "start_to_cli_status_s": round(med(runs, "start_to_cli_status_s") or 0, 3),
        "cli_status_once_s": round(med(runs, "cli_status_once_s") or 0, 3),
        "link_bytes_per_hour": round(med(runs, "traffic", "link", "bytes_per_hour") or 0),
        "ip_bytes_per_hour": med(runs, "traffic", "tcp", "ip_bytes_per_hour"),
        "probe_bytes_per_hour": round(med(runs, "traffic", "probe", "bytes_per_hour") or 0),
        "ip_bytes_per_hour_with_probes": med(runs, "traffic", "tcp", "ip_bytes_per_hour_with_probes"),
        "ip_bytes_per_hour_pooled": pooled(runs),
    }
    out: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()} {platform.release()}",
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "EDGEAGENT_MALLOC_TUNE": os.environ.get("EDGEAGENT_MALLOC_TUNE", "1"),
            "bytecode": "as the environment has it (--cold)"
            if args.cold
            else "cached (PYTHONPYCACHEPREFIX in the temp dir, warmed by one untimed start)",
        },
        "method": {
            "runs": runs_n,
            "window_s": args.window,
            "settle_s": args.settle,
            "config": args.config,
            "keepalive_s": keepalive,
            "probe_interval_s": args.probe[0],
            "probe_bytes": args.probe[1],
            "units": "MiB = 2**20 bytes; KB = 1000 bytes; medians over runs",
        },
        "median": summary,
        "targets": TARGETS,
        "runs": runs,
        "elapsed_s": round(time.perf_counter() - started, 1),
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    s = summary
    print(
        f"footprint of a relay-only device agent, loopback, {runs_n} run(s), {args.window:.0f} s idle window; medians"
    )
    print(
        f"idle memory after registration + {args.settle:.0f} s: RSS {s['rss_mib']} MiB (target <= 35), "
        f"Pss {s['pss_mib']} MiB (anon {s['pss_anon_mib']}, file {s['pss_file_mib']}), peak RSS {s['hwm_mib']} MiB"
    )
    print(f"at the end of the window: RSS {s['rss_end_mib']} MiB, Pss {s['pss_end_mib']} MiB")
    print("mapped: " + ", ".join(f"{k} {'YES' if v else 'no'}" for k, v in s["mapped_in_any_run"].items()))
    print(f"site-packages mapped (run 1): {', '.join(runs[0]['mapped_packages'])}")
    print(
        f"start -> status: {s['start_to_status_s']:.3f} s over the control socket (target <= 0.5), "
        f"{s['start_to_cli_status_s']:.3f} s with `edgeagent status` subprocesses "
        f"(one call on a running node: {s['cli_status_once_s']:.3f} s); "
        f"registered at {s['start_to_registered_s']:.3f} s"
    )
    t0 = runs[0]["traffic"]
    print(
        f"idle traffic device<->domain: link records {s['link_bytes_per_hour'] / 1000:.1f} KB/h"
        + (
            f", IP {s['ip_bytes_per_hour'] / 1000:.1f} KB/h (all windows pooled: "
            f"{s['ip_bytes_per_hour_pooled'] / 1000:.1f}; target <= 100)"
            if s["ip_bytes_per_hour"] is not None
            else " (ss unavailable: no TCP counters)"
        )
    )
    print(
        f"  + link probes every {args.probe[0]:.0f} s: {s['probe_bytes_per_hour'] / 1000:.1f} KB/h"
        + (
            f" -> {s['ip_bytes_per_hour_with_probes'] / 1000:.1f} KB/h with probes"
            if s["ip_bytes_per_hour_with_probes"] is not None
            else ""
        )
    )
    print(f"  run 1 by type, device sent {t0['device_sent_by_type']}, domain sent {t0['domain_sent_by_type']}")
    print(f"  keepalive {keepalive:.0f} s (LinkOptions); elapsed {out['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
