"""A stream session whose decodes run inline on an engine: the synchronous, single-stream driver.

``feed`` returns every event the audio makes due, decoding as needed before it returns, so a file can
be replayed as fast as the machine goes, with results that depend only on the audio and the chunking.
"""

from __future__ import annotations

import numpy as np

from streamer.engine import Engine
from streamer.streaming.events import Event
from streamer.streaming.inference import run_windows
from streamer.streaming.session import StreamConfig, StreamSession


class Transcriber:
    def __init__(self, engine: Engine, config: StreamConfig | None = None):
        self.engine = engine
        self.session = StreamSession(config)

    def _drain(self) -> list[Event]:
        events: list[Event] = []
        while (job := self.session.next_job()) is not None:
            events += self.session.complete(job, run_windows(self.engine, [job])[0])
        return events

    def feed(self, samples: np.ndarray) -> list[Event]:
        events = self.session.feed(samples)
        return events + self._drain()

    def finalize(self) -> list[Event]:
        """Commit everything heard so far."""
        self.session.finalize()
        return self._drain()

    def close(self) -> list[Event]:
        """End of stream: the last speech is decoded and committed."""
        events = self.session.flush()
        return events + self._drain()
