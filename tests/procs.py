"""Starting, querying and stopping edgeagent processes in tests (loopback only).

Every process is started through a :class:`ProcGroup`; leaving its ``with``
block kills each process by its PID, whatever happened in the test.

Also helper scripts, run as ``python -m tests.procs slow-receiver|fast-sender ...``:
a listener that reads Chunk envelopes slowly and reports what arrived, and a
dialler that offers chunks as fast as ``Link.send`` lets it, sampling its RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
_T = TypeVar("_T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago, below the kernel's ephemeral range.

    A port the kernel hands out (bind to 0) lies in the ephemeral range, where the outgoing
    connections of the processes a test starts meanwhile pick theirs: an agent told to listen
    on it then found it taken ("address already in use"). Ports below the range are never
    given to outgoing connections.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # every try taken: any free port
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_kib(pid: int) -> int:
    """Resident set size of a process, from /proc (KiB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def wait_for(check: Callable[[], _T | None], timeout: float, interval: float = 0.1, what: str = "condition") -> _T:
    """Call ``check`` until it returns something truthy, at most ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: _T | None = None
    while True:
        last = check()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def write_config(path: Path, **link: float | int | str) -> Path:
    """A TOML config with a ``[link]`` table."""
    lines = ["[link]"]
    for key, value in link.items():
        lines.append(f"{key} = {json.dumps(value)}")
    path.write_text("\n".join(lines) + "\n")
    return path


class Proc:
    """One child process, its log file and the first JSON line it printed."""

    def __init__(self, popen: subprocess.Popen[bytes], log: Path, name: str) -> None:
        self.popen = popen
        self.log = log
        self.name = name
        self.info: dict[str, Any] = {}

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def url(self) -> str:
        return str(self.info["listen"][0])

    @property
    def node_id(self) -> str:
        return str(self.info["node_id"])

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def read_json_line(self, timeout: float) -> dict[str, Any]:
        """The next line on stdout, as JSON (bounded wait)."""
        assert self.popen.stdout is not None
        fd = self.popen.stdout.fileno()
        deadline = time.monotonic() + timeout
        buf = b""
        while not buf.endswith(b"\n"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: no output line within {timeout}s; log:\n{self.log_text()}")
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
            data = os.read(fd, 65536)
            if not data:
                raise AssertionError(
                    f"{self.name} exited ({self.popen.poll()}) before printing; log:\n{self.log_text()}"
                )
            buf += data
        return dict(json.loads(buf.decode()))

    def signal(self, sig: int) -> None:
        if self.alive():
            os.kill(self.pid, sig)

    def stop(self, timeout: float = 5.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; returns the exit status."""
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)
            try:
                return self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.kill()

    def kill(self) -> int | None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        try:
            return self.popen.wait(10)
        finally:
            if self.popen.stdout is not None:
                self.popen.stdout.close()


