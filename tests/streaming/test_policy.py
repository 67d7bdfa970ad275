from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streamer.streaming.events import Word
from streamer.streaming.policy import agreed_prefix, ending_by, find_loop, majority_prefix, word_key


def words(*texts: str) -> list[Word]:
    return [Word(f" {t}", float(i), float(i) + 0.5, 0.9) for i, t in enumerate(texts)]


def test_agreement_ignores_case_and_punctuation():
    assert word_key(" Clubs.") == "clubs"
    assert agreed_prefix(words("He", "was", "not."), words("he", "was", "not", "an")) == 3


def test_agreement_stops_at_the_first_difference():
    assert agreed_prefix(words("ten", "of", "clothes"), words("ten", "of", "clubs")) == 2
    assert agreed_prefix([], words("a")) == 0


def test_ending_by_counts_the_words_that_end_by_the_limit():
    heard = words("the", "sea", "looked", "grey")  # they end at 0.5, 1.5, 2.5 and 3.5 s
    assert ending_by(heard, 2.5) == 3
    assert ending_by(heard, 2.49) == 2
    assert ending_by(heard, 0.1) == 0


def test_majority_prefix_is_what_most_hypotheses_begin_with():
    earlier = [words("And", "Mr.", "John"), words("Mr.", "John"), words("And", "Mr."), words("And", "Mr.", "Jon")]
    assert majority_prefix(earlier, words("And", "Mr.", "John", "had"), 4) == 2  # 4 of 5 say "And Mr."
    assert majority_prefix(earlier, words("Mr.", "John", "had"), 4) == 0  # 2 of 5 begin without "And"


def test_majority_prefix_needs_enough_voters():
    earlier = [words("Unless", "to"), words("Unless", "to")]
    assert majority_prefix(earlier, words("Unless", "to", "be"), 3) == 2
    assert majority_prefix(earlier, words("Unless", "to", "be"), 4) == 0
    assert majority_prefix([words("I'd", "less"), words("Unless")], words("Unless", "to"), 3) == 1


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


def _loop_by_definition(tokens: list[int], fresh_from: int, max_ngram: int = 16, long_ngram: int = 6) -> int | None:
    """find_loop's contract spelled out: over every start s and period n, count the back-to-back copies of
    tokens[s : s + n]; enough of them, reaching the fresh tokens, cut the text after the first copy."""
    cuts = []
    for n in range(1, max_ngram + 1):
        need = 5 if n == 1 else 3 if n < long_ngram else 2
        for s in range(len(tokens)):
            run = 0
            while s + run + n < len(tokens) and tokens[s + run] == tokens[s + run + n]:
                run += 1
            copies = run // n + 1
            if copies >= need and s + copies * n > fresh_from:
                cuts.append(max(s + n, fresh_from))
    return min(cuts, default=None)


@settings(max_examples=400, deadline=None)
@given(st.data())
def test_loop_found_is_the_earliest_cut_of_any_period(data):
    alphabet = data.draw(st.integers(1, 6))
    tokens = data.draw(st.lists(st.integers(0, alphabet), max_size=48))
    if tokens and data.draw(st.booleans()):  # a repeated n-gram somewhere, as loops look
        at = data.draw(st.integers(0, len(tokens) - 1))
        gram = tokens[at : at + data.draw(st.integers(1, 9))]
        tokens[at:at] = gram * data.draw(st.integers(1, 5))
    fresh_from = data.draw(st.integers(0, len(tokens)))
    assert find_loop(tokens, fresh_from) == _loop_by_definition(tokens, fresh_from)
