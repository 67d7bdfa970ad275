"""Give freed heap memory back to the system, so a long-running daemon's RSS stays flat.

glibc keeps freed memory in its arenas. Inference allocates and frees multi-megabyte buffers of
varying size many times a second, and with glibc's adaptive mmap threshold they come from the heap,
whose free space then fragments: the daemon's RSS grew by 1.4 GiB/hour with 4 streams (bench/soak.py).
A fixed low mmap threshold keeps RSS flat but made inference ~30-40% slower (every buffer is
page-faulted afresh); ``malloc_trim(0)`` every few seconds keeps it flat, at the cost of faulting the pages
it hands back in again (``streaming.scheduler.default_trim_interval``: every second on the CPU).
"""

from __future__ import annotations

import ctypes
import logging
import sys
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


def _malloc_trim() -> Callable[[int], int] | None:
    if not sys.platform.startswith("linux"):
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
    Call it from a thread that has just freed a lot (the inference thread, after a batch)."""

    def __init__(self, interval: float = 10.0, clock: Callable[[], float] = time.monotonic):
        self.interval = interval
        self.trims = 0
        self._clock = clock
        self._trim = _malloc_trim()
        self._last = clock()

    @property
    def available(self) -> bool:
        return self._trim is not None

    def maybe_trim(self) -> bool:
        """True when it trimmed."""
        now = self._clock()
        if self._trim is None or now - self._last < self.interval:
            return False
        self._last = now
        self._trim(0)
        self.trims += 1
        return True
