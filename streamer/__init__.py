"""streamer: streaming, real-time speech transcription on Whisper."""

from __future__ import annotations

__version__ = "0.1.0"

SAMPLE_RATE = 16000
