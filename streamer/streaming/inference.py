"""Run window jobs of any number of streams through the batched engine: log-mel, encode, decode, align."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from streamer.decoding.decode import DecodingResult, detect_language
from streamer.engine import Engine, Request
from streamer.mel import HOP_LENGTH, N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim
from streamer.streaming.session import WindowJob


@torch.inference_mode()
def run_windows(engine: Engine, jobs: Sequence[WindowJob]) -> list[DecodingResult]:
    """Decode each job's window (greedy or at its temperature, without timestamp tokens, with word
    timings); the jobs of one call share the encoder batch and the decoder's slot pool."""
    if not jobs:
        return []
    n_mels = engine.model.dims.n_mels
    mels = torch.stack(
        [pad_or_trim(log_mel_spectrogram(job.audio, n_mels, padding=N_SAMPLES), N_FRAMES) for job in jobs]
    )  # (B, n_mels, 3000)
    features = engine.encode(mels)  # (B, Ta, D)
    languages = [job.language for job in jobs]
    unknown = [i for i, lang in enumerate(languages) if lang is None]
    if unknown:
        if engine.tokenizer.is_multilingual:
            probs = detect_language(engine.model, engine.tokenizer, features[unknown])
            for i, p in zip(unknown, probs, strict=True):
                languages[i] = max(p, key=p.__getitem__)
        else:
            for i in unknown:
                languages[i] = "en"
    requests = [
        Request(
            features[i], prompt=job.prompt, prefix=job.prefix, language=languages[i] or "en", task=job.task,
            temperature=job.temperature, timestamps=False, sample_len=job.sample_len, word_timestamps=True,
            n_frames=min(N_FRAMES, -(-len(job.audio) // HOP_LENGTH)),
        )
        for i, job in enumerate(jobs)
    ]
    return engine.decode(requests)
