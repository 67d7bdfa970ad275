"""Five minutes of synthetic speech (espeak-ng) through one session: memory stays bounded."""

from __future__ import annotations

import shutil
import subprocess
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.streaming.events import Final
from streamer.streaming.session import StreamConfig
from streamer.streaming.transcriber import Transcriber

PASSAGE = (
    "The weather today is mild with a light wind from the west. "
    "Trains to the city leave every twenty minutes from the second platform. "
    "Please remember to bring your ticket and a valid form of identification. "
    "The museum opens at nine in the morning and closes at six in the evening. "
    "Our next meeting will discuss the budget for the coming year."
)


def speech(tmp_path: Path, minutes: float) -> np.ndarray:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "passage.wav"
    subprocess.run(["espeak-ng", "-s", "165", "-w", str(wav), PASSAGE], check=True)
    passage = load_audio(wav)
    pause = np.zeros(16000, dtype=np.float32)
    repeats = int(np.ceil(minutes * 60 * 16000 / (len(passage) + len(pause))))
    return np.concatenate([passage, pause] * repeats)[: int(minutes * 60 * 16000)]


@pytest.mark.slow
def test_five_minutes_of_speech_run_in_bounded_memory(engine, tmp_path):
    audio = speech(tmp_path, 5.0)
    # Decoding less often keeps the test short; the buffers are the same as with the defaults.
    transcriber = Transcriber(engine, StreamConfig(interval=2.0))
    session = transcriber.session
    chunk = 16000 // 10
    words = 0
    tracemalloc.start()
    try:
        used: dict[int, int] = {}
        for i in range(0, len(audio), chunk):
            for event in transcriber.feed(audio[i : i + chunk]):
                if isinstance(event, Final):
                    words += len(event.words)
            minute = (i + chunk) // (60 * 16000)
            if (i + chunk) % (60 * 16000) == 0:
                used[minute] = tracemalloc.get_traced_memory()[0]
        transcriber.close()
    finally:
        tracemalloc.stop()
    assert words > 5 * 100  # about 150 words a minute are spoken: it transcribed all along
    assert len(session.ring) <= session.ring.capacity
    assert len(session._context) <= session.config.prompt_tokens
    # Python-side memory after minute 5 is within 2 MB of minute 2 (audio buffers are preallocated).
    assert used[5] - used[2] < 2 * 2**20, used
