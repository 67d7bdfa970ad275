"""Writing stream events as they happen: live terminal captions, plain lines of text, or JSON lines."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from streamer.streaming.events import Event, Final, Partial, UtteranceEnd

_DIM, _RESET, _CLEAR = "\033[2m", "\033[0m", "\r\033[K"


def _join(text: str, more: str) -> str:
    if not text or not more or more[0] in ".,!?;:":
        return text + more
    return f"{text} {more}"


class EventWriter:
    """Writes events (or their protocol messages) to ``out``: ``jsonl`` (every event, one JSON object
    per line, flushed), ``text`` on a terminal (the utterance's finals, then its partial tail dimmed,
    rewritten in place), or ``text`` elsewhere (each utterance's final text as one line when it ends)."""

    def __init__(self, out: TextIO, fmt: str = "text", live: bool | None = None, word_timestamps: bool = True):
        self.out = out
        self.fmt = fmt
        self.live = out.isatty() if live is None else live
        self.word_timestamps = word_timestamps
        self._line = ""
        self._partial = ""
        self._lock = threading.Lock()

    def __call__(self, events: list[Event]) -> None:
        self.write([
            e.to_dict(self.word_timestamps) if isinstance(e, Partial | Final) else e.to_dict() for e in events
            if not isinstance(e, UtteranceEnd)  # the messages are protocol v1's
        ])

    def write(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Protocol messages (docs/protocol.md), as a client receives them."""
        with self._lock:
            for message in messages:
                self._write(message)
            self.out.flush()

    def _write(self, message: Mapping[str, Any]) -> None:
        if self.fmt == "jsonl":
            self.out.write(json.dumps(message, ensure_ascii=False) + "\n")
        elif message["type"] == "final":
            self._line = _join(self._line, message["text"])
            self._render()
            if message.get("closes"):
                self.end_line()
        elif message["type"] == "partial":
            self._partial = message["text"]
            self._render()

    def _render(self) -> None:
        if self.live:
            tail = f" {_DIM}{self._partial}{_RESET}" if self._partial else ""
            self.out.write(f"{_CLEAR}{self._line}{tail}")

    def end_line(self) -> None:
        """Close the current utterance's line (at speech end and at the end of the stream)."""
        if self._line or (self.live and self._partial):
            if self.live:
                self.out.write(f"{_CLEAR}{self._line}\n")
            else:
                self.out.write(self._line + "\n")
        self._line = self._partial = ""

    def close(self) -> None:
        with self._lock:
            if self.fmt != "jsonl":
                self.end_line()
            self.out.flush()
