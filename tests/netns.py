"""Network namespaces and processes for multi-process tests, and the roles of the WebRTC scenario.

Why namespaces: aioice ignores 127.0.0.1, so WebRTC needs another address, and
the network rule allows traffic only on loopback or inside namespaces a test
made. A fresh namespace whose own ``lo`` also carries ``10.200.0.1/24`` is both:
nothing in it can reach the host's interfaces, the internet or a STUN server.

Plumbing (used by the tests):

* :func:`create_netns` makes one (raises :class:`NetnsUnavailable` when ``ip netns add``
  is not permitted); :meth:`Netns.delete` removes it.
* :meth:`Netns.entered` moves *this thread* into it (``setns``) and back, for in-process tests.
* :class:`Procs` starts processes inside it, reads their output lines with deadlines
  and kills every process it started, by PID.

Roles (each bounded by ``--lifetime`` seconds), run inside a namespace as
``python -m tests.netns ROLE ...`` from the repository root:

* ``relay``    a stand-in for the domain: an edgeagent WebSocket listener that forwards
               Offer/Answer/Candidate envelopes between its links by destination NodeId;
* ``answerer`` dials the relay, answers the WebRTC offer, echoes and counts frames;
* ``dialler``  dials the relay, opens the WebRTC link, pings, exchanges frames, measures
               throughput of our link and of a raw aiortc data channel, closes;
* ``bench``    in one process: our WebRTC link vs a raw aiortc channel (both ends here).

Each role prints ``READY ...`` when it can be used and ``RESULT <json>`` at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import json
import os
import secrets
import selectors
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ADDRESS = "10.200.0.1"
CLONE_NEWNET = 0x40000000
MiB = 1 << 20


# ============================================================================================
# plumbing
# ============================================================================================


class NetnsUnavailable(Exception):
    """Network namespaces cannot be made here (no privilege, no ``ip``)."""


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)


@dataclass
class Netns:
    name: str
    address: str

    def argv(self, argv: Sequence[str]) -> list[str]:
        """``argv`` run inside this namespace."""
        return ["ip", "netns", "exec", self.name, *argv]

    @contextlib.contextmanager
    def entered(self) -> Iterator[None]:
        """Run the body with this thread in the namespace (sockets made meanwhile stay in it)."""
        libc = ctypes.CDLL(None, use_errno=True)
        home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        target = os.open(f"/run/netns/{self.name}", os.O_RDONLY)
        try:
            if libc.setns(target, CLONE_NEWNET) != 0:
                raise NetnsUnavailable(f"setns({self.name}): {os.strerror(ctypes.get_errno())}")
            try:
                yield
            finally:
                if libc.setns(home, CLONE_NEWNET) != 0:  # pragma: no cover - would leave pytest inside
                    raise RuntimeError(f"cannot leave namespace {self.name}: {os.strerror(ctypes.get_errno())}")
        finally:
            os.close(target)
            os.close(home)

    def delete(self) -> None:
        _ip("netns", "del", self.name)


def create_netns(prefix: str = "ea-rtc", address: str = ADDRESS) -> Netns:
    """A new namespace with ``lo`` up and ``address``/24 on it."""
    name = f"{prefix}-{secrets.token_hex(4)}"
    try:
        made = _ip("netns", "add", name)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NetnsUnavailable(f"cannot run `ip netns add`: {exc}") from None
    if made.returncode != 0:
        raise NetnsUnavailable(f"`ip netns add {name}` failed: {made.stderr.strip()}")
    ns = Netns(name, address)
    for args in (("link", "set", "lo", "up"), ("addr", "add", f"{address}/24", "dev", "lo")):
        step = _ip("-n", name, *args)
        if step.returncode != 0:
            ns.delete()
            raise RuntimeError(f"`ip -n {name} {' '.join(args)}` failed: {step.stderr.strip()}")
    return ns


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    stderr_path: Path
    buffer: bytes = b""
    lines: list[str] = field(default_factory=list)

    def stderr(self, limit: int = 4000) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")[-limit:]
        except OSError:
            return ""


class Procs:
    """Processes started by one test; :meth:`kill_all` ends each one it started, by PID."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def start(self, name: str, argv: Sequence[str]) -> Proc:
        stderr_path = self.workdir / f"{name}.stderr"
        with stderr_path.open("wb") as err:
            popen = subprocess.Popen(list(argv), cwd=ROOT, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err)
        proc = Proc(name, popen, stderr_path)
        self.procs.append(proc)
        return proc

    def read_line(self, proc: Proc, prefix: str, deadline: float) -> str:
        """The rest of ``proc``'s next stdout line starting with ``prefix`` (others are kept in ``proc.lines``)."""
        assert proc.popen.stdout is not None
        fd = proc.popen.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                while b"\n" in proc.buffer:
                    raw, proc.buffer = proc.buffer.split(b"\n", 1)
                    line = raw.decode(errors="replace")
                    proc.lines.append(line)
                    if line.startswith(prefix):
                        return line[len(prefix) :].strip()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"{proc.name}: no {prefix!r} line in time; stderr:\n{proc.stderr()}")
                if sel.select(left):
                    chunk = os.read(fd, 65536)
                    if not chunk:
                        raise RuntimeError(
                            f"{proc.name} exited ({proc.popen.wait(5)}) before {prefix!r}; stderr:\n{proc.stderr()}"
                        )
                    proc.buffer += chunk

    def wait(self, proc: Proc, deadline: float) -> int:
        try:
            return proc.popen.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            raise TimeoutError(f"{proc.name} still running at the deadline; stderr:\n{proc.stderr()}") from None

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                proc.popen.kill()  # by PID: only what this object started
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()


