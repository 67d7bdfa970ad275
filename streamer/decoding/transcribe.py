"""Long-form transcription: consecutive 30 s windows, each seeking to its last complete timestamp.

Per window: encode once, decode with temperature fallback (compression ratio and mean log-probability
checks), skip windows judged silent (no-speech probability with a low log-probability), split the
tokens into timestamped segments and condition the next window on the text so far.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from streamer import SAMPLE_RATE
from streamer.decoding.decode import DecodingOptions, DecodingResult, decode_features, detect_language
from streamer.mel import HOP_LENGTH, N_FRAMES, N_SAMPLES, TIME_PER_TOKEN, log_mel_spectrogram, pad_or_trim
from streamer.model.whisper import Whisper
from streamer.tokenizer import Tokenizer
from streamer.voice import voiced_seconds

TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)


@dataclass(frozen=True)
class TranscribeOptions:
    decoding: DecodingOptions = DecodingOptions()
    temperatures: tuple[float, ...] = TEMPERATURES
    best_of: int | None = 5  # samples per fallback temperature
    compression_ratio_threshold: float | None = 2.4
    logprob_threshold: float | None = -1.0
    no_speech_threshold: float | None = 0.6
    condition_on_previous_text: bool = True
    initial_prompt: str | None = None
    # Beyond Whisper's own checks: a window in which webrtcvad hears less than this much speech is
    # skipped, so silence and faint noise never reach the decoder (which invents text on them).
    min_voiced_seconds: float | None = 0.15
    # A window whose text ends (on a lone timestamp, which Whisper reads as "no speech after") before this
    # much speech that webrtcvad hears is decoded again from its last timestamp rather than skipped:
    # tiny.en int8 ended a window after its first sentence (garden's last), and the 27 s of workshop's
    # speech after it were lost (bench/longform.py --minutes 4.3: 22.5% WER, 11.7% with the resumption).
    resume_voiced_seconds: float | None = 1.0


@dataclass
class Segment:
    start: float
    end: float
    text: str
    tokens: list[int]
    avg_logprob: float
    no_speech_prob: float
    temperature: float
    compression_ratio: float


@dataclass
class Transcript:
    text: str
    language: str
    segments: list[Segment] = field(default_factory=list)
    duration: float = 0.0


def needs_fallback(result: DecodingResult, options: TranscribeOptions) -> bool:
    """Whisper's quality checks: repetitive (compressible) or improbable text is decoded again, hotter."""
    too_repetitive = (
        options.compression_ratio_threshold is not None
        and result.compression_ratio > options.compression_ratio_threshold
    )
    too_improbable = options.logprob_threshold is not None and result.avg_logprob < options.logprob_threshold
    silent = (
        options.no_speech_threshold is not None
        and result.no_speech_prob > options.no_speech_threshold
        and too_improbable
    )
    return (too_repetitive or too_improbable) and not silent


def is_silent(result: DecodingResult, options: TranscribeOptions) -> bool:
    """A window with a high no-speech probability and an unconfident decode is skipped."""
    if options.no_speech_threshold is None or result.no_speech_prob <= options.no_speech_threshold:
        return False
    return not (options.logprob_threshold is not None and result.avg_logprob > options.logprob_threshold)


def resets_prompt(result: DecodingResult, options: TranscribeOptions) -> bool:
    """The next window is not prompted with the text so far: conditioning is off, or this text was sampled hot
    (above 0.5, where it is more likely to mislead what follows)."""
    return not options.condition_on_previous_text or result.temperature > 0.5


def decode_with_fallback(
    model: Whisper, tokenizer: Tokenizer, audio_features: torch.Tensor, decoding: DecodingOptions,
    options: TranscribeOptions,
) -> DecodingResult:
    """Decode one window's features, retrying at each higher temperature while the result fails the checks;
    when every temperature fails, the ``likeliest`` attempt."""
    attempts: list[DecodingResult] = []
    for t in options.temperatures:
        if t > 0:
            attempt = replace(decoding, temperature=t, beam_size=None, patience=None, best_of=options.best_of)
        else:
            attempt = replace(decoding, temperature=0.0, best_of=None)
        attempts.append(decode_features(model, tokenizer, audio_features, attempt)[0])
        if not needs_fallback(attempts[-1], options):
            return attempts[-1]
    return likeliest(attempts, options)


def likeliest(attempts: Sequence[DecodingResult], options: TranscribeOptions) -> DecodingResult:
    """The attempt kept when every temperature failed Whisper's checks: the likeliest (mean log-probability)
    whose text is not repetitive, else the first (greedy). Whisper keeps the last, a sample at the hottest
    temperature, which is no better evidence than the greedy text and on unclear audio invents a phrase
    (tiny.en int8 at 1.0 in bench/longform.py: "I'm home", at a mean log-probability of -4.07)."""
    threshold = options.compression_ratio_threshold
    plain = [r for r in attempts if threshold is None or r.compression_ratio <= threshold]
    return max(plain, key=lambda r: r.avg_logprob) if plain else attempts[0]


