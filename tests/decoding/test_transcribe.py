from __future__ import annotations

import numpy as np
import pytest

from streamer.audio import load_audio
from streamer.decoding.decode import DecodingOptions, DecodingResult
from streamer.decoding.transcribe import (
    TranscribeOptions,
    is_silent,
    likeliest,
    needs_fallback,
    resume_frame,
    transcribe,
)
from streamer.mel import N_FRAMES

from ..conftest import FIXTURES, normalize

pytestmark = pytest.mark.accuracy  # transcripts against references (CI runs these on other CPU kernels)

# The reference implementation's fp32 greedy output on the same weights.
REFERENCE = {
    "sense_and_sensibility_01_austen_64kb-0870.wav": "And Mr. John Dashwood had then leisure to consider how much "
    "there might be prudently in his power to do for them.",
    "sense_and_sensibility_01_austen_64kb-0880.wav": "He was not an old-sposed young man.",
    "sense_and_sensibility_01_austen_64kb-0890.wav": "Unless to be rather cold-hearted and rather selfish is to be "
    "ill-disposed.",
    "001.wav": "10 of clubs.",
    "003.wav": "7 of clubs.",
    "005.wav": "8 of spades, 4 of close, 7 of hearts.",
}


@pytest.mark.parametrize("clip", sorted(REFERENCE))
def test_greedy_tiny_en_matches_reference(tiny, clip: str) -> None:
    result = transcribe(tiny.model, tiny.tokenizer, load_audio(FIXTURES / clip))
    assert normalize(result.text) == normalize(REFERENCE[clip])


def test_long_form_audio_crosses_windows(tiny) -> None:
    """About 70 s of speech and pauses: every sentence comes out, in order, with growing timestamps.

    (Conditioned on earlier text, Whisper may write the card numbers as words: only the sentences are
    compared exactly; the cards must each be there.)"""
    clips = ["sense_and_sensibility_01_austen_64kb-0870.wav", "sense_and_sensibility_01_austen_64kb-0890.wav",
             "005.wav", "001.wav"] * 3
    gap = np.zeros(16000, dtype=np.float32)
    audio = np.concatenate([x for c in clips for x in (load_audio(FIXTURES / c), gap)])
    assert len(audio) > 60 * 16000
    seen: list[float] = []
    result = transcribe(tiny.model, tiny.tokenizer, audio, progress=lambda done, total: seen.append(done / total))
    text = normalize(result.text)
    position = 0
    for clip in clips:
        if not clip.startswith("sense"):
            continue
        found = text.find(normalize(REFERENCE[clip]), position)
        assert found >= position, f"{REFERENCE[clip]!r} missing after character {position} of {text!r}"
        position = found + 1
    assert text.count("spades") == 3 and text.count("hearts") == 3
    starts = [s.start for s in result.segments]
    assert starts == sorted(starts) and result.segments[-1].end <= result.duration + 0.5
    assert len(seen) >= 3 and seen[-1] == pytest.approx(1.0)


def test_silence_gives_no_text(tiny) -> None:
    result = transcribe(tiny.model, tiny.tokenizer, np.zeros(16000 * 40, dtype=np.float32))
    assert result.text == "" and result.segments == []


def test_empty_audio_gives_empty_transcript(tiny) -> None:
    assert transcribe(tiny.model, tiny.tokenizer, load_audio(FIXTURES / "null.wav")).text == ""


def result_with(compression: float, logprob: float, no_speech: float) -> DecodingResult:
    return DecodingResult([], "", "en", logprob, no_speech, 0.0, compression)


@pytest.mark.parametrize(
    ("compression", "logprob", "no_speech", "expected"),
    [
        (1.2, -0.3, 0.1, False),  # fine
        (2.5, -0.3, 0.1, True),  # repetitive
        (1.2, -1.2, 0.1, True),  # improbable
        (1.2, -1.2, 0.7, False),  # improbable but silent: no point retrying
    ],
)
def test_fallback_rule(compression: float, logprob: float, no_speech: float, expected: bool) -> None:
    assert needs_fallback(result_with(compression, logprob, no_speech), TranscribeOptions()) is expected


