"""Link core without sockets: Noise XX (against noiseprotocol), records, handshake, Links over memory pipes, backoff."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import logging.handlers
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat, PublicFormat
from hypothesis import given, settings
from hypothesis import strategies as st

from edgeagent.exceptions import (
    ConfigError,
    HandshakeError,
    LinkClosed,
    LinkError,
    LinkTimeout,
    RemoteProtocolError,
)
from edgeagent.identity import Identity, sign_struct
from edgeagent.links.base import FrameTransport, LinkOptions
from edgeagent.links.handshake import MAGIC, Handshake, HandshakeResult
from edgeagent.links.link import Link, establish
from edgeagent.links.memory import MemoryTransport, memory_pipe
from edgeagent.links.noise import CIPHERS, MAX_MESSAGE, TAG_LEN, CipherState, HandshakeState
from edgeagent.links.reconnect import Backoff, keep_connected
from edgeagent.links.records import FIN, RecordReader, RecordWriter
from edgeagent.wire import (
    Chunk,
    Codec,
    Envelope,
    Error,
    ErrorCode,
    Have,
    Hello,
    ObjectMessage,
    PeerRecord,
    Response,
)

MiB = 1 << 20


def _feed(reader: RecordReader, message: bytes | bytearray) -> list[bytes]:
    """Frames completed by one transport message, copied (the reader may hand out views it reuses)."""
    return [bytes(frame) for frame in reader.feed(message)]


# --------------------------------------------------------------------------------------------
# Noise XX against the noiseprotocol package
# --------------------------------------------------------------------------------------------

noise_connection = pytest.importorskip("noise.connection")


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)


def _their_side(cipher: str, initiator: bool, static: X25519PrivateKey, prologue: bytes) -> object:
    conn = noise_connection.NoiseConnection.from_name(f"Noise_XX_25519_{cipher}_SHA256".encode())
    if initiator:
        conn.set_as_initiator()
    else:
        conn.set_as_responder()
    conn.set_keypair_from_private_bytes(noise_connection.Keypair.STATIC, _raw_private(static))
    conn.set_prologue(prologue)
    conn.start_handshake()
    return conn


@pytest.mark.parametrize("cipher", CIPHERS)
@pytest.mark.parametrize("we_initiate", [True, False], ids=["we-initiate", "we-respond"])
def test_noise_interoperates_with_noiseprotocol(cipher: str, we_initiate: bool) -> None:
    prologue = MAGIC + b"\x00"
    our_static, their_static = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    ours = HandshakeState(we_initiate, our_static, cipher, prologue)
    theirs = _their_side(cipher, not we_initiate, their_static, prologue)
    payloads = [b"offer", b"payload two " * 10, b""]
    received: list[bytes] = []
    for step, payload in enumerate(payloads):
        our_turn = (step % 2 == 0) == we_initiate
        if our_turn:
            msg = ours.write_message(payload)
            received.append(bytes(theirs.read_message(msg)))  # type: ignore[attr-defined]
        else:
            msg = bytes(theirs.write_message(payload))  # type: ignore[attr-defined]
            received.append(ours.read_message(msg))
    assert received == payloads
    assert ours.complete and theirs.handshake_finished  # type: ignore[attr-defined]
    assert ours.handshake_hash == theirs.get_handshake_hash()  # type: ignore[attr-defined]
    assert ours.remote_static == _raw_public(their_static)
    send, recv = ours.split()
    for size in (0, 1, 1000, MAX_MESSAGE - TAG_LEN):
        data = os.urandom(size)
        assert bytes(theirs.decrypt(send.encrypt(b"", data))) == data  # type: ignore[attr-defined]
        assert recv.decrypt(b"", bytes(theirs.encrypt(data))) == data  # type: ignore[attr-defined]
    assert send.n == recv.n == 4


def _our_pair(cipher: str = "AESGCM") -> tuple[HandshakeState, HandshakeState]:
    return (
        HandshakeState(True, X25519PrivateKey.generate(), cipher),
        HandshakeState(False, X25519PrivateKey.generate(), cipher),
    )


def _flip(msg: bytes, index: int) -> bytes:
    b = bytearray(msg)
    b[index] ^= 0x01
    return bytes(b)


@pytest.mark.parametrize("cipher", CIPHERS)
def test_noise_tampered_handshake_messages_fail(cipher: str) -> None:
    # message 2 (encrypted static key) tampered: the initiator refuses it
    i, r = _our_pair(cipher)
    r.read_message(i.write_message(b""))
    m2 = r.write_message(b"hi")
    with pytest.raises(HandshakeError):
        i.read_message(_flip(m2, 40))
    # message 3 tampered: the responder refuses it
    i, r = _our_pair(cipher)
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    m3 = i.write_message(b"payload")
    with pytest.raises(HandshakeError):
        r.read_message(_flip(m3, len(m3) - 1))
    # message 1 is plaintext, but it is in the transcript: the tamper shows at message 2
    i, r = _our_pair(cipher)
    m1 = i.write_message(b"offer")
    assert r.read_message(_flip(m1, len(m1) - 1)) == b"offes"
    with pytest.raises(HandshakeError):
        i.read_message(r.write_message(b""))
    # truncated message 2
    i, r = _our_pair(cipher)
    r.read_message(i.write_message(b""))
    with pytest.raises(HandshakeError):
        i.read_message(r.write_message(b"")[:50])
    # prologue mismatch (e.g. a rewritten cipher id) fails at message 2
    i = HandshakeState(True, X25519PrivateKey.generate(), cipher, b"EAL1\x00")
    r = HandshakeState(False, X25519PrivateKey.generate(), cipher, b"EAL1\x01")
    r.read_message(i.write_message(b""))
    with pytest.raises(HandshakeError):
        i.read_message(r.write_message(b""))


def test_noise_out_of_turn_and_incomplete_split() -> None:
    i, r = _our_pair()
    with pytest.raises(HandshakeError):
        i.read_message(b"\x00" * 32)
    with pytest.raises(HandshakeError):
        r.write_message(b"")
    with pytest.raises(HandshakeError):
        i.split()
    with pytest.raises(HandshakeError):
        r.read_message(b"\x00" * (MAX_MESSAGE + 1))


@pytest.mark.parametrize("victim", ["listener", "dialler"])
def test_low_order_public_key_is_a_handshake_error(victim: str) -> None:
    if victim == "listener":
        from edgeagent.wire.cbor import encode_struct
        from edgeagent.wire.messages.link import HandshakeOffer

        listener = Handshake(Identity.generate(), False, LinkOptions())
        offer = encode_struct(HandshakeOffer((1,), ("cbor",), False))
        with pytest.raises(HandshakeError):
            listener.receive(MAGIC + b"\x00" + b"\x00" * 32 + offer)  # a zero ephemeral key, a valid offer
    else:
        dialler = Handshake(Identity.generate(), True, LinkOptions(cipher="AESGCM"))
        dialler.start()
        with pytest.raises(HandshakeError):
            dialler.receive(b"\x00" * 32 + b"\x00" * 48 + b"\x00" * 16)


async def test_low_order_key_from_a_listener_does_not_kill_keep_connected() -> None:
    attempts = 0

    async def evil_listener(t: MemoryTransport) -> None:
        with contextlib.suppress(LinkError):
            await t.recv()
            await t.send(b"\x00" * 96)  # zero ephemeral key, junk static and payload

    async def dial() -> Link:
        nonlocal attempts
        attempts += 1
        ta, tb = memory_pipe()
        server = asyncio.ensure_future(evil_listener(tb))
        try:
            return await establish(ta, Identity.generate(), LinkOptions(), initiator=True)
        finally:
            await server

    async def on_link(link: Link) -> None:
        pass

    task = asyncio.ensure_future(keep_connected(dial, on_link, backoff=Backoff(0.001, 0.01)))
    try:
        await asyncio.sleep(0.3)
        assert not task.done(), f"keep_connected died: {task.exception()!r}"
        assert attempts > 3
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ValueError):
            await task


def _finished_pair(cipher: str) -> tuple[tuple[CipherState, CipherState], tuple[CipherState, CipherState]]:
    i, r = _our_pair(cipher)
    r.read_message(i.write_message(b""))
    i.read_message(r.write_message(b""))
    r.read_message(i.write_message(b""))
    return i.split(), r.split()


@pytest.mark.parametrize("cipher", CIPHERS)
def test_reordered_replayed_or_forged_records_are_refused(cipher: str) -> None:
    (i_send, _), (_, r_recv) = _finished_pair(cipher)
    writer = RecordWriter(i_send, 1 << 20)
    msgs = [writer.pack(f"frame {n}".encode())[0] for n in range(3)]
    # reordered
    reader = RecordReader(r_recv, 1 << 20)
    with pytest.raises(RemoteProtocolError):
        _feed(reader, msgs[1])
    # replayed
    (i_send, _), (_, r_recv) = _finished_pair(cipher)
    writer = RecordWriter(i_send, 1 << 20)
    msgs = [writer.pack(f"frame {n}".encode())[0] for n in range(2)]
    reader = RecordReader(r_recv, 1 << 20)
    assert _feed(reader, msgs[0]) == [b"frame 0"]
    with pytest.raises(RemoteProtocolError):
        _feed(reader, msgs[0])
    # FIN flag flipped (the flags byte is authenticated)
    (i_send, _), (_, r_recv) = _finished_pair(cipher)
    msg = RecordWriter(i_send, 1 << 20).pack(b"abc")[0]
    with pytest.raises(RemoteProtocolError):
        _feed(RecordReader(r_recv, 1 << 20), bytes([msg[0] ^ FIN]) + msg[1:])
    # a record from another session
    (i_send, _), _ = _finished_pair(cipher)
    _, (_, r_recv) = _finished_pair(cipher)
    with pytest.raises(RemoteProtocolError):
        _feed(RecordReader(r_recv, 1 << 20), RecordWriter(i_send, 1 << 20).pack(b"abc")[0])


# --------------------------------------------------------------------------------------------
# Record layer
# --------------------------------------------------------------------------------------------


def _ciphers(encrypted: bool) -> tuple[CipherState | None, CipherState | None]:
    if not encrypted:
        return None, None
    key = os.urandom(32)
    return CipherState("AESGCM", key), CipherState("AESGCM", key)


SIZES = [0, 1, 65518, 65519, 65520, 3 * MiB]


@pytest.mark.parametrize("encrypted", [True, False], ids=["aead", "insecure"])
@pytest.mark.parametrize("max_message", [64, 1024, 65538, 1 << 20], ids=lambda m: f"msg{m}")
def test_records_round_trip(encrypted: bool, max_message: int) -> None:
    enc, dec = _ciphers(encrypted)
    writer = RecordWriter(enc, max_message)
    reader = RecordReader(dec, 4 * MiB)
    rng = random.Random(max_message)
    sizes = SIZES if max_message >= 1024 else [*SIZES[:-1], 300_000]  # tiny messages: keep the count sane
    for size in sizes:
        frame = rng.randbytes(size)
        messages = writer.pack(frame)
        assert all(0 < len(m) <= max_message for m in messages)
        out: list[bytes] = []
        for n, m in enumerate(messages):
            got = _feed(reader, m)
            if n < len(messages) - 1:
                assert got == []
            out += got
        assert out == [frame], size
    # several frames back to back, messages fed in one go each
    frames = [rng.randbytes(n) for n in (0, 5, 70_000, 3)]
    got_all: list[bytes] = []
    for frame in frames:
        for m in writer.pack(frame):
            got_all += _feed(reader, m)
    assert got_all == frames


def test_record_pieces_stay_under_noise_limit() -> None:
    enc, _ = _ciphers(True)
    messages = RecordWriter(enc, 1 << 20).pack(b"x" * (3 * MiB))
    records = 0
    for m in messages:
        pos = 0
        while pos < len(m):
            length = int.from_bytes(m[pos + 1 : pos + 3], "big")
            assert length <= MAX_MESSAGE
            pos += 3 + length
            records += 1
        assert pos == len(m)
    assert records == -(-3 * MiB // (MAX_MESSAGE - TAG_LEN))
    with pytest.raises(ValueError, match="too small"):
        RecordWriter(enc, 3 + TAG_LEN)


@pytest.mark.parametrize("encrypted", [True, False], ids=["aead", "insecure"])
def test_oversized_frame_refused_before_it_is_complete(encrypted: bool) -> None:
    enc, dec = _ciphers(encrypted)
    piece = 1000 - 3 - (TAG_LEN if encrypted else 0)
    messages = RecordWriter(enc, 1000).pack(b"z" * (piece * 20))
    assert len(messages) == 20
    reader = RecordReader(dec, piece * 5 + 10)
    for m in messages[:5]:
        assert _feed(reader, m) == []
    with pytest.raises(RemoteProtocolError, match="cap"):
        _feed(reader, messages[5])  # refused at the 6th piece of 20


def test_exact_cap_is_accepted() -> None:
    enc, dec = _ciphers(True)
    frame = os.urandom(200_000)
    reader = RecordReader(dec, len(frame))
    out: list[bytes] = []
    for m in RecordWriter(enc, 70_000).pack(frame):
        out += _feed(reader, m)
    assert out == [frame]


@pytest.mark.parametrize(
    ("message", "why"),
    [
        (b"", "empty"),
        (b"\x01\x00", "truncated"),
        (b"\x01", "truncated"),
        (b"\x02\x00\x00", "flags"),
        (b"\x81\x00\x01a", "flags"),
        (b"\x01\x00\x05ab", "overruns"),
        (b"\x01\x00\x01a\x01", "truncated"),
        (b"\x00\x00\x01a\x04\x00\x00", "flags"),
    ],
)
def test_malformed_records_insecure(message: bytes, why: str) -> None:
    with pytest.raises(RemoteProtocolError, match=why):
        _feed(RecordReader(None, 1 << 20), message)


@settings(max_examples=300, deadline=None)
@given(st.binary(min_size=1, max_size=600))
def test_garbage_records_encrypted(message: bytes) -> None:
    _, dec = _ciphers(True)
    with pytest.raises(RemoteProtocolError):
        _feed(RecordReader(dec, 1 << 20), message)


# --------------------------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------------------------


def _pump(dialler: Handshake, listener: Handshake) -> tuple[HandshakeResult, HandshakeResult]:
    msg: bytes | None = dialler.start()
    side = listener
    for _ in range(4):
        assert msg is not None
        msg = side.receive(msg)
        side = dialler if side is listener else listener
        if msg is None:
            break
    assert dialler.result is not None and listener.result is not None
    return dialler.result, listener.result


def test_handshake_binds_node_ids_and_agrees() -> None:
    a, b = Identity.generate(), Identity.generate()
    da, lb = _pump(
        Handshake(a, True, LinkOptions(cipher="ChaChaPoly", role="device")),
        Handshake(b, False, LinkOptions(role="domain", listen=("ws://x:1",))),
    )
    assert da.peer == b.node_id and lb.peer == a.node_id
    assert da.handshake_hash == lb.handshake_hash
    assert da.cipher == lb.cipher == "ChaChaPoly"
    assert da.codec == lb.codec == "cbor"
    assert da.peer_hello.role == "domain" and da.peer_hello.listen == ("ws://x:1",)
    assert lb.peer_hello.node_id == a.node_id
    assert da.send is not None and lb.recv is not None
    assert lb.recv.decrypt(b"", da.send.encrypt(b"", b"ok")) == b"ok"


@pytest.mark.parametrize(
    ("offer", "accept", "chosen"),
    [
        (("protobuf", "cbor"), ("cbor",), "cbor"),
        (("protobuf", "cbor"), ("cbor", "protobuf"), "protobuf"),
        (("cbor", "protobuf"), ("protobuf", "cbor"), "cbor"),
        (("protobuf",), ("cbor", "protobuf"), "protobuf"),
    ],
)
def test_codec_negotiation(offer: tuple[Codec, ...], accept: tuple[Codec, ...], chosen: str) -> None:
    d, l = _pump(  # noqa: E741
        Handshake(Identity.generate(), True, LinkOptions(codecs=offer)),
        Handshake(Identity.generate(), False, LinkOptions(codecs=accept)),
    )
    assert d.codec == l.codec == chosen


def test_no_common_codec() -> None:
    with pytest.raises(HandshakeError, match="codec"):
        _pump(
            Handshake(Identity.generate(), True, LinkOptions(codecs=("protobuf",))),
            Handshake(Identity.generate(), False, LinkOptions(codecs=("cbor",))),
        )


def test_expected_peer_mismatch() -> None:
    listener_id, other = Identity.generate(), Identity.generate()
    with pytest.raises(HandshakeError, match="expected"):
        _pump(
            Handshake(Identity.generate(), True, LinkOptions(), expected_peer=other.node_id),
            Handshake(listener_id, False, LinkOptions()),
        )
    d, _ = _pump(
        Handshake(Identity.generate(), True, LinkOptions(), expected_peer=listener_id.node_id),
        Handshake(listener_id, False, LinkOptions()),
    )
    assert d.peer == listener_id.node_id


@pytest.mark.parametrize(("dialler_insecure", "listener_insecure"), [(True, False), (False, True)])
def test_insecure_must_be_allowed_both_ways(dialler_insecure: bool, listener_insecure: bool) -> None:
    with pytest.raises(HandshakeError, match=r"insecure|encryption"):
        _pump(
            Handshake(Identity.generate(), True, LinkOptions(insecure=dialler_insecure)),
            Handshake(Identity.generate(), False, LinkOptions(insecure=listener_insecure)),
        )


def test_insecure_when_both_allow() -> None:
    d, l = _pump(  # noqa: E741
        Handshake(Identity.generate(), True, LinkOptions(insecure=True)),
        Handshake(Identity.generate(), False, LinkOptions(insecure=True)),
    )
    assert d.insecure and l.insecure and d.send is None and l.recv is None


@pytest.mark.parametrize(
    "first", [b"", b"EAL", b"EAL2\x00" + b"\x00" * 32, b"GET / HTTP/1.1\r\n\r\n", b"EAL1\x07" + b"\x00" * 32]
)
def test_bad_magic_or_cipher_id(first: bytes) -> None:
    with pytest.raises(HandshakeError):
        Handshake(Identity.generate(), False, LinkOptions()).receive(first)


def test_magic_with_junk_and_tampered_cipher_id() -> None:
    listener = Handshake(Identity.generate(), False, LinkOptions())
    with pytest.raises(HandshakeError):
        listener.receive(MAGIC + b"\x00" + b"junk")  # too short for an ephemeral key
    # rewriting the cipher id (a downgrade attempt) breaks the transcript
    dialler = Handshake(Identity.generate(), True, LinkOptions(cipher="AESGCM"))
    first = dialler.start()
    listener = Handshake(Identity.generate(), False, LinkOptions())
    reply = listener.receive(first[:4] + b"\x01" + first[5:])
    assert reply is not None
    with pytest.raises(HandshakeError):
        dialler.receive(reply)


class _Forger(Handshake):
    """Sends a HandshakePayload claiming ``claim`` whose signature is by ``signer`` over ``static_pub``
    (defaults: its own Noise static key)."""

    def __init__(
        self, *args: object, claim: Identity, signer: Identity, static_pub: bytes | None = None, **kwargs: object
    ) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.claim, self.signer, self.static_pub = claim, signer, static_pub

    def _payload(self, hello: Hello) -> bytes:
        from edgeagent.wire.cbor import encode_struct
        from edgeagent.wire.messages.link import HandshakePayload

        static_pub = self.static_pub or self._static.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
        sig = self.signer.sign(b"edgeagent-noise-static-key:" + static_pub)
        hello = Hello(self.claim.node_id, hello.versions, hello.codecs)
        return encode_struct(HandshakePayload(self.claim.node_id, sig, hello))


@pytest.mark.parametrize("forger_dials", [True, False], ids=["forging-dialler", "forging-listener"])
def test_forged_signature_is_refused(forger_dials: bool) -> None:
    honest, victim, mallory = Identity.generate(), Identity.generate(), Identity.generate()

    def attempt(forger: Handshake) -> None:
        other = Handshake(honest, not forger_dials, LinkOptions())
        with pytest.raises(HandshakeError, match="did not prove"):
            _pump(forger, other) if forger_dials else _pump(other, forger)

    # claims the victim's NodeId, signs with its own key
    attempt(_Forger(mallory, forger_dials, LinkOptions(), claim=victim, signer=mallory))
    # a genuine signature by the victim, but over another session's static key (a replayed payload)
    other_static = X25519PrivateKey.generate().public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    attempt(_Forger(mallory, forger_dials, LinkOptions(), claim=victim, signer=victim, static_pub=other_static))
    # control: the same class signing honestly is accepted
    ok = _Forger(victim, forger_dials, LinkOptions(), claim=victim, signer=victim)
    other = Handshake(honest, not forger_dials, LinkOptions())
    d, l = _pump(ok, other) if forger_dials else _pump(other, ok)  # noqa: E741
    assert (l if forger_dials else d).peer == victim.node_id


def test_handshake_garbage_payloads() -> None:
    # a valid Noise message whose payload is not a HandshakeOffer
    noise = HandshakeState(True, X25519PrivateKey.generate(), "AESGCM", MAGIC + b"\x00")
    first = MAGIC + b"\x00" + noise.write_message(b"\xff\xfe not cbor")
    with pytest.raises(HandshakeError):
        Handshake(Identity.generate(), False, LinkOptions()).receive(first)


# --------------------------------------------------------------------------------------------
# Links over memory pipes
# --------------------------------------------------------------------------------------------


async def _link_pair(
    a_opts: LinkOptions | None = None,
    b_opts: LinkOptions | None = None,
    transports: tuple[FrameTransport, FrameTransport] | None = None,
    **pipe: object,
) -> tuple[Link, Link, Identity, Identity]:
    ta, tb = transports or memory_pipe(**pipe)  # type: ignore[arg-type]
    ia, ib = Identity.generate(), Identity.generate()
    async with asyncio.timeout(10):
        la, lb = await asyncio.gather(
            establish(ta, ia, a_opts or LinkOptions(), initiator=True),
            establish(tb, ib, b_opts or LinkOptions(), initiator=False),
        )
    return la, lb, ia, ib


@contextlib.asynccontextmanager
async def _closing(*links: Link) -> AsyncIterator[None]:
    try:
        yield
    finally:
        for link in links:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(link.close(), 3)


async def test_link_send_recv_ping_stats_close() -> None:
    delay, bandwidth = 0.02, 200e6
    la, lb, ia, ib = await _link_pair(
        LinkOptions(codecs=("protobuf", "cbor")), delay=delay, bandwidth=bandwidth, capacity=8 << 20
    )
    async with _closing(la, lb):
        assert la.peer == ib.node_id and lb.peer == ia.node_id
        assert la.codec == lb.codec == "protobuf"
        assert la.transport_kind == "memory" and la.cipher in CIPHERS
        big = os.urandom(5 * MiB)
        bodies = [
            Have(b"p" * 32, b"\x01\x02"),
            ObjectMessage("obj-1", {"x": [1, 2.5, "s"]}, ("t",), "desc"),
            Response({"ok": True}),
            Error(ErrorCode.NOT_FOUND, "nope"),
        ]
        sent = [Envelope(body, ia.node_id, destination=ib.node_id) for body in bodies]
        t0 = time.monotonic()
        for env in sent:
            await la.send(env)
        chunk = Envelope(Chunk(b"p" * 32, 7, big), ia.node_id)
        await la.send(chunk)
        got = [await asyncio.wait_for(lb.recv(), 10) for _ in range(len(sent) + 1)]
        elapsed = time.monotonic() - t0
        assert got[:-1] == sent
        assert got[-1].msg_id == chunk.msg_id and got[-1].body == chunk.body
        assert elapsed >= 0.9 * len(big) / bandwidth + delay
        # reply in the other direction
        await lb.send(got[1].reply(Response("stored"), ib.node_id))
        reply = await asyncio.wait_for(la.recv(), 5)
        assert reply.reply_to == sent[1].msg_id and reply.body == Response("stored")
        rtt = await la.ping()
        assert 2 * delay * 1000 <= rtt < 2 * delay * 1000 + 300
        assert la.stats.rtt_ms == pytest.approx(rtt) and la.stats.rtt_samples == 1
        assert la.stats.bytes_sent > len(big) and la.stats.frames_sent == len(sent) + 2
        assert la.stats.bytes_sent == lb.stats.bytes_received
        assert la.stats.bytes_received == lb.stats.bytes_sent
        assert lb.stats.frames_received == la.stats.frames_sent
        # clean close: the peer sees LinkClosed (not a timeout), then recv keeps raising it
        await la.close()
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(lb.recv(), 3)
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(lb.recv(), 1)
        assert lb.closed and not isinstance(lb.close_error, LinkTimeout)
        assert "peer closed" in str(lb.close_error)
        with pytest.raises(LinkClosed):
            await la.send(sent[0])


async def test_queued_envelopes_delivered_before_close() -> None:
    la, lb, ia, _ = await _link_pair()
    async with _closing(la, lb):
        envs = [Envelope(Response(n), ia.node_id) for n in range(5)]
        for env in envs:
            await la.send(env)
        await la.close()
        got = [await asyncio.wait_for(lb.recv(), 3) for _ in envs]
        assert got == envs
        with pytest.raises(LinkClosed):
            await asyncio.wait_for(lb.recv(), 3)


@pytest.mark.parametrize("codec", ["cbor", "protobuf"])
async def test_queued_frames_survive_reader_buffer_reuse(codec: Codec) -> None:
    """The reader reuses one reassembly buffer: envelopes queued unread must not change, and the buffer
    must grow for a larger frame afterwards."""
    la, lb, ia, _ = await _link_pair(LinkOptions(codecs=(codec,)))
    async with _closing(la, lb):
        rng = random.Random(3)
        datas = [rng.randbytes(n) for n in (100_000, 1000, 70_000, 2 * MiB, 10)]
        for n, data in enumerate(datas):
            await la.send(Envelope(Chunk(b"p", n, data), ia.node_id))
        got = [await asyncio.wait_for(lb.recv(), 3) for _ in datas]
        assert [e.body.data for e in got] == datas  # type: ignore[attr-defined]
        assert not lb.closed


@pytest.mark.parametrize("codec", ["cbor", "protobuf"])
async def test_undecodable_frame_then_larger_frame(codec: Codec) -> None:
    keep = logging.handlers.MemoryHandler(capacity=10_000, flushLevel=logging.CRITICAL + 1)
    logger = logging.getLogger("edgeagent")
    logger.addHandler(keep)
    try:
        la, lb, ia, _ = await _link_pair(LinkOptions(codecs=(codec,)))
        async with _closing(la, lb):
            await la.send(Envelope(Chunk(b"p", 0, b"small"), ia.node_id))
            await la._send_frame(b"\xff\x00 not an envelope")
            reply = await asyncio.wait_for(la.recv(), 3)
            assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.DECODE
            big = os.urandom(200_000)
            await la.send(Envelope(Chunk(b"p", 1, big), ia.node_id))
            got = [await asyncio.wait_for(lb.recv(), 3) for _ in range(2)]
            assert got[1].body.data == big  # type: ignore[attr-defined]
            assert not lb.closed
    finally:
        logger.removeHandler(keep)
        keep.buffer.clear()


class _Muteable(FrameTransport):
    """Wraps a transport; when ``mute`` is set, sends vanish (a peer that froze or a cable pulled)."""

    def __init__(self, inner: MemoryTransport) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.max_message_size = inner.max_message_size
        self.remote_address = inner.remote_address
        self.mute = False

    async def send(self, message: bytes | bytearray) -> None:
        if not self.mute:
            await self.inner.send(message)

    async def recv(self) -> bytes:
        return await self.inner.recv()

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if not self.mute:
            await self.inner.close(code, reason)

    @property
    def closed(self) -> bool:
        return self.inner.closed


async def test_dead_link_detected() -> None:
    ta, tb = memory_pipe()
    mb = _Muteable(tb)
    opts = LinkOptions(keepalive=0.2, dead_after=0.6)
    la, lb, _, _ = await _link_pair(opts, opts, transports=(ta, mb))
    async with _closing(la, lb):
        # healthy while both answer: keepalive Pings flow
        await asyncio.sleep(0.9)
        assert not la.closed and la.stats.rtt_samples + lb.stats.rtt_samples >= 1
        mb.mute = True
        t0 = time.monotonic()
        with pytest.raises(LinkTimeout):
            await asyncio.wait_for(la.recv(), 3)
        assert time.monotonic() - t0 < 1.5
        assert la.closed


async def test_unauthorised_peer() -> None:
    la, lb, ia, ib = await _link_pair(b_opts=LinkOptions(authorize=lambda n: False))
    async with _closing(la, lb):
        assert not lb.authorised and la.authorised
        assert await la.ping() >= 0
        record = sign_struct(PeerRecord(ia.node_id, 1, addresses=("ws://127.0.0.1:1",)), ia)
        rec_env = Envelope(record, ia.node_id)
        await la.send(rec_env)
        assert (await asyncio.wait_for(lb.recv(), 3)) == rec_env
        request = Envelope(ObjectMessage("x", b"data"), ia.node_id)
        await la.send(request)
        reply = await asyncio.wait_for(la.recv(), 3)
        assert isinstance(reply.body, Error) and reply.body.code == ErrorCode.UNAUTHORIZED
        assert reply.reply_to == request.msg_id and reply.source == ib.node_id
        # speaking for another node is refused too
        spoof = Envelope(PeerRecord(ib.node_id, 1), ib.node_id)
        await la.send(spoof)
        reply = await asyncio.wait_for(la.recv(), 3)
        assert reply.reply_to == spoof.msg_id and reply.body.code == ErrorCode.UNAUTHORIZED  # type: ignore[attr-defined]
        assert lb.stats.refused == 2
        # nothing reached the application, and the link is still up
        assert lb._inbox.empty()
        assert not la.closed and not lb.closed
        assert await la.ping() >= 0
        await la.send(rec_env)
        assert (await asyncio.wait_for(lb.recv(), 3)) == rec_env


async def test_backpressure_blocks_sender_then_resumes() -> None:
    capacity = 256 * 1024
    la, lb, ia, _ = await _link_pair(b_opts=LinkOptions(recv_queue=2), capacity=capacity)
    async with _closing(la, lb):
        payload = os.urandom(32 * 1024)
        sent = 0
        blocked: asyncio.Task[None] | None = None
        for n in range(200):  # 6.4 MiB offered at most
            task = asyncio.ensure_future(la.send(Envelope(Chunk(b"p", n, payload), ia.node_id)))
            try:
                await asyncio.wait_for(asyncio.shield(task), 0.3)
            except TimeoutError:
                blocked = task
                break
            sent += 1
        assert blocked is not None, "send never blocked"
        # buffered: 2 in the app queue, one in the reader's hand, and the pipe's capacity
        assert sent <= 2 + 1 + capacity // len(payload) + 2
        assert ta_queued(la) <= capacity + 64 * 1024
        # reading resumes the sender
        got = [await asyncio.wait_for(lb.recv(), 3) for _ in range(sent)]
        await asyncio.wait_for(blocked, 3)
        got.append(await asyncio.wait_for(lb.recv(), 3))
        assert [e.body.index for e in got] == list(range(sent + 1))  # type: ignore[attr-defined]


def ta_queued(link: Link) -> int:
    transport = link.transport
    assert isinstance(transport, MemoryTransport)
    return int(transport._tx.queued_bytes)


async def test_failed_handshake_closes_transport() -> None:
    ta, tb = memory_pipe()
    other = Identity.generate()
    results = await asyncio.gather(
        establish(ta, Identity.generate(), LinkOptions(), initiator=True, expected_peer=other.node_id),
        establish(tb, Identity.generate(), LinkOptions(), initiator=False),
        return_exceptions=True,
    )
    assert isinstance(results[0], HandshakeError)
    assert isinstance(results[1], LinkError)
    assert ta.closed and tb.closed


async def test_handshake_timeout() -> None:
    ta, tb = memory_pipe()
    t0 = time.monotonic()
    with pytest.raises(LinkTimeout):
        await establish(tb, Identity.generate(), LinkOptions(handshake_timeout=0.3), initiator=False)
    assert time.monotonic() - t0 < 1.0
    assert ta.closed


async def test_garbage_after_handshake_drops_link() -> None:
    ta, tb = memory_pipe()
    la, lb, _, _ = await _link_pair(transports=(ta, tb))
    async with _closing(la, lb):
        await ta.send(b"\x01\x00\x10" + b"\x00" * 16)  # a record that fails authentication
        with pytest.raises(LinkClosed, match="record protocol"):
            await asyncio.wait_for(lb.recv(), 3)


# --------------------------------------------------------------------------------------------
# Reconnect
# --------------------------------------------------------------------------------------------


def test_backoff_bounds_growth_jitter_reset() -> None:
    base, cap = 0.5, 10.0
    maxima = []
    for n in range(8):
        ceiling = min(cap, base * 2**n)
        delays = [Backoff(base, cap, attempt=n, rng=random.Random(seed)).next_delay() for seed in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert len(set(delays)) > 150  # jittered
        assert max(delays) > 0.8 * ceiling  # the whole range is used
        maxima.append(max(delays))
    assert maxima[:5] == sorted(maxima[:5])  # grows until the cap
    b = Backoff(base, cap, rng=random.Random(1))
    seq = [b.next_delay() for _ in range(12)]
    assert b.attempt == 12 and max(seq[8:]) <= cap
    assert len(set(seq)) == len(seq)
    b.reset()
    assert b.attempt == 0 and b.next_delay() <= base
    huge = Backoff(base, cap, attempt=10_000)
    assert 0 <= huge.next_delay() <= cap


async def test_keep_connected_redials_after_close() -> None:
    servers: list[Link] = []
    clients: list[Link] = []
    ia, ib = Identity.generate(), Identity.generate()
    fail_next = [LinkError("refused"), LinkError("refused")]

    async def dial() -> Link:
        if fail_next and len(clients) == 1:
            raise fail_next.pop()
        ta, tb = memory_pipe()
        la, lb = await asyncio.gather(
            establish(ta, ia, LinkOptions(), initiator=True), establish(tb, ib, LinkOptions(), initiator=False)
        )
        servers.append(lb)
        return la

    got = asyncio.Event()

    async def on_link(link: Link) -> None:
        clients.append(link)
        got.set()

    task = asyncio.ensure_future(keep_connected(dial, on_link, backoff=Backoff(0.01, 0.05)))
    try:
        for round_ in range(3):
            await asyncio.wait_for(got.wait(), 5)
            got.clear()
            assert len(clients) == round_ + 1 and not clients[-1].closed
            await servers[-1].close()  # the far end goes away
            await asyncio.wait_for(clients[-1].wait_closed(), 3)
        await asyncio.wait_for(got.wait(), 5)
        assert len(clients) == 4 and not fail_next
        assert all(c.closed for c in clients[:3])
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        for link in clients + servers:
            await link.close()


async def test_keep_connected_gives_up() -> None:
    calls = 0

    async def failing() -> Link:
        nonlocal calls
        calls += 1
        raise LinkError("no route")

    async def bad_url() -> Link:
        raise ConfigError("bad url")

    never: Callable[[Link], Awaitable[None]] = lambda link: asyncio.sleep(0)  # noqa: E731
    with pytest.raises(LinkError):
        await asyncio.wait_for(keep_connected(failing, never, backoff=Backoff(0.001, 0.01), max_attempts=4), 5)
    assert calls == 4
    with pytest.raises(ConfigError):
        await asyncio.wait_for(keep_connected(bad_url, never), 5)
