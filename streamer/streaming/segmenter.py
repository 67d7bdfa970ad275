"""Speech segmentation on webrtcvad: frames in, speech_start / speech_end events out.

Hysteresis: speech starts when most of the last ``trigger_ms`` of frames are voiced, and the start is
moved back by ``pre_roll_ms`` so the first phoneme is kept; it ends after ``hangover_ms`` of unvoiced
frames, at the end of the last voiced frame. Times are absolute sample indices of the stream.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np
import webrtcvad

from streamer import SAMPLE_RATE
from streamer.voice import to_pcm16


@dataclass(frozen=True)
class _Boundary:
    sample: int  # absolute sample index in the stream

    @property
    def t(self) -> float:
        """Stream time in seconds."""
        return self.sample / SAMPLE_RATE

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type, "t": round(self.t, 3)}

    type = "boundary"


@dataclass(frozen=True)
class SpeechStart(_Boundary):
    type = "speech_start"


@dataclass(frozen=True)
class SpeechEnd(_Boundary):
    type = "speech_end"


VadEvent = SpeechStart | SpeechEnd


class VadSegmenter:
    def __init__(
        self,
        aggressiveness: int = 2,
        frame_ms: int = 30,
        pre_roll_ms: int = 250,
        hangover_ms: int = 500,
        trigger_ms: int = 150,
        trigger_ratio: float = 0.6,
        history_s: float = 120.0,
    ):
        if frame_ms not in (10, 20, 30):
            raise ValueError("frame_ms must be 10, 20 or 30 (webrtcvad's frame sizes)")
        if not 0 <= aggressiveness <= 3:
            raise ValueError("aggressiveness must be 0-3")
        self._vad = webrtcvad.Vad(aggressiveness)
        self.frame = SAMPLE_RATE * frame_ms // 1000
        self.pre_roll = SAMPLE_RATE * pre_roll_ms // 1000
        self.hangover_frames = max(1, hangover_ms // frame_ms)
        self.trigger_ratio = trigger_ratio
        self._recent: deque[bool] = deque(maxlen=max(1, trigger_ms // frame_ms))
        self._pending = np.zeros(0, dtype=np.float32)
        self._next = 0  # absolute index of the first sample in _pending
        self.in_speech = False
        self._silent_frames = 0
        self._last_voiced_end = 0
        # Which frames were voiced, for the last ``history_s`` seconds (a ring indexed by frame number).
        self._history = np.zeros(max(1, int(history_s * SAMPLE_RATE) // self.frame), dtype=bool)

    def feed(self, samples: np.ndarray) -> list[VadEvent]:
        """Feed 16 kHz float32 samples of any length; returns the events they complete."""
        samples = np.asarray(samples, dtype=np.float32)
        pending = np.concatenate([self._pending, samples]) if len(self._pending) else samples
        events: list[VadEvent] = []
        n_frames = len(pending) // self.frame
        used = n_frames * self.frame
        if n_frames:
            pcm = to_pcm16(pending[:used])  # converted once for all the frames
            size = 2 * self.frame
            first = self._next // self.frame
            voiced_frames = [self._vad.is_speech(pcm[i * size : (i + 1) * size], SAMPLE_RATE) for i in range(n_frames)]
            self._history[np.arange(first, first + n_frames) % len(self._history)] = voiced_frames
            for i, voiced in enumerate(voiced_frames):
                start = self._next + i * self.frame
                events.extend(self._step(voiced, start, start + self.frame))
        self._pending = pending[used:].copy()  # (under a frame: the caller's array is not kept)
        self._next += used
        return events

    def _step(self, voiced: bool, start: int, end: int) -> list[VadEvent]:
        self._recent.append(voiced)
        if voiced:
            self._last_voiced_end = end
        if not self.in_speech:
            full = len(self._recent) == self._recent.maxlen
            if full and sum(self._recent) >= self.trigger_ratio * len(self._recent):
                self.in_speech = True
                self._silent_frames = 0
                first_voiced = end - self.frame * len(self._recent)
                return [SpeechStart(max(0, first_voiced - self.pre_roll))]
            return []
        self._silent_frames = 0 if voiced else self._silent_frames + 1
        if self._silent_frames >= self.hangover_frames:
            self.in_speech = False
            self._recent.clear()
            return [SpeechEnd(self._last_voiced_end)]
        return []

    def voiced_seconds(self, start: int, end: int) -> float:
        """Seconds of voiced frames between absolute samples [start, end) (within the recent history)."""
        first = max(start // self.frame, self._next // self.frame - len(self._history), 0)
        last = min(-(-end // self.frame), self._next // self.frame)
        if last <= first:
            return 0.0
        index = np.arange(first, last) % len(self._history)
        return float(self._history[index].sum()) * self.frame / SAMPLE_RATE

    def flush(self) -> list[VadEvent]:
        """End of stream: close an open speech segment (at its last voiced frame if a pause had begun)."""
        if self.in_speech:
            self.in_speech = False
            return [SpeechEnd(self._last_voiced_end if self._silent_frames else self._next + len(self._pending))]
        return []
