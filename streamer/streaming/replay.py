"""Replaying audio through the streaming engine, paced like a live source (or as fast as possible)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import numpy as np

from streamer import SAMPLE_RATE
from streamer.engine import Engine
from streamer.errors import StreamerError
from streamer.streaming.events import Event
from streamer.streaming.live import LiveStream
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig
from streamer.streaming.transcriber import Transcriber

CHUNK = SAMPLE_RATE // 10  # 100 ms pieces, like a capture callback


def _pieces(chunks: Iterable[np.ndarray]) -> Iterable[np.ndarray]:
    for chunk in chunks:
        for i in range(0, len(chunk), CHUNK):
            yield chunk[i : i + CHUNK]


def replay(
    chunks: Iterable[np.ndarray],
    engine: Engine,
    write: Callable[[list[Event]], None],
    config: StreamConfig | None = None,
    speed: float = 1.0,
) -> None:
    """Feed ``chunks`` (16 kHz float32) at ``speed`` times real time, writing events as they happen.

    At speed 0 every decode runs inline as soon as it is due: the output depends on the audio alone.
    Otherwise decodes run on an inference thread while audio keeps arriving, as in a live session.
    """
    if speed <= 0:
        transcriber = Transcriber(engine, config)
        for piece in _pieces(chunks):
            write(transcriber.feed(piece))
        write(transcriber.close())
        return
    scheduler = Scheduler(engine)
    stream = LiveStream(scheduler, write, config)
    try:
        began = time.monotonic()
        fed = 0
        for piece in _pieces(chunks):
            delay = began + fed / SAMPLE_RATE / speed - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # pacing to the audio clock, not polling
            stream.feed(piece)
            fed += len(piece)
            if stream.failed is not None:
                break
        stream.end()
        stream.wait()
    finally:
        scheduler.close()
    if stream.failed is not None:
        raise StreamerError(f"transcription failed: {stream.failed}") from stream.failed
