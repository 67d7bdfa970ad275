"""streamer: streaming, real-time speech transcription on Whisper."""

from __future__ import annotations

__version__ = "0.1.0"

SAMPLE_RATE = 16000
CHUNK_SECONDS = 30  # Whisper's window
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE  # 480000 samples in a 30 s window
# --compute-type: how a model's weights and activations are stored (streamer.engine.apply_compute_type)
COMPUTE_TYPES = ("float32", "int8", "int8_bfloat16", "float16", "bfloat16")
