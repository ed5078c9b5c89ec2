"""The edgeagent command: keygen, id, demo, usage errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgeagent.cli import main


def test_keygen_then_id(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["keygen", "--state", str(tmp_path), "--json"]) == 0
    made = json.loads(capsys.readouterr().out)
    assert made["created"] is True and made["node_id"].startswith("12D3KooW")
    assert main(["keygen", "--state", str(tmp_path), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again == {**made, "created": False}
    assert main(["id", "--state", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == made["node_id"]


def test_id_without_key_fails_with_advice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["id", "--state", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "edgeagent keygen" in err and err.count("\n") == 1


def test_bad_usage_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["no-such-command"])
    assert exc.value.code == 2
    assert main([]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["demo", "--agents", "0"])
    assert exc.value.code == 2


def test_demo_runs_over_loopback() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "edgeagent.cli", "demo", "--agents", "3", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert run.returncode == 0, run.stderr
    out = json.loads(run.stdout)
    assert out["ok"] is True
    assert len(out["agents"]) == 3
    assert {a["codec"] for a in out["agents"]} == {"cbor", "protobuf"}
    assert all(a["peers_seen"] == 2 and a["rtt_ms_median"] > 0 for a in out["agents"])
    assert all(a["worker"] == "[1.0, 2.0, 3.0] * 2 + 1 = [3.0, 5.0, 7.0]" for a in out["agents"])
    assert out["checks"] == {
        "forged_record_refused": True,
        "unauthorised_push_refused": True,
        "unauthorised_ping_answered": True,
        "impostor_refused": True,
    }
