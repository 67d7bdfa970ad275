from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from streamer.heap import HeapTrimmer, jemalloc_library

JEMALLOC = jemalloc_library()
needs_jemalloc = pytest.mark.skipif(JEMALLOC is None, reason="jemalloc is not installed (apt-get install libjemalloc2)")


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


def serve_on_jemalloc(*options: str) -> bool:
    """Whether a ``streamer serve`` process (the whole program, as a user starts it) has jemalloc loaded
    once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "-v", "serve", "--port", "0", *options],
                            stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening on" in line:
                break
        with open(f"/proc/{proc.pid}/maps") as maps:
            return "libjemalloc" in maps.read()
    finally:
        proc.terminate()
        proc.wait(30)


@needs_jemalloc
def test_the_daemon_runs_on_jemalloc_where_it_is_installed() -> None:
    assert serve_on_jemalloc()


@needs_jemalloc  # without it installed there is no other malloc to keep it from
def test_the_daemon_keeps_the_c_librarys_malloc_when_told() -> None:
    assert not serve_on_jemalloc("--allocator", "system")


@needs_jemalloc
def test_a_process_on_jemalloc_does_not_trim_the_heap() -> None:
    code = "from streamer import heap; print(heap.running_on_jemalloc(), heap.HeapTrimmer().available)"
    env = {**os.environ, "LD_PRELOAD": str(JEMALLOC)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    assert out.split() == ["True", "False"]