def split_segments(
    tokens: list[int], tokenizer: Tokenizer, time_offset: float, window_frames: int
) -> tuple[list[tuple[float, float, list[int]]], int]:
    """Cut a window's tokens at consecutive timestamp pairs.

    Returns (start, end, tokens) per segment and how many mel frames to advance: to the last complete
    timestamp, or the whole window when the text ends on a lone timestamp or has none.
    """
    tb = tokenizer.timestamp_begin
    is_ts = [t >= tb for t in tokens]
    single_ending = is_ts[-2:] == [False, True]
    consecutive = [i + 1 for i in range(len(tokens) - 1) if is_ts[i] and is_ts[i + 1]]
    segments: list[tuple[float, float, list[int]]] = []
    if consecutive:
        slices = consecutive + ([len(tokens)] if single_ending else [])
        last = 0
        for cut in slices:
            piece = tokens[last:cut]
            start = time_offset + (piece[0] - tb) * TIME_PER_TOKEN
            end = time_offset + (piece[-1] - tb) * TIME_PER_TOKEN
            segments.append((start, end, piece))
            last = cut
        advance = window_frames if single_ending else (tokens[last - 1] - tb) * 2
        return segments, advance
    duration = window_frames * HOP_LENGTH / SAMPLE_RATE
    stamps = [t for t in tokens if t >= tb]
    if stamps and stamps[-1] != tb:
        duration = (stamps[-1] - tb) * TIME_PER_TOKEN
    segments.append((time_offset, time_offset + duration, tokens))
    return segments, window_frames


def resume_frame(window_audio: np.ndarray, heard: float, size: int, options: TranscribeOptions) -> int:
    """How many mel frames to advance past a window of ``size`` frames whose text ends ``heard`` seconds
    into it: to that point if the VAD hears ``resume_voiced_seconds`` of speech after it, else all."""
    frames = int(heard * SAMPLE_RATE / HOP_LENGTH)
    if options.resume_voiced_seconds is None or not 0 < frames < size:
        return size
    after = window_audio[frames * HOP_LENGTH :]
    return frames if voiced_seconds(after) >= options.resume_voiced_seconds else size


@torch.inference_mode()
def transcribe(
    model: Whisper,
    tokenizer: Tokenizer,
    audio: np.ndarray,
    options: TranscribeOptions = TranscribeOptions(),
    progress: Callable[[float, float], None] | None = None,
    on_segment: Callable[[Segment], None] | None = None,
) -> Transcript:
    """Transcribe 16 kHz mono audio of any length. ``progress(done_s, total_s)`` is called per window,
    ``on_segment`` with each segment of text as soon as its window is decoded."""
    mel = log_mel_spectrogram(audio, model.dims.n_mels, padding=N_SAMPLES, device=model.device)
    content_frames = mel.shape[-1] - N_FRAMES
    duration = content_frames * HOP_LENGTH / SAMPLE_RATE
    decoding = options.decoding

    def features(seek: int, size: int) -> torch.Tensor:
        window = pad_or_trim(mel[:, seek : seek + size], N_FRAMES)
        return model.encoder(window[None].to(model.dtype))  # (1, Ta, D)

    language = decoding.language or "en"
    if tokenizer.is_multilingual and decoding.language is None and content_frames > 0:
        probs = detect_language(model, tokenizer, features(0, N_FRAMES))[0]
        language = max(probs, key=probs.__getitem__)
    decoding = replace(decoding, language=language)

    all_tokens: list[int] = []
    if options.initial_prompt:
        all_tokens.extend(tokenizer.encode(" " + options.initial_prompt.strip()))
    prompt_reset_since = 0
    segments: list[Segment] = []
    seek = 0
    while seek < content_frames:
        size = min(N_FRAMES, content_frames - seek)
        time_offset = seek * HOP_LENGTH / SAMPLE_RATE
        advance = size
        window_audio = audio[seek * HOP_LENGTH : (seek + size) * HOP_LENGTH]
        quiet = options.min_voiced_seconds is not None and voiced_seconds(window_audio) < options.min_voiced_seconds
        if not quiet:
            window_options = replace(decoding, prompt=tuple(all_tokens[prompt_reset_since:]))
            result = decode_with_fallback(model, tokenizer, features(seek, size), window_options, options)
            if not is_silent(result, options):
                pieces, advance = split_segments(result.tokens, tokenizer, time_offset, size)
                if advance == size and pieces:
                    advance = resume_frame(window_audio, pieces[-1][1] - time_offset, size, options)
                for start, end, piece in pieces:
                    end = min(end, duration)  # Whisper may place the last timestamp past the audio
                    start = min(start, end)
                    text = tokenizer.decode(piece)
                    if start == end or not text.strip():
                        text, piece = "", []
                    segment = Segment(
                        start=start, end=end, text=text, tokens=piece, avg_logprob=result.avg_logprob,
                        no_speech_prob=result.no_speech_prob, temperature=result.temperature,
                        compression_ratio=result.compression_ratio,
                    )
                    segments.append(segment)
                    all_tokens.extend(piece)
                    if on_segment is not None and text:
                        on_segment(segment)
                if resets_prompt(result, options):
                    prompt_reset_since = len(all_tokens)
        seek += advance
        if progress:
            progress(min(seek * HOP_LENGTH / SAMPLE_RATE, duration), duration)
    segments = [s for s in segments if s.text]
    text = tokenizer.decode([t for s in segments for t in s.tokens])
    return Transcript(text=text.strip(), language=language, segments=segments, duration=duration)
