"""Federated-learning rounds: bytes the domain sends and receives per round, tree vs star, in one run.

A domain and N agents (in-process nodes over loopback websockets) run the
same job twice: with the model going down the payload tree and updates summed
up its first tree, and as a star (the model to every agent from the domain,
every update straight back, as federated-learning frameworks do today). Per
round: the domain's egress and ingress (every byte its links carried, framing
and encryption included) as multiples of the model's size, and the round time.
Target: tree egress and ingress <= 1.05x the model size per round (a star: N x).

    .venv/bin/python bench/fl.py [--agents 8] [--hidden 4096] [--rounds 3] [--json]

The model is the built-in MLP on the digits-sized problem (64 features, 10
classes) with ``--hidden`` units, so its size is (64 + 10) * hidden * 4 bytes
plus biases; the agents' data is random (the bench measures bytes, not accuracy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgeagent._malloc import tune_malloc
from edgeagent.fl import JobSpec
from edgeagent.identity import Identity
from edgeagent.node import Node, NodeConfig
from edgeagent.wire import Eligibility


async def run_job(tmp: Path, agents: int, hidden: int, rounds: int, star: bool) -> list[dict[str, Any]]:
    spec = JobSpec(
        id="bench-star" if star else "bench-tree",
        plan="mlp",
        n_features=64,
        n_classes=10,
        rounds=rounds,
        min_participants=agents,
        round_deadline_s=120.0,
        join_wait_s=30.0,
        hyperparams={"hidden": hidden, "lr": 0.05, "epochs": 1, "batch_size": 64},
        eligibility=Eligibility(),
    )
    common: dict[str, Any] = {"allow": None, "link_probe_interval": 0}
    root = tmp / spec.id
    dom = Node(Identity.generate(), root / "domain", NodeConfig(role="domain", listen=["ws://127.0.0.1:0"], **common))
    from edgeagent.fl import FlDomain

    dom.fl_domain = FlDomain(dom, spec, star=star)
    await dom.start()
    nodes = []
    rng = np.random.default_rng(0)
    try:
        for i in range(agents):
            data = root / f"data-{i}.npz"
            data.parent.mkdir(parents=True, exist_ok=True)
            np.savez(data, x=rng.random((64, 64), dtype=np.float32), y=rng.integers(0, 10, 64))
            n = Node(
                Identity.generate(),
                root / f"agent-{i}",
                NodeConfig(listen=["ws://127.0.0.1:0"], domain=dom.listen_urls[0], fl_data=data, **common),
            )
            await n.start()
            nodes.append(n)
        await asyncio.wait_for(dom.fl_domain.done.wait(), 600)
        return list(dom.fl_domain.history)
    finally:
        for n in nodes:
            await n.stop()
        await dom.stop()


def summarise(hist: list[dict[str, Any]]) -> dict[str, float]:
    size = hist[0]["model_bytes"]
    return {
        "model_bytes": size,
        "egress_x": statistics.median(h["domain_bytes_sent"] / size for h in hist),
        "ingress_x": statistics.median(h["domain_bytes_received"] / size for h in hist),
        "round_s": statistics.median(h["seconds"] for h in hist),
        "participants": min(h["participants"] for h in hist),
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"agents": args.agents, "hidden": args.hidden, "rounds": args.rounds}
    with tempfile.TemporaryDirectory(prefix="edgeagent-bench-fl-") as tmp:
        for mode in ("tree", "star"):
            t0 = time.monotonic()
            hist = await run_job(Path(tmp), args.agents, args.hidden, args.rounds, star=mode == "star")
            out[mode] = {**summarise(hist), "wall_s": round(time.monotonic() - t0, 1), "per_round": hist}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--agents", type=int, default=8)
    p.add_argument("--hidden", type=int, default=4096, help="MLP hidden units (model size ~ 296 B per unit)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    tune_malloc()
    os.environ.setdefault("PYTHONHASHSEED", "0")
    res = asyncio.run(main_async(args))
    if args.json:
        print(json.dumps(res))
        return 0
    mb = res["tree"]["model_bytes"] / 2**20
    print(f"federated rounds: domain + {args.agents} agents (in-process, loopback), MLP hidden {args.hidden}: "
          f"model {mb:.2f} MiB, {args.rounds} rounds each, medians per round")  # fmt: skip
    print(f"{'mode':<6}{'egress / model':>16}{'ingress / model':>17}{'round s':>9}{'participants':>14}")
    for mode in ("tree", "star"):
        r = res[mode]
        print(f"{mode:<6}{r['egress_x']:>16.3f}{r['ingress_x']:>17.3f}{r['round_s']:>9.2f}{r['participants']:>14}")
    t, s = res["tree"], res["star"]
    print(f"star / tree: egress {s['egress_x'] / t['egress_x']:.1f}x, ingress {s['ingress_x'] / t['ingress_x']:.1f}x; "
          f"target tree <= 1.05x: egress {'met' if t['egress_x'] <= 1.05 else 'MISSED'}, "
          f"ingress {'met' if t['ingress_x'] <= 1.05 else 'MISSED'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
