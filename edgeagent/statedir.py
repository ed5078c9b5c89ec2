"""The state directory: made 0700, refused when another user owns it or others may write it, and
locked by the node that runs on it (a second node on the same directory is refused).

The directory holds the node's key, its control socket and its payloads: a directory someone else
can write lets them plant a key, swap the socket or redirect a file through a symlink.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import stat
from pathlib import Path

from .exceptions import ConfigError
from .wire.nodeid import NodeId

__all__ = ["DOMAIN_PIN", "LOCK_FILE", "StateLock", "domain_pin", "pin_domain", "prepare", "write_private"]

LOCK_FILE = "lock"


def prepare(path: Path) -> Path:
    """Create ``path`` (mode 0700) if missing; refuse a file, another user's directory or a writable one."""
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise ConfigError(f"state {path} is not a directory; choose a directory with --state DIR") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot create state directory {path}: {exc.strerror}; choose another with --state DIR"
        ) from None
    try:
        st = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise ConfigError(f"state {path} is not a directory; choose a directory with --state DIR")
    if st.st_uid != os.getuid():
        raise ConfigError(
            f"state directory {path} belongs to uid {st.st_uid}, not to you (uid {os.getuid()}); "
            "use a directory of your own with --state DIR"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise ConfigError(
            f"state directory {path} is writable by others (mode {stat.S_IMODE(st.st_mode):o}); run `chmod 700 {path}`"
        )
    return path


def write_private(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` (mode 0600) without following a symlink planted there."""
    tmp = path.with_name(f".{path.name}.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)  # renames over a symlink itself, never through it


class StateLock:
    """An exclusive ``flock`` on ``<state>/lock`` holding the running node's pid (released when it stops
    or dies: the kernel drops the lock with the process)."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.path = state_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise ConfigError(f"cannot open the lock file {self.path}: {exc.strerror}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise ConfigError(
                f"another node (pid {pid}) is running with state {self.state_dir}; stop it, or use another --state DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


DOMAIN_PIN = "domain.pin"


def domain_pin(state_dir: Path) -> NodeId | None:
    """The NodeId this node's domain had when it first linked (trust on first use, as ssh's known_hosts)."""
    try:
        text = (state_dir / DOMAIN_PIN).read_text(encoding="ascii").split()
    except (OSError, UnicodeDecodeError):
        return None
    try:
        return NodeId.parse(text[0]) if text else None
    except ValueError:
        raise ConfigError(f"{state_dir / DOMAIN_PIN} is not a NodeId; delete it to pin the domain anew") from None


def pin_domain(state_dir: Path, node_id: NodeId, url: str) -> None:
    """Remember the domain's NodeId (once: a pin is never replaced by a link, only by deleting it)."""
    if not (state_dir / DOMAIN_PIN).exists():
        write_private(state_dir / DOMAIN_PIN, f"{node_id} {url}\n".encode())
