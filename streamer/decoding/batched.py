"""Batched long-form transcription: a file's speech cut at its pauses into windows of at most 30 s, and
the windows decoded together through the engine (its slot pool, and CUDA graphs on a GPU), as
faster-whisper's BatchedInferencePipeline and the Transformers chunked pipeline do.

Sequential transcription (``transcribe``) decodes one 30 s window after the other, each seeking to the
last timestamp of the one before and prompted with its text; here every window is independent (no
prompt), so ``batch_size`` of them are encoded and decoded at once. Windows begin and end in pauses that
webrtcvad finds, so no word is cut in two; audio in which it hears no voice is never decoded.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace

import numpy as np
import torch

from streamer import N_SAMPLES, SAMPLE_RATE
from streamer.decoding.decode import DecodingResult, detect_language
from streamer.decoding.transcribe import (
    Segment,
    TranscribeOptions,
    Transcript,
    is_silent,
    likeliest,
    needs_fallback,
    resets_prompt,
    split_segments,
)
from streamer.engine import Engine, Request
from streamer.mel import HOP_LENGTH, N_FRAMES, log_mel_windows
from streamer.voice import FRAME_SAMPLES, voiced_frames

PAD_FRAMES = 7  # 210 ms of audio kept on either side of a voiced run (webrtcvad clips soft onsets)
BRIDGE_FRAMES = 10  # pauses under 300 ms are inside a run (between words, not between phrases)
MIN_REST_VOICE = 0.5  # seconds of voice after a window's text that make its rest a window of its own


def speech_windows(
    audio: np.ndarray, max_samples: int = N_SAMPLES, voiced: np.ndarray | None = None
) -> list[tuple[int, int]]:
    """[start, end) sample ranges of at most ``max_samples`` that cover every voiced run of ``audio``,
    each beginning and ending in a pause (a run longer than a window is cut at its quietest 30 ms frame
    far enough in); in order, not overlapping. ``voiced``: the audio's ``voiced_frames``, if known."""
    runs = _runs(voiced_frames(audio) if voiced is None else voiced)
    windows: list[tuple[int, int]] = []
    for first, last in runs:  # frames [first, last)
        a = max(0, (first - PAD_FRAMES) * FRAME_SAMPLES)
        b = min(len(audio), (last + PAD_FRAMES) * FRAME_SAMPLES)
        if windows and windows[-1][1] > a:  # the padding of two runs meets: start where the last one ends
            a = windows[-1][1]
        if windows and b - windows[-1][0] <= max_samples:  # the run fits in the open window
            windows[-1] = (windows[-1][0], b)
            continue
        while b - a > max_samples:  # a run longer than a window: cut it where it is quietest
            cut = _quietest(audio, a + max_samples // 2, a + max_samples)
            windows.append((a, cut))
            a = cut
        windows.append((a, b))
    return windows


def _runs(voiced: np.ndarray) -> list[tuple[int, int]]:
    """Voiced runs as [first, last) frame ranges, pauses shorter than BRIDGE_FRAMES bridged."""
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(voiced):
        if runs and i - runs[-1][1] < BRIDGE_FRAMES:
            runs[-1] = (runs[-1][0], int(i) + 1)
        else:
            runs.append((int(i), int(i) + 1))
    return runs


def _quietest(audio: np.ndarray, lo: int, hi: int) -> int:
    """The start of the 30 ms frame of least energy in audio[lo:hi] (frame-aligned from lo)."""
    n = (hi - lo) // FRAME_SAMPLES
    frames = audio[lo : lo + n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)  # (n, 480)
    return lo + int(np.argmin((frames * frames).sum(axis=1))) * FRAME_SAMPLES


@torch.inference_mode()
def transcribe_batched(
    engine: Engine,
    audio: np.ndarray,
    options: TranscribeOptions | None = None,
    batch_size: int = 16,
    progress: Callable[[float, float], None] | None = None,
) -> Transcript:
    """Transcribe 16 kHz mono audio of any length in batches of ``batch_size`` windows (greedy, with
    timestamps; a window whose text fails Whisper's checks is decoded again at the next temperature).
    The windows are cut into ``batch_size`` chains of consecutive windows, and a batch decodes the next
    window of each chain, prompted with the text its chain has so far, as sequential decoding prompts a
    window with the text before it (``condition_on_previous_text``). ``progress(done_s, total_s)`` is
    called after each batch, with the seconds of the windows decoded so far, scaled to the audio's."""
    if options is not None and options.decoding.beam_size is not None:
        raise ValueError("batched transcription decodes greedily (no beam search)")
    options = options or TranscribeOptions()
    tokenizer = engine.tokenizer
    duration = len(audio) / SAMPLE_RATE
    voiced = voiced_frames(audio)
    windows = speech_windows(audio, voiced=voiced)
    chains = [deque(chain) for chain in _chains(windows, batch_size)]
    total = sum(end - start for start, end in windows)
    done = 0
    n_mels = engine.model.dims.n_mels
    decoding = options.decoding
    language = decoding.language
    prompt = list(tokenizer.encode(" " + options.initial_prompt.strip())) if options.initial_prompt else []
    context = [list(prompt) for _ in chains]  # each chain's prompt for its next window
    segments: list[Segment] = []
    while active := [i for i, chain in enumerate(chains) if chain]:
        batch = [chains[i].popleft() for i in active]
        mels = log_mel_windows([audio[s:e] for s, e in batch], N_FRAMES, n_mels, engine.device)  # (k, n_mels, 3000)
        features = engine.encode(mels)  # (k, 1500, D)
        if language is None:
            language = "en"
            if tokenizer.is_multilingual:
                probs = detect_language(engine.model, tokenizer, features[:1])[0]
                language = max(probs, key=probs.__getitem__)
        requests = [
            Request(
                row, prompt=tuple(context[i]), language=language, task=decoding.task, timestamps=True,
                sample_len=decoding.sample_len or engine.model.dims.n_text_ctx // 2,
            )
            for i, row in zip(active, features, strict=True)
        ]
        results = _decode_with_fallback(engine, requests, options)
        for i, (start, end), result in zip(active, batch, results, strict=True):
            done += end - start
            if is_silent(result, options):
                continue
            pieces, _ = split_segments(result.tokens, tokenizer, start / SAMPLE_RATE, -(-(end - start) // HOP_LENGTH))
            heard = [p for p in pieces if tokenizer.decode(p[2]).strip()]
            for a, z, piece in heard:
                z = min(z, end / SAMPLE_RATE)  # Whisper may place the last timestamp past the audio
                if a < z:
                    segments.append(
                        Segment(
                            start=a, end=z, text=tokenizer.decode(piece), tokens=piece,
                            avg_logprob=result.avg_logprob, no_speech_prob=result.no_speech_prob,
                            temperature=result.temperature, compression_ratio=result.compression_ratio,
                        )
                    )
                    context[i].extend(piece)
            if resets_prompt(result, options):
                context[i] = []
            # The model may end a window's text before its last phrase (or run out of tokens): what the
            # VAD hears after the last timestamp is decoded again, next in its chain, as sequential
            # decoding seeks to it.
            rest = int(heard[-1][1] * SAMPLE_RATE) if heard else end
            if start + SAMPLE_RATE <= rest < end and _voiced_seconds(voiced, rest, end) >= MIN_REST_VOICE:
                chains[i].appendleft((rest, end))
                done -= end - rest
        if progress:
            progress(duration if done >= total else duration * done / total, duration)
    if progress and not windows:
        progress(duration, duration)
    segments.sort(key=lambda s: s.start)
    text = tokenizer.decode([t for s in segments for t in s.tokens])
    return Transcript(text=text.strip(), language=language or "en", segments=segments, duration=duration)


def _chains(windows: list[tuple[int, int]], n: int) -> list[list[tuple[int, int]]]:
    """``windows`` in at most ``n`` runs of consecutive windows, as even in number as they divide."""
    n = min(n, len(windows))
    if n < 1:
        return []
    size, extra = divmod(len(windows), n)
    bounds = [i * size + min(i, extra) for i in range(n + 1)]
    return [windows[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


def _voiced_seconds(voiced: np.ndarray, a: int, b: int) -> float:
    return float(voiced[a // FRAME_SAMPLES : b // FRAME_SAMPLES].sum()) * FRAME_SAMPLES / SAMPLE_RATE


def _decode_with_fallback(engine: Engine, requests: list[Request], options: TranscribeOptions) -> list[DecodingResult]:
    """Decode the requests together; those whose text is repetitive or improbable are decoded again, together,
    at each higher temperature until they pass (when none passes, the ``likeliest`` attempt is kept)."""
    attempts: list[list[DecodingResult]] = [[r] for r in engine.decode(requests)]
    retry = [i for i, tries in enumerate(attempts) if needs_fallback(tries[-1], options)]
    for t in options.temperatures[1:]:
        if not retry:
            break
        again = engine.decode([replace(requests[i], temperature=t) for i in retry])
        for i, r in zip(retry, again, strict=True):
            attempts[i].append(r)
        retry = [i for i in retry if needs_fallback(attempts[i][-1], options)]
    failed = set(retry)
    return [likeliest(tries, options) if i in failed else tries[-1] for i, tries in enumerate(attempts)]