@pytest.mark.parametrize(
    ("logprob", "no_speech", "expected"), [(-1.5, 0.7, True), (-0.5, 0.7, False), (-1.5, 0.5, False)]
)
def test_silence_rule(logprob: float, no_speech: float, expected: bool) -> None:
    assert is_silent(result_with(1.0, logprob, no_speech), TranscribeOptions()) is expected


def attempt(temperature: float, compression: float, logprob: float) -> DecodingResult:
    return DecodingResult([], f"at {temperature}", "en", logprob, 0.1, temperature, compression)


def test_when_every_temperature_fails_the_likeliest_attempt_is_kept_not_the_hottest() -> None:
    attempts = [attempt(0.0, 1.2, -1.3), attempt(0.2, 1.1, -1.1), attempt(1.0, 1.0, -4.07)]
    assert likeliest(attempts, TranscribeOptions()).temperature == 0.2


def test_a_repetitive_attempt_is_not_kept_however_likely_when_another_is_not_repetitive() -> None:
    attempts = [attempt(0.0, 3.0, -0.2), attempt(0.2, 1.5, -1.5), attempt(0.4, 1.4, -2.0)]
    assert likeliest(attempts, TranscribeOptions()).temperature == 0.2


def test_when_every_attempt_is_repetitive_the_greedy_one_is_kept() -> None:
    attempts = [attempt(0.0, 3.0, -0.5), attempt(0.2, 2.6, -0.1)]
    assert likeliest(attempts, TranscribeOptions()).temperature == 0.0


def window_of(speech_from: float) -> np.ndarray:
    """A 30 s window: silence, then 0870's speech (about 7 s) from ``speech_from`` seconds on."""
    window = np.zeros(30 * 16000, dtype=np.float32)
    speech = load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav")
    window[int(speech_from * 16000) :][: len(speech)] = speech[: len(window) - int(speech_from * 16000)]
    return window


def test_a_window_whose_text_ends_before_speech_resumes_at_its_last_timestamp() -> None:
    """tiny.en int8 once ended a window's text after its first sentence, and the window's other 27 s of
    speech were skipped (Whisper reads a lone last timestamp as "no speech after")."""
    assert resume_frame(window_of(10.0), 3.0, N_FRAMES, TranscribeOptions()) == 300  # 3 s: 100 frames a second


def test_a_window_whose_text_ends_before_silence_is_skipped_whole() -> None:
    assert resume_frame(window_of(0.0), 9.0, N_FRAMES, TranscribeOptions()) == N_FRAMES
    options = TranscribeOptions(resume_voiced_seconds=None)
    assert resume_frame(window_of(10.0), 3.0, N_FRAMES, options) == N_FRAMES


def test_multilingual_detects_language_and_translates(base, tmp_path) -> None:
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "de.wav"
    sentence = "Guten Morgen. Heute ist das Wetter sehr schön, und wir gehen in den Park."
    subprocess.run(["espeak-ng", "-v", "de", "-w", str(wav), sentence], check=True)
    audio = load_audio(wav)
    spoken = transcribe(base.model, base.tokenizer, audio)
    assert spoken.language == "de"
    assert "park" in normalize(spoken.text) and "morgen" in normalize(spoken.text)
    # Greedy: espeak's German translates at a mean log-probability just under -1, where the fallback
    # would sample (and the test would depend on the draw).
    english = transcribe(base.model, base.tokenizer, audio,
                         TranscribeOptions(decoding=DecodingOptions(task="translate"), temperatures=(0.0,)))
    assert "good morning" in normalize(english.text)
    assert english.language == "de"


def test_multilingual_transcribes_english(base) -> None:
    audio = load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0890.wav")
    result = transcribe(base.model, base.tokenizer, audio)
    assert result.language == "en"
    assert "selfish" in normalize(result.text)
