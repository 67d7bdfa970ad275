"""Keep a long-running daemon's heap flat: jemalloc where it is installed, else glibc with trims.

``streamer serve`` runs on jemalloc when the system has it (``use_jemalloc``: the process starts
itself again with it preloaded, before torch is imported; ``--allocator system`` keeps glibc's).
jemalloc returns freed pages by itself and fragments less: bench/load.py, 4 clients on 2 cores, RSS
peak 491-504 MiB against 565-599 MiB with glibc and trims every second. The price: a 30 s encoder pass
(a final decode's) runs ~10% slower on it (best of 10: 133-144 against 112-127 ms), and 6 saturated
clients got 5-10% fewer decodes (617-642 windows against 635-685, one run of three 510).

glibc keeps freed memory in its arenas. Inference allocates and frees multi-megabyte buffers of
varying size many times a second, and with glibc's adaptive mmap threshold they come from the heap,
whose free space then fragments: the daemon's RSS grew by 1.4 GiB/hour with 4 streams (bench/soak.py).
A fixed low mmap threshold keeps RSS flat but made inference ~30-40% slower (every buffer is
page-faulted afresh); ``malloc_trim(0)`` every few seconds keeps it flat, at the cost of faulting the pages
it hands back in again (``streaming.scheduler.default_trim_interval``: every second on the CPU).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


PRELOAD = "LD_PRELOAD"


def jemalloc_library() -> str | None:
    """The installed jemalloc's shared library (its soname, which the dynamic loader finds), or None."""
    if not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("jemalloc")
    return name if name and name.startswith("libjemalloc.so") else None


def running_on_jemalloc() -> bool:
    """This process's malloc is jemalloc's (it exports ``mallctl``)."""
    return hasattr(ctypes.CDLL(None), "mallctl")


def use_jemalloc(argv: list[str]) -> None:
    """Start this process again with jemalloc preloaded, if it is installed and not loaded already: does
    not return then. ``argv`` is the interpreter's whole command line (``sys.orig_argv``). Call it before
    any thread or file of the command's exists; it changes nothing where jemalloc is not installed (glibc
    and ``HeapTrimmer`` then)."""
    if running_on_jemalloc():
        log.info("malloc: jemalloc")
        return
    library = jemalloc_library()
    if library is None:
        log.info("jemalloc is not installed: glibc's malloc, with heap trims")
        return
    if library in os.environ.get(PRELOAD, "").split(":"):  # preloaded, and the loader could not: no loop
        log.warning("%s is in %s but not loaded: glibc's malloc, with heap trims", library, PRELOAD)
        return
    preload = ":".join(p for p in (os.environ.get(PRELOAD), library) if p)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, argv, {**os.environ, PRELOAD: preload})


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
        return None
    if running_on_jemalloc():  # glibc's trim would find nothing to give back
        log.debug("jemalloc returns freed memory itself: heap trimming is off")
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to trim
        log.debug("no malloc_trim in this libc: heap trimming is off")
        return None
    return trim


def trim_heap() -> bool:
    """Trim the heap now (after a start: loading, quantising and warming up free ~100 MB); False where
    the libc has no malloc_trim."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


class HeapTrimmer:
    """``maybe_trim()`` trims the heap when ``interval`` seconds have passed since the last trim.
    Call it from a thread that has just freed a lot (an inference worker, after a batch): any number of them."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.trims = 0
        self._clock = clock
        self._trim = _malloc_trim()
        self._last = clock()
        self._lock = threading.Lock()  # the workers' threads share the trimmer

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """True when it trimmed."""
        with self._lock:
            now = self._clock()
            if self._trim is None or now - self._last < self.interval:
                return False
            self._last = now
            self.trims += 1
        self._trim(0)
        return True
