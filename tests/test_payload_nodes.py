"""Payload trees between real processes on loopback: a domain sends a file to its agents.

Every node is an ``edgeagent`` process started through a :class:`ProcGroup`
(killed by PID when the test ends) and listening on 127.0.0.1 only. The
domain is the source (``edgeagent send --state DOMAIN``); what each agent
holds is read back through its control socket (``status --json``) and its
finished file is hashed.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from edgeagent.control import control_request
from edgeagent.payload.service import FAULT_FLIP_ENV
from tests.procs import Proc, ProcGroup, cli, free_port, wait_for

pytestmark = pytest.mark.slow

MiB = 1 << 20
CHUNK = 256 * 1024  # PayloadService.send's default chunk size
STORE_WINDOW = 16 * CHUNK  # have-map flushed every 16 new chunks (payload/store.py DEFAULT_WINDOW)


def _status(state: str) -> dict[str, Any]:
    """``status --json`` straight from the node's control socket (a CLI process per poll costs ~0.4 s CPU)."""
    reply = asyncio.run(control_request(Path(state), "status", timeout=10.0))
    return dict(reply["status"])


def _payload(st: dict[str, Any], pid: str | None = None) -> dict[str, Any] | None:
    items = [p for p in st["payloads"] if pid is None or p["id"] == pid]
    return items[0] if items else None


def _start(g: ProcGroup, name: str, argv: list[str], state: Path, env: dict[str, str] | None = None) -> Proc:
    """Spawn ``edgeagent ARGV --state STATE`` (not waiting for it)."""
    proc = g.spawn(name, [sys.executable, "-m", "edgeagent.cli", *argv, "--state", str(state)], env=env)
    proc.info["state"] = str(state)
    return proc


def _started(proc: Proc, timeout: float = 30.0) -> Proc:
    state = proc.info["state"]
    proc.info = proc.read_json_line(timeout)
    assert proc.info.get("event") == "started", proc.info
    proc.info["state"] = state
    return proc


def _domain(g: ProcGroup, tmp: Path) -> Proc:
    url = f"ws://127.0.0.1:{free_port()}"
    return _started(_start(g, "domain", ["domain", "--listen", url, "--open"], tmp / "domain"))


def _agent_argv(domain: Proc, port: int, config: Path | None, *extra: str) -> list[str]:
    argv = ["run", "--listen", f"ws://127.0.0.1:{port}", "--domain", domain.url, "--open", "--network", "wifi"]
    argv += list(extra) or ["--unmetered"]
    if config is not None:
        argv += ["--config", str(config)]
    return argv


def _agents(
    g: ProcGroup,
    tmp: Path,
    domain: Proc,
    n: int,
    config: Path | None = None,
    extra: dict[int, list[str]] | None = None,
    env: dict[int, dict[str, str]] | None = None,
) -> list[Proc]:
    """Start ``n`` agents in parallel (each on its own port), wait until the domain has linked all of them."""
    procs = []
    for i in range(n):
        port = free_port()
        argv = _agent_argv(domain, port, config, *(extra or {}).get(i, []))
        p = _start(g, f"a{i}", argv, tmp / f"a{i}", env=(env or {}).get(i))
        p.info["argv"] = argv
        procs.append(p)
    for p in procs:
        argv = p.info["argv"]
        _started(p)
        p.info["argv"] = argv
    ids = {p.node_id for p in procs}

    def linked() -> bool:
        st = _status(domain.info["state"])
        return ids <= {ln["peer"] for ln in st["links"] if ln["authorised"]}

    wait_for(linked, 30, 0.2, "the domain to link every agent")
    return procs


