"""Allocator tuning for long-running nodes (glibc only; a no-op elsewhere).

Relaying moves many 64-256 KiB buffers a second. glibc's defaults return such
blocks to the kernel as soon as they are freed (the top of the heap is trimmed
above 128 KiB; blocks above 128 KiB are mmap'ed), so the next buffer of the
same size page-faults afresh: measured here, 97 page faults and 5x the time
to encrypt and pack one 256 KiB frame. Keeping up to 64 MiB of freed memory
for reuse removes that. Set ``EDGEAGENT_MALLOC_TUNE=0`` to leave malloc alone.

What is kept is given back once the process is idle: a daemon thread looks every
``trim_every`` seconds (30) at the CPU time the process used meanwhile and, below 2%
of one core, calls ``malloc_trim(0)``, which returns the free pages of every arena to
the kernel. A busy relay is never trimmed; an idle one pays at most a few page faults
per buffer the next time it gets busy (once, not per frame). Measured on an idle
relay-only device: 1.6 MiB of RSS (the buffers of one link probe each way).

glibc is recognised by ``confstr(_CS_GNU_LIBC_VERSION)`` and ``mallopt`` is looked up in the
symbols the process already has (``dlopen(NULL)``): ``ctypes.util.find_library`` would run
``ldconfig -p`` in a subprocess (about 20 ms at every start) and import subprocess, tempfile
and shutil for it.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Final

__all__ = ["tune_malloc"]

_M_TRIM_THRESHOLD = -1
_M_TOP_PAD = -2
_M_MMAP_THRESHOLD = -3
#: below this share of one core's time over an interval, the process counts as idle
IDLE_CPU: Final = 0.02

_trimmer: threading.Thread | None = None


def tune_malloc(trim_every: float = 30.0) -> bool:
    """Apply the tuning to this process; returns True when glibc accepted it.

    With ``trim_every`` > 0 (and the tuning accepted) the idle trimmer starts too, once per process.
    """
    if os.environ.get("EDGEAGENT_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        if not os.confstr("CS_GNU_LIBC_VERSION"):
            return False
    except (ValueError, OSError):  # musl, bionic: not glibc (their mallopt, if any, takes other options)
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None)  # libc is linked into the interpreter: no search needed
        mallopt, malloc_trim = libc.mallopt, libc.malloc_trim
    except (ImportError, OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, 4 << 20) == 1
    ok &= mallopt(_M_TRIM_THRESHOLD, 64 << 20) == 1
    ok &= mallopt(_M_TOP_PAD, 4 << 20) == 1
    if ok and trim_every > 0:
        malloc_trim.argtypes = [ctypes.c_size_t]
        malloc_trim.restype = ctypes.c_int
        _start_trimmer(lambda: bool(malloc_trim(0)), trim_every)
    return bool(ok)


def _start_trimmer(trim: Callable[[], bool], every: float) -> None:
    global _trimmer
    if _trimmer is not None and _trimmer.is_alive():
        return
    _trimmer = threading.Thread(target=_trim_when_idle, args=(trim, every), name="edgeagent-malloc-trim", daemon=True)
    _trimmer.start()


def _trim_when_idle(trim: Callable[[], bool], every: float) -> None:
    """Every ``every`` seconds: ``trim()`` if the process used less than IDLE_CPU of a core meanwhile."""
    last = time.process_time()
    while True:
        time.sleep(every)
        now = time.process_time()
        if now - last < IDLE_CPU * every:
            trim()  # ctypes releases the GIL for the call
        last = time.process_time()
