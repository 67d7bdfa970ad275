"""OpenAI Realtime transcription on ``/v1/realtime?intent=transcription`` (WebSocket, Bearer token), for
clients of the ``openai`` SDK's ``realtime.connect``.

The server opens with ``session.created``; ``session.update`` (GA: ``session.type: "transcription"``,
``audio.input.format {"type": "audio/pcm", "rate"}``, ``audio.input.transcription {model, language,
prompt}``, ``audio.input.turn_detection``) or the beta ``transcription_session.update`` is answered with
``session.updated`` / ``transcription_session.updated``. Audio comes as ``input_audio_buffer.append``
(base64 PCM16 mono, 24 kHz unless the session says otherwise).

With ``server_vad`` turn detection (the default) each utterance the VAD hears is an item:
``input_audio_buffer.speech_started``, then ``...delta`` events for its text as it is committed,
``speech_stopped`` and ``committed`` when it ends, and ``conversation.item.input_audio_transcription
.completed`` with the whole utterance once its last decode is done. ``silence_duration_ms`` and
``prefix_padding_ms`` set the VAD's hangover and pre-roll. With ``turn_detection: null`` the client
cuts items with ``input_audio_buffer.commit`` (``committed`` at once, ``completed`` when the audio before
the commit is transcribed); deltas still stream while it speaks. ``input_audio_buffer.clear`` drops the
uncommitted audio. Errors are ``error`` events of the Realtime shape; a client far ahead of real time is
closed with 1008, a clean end with 1000.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
from collections import deque
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from streamer.daemon.connection import WebSocketConnection
from streamer.daemon.utterances import Refused, StreamLimit, UtteranceStream, WebSocketAdapter
from streamer.streaming.events import Final, Partial
from streamer.streaming.sources import PcmDecoder
from streamer.tokenizer import LANGUAGES

if TYPE_CHECKING:
    from streamer.daemon.server import Daemon

log = logging.getLogger(__name__)

DEFAULT_RATE = 24000
DEFAULT_TURN_DETECTION: dict[str, Any] = {"type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                                          "silence_duration_ms": 500}


class RealtimeError(Exception):
    def __init__(self, code: str, message: str, param: str | None = None):
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(10)}"


@dataclass
class Item:
    id: str = field(default_factory=lambda: _id("item"))
    texts: list[str] = field(default_factory=list)
    until: float | None = None  # manual turns: the stream time its commit cut the audio at
    committed: bool = False

    @property
    def transcript(self) -> str:
        return " ".join(self.texts)


@dataclass
class Settings:
    rate: int = DEFAULT_RATE
    language: str | None = None
    prompt: str = ""
    model: str = ""
    turn_detection: dict[str, Any] | None = field(default_factory=lambda: dict(DEFAULT_TURN_DETECTION))


class RealtimeSession(WebSocketAdapter):
    protocol = "realtime"

    def __init__(self, daemon: Daemon, conn: WebSocketConnection):
        super().__init__(daemon, conn)
        self.id = _id("sess")
        self.settings = Settings(model=daemon.model_name)
        self.beta = False  # the client spoke the beta event names
        self.items: deque[Item] = deque()  # open items, oldest first
        self.previous_item_id: str | None = None
        self.offset = 0.0  # seconds of audio in streams dropped by input_audio_buffer.clear
        self.pending_audio = False  # audio appended since the last commit
        self.client_event: str | None = None

    # -- messages in ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self.send({"type": "session.created", "event_id": _id("event"), "session": self.session_object()})
        await self.run()

    async def on_bytes(self, data: bytes) -> None:
        self.error("invalid_request_error", "binary messages are not Realtime events: send JSON")

    async def on_text(self, text: str) -> None:
        try:
            event = json.loads(text)
        except ValueError:
            self.error("invalid_json", "the event is not JSON")
            return
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            self.error("invalid_request_error", "an event is a JSON object with a type")
            return
        self.client_event = event.get("event_id") if isinstance(event.get("event_id"), str) else None
        kind = event["type"]
        try:
            if kind == "input_audio_buffer.append":
                self._append(event)
            elif kind == "input_audio_buffer.commit":
                self._commit()
            elif kind == "input_audio_buffer.clear":
                self._clear()
            elif kind == "session.update":
                self._update(event.get("session"), beta=False)
            elif kind == "transcription_session.update":
                self._update(event.get("session"), beta=True)
            else:
                raise RealtimeError("unknown_event", f"unsupported event type {kind!r}", "type")
        except RealtimeError as e:
            self.error(e.code, e.message, e.param)
        except Refused as e:
            self.error("server_busy", str(e))
        except StreamLimit as e:
            await self.limit_reached(e)

    def _append(self, event: dict[str, Any]) -> None:
        audio = event.get("audio")
        if not isinstance(audio, str):
            raise RealtimeError("invalid_value", "audio must be base64 PCM16", "audio")
        try:
            data = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            raise RealtimeError("invalid_value", "audio is not valid base64", "audio") from None
        if len(data) % 2:
            raise RealtimeError("invalid_value", "PCM16 audio has an even number of bytes", "audio")
        if self.ustream is None:
            self.ustream = self._open()
        self.pending_audio = self.pending_audio or bool(data)
        self.ustream.feed(data)

    def _open(self) -> UtteranceStream:
        settings = self.settings
        stream_config = self.daemon.options.stream
        config = replace(stream_config, language=settings.language or "en", partials=False,
                         initial_prompt=tuple(self._prompt_tokens(settings.prompt)))
        vad = settings.turn_detection
        if vad is not None:
            config = replace(config, hangover_ms=int(vad.get("silence_duration_ms", stream_config.hangover_ms)),
                             pre_roll_ms=int(vad.get("prefix_padding_ms", stream_config.pre_roll_ms)))
        return UtteranceStream(self.daemon, self.protocol, self, config, PcmDecoder("pcm_s16le", settings.rate))

    def _prompt_tokens(self, prompt: str) -> list[int]:
        if not prompt.strip():
            return []
        assert self.daemon.engine is not None
        return self.daemon.engine.tokenizer.encode(" " + prompt.strip())

    def _commit(self) -> None:
        if self.ustream is None or not self.pending_audio:
            raise RealtimeError("input_audio_buffer_commit_empty", "no audio was appended since the last commit")
        cut = self.ustream.finalize()
        self.pending_audio = False
        item = self._open_item()
        item.until = cut
        self._committed(item)
        self._complete_settled()

    def _clear(self) -> None:
        if self.ustream is not None:
            for item in [i for i in self.items if i.committed]:
                self._completed(item)  # what was transcribed of them
            self.offset += self.ustream.received
            self.ustream.close()
            self.ustream = None
        self.items.clear()
        self.pending_audio = False
        self.send({"type": "input_audio_buffer.cleared", "event_id": _id("event")})

    def _update(self, session: Any, beta: bool) -> None:
        if not isinstance(session, dict):
            raise RealtimeError("invalid_value", "session must be an object", "session")
        self.beta = beta
        settings = replace(self.settings)
        if beta:
            fmt = session.get("input_audio_format")
            if fmt is not None and fmt != "pcm16":
                raise RealtimeError("invalid_value", "input_audio_format: only pcm16 is supported",
                                    "session.input_audio_format")
            transcription = session.get("input_audio_transcription")
            has_turns = "turn_detection" in session
            turns = session.get("turn_detection")
        else:
            kind = session.get("type", "transcription")
            if kind != "transcription":
                raise RealtimeError("invalid_value", "this server only transcribes: session.type must be "
                                    "transcription", "session.type")
            audio_in = (session.get("audio") or {}).get("input") or {}
            fmt = audio_in.get("format")
            if fmt is not None:
                if not isinstance(fmt, dict) or fmt.get("type", "audio/pcm") != "audio/pcm":
                    raise RealtimeError("invalid_value", "audio.input.format: only audio/pcm is supported",
                                        "session.audio.input.format")
                rate = fmt.get("rate", DEFAULT_RATE)
                if not isinstance(rate, int) or not 8000 <= rate <= 48000:
                    raise RealtimeError("invalid_value", "audio.input.format.rate must be 8000-48000",
                                        "session.audio.input.format.rate")
                settings.rate = rate
            transcription = audio_in.get("transcription")
            has_turns = "turn_detection" in audio_in
            turns = audio_in.get("turn_detection")
        if isinstance(transcription, dict):
            self._transcription(settings, transcription)
        if has_turns:
            if turns is not None and (not isinstance(turns, dict) or turns.get("type", "server_vad") not in
                                      ("server_vad", "semantic_vad")):
                raise RealtimeError("invalid_value", "turn_detection is server_vad or null", "turn_detection")
            settings.turn_detection = None if turns is None else {**DEFAULT_TURN_DETECTION, **turns,
                                                                  "type": "server_vad"}
        if self.ustream is not None and (settings.rate, settings.language, settings.prompt) != (
                self.settings.rate, self.settings.language, self.settings.prompt):
            raise RealtimeError("session_update_after_audio", "the audio format, language and prompt are set "
                                "before the first audio (or after input_audio_buffer.clear)")
        self.settings = settings
        kind = "transcription_session.updated" if beta else "session.updated"
        self.send({"type": kind, "event_id": _id("event"), "session": self.session_object()})

    def _transcription(self, settings: Settings, transcription: dict[str, Any]) -> None:
        assert self.daemon.engine is not None
        language = transcription.get("language")
        if language:
            if language not in LANGUAGES:
                raise RealtimeError("invalid_value", f"language {language!r} is not an ISO-639-1 code Whisper "
                                    "knows", "language")
            if not self.daemon.engine.tokenizer.is_multilingual and language != "en":
                raise RealtimeError("invalid_value", "this server's model is English-only: language must be en",
                                    "language")
        settings.language = language or None
        settings.prompt = str(transcription.get("prompt") or "")
        settings.model = str(transcription.get("model") or self.daemon.model_name)

    def session_object(self) -> dict[str, Any]:
        s = self.settings
        transcription = {"model": s.model, "language": s.language, "prompt": s.prompt}
        if self.beta:
            return {"id": self.id, "object": "realtime.transcription_session", "input_audio_format": "pcm16",
                    "input_audio_transcription": transcription, "turn_detection": s.turn_detection,
                    "input_audio_noise_reduction": None, "include": []}
        audio_in = {"format": {"type": "audio/pcm", "rate": s.rate}, "transcription": transcription,
                    "noise_reduction": None, "turn_detection": s.turn_detection}
        return {"type": "transcription", "id": self.id, "object": "realtime.transcription_session",
                "audio": {"input": audio_in}, "include": []}

    # -- events out (UtteranceListener) ---------------------------------------------------------------

    def _ms(self, t: float) -> int:
        return int(round((self.offset + t) * 1000))

    def _open_item(self) -> Item:
        """The item new text goes to: the oldest one not yet cut by a commit (a new one if none)."""
        for item in self.items:
            if item.until is None and not item.committed:
                return item
        item = Item()
        self.items.append(item)
        return item

    def _committed(self, item: Item) -> None:
        item.committed = True
        self.send({"type": "input_audio_buffer.committed", "event_id": _id("event"), "item_id": item.id,
                   "previous_item_id": self.previous_item_id})
        self.previous_item_id = item.id

    def _completed(self, item: Item) -> None:
        self.send({"type": "conversation.item.input_audio_transcription.completed", "event_id": _id("event"),
                   "item_id": item.id, "content_index": 0, "transcript": item.transcript})

    def _complete_settled(self) -> None:
        """Manual turns: items whose audio up to their commit is all transcribed are completed."""
        assert self.ustream is not None
        while self.items:
            cut = self.items[0].until
            if cut is None or self.ustream.undecoded_before(cut):
                return
            self._completed(self.items.popleft())

    def speech_started(self, t: float) -> None:
        if self.settings.turn_detection is None:
            return
        item = Item()
        self.items.append(item)
        self.send({"type": "input_audio_buffer.speech_started", "event_id": _id("event"),
                   "audio_start_ms": self._ms(t), "item_id": item.id})

    def speech_stopped(self, t: float) -> None:
        if self.settings.turn_detection is None or not self.items:
            return
        item = self.items[-1]
        self.send({"type": "input_audio_buffer.speech_stopped", "event_id": _id("event"),
                   "audio_end_ms": self._ms(t), "item_id": item.id})
        if not item.committed:
            self._committed(item)

    def partial(self, event: Partial) -> None:
        pass  # Realtime has no replaceable text: only what is committed is sent

    def final(self, event: Final) -> None:
        if not event.text:
            return
        # the oldest item whose audio this is: not cut by a commit, or cut after these words begin
        item = next((i for i in self.items if i.until is None or event.words[0].start < i.until), None)
        if item is None:
            item = self._open_item()
        delta = event.text if not item.texts else " " + event.text
        item.texts.append(event.text)
        self.send({"type": "conversation.item.input_audio_transcription.delta", "event_id": _id("event"),
                   "item_id": item.id, "content_index": 0, "delta": delta})

    def utterance_ended(self, t: float) -> None:
        if self.settings.turn_detection is None or (self.items and self.items[0].until is not None):
            self._complete_settled()  # turns cut by commits
            return
        if self.items:
            item = self.items.popleft()
            if not item.committed:
                self._committed(item)
            self._completed(item)

    def failed(self) -> None:
        self.error("server_error", "transcription failed on the server", kind="server_error")

    def error(self, code: str, message: str, param: str | None = None, kind: str = "invalid_request_error") -> None:
        self.send({"type": "error", "event_id": _id("event"),
                   "error": {"type": kind, "code": code, "message": message, "param": param,
                             "event_id": self.client_event}})

    async def on_end(self) -> None:
        if self.ustream is not None:
            await self.ustream.finish()
            for item in list(self.items):
                if item.texts:
                    if not item.committed:
                        self._committed(item)
                    self._completed(item)
            self.items.clear()


async def serve_realtime(daemon: Daemon, conn: WebSocketConnection) -> None:
    await RealtimeSession(daemon, conn).start()


def check_handshake(daemon: Daemon, conn: WebSocketConnection) -> tuple[int, str] | None:
    """Only transcription sessions (HTTP 400 otherwise); 429 when the daemon is full."""
    intent = conn.query.get("intent", "transcription")
    if intent != "transcription":
        return 400, "this server transcribes only: connect with ?intent=transcription\n"
    why = daemon.readiness()
    if why is not None:
        daemon.metrics.error("over_capacity")
        return 429, f"the server takes no new stream now ({why})\n"
    return None
