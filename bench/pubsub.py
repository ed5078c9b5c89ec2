#!/usr/bin/env python3
"""Pub-sub and stream benchmark on loopback: fan-out rate and latency to 20 subscribers; stream vs raw link.

Pub-sub, per run (fresh processes, state and keys each run): one domain process
(``edgeagent domain --listen ws://127.0.0.1:PORT --open``), ``--subscribers`` (20) subscriber
processes of one Node each and publishers, all ``python -m tests.pubsub_agent`` (see its
docstring). Two phases on one topic, told apart by publisher (a subscriber reports per publisher):

* latency: a publisher paced at ``--latency-rate`` msg/s (1000) for ``--latency-seconds`` (3 s);
  per subscriber the median and p99 of receive time - send time, two ways: the value's own
  float-ms stamp (``t``, taken just before ``publish()``; exact) and ``Message.published_ms``
  (stamped once per Publish batch with the batch's oldest message, whole ms). Publisher and
  subscribers read the same host clock. Figures: the median over subscribers of their p50, the
  median and the worst of their p99.
* throughput: ``--messages`` (20,000) published as fast as PubSub's backpressure allows. Per
  subscriber, delivered rate = messages it got / (its last receive - the publisher's first
  publish); figures: the slowest subscriber (the target is per subscriber: >= 5,000 msg/s each)
  and the median one; also the publisher's publish() and acknowledged rates, the domain's CPU
  (utime + stime from /proc over the phase) and the host's CPU busy share, and losses.

Stream, per run: 256 MiB (``--stream-mib``) from this process to a child process, two ways over
the same kind of link (WebSocket on 127.0.0.1, Noise-encrypted, default LinkOptions, 16 MiB
window), in alternating order:

* raw: ``bench/links.py``'s own "link" row: a bare ``Link.send`` of 256 KiB ``Chunk`` frames to a
  bare link listener (``bench/links.py --serve link``), timed until the receiver's reply that it
  holds every byte;
* stream: ``node.send_stream(peer, data)`` between two Nodes (receiver: ``--serve-stream``, writing
  to its state directory under ``--tmp``), timed until the receiver's final ack (all bytes
  written); the receiver's SHA-256 is checked against the data. Target: stream >= 0.8x raw.

Each figure is the median of ``--runs`` (3) runs. ``--profile`` adds one pub-sub run whose domain
is this script in ``--serve-domain`` mode (the same Node, role "domain") under cProfile, enabled
for the throughput phase only, and prints where the domain's time goes.

The network rule: only 127.0.0.1; every process is started here and killed by its PID in a
``finally`` block; every wait is bounded.

Usage: .venv/bin/python bench/pubsub.py [--runs 3] [--subscribers 20] [--messages 20000]
           [--latency-rate 1000] [--latency-seconds 3] [--stream-mib 256] [--no-stream]
           [--no-pubsub] [--profile] [--quick] [--tmp DIR] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import platform
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TOPIC = "bench"
CHILD_TIMEOUT = 180.0


# -- child processes --------------------------------------------------------------------------


class Child:
    """A child process and its stdout JSON lines (bounded waits); killed by PID in ``kill``."""

    def __init__(self, argv: list[str], log: Path) -> None:
        self.log = log
        with open(log, "wb") as err:
            self.popen = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        self.buf = b""
        self.eof = False

    @property
    def pid(self) -> int:
        return self.popen.pid

    def next(self, timeout: float) -> dict[str, Any] | None:
        assert self.popen.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buf:
            if self.eof:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pid {self.pid}: no output line within {timeout}s; log:\n{tail}")
            ready, _, _ = select.select([self.popen.stdout.fileno()], [], [], remaining)
            if ready:
                data = os.read(self.popen.stdout.fileno(), 1 << 16)
                if data:
                    self.buf += data
                else:
                    self.eof = True
        line, self.buf = self.buf.split(b"\n", 1)
        return dict(json.loads(line))

    def until(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            obj = self.next(max(0.01, deadline - time.monotonic()))
            if obj is None:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pid {self.pid} ended before {event!r}; log:\n{tail}")
            if obj.get("event") == event:
                return obj

    def kill(self) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(10)
        if self.popen.stdout is not None:
            self.popen.stdout.close()


def free_port() -> int:
    from tests.procs import free_port as fp

    return fp()


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def host_busy() -> tuple[float, float]:
    """(busy, total) jiffies of the host, from /proc/stat."""
    vals = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = vals[3] + (vals[4] if len(vals) > 4 else 0)
    return float(sum(vals) - idle), float(sum(vals))


def agent(tmp: Path, name: str, url: str, *args: str) -> Child:
    argv = [sys.executable, "-m", "tests.pubsub_agent", "--state", str(tmp / name), "--domain", url, "--topic", TOPIC]
    return Child([*argv, *args], tmp / f"{name}.log")


# -- pub-sub ----------------------------------------------------------------------------------


def pubsub_run(args: argparse.Namespace, tmp: Path, profile_out: Path | None = None) -> dict[str, Any]:
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    url = f"ws://127.0.0.1:{port}"
    n_lat = max(1, int(args.latency_rate * args.latency_seconds))
    n_thr = args.messages
    children: list[Child] = []
    try:
        if profile_out is None:
            dom_argv = [sys.executable, "-m", "edgeagent.cli", "domain", "--listen", url, "--open"]
            dom_argv += ["--state", str(tmp / "domain")]
        else:
            dom_argv = [sys.executable, __file__, "--serve-domain", str(port), str(tmp / "domain"), str(profile_out)]
        dom = Child(dom_argv, tmp / "domain.log")
        children.append(dom)
        dom.until("started", 30)
        subs = []
        for j in range(args.subscribers):
            sub_args = ["--count", str(n_lat + n_thr), "--every", str(10**9), "--deadline", str(CHILD_TIMEOUT)]
            subs.append(agent(tmp, f"s{j}", url, *sub_args))
            children.append(subs[-1])
        t_start = time.monotonic()
        sub_cpu0 = [s.until("subscribed", 120)["cpu_s"] for s in subs]
        startup_s = time.monotonic() - t_start
        # latency phase: paced
        lat_pub = agent(tmp, "pub-lat", url, "--publish", str(n_lat), "--rate", str(args.latency_rate), "--stamp")
        children.append(lat_pub)
        lat_id = lat_pub.until("started", 60)["node_ids"][0]
        lat_pub.until("done", 120)
        time.sleep(1.0)  # let the last deliveries land before the next phase
        # throughput phase: as fast as backpressure allows
        thr_pub = agent(tmp, "pub-thr", url, "--publish", str(n_thr), "--rate", "0", "--stamp")
        children.append(thr_pub)
        thr_started = thr_pub.until("started", 60)
        thr_id = thr_started["node_ids"][0]
        if profile_out is not None:
            os.kill(dom.pid, signal.SIGUSR1)  # start profiling
        cpu0, busy0 = cpu_seconds(dom.pid), host_busy()
        w0 = time.monotonic()
        published = thr_pub.until("published", 120)
        acked = thr_pub.until("done", 120)
        dones = [s.until("done", CHILD_TIMEOUT) for s in subs]
        cpu1, busy1 = cpu_seconds(dom.pid), host_busy()
        wall = time.monotonic() - w0
        if profile_out is not None:
            dom.popen.send_signal(signal.SIGTERM)  # dumps the profile and exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                dom.popen.wait(60)
    finally:
        for c in children:
            c.kill()
    rates, lat50, lat99, pub50, pub99, thr50, thr99, sub_cpu = [], [], [], [], [], [], [], []
    lost = app_dropped = missed = 0
    for d, c0 in zip(dones, sub_cpu0, strict=True):
        sub_cpu.append((d["cpu_s"] - c0) / max(1, d["received"]))
        bl, bt = d["by_publisher"].get(lat_id), d["by_publisher"].get(thr_id)
        got = bt["received"] if bt else 0
        lost += n_thr - got + n_lat - (bl["received"] if bl else 0)
        app_dropped += d["pubsub"]["app_dropped"]
        missed += d["pubsub"]["missed"]
        if bt:
            rates.append(got / max(1e-3, (bt["last_rx"] - published["start_ms"]) / 1000.0))
            thr50.append(bt["lat_ms"]["stamp"]["p50"])
            thr99.append(bt["lat_ms"]["stamp"]["p99"])
        if bl and bl["lat_ms"]["stamp"]:
            lat50.append(bl["lat_ms"]["stamp"]["p50"])
            lat99.append(bl["lat_ms"]["stamp"]["p99"])
            pub50.append(bl["lat_ms"]["pub"]["p50"])
            pub99.append(bl["lat_ms"]["pub"]["p99"])
    cores = os.cpu_count() or 1
    # CPU per message, which does not depend on what else runs on the host: the domain per delivery
    # (one message to one subscriber), a subscriber per message, the publisher per message
    dom_us = (cpu1 - cpu0) / (n_thr * len(dones)) * 1e6
    sub_us = statistics.median(sub_cpu) * 1e6
    pub_us = (acked["cpu_s"] - thr_started["cpu_s"]) / n_thr * 1e6
    s_n = len(dones)
    return {
        "subscribers": len(dones),
        "startup_s": round(startup_s, 2),
        "publish_rate": published["rate"],
        "acked_rate": acked["rate"],
        "delivered_rate_min": round(min(rates)) if rates else 0,
        "delivered_rate_median": round(statistics.median(rates)) if rates else 0,
        "delivered_total_rate": round(sum(rates)),
        "latency_ms": {
            "rate": args.latency_rate,
            "p50_median": _med(lat50),
            "p99_median": _med(lat99),
            "p99_worst": max(lat99) if lat99 else None,
            "published_ms_p50_median": _med(pub50),
            "published_ms_p99_median": _med(pub99),
        },
        "saturated_latency_ms": {"p50_median": _med(thr50), "p99_median": _med(thr99)},
        "cpu_us_per_message": {
            "domain_per_delivery": round(dom_us, 1),
            "subscriber": round(sub_us, 1),
            "publisher": round(pub_us, 1),
            # what an otherwise idle host of this many cores could deliver to each subscriber, from those
            "capacity_per_subscriber": round(cores * 1e6 / (s_n * (dom_us + sub_us) + pub_us)),
            "capacity_if_domain_alone_on_a_core": round(1e6 / (s_n * dom_us)),
        },
        "domain_cpu_share": round((cpu1 - cpu0) / wall, 3),  # of one core
        "host_cpu_busy": round((busy1[0] - busy0[0]) / max(1.0, busy1[1] - busy0[1]), 3),  # of all cores
        "phase_s": round(wall, 2),
        "cores": cores,
        "lost": lost,
        "app_dropped": app_dropped,
        "missed": missed,
    }


def _med(xs: list[float]) -> float | None:
    return round(statistics.median(xs), 2) if xs else None


async def serve_domain(port: int, state: Path, out: Path) -> None:
    """A domain Node in this process; cProfile on SIGUSR1, dumped to ``out`` on SIGTERM."""
    import cProfile

    from edgeagent.identity import Identity
    from edgeagent.node import Node, NodeConfig

    ident, _ = Identity.load_or_create(state)
    node = Node(ident, state, NodeConfig(role="domain", listen=[f"ws://127.0.0.1:{port}"], allow=None))
    await node.start()
    print(json.dumps({"event": "started", "listen": node.listen_urls}), flush=True)
    prof = cProfile.Profile()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGUSR1, prof.enable)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), CHILD_TIMEOUT * 2)
    prof.disable()
    prof.dump_stats(str(out))
    await node.stop()


def profile_summary(path: Path, top: int = 28) -> str:
    import io
    import pstats

    buf = io.StringIO()
    st = pstats.Stats(str(path), stream=buf)
    st.strip_dirs().sort_stats("tottime").print_stats(top)
    st.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


# -- streams ----------------------------------------------------------------------------------


async def serve_stream(state: Path) -> None:
    """A Node that accepts one stream, reports its size and SHA-256, and exits."""
    from edgeagent.identity import Identity
    from edgeagent.node import Node, NodeConfig

    ident, _ = Identity.load_or_create(state)
    node = Node(ident, state, NodeConfig(listen=["ws://127.0.0.1:0"], allow=None, link_probe_interval=0))
    done = asyncio.Event()
    got: dict[str, Any] = {}

    def on_complete(ins: Any) -> None:
        got.update(size=ins.size, path=str(ins.path))
        done.set()

    node.streams.on_complete = on_complete
    await node.start()
    print(json.dumps({"event": "started", "listen": node.listen_urls, "node_id": str(ident.node_id)}), flush=True)
    try:
        await asyncio.wait_for(done.wait(), CHILD_TIMEOUT)
        await asyncio.sleep(0.3)  # let the final ack leave

        def file_sha256(path: str) -> str:
            h = hashlib.sha256()
            with open(path, "rb") as f:
                while block := f.read(1 << 20):
                    h.update(block)
            return h.hexdigest()

        got["sha256"] = await asyncio.to_thread(file_sha256, got["path"])  # checked after the timing
        print(json.dumps({"event": "complete", **got}), flush=True)
        with contextlib.suppress(OSError):
            os.unlink(got["path"])
    finally:
        await node.stop()


async def send_stream(url: str, peer_id: str, data: bytes, state: Path) -> tuple[float, Any]:
    from edgeagent.identity import Identity
    from edgeagent.node import Node, NodeConfig
    from edgeagent.wire import NodeId

    node = Node(Identity.generate(), state, NodeConfig(allow=None, link_probe_interval=0))
    await node.start()
    try:
        peer = NodeId.parse(peer_id)
        await node.ensure_link(peer, (url,))
        await asyncio.sleep(0.3)  # the new link's first pings
        t0 = time.perf_counter()
        res = await asyncio.wait_for(node.send_stream(peer, data, name="bench"), CHILD_TIMEOUT)
        dt = time.perf_counter() - t0
        assert res.size == len(data), res
        return dt, res
    finally:
        await node.stop()


def _links_module() -> Any:
    spec = importlib.util.spec_from_file_location("bench_links", ROOT / "bench" / "links.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def stream_once(kind: str, data: bytes, digest: str, tmp: Path, info: dict[str, Any] | None = None) -> float:
    """Seconds to move ``data`` one way (raw link or node stream), child process receiving.

    For a stream, ``info`` gets the StreamResult's resent bytes and route changes.
    """
    total = len(data)
    if kind == "raw":
        links = _links_module()
        proc, port = links.start_receiver("link")
        try:
            return float(asyncio.run(asyncio.wait_for(links.send("link", port, total), CHILD_TIMEOUT)))
        finally:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
            proc.wait(10)
    rx_state = tmp / f"rx-{time.monotonic_ns()}"
    child = Child([sys.executable, __file__, "--serve-stream", str(rx_state)], tmp / "stream-rx.log")
    try:
        hello = child.until("started", 30)
        dt, res = asyncio.run(send_stream(hello["listen"][0], hello["node_id"], data, tmp / "stream-tx"))
        if info is not None:
            info.update(resent_bytes=res.resent_bytes, route_changes=res.route_changes)
        done = child.until("complete", 60)
        if done["size"] != total or done["sha256"] != digest:
            raise RuntimeError(f"stream arrived damaged: {done}")
        return dt
    finally:
        child.kill()
        shutil.rmtree(rx_state, ignore_errors=True)


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--serve-domain", nargs=3, metavar=("PORT", "STATE", "PROFILE"), help=argparse.SUPPRESS)
    ap.add_argument("--serve-stream", metavar="STATE", help=argparse.SUPPRESS)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--subscribers", type=int, default=20)
    ap.add_argument("--messages", type=int, default=20_000, help="messages in the throughput phase")
    ap.add_argument("--latency-rate", type=float, default=1000.0, help="msg/s in the latency phase")
    ap.add_argument("--latency-seconds", type=float, default=3.0)
    ap.add_argument("--stream-mib", type=int, default=256)
    ap.add_argument("--no-stream", action="store_true")
    ap.add_argument("--no-pubsub", action="store_true")
    ap.add_argument("--profile", action="store_true", help="one more pub-sub run with the domain under cProfile")
    ap.add_argument("--quick", action="store_true", help="one small run of each (smoke test)")
    ap.add_argument("--tmp", metavar="DIR", help="where state directories go (default: a new temp dir)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    logging.basicConfig(
        level=os.environ.get("BENCH_LOG", "WARNING"),  # e.g. BENCH_LOG=INFO (children inherit it)
        stream=sys.stderr,
        format="%(asctime)s %(process)d %(name)s %(levelname)s %(message)s",
    )
    from edgeagent._malloc import tune_malloc

    tuned = tune_malloc()  # as the edgeagent command does
    if args.serve_domain:
        port, state, out = args.serve_domain
        asyncio.run(serve_domain(int(port), Path(state), Path(out)))
        return 0
    if args.serve_stream:
        asyncio.run(serve_stream(Path(args.serve_stream)))
        return 0
    if args.quick:
        args.runs, args.subscribers, args.messages, args.latency_seconds, args.stream_mib = 1, 4, 4000, 1.0, 32
    tmp = Path(tempfile.mkdtemp(prefix="ea-bench-pubsub-", dir=args.tmp))
    started = time.perf_counter()
    out: dict[str, Any] = {
        "environment": {
            "python": platform.python_version(),
            "platform": f"{platform.system()} {platform.machine()}",
            "cpus": os.cpu_count(),
            "loadavg": os.getloadavg(),
            "malloc_tuned": tuned,
            "tmp": str(tmp),
        },
    }
    try:
        if not args.no_pubsub:
            runs, errors = [], []
            for r in range(args.runs):
                try:
                    runs.append(pubsub_run(args, tmp / f"pubsub-{r}"))
                except RuntimeError as exc:  # a child timed out or died: report it, go on
                    errors.append(str(exc)[:2000])
            if not runs:
                raise RuntimeError("every pub-sub run failed:\n" + "\n".join(errors))
            keys = ("publish_rate", "acked_rate", "delivered_rate_min", "delivered_rate_median", "domain_cpu_share")
            med = {k: statistics.median(r[k] for r in runs) for k in keys}
            lat = {
                k: statistics.median(r["latency_ms"][k] for r in runs if r["latency_ms"][k] is not None)
                for k in runs[0]["latency_ms"]
            }
            sat = {
                k: statistics.median(r["saturated_latency_ms"][k] for r in runs) for k in ("p50_median", "p99_median")
            }
            cpu = {
                k: statistics.median(r["cpu_us_per_message"][k] for r in runs) for k in runs[0]["cpu_us_per_message"]
            }
            out["pubsub"] = {
                "method": {
                    "runs": args.runs,
                    "subscribers": args.subscribers,
                    "throughput_messages": args.messages,
                    "latency_rate": args.latency_rate,
                    "latency_messages": int(args.latency_rate * args.latency_seconds),
                },
                "medians": {**med, "latency_ms": lat, "saturated_latency_ms": sat, "cpu_us_per_message": cpu},
                "target_delivered_rate_each": 5000,
                "runs": runs,
                "errors": errors,
            }
            if args.profile:
                prof = tmp / "domain.prof"
                extra = pubsub_run(args, tmp / "pubsub-profiled", profile_out=prof)
                out["pubsub"]["profiled_run"] = extra
                out["pubsub"]["profile_file"] = str(prof)
                out["pubsub"]["profile"] = profile_summary(prof) if prof.exists() else "no profile written"
        if not args.no_stream:
            total = args.stream_mib << 20
            data = os.urandom(total)
            digest = hashlib.sha256(data).hexdigest()
            from edgeagent.exceptions import EdgeAgentError

            res: dict[str, list[float]] = {"raw": [], "stream": []}
            resent: list[int] = []
            failures: list[str] = []  # a failed stream is reported, and tried again (at most --runs more times)
            r = 0
            while min(len(v) for v in res.values()) < args.runs and r < 2 * args.runs:
                for kind in ("raw", "stream") if r % 2 == 0 else ("stream", "raw"):
                    if len(res[kind]) >= args.runs:
                        continue
                    info: dict[str, Any] = {}
                    try:
                        res[kind].append(total / stream_once(kind, data, digest, tmp, info) / 1e6)
                    except EdgeAgentError as exc:
                        failures.append(f"{kind}: {exc}")
                        continue
                    if kind == "stream":
                        resent.append(info["resent_bytes"])
                r += 1
            del data
            m = {k: statistics.median(v) if v else 0.0 for k, v in res.items()}
            out["stream"] = {
                "bytes": total,
                "unit": "MB/s, MB = 1e6 bytes",
                "raw_link_mb_s": {"median": round(m["raw"]), "all": [round(x) for x in res["raw"]]},
                "stream_mb_s": {"median": round(m["stream"]), "all": [round(x) for x in res["stream"]]},
                "stream_vs_raw": round(m["stream"] / m["raw"], 3) if m["raw"] else None,
                "stream_resent_bytes": resent,
                "failures": failures,
                "target": 0.8,
            }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["elapsed_s"] = round(time.perf_counter() - started, 1)
    out["loadavg_end"] = os.getloadavg()
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print_table(out)
    return 0


def print_table(out: dict[str, Any]) -> None:
    env = out["environment"]
    print(f"pub-sub and stream benchmark, loopback, {env['cpus']} cores, Python {env['python']}; medians of runs")
    la0, la1 = ([round(x, 1) for x in v] for v in (env["loadavg"], out["loadavg_end"]))
    print(f"load average at start {la0}, at end {la1} (other work on the host skews wall-clock rates)")
    ps = out.get("pubsub")
    if ps:
        m, meth = ps["medians"], ps["method"]
        print(
            f"\npub-sub: {meth['subscribers']} subscriber processes, {meth['throughput_messages']} messages "
            f"as fast as possible, {meth['runs']} run(s)"
        )
        print(f"{'figure':<44} {'median':>10}   all runs")
        rows = [
            ("publish() rate, msg/s", "publish_rate"),
            ("acknowledged by the domain, msg/s", "acked_rate"),
            ("delivered to the slowest subscriber, msg/s", "delivered_rate_min"),
            ("delivered to the median subscriber, msg/s", "delivered_rate_median"),
            ("domain CPU, share of one core", "domain_cpu_share"),
        ]
        for label, key in rows:
            print(f"{label:<44} {m[key]:>10.3g}   {[r[key] for r in ps['runs']]}")
        print(f"{'host CPU busy, share of all cores':<44} {'':>10}   {[r['host_cpu_busy'] for r in ps['runs']]}")
        print(f"{'lost / app-dropped / missed (all subscribers)':<44} {'':>10}   "
              f"{[(r['lost'], r['app_dropped'], r['missed']) for r in ps['runs']]}")  # fmt: skip
        for e in ps["errors"]:
            print(f"FAILED run: {e}")
        target = ps["target_delivered_rate_each"]
        verdict = "met" if m["delivered_rate_min"] >= target else "MISSED"
        print(f"target: >= {target} msg/s delivered to each subscriber: {verdict}")
        lat = m["latency_ms"]
        print(
            f"latency at {meth['latency_rate']:.0f} msg/s (value stamp): p50 {lat['p50_median']:.2f} ms, "
            f"p99 {lat['p99_median']:.2f} ms (median over subscribers), worst p99 {lat['p99_worst']:.2f} ms; "
            f"by published_ms: p50 {lat['published_ms_p50_median']:.2f}, p99 {lat['published_ms_p99_median']:.2f} ms"
        )
        cpu = m["cpu_us_per_message"]
        print(
            f"CPU per message: domain {cpu['domain_per_delivery']:.1f} us per delivery, subscriber "
            f"{cpu['subscriber']:.1f} us, publisher {cpu['publisher']:.1f} us -> an otherwise idle {env['cpus']}-core "
            f"host could deliver ~{cpu['capacity_per_subscriber']:.0f} msg/s to each of {meth['subscribers']} "
            f"subscribers; the domain alone on one core ~{cpu['capacity_if_domain_alone_on_a_core']:.0f} msg/s each"
        )
        sat = m["saturated_latency_ms"]
        print(
            f"latency when saturated (throughput phase): p50 {sat['p50_median']:.0f} ms, p99 {sat['p99_median']:.0f} ms"
        )
        if "profile" in ps:
            pr = ps["profiled_run"]
            print(
                f"\nprofiled run (domain under cProfile, slower): slowest subscriber {pr['delivered_rate_min']} msg/s, "
                f"domain CPU {pr['domain_cpu_share']:.2f} of a core"
            )
            print(ps["profile"])
    st = out.get("stream")
    if st:
        print(f"\nstream: {st['bytes'] >> 20} MiB one way, MB = 1e6 bytes")
        print(f"{'row':<34} {'MB/s':>8}   all runs")
        raw = st["raw_link_mb_s"]
        print(f"{'raw link (Link.send, 256 KiB Chunk)':<34} {raw['median']:>8}   {raw['all']}")
        print(f"{'node.send_stream':<34} {st['stream_mb_s']['median']:>8}   {st['stream_mb_s']['all']}")
        print(
            f"stream / raw link: {st['stream_vs_raw']}x (target >= {st['target']}); resent {st['stream_resent_bytes']}"
        )
        for f in st["failures"]:
            print(f"FAILED (tried again): {f}")
    print(f"elapsed {out['elapsed_s']} s")


if __name__ == "__main__":
    raise SystemExit(main())
