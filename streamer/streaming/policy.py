"""Pure decisions of the streaming commit policy: agreement between hypotheses and the loop guards."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from streamer.streaming.events import Word

_NOT_WORD = re.compile(r"[^\w]")


@lru_cache(maxsize=65536)  # hypotheses repeat their words: each is compared many times
def word_key(word: str) -> str:
    """A word's identity for agreement: case and punctuation do not count."""
    return _NOT_WORD.sub("", word.lower())


def agreed_prefix(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """LocalAgreement: how many leading words the two hypotheses share."""
    n = 0
    for a, b in zip(previous, current, strict=False):
        if word_key(a.word) != word_key(b.word):
            break
        n += 1
    return n


def shared_tokens(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens two decodes share."""
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def majority_prefix(earlier: Sequence[Sequence[Word]], current: Sequence[Word], min_voters: int) -> int:
    """How many leading words of ``current`` more than half of the hypotheses (``earlier`` and ``current``
    itself) begin with; 0 if there are fewer than ``min_voters`` of them."""
    voters = len(earlier) + 1
    if voters < min_voters:
        return 0
    shared = [agreed_prefix(h, current) for h in earlier]
    n = 0
    while n < len(current) and 2 * (1 + sum(s > n for s in shared)) > voters:
        n += 1
    return n


def ending_by(words: Sequence[Word], limit: float) -> int:
    """How many words end at or before ``limit`` (seconds): the prefix a rule that commits what was
    heard well before the end of the audio may take (words are in order)."""
    return sum(1 for w in words if w.end <= limit)


def find_loop(
    tokens: Sequence[int], fresh_from: int = 0, max_ngram: int = 16, long_ngram: int = 6
) -> int | None:
    """Where a decoding loop starts, as an index into ``tokens``: just after the first copy of an n-gram
    repeated back to back (5 copies of one token, 3 of up to ``long_ngram - 1`` tokens, 2 of longer
    ones), counting only repeats that reach ``tokens[fresh_from:]``; None if there is none.

    For each n, ``tokens[i] == tokens[i + n]`` over a run of positions is a repeat with period n: a run
    of length r starting at s holds r // n + 1 back-to-back copies of ``tokens[s : s + n]``."""
    seq = np.asarray(tokens, dtype=np.int64)
    best: int | None = None
    top = min(max_ngram, len(seq) // 2)
    if top < 1:
        return None
    # A period n needs a run of (copies - 1) * n positions with tokens[i] == tokens[i + n]: only the
    # periods with that many such positions in all (counted for every n at once) are searched below.
    periods = np.arange(1, top + 1)  # (P,)
    ahead = np.arange(len(seq))[None, :] + periods[:, None]  # (P, T)
    same = (ahead < len(seq)) & (seq[np.minimum(ahead, len(seq) - 1)] == seq[None, :])  # (P, T)
    needs = np.where(periods == 1, 5, np.where(periods < long_ngram, 3, 2))  # (P,) copies
    for n in (periods[same.sum(axis=1) >= (needs - 1) * periods]).tolist():
        need = int(needs[n - 1])
        equal = np.concatenate([[False], seq[:-n] == seq[n:], [False]])
        edges = np.flatnonzero(equal[1:] != equal[:-1])  # run starts and ends, alternating
        for run_start, run_end in zip(edges[::2], edges[1::2], strict=True):
            length = int(run_end - run_start)
            # every start s in the run with (length - (s - run_start)) // n + 1 >= need copies
            last_start = run_start + length - (need - 1) * n  # the latest start with enough copies
            if last_start < run_start:
                continue
            for s in range(int(run_start), int(last_start) + 1):
                copies = (length - (s - run_start)) // n + 1
                if s + copies * n > fresh_from:
                    cut = max(s + n, fresh_from)
                    best = cut if best is None else min(best, cut)
                    break
            if best is not None and best <= run_start + n:
                break
    return best
