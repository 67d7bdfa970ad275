"""The log-mel front end against an independent float64 NumPy derivation of Whisper's reference.

The reference here is written from the published definition (OpenAI's ``log_mel_spectrogram``: centred
STFT with reflect padding, periodic Hann window of 400, hop 160, |X|^2 with the last frame dropped,
librosa's Slaney mel filterbank, log10 floor 1e-10, max-8 clamp, (x+4)/4), frame by frame with NumPy's
FFT and triangles drawn with np.interp, sharing no code with streamer.mel.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.mel import N_SAMPLES, log_mel_spectrogram, log_mel_windows, mel_filters, pad_or_trim

from .conftest import FIXTURES


def slaney_hz_to_mel(f: np.ndarray) -> np.ndarray:
    f = np.asarray(f, dtype=np.float64)
    linear = f * 3.0 / 200.0
    log_part = 15.0 + np.log(np.maximum(f, 1e-9) / 1000.0) * 27.0 / np.log(6.4)
    return np.where(f < 1000.0, linear, log_part)


def slaney_mel_to_hz(m: np.ndarray) -> np.ndarray:
    m = np.asarray(m, dtype=np.float64)
    return np.where(m < 15.0, m * 200.0 / 3.0, 1000.0 * np.exp((m - 15.0) * np.log(6.4) / 27.0))


def reference_filterbank(n_mels: int, sr: int = 16000, n_fft: int = 400) -> np.ndarray:
    freqs = np.arange(n_fft // 2 + 1) * sr / n_fft
    edges = slaney_mel_to_hz(np.linspace(slaney_hz_to_mel(0.0), slaney_hz_to_mel(sr / 2), n_mels + 2))
    bank = np.zeros((n_mels, len(freqs)))
    for m in range(n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        bank[m] = np.interp(freqs, [lo, mid, hi], [0.0, 1.0, 0.0], left=0.0, right=0.0)
        bank[m] *= 2.0 / (hi - lo)  # Slaney normalisation: every filter has the same area
    return bank


def reference_log_mel(audio: np.ndarray, n_mels: int) -> np.ndarray:
    x = np.pad(audio.astype(np.float64), 200, mode="reflect")
    n_frames = 1 + (len(x) - 400) // 160
    window = 0.5 * (1.0 - np.cos(2.0 * np.pi * np.arange(400) / 400))  # periodic Hann
    power = np.empty((n_frames, 201))
    for i in range(n_frames):
        power[i] = np.abs(np.fft.rfft(x[i * 160 : i * 160 + 400] * window)) ** 2
    mel = reference_filterbank(n_mels) @ power[:-1].T  # (n_mels, n_frames - 1)
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("n_mels", [80, 128])
def test_filterbank_matches_slaney_definition(n_mels: int) -> None:
    ours = mel_filters(n_mels).numpy()
    np.testing.assert_allclose(ours, reference_filterbank(n_mels), atol=1e-6, rtol=1e-5)


def test_filterbank_known_values() -> None:
    """Facts of librosa.filters.mel(sr=16000, n_fft=400, n_mels=80), Whisper's stored filterbank."""
    bank = mel_filters(80).numpy()
    assert bank.shape == (80, 201)
    assert bank[:, 0].max() == 0.0  # the DC bin belongs to no filter
    assert np.argmax(bank[0]) == 1  # the first filter peaks at 40 Hz
    assert bank[0, 1] == pytest.approx(0.0248626, abs=1e-6)  # librosa's value, printed there
    assert np.all(np.diff(bank.argmax(axis=1)) >= 0)  # centres rise monotonically


@pytest.mark.parametrize("n_mels", [80, 128])
@pytest.mark.parametrize("clip", ["sense_and_sensibility_01_austen_64kb-0870.wav", "005.wav"])
def test_log_mel_matches_reference_on_real_audio(clip: str, n_mels: int) -> None:
    audio = load_audio(FIXTURES / clip)
    ours = log_mel_spectrogram(audio, n_mels).numpy()
    ref = reference_log_mel(audio, n_mels)
    assert ours.shape == ref.shape == (n_mels, len(audio) // 160)
    np.testing.assert_allclose(ours, ref, atol=1e-3, rtol=0)


def test_padding_appends_thirty_seconds_of_frames() -> None:
    audio = load_audio(FIXTURES / "001.wav")
    mel = log_mel_spectrogram(torch.from_numpy(audio), padding=N_SAMPLES)
    assert mel.shape == (80, (len(audio) + N_SAMPLES) // 160)


def test_empty_audio_has_no_frames() -> None:
    assert log_mel_spectrogram(np.zeros(0, dtype=np.float32)).shape == (80, 0)


def test_mel_windows_equal_the_padded_whole_clip_spectrogram():
    rng = np.random.default_rng(3)
    clips = [rng.normal(size=n).astype(np.float32) * 0.1 for n in (16000, 47_000, 100, 79_840)]
    windows = log_mel_windows(clips, 500)
    assert windows.shape == (4, 80, 500)
    for clip, window in zip(clips, windows, strict=True):
        whole = pad_or_trim(log_mel_spectrogram(clip, 80, padding=N_SAMPLES), 500)
        torch.testing.assert_close(window, whole, atol=1e-4, rtol=1e-4)
