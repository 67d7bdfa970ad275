"""Audio as it arrives: byte frames of PCM in any supported encoding and rate -> 16 kHz mono float32.

``PcmDecoder`` turns a byte stream (split anywhere) into samples, keeping a partial sample for the
next call and resampling with a streaming soxr resampler. ``wav_chunks`` and ``raw_chunks`` read a
binary stream (a file or stdin) incrementally, so live input is processed as it comes.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import BinaryIO

import numpy as np
import soxr

from streamer import SAMPLE_RATE
from streamer.audio import WavFormat, decode_samples, parse_fmt
from streamer.errors import AudioFileError

ENCODINGS = {"pcm_s16le": (1, 16), "pcm_f32le": (3, 32)}


class PcmDecoder:
    def __init__(self, encoding: str = "pcm_s16le", sample_rate: int = SAMPLE_RATE, channels: int = 1):
        if encoding not in ENCODINGS:
            raise ValueError(f"unknown encoding {encoding!r} (expected {', '.join(ENCODINGS)})")
        tag, bits = ENCODINGS[encoding]
        self.format = WavFormat(tag, channels, sample_rate, bits)
        self._rest = b""
        self._resampler = (
            soxr.ResampleStream(sample_rate, SAMPLE_RATE, 1, dtype="float32", quality="HQ")
            if sample_rate != SAMPLE_RATE
            else None
        )

    @classmethod
    def for_format(cls, fmt: WavFormat) -> PcmDecoder:
        decoder = cls("pcm_s16le", fmt.sample_rate, fmt.channels)
        decoder.format = fmt
        return decoder

    def decode(self, data: bytes, last: bool = False) -> np.ndarray:
        """Bytes -> float32 mono 16 kHz samples (finite, in [-1, 1]); ``last`` flushes the resampler."""
        data = self._rest + data
        usable = len(data) - len(data) % self.format.frame_bytes
        self._rest = data[usable:]
        frames = decode_samples(data[:usable], self.format)  # (n, channels), cleaned of NaN/Inf
        mono = frames.mean(axis=1) if frames.shape[1] > 1 else frames[:, 0]
        mono = np.ascontiguousarray(mono, dtype=np.float32)
        if self._resampler is not None:
            mono = self._resampler.resample_chunk(mono, last=last).astype(np.float32, copy=False)
        return mono


def raw_chunks(stream: BinaryIO, chunk_bytes: int = 3200) -> Iterator[np.ndarray]:
    """pcm_s16le, 16 kHz mono from a binary stream, in chunks as they arrive."""
    decoder = PcmDecoder()
    while data := stream.read1(chunk_bytes) if hasattr(stream, "read1") else stream.read(chunk_bytes):
        yield decoder.decode(data)


def _read_exactly(stream: BinaryIO, n: int, name: str) -> bytes:
    data = b""
    while len(data) < n:
        more = stream.read(n - len(data))
        if not more:
            raise AudioFileError(f"{name}: truncated WAV header")
        data += more
    return data


def wav_chunks(stream: BinaryIO, name: str = "<stdin>", chunk_frames: int = 1600) -> Iterator[np.ndarray]:
    """A WAV file read incrementally (its header first, then the data as it arrives)."""
    head = stream.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        raise AudioFileError(f"{name}: not a WAV stream")
    fmt: WavFormat | None = None
    while True:
        header = stream.read(8)
        if len(header) < 8:
            raise AudioFileError(f"{name}: malformed WAV (no data chunk)")
        chunk_id, size = header[:4], struct.unpack("<I", header[4:])[0]
        if chunk_id == b"data":
            break
        if size > 1 << 20:
            raise AudioFileError(f"{name}: malformed WAV (a {size}-byte header chunk)")
        body = _read_exactly(stream, size + (size & 1), name)
        if chunk_id == b"fmt ":
            fmt = parse_fmt(body[:size], name)
    if fmt is None:
        raise AudioFileError(f"{name}: malformed WAV (data chunk before fmt chunk)")
    decoder = PcmDecoder.for_format(fmt)
    remaining = size if size != 0xFFFFFFFF else None
    step = chunk_frames * fmt.frame_bytes
    while remaining is None or remaining > 0:
        n = step if remaining is None else min(step, remaining)
        data = stream.read1(n) if hasattr(stream, "read1") else stream.read(n)
        if not data:
            break
        if remaining is not None:
            remaining -= len(data)
        yield decoder.decode(data)
    yield decoder.decode(b"", last=True)
