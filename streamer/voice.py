"""Voice activity on webrtcvad, frame by frame: which 30 ms frames of a clip are voiced (offline and batched
long-form; the streaming segmenter, streaming/segmenter.py, builds speech start and end on it)."""

from __future__ import annotations

import numpy as np
import webrtcvad

from streamer import SAMPLE_RATE

FRAME_MS = 30
FRAME_SAMPLES = SAMPLE_RATE * FRAME_MS // 1000


def to_pcm16(audio: np.ndarray) -> bytes:
    """float32 [-1, 1] -> little-endian 16-bit PCM, clipped."""
    scaled = np.multiply(audio, np.float32(32767.0), dtype=np.float32)
    scaled.clip(-32767.0, 32767.0, out=scaled)
    return scaled.astype("<i2").tobytes()


def voiced_frames(audio: np.ndarray, aggressiveness: int = 2) -> np.ndarray:
    """One bool per whole 30 ms frame of 16 kHz audio: does webrtcvad hear speech in it?"""
    vad = webrtcvad.Vad(aggressiveness)
    pcm = to_pcm16(audio)
    step = FRAME_SAMPLES * 2
    n = len(audio) // FRAME_SAMPLES
    return np.fromiter((vad.is_speech(pcm[i * step : (i + 1) * step], SAMPLE_RATE) for i in range(n)), bool, n)


def voiced_seconds(audio: np.ndarray, aggressiveness: int = 2) -> float:
    return float(voiced_frames(audio, aggressiveness).sum()) * FRAME_MS / 1000
