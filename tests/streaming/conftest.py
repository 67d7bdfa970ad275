from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.streaming.events import Event, Final, Partial
from streamer.streaming.transcriber import Transcriber
from tests.conftest import FIXTURES

SENSE = [FIXTURES / f"sense_and_sensibility_01_austen_64kb-08{n}0.wav" for n in (7, 8, 9)]


def joined(paths: list[Path], gap: float = 1.0) -> np.ndarray:
    silence = np.zeros(int(gap * 16000), dtype=np.float32)
    return np.concatenate([x for p in paths for x in (load_audio(p), silence)])


def stream_inline(engine, audio: np.ndarray, config=None, chunk: int = 1600) -> list[Event]:
    """Every event of ``audio`` streamed through one session decoding inline, in chunks, to its end."""
    t = Transcriber(engine, config)
    events: list[Event] = []
    for i in range(0, len(audio), chunk):
        events += t.feed(audio[i : i + chunk])
    return events + t.close()


def final_text(events: list[Event]) -> str:
    return " ".join(e.text for e in events if isinstance(e, Final))


def words_of(events: list[Event]) -> list[str]:
    return [w.word for e in events if isinstance(e, Partial | Final) for w in e.words]


def sox(tmp_path: Path, name: str, *effect: str) -> np.ndarray:
    if shutil.which("sox") is None:
        pytest.skip("sox is not installed (apt-get install sox)")
    out = tmp_path / f"{name}.wav"
    subprocess.run(["sox", "-R", "-n", "-r", "16000", "-c", "1", "-b", "16", str(out), *effect], check=True)
    return load_audio(out)
