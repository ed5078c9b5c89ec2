"""WebRTC links: fingerprint signing, lazy aiortc import, RtcTransport and links in a namespace, three processes.

aioice ignores 127.0.0.1, so everything that opens a data channel runs inside a
network namespace this module creates (its own ``lo`` with 10.200.0.1): the
in-process tests move the test thread into it for their duration, the scenario
test runs its three processes in it. Those tests are skipped, with the reason,
only where ``ip netns add`` is not permitted.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from edgeagent.exceptions import EdgeAgentError, HandshakeError, LinkClosed, LinkError, LinkTimeout, RemoteProtocolError
from edgeagent.identity import Identity
from edgeagent.links.base import LinkOptions
from edgeagent.links.link import Link
from edgeagent.links.webrtc import (
    MAX_MESSAGE,
    IceServer,
    QueueSignaller,
    RtcTransport,
    SignalBody,
    fingerprint_of,
    max_message_size_of,
    rtc_accept,
    rtc_dial,
    sign_sdp,
    verify_sdp,
)
from edgeagent.wire import Answer, Candidate, Chunk, Envelope, Offer
from tests.conftest import until

from .netns import Netns, Procs, netns_or_skip, role_argv

MiB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent

FP256 = "sha-256 56:9F:CC:A6:24:8A:FE:57:32:8A:28:7A:0F:D4:64:A5:CC:3E:6B:DA:73:10:3F:1F:0E:16:59:93:89:FE:5A:7B"
SDP = (
    "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\ns=-\r\nt=0 0\r\n"
    "m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\na=mid:0\r\n"
    "a=sctp-port:5000\r\na=max-message-size:262144\r\n"
    f"a=fingerprint:{FP256}\r\na=fingerprint:SHA-384 ab:cd:ef\r\na=setup:actpass\r\n"
)


# --------------------------------------------------------------------------------------------
# signalling helpers (pure)
# --------------------------------------------------------------------------------------------


def test_fingerprint_of_takes_every_line_normalised() -> None:
    assert fingerprint_of(SDP) == f"{FP256}\nsha-384 AB:CD:EF"
    assert fingerprint_of(f"v=0\na=fingerprint:{FP256}\n") == FP256  # one line (browsers): the line's value


@pytest.mark.parametrize("sdp", ["v=0\r\ns=-\r\n", "", "a=fingerprint:sha-256\r\n", "a=fingerprint:a b c\r\n"])
def test_fingerprint_missing_or_malformed(sdp: str) -> None:
    with pytest.raises(HandshakeError):
        fingerprint_of(sdp)


def test_sign_and_verify_sdp() -> None:
    ident = Identity.generate()
    sig = sign_sdp(ident, SDP)
    verify_sdp(ident.node_id, SDP, sig)
    # only the fingerprints are signed: other lines may change (candidates, ports)
    verify_sdp(ident.node_id, SDP.replace("m=application 9", "m=application 4242"), sig)


@pytest.mark.parametrize(
    "tamper",
    [
        lambda s: s.replace("5A:7B", "5A:7C"),  # another certificate
        lambda s: s.replace("a=fingerprint:SHA-384 ab:cd:ef\r\n", ""),  # a line dropped
        lambda s: s + "a=fingerprint:sha-1 00:11\r\n",  # a line added
        lambda s: s.replace("a=fingerprint:", "a=fingerprint-x:"),  # none left
    ],
)
def test_tampered_fingerprint_refused(tamper: Any) -> None:
    ident = Identity.generate()
    sig = sign_sdp(ident, SDP)
    with pytest.raises(HandshakeError):
        verify_sdp(ident.node_id, tamper(SDP), sig)


def test_wrong_signer_or_no_signature_refused() -> None:
    ident, other = Identity.generate(), Identity.generate()
    with pytest.raises(HandshakeError, match="not signed by"):
        verify_sdp(other.node_id, SDP, sign_sdp(ident, SDP))
    with pytest.raises(HandshakeError, match="no fingerprint signature"):
        verify_sdp(ident.node_id, SDP, b"")
    sig = bytearray(sign_sdp(ident, SDP))
    sig[5] ^= 1
    with pytest.raises(HandshakeError):
        verify_sdp(ident.node_id, SDP, bytes(sig))


@pytest.mark.parametrize(
    ("line", "size"),
    [
        ("a=max-message-size:262144", MAX_MESSAGE),
        ("a=max-message-size:65536", 65536),
        ("a=max-message-size:16384", 16384),
        ("a=max-message-size:0", MAX_MESSAGE),  # 0 = any size
        ("a=max-message-size:1073741823", MAX_MESSAGE),
        ("", 65536),  # RFC 8841 default
    ],
)
def test_max_message_size_of(line: str, size: int) -> None:
    assert max_message_size_of(f"v=0\r\n{line}\r\n") == size
    assert MAX_MESSAGE < 262_144


@pytest.mark.parametrize("line", ["a=max-message-size:x", "a=max-message-size:-1"])
def test_max_message_size_malformed(line: str) -> None:
    with pytest.raises(HandshakeError):
        max_message_size_of(line)


def test_importing_links_does_not_import_aiortc() -> None:
    code = (
        "import sys\n"
        "import edgeagent.links, edgeagent.links.link, edgeagent.links.base, edgeagent.links.websocket\n"
        "import edgeagent.links.webrtc\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('aiortc', 'aioice', 'av'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"aiortc imported eagerly: {done.stdout} {done.stderr}"


def test_ice_configuration_is_empty_by_default() -> None:
    pytest.importorskip("aiortc")
    from edgeagent.links.webrtc import _rtc_configuration

    assert _rtc_configuration(()).iceServers == []  # never aiortc's default public STUN server
    cfg = _rtc_configuration(["stun:10.200.0.1:3478", IceServer(("turn:10.200.0.1",), "u", "p")])
    assert cfg.iceServers is not None
    assert [s.urls for s in cfg.iceServers] == ["stun:10.200.0.1:3478", ["turn:10.200.0.1"]]
    assert cfg.iceServers[1].username == "u"


async def test_queue_signaller_bounded_and_closable() -> None:
    sent: list[SignalBody] = []

    async def send(body: SignalBody) -> None:
        sent.append(body)

    sig = QueueSignaller(send, maxsize=2)
    await sig.send(Candidate("s"))
    assert sent == [Candidate("s")]
    for i in range(3):
        sig.feed(Candidate("s", str(i)))
    assert sig.dropped == 1
    assert (await sig.recv()).candidate == "0"  # type: ignore[union-attr]
    assert (await sig.recv()).candidate == "1"  # type: ignore[union-attr]
    waiter = asyncio.create_task(sig.recv())
    await asyncio.sleep(0)
    sig.close()
    with pytest.raises(LinkClosed):
        await waiter
    with pytest.raises(LinkClosed):
        await sig.send(Candidate("s"))


# --------------------------------------------------------------------------------------------
# in one process, inside a namespace
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def netns() -> Iterator[Netns]:
    with netns_or_skip("ea-rtc", "WebRTC needs a non-loopback address") as ns:
        yield ns


@pytest.fixture
def inside(netns: Netns) -> Iterator[Netns]:
    """The test thread sits in the namespace for the test (sockets aiortc opens stay there)."""
    pytest.importorskip("aiortc")
    with netns.entered():
        yield netns


def _options(**kw: Any) -> LinkOptions:
    return LinkOptions(**{"handshake_timeout": 10.0, "keepalive": 1.0, "dead_after": 20.0, **kw})


def _cross_signallers() -> tuple[QueueSignaller, QueueSignaller]:
    """Two signallers whose sends land in each other's queue (the signalling relay, in memory)."""
    pair: list[QueueSignaller] = []

    async def to_b(body: SignalBody) -> None:
        pair[1].feed(body)

    async def to_a(body: SignalBody) -> None:
        pair[0].feed(body)

    pair.extend([QueueSignaller(to_b), QueueSignaller(to_a)])
    return pair[0], pair[1]


