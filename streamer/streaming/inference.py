"""Run window jobs of any number of streams through the batched engine: log-mel, encode, decode, align."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import torch

from streamer import SAMPLE_RATE
from streamer.decoding.decode import DecodingResult, detect_language
from streamer.engine import Engine, Request
from streamer.heap import trim_heap
from streamer.mel import HOP_LENGTH, N_FRAMES, log_mel_windows
from streamer.streaming.session import WindowJob

log = logging.getLogger(__name__)


@torch.inference_mode()
def run_windows(engine: Engine, jobs: Sequence[WindowJob]) -> list[DecodingResult]:
    """Decode each job's window (greedy or at its temperature, without timestamp tokens, with the timings
    of the words decoded after its prefix, placed after ``align_from``); the jobs of one call share
    encoder batches (one per length of the part computed, ``encoder_heard``) and the decoder's slot pool."""
    if not jobs:
        return []
    n_mels = engine.model.dims.n_mels
    features: list[torch.Tensor | None] = [None] * len(jobs)
    shapes: dict[int | None, list[int]] = {}  # one encoder batch per length of the part computed
    parts: list[int | None] = [None] * len(jobs)  # each window's part computed (the rest is the silence's)
    for i, job in enumerate(jobs):
        heard = None if job.encoder_heard is None else math.ceil(job.encoder_heard * SAMPLE_RATE / HOP_LENGTH / 2)
        parts[i] = heard if heard is not None and heard < N_FRAMES // 2 else None
        shapes.setdefault(parts[i], []).append(i)
    for heard, same in shapes.items():
        step = engine.encoder_rows(heard)  # on the CPU, the log-mel of only the windows encoded at once
        for group in (same[lo : lo + step] for lo in range(0, len(same), step)):
            audio = [jobs[i].audio for i in group]
            mels = log_mel_windows(audio, N_FRAMES, n_mels, engine.device)  # (b, n_mels, 3000)
            encoded = engine.encode(mels, heard=heard)  # (b, 1500, D)
            for i, row in zip(group, encoded, strict=True):
                features[i] = row
    languages = [job.language for job in jobs]
    unknown = [i for i, lang in enumerate(languages) if lang is None]
    if unknown:
        if engine.tokenizer.is_multilingual:
            for i in unknown:  # one at a time, first utterances only
                probs = detect_language(engine.model, engine.tokenizer, _ready(features[i])[None])[0]
                languages[i] = max(probs, key=probs.__getitem__)
        else:
            for i in unknown:
                languages[i] = "en"
    requests = [
        Request(
            _ready(features[i]), prompt=job.prompt, prefix=job.prefix, language=languages[i] or "en", task=job.task,
            temperature=job.temperature, timestamps=False, sample_len=job.sample_len, word_timestamps=True,
            n_frames=min(N_FRAMES, -(-len(job.audio) // HOP_LENGTH)), draft=job.draft,
            align_from=round(job.align_from * SAMPLE_RATE / HOP_LENGTH), beam_size=job.beam_size, heard=parts[i],
        )
        for i, job in enumerate(jobs)
    ]
    return engine.decode(requests)


def _ready(row: torch.Tensor | None) -> torch.Tensor:
    assert row is not None  # every job was encoded
    return row


def warm_up(engine: Engine) -> None:
    """Make the decode steps (CUDA graphs) and the window of silence, and run one short window through
    the engine: the first inference is slow (allocations, kernels). Then give the heap that loading and
    this freed back."""
    made = engine.prepare_steps()
    if made:
        log.info("made %d decode steps", made)
    engine.silence()
    run_windows(engine, [WindowJob(0, 0, np.zeros(SAMPLE_RATE, np.float32), (), (), "en", "transcribe", 0.0, 8, True)])
    trim_heap()
