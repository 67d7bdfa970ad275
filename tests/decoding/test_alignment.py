from __future__ import annotations

import numpy as np
import torch

from streamer.audio import load_audio
from streamer.decoding.alignment import dtw, median_filter, split_words
from streamer.engine import Engine, Request
from streamer.mel import N_SAMPLES, log_mel_spectrogram
from tests.conftest import FIXTURES


def test_dtw_follows_the_cheap_diagonal():
    cost = np.ones((3, 6))
    for i, j in ((0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)):
        cost[i, j] = 0.0
    rows, cols = dtw(cost)
    assert list(rows) == [0, 0, 1, 1, 2, 2]
    assert list(cols) == [0, 1, 2, 3, 4, 5]


def test_median_filter_removes_a_spike():
    x = torch.tensor([[0.0, 0.0, 0.0, 9.0, 0.0, 0.0, 0.0]])
    assert median_filter(x, 3).abs().max() == 0


def test_split_words_keeps_punctuation_on_the_word(tiny):
    tok = tiny.tokenizer
    tokens = tok.encode(" Ten of clubs, seven of hearts.")
    assert [tok.decode(w) for w in split_words(tok, tokens)] == [" Ten", " of", " clubs,", " seven", " of", " hearts."]


def test_split_words_starts_a_word_at_the_prefix_end(tiny):
    tok = tiny.tokenizer
    prefix = tok.encode(" of clubs")
    words = split_words(tok, prefix + tok.encode("."), split_at=len(prefix))
    assert [tok.decode(w) for w in words] == [" of", " clubs", "."]


def test_word_times_are_ordered_and_inside_the_audio(tiny):
    audio = load_audio(FIXTURES / "005.wav")
    engine = Engine(tiny, max_batch=1)
    features = engine.encode(log_mel_spectrogram(audio, 80, padding=N_SAMPLES)[None])
    result = engine.decode([Request(features[0], timestamps=False, word_timestamps=True, n_frames=len(audio) // 160)])
    words = result[0].words
    assert words is not None and len(words) >= 6
    assert "".join(w.word for w in words).strip() == result[0].text
    starts = [w.start for w in words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= len(audio) / 16000 + 0.02 for w in words)
    # "seven of hearts" is the last second of the clip
    assert words[-1].start > 2.0
