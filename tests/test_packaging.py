"""Packaging: the systemd units, the sd_notify client, the Termux and Raspberry Pi install scripts
(run against stub executables that record their argv), and what the wheel ships (configs, LICENSE).

Nothing here installs a package, creates a user or talks to systemd: ``pkg``, ``pip``, ``useradd``,
``systemctl``, ``sv-enable`` and friends are stubs first on PATH.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import subprocess
import sys
import textwrap
import time
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgeagent import sdnotify

ROOT = Path(__file__).resolve().parent.parent
TERMUX = ROOT / "packaging" / "termux"
PI = ROOT / "packaging" / "raspberrypi"
UNITS = ["edgeagent.service", "edgeagent-domain.service"]
CONFIGS = ["cost.toml", "edgeagent.example.toml", "job.example.toml"]
EXEC = "/opt/edgeagent/venv/bin/edgeagent"
FAKE_ID = "12D3KooWFakeNodeIdForThePackagingTests"
SH_SCRIPTS = [TERMUX / "sv/edgeagent/run", TERMUX / "sv/edgeagent/log/run", TERMUX / "boot/start-edgeagent"]
BASH_SCRIPTS = [TERMUX / "install.sh", PI / "install.sh"]


# --- systemd units


def _directives(path: Path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")) and "=" in line:
            key, _, value = line.partition("=")
            out.setdefault(key.strip(), []).append(value.strip())
    return out


def _verifiable_copy(unit: str, tmp_path: Path) -> Path:
    """The unit with ExecStart's program pointing at a stub (verify checks that it exists)."""
    stub = tmp_path / "edgeagent"
    stub.write_text("#!/bin/sh\nexit 0\n")
    stub.chmod(0o755)
    text = (PI / unit).read_text()
    assert EXEC in text
    copy = tmp_path / unit
    copy.write_text(text.replace(EXEC, str(stub)))
    return copy


