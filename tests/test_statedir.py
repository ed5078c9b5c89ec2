"""The state directory: 0700, ours, not writable by others, no symlinked files, one node at a time."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.control import control_request
from edgeagent.exceptions import ConfigError, IdentityError
from edgeagent.identity import KEY_FILE, Identity
from edgeagent.node import Node, NodeConfig
from edgeagent.statedir import prepare

ROOT = Path(__file__).resolve().parent.parent


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_a_new_state_directory_is_private(tmp_path: Path) -> None:
    d = prepare(tmp_path / "a" / "state")
    assert (d.stat().st_mode & 0o777) == 0o700


def test_a_writable_or_file_state_is_refused_with_what_to_run(tmp_path: Path) -> None:
    open_dir = tmp_path / "shared"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    with pytest.raises(ConfigError, match=r"writable by others \(mode 777\); run `chmod 700 .*shared`"):
        prepare(open_dir)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is not a directory"):
        prepare(afile)
    # the CLI says so in one line and exits 1, before it touches the key
    run = _cli("run", "--listen", "ws://127.0.0.1:1", "--state", str(open_dir))
    assert run.returncode == 1 and run.stderr.count("\n") == 1 and "chmod 700" in run.stderr, run.stderr
    assert not (open_dir / KEY_FILE).exists()
    run = _cli("keygen", "--state", str(afile))
    assert run.returncode == 1 and "is not a directory" in run.stderr and "Traceback" not in run.stderr


def test_a_symlinked_key_is_not_used(tmp_path: Path) -> None:
    d = prepare(tmp_path / "s")
    elsewhere = tmp_path / "planted.key"
    Identity.generate().save(elsewhere)
    (d / KEY_FILE).symlink_to(elsewhere)
    with pytest.raises(IdentityError, match="symbolic link"):
        Identity.load_or_create(d)
    (d / KEY_FILE).unlink()
    (d / KEY_FILE).symlink_to(tmp_path / "nothing-there.key")  # dangling: not followed to create a key there
    with pytest.raises(IdentityError, match="already exists"):
        Identity.load_or_create(d)
    assert not (tmp_path / "nothing-there.key").exists()


async def test_a_second_node_on_one_state_directory_is_refused_and_the_first_keeps_serving(tmp_path: Path) -> None:
    d = prepare(tmp_path / "state")
    ident = Identity.load_or_create(d)[0]
    victim = tmp_path / "victim.json"
    victim.write_text("keep")
    (d / "node.json").symlink_to(victim)  # a planted symlink is replaced, never written through
    first = Node(ident, d, NodeConfig(listen=["ws://127.0.0.1:0"]))
    await first.start()
    try:
        assert victim.read_text() == "keep" and not (d / "node.json").is_symlink()
        assert json.loads((d / "node.json").read_text())["pid"] == os.getpid()
        second = Node(ident, d, NodeConfig(listen=["ws://127.0.0.1:0"]))
        with pytest.raises(ConfigError, match=rf"another node \(pid {os.getpid()}\) is running with state {d}"):
            await second.start()
        await second.stop()  # stopping the refused one leaves the first's socket and lock alone
        reply = await control_request(d, "status")
        assert reply["status"]["node_id"] == str(ident.node_id)
        run = _cli("run", "--listen", "ws://127.0.0.1:1", "--state", str(d))
        assert run.returncode == 1 and "another node" in run.stderr, run.stderr
        assert (await control_request(d, "status"))["ok"]
    finally:
        await first.stop()
    again = Node(ident, d, NodeConfig(listen=["ws://127.0.0.1:0"]))  # the lock is free once it stopped
    await again.start()
    await again.stop()
