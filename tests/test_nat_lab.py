"""The NAT lab (tests/natlab.py) keeps its promises, and today's agents behind NAT routers get a send back.

Two parts. First the lab itself: a device dials the domain's public address; the domain cannot dial
a device's private address (not even with a route to it via the home's router: the router's FORWARD
chain drops new connections from its public side); a device in home 1 cannot reach one in home 2;
two devices of one home reach each other; a plain home keeps one mapping for all destinations, a
carrier-NAT home one per destination; a killed router cuts its home off and a restored one brings it
back. Then today's agents: a domain on the public network and six devices, each behind its own
router (``edgeagent run --domain ws://PUBLIC:7400 --listen ws://0.0.0.0:7400 --mdns off``), and one
4 MiB ``edgeagent send --wait --timeout 60 --json``. Asserted is only what holds today and must never
regress: the send returns (no traceback, exit 0 or 1, a JSON result) and every process ends (none
left in any lab namespace). What completed, the re-plans and each incomplete device's reasons are
printed (``-s`` shows them), not asserted: how many receivers a tree reaches through NATs is what
the NAT issue changes.

Everything runs inside namespaces this test creates; they are deleted, and every process killed by
PID, even when the test fails. Skipped, saying why, where namespaces or iptables are unavailable.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeagent.control import control_request
from edgeagent.identity import Identity

from .natlab import (
    DOMAIN_ADDRESS,
    NatLab,
    agent_argv,
    assign_failures,
    completed,
    domain_argv,
    natlab_or_skip,
    netns_pids,
    reasons,
    replans,
    tracebacks,
)
from .procs import Proc, ProcGroup

pytestmark = pytest.mark.slow

MiB = 1 << 20
SEND_TIMEOUT = 60


def test_lab_reaches_out_not_in_and_not_across_homes() -> None:
    with natlab_or_skip([2, 1], carrier=[2]) as lab:
        h1, h2 = lab.homes
        a, b = h1.devices
        c = h2.devices[0]
        assert lab.probe(a.ns, lab.domain, DOMAIN_ADDRESS) is None, "a device dials the domain"
        assert lab.seen_as(a.ns)[0][0] == h1.public_address, "the domain sees the home's public address"
        refused = lab.probe(lab.domain, a.ns, a.address, timeout=1.0)
        assert refused is not None and "ENETUNREACH" in refused, refused
        with lab.route(lab.domain, f"{h1.lan}.0/24", h1.public_address):
            assert lab.probe(lab.domain, a.ns, a.address, timeout=1.0) == "timed out", "FORWARD drops new inbound"
        assert lab.probe(lab.domain, a.ns, h1.public_address, timeout=1.0) is not None, "no port forwarding"
        assert lab.probe(a.ns, c.ns, c.address, timeout=1.0) is not None, "no route between homes"
        assert lab.probe(c.ns, a.ns, a.address, timeout=1.0) is not None, "no route between homes"
        assert lab.probe(a.ns, b.ns, b.address) is None, "devices of one home reach each other"
        plain, carrier = lab.seen_as(a.ns), lab.seen_as(c.ns)
        assert len({port for _, port in plain}) == 1, plain
        assert len({port for _, port in carrier}) == 2, carrier
        lab.kill_router(1)
        assert lab.probe(a.ns, lab.domain, DOMAIN_ADDRESS, timeout=1.0) is not None, "home 1 is cut off"
        assert lab.probe(c.ns, lab.domain, DOMAIN_ADDRESS) is None, "home 2 is not"
        lab.restore_router(1)
        assert lab.probe(a.ns, lab.domain, DOMAIN_ADDRESS) is None, "home 1 is back"
        assert lab.self_check()["ok"]
        names = [ns.name for ns in lab.made]
    assert not lab.leftovers(), lab.leftovers()
    assert all(n.startswith(lab.prefix + "-") for n in names), names


def _peers_listed(state: Path) -> set[str]:
    reply = asyncio.run(control_request(state, "peers", timeout=5.0))
    return {p["node_id"] for p in reply["peers"] if p.get("role") != "domain"}


def test_today_agents_behind_nat_routers_get_a_send_back(tmp_path: Path) -> None:
    homes = 6
    with natlab_or_skip([1] * homes) as lab:
        states = {d.name: tmp_path / d.name for d in lab.devices}
        ids = {name: str(Identity.load_or_create(state)[0].node_id) for name, state in states.items()}
        names = {nid: name for name, nid in ids.items()}
        dstate = tmp_path / "domain"
        payload = tmp_path / "payload.bin"
        payload.write_bytes(os.urandom(4 * MiB))
        procs: list[Proc] = []
        with ProcGroup(tmp_path) as group:
            domain = group.spawn("domain", lab.domain.argv(domain_argv(str(dstate), ids.values())))
            procs.append(domain)
            domain.info = domain.read_json_line(30)
            assert domain.info.get("event") == "started", domain.info
            names[domain.node_id] = "domain"
            devices = {d.name: group.spawn(d.name, d.argv(agent_argv(str(states[d.name])))) for d in lab.devices}
            procs += devices.values()
            for proc in devices.values():
                proc.info = proc.read_json_line(40)
                assert proc.info.get("event") == "started", proc.info
            listed: set[str] = set()
            deadline = time.monotonic() + 30
            for _ in range(150):  # bounded in count and time
                listed = _peers_listed(dstate)
                if set(ids.values()) <= listed or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert set(ids.values()) <= listed, f"registered: {sorted(names.get(n, n) for n in listed)}"

            argv = [sys.executable, "-m", "edgeagent.cli", "send", str(payload), "--state", str(dstate)]
            argv += ["--wait", "--timeout", str(SEND_TIMEOUT), "--json"]
            t0 = time.monotonic()
            sent = subprocess.run(
                argv, capture_output=True, text=True, timeout=SEND_TIMEOUT + 30, stdin=subprocess.DEVNULL
            )
            took = time.monotonic() - t0
            assert tracebacks(sent.stderr) == 0, sent.stderr
            assert sent.returncode in (0, 1), (sent.returncode, sent.stderr[-2000:])
            res = json.loads(sent.stdout)
            assert res["receivers"] == homes, res

            pid12 = res["payload_id"][:12]
            dlog = domain.log.read_text(errors="replace")
            done = {n: completed(p.log.read_text(errors="replace"), pid12) for n, p in devices.items()}
            print(f"\nNAT lab, {homes} homes x 1 device, 4 MiB: send exit {sent.returncode} after {took:.1f} s")
            egress = res["source_wire_bytes"] / res["size"]
            print(f"  completed {res['completed']}/{res['receivers']} (logs: {sum(done.values())}), ", end="")
            print(f"repairs {res['repairs']}, source egress/S {egress:.2f}")
            plans = replans(dlog, pid12)
            print(f"  re-plans: {len(plans)}")
            for r in plans:
                why = r["why"]
                for nid, name in names.items():
                    why = why.replace(nid, name)
                print(f"    around {names.get(r['around'], r['around'])}: {why}")
            for f in assign_failures(dlog, pid12):
                print(f"  cannot assign {names.get(f['node'], f['node'])}: {f['error']}")
            for n, p in devices.items():
                if not done[n]:
                    why = reasons(p.log.read_text(errors="replace"), pid12)
                    last = why[-1] if why else "no reason logged"
                    for nid, name in names.items():
                        last = last.replace(nid, name)
                    print(f"  {n} incomplete: {last} ({len(why)} such lines)")
            for p in procs:
                print(f"  {p.name}: {tracebacks(p.log.read_text(errors='replace'))} traceback(s) in its log")

            codes = {p.name: p.stop(timeout=10) for p in procs}
            print(f"  exit codes after SIGTERM: {codes}")
        assert all(p.popen.poll() is not None for p in procs)
        left = {ns.name: netns_pids(ns) for ns in lab.made if netns_pids(ns)}
        assert not left, f"processes left in lab namespaces: {left}"
    assert not lab.leftovers(), lab.leftovers()


def test_natlab_refuses_bad_layouts() -> None:
    with pytest.raises(ValueError, match="devices per home"):
        NatLab([7])
    with pytest.raises(ValueError, match="carrier homes"):
        NatLab([1, 1], carrier=[3])