class ProcGroup:
    """Starts processes and kills every one of them (by PID) on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def __enter__(self) -> ProcGroup:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.kill()

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        log = self.workdir / f"{name}.{len(self.procs)}.log"
        with open(log, "wb") as err:
            popen = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=err,
                cwd=ROOT,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            )
        proc = Proc(popen, log, name)
        self.procs.append(proc)
        return proc

    def node(self, name: str, *args: str, state: Path | None = None, timeout: float = 20.0) -> Proc:
        """``edgeagent run --state DIR ARGS``; waits for its ``started`` line."""
        state = state or self.workdir / name
        proc = self.spawn(name, [sys.executable, "-m", "edgeagent.cli", "run", "--state", str(state), *args])
        proc.info = proc.read_json_line(timeout)
        assert proc.info.get("event") == "started", proc.info
        proc.info["state"] = str(state)
        return proc


def cli(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    """Run one ``edgeagent`` command to completion."""
    return subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        cwd=ROOT,
    )


def status(state: Path | str) -> dict[str, Any]:
    """``edgeagent status --state DIR --json``."""
    run = cli("status", "--state", str(state), "--json", timeout=15)
    assert run.returncode == 0, run.stderr
    return dict(json.loads(run.stdout))


def links_to(state: Path | str, peer: str) -> list[dict[str, Any]]:
    return [ln for ln in status(state)["links"] if ln["peer"] == peer]


# ------------------------------------------------------------------------------------------
# slow-receiver script
# ------------------------------------------------------------------------------------------


async def _slow_receiver(total: int, pause: float, every: int, deadline: float) -> int:
    from edgeagent.identity import Identity
    from edgeagent.links.base import LinkOptions
    from edgeagent.links.link import Link
    from edgeagent.links.websocket import listen
    from edgeagent.wire import Chunk, Envelope, Error, ErrorCode, Response

    ident = Identity.generate()
    done = asyncio.Event()

    async def on_link(link: Link) -> None:
        digest = hashlib.sha256()
        received = chunks = 0
        in_order = True
        t0 = time.monotonic()
        while received < total:
            env: Envelope = await link.recv()
            body = env.body
            if not isinstance(body, Chunk):
                await link.send(env.reply(Error(ErrorCode.UNSUPPORTED, "chunks only"), ident.node_id))
                continue
            in_order &= body.index == chunks
            chunks += 1
            received += len(body.data)
            digest.update(body.data)
            if chunks % every == 0:
                await asyncio.sleep(pause)
        report = {
            "bytes": received,
            "chunks": chunks,
            "in_order": in_order,
            "sha256": digest.hexdigest(),
            "seconds": round(time.monotonic() - t0, 3),
        }
        await link.send(Envelope(Response(report), ident.node_id, destination=link.peer))
        done.set()

    listener = await listen("ws://127.0.0.1:0", ident, on_link, LinkOptions())
    print(json.dumps({"event": "started", "listen": [listener.url], "node_id": str(ident.node_id)}), flush=True)
    try:
        async with asyncio.timeout(deadline):
            await done.wait()
            await asyncio.sleep(1.0)  # let the report reach the sender before closing
    except TimeoutError:
        return 1
    finally:
        await listener.close()
    return 0


async def _fast_sender(url: str, total: int, piece: int, deadline: float) -> int:
    """Offer ``total`` bytes in ``piece``-byte Chunk envelopes as fast as ``send`` allows; sample own RSS."""
    import gc

    from edgeagent.identity import Identity
    from edgeagent.links.websocket import dial
    from edgeagent.wire import Chunk, Envelope, Response

    ident = Identity.generate()
    link = await dial(url, ident)
    pid = os.getpid()
    template = bytearray(os.urandom(piece))
    digest = hashlib.sha256()
    gc.collect()
    base = peak = rss_kib(pid)
    samples = 0
    stop = asyncio.Event()

    async def sample() -> None:
        nonlocal peak, samples
        while not stop.is_set():
            peak = max(peak, rss_kib(pid))
            samples += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 0.02)

    sampler = asyncio.ensure_future(sample())
    t0 = time.monotonic()
    try:
        async with asyncio.timeout(deadline):
            for i in range(total // piece):
                template[:4] = i.to_bytes(4, "big")
                data = bytes(template)
                digest.update(data)
                await link.send(Envelope(Chunk(b"payload", i, data), ident.node_id, destination=link.peer))
            sent_s = time.monotonic() - t0
            reply = await link.recv()
    finally:
        stop.set()
        await sampler
        await link.close()
    assert isinstance(reply.body, Response)
    out = {
        "rss_base_kib": base,
        "rss_peak_kib": peak,
        "rss_samples": samples,
        "sent_s": round(sent_s, 3),
        "total_s": round(time.monotonic() - t0, 3),
        "sha256": digest.hexdigest(),
        "report": reply.body.value,
    }
    print(json.dumps(out), flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.procs")
    sub = p.add_subparsers(dest="cmd", required=True)
    sr = sub.add_parser("slow-receiver", help="read Chunk envelopes slowly, then report")
    sr.add_argument("--total", type=int, required=True, help="bytes of chunk data to expect")
    sr.add_argument("--pause", type=float, default=0.005, help="seconds to sleep every --every chunks")
    sr.add_argument("--every", type=int, default=1)
    sr.add_argument("--deadline", type=float, default=120.0, help="give up after this many seconds")
    fs = sub.add_parser("fast-sender", help="offer chunks as fast as the link allows, report RSS")
    fs.add_argument("url")
    fs.add_argument("--total", type=int, required=True)
    fs.add_argument("--piece", type=int, default=256 * 1024)
    fs.add_argument("--deadline", type=float, default=120.0)
    args = p.parse_args(argv)
    if args.cmd == "fast-sender":
        return asyncio.run(_fast_sender(args.url, args.total, args.piece, args.deadline))
    return asyncio.run(_slow_receiver(args.total, args.pause, args.every, args.deadline))


if __name__ == "__main__":
    sys.exit(main())
