"""Whisper's log-mel front end in torch.

16 kHz audio, 400-sample Hann window, hop 160 (100 frames a second), power spectrum through a Slaney
mel filterbank (80 or 128 bins, computed here), log10 with a 1e-10 floor, clamped to 8 below the
maximum of the input, then scaled as (x + 4) / 4.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
from torch import Tensor

from streamer import N_SAMPLES, SAMPLE_RATE

N_FFT = 400
HOP_LENGTH = 160
N_FRAMES = N_SAMPLES // HOP_LENGTH  # 3000 mel frames in a 30 s window
FRAMES_PER_SECOND = SAMPLE_RATE // HOP_LENGTH  # 100
N_SAMPLES_PER_TOKEN = HOP_LENGTH * 2  # the encoder's conv2 has stride 2
TIME_PER_TOKEN = N_SAMPLES_PER_TOKEN / SAMPLE_RATE  # 0.02 s, the timestamp resolution

# Slaney's mel scale: linear below 1 kHz, logarithmic above.
_F_SP = 200.0 / 3
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = math.log(6.4) / 27.0


def _hz_to_mel(hz: Tensor) -> Tensor:
    return torch.where(
        hz >= _MIN_LOG_HZ, _MIN_LOG_MEL + torch.log(hz.clamp(min=1e-10) / _MIN_LOG_HZ) / _LOG_STEP, hz / _F_SP
    )


def _mel_to_hz(mel: Tensor) -> Tensor:
    return torch.where(mel >= _MIN_LOG_MEL, _MIN_LOG_HZ * torch.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), _F_SP * mel)


@lru_cache(maxsize=4)
def mel_filters(n_mels: int, sample_rate: int = SAMPLE_RATE, n_fft: int = N_FFT) -> Tensor:
    """Slaney-normalised triangular mel filterbank, (n_mels, n_fft // 2 + 1), float32."""
    fft_freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mel_points = torch.linspace(
        float(_hz_to_mel(torch.tensor(0.0, dtype=torch.float64))),
        float(_hz_to_mel(torch.tensor(sample_rate / 2, dtype=torch.float64))),
        n_mels + 2,
        dtype=torch.float64,
    )
    hz_points = _mel_to_hz(mel_points)  # (n_mels + 2,)
    widths = torch.diff(hz_points)  # (n_mels + 1,)
    ramps = hz_points[:, None] - fft_freqs[None, :]  # (n_mels + 2, n_freqs)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = torch.clamp(torch.minimum(lower, upper), min=0.0)  # (n_mels, n_freqs)
    weights *= (2.0 / (hz_points[2:] - hz_points[:-2]))[:, None]  # equal area per filter
    return weights.float()


@lru_cache(maxsize=4)
def _hann(device: torch.device) -> Tensor:
    return torch.hann_window(N_FFT, device=device)


def log_mel_spectrogram(
    audio: np.ndarray | Tensor, n_mels: int = 80, padding: int = 0, device: str | torch.device | None = None
) -> Tensor:
    """Log-mel spectrogram of 16 kHz mono audio (n_samples,) -> (n_mels, n_frames), n_frames = samples / 160.

    ``padding`` zero samples are appended first (Whisper pads by 30 s so the last window is complete).
    The max-8 clamp is taken over the whole input given.
    """
    x = torch.from_numpy(np.asarray(audio, dtype=np.float32)) if not isinstance(audio, Tensor) else audio.float()
    if device is not None:
        x = x.to(device)
    if padding > 0:
        x = torch.nn.functional.pad(x, (0, padding))
    if x.numel() == 0:
        return torch.zeros(n_mels, 0, device=x.device)
    if x.numel() < N_FFT // 2 + 1:  # reflect padding needs more samples than half a window
        x = torch.nn.functional.pad(x, (0, N_FFT // 2 + 1 - x.numel()))
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=_hann(x.device), return_complex=True)
    power = stft[..., :-1].abs() ** 2  # (n_freqs, n_frames); the last frame is dropped
    mel = mel_filters(n_mels).to(x.device) @ power  # (n_mels, n_frames)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    log_spec = torch.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


def pad_or_trim(mel: Tensor, n_frames: int = N_FRAMES) -> Tensor:
    """Pad (with zeros, as Whisper does after the log) or cut mel frames (n_mels, T) to n_frames."""
    if mel.shape[-1] > n_frames:
        return mel[..., :n_frames]
    if mel.shape[-1] < n_frames:
        return torch.nn.functional.pad(mel, (0, n_frames - mel.shape[-1]))
    return mel


def log_mel_windows(
    audios: list[np.ndarray], n_frames: int, n_mels: int = 80, device: str | torch.device | None = None
) -> Tensor:
    """Log-mel windows of ``n_frames`` frames for a batch of 16 kHz clips, (B, n_mels, n_frames).

    Each equals ``pad_or_trim(log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES), n_frames)`` for a clip
    of at most ``n_frames`` frames (the clamp is each clip's own), but only the clips' own frames are
    computed, in one batched STFT on ``device``: the frames of the padding after them, all silence, take
    the value silence has after the clamp.
    """
    n_samples = n_frames * HOP_LENGTH
    clips = [np.asarray(audio, dtype=np.float32)[:n_samples] for audio in audios]
    lengths = [len(clip) for clip in clips]
    longest = max(lengths, default=0)
    # The clips' samples only, end to end, cross to the device in one copy; the padded batch is made there.
    joined = torch.from_numpy(np.concatenate(clips) if clips else np.zeros(0, np.float32))  # (sum of lengths,)
    if device is not None:
        joined = joined.to(device, non_blocking=True)
    x = torch.zeros((len(clips), longest + N_FFT), dtype=torch.float32, device=joined.device)  # zeros after each clip
    offset = 0
    for i, n in enumerate(lengths):
        x[i, :n] = joined[offset : offset + n]
        offset += n
    stft = torch.stft(x, N_FFT, HOP_LENGTH, window=_hann(x.device), return_complex=True)  # (B, n_freqs, T)
    computed = min(n_frames, stft.shape[-1] - 1)
    power = stft[..., :computed].abs() ** 2
    mel = mel_filters(n_mels).to(x.device) @ power  # (B, n_mels, computed)
    log_spec = torch.clamp(mel, min=1e-10).log10()
    floor = (log_spec.amax(dim=(1, 2), keepdim=True) - 8.0).clamp(min=-10.0)  # (B, 1, 1): silence, clamped
    log_spec = torch.maximum(log_spec, floor)
    if computed < n_frames:
        log_spec = torch.cat([log_spec, floor.expand(-1, n_mels, n_frames - computed)], dim=2)
    return (log_spec + 4.0) / 4.0
