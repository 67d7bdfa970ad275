"""The benchmarks' speech: named sets of clips with human transcripts, joined into one program.

Sets: ``librivox`` (three Sense and Sensibility sentences), ``cards`` (five spoken card names), and the
long synthetic passages of bench/speechset.py, ``harbor``, ``garden`` and ``workshop`` (about 65 s each,
several sentences with 0.2-2 s pauses). ``program(["librivox", "cards"])`` joins their clips with a gap
of silence between clips; ``reference_words`` places every word of the program in time (offline word
alignment of each clip on its own), which the latency figures are measured from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.engine import Engine
from streamer.streaming.inference import run_windows
from streamer.streaming.session import StreamConfig, WindowJob
from streamer.textnorm import normalize

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
SETS = {
    "librivox": [FIXTURES / f"sense_and_sensibility_01_austen_64kb-08{n}0.wav" for n in (7, 8, 9)],
    "cards": [FIXTURES / f"00{n}.wav" for n in range(1, 6)],
    "harbor": [FIXTURES / "speech" / "harbor.wav"],
    "garden": [FIXTURES / "speech" / "garden.wav"],
    "workshop": [FIXTURES / "speech" / "workshop.wav"],
}
SYNTHETIC = ("harbor", "garden", "workshop")


def normalize_words(text: str) -> list[str]:
    return normalize(text).split()


def human_words(clip: Path) -> list[str]:
    """The human transcript of a clip, normalised."""
    txt = clip.with_suffix(".txt")
    if txt.exists():
        return normalize_words(txt.read_text())
    line = next(x for x in (FIXTURES / "cards.transcription").read_text().splitlines() if clip.stem in x)
    return normalize_words(re.sub(r"<.?s>|\(.*\)", "", line))


@dataclass
class RefWord:
    key: str  # normalised
    start: float  # seconds in the program
    end: float
    partial_seen: float | None = None  # when a client first showed it (seconds of the program's clock)
    final_seen: float | None = None


@dataclass
class Program:
    audio: np.ndarray  # 16 kHz float32
    clips: list[tuple[Path, float]]  # each clip and where it starts (seconds)

    @property
    def seconds(self) -> float:
        return len(self.audio) / SAMPLE_RATE

    def human(self) -> list[str]:
        return [w for clip, _ in self.clips for w in human_words(clip)]


def program(names: list[str], gap: float = 1.0) -> Program:
    """The clips of the named sets, in order, each followed by ``gap`` seconds of silence."""
    pieces, clips, offset = [], [], 0.0
    silence = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    for name in names:
        if name not in SETS:
            raise SystemExit(f"unknown speech set {name!r} (sets: {', '.join(SETS)})")
        for clip in SETS[name]:
            audio = load_audio(clip)
            clips.append((clip, offset))
            pieces += [audio, silence]
            offset += (len(audio) + len(silence)) / SAMPLE_RATE
    return Program(np.concatenate(pieces), clips)


def reference_words(engine: Engine, prog: Program) -> list[RefWord]:
    """Every word of the program in time: each clip decoded and aligned on its own (30 s at most)."""
    refs: list[RefWord] = []
    for clip, offset in prog.clips:
        audio = load_audio(clip)
        for start in range(0, len(audio), 30 * SAMPLE_RATE):
            piece = audio[start : start + 30 * SAMPLE_RATE]
            job = WindowJob(0, 0, piece, (), (), "en", "transcribe", 0.0, 224, True)
            for w in run_windows(engine, [job])[0].words or []:
                at = offset + start / SAMPLE_RATE
                refs += [RefWord(key, at + w.start, at + w.end) for key in normalize_words(w.word)]
    return refs


def mark_seen(refs: list[RefWord], word: str, start: float, now: float, final: bool) -> None:
    """A word (starting at ``start`` in the stream) shown at ``now``: the first matching reference word
    not yet seen (in a final, or in any hypothesis) records it."""
    for key in normalize_words(word):
        for r in refs:
            unseen = r.final_seen is None if final else r.partial_seen is None
            if r.key == key and abs(r.start - start) < 0.8 and unseen:
                if final:
                    r.final_seen = now
                if r.partial_seen is None:
                    r.partial_seen = now
                break


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def config_overrides(text: str) -> dict[str, Any]:
    """StreamConfig fields from "name=value,name=value" (None, booleans and numbers as the field's type)."""
    overrides: dict[str, Any] = {}
    for item in filter(None, text.split(",")):
        key, value = item.split("=")
        default = getattr(StreamConfig(), key)
        if value == "None":
            overrides[key] = None
        elif isinstance(default, bool):
            overrides[key] = value.lower() in ("1", "true", "yes")
        else:
            overrides[key] = type(default if default is not None else 0.0)(value)
    return overrides
