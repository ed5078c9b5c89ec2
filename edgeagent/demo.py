"""``edgeagent demo``: a domain and a few agents on 127.0.0.1, over real links.

What it shows today (it grows as the project does): a domain node listens;
each agent makes an Ed25519 identity and dials it over a WebSocket; the Noise
XX handshake binds the link to both NodeIds and negotiates the codec (agents
alternate CBOR and protobuf); each agent registers a signed PeerRecord and gets
the peer list back; RTTs come from Ping/Pong; each agent pushes a tensor to
the domain's worker, has it compute with allow-listed operations and pulls
the result. Then the failure cases: a record
signed by the wrong key is refused, a peer the domain has not authorised may
ping but its object push is refused, and a dialler expecting another NodeId
refuses the domain. The domain keeps serving throughout.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from .exceptions import HandshakeError
from .identity import Identity, sign_struct
from .links.base import LinkOptions
from .links.link import Link
from .links.websocket import dial
from .node import Node, NodeConfig
from .wire import (
    Codec,
    Envelope,
    Error,
    ErrorCode,
    ObjectMessage,
    ObjectRef,
    ObjectRequestMessage,
    Operation,
    PeerList,
    PeerRecord,
    Response,
    Tensor,
)

__all__ = ["run_demo"]

PINGS = 10
TIMEOUT = 10.0


async def _call(link: Link, ident: Identity, body: Any) -> Envelope:
    env = Envelope(body, ident.node_id, destination=link.peer)
    await link.send(env)
    async with asyncio.timeout(TIMEOUT):
        while True:
            reply = await link.recv()
            if reply.reply_to == env.msg_id:
                return reply


def _record(ident: Identity, seq: int) -> PeerRecord:
    rec = PeerRecord(ident.node_id, seq=seq, network_kind="loopback", issued_ms=int(time.time() * 1000))
    return sign_struct(rec, ident)


async def _agent(url: str, ident: Identity, codec: Codec, barrier: asyncio.Barrier) -> dict[str, Any]:
    link = await dial(url, ident, LinkOptions(codecs=(codec,), network_kind="loopback"))
    try:
        await _call(link, ident, _record(ident, 1))
        await barrier.wait()  # everyone registered: ask again to see them all
        peers = await _call(link, ident, _record(ident, 2))
        rtts = [await link.ping() for _ in range(PINGS)]
        assert isinstance(peers.body, PeerList)
        worker = await _worker_round(link, ident)
        return {
            "node_id": str(ident.node_id),
            "codec": link.codec,
            "cipher": link.cipher,
            "peers_seen": len(peers.body.peers),
            "rtt_ms_median": round(statistics.median(rtts), 3),
            "bytes_sent": link.stats.bytes_sent,
            "bytes_received": link.stats.bytes_received,
            "worker": worker,
        }
    finally:
        await link.close()


async def _worker_round(link: Link, ident: Identity) -> str:
    """Push a tensor to the domain's worker, have it compute x * 2 + 1, pull the result."""
    import struct

    values = [1.0, 2.0, 3.0]
    x = Tensor("float32", (3,), struct.pack("<3f", *values))
    tag = ident.node_id.short()[-6:]
    await _call(link, ident, ObjectMessage(f"x-{tag}", x, ("demo",)))
    await _call(link, ident, Operation("mul", f"x-{tag}", (2.0,), {}, (f"y-{tag}",)))
    await _call(link, ident, Operation("add", None, (ObjectRef(f"y-{tag}"), 1.0), {}, (f"z-{tag}",)))
    reply = await _call(link, ident, ObjectRequestMessage(f"z-{tag}"))
    if isinstance(reply.body, Error):
        return f"error: {reply.body.reason}"
    assert isinstance(reply.body, Response) and isinstance(reply.body.value, Tensor)
    got = list(struct.unpack("<3f", reply.body.value.data))
    return f"{values} * 2 + 1 = {got}"


async def _failures(url: str, domain_id: Any) -> dict[str, bool]:
    out: dict[str, bool] = {}
    outsider = Identity.generate()
    link = await dial(url, outsider)
    try:
        forged = sign_struct(PeerRecord(outsider.node_id, seq=1), Identity.generate())  # signed by another key
        reply = await _call(link, outsider, forged)
        out["forged_record_refused"] = isinstance(reply.body, Error)
        await link.ping()
        reply = await _call(link, outsider, ObjectMessage("x", b"data"))
        out["unauthorised_push_refused"] = isinstance(reply.body, Error) and reply.body.code == ErrorCode.UNAUTHORIZED
        out["unauthorised_ping_answered"] = link.stats.rtt_samples > 0
    finally:
        await link.close()
    try:
        await dial(url, outsider, expected_peer=Identity.generate().node_id)
        out["impostor_refused"] = False
    except HandshakeError:
        out["impostor_refused"] = True
    return out


async def run_demo(agents: int = 3, json_out: bool = False) -> int:
    idents = [Identity.generate() for _ in range(agents)]
    with tempfile.TemporaryDirectory(prefix="edgeagent-demo-") as tmp:
        domain = Node(
            Identity.generate(),
            Path(tmp) / "domain",
            NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], allow={i.node_id for i in idents}),
        )
        await domain.start()
        try:
            url = domain.listen_urls[0]
            if not json_out:
                print(f"domain {domain.identity.node_id} listening on {url}")
            barrier = asyncio.Barrier(agents)
            codecs: list[Codec] = ["cbor", "protobuf"]
            results = await asyncio.wait_for(
                asyncio.gather(*(_agent(url, ident, codecs[i % 2], barrier) for i, ident in enumerate(idents))),
                TIMEOUT * 3,
            )
            failures = await asyncio.wait_for(_failures(url, domain.identity.node_id), TIMEOUT)
            status = domain.status()
        finally:
            await domain.stop()
    ok = (
        all(r["peers_seen"] == agents - 1 for r in results)
        and all(failures.values())
        and all(r["worker"].endswith("[3.0, 5.0, 7.0]") for r in results)
    )
    summary = {
        "domain": str(domain.identity.node_id),
        "agents": results,
        "checks": failures,
        "domain_links_at_end": len(status["links"]),
        "ok": ok,
    }
    if json_out:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{'agent':<12} {'codec':<9} {'cipher':<10} {'peers':>5} {'rtt ms':>8} {'sent B':>8} {'recv B':>8}")
        for r in results:
            print(
                f"{r['node_id'][-10:]:<12} {r['codec']:<9} {r['cipher']:<10} {r['peers_seen']:>5} "
                f"{r['rtt_ms_median']:>8.3f} {r['bytes_sent']:>8} {r['bytes_received']:>8}"
            )
        print(f"worker round on the domain: {results[0]['worker']}")
        for name, passed in failures.items():
            print(f"{name.replace('_', ' ')}: {'yes' if passed else 'NO'}")
        print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1
