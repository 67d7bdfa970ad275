"""The events a stream produces, shaped like the WebSocket protocol's server messages.

``partial`` is the current uncommitted tail and replaces the previous one (an empty text clears it);
``final`` is committed text, append-only, never revised. Times are seconds of the stream's audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from streamer.streaming.segmenter import SpeechEnd, SpeechStart


@dataclass(frozen=True)
class Word:
    word: str  # as decoded, with its leading space
    start: float
    end: float
    probability: float
    tokens: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, object]:
        return {"word": self.word.strip(), "start": self.start, "end": self.end, "probability": self.probability}


def _text(words: tuple[Word, ...]) -> str:
    return "".join(w.word for w in words).strip()


@dataclass(frozen=True)
class _Hypothesis:
    words: tuple[Word, ...]
    type = "hypothesis"

    @property
    def text(self) -> str:
        return _text(self.words)

    def to_dict(self, word_timestamps: bool = True) -> dict[str, object]:
        return _hypothesis_dict(self.type, self.words, word_timestamps)


@dataclass(frozen=True)
class Partial(_Hypothesis):
    type = "partial"


@dataclass(frozen=True)
class Final(_Hypothesis):
    closes: bool = False  # the last final of an utterance
    type = "final"

    def to_dict(self, word_timestamps: bool = True) -> dict[str, object]:
        return {**_hypothesis_dict(self.type, self.words, word_timestamps), "closes": self.closes}


def _hypothesis_dict(kind: str, words: tuple[Word, ...], word_timestamps: bool) -> dict[str, object]:
    out: dict[str, object] = {
        "type": kind,
        "text": _text(words),
        "start": words[0].start if words else None,
        "end": words[-1].end if words else None,
    }
    if word_timestamps:
        out["words"] = [w.to_dict() for w in words]
    return out


@dataclass(frozen=True)
class UtteranceEnd:
    """An utterance's last decode is done: all it said is in the finals before this (which may have
    committed every word already, so that no closing final comes). Not a protocol v1 message; the
    other protocols end their utterances on it."""

    t: float  # stream time of the end of the utterance's speech
    type = "utterance_end"

    def to_dict(self) -> dict[str, object]:
        return {"type": self.type, "t": round(self.t, 3)}


Event = SpeechStart | SpeechEnd | Partial | Final | UtteranceEnd
