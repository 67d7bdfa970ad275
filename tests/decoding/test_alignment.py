from __future__ import annotations

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.decoding import alignment
from streamer.decoding.alignment import dtw_row_starts, median_filter, split_words
from streamer.engine import Engine, Request
from streamer.mel import N_SAMPLES, log_mel_spectrogram
from tests.conftest import FIXTURES


def textbook_dtw_row_starts(cost: np.ndarray) -> list[int]:
    """The recurrence cell by cell (diagonal, then down, then right on ties), then the path traced back."""
    n, m = cost.shape
    acc = np.full((n + 1, m + 1), np.inf)
    acc[0, 0] = 0.0
    move = np.full((n + 1, m + 1), 2)
    move[:, 0] = 1
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            c = (acc[i - 1, j - 1], acc[i - 1, j], acc[i, j - 1])
            k = 0 if c[0] < c[1] and c[0] < c[2] else 1 if c[1] < c[0] and c[1] < c[2] else 2
            acc[i, j] = cost[i - 1, j - 1] + c[k]
            move[i, j] = k
    starts = [0] * n
    i, j = n, m
    while i > 0 and j > 0:
        starts[i - 1] = j - 1
        i, j = (i - 1, j - 1) if move[i, j] == 0 else (i - 1, j) if move[i, j] == 1 else (i, j - 1)
    return starts


def test_dtw_follows_the_cheap_diagonal():
    cost = np.ones((3, 6))
    for i, j in ((0, 0), (0, 1), (1, 2), (1, 3), (2, 4), (2, 5)):
        cost[i, j] = 0.0
    starts = dtw_row_starts(torch.from_numpy(cost)[None], torch.tensor([3]), torch.tensor([6]))
    assert starts[0].tolist() == [0, 2, 4]


def test_dtw_row_starts_equal_the_textbook_recurrence():
    rng = np.random.default_rng(0)
    for n, m in ((1, 1), (1, 7), (5, 1), (4, 9), (12, 40), (30, 25)):
        cost = rng.normal(size=(n, m))
        starts = dtw_row_starts(torch.from_numpy(cost)[None], torch.tensor([n]), torch.tensor([m]))
        assert starts[0].tolist() == textbook_dtw_row_starts(cost), (n, m)


def test_a_batch_of_matrices_is_warped_each_within_its_own_size():
    rng = np.random.default_rng(1)
    sizes = [(3, 20), (9, 11), (6, 30)]
    padded = torch.full((3, 9, 30), 1e6, dtype=torch.float64)  # padding would pull a path that saw it
    costs = []
    for b, (n, m) in enumerate(sizes):
        costs.append(rng.normal(size=(n, m)))
        padded[b, :n, :m] = torch.from_numpy(costs[-1])
    starts = dtw_row_starts(padded, torch.tensor([n for n, _ in sizes]), torch.tensor([m for _, m in sizes]))
    for b, (n, _) in enumerate(sizes):
        assert starts[b, :n].tolist() == textbook_dtw_row_starts(costs[b])


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


def test_words_aligned_together_equal_words_aligned_alone(tiny, monkeypatch):
    """Rows of different lengths in one alignment batch get the timings each gets alone (the CPU aligns
    one row at a time by default: here it takes the GPU's batched path)."""
    monkeypatch.setitem(alignment.ALIGN_ROWS, "cpu", 64)
    engine = Engine(tiny, max_batch=4)
    clips = [load_audio(FIXTURES / f"00{n}.wav") for n in (1, 3, 5)]
    mels = torch.stack([log_mel_spectrogram(a, 80, padding=N_SAMPLES)[:, :3000] for a in clips])
    features = engine.encode(mels)
    requests = [
        Request(f, timestamps=False, word_timestamps=True, n_frames=len(a) // 160)
        for f, a in zip(features, clips, strict=True)
    ]
    together = engine.decode(requests)
    for request, result in zip(requests, together, strict=True):
        alone = engine.decode([request])[0]
        assert result.words is not None and alone.words is not None
        assert [(w.word, w.start, w.end) for w in result.words] == [(w.word, w.start, w.end) for w in alone.words]
        assert [w.probability for w in result.words] == pytest.approx([w.probability for w in alone.words], abs=1e-3)