def role_argv(role: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "tests.netns", role, *args]


# ============================================================================================
# roles (run in child processes inside a namespace)
# ============================================================================================

SIZES = (1, 1000, 60_000, 262_144, 300_000, 1_000_000)  # >256 KiB frames are split by the record layer
BULK_MESSAGE = 256 * 1024


def _out(tag: str, payload: Any) -> None:
    print(f"{tag} {json.dumps(payload) if not isinstance(payload, str) else payload}", flush=True)


async def _relay(address: str) -> dict[str, Any]:
    from edgeagent.identity import Identity
    from edgeagent.links.link import Link
    from edgeagent.links.websocket import listen
    from edgeagent.wire import Answer, Candidate, NodeId, Offer

    ident = Identity.generate()
    links: dict[NodeId, Link] = {}
    seen = 0
    forwarded: dict[str, int] = {"Offer": 0, "Answer": 0, "Candidate": 0}
    dropped = 0
    all_gone = asyncio.Event()
    joined = asyncio.Condition()

    async def link_to(dest: NodeId | None) -> Link | None:
        """The link to ``dest``, waiting a little for a peer that is still joining."""
        if dest is None:
            return None
        async with joined:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(joined.wait_for(lambda: dest in links), 5.0)
        return links.get(dest)

    async def on_link(link: Link) -> None:
        nonlocal seen, dropped
        async with joined:
            links[link.peer] = link
            seen += 1
            joined.notify_all()
        try:
            async for env in link:
                target = await link_to(env.destination) if isinstance(env.body, Offer | Answer | Candidate) else None
                if target is not None:
                    await target.send(env)  # source stays the original sender
                    forwarded[type(env.body).__name__] += 1
                else:
                    dropped += 1
        finally:
            links.pop(link.peer, None)
            if seen >= 2 and not links:
                all_gone.set()

    listener = await listen(f"ws://{address}:0", ident, on_link)
    _out("READY", f"{listener.url} {ident.node_id}")
    async with listener:
        await all_gone.wait()
    return {"links": seen, "forwarded": forwarded, "dropped": dropped}


class _PeerBase:
    """A peer's link to the relay, with a reader that hands signalling from ``other`` to the current signaller."""

    def __init__(self, key: Path, relay_url: str, relay_id: str, other: str) -> None:
        from edgeagent.identity import Identity
        from edgeagent.wire import NodeId

        self.ident = Identity.load(key)
        self.relay_url = relay_url
        self.relay_id = NodeId.parse(relay_id)
        self.other = NodeId.parse(other)
        self.offers: asyncio.Queue[Any] = asyncio.Queue()
        self.signaller: Any = None

    async def connect(self) -> None:
        from edgeagent.links.websocket import dial

        self.relay = await dial(self.relay_url, self.ident, expected_peer=self.relay_id)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        from edgeagent.wire import Answer, Candidate, Offer

        async for env in self.relay:
            if env.source != self.other:
                continue
            if isinstance(env.body, Offer):
                await self.offers.put(env)
            elif isinstance(env.body, Answer | Candidate) and self.signaller is not None:
                self.signaller.feed(env.body)

    def new_signaller(self) -> Any:
        from edgeagent.links.webrtc import link_signaller

        self.signaller = link_signaller(self.relay, self.other)
        return self.signaller

    async def finish(self) -> None:
        await self.relay.close()
        self.reader.cancel()