async def _link_pair(**kw: Any) -> tuple[Link, Link, Identity, Identity]:
    ia, ib = Identity.generate(), Identity.generate()
    sa, sb = _cross_signallers()

    async def accept() -> Link:
        offer = await sb.recv()
        assert isinstance(offer, Offer)
        return await rtc_accept(ib, offer, sb, _options(**kw), expected_peer=ia.node_id)

    accepting = asyncio.create_task(accept())
    la = await rtc_dial(ia, sa, _options(**kw), expected_peer=ib.node_id, timeout=20)
    lb = await asyncio.wait_for(accepting, 20)
    return la, lb, ia, ib


@pytest.fixture
async def links(inside: Netns) -> AsyncIterator[tuple[Link, Link, Identity, Identity]]:
    la, lb, ia, ib = await _link_pair()
    try:
        yield la, lb, ia, ib
    finally:
        await la.close()
        await lb.close()


async def test_link_over_webrtc(links: tuple[Link, Link, Identity, Identity]) -> None:
    la, lb, ia, ib = links
    assert la.peer == ib.node_id and lb.peer == ia.node_id
    assert la.transport_kind == lb.transport_kind == "webrtc"
    assert la.max_message_size == lb.max_message_size == MAX_MESSAGE
    assert la.cipher != "none"
    assert await la.ping() > 0
    assert await lb.ping() > 0
    for i, size in enumerate((0, 1, 70_000, MAX_MESSAGE, 600_000, 3 * MiB)):
        data = os.urandom(size)
        await la.send(Envelope(Chunk(b"p", i, data), ia.node_id, ib.node_id))
        env = await asyncio.wait_for(lb.recv(), 20)
        assert isinstance(env.body, Chunk) and env.body.index == i and env.body.data == data
    assert la.stats.rtt_ms is not None and la.stats.rtt_samples >= 1
    assert la.stats.bytes_sent > 3 * MiB
    # clean close: the Close frame crosses before the channel is reset
    await la.close()
    with pytest.raises(LinkClosed, match="peer closed the link"):
        await asyncio.wait_for(lb.recv(), 10)
    assert la.transport.closed and lb.closed


