"""Writing transcripts: plain text, JSON, SRT and WebVTT."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass

from streamer.decoding.transcribe import Transcript

FORMATS = ("text", "json", "srt", "vtt")


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def timestamp(seconds: float, decimal: str) -> str:
    """01:02:03,456 (SRT, decimal ',') or 01:02:03.456 (WebVTT, decimal '.')."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def to_srt(cues: Iterable[Cue]) -> str:
    blocks = [
        f"{i}\n{timestamp(c.start, ',')} --> {timestamp(c.end, ',')}\n{c.text.strip()}\n"
        for i, c in enumerate(cues, start=1)
    ]
    return "\n".join(blocks)


def to_vtt(cues: Iterable[Cue]) -> str:
    blocks = [f"{timestamp(c.start, '.')} --> {timestamp(c.end, '.')}\n{c.text.strip()}\n" for c in cues]
    return "WEBVTT\n\n" + "\n".join(blocks)


def transcript_cues(transcript: Transcript) -> list[Cue]:
    return [Cue(s.start, s.end, s.text) for s in transcript.segments]


def format_transcript(transcript: Transcript, fmt: str, source: str) -> str:
    if fmt == "text":
        return transcript.text + "\n"
    if fmt == "json":
        data = {
            "file": source,
            "language": transcript.language,
            "duration": round(transcript.duration, 3),
            "text": transcript.text,
            "segments": [
                {
                    "start": round(s.start, 3),
                    "end": round(s.end, 3),
                    "text": s.text.strip(),
                    "avg_logprob": round(s.avg_logprob, 4),
                    "no_speech_prob": round(s.no_speech_prob, 4),
                    "temperature": s.temperature,
                    "compression_ratio": round(s.compression_ratio, 3),
                }
                for s in transcript.segments
            ],
        }
        return json.dumps(data, ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(transcript_cues(transcript))
    if fmt == "vtt":
        return to_vtt(transcript_cues(transcript))
    raise ValueError(f"unknown format {fmt!r}")


_ABBREVIATIONS = {"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "prof.", "vs.", "etc.", "e.g.", "i.e.", "no."}


def _sentence_end(text: str) -> bool:
    """The cue so far ends a sentence (and is long enough to stand alone)."""
    last = text.rsplit(" ", 1)[-1].lower()
    return len(text) >= 16 and text[-1] in ".?!" and last not in _ABBREVIATIONS


def word_cues(
    words: Iterable[tuple[str, float, float]], max_chars: int = 84, max_seconds: float = 7.0, max_gap: float = 1.0
) -> list[Cue]:
    """Caption cues from timed words (text, start, end): a new cue after a sentence's end, before a
    pause over ``max_gap``, and before the cue would pass ``max_chars`` characters or ``max_seconds``."""
    cues: list[Cue] = []
    text, start, end = "", 0.0, 0.0
    for word, w_start, w_end in words:
        word = word.strip()
        if not word:
            continue
        if text and (
            len(text) + 1 + len(word) > max_chars or w_end - start > max_seconds or w_start - end > max_gap
            or _sentence_end(text)
        ):
            cues.append(Cue(start, end, text))
            text = ""
        if not text:
            text, start = word, w_start
        else:
            text = text + word if word[0] in ",.;:!?%" else f"{text} {word}"
        end = max(w_end, start)
    if text:
        cues.append(Cue(start, end, text))
    return cues
