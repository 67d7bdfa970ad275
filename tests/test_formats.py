from __future__ import annotations

from streamer.formats import word_cues


def timed(text: str, gap_after: dict[int, float] | None = None) -> list[tuple[str, float, float]]:
    words, t = [], 0.0
    for i, w in enumerate(text.split()):
        words.append((w, t, t + 0.3))
        t += 0.35 + (gap_after or {}).get(i, 0.0)
    return words


def test_cues_break_after_sentences_but_not_after_titles() -> None:
    cues = word_cues(timed("And Mr. John Dashwood had then leisure. He was not an ill disposed young man."))
    assert [c.text for c in cues] == [
        "And Mr. John Dashwood had then leisure.", "He was not an ill disposed young man.",
    ]


def test_cues_break_at_pauses_and_length() -> None:
    cues = word_cues(timed("one two three four", gap_after={1: 2.0}))
    assert [c.text for c in cues] == ["one two", "three four"]
    long = word_cues(timed(" ".join(["word"] * 40)), max_chars=42)
    assert all(len(c.text) <= 42 for c in long) and sum(len(c.text.split()) for c in long) == 40
    assert all(a.end <= b.start for a, b in zip(long, long[1:], strict=False))