def _options() -> Any:
    from edgeagent.links.base import LinkOptions

    return LinkOptions(handshake_timeout=10.0, keepalive=2.0, dead_after=20.0)


async def _raw_pc() -> Any:
    from aiortc import RTCConfiguration, RTCPeerConnection

    return RTCPeerConnection(RTCConfiguration(iceServers=[]))


async def _raw_send(channel: Any, total: int) -> None:
    """Send ``total`` bytes in BULK_MESSAGE pieces, waiting while more than 1 MiB is buffered (as RtcTransport)."""
    low = asyncio.Event()
    channel.bufferedAmountLowThreshold = 256 * 1024
    channel.on("bufferedamountlow", low.set)
    block = os.urandom(BULK_MESSAGE)
    sent = 0
    while sent < total:
        while channel.bufferedAmount > MiB:
            low.clear()
            await low.wait()
        channel.send(block)
        sent += len(block)


async def _answerer(peer: _PeerBase) -> dict[str, Any]:
    from edgeagent.exceptions import LinkError
    from edgeagent.links.webrtc import rtc_accept
    from edgeagent.wire import Answer, Chunk, Envelope, Offer

    result: dict[str, Any] = {"echoed": 0, "sunk": 0, "raw_sunk": 0}
    raw_pcs: list[Any] = []

    async def raw_answer(env: Envelope) -> None:
        from aiortc import RTCSessionDescription

        pc = await _raw_pc()
        raw_pcs.append(pc)

        @pc.on("datachannel")
        def on_channel(channel: Any) -> None:
            @channel.on("message")
            def on_message(message: bytes | str) -> None:
                if message == b"end":
                    channel.send(str(result["raw_sunk"]).encode())
                    result["raw_sunk"] = 0
                else:
                    result["raw_sunk"] += len(message)

        assert isinstance(env.body, Offer)
        await pc.setRemoteDescription(RTCSessionDescription(env.body.sdp, "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        await peer.relay.send(
            Envelope(Answer(env.body.session_id, pc.localDescription.sdp), peer.ident.node_id, peer.other)
        )

    offer = await peer.offers.get()
    link = await rtc_accept(peer.ident, offer, peer.new_signaller(), _options())
    result["transport"] = link.transport_kind
    result["max_message_size"] = link.max_message_size

    async def raw_offers() -> None:
        while True:
            await raw_answer(await peer.offers.get())

    raw_task = asyncio.create_task(raw_offers())
    try:
        async for env in link:
            body = env.body
            if not isinstance(body, Chunk):
                continue
            if body.payload_id == b"echo":
                await link.send(Envelope(body, peer.ident.node_id, env.source, reply_to=env.msg_id))
                result["echoed"] += 1
            elif body.payload_id == b"sink":
                result["sunk"] += len(body.data)
            elif body.payload_id == b"sink-end":
                done = Chunk(b"sink-done", 0, str(result["sunk"]).encode())
                await link.send(Envelope(done, peer.ident.node_id, env.source))
                result["sunk"] = 0
    finally:
        raw_task.cancel()
        for pc in raw_pcs:
            await pc.close()
    error = link.close_error
    result["close_error"] = f"{type(error).__name__}: {error}" if error else None
    result["clean_close"] = isinstance(error, LinkError) and "peer closed the link" in str(error)
    return result


async def _dialler(peer: _PeerBase, mib: int, rounds: int) -> dict[str, Any]:
    from edgeagent.links.webrtc import rtc_dial
    from edgeagent.wire import Chunk, Envelope, Offer

    result: dict[str, Any] = {}
    t0 = time.perf_counter()
    link = await rtc_dial(peer.ident, peer.new_signaller(), _options(), expected_peer=peer.other)
    result["connect_s"] = round(time.perf_counter() - t0, 3)
    result["transport"] = link.transport_kind
    result["max_message_size"] = link.max_message_size
    result["ping_ms"] = round(await link.ping(), 3)

    echoed = []
    for i, size in enumerate(SIZES):
        data = os.urandom(size)
        await link.send(Envelope(Chunk(b"echo", i, data), peer.ident.node_id, peer.other))
        env = await asyncio.wait_for(link.recv(), 30)
        assert isinstance(env.body, Chunk), env
        echoed.append(env.body.index == i and env.body.data == data)
    result["echo_ok"] = echoed
    result["rtt_ms"] = link.stats.rtt_ms
    result["rtt_samples"] = link.stats.rtt_samples

    # raw aiortc channel between the same two processes, signalled through the same relay
    from aiortc import RTCSessionDescription

    pc = await _raw_pc()
    channel = pc.createDataChannel("raw", ordered=True)
    opened = asyncio.Event()
    replies: asyncio.Queue[int] = asyncio.Queue()
    channel.on("open", opened.set)
    channel.on("message", lambda m: replies.put_nowait(int(m)))
    await pc.setLocalDescription(await pc.createOffer())
    sig = peer.new_signaller()
    await sig.send(Offer("raw-1", pc.localDescription.sdp))
    answer = await asyncio.wait_for(sig.recv(), 30)
    await pc.setRemoteDescription(RTCSessionDescription(answer.sdp, "answer"))
    await asyncio.wait_for(opened.wait(), 30)

    # rounds of: our link, then the raw channel, mib MiB one way each, until the receiver confirms
    block = os.urandom(BULK_MESSAGE)
    total = mib * MiB
    ours: list[float] = []
    raw: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for i in range(total // BULK_MESSAGE):
            await link.send(Envelope(Chunk(b"sink", i, block), peer.ident.node_id, peer.other))
        await link.send(Envelope(Chunk(b"sink-end", 0, b""), peer.ident.node_id, peer.other))
        env = await asyncio.wait_for(link.recv(), 120)
        ours.append(round(total / (time.perf_counter() - t0) / 1e6, 2))
        assert isinstance(env.body, Chunk) and env.body.payload_id == b"sink-done", env
        result["ours_bytes"] = int(env.body.data)

        t0 = time.perf_counter()
        await _raw_send(channel, total)
        channel.send(b"end")
        result["raw_bytes"] = await asyncio.wait_for(replies.get(), 120)
        raw.append(round(total / (time.perf_counter() - t0) / 1e6, 2))
    await pc.close()
    result["ours_MBps"], result["raw_MBps"] = statistics.median(ours), statistics.median(raw)
    result["ours_rounds"], result["raw_rounds"] = ours, raw

    await link.close()
    result["closed"] = link.closed
    return result


async def _bench(mib: int) -> dict[str, Any]:
    """Both ends in this process (one core for both SCTP stacks): our link vs a raw aiortc channel."""
    from aiortc import RTCSessionDescription

    from edgeagent.identity import Identity
    from edgeagent.links.webrtc import QueueSignaller, SignalBody, rtc_accept, rtc_dial
    from edgeagent.wire import Chunk, Envelope

    total = mib * MiB
    result: dict[str, Any] = {"mib": mib}
    # raw
    a, b = await _raw_pc(), await _raw_pc()
    got = 0
    done = asyncio.Event()
    channel = a.createDataChannel("raw", ordered=True)
    opened = asyncio.Event()
    channel.on("open", opened.set)

    @b.on("datachannel")
    def on_channel(ch: Any) -> None:
        @ch.on("message")
        def on_message(message: bytes) -> None:
            nonlocal got
            got += len(message)
            if got >= total:
                done.set()

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(RTCSessionDescription(a.localDescription.sdp, "offer"))
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(RTCSessionDescription(b.localDescription.sdp, "answer"))
    await asyncio.wait_for(opened.wait(), 30)
    t0 = time.perf_counter()
    await _raw_send(channel, total)
    await asyncio.wait_for(done.wait(), 120)
    result["raw_MBps"] = round(total / (time.perf_counter() - t0) / 1e6, 2)
    await a.close()
    await b.close()

    # ours
    ia, ib = Identity.generate(), Identity.generate()
    to_b: QueueSignaller
    to_a: QueueSignaller

    async def send_to_b(body: SignalBody) -> None:
        to_b.feed(body)

    async def send_to_a(body: SignalBody) -> None:
        to_a.feed(body)

    sig_a, sig_b = QueueSignaller(send_to_b), QueueSignaller(send_to_a)
    to_a, to_b = sig_a, sig_b

    async def accept() -> Any:
        return await rtc_accept(ib, await sig_b.recv(), sig_b, _options(), expected_peer=ia.node_id)

    acc = asyncio.create_task(accept())
    la = await rtc_dial(ia, sig_a, _options(), expected_peer=ib.node_id)
    lb = await acc
    block = os.urandom(BULK_MESSAGE)

    async def sink() -> None:
        n = 0
        while n < total:
            env = await lb.recv()
            assert isinstance(env.body, Chunk)
            n += len(env.body.data)

    sinking = asyncio.create_task(sink())
    t0 = time.perf_counter()
    for i in range(total // BULK_MESSAGE):
        await la.send(Envelope(Chunk(b"sink", i, block), ia.node_id, ib.node_id))
    await asyncio.wait_for(sinking, 120)
    result["ours_MBps"] = round(total / (time.perf_counter() - t0) / 1e6, 2)
    await la.close()
    await lb.close()
    return result


async def _main_async(args: argparse.Namespace) -> dict[str, Any]:
    if args.role == "relay":
        return await _relay(args.address)
    if args.role == "bench":
        return await _bench(args.mib)
    peer = _PeerBase(Path(args.key), args.relay_url, args.relay_id, args.other)
    await peer.connect()
    _out("READY", str(peer.ident.node_id))
    try:
        if args.role == "answerer":
            return await _answerer(peer)
        return await _dialler(peer, args.mib, args.rounds)
    finally:
        await peer.finish()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.netns")
    parser.add_argument("role", choices=("relay", "answerer", "dialler", "bench"))
    parser.add_argument("--address", default=ADDRESS)
    parser.add_argument("--key", default="")
    parser.add_argument("--relay-url", default="")
    parser.add_argument("--relay-id", default="")
    parser.add_argument("--other", default="")
    parser.add_argument("--mib", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--lifetime", type=float, default=60.0)
    args = parser.parse_args(argv)

    async def bounded() -> dict[str, Any]:
        async with asyncio.timeout(args.lifetime):
            return await _main_async(args)

    result = asyncio.run(bounded())
    _out("RESULT", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())


def create_bridged(count: int, prefix: str = "ea-lan", subnet: str = "10.201.0") -> tuple[Netns, list[Netns]]:
    """``count`` namespaces joined by veth pairs to a bridge in a switch namespace: one LAN.

    Host ``i`` gets ``{subnet}.{i+1}/24`` on ``eth0``. Delete every namespace returned
    (the switch too) to clean up; deleting a namespace removes its veth ends.
    """
    tag = secrets.token_hex(3)
    made: list[Netns] = []

    def run(*args: str) -> None:
        step = _ip(*args)
        if step.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed: {step.stderr.strip()}")

    try:
        switch_name = f"{prefix}-sw-{tag}"
        made_switch = _ip("netns", "add", switch_name)
        if made_switch.returncode != 0:
            raise NetnsUnavailable(f"`ip netns add` failed: {made_switch.stderr.strip()}")
        switch = Netns(switch_name, "")
        made.append(switch)
        run("-n", switch_name, "link", "add", "br0", "type", "bridge")
        run("-n", switch_name, "link", "set", "br0", "up")
        hosts = []
        for i in range(count):
            name = f"{prefix}-{i}-{tag}"
            run("netns", "add", name)
            host = Netns(name, f"{subnet}.{i + 1}")
            made.append(host)
            hosts.append(host)
            veth = f"v{tag}{i}"
            run("link", "add", veth, "type", "veth", "peer", "name", f"{veth}b")
            run("link", "set", veth, "netns", name)
            run("link", "set", f"{veth}b", "netns", switch_name)
            run("-n", name, "link", "set", veth, "name", "eth0")
            run("-n", name, "addr", "add", f"{host.address}/24", "dev", "eth0")
            run("-n", name, "link", "set", "eth0", "up")
            run("-n", name, "link", "set", "lo", "up")
            run("-n", switch_name, "link", "set", f"{veth}b", "master", "br0")
            run("-n", switch_name, "link", "set", f"{veth}b", "up")
        return switch, hosts
    except BaseException:
        for ns in made:
            ns.delete()
        raise


@contextlib.contextmanager
def netns_or_skip(prefix: str, why: str) -> Iterator[Netns]:
    """A namespace for the duration, deleted afterwards; skips the test (saying why) where none can be made."""
    import pytest

    try:
        ns = create_netns(prefix)
    except NetnsUnavailable as exc:
        print(f"\nSKIP ({why}): {exc}", file=sys.stderr)
        pytest.skip(f"network namespaces cannot be made here ({why}): {exc}")
    try:
        yield ns
    finally:
        ns.delete()
