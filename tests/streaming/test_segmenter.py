from __future__ import annotations

import numpy as np

from streamer.audio import load_audio
from streamer.streaming.segmenter import SpeechEnd, SpeechStart, VadSegmenter

from ..conftest import FIXTURES

CLIPS = ["sense_and_sensibility_01_austen_64kb-0880.wav", "001.wav", "sense_and_sensibility_01_austen_64kb-0890.wav"]


def speech_with_gaps() -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Clips separated by 2 s of silence; returns audio and each clip's span in samples."""
    gap = np.zeros(32000, dtype=np.float32)
    parts, spans, pos = [gap], [], len(gap)
    for clip in CLIPS:
        audio = load_audio(FIXTURES / clip)
        parts += [audio, gap]
        spans.append((pos, pos + len(audio)))
        pos += len(audio) + len(gap)
    return np.concatenate(parts), spans


def run(segmenter: VadSegmenter, audio: np.ndarray, chunk: int) -> list:
    events = []
    for i in range(0, len(audio), chunk):
        events += segmenter.feed(audio[i : i + chunk])
    return events + segmenter.flush()


def test_boundaries_follow_the_speech() -> None:
    audio, spans = speech_with_gaps()
    events = run(VadSegmenter(), audio, 1600)
    starts = [e.sample for e in events if isinstance(e, SpeechStart)]
    ends = [e.sample for e in events if isinstance(e, SpeechEnd)]
    assert len(starts) == len(ends) == len(spans)
    for (clip_start, clip_end), start, end in zip(spans, starts, ends, strict=True):
        assert clip_start - 8000 <= start <= clip_start + 8000  # within 0.5 s of the clip's edges
        assert clip_end - 8000 <= end <= clip_end + 4000  # webrtcvad hears a frame or two of the tail
        assert start < end
    assert all(isinstance(e, SpeechStart | SpeechEnd) for e in events)


def test_pre_roll_moves_the_start_back() -> None:
    audio, _ = speech_with_gaps()
    plain = run(VadSegmenter(pre_roll_ms=0), audio, 4800)[0]
    padded = run(VadSegmenter(pre_roll_ms=300), audio, 4800)[0]
    assert plain.sample - padded.sample == 4800


def test_chunking_does_not_change_events() -> None:
    audio, _ = speech_with_gaps()
    assert run(VadSegmenter(), audio, 160) == run(VadSegmenter(), audio, 7919) == run(VadSegmenter(), audio, len(audio))


def test_silence_gives_no_events() -> None:
    assert run(VadSegmenter(), np.zeros(16000 * 60, dtype=np.float32), 16000) == []


def test_a_stream_that_ends_in_a_pause_ends_its_speech_at_the_last_voiced_frame() -> None:
    speech = load_audio(FIXTURES / CLIPS[0])
    flushed = run(VadSegmenter(hangover_ms=500), np.concatenate([speech, np.zeros(3200, np.float32)]), 1600)
    ended = run(VadSegmenter(hangover_ms=500), np.concatenate([speech, np.zeros(16000, np.float32)]), 1600)
    assert [e for e in ended if isinstance(e, SpeechEnd)][0].sample < len(speech)  # 0.2 s after: no end yet
    assert flushed == ended  # the same end as the hang-over's


def test_a_stream_that_ends_mid_voice_ends_its_speech_at_its_end() -> None:
    speech = load_audio(FIXTURES / CLIPS[0])[: 2 * 16000]  # its last whole frame is voiced
    segmenter = VadSegmenter()
    segmenter.feed(speech)
    assert segmenter.in_speech
    assert segmenter.flush() == [SpeechEnd(2 * 16000)]