def _probed(domain: Proc, agents: list[Proc], timeout: float = 30.0) -> None:
    """Wait until the domain has run its one-off throughput probe of every agent's link.

    A node probes each new link once (a padded Ping of ``[routing] probe_bytes``, 256 KiB, one link per
    route tick of 1 s), then every ``probe_interval`` (300 s). Those probes are not payload traffic but
    do count in ``source_wire_bytes``: 8 of them are 3 % of 64 MiB, so the egress bound is measured after.
    """
    ids = {a.node_id for a in agents}

    def done() -> bool:
        rt = asyncio.run(control_request(Path(domain.info["state"]), "routes", timeout=10.0))["routes"]
        measured = {h["to"] for h in rt["hops"] if h["link"] and h["bandwidth_bps"] is not None}
        return ids <= measured

    wait_for(done, timeout, 0.25, "the domain to probe every agent's link")


def _send_argv(domain: Proc, path: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "edgeagent.cli", "send", str(path), "--state", domain.info["state"],
        "--wait", "--json", "--timeout", "60", *extra,
    ]  # fmt: skip


def _send_result(proc: Proc, timeout: float) -> tuple[int, dict[str, Any]]:
    """Wait (bounded) for a background ``send --json`` and parse the object it printed."""
    rc = proc.popen.wait(timeout)
    assert proc.popen.stdout is not None
    out = proc.popen.stdout.read().decode()
    assert out.strip(), f"send printed nothing (exit {rc}); log:\n{proc.log_text()}"
    return rc, dict(json.loads(out))


def _random_file(path: Path, size: int) -> str:
    data = os.urandom(size)
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(4 * MiB):
            h.update(block)
    return h.hexdigest()


def _assert_holds(agent: Proc, pid: str, size: int, digest: str, timeout: float = 20.0) -> dict[str, Any]:
    """The agent reports the payload complete, and the file at its ``path`` is byte-identical."""

    def complete() -> dict[str, Any] | None:
        p = _payload(_status(agent.info["state"]), pid)
        return p if p is not None and p["complete"] else None

    p = wait_for(complete, timeout, 0.2, f"{agent.name} to complete the payload")
    assert p["size"] == size and p["have_bytes"] == size, p
    assert p["path"] and Path(p["path"]).stat().st_size == size, p
    assert _sha256(p["path"]) == digest, f"{agent.name}: {p['path']} differs from the sent file"
    return p


def _upload_cap(tmp: Path, mbit: float) -> Path:
    path = tmp / "capped.toml"
    path.write_text(f"[payload]\nupload_mbit = {mbit}\n")
    return path


def _when_have(agent: Proc, at_least: int, timeout: float) -> dict[str, Any]:
    """Poll ``agent``'s payload until it holds ``at_least`` bytes (not yet complete); its payload entry."""

    def reached() -> dict[str, Any] | None:
        p = _payload(_status(agent.info["state"]))
        return p if p is not None and p["have_bytes"] >= at_least else None

    p = wait_for(reached, timeout, 0.1, f"{agent.name} to hold {at_least} bytes")
    assert not p["complete"], f"{agent.name} completed before the fault could be injected: {p}"
    return p


# ------------------------------------------------------------------------------------------


