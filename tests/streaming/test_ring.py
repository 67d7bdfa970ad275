from __future__ import annotations

import numpy as np
import pytest

from streamer.streaming.ring import BufferFull, RingBuffer


def test_wraps_and_keeps_absolute_indices() -> None:
    ring = RingBuffer(10)
    stream = np.arange(35, dtype=np.float32)
    written = 0
    for size in (4, 3, 3, 5, 7, 6, 7):  # trimming as it goes, so it wraps several times
        ring.append(stream[written : written + size])
        written += size
        np.testing.assert_array_equal(ring.view(ring.start, ring.end), stream[ring.start : ring.end])
        ring.trim(max(ring.start, written - 3))
    assert ring.end == 35 and ring.start == 32
    np.testing.assert_array_equal(ring.view(33, 35), [33, 34])


def test_view_does_not_copy_and_is_read_only() -> None:
    ring = RingBuffer(8)
    ring.append(np.arange(6, dtype=np.float32))
    ring.trim(4)
    ring.append(np.arange(6, 12, dtype=np.float32))  # wraps
    view = ring.view(5, 11)
    assert np.shares_memory(view, ring._data)
    with pytest.raises(ValueError):
        view[0] = 1.0
    np.testing.assert_array_equal(view, np.arange(5, 11))


def test_bounded_append_refuses_overflow_rather_than_dropping() -> None:
    ring = RingBuffer(5)
    ring.append(np.ones(4, dtype=np.float32))
    with pytest.raises(BufferFull, match="2 samples do not fit"):
        ring.append(np.ones(2, dtype=np.float32))
    assert len(ring) == 4


def test_views_outside_the_retained_span_are_errors() -> None:
    ring = RingBuffer(5)
    ring.append(np.ones(5, dtype=np.float32))
    ring.trim(2)
    with pytest.raises(IndexError):
        ring.view(1, 3)
    with pytest.raises(IndexError):
        ring.view(3, 6)
