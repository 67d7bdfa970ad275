"""A preallocated ring buffer of 16 kHz float32 audio addressed by absolute sample index.

Stream time never resets: sample ``i`` keeps index ``i`` however much has been trimmed before it.
Every sample is stored twice (at ``i % capacity`` and ``i % capacity + capacity``), so any retained
span is one contiguous slice: ``view`` never copies.
"""

from __future__ import annotations

import numpy as np


class BufferFull(Exception):
    """Appending would exceed the capacity: the owner must trim (commit) first."""


class RingBuffer:
    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("capacity must be positive")
        self.capacity = capacity
        self._data = np.zeros(2 * capacity, dtype=np.float32)
        self.start = 0  # absolute index of the oldest retained sample
        self.end = 0  # absolute index one past the newest sample

    def __len__(self) -> int:
        return self.end - self.start

    @property
    def free(self) -> int:
        return self.capacity - len(self)

    def append(self, samples: np.ndarray) -> None:
        n = len(samples)
        if n > self.free:
            raise BufferFull(f"{n} samples do not fit ({self.free} free of {self.capacity})")
        pos = self.end % self.capacity
        first = min(n, self.capacity - pos)
        for base in (0, self.capacity):
            self._data[base + pos : base + pos + first] = samples[:first]
        if n > first:  # wrapped: the rest goes to the start of both copies
            for base in (0, self.capacity):
                self._data[base : base + n - first] = samples[first:]
        self.end += n

    def view(self, start: int, end: int) -> np.ndarray:
        """Read-only samples [start, end) by absolute index, without copying."""
        if not self.start <= start <= end <= self.end:
            raise IndexError(f"[{start}, {end}) is outside the retained [{self.start}, {self.end})")
        pos = start % self.capacity
        out = self._data[pos : pos + (end - start)]
        out.flags.writeable = False
        return out

    def trim(self, upto: int) -> None:
        """Forget every sample before absolute index ``upto``."""
        if not self.start <= upto <= self.end:
            raise IndexError(f"cannot trim to {upto}: retained [{self.start}, {self.end})")
        self.start = upto