def _verify(path: Path) -> list[str]:
    """What ``systemd-analyze verify`` says about ``path`` (lines naming it); asserts it exits 0."""
    out = subprocess.run(
        ["systemd-analyze", "verify", str(path)], capture_output=True, text=True, timeout=60, env=_no_pager()
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return [ln for ln in (out.stdout + out.stderr).splitlines() if path.name in ln]


def _no_pager() -> dict[str, str]:
    return {**os.environ, "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0", "SYSTEMD_LOG_COLOR": "0"}


def _need_systemd_analyze() -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")


@pytest.mark.parametrize("unit", UNITS)
def test_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    _need_systemd_analyze()
    assert _verify(_verifiable_copy(unit, tmp_path)) == []


def test_the_verify_check_sees_a_bad_key(tmp_path: Path) -> None:
    """``verify`` exits 0 on an unknown key or bad value: the test must read what it prints."""
    _need_systemd_analyze()
    copy = _verifiable_copy("edgeagent.service", tmp_path)
    copy.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSistem=strict\nType=bogus"))
    said = "\n".join(_verify(copy))
    assert "ProtectSistem" in said
    assert "bogus" in said


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_hardened_and_supervised(unit: str, tmp_path: Path) -> None:
    d = _directives(PI / unit)
    want = {
        "Type": "notify",
        "NotifyAccess": "main",
        "WatchdogSec": "60",
        "Restart": "on-failure",
        "User": "edgeagent",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "NoNewPrivileges": "yes",
        "PrivateTmp": "yes",
        "RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6 AF_NETLINK",
        "StateDirectoryMode": "0700",
        "WantedBy": "multi-user.target",
    }
    assert {k: d.get(k, ["<missing>"])[-1] for k in want} == want
    state = "edgeagent" if unit == "edgeagent.service" else "edgeagent-domain"
    assert d["StateDirectory"] == [state]
    (exec_start,) = d["ExecStart"]
    role = "run" if unit == "edgeagent.service" else "domain"
    assert exec_start.startswith(f"{EXEC} {role} --state /var/lib/{state} --config /etc/edgeagent/")
    assert exec_start.endswith(" $EDGEAGENT_ARGS")  # unbraced: split into words by systemd
    if shutil.which("systemd-analyze"):  # the exposure score systemd computes (lower is better; 10 = none)
        out = subprocess.run(
            ["systemd-analyze", "security", "--offline=yes", "--threshold=25", str(_verifiable_copy(unit, tmp_path))],
            capture_output=True,
            text=True,
            timeout=60,
            env=_no_pager(),
        )
        if "--offline" in out.stderr or "--threshold" in out.stderr:
            pytest.skip(f"this systemd-analyze has no offline security check: {out.stderr.strip()}")
        assert out.returncode == 0, out.stdout[-400:] + out.stderr


# --- sd_notify


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket standing in for systemd's, and the NOTIFY_SOCKET value that reaches it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if len(str(path)) < 100:
        sock.bind(str(path))
        addr = str(path)
    else:  # a long tmp path: an abstract name instead
        name = f"edgeagent-test-{os.getpid()}-{time.monotonic_ns()}"
        sock.bind("\0" + name)
        addr = "@" + name
    sock.settimeout(5.0)
    try:
        yield sock, addr
    finally:
        sock.close()


def _drain(sock: socket.socket, until: bytes, limit: int = 50) -> list[bytes]:
    got: list[bytes] = []
    while len(got) < limit:
        got.append(sock.recv(4096))
        if got[-1] == until:
            break
    return got


HARNESS = """
import asyncio
from edgeagent import sdnotify

assert sdnotify.ready("device 12D3KooW... listening on ws://127.0.0.1:7400\\nsecond line")
assert sdnotify.status("2 links")

async def main() -> None:
    task = asyncio.create_task(sdnotify.watchdog_loop())
    await asyncio.sleep(0.35)
    task.cancel()

asyncio.run(main())
assert sdnotify.stopping()
"""


def _run_harness(addr: str, **env: str) -> None:
    full = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    full.update(NOTIFY_SOCKET=addr, PYTHONPATH=str(ROOT), **env)
    out = subprocess.run([sys.executable, "-c", HARNESS], capture_output=True, text=True, timeout=60, env=full)
    assert out.returncode == 0, out.stderr


def test_sdnotify_under_a_fake_notify_socket(notify_socket: tuple[socket.socket, str]) -> None:
    sock, addr = notify_socket
    _run_harness(addr, WATCHDOG_USEC="200000")  # pings every 0.1 s
    got = _drain(sock, b"STOPPING=1")
    assert got[0] == b"READY=1\nSTATUS=device 12D3KooW... listening on ws://127.0.0.1:7400 second line"
    assert got[1] == b"STATUS=2 links"
    assert got[-1] == b"STOPPING=1"
    pings = got[2:-1]
    assert set(pings) == {b"WATCHDOG=1"}
    assert 2 <= len(pings) <= 20, got  # every 0.1 s for 0.35 s: 4 on an idle machine


def test_sdnotify_abstract_socket(tmp_path: Path) -> None:
    name = f"edgeagent-test-{os.getpid()}-{time.monotonic_ns()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(5.0)
        _run_harness("@" + name)  # no WATCHDOG_USEC: no pings
        got = _drain(sock, b"STOPPING=1")
    assert got[0].startswith(b"READY=1\nSTATUS=device ")
    assert got[1:] == [b"STATUS=2 links", b"STOPPING=1"]


def test_sdnotify_watchdog_for_another_pid_is_not_pinged(notify_socket: tuple[socket.socket, str]) -> None:
    _, addr = notify_socket
    env = {"NOTIFY_SOCKET": addr, "WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"}
    code = "from edgeagent import sdnotify; print(sdnotify.watchdog_interval())"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, check=True
    )
    assert out.stdout.strip() == "None"


def test_sdnotify_is_a_no_op_without_notify_socket(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "200000")
    assert not sdnotify.ready("x")
    assert not sdnotify.status("x")
    assert not sdnotify.watchdog()
    assert not sdnotify.stopping()
    assert sdnotify.watchdog_interval() is None
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(), 1.0))  # returns at once
    asyncio.run(asyncio.wait_for(sdnotify.watchdog_loop(0.05), 1.0))
    monkeypatch.setenv("NOTIFY_SOCKET", "vsock:2:1234")  # a form it does not speak
    assert not sdnotify.ready()


