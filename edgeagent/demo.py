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

Then a payload tree: a second domain sends an 8 MiB file to agent Nodes (a
quarter of them on "cellular", metered) down a striped forest; the demo prints
each tree with every node's network kind and the bytes it uploaded, and checks
that the source sent one copy, cellular nodes uploaded nothing and every agent
holds a byte-identical file. Last, a short federated job: the same agents
train logistic regression on their own slices of a synthetic dataset, the
model going down the tree and the updates summed on the way up.
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


async def _tree_demo(tmp: Path, agents: int, size: int) -> dict[str, Any]:
    """A domain sends ``size`` random bytes to ``agents`` agent Nodes down a payload tree."""
    import hashlib
    import os

    from .links.base import LinkOptions as Opts

    common: dict[str, Any] = {"allow": None, "link_probe_interval": 0}
    domain = Node(
        Identity.generate(), tmp / "tree-domain", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **common)
    )
    await domain.start()
    nodes: list[Node] = []
    try:
        for i in range(agents):
            cellular = i % 4 == 3
            opts = Opts(network_kind="cellular" if cellular else "wifi", metered=cellular)
            n = Node(
                Identity.generate(),
                tmp / f"tree-agent-{i}",
                NodeConfig(listen=["ws://127.0.0.1:0"], domain=domain.listen_urls[0], link=opts, **common),
            )
            await n.start()
            nodes.append(n)
        async with asyncio.timeout(TIMEOUT):
            for n in nodes:
                await n.registered.wait()
        data = os.urandom(size)
        path = tmp / "model.bin"
        path.write_bytes(data)
        result = await asyncio.wait_for(domain.payloads.send(path), TIMEOUT * 6)
        want = hashlib.sha256(data).hexdigest()
        identical = 0
        for n in nodes:
            done = [p for p in n.payloads.status() if p["complete"] and p.get("path")]
            got = await asyncio.to_thread(Path(done[0]["path"]).read_bytes) if done else b""
            if done and hashlib.sha256(got).hexdigest() == want:
                identical += 1
        forest = domain.payloads.plans[bytes.fromhex(result.payload_id)].forest
        per = result.per_node
        lines = []
        for tree in forest.trees:
            lines.append(f"stripe {tree.stripe}: source {domain.identity.node_id.short()} (domain)")

            def walk(node: Any, depth: int, tree: Any = tree) -> None:
                for child in tree.children.get(node, ()):
                    info = per[str(child)]
                    lines.append(
                        f"{'  ' * depth}└─ {child.short()} {info['network_kind']:<8} "
                        f"(uploads {info['bytes_uploaded'] / 2**20:5.2f} MiB over all stripes)"
                    )
                    walk(child, depth + 1)

            walk(forest.source, 1)
        return {
            "size": size,
            "receivers": result.receivers,
            "completed": result.completed,
            "identical": identical,
            "stripes": result.stripes,
            "seconds": result.seconds,
            "source_bytes_sent": result.source_bytes_sent,
            "source_copies": round(result.source_bytes_sent / size, 3),
            "relayed_bytes": result.relayed_bytes,
            "cellular_uploaded_bytes": result.cellular_uploaded_bytes,
            "tree": lines,
        }
    finally:
        for n in nodes:
            await n.stop()
        await domain.stop()


async def _fl_demo(tmp: Path, agents: int) -> dict[str, Any]:
    """A short federated job: logistic regression on synthetic data split across agent Nodes."""
    try:
        import numpy as np

        from .fl import JobSpec
    except ImportError:
        return {"skipped": "numpy is not installed (pip install 'edgeagent[fl]')"}
    from .wire import Eligibility

    rng = np.random.default_rng(7)
    centres = rng.normal(0, 2.0, (4, 16))
    labels = rng.integers(0, 4, 1600)
    x = (centres[labels] + rng.normal(0, 3.0, (1600, 16))).astype(np.float32)
    np.savez(tmp / "fl-test.npz", x=x[:400], y=labels[:400])
    spec = JobSpec(
        id="demo-logreg", plan="logreg", n_features=16, n_classes=4, rounds=5, min_participants=agents,
        round_deadline_s=30.0, join_wait_s=10.0, test_data=tmp / "fl-test.npz",
        hyperparams={"lr": 0.2, "epochs": 2, "batch_size": 32}, eligibility=Eligibility(),
    )  # fmt: skip
    common: dict[str, Any] = {"allow": None, "link_probe_interval": 0}
    dom = Node(
        Identity.generate(),
        tmp / "fl-domain",
        NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], fl_job=spec, **common),
    )
    await dom.start()
    nodes = []
    try:
        for i, part in enumerate(np.array_split(np.arange(400, 1600), agents)):
            data = tmp / f"fl-data-{i}.npz"
            np.savez(data, x=x[part], y=labels[part])
            n = Node(
                Identity.generate(),
                tmp / f"fl-agent-{i}",
                NodeConfig(listen=["ws://127.0.0.1:0"], domain=dom.listen_urls[0], fl_data=data, **common),
            )
            await n.start()
            nodes.append(n)
        assert dom.fl_domain is not None
        await asyncio.wait_for(dom.fl_domain.done.wait(), TIMEOUT * 12)
        return {"history": dom.fl_domain.history}
    finally:
        for n in nodes:
            await n.stop()
        await dom.stop()


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
        if not json_out:
            print(f"payload tree: the domain sends 8 MiB to {max(agents, 4)} agents ...")
        tree = await _tree_demo(Path(tmp), max(agents, 4), 8 << 20)
        if not json_out:
            print(f"federated job: the domain trains logistic regression with {max(agents, 4)} agents ...")
        fl = await _fl_demo(Path(tmp), max(agents, 4))
    ok = (
        all(r["peers_seen"] == agents - 1 for r in results)
        and all(failures.values())
        and all(r["worker"].endswith("[3.0, 5.0, 7.0]") for r in results)
        and tree["identical"] == tree["receivers"]
        and tree["source_bytes_sent"] == tree["size"]
        and tree["cellular_uploaded_bytes"] == 0
        and ("skipped" in fl or (len(fl["history"]) == 5 and fl["history"][-1]["metrics"]["test_accuracy"] > 0.6))
    )
    summary = {
        "domain": str(domain.identity.node_id),
        "agents": results,
        "checks": failures,
        "domain_links_at_end": len(status["links"]),
        "payload_tree": tree,
        "federated": fl,
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
        print("\n".join(tree["tree"]))
        print(
            f"payload tree: {tree['identical']}/{tree['receivers']} agents hold the identical 8 MiB file after "
            f"{tree['seconds']} s; the source sent {tree['source_copies']} copies; relays uploaded "
            f"{tree['relayed_bytes'] / 2**20:.1f} MiB, cellular agents {tree['cellular_uploaded_bytes']} bytes"
        )
        if "skipped" in fl:
            print(f"federated job skipped: {fl['skipped']}")
        else:
            for h in fl["history"]:
                m = h["metrics"]
                print(
                    f"round {h['round']}: {h['participants']} updates summed up the tree, test accuracy "
                    f"{m['test_accuracy']:.3f}; the domain sent {h['domain_bytes_sent']} B and received "
                    f"{h['domain_bytes_received']} B for a {h['model_bytes']} B model"
                )
            print("(a tiny model, so control messages dominate; bench/fl.py measures a 1.2 MiB one)")
        print("demo ok" if ok else "demo FAILED")
    return 0 if ok else 1
