"""Word timestamps for an offline transcript: its segments, grouped into windows of at most 30 s, are
aligned against their window's audio (``alignment.align``, the same cross-attention DTW that places the
words of a live stream)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from streamer import SAMPLE_RATE
from streamer.decoding.alignment import AlignRow, align
from streamer.decoding.transcribe import Segment
from streamer.mel import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from streamer.model.whisper import Whisper
from streamer.tokenizer import Tokenizer

WINDOW = N_SAMPLES / SAMPLE_RATE  # 30 s


@dataclass(frozen=True)
class Word:
    word: str  # without its leading space
    start: float  # seconds from the start of the audio
    end: float
    probability: float


def windows(segments: Sequence[Segment]) -> list[list[Segment]]:
    """Consecutive segments, grouped so that each group spans at most 30 s from its first start."""
    groups: list[list[Segment]] = []
    for segment in segments:
        if groups and segment.end - groups[-1][0].start <= WINDOW:
            groups[-1].append(segment)
        else:
            groups.append([segment])
    return groups


@torch.inference_mode()
def word_timestamps(
    model: Whisper, tokenizer: Tokenizer, audio: np.ndarray, segments: Sequence[Segment], language: str = "en",
    task: str = "transcribe",
) -> list[Word]:
    """Every word of ``segments`` with its start and end in ``audio`` (16 kHz mono)."""
    words: list[Word] = []
    for group in windows([s for s in segments if s.tokens]):
        offset = group[0].start
        first = int(offset * SAMPLE_RATE)
        mel = log_mel_spectrogram(audio[first : first + N_SAMPLES], model.dims.n_mels, device=model.device)
        n_frames = min(N_FRAMES, mel.shape[-1])
        features = model.encoder(pad_or_trim(mel, N_FRAMES)[None].to(model.dtype))  # (1, Ta, D)
        cache = model.decoder.new_cache(1, features.shape[1])
        model.decoder.set_audio(features, cache)
        tokens = tuple(t for s in group for t in s.tokens)
        row = AlignRow(tokens, n_frames, language, task)
        for timing in align(model, tokenizer, cache, [row])[0]:
            text = timing.word.strip()
            if text:
                words.append(Word(text, round(offset + timing.start, 3), round(offset + timing.end, 3),
                                  timing.probability))
    return words
