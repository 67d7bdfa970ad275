"""Text normalisation and word error rate, to compare transcripts (tests, benchmarks).

``normalize`` lower-cases, turns punctuation (hyphens and apostrophes included) into spaces, spells
common titles out and writes English numbers as digits ("twenty one" -> "21", "ten" -> "10"), so that
"10 of clubs" and "Ten of clubs." compare equal. It is an evaluation aid, far simpler than Whisper's
English normaliser, and never touches what users see.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

_ONES_WORDS = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
    "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen",
)
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_ONES = {w: i for i, w in enumerate(_ONES_WORDS)}
_TENS = {w: 10 * i for i, w in enumerate(_TENS_WORDS, start=2)}
_SCALES = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_TITLES = {"mr": "mister", "mrs": "missus", "dr": "doctor", "st": "saint"}


def _numbers(words: list[str]) -> list[str]:
    """Spelled-out numbers -> digits; a number ends where the next word cannot continue it."""
    out: list[str] = []
    total: int | None = None  # value of the number being read, completed scales included
    part = 0  # the part below the current scale
    last = ""  # kind of the last number word: "one", "ten", "tens" or "scale"

    def close() -> None:
        nonlocal total, part, last
        if total is not None:
            out.append(str(total + part))
        total, part, last = None, 0, ""

    for word in words:
        if word in _ONES:
            kind = "ten" if _ONES[word] >= 10 else "one"
            if total is not None and not (last == "tens" and kind == "one") and last != "scale":
                close()
            if total is None:
                total = 0
            part += _ONES[word]
            last = kind
        elif word in _TENS:
            if total is not None and last != "scale":
                close()
            if total is None:
                total = 0
            part += _TENS[word]
            last = "tens"
        elif word in _SCALES and total is not None and last != "scale":
            scale = _SCALES[word]
            if scale == 100:
                part *= 100
            else:
                total += max(part, 1) * scale
                part = 0
            last = "scale"
        elif word == "and" and last == "scale":
            continue
        else:
            close()
            out.append(word)
    close()
    return out


def normalize(text: str) -> str:
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    return " ".join(_numbers([_TITLES.get(w, w) for w in words]))


def word_errors(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Substitutions + insertions + deletions that turn ``reference`` into ``hypothesis`` (Levenshtein on words)."""
    d = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        prev, d[0] = d[0], i
        for j, h in enumerate(hypothesis, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (r != h))
    return d[len(hypothesis)]


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of ``hypothesis`` against ``reference``, both normalised."""
    ref, hyp = normalize(reference).split(), normalize(hypothesis).split()
    return word_errors(ref, hyp) / max(1, len(ref))
