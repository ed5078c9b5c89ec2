"""What every network probe shares: kinds, results, file and command access.

Probes are pure apart from two narrow doors, both injectable so tests run
against fake trees and fake executables:

- :class:`Fs` reads files and asks whether a directory exists (sysfs, procfs);
- :class:`Runner` runs a command with a timeout and never raises.

A probe answers with a :class:`ProbeResult`. ``kind is None`` means "this probe
could not tell"; its ``evidence`` then says why (tool missing, permission
denied, bad output...). Probes never raise: anything unexpected becomes an
abstaining result.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol, runtime_checkable

__all__ = [
    "DEFAULT_TIMEOUT",
    "KINDS",
    "CommandResult",
    "Fs",
    "Kind",
    "Probe",
    "ProbeResult",
    "RealFs",
    "Runner",
    "SubprocessRunner",
    "abstain",
    "os_error_text",
    "safe_run",
]

#: what a network is, as told to peers (PeerRecord.network_kind, Hello.network_kind)
Kind = Literal["wifi", "ethernet", "cellular", "loopback", "unknown"]
KINDS: Final[tuple[Kind, ...]] = ("wifi", "ethernet", "cellular", "loopback", "unknown")

#: seconds any probe command may run before it is killed
DEFAULT_TIMEOUT: Final = 2.0

#: most bytes of a command's output that are kept (the rest is dropped)
_MAX_OUTPUT: Final = 256 * 1024


@dataclass(frozen=True)
class ProbeResult:
    """One probe's answer about one interface.

    ``kind``: the network kind, or None when this probe cannot tell.
    ``metered``: True/False when the probe knows, None when it does not.
    ``evidence``: a short human string: what it saw, or why it had nothing.
    """

    kind: Kind | None
    metered: bool | None
    evidence: str

    @property
    def decided(self) -> bool:
        """True when this result names a kind."""
        return self.kind is not None


def abstain(evidence: str) -> ProbeResult:
    """A result that decides nothing, with the reason."""
    return ProbeResult(None, None, evidence)


@runtime_checkable
class Probe(Protocol):
    """One way of finding out what network an interface is on.

    ``iface`` is the interface carrying the default route, or None when that
    is unknown (Android blocks /proc/net). ``probe`` never raises.
    """

    name: str

    def probe(self, iface: str | None) -> ProbeResult: ...


def os_error_text(exc: OSError) -> str:
    """``permission denied``, ``not found``... from an OSError, without the path."""
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "not found"
    return (exc.strerror or type(exc).__name__).lower()


class Fs(Protocol):
    """The file access probes need (sysfs, procfs). Methods may raise OSError."""

    def read_text(self, path: Path) -> str: ...

    def is_dir(self, path: Path) -> bool:
        """True for a directory, False when missing; PermissionError when not allowed to look."""
        ...

    def exists(self, path: Path) -> bool:
        """True when the path exists (following symlinks); PermissionError when not allowed to look."""
        ...


class RealFs:
    """The machine's file system. Small reads only (sysfs and procfs files)."""

    max_bytes: int = 1 << 20

    def read_text(self, path: Path) -> str:
        with open(path, "rb") as f:
            return f.read(self.max_bytes).decode("utf-8", errors="replace")

    def is_dir(self, path: Path) -> bool:
        try:
            return stat.S_ISDIR(os.stat(path).st_mode)
        except (FileNotFoundError, NotADirectoryError):
            return False

    def exists(self, path: Path) -> bool:
        try:
            os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return False
        return True


@dataclass(frozen=True)
class CommandResult:
    """What running one command gave: its output, or why there is none.

    ``error`` is None on success (exit status 0); otherwise it says what went
    wrong in a few words ("not found on PATH", "timed out after 2.0 s",
    "exit 8: Error: NetworkManager is not running.").
    """

    argv: tuple[str, ...]
    stdout: str = ""
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def timed_out(self) -> bool:
        return self.error is not None and self.error.startswith("timed out")


class Runner(Protocol):
    """Runs probe commands. ``run`` never raises; ``which`` says whether a tool exists."""

    def which(self, name: str) -> str | None: ...

    def run(self, argv: Sequence[str]) -> CommandResult: ...


class SubprocessRunner:
    """Runs commands as child processes, each with a hard timeout.

    ``path`` is where executables are looked up (``os.pathsep``-separated, like
    PATH; None: this process's PATH). The child runs in its own session, so on
    timeout the whole process group is killed (a shell script's ``sleep`` too).
    The child's environment is this process's (or ``env``) with ``LC_ALL=C``,
    because nmcli translates its output otherwise.
    """

    def __init__(
        self, path: str | None = None, timeout: float = DEFAULT_TIMEOUT, env: Mapping[str, str] | None = None
    ) -> None:
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self.path = path
        self.timeout = timeout
        self.env = env

    def which(self, name: str) -> str | None:
        try:
            return shutil.which(name, path=self.path)
        except OSError:  # pragma: no cover - which() swallows most of these itself
            return None

    def _child_env(self) -> dict[str, str]:
        env = dict(os.environ if self.env is None else self.env)
        env["LC_ALL"] = "C"
        env["LANG"] = "C"
        env.pop("LANGUAGE", None)
        return env

    def run(self, argv: Sequence[str]) -> CommandResult:
        args = tuple(argv)
        name = args[0]
        exe = self.which(name)
        if exe is None:
            return CommandResult(args, error="not found on PATH")
        try:
            proc = subprocess.Popen(
                [exe, *args[1:]],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=self._child_env(),
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            return CommandResult(args, error=f"cannot run: {os_error_text(exc)}")
        try:
            out, err = proc.communicate(timeout=self.timeout)
        except subprocess.TimeoutExpired:
            _kill(proc)
            return CommandResult(args, error=f"timed out after {self.timeout:g} s")
        except BaseException:
            _kill(proc)
            raise
        text = out[:_MAX_OUTPUT].decode("utf-8", errors="replace")
        if proc.returncode != 0:
            detail = err[:400].decode("utf-8", errors="replace").strip().splitlines()
            why = f"exit {proc.returncode}" if proc.returncode > 0 else f"killed by signal {-proc.returncode}"
            return CommandResult(args, stdout=text, error=f"{why}: {detail[0]}" if detail else why)
        return CommandResult(args, stdout=text)


def _kill(proc: subprocess.Popen[bytes]) -> None:
    """Kill the child's whole process group and reap it, without waiting on stray pipe holders."""
    if hasattr(os, "killpg"):
        with contextlib.suppress(OSError):
            os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(OSError):
        proc.kill()
    try:
        proc.communicate(timeout=1.0)
    except (subprocess.TimeoutExpired, OSError, ValueError):
        # something outside the group still holds the pipes: stop reading them
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        with contextlib.suppress(subprocess.TimeoutExpired, OSError):
            proc.wait(timeout=1.0)


def safe_run(runner: Runner, argv: Sequence[str]) -> CommandResult:
    """``runner.run(argv)``, turning any exception from a custom runner into an error result."""
    try:
        return runner.run(argv)
    except OSError as exc:
        return CommandResult(tuple(argv), error=os_error_text(exc))
    except Exception as exc:
        return CommandResult(tuple(argv), error=f"{type(exc).__name__}: {exc}")