def test_64mib_reaches_eight_agents_source_sends_once(tmp_path: Path) -> None:
    size = 64 * MiB
    src = tmp_path / "model.bin"
    digest = _random_file(src, size)
    with ProcGroup(tmp_path) as g:
        domain = _domain(g, tmp_path)
        agents = _agents(g, tmp_path, domain, 8)
        _probed(domain, agents)
        t0 = time.monotonic()
        run = cli(*_send_argv(domain, src)[3:], timeout=90)
        elapsed = time.monotonic() - t0
        assert run.returncode == 0, run.stderr + domain.log_text()
        res = json.loads(run.stdout)

        assert res["size"] == size
        assert res["receivers"] == res["completed"] == 8, res
        assert res["failed"] == [] and res["repairs"] == 0, res
        assert res["source_bytes_sent"] == size, res  # every chunk left the source once
        assert size <= res["source_wire_bytes"] <= 1.02 * size, res  # all the domain's links sent meanwhile
        assert set(res["per_node"]) == {a.node_id for a in agents}

        relayed = 0
        for a in agents:
            run = cli("status", "--state", a.info["state"], "--json", timeout=20)
            assert run.returncode == 0, run.stderr
            p = next(p for p in json.loads(run.stdout)["payloads"] if p["id"] == res["payload_id"])
            assert p["complete"] and p["size"] == size, p
            assert _sha256(p["path"]) == digest, f"{a.name}: {p['path']} differs"
            relayed += p["bytes_sent"]
        # the relays carried the other 7 copies (each agent's own counter, read after the send), and
        # no more: a receiver asks a helper (Assist) only for chunks its parent is not already sending
        assert 7 * size <= relayed <= 7.02 * size, relayed
        # the result's per_node figures are each relay's last Progress (sent every 0.5 s and on completion),
        # so a relay still forwarding when the last receiver completed is reported a little short
        uploaded = sum(n["bytes_uploaded"] for n in res["per_node"].values())
        assert 6.5 * size <= uploaded <= relayed, res["per_node"]
        print(
            f"64 MiB to 8 agents: send {elapsed:.1f} s, result {res['seconds']} s, {res['stripes']} stripe(s), "
            f"relays uploaded {uploaded / size:.3f}x, source wire {res['source_wire_bytes'] / size:.4f}x"
        )


