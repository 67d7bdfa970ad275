from __future__ import annotations

import struct
import wave
from pathlib import Path

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.errors import AudioFileError

from .conftest import FIXTURES


def write_wav(path: Path, samples: np.ndarray, rate: int, tag: int, bits: int) -> None:
    """A WAV written by hand (the wave module cannot write float)."""
    frames = samples if samples.ndim == 2 else samples[:, None]
    channels = frames.shape[1]
    if tag == 3:
        data = frames.astype("<f4" if bits == 32 else "<f8").tobytes()
    elif bits == 24:
        ints = np.round(frames * (2**23 - 1)).astype("<i4").reshape(-1)
        data = b"".join(int(v).to_bytes(3, "little", signed=True) for v in ints)
    else:
        data = np.round(frames * 32767).astype("<i2").tobytes()
    fmt = struct.pack("<HHIIHH", tag, channels, rate, rate * channels * bits // 8, channels * bits // 8, bits)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(data)) + data
    path.write_bytes(b"RIFF" + struct.pack("<I", len(body)) + body)


def test_reads_pcm16_mono_16k_exactly() -> None:
    audio = load_audio(FIXTURES / "001.wav")
    with wave.open(str(FIXTURES / "001.wav")) as w:
        raw = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2")
    assert audio.dtype == np.float32
    np.testing.assert_array_equal(audio, raw.astype(np.float32) / 32768.0)


@pytest.mark.parametrize(("tag", "bits"), [(1, 16), (1, 24), (3, 32), (3, 64)])
def test_stereo_44k_is_mixed_and_resampled(tmp_path: Path, tag: int, bits: int) -> None:
    t = np.arange(44100) / 44100
    tone = 0.5 * np.sin(2 * np.pi * 440 * t)
    stereo = np.stack([tone, tone], axis=1)
    path = tmp_path / "tone.wav"
    write_wav(path, stereo, 44100, tag, bits)
    audio = load_audio(path)
    assert abs(len(audio) - 16000) <= 1
    spectrum = np.abs(np.fft.rfft(audio[:16000]))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second
    assert 0.45 < np.max(np.abs(audio)) < 0.55


def test_non_finite_float_samples_become_silence_or_full_scale(tmp_path: Path) -> None:
    path = tmp_path / "nan.wav"
    write_wav(path, np.array([np.nan, np.inf, -np.inf, 2.0, 0.25]), 16000, 3, 32)
    np.testing.assert_array_equal(load_audio(path), np.array([0.0, 1.0, -1.0, 1.0, 0.25], dtype=np.float32))


def test_empty_wav_gives_no_samples() -> None:
    assert load_audio(FIXTURES / "null.wav").shape == (0,)


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("bad.wav", "bad.wav: malformed WAV (chunk 'fmt ' of 1717986918 bytes runs past the end)"),
        ("evil.wav", "evil.wav: malformed WAV (chunk 'HURF' of 960051513 bytes runs past the end)"),
        ("awful.wav", "awful.wav: unsupported sample rate 1092676 Hz (expected 1000-384000)"),
    ],
)
def test_malformed_wav_is_refused(name: str, message: str) -> None:
    with pytest.raises(AudioFileError) as info:
        load_audio(FIXTURES / name)
    assert str(info.value) == f"{FIXTURES / name}: {message.split(': ', 1)[1]}"


def test_truncated_data_chunk_is_refused(tmp_path: Path) -> None:
    data = (FIXTURES / "001.wav").read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[:1000])
    with pytest.raises(AudioFileError, match=r"cut.wav: truncated WAV \(data chunk of 35052 bytes, 956 present\)"):
        load_audio(path)


def test_missing_file() -> None:
    with pytest.raises(AudioFileError, match="nope.wav: no such file"):
        load_audio("nope.wav")


def test_non_wav_without_ffmpeg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no ffmpeg on this PATH
    path = tmp_path / "song.mp3"
    path.write_bytes(b"ID3\x03\x00not really an mp3")
    with pytest.raises(AudioFileError, match="song.mp3: not a WAV file, and ffmpeg .* is not installed"):
        load_audio(path)
