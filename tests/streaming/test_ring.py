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


def test_storage_grows_only_when_the_retained_audio_needs_it() -> None:
    ring = RingBuffer(100, initial=8)
    stream = np.arange(60, dtype=np.float32)
    for at in range(0, 40, 5):  # 5 samples in, all but 3 trimmed: 8 samples of storage go round
        ring.append(stream[at : at + 5])
        ring.trim(ring.end - 3)
    assert ring.size == 8
    ring.append(stream[40:50])  # 13 retained: the storage doubles to 16
    assert ring.size == 16
    np.testing.assert_array_equal(ring.view(ring.start, ring.end), stream[37:50])
    ring.append(stream[50:60])  # 23 retained: 32
    assert ring.size == 32
    np.testing.assert_array_equal(ring.view(ring.start, ring.end), stream[37:60])


def test_growth_stops_at_the_capacity() -> None:
    ring = RingBuffer(12, initial=5)
    ring.append(np.arange(12, dtype=np.float32))
    assert ring.size == 12
    with pytest.raises(BufferFull):
        ring.append(np.ones(1, dtype=np.float32))
    np.testing.assert_array_equal(ring.view(0, 12), np.arange(12))


def test_a_view_keeps_its_samples_when_the_storage_grows() -> None:
    ring = RingBuffer(64, initial=4)
    ring.append(np.arange(4, dtype=np.float32))
    view = ring.view(0, 4)
    ring.append(np.arange(4, 20, dtype=np.float32))  # grows to 32 and goes on writing there
    np.testing.assert_array_equal(view, np.arange(4))
    np.testing.assert_array_equal(ring.view(0, 20), np.arange(20))
