"""The node's event loop: uvloop when installed (the ``fast`` extra), asyncio's on request, clear errors."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path

import pytest

from edgeagent import _loop
from edgeagent.exceptions import ConfigError
from tests.procs import ProcGroup, status

HAVE_UVLOOP = importlib.util.find_spec("uvloop") is not None


async def _kind() -> str:
    return type(asyncio.get_running_loop()).__module__


def test_asyncio_on_request(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEAGENT_LOOP", "asyncio")
    assert _loop.loop_name() == "asyncio"
    assert _loop.run(_kind()).startswith("asyncio")


def test_bad_choice_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEAGENT_LOOP", "trio")
    with pytest.raises(ConfigError, match="auto, uvloop or asyncio"):
        _loop.loop_name()


def test_auto_prefers_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGEAGENT_LOOP", raising=False)
    if not HAVE_UVLOOP:
        print("uvloop not installed here: auto falls back to asyncio")
        assert _loop.loop_name() == "asyncio"
        return
    assert _loop.loop_name() == "uvloop"
    assert _loop.run(_kind()).startswith("uvloop")


def test_missing_uvloop_when_demanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGEAGENT_LOOP", "uvloop")
    monkeypatch.setitem(sys.modules, "uvloop", None)  # `import uvloop` now raises ImportError
    with pytest.raises(ConfigError, match="not installed"):
        _loop.loop_name()


@pytest.mark.slow
def test_status_names_the_loop(tmp_path: Path) -> None:
    with ProcGroup(tmp_path) as g:
        n = g.node("A", "--listen", "ws://127.0.0.1:0", "--open")
        assert status(n.info["state"])["event_loop"] == ("uvloop" if HAVE_UVLOOP else "asyncio")
