"""A minute of multi-sentence speech streamed inline: the streamed text is as accurate as offline."""

from __future__ import annotations

import pytest

from streamer.audio import load_audio
from streamer.decoding.transcribe import transcribe
from streamer.textnorm import normalize, word_errors
from tests.conftest import FIXTURES
from tests.streaming.conftest import final_text, stream_inline

GARDEN = FIXTURES / "speech" / "garden.wav"  # 63 s, 14 sentences, 0.2-2 s pauses (bench/speechset.py)


@pytest.mark.slow
def test_streamed_passage_has_no_more_errors_than_offline_transcription_but_two(engine):
    """The guard of issue 16's gap on one of bench/streaming.py's sets (once, on this machine's own CPU
    kernels: it takes 100 s). Measured with tiny.en int8 weights quantised per channel (an experiment;
    the default is per tensor, with which this passes too): 24 errors in 155 words streamed, 23 offline;
    with unlikely words committed after 0.6 s of agreement instead of 0.9 s, 31."""
    audio = load_audio(GARDEN)
    truth = normalize(GARDEN.with_suffix(".txt").read_text()).split()
    offline = normalize(transcribe(engine.model, engine.tokenizer, audio).text).split()
    streamed = normalize(final_text(stream_inline(engine, audio))).split()
    assert word_errors(truth, streamed) <= word_errors(truth, offline) + 2, (streamed, offline)