def _split_candidates(sdp: str, session: str) -> tuple[str, list[Candidate]]:
    """The SDP without its candidate lines, and those candidates as trickle messages (end marker last)."""
    kept, found = [], []
    for line in sdp.splitlines():
        if line.startswith("a=candidate:"):
            found.append(Candidate(session, line[2:], "0", 0))
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", [*found, Candidate(session, "", "0", 0)]


async def test_trickled_candidates_are_applied(inside: Netns) -> None:
    """With every candidate moved out of the SDPs into Candidate messages, both sides still connect."""
    ia, ib = Identity.generate(), Identity.generate()
    queues: list[QueueSignaller] = []
    trickled = 0

    def forward(to: int) -> Any:
        async def send(body: SignalBody) -> None:
            nonlocal trickled
            if isinstance(body, Offer | Answer):
                sdp, candidates = _split_candidates(body.sdp, body.session_id)
                assert fingerprint_of(sdp) == fingerprint_of(body.sdp)  # the signature still holds
                queues[to].feed(type(body)(body.session_id, sdp, body.fingerprint_sig))
                for cand in candidates:
                    queues[to].feed(cand)
                trickled += len(candidates) - 1
            else:
                queues[to].feed(body)

        return send

    queues.extend([QueueSignaller(forward(1), maxsize=64), QueueSignaller(forward(0), maxsize=64)])
    sa, sb = queues

    async def accept() -> Link:
        offer = await sb.recv()
        assert isinstance(offer, Offer) and "a=candidate" not in offer.sdp
        return await rtc_accept(ib, offer, sb, _options(), expected_peer=ia.node_id, timeout=20)

    accepting = asyncio.create_task(accept())
    la = await rtc_dial(ia, sa, _options(), expected_peer=ib.node_id, timeout=20)
    lb = await asyncio.wait_for(accepting, 20)
    try:
        assert trickled >= 2
        assert await la.ping() > 0
    finally:
        await la.close()
        await lb.close()


