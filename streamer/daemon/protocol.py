"""Protocol v1, sans I/O: parsing client messages into typed commands, or a ProtocolError with the
error code and the close code the connection ends with. See docs/protocol.md."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from streamer.streaming.sources import ENCODINGS
from streamer.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

# Close codes
NORMAL = 1000
GOING_AWAY = 1001  # server shutting down
UNSUPPORTED = 1003  # audio before start, text where audio belongs, malformed control message
POLICY = 1008  # bad token, bad origin, bad start
TOO_BIG = 1009  # frame over the limit
INTERNAL = 1011
TRY_AGAIN = 1013  # over capacity
UNKNOWN_SESSION = 4404  # a resume of a session this server does not hold: start a new one
SESSION_EXISTS = 4409  # ?session=ID names a session live on this server

MIN_RATE, MAX_RATE = 8000, 48000
MAX_FRAME_SECONDS = 1.0
MAX_TEXT_BYTES = 4096


class ProtocolError(Exception):
    def __init__(self, code: str, message: str, close_code: int):
        super().__init__(message)
        self.code = code
        self.message = message
        self.close_code = close_code

    def to_dict(self) -> dict[str, object]:
        return {"type": "error", "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Start:
    sample_rate: int = 16000
    encoding: str = "pcm_s16le"
    language: str | None = "en"
    task: str = "transcribe"
    partials: bool = True
    word_timestamps: bool = True
    resume: str | None = None  # the id of a dropped session to take up again
    from_index: int = 0  # resume: the index of the first final to send again (the number received)
    given: frozenset[str] = frozenset()  # the fields the client set

    @property
    def sample_bytes(self) -> int:
        return ENCODINGS[self.encoding][1] // 8


@dataclass(frozen=True)
class Control:
    type: str  # finalize, keepalive, end


_START_FIELDS = {"type", "sample_rate", "encoding", "language", "task", "partials", "word_timestamps", "resume", "from"}
MAX_SESSION_ID = 64
_SESSION_ID = re.compile(r"[A-Za-z0-9_-]{8,64}")


def parse_session_id(query: str) -> str | None:
    """The session id a client chose, from the ``session`` parameter of its URL's query (None: none).

    8-64 characters of letters, digits, ``-`` and ``_`` (a UUID is one); a balancer hashes on it, so every
    connection of a session reaches the same replica."""
    values = parse_qs(query, keep_blank_values=True).get("session")
    if values is None:
        return None
    if len(values) != 1 or not _SESSION_ID.fullmatch(values[0]):
        raise ProtocolError(
            "bad_session", "session must be 8-64 letters, digits, - or _ (a UUID), given once", POLICY
        )
    return values[0]


def _json(text: str, close_code: int) -> dict[str, object]:
    if len(text.encode("utf-8", "surrogatepass")) > MAX_TEXT_BYTES:
        raise ProtocolError("message_too_long", f"text messages are at most {MAX_TEXT_BYTES} bytes", close_code)
    try:
        data = json.loads(text)
    except ValueError as e:
        raise ProtocolError("invalid_json", f"not valid JSON: {e}", close_code) from None
    if not isinstance(data, dict):
        raise ProtocolError("invalid_message", "a message must be a JSON object", close_code)
    return data


def parse_start(text: str, multilingual: bool) -> Start:
    data = _json(text, POLICY)
    if data.get("type") != "start":
        raise ProtocolError("expected_start", "the first message must be {\"type\": \"start\", ...}", POLICY)
    unknown = sorted(set(data) - _START_FIELDS)
    if unknown:
        raise ProtocolError("bad_start", f"unknown field(s) in start: {', '.join(unknown)}", POLICY)
    rate = data.get("sample_rate", 16000)
    if not isinstance(rate, int) or isinstance(rate, bool) or not MIN_RATE <= rate <= MAX_RATE:
        message = f"sample_rate must be a whole number {MIN_RATE}-{MAX_RATE}, got {rate!r}"
        raise ProtocolError("bad_start", message, POLICY)
    encoding = data.get("encoding", "pcm_s16le")
    if not isinstance(encoding, str) or encoding not in ENCODINGS:
        raise ProtocolError("bad_start", f"encoding must be one of {', '.join(ENCODINGS)}, got {encoding!r}", POLICY)
    language = data.get("language", "en" if not multilingual else None)
    if language is not None:
        if not isinstance(language, str):
            raise ProtocolError("bad_start", "language must be a language code, name or null", POLICY)
        language = TO_LANGUAGE_CODE.get(language.lower(), language.lower())
        if language not in LANGUAGES:
            raise ProtocolError("bad_start", f"unknown language {data['language']!r}", POLICY)
        if not multilingual and language != "en":
            raise ProtocolError("bad_start", f"this server's model is English-only (language {language!r})", POLICY)
    task = data.get("task", "transcribe")
    if task != "transcribe":
        raise ProtocolError("bad_start", f"task must be 'transcribe' (streaming), got {task!r}", POLICY)
    flags = {}
    for name in ("partials", "word_timestamps"):
        value = data.get(name, True)
        if not isinstance(value, bool):
            raise ProtocolError("bad_start", f"{name} must be true or false, got {value!r}", POLICY)
        flags[name] = value
    resume = data.get("resume")
    if resume is not None and (not isinstance(resume, str) or not 0 < len(resume) <= MAX_SESSION_ID):
        raise ProtocolError("bad_start", "resume must be the session id from a ready message", POLICY)
    from_index = data.get("from", 0)
    if not isinstance(from_index, int) or isinstance(from_index, bool) or from_index < 0:
        raise ProtocolError("bad_start", f"from must be a whole number >= 0, got {from_index!r}", POLICY)
    if "from" in data and resume is None:
        raise ProtocolError("bad_start", "from is only for a start that resumes a session", POLICY)
    given = frozenset(data) - {"type", "resume", "from"}
    return Start(rate, encoding, language if multilingual else "en", task, resume=resume, from_index=from_index,
                 given=given, **flags)


def check_resume(start: Start, original: Start) -> None:
    """A resuming start may repeat the original's settings, but not change them."""
    changed = sorted(
        name for name in start.given if getattr(start, name) != getattr(original, name)
    )
    if changed:
        raise ProtocolError(
            "bad_start", f"a resumed session keeps its settings; these differ: {', '.join(changed)}", POLICY
        )


def parse_control(text: str) -> Control:
    data = _json(text, UNSUPPORTED)
    kind = data.get("type")
    if kind == "start":
        raise ProtocolError("already_started", "this session has already started", UNSUPPORTED)
    if kind not in ("finalize", "keepalive", "end"):
        raise ProtocolError("unknown_type", f"unknown message type {kind!r} (finalize, keepalive, end)", UNSUPPORTED)
    return Control(kind)


def check_frame(frame: bytes, start: Start) -> None:
    if not frame:
        raise ProtocolError("empty_frame", "an audio frame must not be empty", UNSUPPORTED)
    if len(frame) % start.sample_bytes:
        raise ProtocolError(
            "partial_sample", f"a frame of {len(frame)} bytes is not whole {start.encoding} samples", UNSUPPORTED
        )
    if len(frame) > MAX_FRAME_SECONDS * start.sample_rate * start.sample_bytes:
        raise ProtocolError("frame_too_large", f"an audio frame holds at most {MAX_FRAME_SECONDS:g} s", TOO_BIG)
