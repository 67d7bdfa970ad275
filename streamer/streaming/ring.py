"""A ring buffer of 16 kHz float32 audio addressed by absolute sample index, growing to its capacity.

Stream time never resets: sample ``i`` keeps index ``i`` however much has been trimmed before it.
Every sample is stored twice (at ``i % size`` and ``i % size + size``), so any retained span is one
contiguous slice: ``view`` never copies.

The storage starts at ``initial`` samples and doubles (up to ``capacity``) only when the retained audio
needs it, so a session holds memory for the audio it keeps, not for the most it may keep: a daemon's
hundreds of sessions each touching 60 s of fresh pages cost page faults on every frame and gigabytes
of RSS. A view made before a growth keeps the samples it saw (the old storage is never written again).
"""

from __future__ import annotations

import numpy as np


class BufferFull(Exception):
    """Appending would exceed the capacity: the owner must trim (commit) first."""


class RingBuffer:
    def __init__(self, capacity: int, initial: int | None = None):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._size = max(1, min(capacity, initial or capacity))  # samples the storage holds now
        self._data = np.zeros(2 * self._size, dtype=np.float32)
        self.start = 0  # absolute index of the oldest retained sample
        self.end = 0  # absolute index one past the newest sample

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def free(self) -> int:
        return self.capacity - len(self)

    @property
    def size(self) -> int:
        """Samples the storage has room for now (at most ``capacity``)."""
        return self._size

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n > self.free:
            raise BufferFull(f"{n} samples do not fit ({self.free} free of {self.capacity})")
        if len(self) + n > self._size:
            self._grow(len(self) + n)
        self._write(self.end, samples)
        self.end += n

    def _write(self, at: int, samples: np.ndarray) -> None:
        """Store samples from absolute index ``at`` in both copies."""
        n, size = len(samples), self._size
        pos = at % size
        first = min(n, size - pos)
        for base in (0, size):
            self._data[base + pos : base + pos + first] = samples[:first]
        if n > first:  # wrapped: the rest goes to the start of both copies
            for base in (0, size):
                self._data[base : base + n - first] = samples[first:]

    def _grow(self, need: int) -> None:
        """New storage of at least ``need`` samples (doubling, at most ``capacity``), the retained audio
        moved into it."""
        kept = self.view(self.start, self.end)
        size = self._size
        while size < need:
            size *= 2
        self._size = min(size, self.capacity)
        self._data = np.zeros(2 * self._size, dtype=np.float32)
        self._write(self.start, kept)

    def view(self, start: int, end: int) -> np.ndarray:
        """Read-only samples [start, end) by absolute index, without copying."""
        if not self.start <= start <= end <= self.end:
            raise IndexError(f"[{start}, {end}) is outside the retained [{self.start}, {self.end})")
        pos = start % self._size
        out = self._data[pos : pos + (end - start)]
        out.flags.writeable = False
        return out

    def trim(self, upto: int) -> None:
        """Forget every sample before absolute index ``upto``."""
        if not self.start <= upto <= self.end:
            raise IndexError(f"cannot trim to {upto}: retained [{self.start}, {self.end})")
        self.start = upto
