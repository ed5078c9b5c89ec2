"""The layering rules of the package, checked on its source: services see a Host, never the Node."""

from __future__ import annotations

import ast
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgeagent.dispatch import Dispatch
from edgeagent.exceptions import ConfigError
from edgeagent.host import Policy, Sender, Service, on
from edgeagent.wire import Ping
from tests.conftest import peer_table

from .procs import free_port

PKG = Path(__file__).resolve().parent.parent / "edgeagent"
#: the entry points, and the package facade (it names ``Node`` lazily, PEP 562, for ``from edgeagent import Node``)
MAY_IMPORT_NODE = {"cli.py", "demo.py", "client.py", "node.py", "__init__.py"}
MAX_LINES = 800
NODE_MAX_LINES = 500


def _modules() -> list[Path]:
    return [p for p in PKG.rglob("*.py") if "v1" not in p.relative_to(PKG).parts]


def _imports_node(path: Path) -> list[int]:
    """Lines of ``path`` that import ``edgeagent.node`` (absolute or relative, TYPE_CHECKING blocks included)."""
    tree = ast.parse(path.read_text(), str(path))
    depth = len(path.relative_to(PKG).parts) - 1  # package depth below edgeagent/
    hits = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            names = {a.name for a in node.names}
            if (node.level == 0 and (mod == "edgeagent.node" or (mod == "edgeagent" and "node" in names))) or (
                node.level == depth + 1 and (mod == "node" or (mod == "" and "node" in names))
            ):
                hits.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name == "edgeagent.node" for a in node.names):
            hits.append(node.lineno)
    return hits


def test_no_module_but_the_entry_points_imports_the_node() -> None:
    offenders = {
        str(p.relative_to(PKG)): lines
        for p in _modules()
        if p.relative_to(PKG).as_posix() not in MAY_IMPORT_NODE and (lines := _imports_node(p))
    }
    assert offenders == {}, f"these import edgeagent.node (services must use edgeagent.host): {offenders}"


def test_the_import_check_sees_relative_and_type_checking_imports(tmp_path: Path) -> None:
    """The checker itself: it must catch the forms a service would use."""
    probe = PKG / "payload" / "_probe_for_test.py"
    probe.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..node import Node\n")
    try:
        assert _imports_node(probe) == [3]
    finally:
        probe.unlink()
    probe = PKG / "_probe_for_test.py"
    probe.write_text("from . import node\nfrom .nodeconfig import NodeConfig\n")
    try:
        assert _imports_node(probe) == [1]
    finally:
        probe.unlink()


def test_no_module_is_over_800_lines_and_the_node_is_a_small_driver() -> None:
    sizes = {str(p.relative_to(PKG)): len(p.read_text().splitlines()) for p in _modules()}
    assert {m: n for m, n in sizes.items() if n > MAX_LINES} == {}
    assert sizes["node.py"] <= NODE_MAX_LINES


class _Echo(Service):
    name = "echo"

    async def _on(self, m: object) -> None:
        return None

    def handlers(self) -> dict[type, object]:  # type: ignore[override]
        return {Ping: on(Policy(Sender.ANYONE), self._on)}


def test_a_message_type_served_twice_is_an_error_at_start() -> None:
    d = Dispatch(peer_table())
    d.add(_Echo())
    with pytest.raises(ConfigError, match="Ping is served twice"):
        d.add(_Echo())


def test_a_member_policy_needs_its_predicate() -> None:
    with pytest.raises(ValueError, match="admits"):
        Policy(Sender.MEMBER)
    with pytest.raises(ValueError, match="admits"):
        Policy(Sender.AUTHORISED, admits=lambda peer, body: True)


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


@pytest.mark.slow
def test_a_relay_only_agent_maps_neither_numpy_nor_aiortc(tmp_path: Path) -> None:
    """``edgeagent run --listen ... --mdns off`` without ``--data``: no FL service, no WebRTC stack loaded."""
    if not Path("/proc/self/maps").exists():
        pytest.skip("this machine has no /proc/PID/maps")
    import importlib.util

    missing = [m for m in ("numpy", "aiortc") if importlib.util.find_spec(m) is None]
    assert not missing, f"the test needs {missing} installed, to show they are not loaded"
    port = free_port()
    cmd = [sys.executable, "-m", "edgeagent.cli", "run", "--listen", f"ws://127.0.0.1:{port}", "--mdns", "off"]
    cmd += ["--state", str(tmp_path / "state")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # {"event": "started", ...} once it listens
        assert '"started"' in line, (line, proc.stderr.read() if proc.poll() is not None else "")
        time.sleep(0.5)  # anything imported lazily at start has been by now
        maps = _maps(proc.pid)
        for lib in ("numpy", "aiortc", "/av/", "libavcodec"):
            assert lib not in maps, f"{lib} is mapped in a relay-only agent"
        assert "python" in maps  # the check reads the right process
        status = subprocess.run(
            [sys.executable, "-m", "edgeagent.cli", "status", "--state", str(tmp_path / "state"), "--json"],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert status.returncode == 0, status.stderr
        doc = json.loads(status.stdout)
        assert doc["fl"] == {"role": "device", "jobs": []}  # the stand-in that needs no numpy
        assert "numpy" not in _maps(proc.pid)  # answering status loaded nothing more
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


async def test_the_mounted_services_each_serve_their_own_types(tmp_path: Path) -> None:
    """A device node mounts its services once each; every message type has exactly one handler."""
    from edgeagent.identity import Identity
    from edgeagent.node import Node, NodeConfig

    node = Node(Identity.generate(), tmp_path, NodeConfig())
    names = [s.name for s in node.services]
    assert len(names) == len(set(names)), names
    assert {"registry", "network", "routes", "streams", "worker", "webrtc", "payloads", "pubsub", "fl"} <= set(names)
    assert type(next(s for s in node.services if s.name == "fl")).__name__ == "NoTraining"
    await node.stop()
