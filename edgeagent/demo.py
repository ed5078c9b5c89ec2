"""``edgeagent demo``: a domain and a few agents talking on loopback.

What it shows today (it grows as the project does): each agent makes an
Ed25519 identity, links to the domain over a WebSocket on 127.0.0.1 in the
codec it prefers (CBOR or protobuf), registers a *signed* PeerRecord, gets the
peer list back, and measures its round-trip time with Ping/Pong. A forged
record (signed by another key) is refused with an Error, and the domain keeps
serving. Every frame is a real Envelope through the real codecs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from .exceptions import DecodeError, SignatureError
from .identity import Identity, sign_struct, verify_struct
from .wire import (
    Codec,
    Envelope,
    Error,
    ErrorCode,
    Hello,
    PeerList,
    PeerRecord,
    Ping,
    Pong,
    decode,
    encode,
)

__all__ = ["run_demo"]

SUBPROTOCOLS = {"edgeagent.v1.cbor": "cbor", "edgeagent.v1.protobuf": "protobuf"}
PINGS = 20
TIMEOUT = 10.0


@dataclass
class _Counters:
    sent: int = 0
    received: int = 0
    frames: int = 0


@dataclass
class _Domain:
    ident: Identity
    records: dict[str, PeerRecord] = field(default_factory=dict)
    counters: _Counters = field(default_factory=_Counters)
    refused: int = 0

    async def handler(self, ws: Any) -> None:
        codec: Codec = SUBPROTOCOLS.get(ws.subprotocol or "", "cbor")  # type: ignore[assignment]

        async def send(env: Envelope) -> None:
            frame = encode(env, codec)
            self.counters.sent += len(frame)
            await ws.send(frame)

        async for frame in ws:
            self.counters.received += len(frame)
            self.counters.frames += 1
            try:
                env = decode(frame, codec)
            except DecodeError as exc:
                await ws.close(1008, f"undecodable frame: {exc}"[:120])
                return
            body = env.body
            if isinstance(body, Hello):
                hello = Hello(self.ident.node_id, (1,), (codec,), ("relay",), role="domain")
                await send(env.reply(hello, self.ident.node_id))
            elif isinstance(body, Ping):
                await send(env.reply(Pong(body.nonce), self.ident.node_id))
            elif isinstance(body, PeerRecord):
                try:
                    if body.node_id != env.source:
                        raise SignatureError("record describes another node")
                    verify_struct(body, env.source)
                except SignatureError as exc:
                    self.refused += 1
                    await send(env.reply(Error(ErrorCode.UNAUTHORIZED, str(exc)), self.ident.node_id))
                    continue
                self.records[str(body.node_id)] = body
                peers = tuple(r for k, r in sorted(self.records.items()) if k != str(env.source))
                await send(env.reply(PeerList(peers), self.ident.node_id))


async def _agent(url: str, index: int, codec: Codec, barrier: asyncio.Barrier) -> dict[str, Any]:
    from websockets.asyncio.client import connect

    ident = Identity.generate()
    proto = next(k for k, v in SUBPROTOCOLS.items() if v == codec)
    counters = _Counters()
    async with connect(url, subprotocols=[proto], compression=None, open_timeout=TIMEOUT) as ws:  # type: ignore[list-item]

        async def call(body: Any) -> Envelope:
            env = Envelope(body, ident.node_id)
            frame = encode(env, codec)
            counters.sent += len(frame)
            await ws.send(frame)
            raw = await asyncio.wait_for(ws.recv(), TIMEOUT)
            assert isinstance(raw, bytes)
            counters.received += len(raw)
            reply = decode(raw, codec)
            if reply.reply_to != env.msg_id:
                raise DecodeError("reply to another request")
            return reply

        hello = await call(Hello(ident.node_id, (1,), (codec,), (), listen=(), network_kind="loopback"))
        now_ms = int(time.time() * 1000)
        record = sign_struct(PeerRecord(ident.node_id, seq=1, network_kind="loopback", issued_ms=now_ms), ident)
        await call(record)
        forged_refused = None
        if index == 0:  # a record for us signed by somebody else's key must be refused
            forged = sign_struct(dataclasses.replace(record, seq=2), Identity.generate())
            forged_refused = isinstance((await call(forged)).body, Error)
        await barrier.wait()
        peers = await call(sign_struct(dataclasses.replace(record, seq=3), ident))
        rtts = []
        for nonce in range(PINGS):
            t0 = time.perf_counter()
            pong = await call(Ping(nonce))
            rtts.append((time.perf_counter() - t0) * 1000)
            if not isinstance(pong.body, Pong) or pong.body.nonce != nonce:
                raise DecodeError("wrong answer to a Ping")
    assert isinstance(peers.body, PeerList)
    return {
        "node_id": str(ident.node_id),
        "codec": codec,
        "domain": str(hello.source),
        "peers_seen": len(peers.body.peers),
        "rtt_ms_median": round(statistics.median(rtts), 3),
        "bytes_sent": counters.sent,
        "bytes_received": counters.received,
        "forged_record_refused": forged_refused,
    }


async def run_demo(agents: int = 3, json_out: bool = False) -> int:
    from websockets.asyncio.server import serve

    domain = _Domain(Identity.generate())
    async with serve(domain.handler, "127.0.0.1", 0, subprotocols=list(SUBPROTOCOLS), compression=None) as server:  # type: ignore[arg-type]
        port = next(iter(server.sockets)).getsockname()[1]
        url = f"ws://127.0.0.1:{port}/"
        if not json_out:
            print(f"domain {domain.ident.node_id} listening on {url}")
        barrier = asyncio.Barrier(agents)
        codecs: list[Codec] = ["cbor", "protobuf"]
        results = await asyncio.wait_for(
            asyncio.gather(*(_agent(url, i, codecs[i % 2], barrier) for i in range(agents))), TIMEOUT * 3
        )
    ok = all(r["peers_seen"] == agents - 1 for r in results) and results[0]["forged_record_refused"]
    summary = {
        "domain": str(domain.ident.node_id),
        "agents": results,
        "domain_bytes_sent": domain.counters.sent,
        "domain_bytes_received": domain.counters.received,
        "records_refused": domain.refused,
        "ok": ok,
    }
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'agent':<12} {'codec':<9} {'peers':>5} {'rtt ms':>8} {'sent B':>8} {'recv B':>8}")
        for r in results:
            print(
                f"{r['node_id'][-10:]:<12} {r['codec']:<9} {r['peers_seen']:>5} {r['rtt_ms_median']:>8.3f} "
                f"{r['bytes_sent']:>8} {r['bytes_received']:>8}"
            )
        print(f"forged peer record refused by the domain: {results[0]['forged_record_refused']}")
        print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1