async def test_tampered_answer_refused_and_connection_closed(inside: Netns) -> None:
    ia, ib, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    sa, sb = _cross_signallers()

    async def evil_answerer() -> None:
        from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

        offer = await sb.recv()
        assert isinstance(offer, Offer)
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            await pc.setRemoteDescription(RTCSessionDescription(offer.sdp, "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            sdp = pc.localDescription.sdp
            await sb.send(Answer(offer.session_id, sdp, sign_sdp(mallory, sdp)))  # signed by someone else
            await asyncio.sleep(5)
        finally:
            await pc.close()

    evil = asyncio.create_task(evil_answerer())
    t0 = time.monotonic()
    with pytest.raises(HandshakeError, match="not signed by"):
        await rtc_dial(ia, sa, _options(), expected_peer=ib.node_id, timeout=10)
    assert time.monotonic() - t0 < 5
    evil.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await evil


async def test_offer_from_wrong_signer_refused_before_use(inside: Netns) -> None:
    ia, ib, mallory = Identity.generate(), Identity.generate(), Identity.generate()
    sa, sb = _cross_signallers()
    dialling = asyncio.create_task(rtc_dial(ia, sa, _options(), expected_peer=ib.node_id, timeout=1))
    offer = await asyncio.wait_for(sb.recv(), 10)
    assert isinstance(offer, Offer)
    with pytest.raises(HandshakeError, match="not signed by"):
        await rtc_accept(ib, Envelope(offer, mallory.node_id, ib.node_id), sb, _options())
    with pytest.raises(HandshakeError, match="comes from"):
        await rtc_accept(ib, Envelope(offer, ia.node_id, ib.node_id), sb, _options(), expected_peer=mallory.node_id)
    with pytest.raises(LinkTimeout):
        await dialling  # nobody answered


async def test_negotiation_timeout_closes_peer_connection(inside: Netns) -> None:
    ia, ib = Identity.generate(), Identity.generate()
    sa, _ = _cross_signallers()
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout, match="timed out"):
        await rtc_dial(ia, sa, _options(), expected_peer=ib.node_id, timeout=0.5)
    assert time.monotonic() - t0 < 5


# RtcTransport alone (no Link on top)


async def _transport_pair(**kw: Any) -> tuple[RtcTransport, RtcTransport]:
    from aiortc import RTCConfiguration, RTCDataChannel, RTCPeerConnection, RTCSessionDescription

    a, b = RTCPeerConnection(RTCConfiguration(iceServers=[])), RTCPeerConnection(RTCConfiguration(iceServers=[]))
    ta = RtcTransport(a, a.createDataChannel("edgeagent"), remote_address="b", **kw)
    arrived: asyncio.Future[RtcTransport] = asyncio.get_running_loop().create_future()

    @b.on("datachannel")
    def on_channel(channel: RTCDataChannel) -> None:
        arrived.set_result(RtcTransport(b, channel, remote_address="a", **kw))

    await a.setLocalDescription(await a.createOffer())
    await b.setRemoteDescription(RTCSessionDescription(a.localDescription.sdp, "offer"))
    await b.setLocalDescription(await b.createAnswer())
    await a.setRemoteDescription(RTCSessionDescription(b.localDescription.sdp, "answer"))
    await asyncio.wait_for(ta.wait_open(), 20)
    tb = await asyncio.wait_for(arrived, 20)
    return ta, tb


async def test_send_waits_while_buffered_amount_is_high(inside: Netns) -> None:
    ta, tb = await _transport_pair(high_water=128 * 1024, low_water=32 * 1024)
    try:
        message = os.urandom(64 * 1024)
        peak = 0
        for _ in range(64):  # 4 MiB, far more than the high-water mark
            await ta.send(message)
            peak = max(peak, ta.buffered_amount)
        assert peak <= 128 * 1024 + len(message)
        got = 0
        while got < 64 * len(message):
            got += len(await asyncio.wait_for(tb.recv(), 20))
        assert got == 64 * len(message)
        await ta.send(bytearray(b"bytearray too"))
        assert await asyncio.wait_for(tb.recv(), 10) == b"bytearray too"
        with pytest.raises(ValueError, match="exceeds"):
            await ta.send(bytes(MAX_MESSAGE + 1))
    finally:
        await ta.close()
        await tb.close()


async def test_text_message_is_a_protocol_error(inside: Netns) -> None:
    ta, tb = await _transport_pair()
    try:
        ta._channel.send("hello")
        with pytest.raises(RemoteProtocolError, match="text"):
            await asyncio.wait_for(tb.recv(), 10)
    finally:
        await ta.close()
        await tb.close()


async def test_close_is_seen_by_the_peer_and_idempotent(inside: Netns) -> None:
    ta, tb = await _transport_pair()
    await ta.send(b"last words")
    await ta.close()
    await ta.close()
    assert ta.closed
    assert await asyncio.wait_for(tb.recv(), 10) == b"last words"  # queued data goes before the close
    with pytest.raises(LinkClosed):
        await asyncio.wait_for(tb.recv(), 10)
    with pytest.raises(LinkClosed):
        await tb.send(b"x")
    with pytest.raises(LinkClosed):
        await ta.send(b"x")
    await tb.close()
    assert ta._pc.connectionState == "closed"
    assert tb._pc.connectionState == "closed"


async def test_receive_overrun_drops_the_transport(inside: Netns) -> None:
    ta, tb = await _transport_pair(recv_buffer=256 * 1024)
    try:
        for _ in range(16):  # nobody reads tb
            await ta.send(os.urandom(64 * 1024))
        for _ in range(200):
            if tb.closed:
                break
            await asyncio.sleep(0.05)
        with pytest.raises(LinkError, match="overrun"):
            await asyncio.wait_for(tb.recv(), 10)
        assert tb.closed
    finally:
        await ta.close()
        await tb.close()


# --------------------------------------------------------------------------------------------
# the scenario: two processes, signalling through a third, inside a namespace
# --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_webrtc_between_two_processes_signalled_through_a_relay(netns: Netns, tmp_path: Path) -> None:
    pytest.importorskip("aiortc")
    keys = {}
    for name in ("answerer", "dialler"):
        ident = Identity.generate()
        ident.save(tmp_path / f"{name}.key")
        keys[name] = ident.node_id
    procs = Procs(tmp_path)
    deadline = time.monotonic() + 90
    life = "--lifetime=80"
    try:
        relay = procs.start("relay", netns.argv(role_argv("relay", f"--address={netns.address}", life)))
        relay_url, relay_id = procs.read_line(relay, "READY", deadline).split()
        assert relay_url.startswith(f"ws://{netns.address}:")

        def peer(role: str, other: str) -> list[str]:
            args = [f"--key={tmp_path / f'{role}.key'}", f"--relay-url={relay_url}", f"--relay-id={relay_id}"]
            return netns.argv(role_argv(role, *args, f"--other={keys[other]}", "--mib=8", life))

        answerer = procs.start("answerer", peer("answerer", "dialler"))
        procs.read_line(answerer, "READY", deadline)  # registered with the relay before the offer is sent
        dialler = procs.start("dialler", peer("dialler", "answerer"))
        dialled = json.loads(procs.read_line(dialler, "RESULT", deadline))
        answered = json.loads(procs.read_line(answerer, "RESULT", deadline))
        relayed = json.loads(procs.read_line(relay, "RESULT", deadline))
        for proc in (dialler, answerer, relay):
            assert procs.wait(proc, deadline) == 0, proc.stderr()
    finally:
        procs.kill_all()

    print(f"\nWebRTC scenario: dialler {dialled}\n  answerer {answered}\n  relay {relayed}")
    assert dialled["transport"] == answered["transport"] == "webrtc"
    assert dialled["max_message_size"] == MAX_MESSAGE
    assert all(dialled["echo_ok"]) and answered["echoed"] == len(dialled["echo_ok"])
    assert dialled["ping_ms"] > 0 and dialled["rtt_ms"] > 0 and dialled["rtt_samples"] >= 1
    assert dialled["ours_bytes"] == 8 * MiB == dialled["raw_bytes"]
    assert dialled["closed"] and answered["clean_close"], answered["close_error"]
    assert relayed["links"] == 2 and relayed["forwarded"]["Offer"] >= 1 and relayed["forwarded"]["Answer"] >= 1


async def _wait_for(cond: Any, timeout: float = 10.0) -> None:
    await until(cond, timeout, "the condition")


async def test_nodes_open_webrtc_through_their_domain(inside: Netns, tmp_path: Path) -> None:
    """Real Nodes: the domain relays the signed Offer/Answer between two devices, which then link directly."""
    from edgeagent.node import Node, NodeConfig

    domain = Node(
        Identity.generate(), tmp_path / "d", NodeConfig(role="domain", listen=[f"ws://{inside.address}:0"], allow=set())
    )
    await domain.start()
    devices: list[Node] = []
    try:
        url = domain.listen_urls[0]
        for name in ("a", "b"):
            node = Node(Identity.generate(), tmp_path / name, NodeConfig(domain=url, allow=set(), link=_options()))
            await node.start()
            devices.append(node)
        a, b = devices
        await _wait_for(lambda: len(domain.links) == 2)
        # the devices are not authorised at the domain yet: it refuses to relay for them
        with pytest.raises(EdgeAgentError):
            await a.rtc.connect(b.identity.node_id, timeout=3)
        for links in domain.links.values():  # now the domain authorises them
            for link in links:
                link.authorised = True
        link = await a.rtc.connect(b.identity.node_id, timeout=20)
        assert link.transport_kind == "webrtc" and link.peer == b.identity.node_id
        assert await link.ping() > 0
        await _wait_for(lambda: any(lk.transport_kind == "webrtc" for lk in b.links.get(a.identity.node_id, [])))
        assert domain.routing.forwarded >= 2  # at least the Offer and the Answer went through the domain
        kinds = {ln["transport"] for ln in a.status()["links"]}
        assert kinds == {"websocket", "webrtc"}
    finally:
        for node in devices:
            await node.stop()
        await domain.stop()
