from __future__ import annotations

import sys

import numpy as np
import pytest

from streamer.heap import HeapTrimmer


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_trims_once_per_interval() -> None:
    clock = Clock()
    heap = HeapTrimmer(interval=10.0, clock=clock)
    assert heap.available
    assert not heap.maybe_trim()
    clock.now += 10.0
    assert heap.maybe_trim()
    clock.now += 5.0
    assert not heap.maybe_trim()
    clock.now += 5.0
    assert heap.maybe_trim()
    assert heap.trims == 2


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_trim_returns_freed_heap_memory() -> None:
    # freeing a 4 MB mmapped block raises glibc's mmap threshold above it, as inference does; then
    # mid-sized blocks come from the heap, and a survivor at its top keeps it from shrinking by itself
    big = np.ones(500_000, dtype=np.float64)
    del big
    blocks = [np.ones(60_000, dtype=np.float64) for _ in range(400)]  # 400 x 480 kB
    keep = np.ones(60_000, dtype=np.float64)
    del blocks
    before = _rss_mib()
    clock = Clock()
    heap = HeapTrimmer(interval=0.0, clock=clock)
    assert heap.maybe_trim()
    assert _rss_mib() < before - 100
    assert keep.sum() == 60_000
