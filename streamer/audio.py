"""Reading audio files into 16 kHz mono float32.

WAV (PCM 8/16/24/32-bit, IEEE float 32/64, WAVE_FORMAT_EXTENSIBLE; any rate and channel count) is parsed
here, strictly: a malformed file is refused with one line naming the problem. Other formats go through
ffmpeg when it is installed. Channels are averaged and the rate converted with soxr.
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from streamer import SAMPLE_RATE
from streamer.errors import AudioFileError

_PCM = 1
_FLOAT = 3
_EXTENSIBLE = 0xFFFE
_MIN_RATE, _MAX_RATE = 1000, 384000
_STREAMING_SIZE = 0xFFFFFFFF  # data size written by recorders that do not know the length


@dataclass(frozen=True)
class WavFormat:
    encoding: int  # _PCM or _FLOAT
    channels: int
    sample_rate: int
    bits: int

    @property
    def frame_bytes(self) -> int:
        return self.channels * self.bits // 8


def parse_fmt(body: bytes, name: str) -> WavFormat:
    """Validate a WAV ``fmt `` chunk body."""
    if len(body) < 16:
        raise AudioFileError(f"{name}: malformed WAV (fmt chunk of {len(body)} bytes)")
    tag, channels, rate, byte_rate, block_align, bits = struct.unpack("<HHIIHH", body[:16])
    if tag == _EXTENSIBLE:
        if len(body) < 26:
            raise AudioFileError(f"{name}: malformed WAV (short WAVE_FORMAT_EXTENSIBLE header)")
        (tag,) = struct.unpack("<H", body[24:26])
    if tag not in (_PCM, _FLOAT):
        raise AudioFileError(f"{name}: unsupported WAV encoding (format tag {tag}; PCM or float expected)")
    if not 1 <= channels <= 64:
        raise AudioFileError(f"{name}: malformed WAV ({channels} channels)")
    if not _MIN_RATE <= rate <= _MAX_RATE:
        raise AudioFileError(f"{name}: unsupported sample rate {rate} Hz (expected {_MIN_RATE}-{_MAX_RATE})")
    valid_bits = (8, 16, 24, 32) if tag == _PCM else (32, 64)
    if bits not in valid_bits:
        raise AudioFileError(f"{name}: unsupported WAV sample size ({bits} bits)")
    fmt = WavFormat(tag, channels, rate, bits)
    if block_align != fmt.frame_bytes or byte_rate != rate * fmt.frame_bytes:
        raise AudioFileError(f"{name}: malformed WAV (inconsistent block align or byte rate)")
    return fmt


def decode_samples(raw: bytes, fmt: WavFormat) -> np.ndarray:
    """Interleaved frames -> float32 (frames, channels) in [-1, 1]; a trailing partial frame is dropped."""
    raw = raw[: len(raw) - len(raw) % fmt.frame_bytes]
    if fmt.encoding == _FLOAT:
        x = np.frombuffer(raw, dtype="<f4" if fmt.bits == 32 else "<f8").astype(np.float32)
        x = np.nan_to_num(x, nan=0.0, posinf=1.0, neginf=-1.0)
        np.clip(x, -1.0, 1.0, out=x)
    elif fmt.bits == 8:
        x = (np.frombuffer(raw, dtype=np.uint8).astype(np.float32) - 128.0) / 128.0
    elif fmt.bits == 16:
        x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    elif fmt.bits == 24:
        b = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        x = (np.where(v >= 1 << 23, v - (1 << 24), v)).astype(np.float32) / float(1 << 23)
    else:
        x = np.frombuffer(raw, dtype="<i4").astype(np.float32) / float(1 << 31)
    return x.reshape(-1, fmt.channels)


def to_mono_16k(frames: np.ndarray, sample_rate: int) -> np.ndarray:
    """(frames, channels) at any rate -> float32 mono at 16 kHz."""
    mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
    mono = np.ascontiguousarray(mono, dtype=np.float32)
    if sample_rate != SAMPLE_RATE and mono.size:
        mono = soxr.resample(mono, sample_rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    return mono


def read_wav_bytes(data: bytes, name: str) -> np.ndarray:
    """Parse a whole WAV file into 16 kHz mono float32."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise AudioFileError(f"{name}: not a WAV file")
    pos = 12
    fmt: WavFormat | None = None
    while pos + 8 <= len(data):
        chunk_id = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body_start = pos + 8
        label = chunk_id.decode("latin-1")
        if chunk_id == b"data":
            if fmt is None:
                raise AudioFileError(f"{name}: malformed WAV (data chunk before fmt chunk)")
            if size == _STREAMING_SIZE:
                size = len(data) - body_start
            if body_start + size > len(data):
                raise AudioFileError(
                    f"{name}: truncated WAV (data chunk of {size} bytes, {len(data) - body_start} present)"
                )
            return to_mono_16k(decode_samples(data[body_start : body_start + size], fmt), fmt.sample_rate)
        if body_start + size > len(data):
            raise AudioFileError(f"{name}: malformed WAV (chunk {label!r} of {size} bytes runs past the end)")
        if chunk_id == b"fmt ":
            fmt = parse_fmt(data[body_start : body_start + size], name)
        pos = body_start + size + (size & 1)
    raise AudioFileError(f"{name}: malformed WAV (no data chunk)")


def _decode_with_ffmpeg(path: Path, name: str | None = None) -> np.ndarray:
    path_name = name or str(path)
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        raise AudioFileError(f"{path_name}: not a WAV file, and ffmpeg (needed for other formats) is not installed")
    cmd = [ffmpeg, "-nostdin", "-v", "error", "-i", str(path), "-f", "s16le", "-ac", "1", "-ar", str(SAMPLE_RATE), "-"]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        reason = proc.stderr.decode(errors="replace").strip().splitlines()
        raise AudioFileError(f"{path_name}: ffmpeg cannot decode it ({reason[-1] if reason else 'no reason given'})")
    return np.frombuffer(proc.stdout, dtype="<i2").astype(np.float32) / 32768.0


def load_audio(path: str | Path) -> np.ndarray:
    """Read an audio file as float32 mono samples at 16 kHz."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise AudioFileError(f"{path}: no such file") from e
    except IsADirectoryError as e:
        raise AudioFileError(f"{path}: is a directory, not an audio file") from e
    except OSError as e:
        raise AudioFileError(f"{path}: cannot read ({e.strerror})") from e
    if data[:4] == b"RIFF":
        return read_wav_bytes(data, str(path))
    return _decode_with_ffmpeg(path)


def load_audio_bytes(data: bytes, name: str) -> np.ndarray:
    """An uploaded audio file (any format ffmpeg reads; WAV without it) as float32 mono 16 kHz samples."""
    if data[:4] == b"RIFF":
        return read_wav_bytes(data, name)
    with tempfile.NamedTemporaryFile(prefix="streamer-upload-", suffix=Path(name).suffix[:16]) as file:
        file.write(data)
        file.flush()
        return _decode_with_ffmpeg(Path(file.name), name)
