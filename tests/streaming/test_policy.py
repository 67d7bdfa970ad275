from __future__ import annotations

from streamer.streaming.events import Word
from streamer.streaming.policy import agreed_prefix, find_loop, word_key


def words(*texts: str) -> list[Word]:
    return [Word(f" {t}", float(i), float(i) + 0.5, 0.9) for i, t in enumerate(texts)]


def test_agreement_ignores_case_and_punctuation():
    assert word_key(" Clubs.") == "clubs"
    assert agreed_prefix(words("He", "was", "not."), words("he", "was", "not", "an")) == 3


def test_agreement_stops_at_the_first_difference():
    assert agreed_prefix(words("ten", "of", "clothes"), words("ten", "of", "clubs")) == 2
    assert agreed_prefix([], words("a")) == 0


def test_no_loop_in_ordinary_text():
    assert find_loop([1, 2, 3, 4, 5, 6, 7, 8]) is None
    assert find_loop([5, 5, 5, 5]) is None  # "no no no no" is speech


def test_short_ngram_repeated_three_times_is_a_loop():
    assert find_loop([9, 1, 2, 1, 2, 1, 2]) == 3


def test_long_ngram_repeated_twice_is_a_loop():
    sentence = list(range(10, 20))
    assert find_loop(sentence + sentence) == 10


def test_only_repeats_reaching_the_fresh_tokens_count():
    sentence = list(range(10, 20))
    assert find_loop(sentence + sentence + [1], fresh_from=21) is None  # already committed
    assert find_loop(sentence + sentence, fresh_from=10) == 10  # the new text repeats the committed
