"""A federated job across processes: a domain and 8 agents train logistic regression on the digits data.

The model goes down the payload tree and the updates come up it; after the
rounds the federated model is within 2 accuracy points of the same model
trained centrally on the union of the agents' data.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from edgeagent.fl import LogReg, load_model
from tests.procs import ProcGroup, free_port, status, wait_for

pytestmark = pytest.mark.slow
AGENTS = 8
ROUNDS = 10
HYPER = {"lr": 0.5, "epochs": 5, "batch_size": 32}


def _split(tmp: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.data / 16).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    test, train = order[:360], order[360:]
    np.savez(tmp / "test.npz", x=x[test], y=y[test])
    for i, part in enumerate(np.array_split(train, AGENTS)):
        np.savez(tmp / f"data-{i}.npz", x=x[part], y=y[part])
    return x[train], y[train], x[test], y[test]


def test_federated_digits_matches_central_training(tmp_path: Path) -> None:
    xtr, ytr, xte, yte = _split(tmp_path)
    job = tmp_path / "job.toml"
    job.write_text(
        "[job]\n"
        'id = "digits"\nplan = "logreg"\nn_features = 64\nn_classes = 10\n'
        f"rounds = {ROUNDS}\nmin_participants = {AGENTS}\nround_deadline_s = 30\njoin_wait_s = 20\n"
        'test_data = "test.npz"\n'
        "[job.hyperparams]\n" + "".join(f"{k} = {v}\n" for k, v in HYPER.items())
    )
    with ProcGroup(tmp_path) as g:
        dport = free_port()
        dstate = tmp_path / "domain"
        dom = g.spawn(
            "domain",
            [sys.executable, "-m", "edgeagent.cli", "domain", "--state",
             str(dstate), "--listen", f"ws://127.0.0.1:{dport}", "--open", "--job", str(job)],
        )  # fmt: skip
        dom.info = dom.read_json_line(20)
        agents = [
            g.node(
                f"agent{i}", "--listen", f"ws://127.0.0.1:{free_port()}", "--domain", f"ws://127.0.0.1:{dport}",
                "--open", "--network", "wifi", "--unmetered", "--data", str(tmp_path / f"data-{i}.npz"),
            )
            for i in range(AGENTS)
        ]  # fmt: skip

        def finished() -> dict | None:  # type: ignore[type-arg]
            fl = status(dstate)["fl"]
            return fl if fl["done"] else None

        fl = wait_for(finished, 150, 1.0, "the job to finish")
        assert fl["job"] == "digits" and fl["round"] == ROUNDS
        hist = json.loads((dstate / "fl" / "digits" / "state.json").read_text())["history"]
        assert [h["round"] for h in hist] == list(range(ROUNDS))
        assert all(h["participants"] == AGENTS and h["dropped"] == 0 for h in hist), hist
        fed = load_model((dstate / "fl" / "digits" / f"round-{ROUNDS - 1}.npz").read_bytes())
        plan = LogReg()
        fed_acc = plan.evaluate(fed, xte, yte)["accuracy"]
        assert abs(fed_acc - fl["accuracy"]) < 1e-6  # what status reports is the checkpoint's accuracy
        central = plan.init({}, 64, 10, 0)
        central, _ = plan.train(central, xtr, ytr, {**HYPER, "epochs": HYPER["epochs"] * ROUNDS}, time.monotonic() + 60)
        central_acc = plan.evaluate(central, xte, yte)["accuracy"]
        assert fed_acc >= central_acc - 0.02, (fed_acc, central_acc)
        # every agent saw the job and the final result
        for a in agents[:2]:
            jobs = status(a.info["state"])["fl"]["jobs"]
            assert jobs and jobs[0]["job"] == "digits" and jobs[0]["done"]