def test_interior_relay_killed_at_half_survivors_complete(tmp_path: Path) -> None:
    size = 32 * MiB
    src = tmp_path / "model.bin"
    digest = _random_file(src, size)
    cap = _upload_cap(tmp_path, 40)  # 5 MB/s per agent: each uploads ~7/8 of the payload, ~6 s in all
    with ProcGroup(tmp_path) as g:
        domain = _domain(g, tmp_path)
        agents = _agents(g, tmp_path, domain, 8, cap)
        send = g.spawn("send", _send_argv(domain, src))

        def interior() -> Proc | None:
            for a in agents:
                p = _payload(_status(a.info["state"]))
                if p is not None and p.get("children"):
                    return a
            return None

        victim = wait_for(interior, 20, 0.1, "an agent with children in the payload forest")
        at_kill = _when_have(victim, size // 2, 30)
        victim.kill()  # SIGKILL
        rc, res = _send_result(send, 60)

        survivors = [a for a in agents if a is not victim]
        assert rc == 1, res  # one receiver (the dead one) did not complete
        assert "1 receiver(s) did not complete" in send.log_text()
        assert res["receivers"] == 8 and res["completed"] == 7, res
        assert res["failed"] == [victim.node_id], res
        assert res["repairs"] >= 1, res
        assert res["per_node"][victim.node_id]["dead"] is True
        for a in survivors:
            _assert_holds(a, res["payload_id"], size, digest)
        print(f"relay killed at {at_kill['have_bytes'] / size:.0%}: {res['seconds']} s, {res['repairs']} repair(s)")


def test_leaf_restarted_mid_transfer_resumes(tmp_path: Path) -> None:
    size = 24 * MiB
    src = tmp_path / "model.bin"
    digest = _random_file(src, size)
    cap = _upload_cap(tmp_path, 40)
    with ProcGroup(tmp_path) as g:
        domain = _domain(g, tmp_path)
        agents = _agents(g, tmp_path, domain, 5, cap)
        # one tree: a relay with two children uploads 2 x 24 MiB at 5 MB/s, so the transfer takes ~10 s and
        # the others are still ~5 s from done when the leaf is killed (it is back within ~1 s); were they
        # done first, the send would end with the leaf in "failed"
        send = g.spawn("send", _send_argv(domain, src, "--stripes", "1"))

        def leaf() -> Proc | None:
            for a in agents:
                p = _payload(_status(a.info["state"]))
                if p is not None and "children" in p and not p["children"] and p["parents"]:
                    return a
            return None

        victim = wait_for(leaf, 20, 0.1, "a leaf agent in the payload tree")
        # just past 50 %, inside a store window: the have-map on disk then lags what it holds by a few chunks
        before = _when_have(victim, size // 2 + 4 * CHUNK, 30)["have_bytes"]
        victim.kill()  # SIGKILL: no chance to flush its have-map
        t_kill = time.monotonic()
        back = _started(_start(g, victim.name, victim.info["argv"], Path(victim.info["state"])))
        t_back = time.monotonic() - t_kill
        assert back.node_id == victim.node_id and back.url == victim.url
        rc, res = _send_result(send, 60)

        assert rc == 0, res
        assert res["receivers"] == res["completed"] == 5 and res["failed"] == [], res
        p = _assert_holds(back, res["payload_id"], size, digest)
        for a in agents:
            if a is not victim:
                _assert_holds(a, res["payload_id"], size, digest)
        # After the restart it was sent only what it lacked. What it lacked is at most what it did not hold
        # when we looked (it only gained chunks before the SIGKILL) plus what its on-disk have-map had not
        # recorded yet: fewer than one store window (the map is flushed every 16 new chunks). The allowance:
        # on_chunk checks has() before the threaded put(), so a chunk arriving over two links at once (old and
        # new parent while the forest is re-planned around the returning node) is counted twice; a few chunks.
        allowance = 4 * CHUNK
        assert p["bytes_received"] <= size - before + STORE_WINDOW + allowance, (p, before)
        assert p["bytes_received"] < size, p  # it did resume: it did not start from zero
        print(
            f"leaf restarted at {before / size:.0%} (down {t_back:.1f} s, send {res['seconds']} s):"
            f" received {p['bytes_received']} bytes after restart"
        )


def test_relay_flipping_bits_is_caught_and_routed_around(tmp_path: Path) -> None:
    size = 16 * MiB
    src = tmp_path / "model.bin"
    digest = _random_file(src, size)
    with ProcGroup(tmp_path) as g:
        domain = _domain(g, tmp_path)
        # a0 is the only agent allowed to forward (the others are metered, so leaves): with 3 members the
        # planner makes one tree in which a0 is the source's only child and the parent of a1 and a2.
        agents = _agents(
            g, tmp_path, domain, 3, extra={1: ["--metered"], 2: ["--metered"]}, env={0: {FAULT_FLIP_ENV: "1"}}
        )
        flipper, leaves = agents[0], agents[1:]
        assert "corrupts every chunk" in flipper.log_text()
        run = cli(*_send_argv(domain, src)[3:], timeout=90)
        assert run.returncode == 0, run.stderr + domain.log_text()
        res = json.loads(run.stdout)

        assert res["receivers"] == res["completed"] == 3 and res["failed"] == [], res
        assert res["repairs"] >= 1, res  # the domain re-planned around the corrupting relay
        assert res["per_node"][flipper.node_id]["relay_ok"] is False, res["per_node"]
        for a in agents:
            _assert_holds(a, res["payload_id"], size, digest)
        caught = 0
        for a in leaves:
            p = _payload(_status(a.info["state"]), res["payload_id"])
            assert p is not None and flipper.node_id not in p["parents"], p  # moved off the corrupting relay
            if p["bad_chunks"]:  # every corrupt chunk that reached a leaf was caught
                caught += 1
                assert f"from {flipper.node_id} fails verification" in a.log_text()
        # at least one leaf caught it (the first report can re-plan the other leaf before the relay reaches it)
        assert caught >= 1
        f = _payload(_status(flipper.info["state"]), res["payload_id"])
        assert f is not None and f["bad_chunks"] == 0 and f["bytes_sent"] > 0, f  # it did forward (corrupt) chunks
        assert f["children"] == [], f  # and forwards no more
        print(f"bit-flipping relay: {res['seconds']} s, {res['repairs']} repair(s)")
