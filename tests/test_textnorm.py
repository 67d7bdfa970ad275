from __future__ import annotations

import pytest

from streamer.textnorm import normalize, wer, word_errors


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Ten of Clubs.", "10 of clubs"),
        ("five, five", "5 5"),
        ("twenty-one", "21"),
        ("one hundred and five", "105"),
        ("three thousand two hundred", "3200"),
        ("Mr. Dashwood's", "mister dashwood s"),
        ("ill-disposed", "ill disposed"),
    ],
)
def test_normalize(text, expected):
    assert normalize(text) == expected


def test_word_errors_counts_substitutions_insertions_and_deletions():
    assert word_errors(["a", "b", "c"], ["a", "x", "c", "d"]) == 2
    assert word_errors([], ["a"]) == 1
    assert word_errors(["a", "b"], []) == 2


def test_wer_compares_normalised_text():
    assert wer("Ten of clubs.", "10 of Clubs") == 0.0
    assert wer("ten of clubs", "ten of clothes") == pytest.approx(1 / 3)