def test_sdnotify_never_raises_when_the_socket_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-listens.sock"))
    assert not sdnotify.ready("x")
    assert not sdnotify.watchdog()


def test_sdnotify_watchdog_interval_and_health(
    notify_socket: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    sock, addr = notify_socket
    monkeypatch.setenv("NOTIFY_SOCKET", addr)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "60000000")
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert sdnotify.watchdog_interval() == 30.0
    monkeypatch.setenv("WATCHDOG_USEC", "nonsense")
    assert sdnotify.watchdog_interval() is None
    healthy = [True, False, True]
    checks = 0

    def check() -> bool:
        nonlocal checks
        checks += 1
        if not healthy:
            raise RuntimeError("broken check")  # counts as unhealthy, the loop goes on
        return healthy.pop(0)

    async def run() -> None:
        task = asyncio.create_task(sdnotify.watchdog_loop(0.01, healthy=check))
        deadline = time.monotonic() + 10
        while checks < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        task.cancel()

    asyncio.run(run())
    sock.settimeout(0.2)
    got = []
    try:
        while True:
            got.append(sock.recv(64))
    except TimeoutError:
        pass
    assert got == [b"WATCHDOG=1", b"WATCHDOG=1"]  # the unhealthy and the raising checks sent nothing


# --- stub executables for the install scripts


def _stub(bindir: Path, name: str, body: str = "") -> None:
    path = bindir / name
    path.write_text(
        "#!/bin/bash\n"
        '{ printf "%s\\x1f" "$(basename "$0")" "$@"; printf "\\x1e"; } >>"$STUB_LOG"\n' + textwrap.dedent(body)
    )
    path.chmod(0o755)


# a stand-in for `python`/`python3`: -m venv makes a venv of stubs whose python runs pip as a stub and
# anything else (the config copy) on the real interpreter; -c (the platform and venv checks) answers
# $STUB_PYTHON_RC
FAKE_PYTHON = """
if [ "$1" = -m ] && [ "$2" = venv ]; then
    for dir in "$@"; do :; done
    mkdir -p "$dir/bin"
    cat >"$dir/bin/python" <<'EOF'
#!/bin/bash
{ printf "%s\\x1f" venv-python "$@"; printf "\\x1e"; } >>"$STUB_LOG"
if [ "$1" = -m ] && [ "$2" = pip ]; then exit 0; fi
exec "$REAL_PYTHON" "$@"
EOF
    cat >"$dir/bin/edgeagent" <<'EOF'
#!/bin/bash
{ printf "%s\\x1f" venv-edgeagent "$@"; printf "\\x1e"; } >>"$STUB_LOG"
if [ "$1" = keygen ]; then echo "$FAKE_ID"; fi
EOF
    chmod +x "$dir/bin/python" "$dir/bin/edgeagent"
    exit 0
fi
exit "${STUB_PYTHON_RC:-0}"
"""


def _calls(log: Path) -> list[list[str]]:
    if not log.exists():
        return []
    return [rec.split("\x1f")[:-1] for rec in log.read_text().split("\x1e") if rec]


def _named(calls: list[list[str]], name: str) -> list[list[str]]:
    return [c[1:] for c in calls if c[0] == name]


def _env(tmp_path: Path, bindir: Path, log: Path, **extra: str) -> dict[str, str]:
    env = {
        "PATH": f"{bindir}:/usr/bin:/bin",
        "STUB_LOG": str(log),
        "REAL_PYTHON": sys.executable,
        "FAKE_ID": FAKE_ID,
        "PYTHONPATH": str(ROOT),
        "LANG": "C.UTF-8",
    }
    env.update(extra)
    return env


def _sh_value(env_file: Path, var: str = "EDGEAGENT_ARGS") -> str:
    """``var`` as a POSIX shell sourcing ``env_file`` (what the run scripts do) sees it."""
    out = subprocess.run(
        ["sh", "-c", f'. "$1"; printf %s "${var}"', "sh", str(env_file)], capture_output=True, text=True, check=True
    )
    return out.stdout


# --- Termux


