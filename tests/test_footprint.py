"""What a relay-only agent loads: google.protobuf, numpy and aiortc stay out until something needs them.

The protobuf codec (``edgeagent.wire.protobuf`` and the generated ``edgeagent.v1`` modules) loads
when a link that negotiated protobuf first encodes or decodes; the handshake offers protobuf
without it. Checked in fresh interpreters (this one may have loaded anything) and on real
``edgeagent run`` / ``edgeagent domain`` processes over loopback with mDNS off, by reading
/proc/PID/maps. No timings here: bench/footprint.py measures memory, start-up and traffic.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from edgeagent.control import control_request

from .procs import ROOT, Proc, ProcGroup, free_port, wait_for

#: substrings of /proc/PID/maps paths that show each package loaded (its extension modules)
MAPPED = {
    "google.protobuf": ("/google/_upb/", "/google/protobuf/"),
    "numpy": ("/numpy/", "/numpy.libs/"),
    "aiortc": ("/aiortc/",),
    "av": ("/av/", "/av.libs/", "libavcodec"),
}


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_the_protobuf_codec_loads_on_first_use_and_the_handshake_offers_it_without() -> None:
    run = _run_python(
        """
        import sys

        import edgeagent.cli, edgeagent.control, edgeagent.node  # what `edgeagent run` imports
        from edgeagent.identity import Identity
        from edgeagent.links.base import LinkOptions
        from edgeagent.links.handshake import Handshake
        from edgeagent.wire import Envelope, Response, decode, encode

        LAZY = ("google.protobuf", "edgeagent.v1", "edgeagent.wire.protobuf")

        def loaded():
            return sorted(m for m in sys.modules if m.startswith(LAZY))

        assert loaded() == [], loaded()
        # a CBOR-preferring dialler offers protobuf too; a listener that speaks only protobuf picks it
        dialler = Handshake(Identity.generate(), True, LinkOptions())
        listener = Handshake(Identity.generate(), False, LinkOptions(codecs=("protobuf",)))
        first = dialler.start()
        third = dialler.receive(listener.receive(first))
        assert listener.receive(third) is None
        assert dialler.result.codec == listener.result.codec == "protobuf"
        assert loaded() == [], ("the handshake loaded", loaded())
        env = Envelope(Response({"k": [1, 2.5, "x", b"\\x00"]}), Identity.generate().node_id)
        assert decode(encode(env, "cbor"), "cbor") == env
        assert loaded() == [], ("CBOR loaded", loaded())
        frame = encode(env, "protobuf")  # the first protobuf frame loads the codec
        assert "google.protobuf" in sys.modules and "edgeagent.wire.protobuf" in sys.modules
        assert decode(frame, "protobuf") == env
        import edgeagent.wire
        assert edgeagent.wire.protobuf.decode(frame) == env  # the attribute, as before the change
        print("ok")
        """
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip() == "ok"


def test_the_protobuf_module_attribute_loads_on_access() -> None:
    run = _run_python(
        """
        import sys
        import edgeagent.wire as wire
        assert "edgeagent.wire.protobuf" not in sys.modules
        assert wire.protobuf.__name__ == "edgeagent.wire.protobuf"  # PEP 562
        from edgeagent.wire import protobuf
        assert protobuf is wire.protobuf
        try:
            wire.no_such_name
        except AttributeError as exc:
            assert "no_such_name" in str(exc)
        else:
            raise AssertionError("a misspelt name did not raise AttributeError")
        print("ok")
        """
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_a_protobuf_link_over_a_websocket_works_in_a_fresh_process() -> None:
    """A link that negotiated protobuf in a process that had not loaded it: requests both ways."""
    run = _run_python(
        """
        import asyncio, sys

        from edgeagent.identity import Identity
        from edgeagent.links.base import LinkOptions
        from edgeagent.links.websocket import dial, listen
        from edgeagent.wire import Envelope, Response

        async def main():
            assert "google.protobuf" not in sys.modules
            server = Identity.generate()
            got = asyncio.Queue()

            async def on_link(link):
                env = await link.recv()
                await got.put(env)
                await link.send(env.reply(Response({"echo": env.body.value}), server.node_id))

            lst = await listen("ws://127.0.0.1:0", server, on_link, LinkOptions(codecs=("protobuf",)))
            try:
                ident = Identity.generate()
                link = await dial(lst.url, ident, LinkOptions(), expected_peer=server.node_id)
                try:
                    assert link.codec == "protobuf", link.codec
                    sent = Envelope(Response({"n": 7, "s": "x" * 1000}), ident.node_id, destination=server.node_id)
                    await link.send(sent)
                    reply = await asyncio.wait_for(link.recv(), 30)
                    assert (await got.get()).body == sent.body
                    assert reply.reply_to == sent.msg_id and reply.body.value == {"echo": sent.body.value}
                    assert "edgeagent.wire.protobuf" in sys.modules
                finally:
                    await link.close()
            finally:
                await lst.close()

        asyncio.run(main())
        print("ok")
        """
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.strip().endswith("ok")


# -- the allocator: tuned for relaying, trimmed when idle ---------------------------------------


def _glibc() -> bool:
    try:
        return sys.platform.startswith("linux") and bool(os.confstr("CS_GNU_LIBC_VERSION"))
    except (ValueError, OSError):
        return False


@pytest.mark.skipif(not _glibc(), reason="the tuning is for glibc")
def test_an_idle_tuned_process_gives_its_freed_buffers_back() -> None:
    """The tuning keeps freed buffers (trim threshold 64 MiB); the idle trimmer returns them."""
    run = _run_python(
        """
        import threading, time
        from edgeagent._malloc import tune_malloc

        def rss_mib():
            for line in open("/proc/self/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024

        assert tune_malloc(trim_every=0.2)
        assert tune_malloc(trim_every=0.2)  # a second call starts no second trimmer
        assert [t.name for t in threading.enumerate()].count("edgeagent-malloc-trim") == 1
        blocks = [bytearray(b"\x01") * (256 << 10) for _ in range(96)]  # 24 MiB of relay-sized buffers
        keep = bytearray(b"\x01") * 4096  # allocated after them: the heap's top stays in use
        full = rss_mib()
        del blocks
        deadline = time.monotonic() + 60
        while rss_mib() > full - 16 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert rss_mib() <= full - 16, (full, rss_mib())
        print("ok", len(keep))
        """
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_the_tuning_can_be_turned_off() -> None:
    run = _run_python(
        """
        import os, threading
        os.environ["EDGEAGENT_MALLOC_TUNE"] = "0"
        from edgeagent._malloc import tune_malloc
        assert tune_malloc() is False
        assert "edgeagent-malloc-trim" not in [t.name for t in threading.enumerate()]
        print("ok")
        """
    )
    assert run.returncode == 0, run.stdout + run.stderr


# -- real processes ---------------------------------------------------------------------------


def _maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def _mapped(pid: int) -> dict[str, bool]:
    maps = _maps(pid)
    return {name: any(s in maps for s in subs) for name, subs in MAPPED.items()}


def _status(state: Path) -> dict[str, Any]:
    return dict(asyncio.run(control_request(state, "status", timeout=10.0))["status"])


def _need_maps() -> None:
    if not Path("/proc/self/maps").exists():
        pytest.skip("this machine has no /proc/PID/maps")
    from google.protobuf.internal import api_implementation

    if api_implementation.Type() != "upb":  # the pure-Python implementation maps no file to look for
        pytest.skip(f"protobuf runs its {api_implementation.Type()} implementation here, not upb")
    missing = [m for m in ("numpy", "aiortc") if importlib.util.find_spec(m) is None]
    assert not missing, f"the test needs {missing} installed, to show they are not loaded"


def _domain(g: ProcGroup, tmp: Path, *args: str) -> tuple[Proc, str, Path]:
    url, state = f"ws://127.0.0.1:{free_port()}", tmp / "domain"
    argv = [sys.executable, "-m", "edgeagent.cli", "domain", "--listen", url, "--open", "--mdns", "off"]
    dom = g.spawn("domain", [*argv, "--state", str(state), *args])
    dom.info = dom.read_json_line(30)
    assert dom.info.get("event") == "started", dom.info
    return dom, url, state


def _device(g: ProcGroup, domain_url: str) -> Proc:
    """``edgeagent run --listen ... --domain ... --mdns off --state DIR``: no --data, no job."""
    return g.node("device", "--listen", f"ws://127.0.0.1:{free_port()}", "--domain", domain_url, "--mdns", "off")


def _registered(dev: Proc, dom: Proc, dom_state: Path) -> dict[str, Any]:
    """The device's link row to the domain once it is authorised and the domain answered its registration."""

    def check() -> dict[str, Any] | None:
        row = next((ln for ln in _status(Path(dev.info["state"]))["links"] if ln["peer"] == dom.node_id), None)
        answered = _status(dom_state)["bytes_sent_by_type"].get("PeerList")
        return row if row is not None and row["authorised"] and answered else None

    return wait_for(check, 30, 0.1, "the device to register with its domain")


@pytest.mark.slow
def test_a_relay_only_device_linked_to_its_domain_maps_no_protobuf_numpy_or_aiortc(tmp_path: Path) -> None:
    _need_maps()
    with ProcGroup(tmp_path) as g:
        dom, url, dom_state = _domain(g, tmp_path)
        dev = _device(g, url)
        row = _registered(dev, dom, dom_state)
        assert row["codec"] == "cbor"  # both prefer CBOR; each offered protobuf too
        for proc in (dev, dom):
            mapped = _mapped(proc.pid)
            assert not any(mapped.values()), f"{proc.name} maps {[k for k, v in mapped.items() if v]}"
            assert "/cryptography/" in _maps(proc.pid)  # the check does see extension modules
        _status(Path(dev.info["state"]))  # answering status loads nothing more
        assert not any(_mapped(dev.pid).values())
        for proc in (dev, dom):
            assert proc.stop() == 0, proc.log_text()


@pytest.mark.slow
def test_a_device_whose_domain_speaks_only_protobuf_loads_it_then_and_registers(tmp_path: Path) -> None:
    _need_maps()
    cfg = tmp_path / "protobuf-only.toml"
    cfg.write_text('[link]\ncodecs = ["protobuf"]\n')
    with ProcGroup(tmp_path) as g:
        dom, url, dom_state = _domain(g, tmp_path, "--config", str(cfg))
        dev = _device(g, url)
        row = _registered(dev, dom, dom_state)  # the registration went both ways in protobuf
        assert row["codec"] == "protobuf"
        assert _mapped(dev.pid)["google.protobuf"]  # loaded once a frame needed it
        assert not _mapped(dev.pid)["numpy"]
        for proc in (dev, dom):
            assert proc.stop() == 0, proc.log_text()
