"""Pure decisions of the streaming commit policy: agreement between hypotheses and the loop guards."""

from __future__ import annotations

import re
from collections.abc import Sequence

from streamer.streaming.events import Word


def word_key(word: str) -> str:
    """A word's identity for agreement: case and punctuation do not count."""
    return re.sub(r"[^\w]", "", word.lower())


def agreed_prefix(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """LocalAgreement: how many leading words the two hypotheses share."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if word_key(a.word) != word_key(b.word):
            break
        n += 1
    return n


def find_loop(
    tokens: Sequence[int], fresh_from: int = 0, max_ngram: int = 16, long_ngram: int = 6
) -> int | None:
    """Where a decoding loop starts, as an index into ``tokens``: just after the first copy of an n-gram
    repeated back to back (5 copies of one token, 3 of up to ``long_ngram - 1`` tokens, 2 of longer
    ones), counting only repeats that reach ``tokens[fresh_from:]``; None if there is none."""
    seq = list(tokens)
    best: int | None = None
    for n in range(1, max_ngram + 1):
        need = 5 if n == 1 else 3 if n < long_ngram else 2
        for s in range(0, len(seq) - n * need + 1):
            gram = seq[s : s + n]
            copies = 1
            while seq[s + copies * n : s + (copies + 1) * n] == gram:
                copies += 1
            if copies >= need and s + copies * n > fresh_from:
                cut = max(s + n, fresh_from)
                best = cut if best is None else min(best, cut)
                break
    return best