@pytest.fixture
def termux(tmp_path: Path) -> dict[str, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    prefix = tmp_path / "usr"
    (prefix / "etc/profile.d").mkdir(parents=True)
    home = tmp_path / "home"
    home.mkdir()
    for name in ("pkg", "termux-wake-lock", "service-daemon", "sv", "svlogd"):
        _stub(bindir, name)
    _stub(bindir, "sv-enable", 'rm -f "$SVDIR/$1/down"\nexit "${STUB_SV_ENABLE_RC:-0}"\n')
    _stub(bindir, "python", FAKE_PYTHON)
    # what termux-services installs as $PREFIX/etc/profile.d/start-services.sh
    (prefix / "etc/profile.d/start-services.sh").write_text(
        "export SVDIR=$PREFIX/var/service\nexport LOGDIR=$PREFIX/var/log\n(service-daemon start >/dev/null 2>&1 & )\n"
    )
    return {"bin": bindir, "prefix": prefix, "home": home, "log": tmp_path / "calls.log", "tmp": tmp_path}


def _termux_install(t: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = _env(t["tmp"], t["bin"], t["log"], PREFIX=str(t["prefix"]), HOME=str(t["home"]), **env)
    return subprocess.run(
        ["bash", str(TERMUX / "install.sh"), *args], capture_output=True, text=True, env=full, timeout=120
    )


def test_termux_install(termux: dict[str, Path]) -> None:
    t = termux
    home, prefix = t["home"], t["prefix"]
    res = _termux_install(t, "--fl", "--domain", "wss://d.example.org:7400", "--expect", FAKE_ID, str(ROOT))
    assert res.returncode == 0, res.stdout + res.stderr
    calls = _calls(t["log"])
    venv = home / ".local/share/edgeagent/venv"
    state = home / ".local/state/edgeagent"
    conf = home / ".config/edgeagent"
    pkgs = ["python", "python-pip", "python-cryptography", "python-psutil", "termux-api", "termux-services"]
    assert _named(calls, "pkg") == [["install", "-y", *pkgs, "python-numpy"]]
    assert ["-m", "venv", "--system-site-packages", "--without-pip", str(venv)] in _named(calls, "python")
    (pip,) = [c for c in _named(calls, "venv-python") if c[:2] == ["-m", "pip"]]
    assert pip[2] == "install"
    assert pip[-1] == str(ROOT)
    assert pip[pip.index("--constraint") + 1] == str(venv / "edgeagent-constraints.txt")
    assert (venv / "edgeagent-constraints.txt").read_text().split() == ["cbor2>=5.6,<6"]
    assert _named(calls, "venv-edgeagent") == [["keygen", "--state", str(state)]]
    assert FAKE_ID in res.stdout
    # config: the packaged example, and the service's arguments
    assert (conf / "edgeagent.toml").read_text() == (ROOT / "configs/edgeagent.example.toml").read_text()
    assert _sh_value(conf / "edgeagent.env") == f"--domain wss://d.example.org:7400 --expect {FAKE_ID}"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o700
    # the service directory, its paths rewritten from Termux's defaults to this PREFIX and HOME
    sv = prefix / "var/service/edgeagent"
    for f in (sv / "run", sv / "log/run", home / ".termux/boot/start-edgeagent"):
        assert os.access(f, os.X_OK), f
        assert "/data/data/com.termux" not in f.read_text(), f
        assert f.read_text().startswith(f"#!{prefix}/bin/sh\n"), f
    assert f"VENV={venv}\n" in (sv / "run").read_text()
    assert ["edgeagent"] in _named(calls, "sv-enable")
    assert not (sv / "down").exists()  # sv-enable ran with SVDIR exported and removed it
    assert _named(calls, "sv") == []  # a new service: no restart

    # the run script execs `edgeagent run` with the config file and the arguments from the env file
    t["log"].unlink()
    env = _env(t["tmp"], t["bin"], t["log"])
    subprocess.run(["sh", str(sv / "run")], env=env, check=True, timeout=30)
    run_args = ["--state", str(state), "--config", str(conf / "edgeagent.toml")]
    assert _named(_calls(t["log"]), "venv-edgeagent") == [
        ["run", *run_args, "--domain", "wss://d.example.org:7400", "--expect", FAKE_ID]
    ]
    # the log service: svlogd into $PREFIX/var/log/sv/edgeagent, with a size limit
    t["log"].unlink()
    subprocess.run(["sh", str(sv / "log/run")], env=env, check=True, timeout=30)
    log_dir = prefix / "var/log/sv/edgeagent"
    assert _named(_calls(t["log"]), "svlogd") == [["-tt", str(log_dir)]]
    assert (log_dir / "config").read_text().split() == ["s1000000", "n5"]
    # the boot script: a wake lock, termux-services, then the service up
    t["log"].unlink()
    subprocess.run(["sh", str(home / ".termux/boot/start-edgeagent")], env={**env, "PREFIX": str(prefix)}, check=True)
    calls = _calls(t["log"])
    assert calls[0] == ["termux-wake-lock"]
    assert ["up", "edgeagent"] in _named(calls, "sv")


def test_termux_install_again_keeps_config_and_restarts(termux: dict[str, Path]) -> None:
    t = termux
    assert _termux_install(t, "--no-boot", "edgeagent==0.1.0").returncode == 0
    conf = t["home"] / ".config/edgeagent"
    assert _sh_value(conf / "edgeagent.env") == ""
    (conf / "edgeagent.env").write_text("EDGEAGENT_ARGS='--peer ws://192.0.2.1:7400'\n")
    (conf / "edgeagent.toml").write_text("[discovery]\nmdns = 'auto'\n")
    t["log"].unlink()
    res = _termux_install(t, "--no-boot", "edgeagent==0.1.0")
    assert res.returncode == 0, res.stderr
    calls = _calls(t["log"])
    assert not [c for c in _named(calls, "python") if c[:2] == ["-m", "venv"]]  # the venv is reused
    (pip,) = [c for c in _named(calls, "venv-python") if c[:2] == ["-m", "pip"]]
    assert pip[-1] == "edgeagent==0.1.0"  # a requirement, not a path
    assert _sh_value(conf / "edgeagent.env") == "--peer ws://192.0.2.1:7400"
    assert (conf / "edgeagent.toml").read_text() == "[discovery]\nmdns = 'auto'\n"
    assert ["restart", "edgeagent"] in _named(calls, "sv")  # an upgrade runs the new code
    assert not (t["home"] / ".termux/boot").exists()


def test_termux_install_without_termux_services_running(termux: dict[str, Path]) -> None:
    res = _termux_install(termux, "--no-boot", str(ROOT), STUB_SV_ENABLE_RC="1")
    assert res.returncode == 0, res.stderr
    calls = _calls(termux["log"])
    assert ["start"] in _named(calls, "service-daemon")
    assert ["up", "edgeagent"] in _named(calls, "sv")  # the stub sv succeeds on the first retry


def test_termux_install_refuses_an_old_python_and_a_non_termux_host(termux: dict[str, Path]) -> None:
    res = _termux_install(termux, str(ROOT), STUB_PYTHON_RC="1")
    assert res.returncode == 1
    assert "pkg upgrade" in res.stderr
    assert not (termux["home"] / ".local/share/edgeagent/venv").exists()
    env = _env(termux["tmp"], termux["bin"], termux["log"], HOME=str(termux["home"]))  # no PREFIX
    res = subprocess.run(["bash", str(TERMUX / "install.sh")], capture_output=True, text=True, env=env)
    assert res.returncode == 1
    assert "packaging/raspberrypi/install.sh" in res.stderr


# --- Raspberry Pi


@pytest.fixture
def pi(tmp_path: Path) -> dict[str, Path]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name in ("useradd", "systemctl", "chown", "apt-get"):
        _stub(bindir, name)
    _stub(bindir, "getent", "exit 2\n")  # no such user yet
    _stub(bindir, "id", 'if [ "$1" = -u ] && [ $# -eq 1 ]; then echo 0; else exit 1; fi\n')
    _stub(bindir, "runuser", 'while [ "$1" != -- ]; do shift; done; shift\nexec "$@"\n')
    _stub(bindir, "python3", FAKE_PYTHON)
    root = tmp_path / "root"
    root.mkdir()
    return {"bin": bindir, "root": root, "log": tmp_path / "calls.log", "tmp": tmp_path}


def _pi_install(p: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    full = _env(p["tmp"], p["bin"], p["log"], PYTHON=str(p["bin"] / "python3"), **env)
    return subprocess.run(
        ["bash", str(PI / "install.sh"), *args], capture_output=True, text=True, env=full, timeout=120
    )


def test_pi_install_into_a_root(pi: dict[str, Path]) -> None:
    root = pi["root"]
    res = _pi_install(pi, "--root", str(root), "--fl", "--domain", "wss://d.example.org:7400", str(ROOT))
    assert res.returncode == 0, res.stdout + res.stderr
    calls = _calls(pi["log"])
    (useradd,) = _named(calls, "useradd")
    assert useradd[-1] == "edgeagent"
    assert {"--system", "--user-group", "--no-create-home"} <= set(useradd)
    assert useradd[useradd.index("--shell") + 1] == "/usr/sbin/nologin"
    venv = root / "opt/edgeagent/venv"
    assert ["-m", "venv", str(venv)] in _named(calls, "python3")  # no --system-site-packages: PEP 668-safe
    (pip,) = [c for c in _named(calls, "venv-python") if c[:2] == ["-m", "pip"]]
    assert pip[-2:] == [str(ROOT), "numpy>=1.24"]
    conf = root / "etc/edgeagent"
    assert (conf / "edgeagent.toml").read_text() == (ROOT / "configs/edgeagent.example.toml").read_text()
    assert stat.S_IMODE((conf / "edgeagent.toml").stat().st_mode) == 0o640
    assert _sh_value(conf / "edgeagent.env") == "--domain wss://d.example.org:7400"
    state = root / "var/lib/edgeagent"
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    chowns = _named(calls, "chown")
    assert ["edgeagent:edgeagent", str(state)] in chowns
    assert ["root:edgeagent", str(conf / "edgeagent.env")] in chowns
    keygen = [str(venv / "bin/edgeagent"), "keygen", "--state", str(state)]
    assert _named(calls, "runuser") == [["-u", "edgeagent", "--", *keygen]]
    assert FAKE_ID in res.stdout
    unit = root / "etc/systemd/system/edgeagent.service"
    assert unit.read_text() == (PI / "edgeagent.service").read_text()
    assert _named(calls, "systemctl") == [[f"--root={root}", "enable", "edgeagent.service"]]
    assert _named(calls, "apt-get") == []


def test_pi_dry_run_changes_nothing(pi: dict[str, Path]) -> None:
    before = {p: p.exists() for p in (Path("/opt/edgeagent"), Path("/etc/edgeagent"))}
    res = _pi_install(pi, "--dry-run", str(ROOT))
    assert res.returncode == 0, res.stderr
    mutating = {"useradd", "systemctl", "chown", "apt-get", "runuser", "python3"}
    assert [c for c in _calls(pi["log"]) if c[0] in mutating and c[1:2] != ["-c"]] == []
    assert {p: p.exists() for p in before} == before
    lines = res.stdout.splitlines()
    for want in (
        "+ useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin",
        f"+ {pi['bin']}/python3 -m venv /opt/edgeagent/venv",
        f"+ /opt/edgeagent/venv/bin/python -m pip install --disable-pip-version-check --upgrade {ROOT}",
        "+ write /etc/systemd/system/edgeagent.service (mode 0644)",
        "+ systemctl daemon-reload",
        "+ systemctl enable edgeagent.service",
        "+ systemctl restart edgeagent.service",
    ):
        assert any(ln.startswith(want) for ln in lines), (want, res.stdout)


def test_pi_dry_run_domain_role(pi: dict[str, Path]) -> None:
    res = _pi_install(pi, "--dry-run", "--role", "domain", "--no-start", "edgeagent")
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "+ write /etc/edgeagent/domain.env (mode 0640)\n  EDGEAGENT_ARGS=--listen ws://0.0.0.0:7400\n" in out
    assert "+ write /etc/systemd/system/edgeagent-domain.service (mode 0644)" in out
    assert "+ systemctl enable edgeagent-domain.service" in out
    assert "restart" not in out
    assert "keygen --state /var/lib/edgeagent-domain" in out
    res = _pi_install(pi, "--dry-run", "--role", "domain", "--domain", "wss://x")
    assert res.returncode == 1
    assert "--role device" in res.stderr


# --- the scripts themselves


@pytest.mark.parametrize("script", BASH_SCRIPTS + SH_SCRIPTS, ids=lambda p: str(p.relative_to(ROOT)))
def test_scripts_parse_and_are_executable(script: Path) -> None:
    shell = "bash" if script in BASH_SCRIPTS else "sh"
    subprocess.run([shell, "-n", str(script)], check=True)
    assert os.access(script, os.X_OK)


def test_scripts_pass_shellcheck() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed")
    for shell, scripts in (("bash", BASH_SCRIPTS), ("sh", SH_SCRIPTS)):
        out = subprocess.run(["shellcheck", "-s", shell, *map(str, scripts)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout


# --- what the package ships


def test_packaged_configs_are_the_repository_configs() -> None:
    from importlib.resources import files

    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "configs/*.toml" in data["tool"]["setuptools"]["package-data"]["edgeagent"]
    for name in CONFIGS:
        packaged = files("edgeagent").joinpath("configs", name)
        assert packaged.read_bytes() == (ROOT / "configs" / name).read_bytes(), name
    assert sorted(p.name for p in (ROOT / "configs").glob("*.toml")) == CONFIGS  # a new config: add it here


def test_license_is_apache_2() -> None:
    text = (ROOT / "LICENSE").read_text()
    assert text.split()[:4] == ["Apache", "License", "Version", "2.0,"]
    assert "END OF TERMS AND CONDITIONS" in text
    assert "APPENDIX: How to apply the Apache License to your work." in text
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["license"] == {"text": "Apache-2.0"}


def test_wheel_ships_configs_and_license(tmp_path: Path) -> None:
    pytest.importorskip("setuptools")
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "configs", src / "configs", symlinks=True)
    shutil.copytree(ROOT / "edgeagent", src / "edgeagent", symlinks=True, ignore=ignore)
    out = tmp_path / "dist"
    code = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(out)], cwd=src, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    (wheel,) = out.glob("edgeagent-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        for name in CONFIGS:
            assert z.read(f"edgeagent/configs/{name}") == (ROOT / "configs" / name).read_bytes(), name
        assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)
        assert "edgeagent/sdnotify.py" in names
        assert "edgeagent/py.typed" in names


def test_the_agent_itself_reports_ready_pings_the_watchdog_and_says_stopping(
    notify_socket: tuple[socket.socket, str], tmp_path: Path
) -> None:
    """``edgeagent run`` as systemd's Type=notify units start it: READY=1 once it listens, WATCHDOG=1
    from its event loop at half of WATCHDOG_USEC, STOPPING=1 on SIGTERM, exit 0."""
    import signal

    sock, addr = notify_socket
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
    env.update(NOTIFY_SOCKET=addr, WATCHDOG_USEC="400000", PYTHONPATH=str(ROOT))
    argv = [sys.executable, "-m", "edgeagent.cli", "run", "--state", str(tmp_path / "s"),
            "--listen", "ws://127.0.0.1:0", "--mdns", "off"]  # fmt: skip
    proc = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sock.settimeout(30.0)  # a cold start on a busy machine
    try:
        try:
            ready = sock.recv(4096)
        except TimeoutError:
            proc.kill()
            _, err = proc.communicate(timeout=10)
            raise AssertionError(f"no READY=1 from the agent: {err.decode(errors='replace')[-2000:]}") from None
        assert ready.startswith(b"READY=1\nSTATUS=device "), ready
        assert b"listening on ws://127.0.0.1:" in ready
        pings = [sock.recv(4096) for _ in range(3)]  # every 0.2 s
        assert set(pings) == {b"WATCHDOG=1"}
        proc.send_signal(signal.SIGTERM)
        for _ in range(50):  # pings may still come first
            if (msg := sock.recv(4096)).startswith(b"STOPPING=1"):
                break
        assert msg.startswith(b"STOPPING=1"), msg
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        proc.stderr.close()
