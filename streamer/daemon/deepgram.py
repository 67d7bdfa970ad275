"""Deepgram live transcription on ``/v1/listen`` (WebSocket; ``Authorization: Token T`` or ``Bearer T``),
for clients of ``deepgram-sdk`` and the voice-agent frameworks built on it, pointed at this daemon.

Query: ``encoding=linear16`` (the default), ``sample_rate`` (default 16000), ``channels`` (mixed to mono),
``interim_results``, ``punctuate`` / ``smart_format`` (Whisper punctuates; without them ``transcript`` is
the plain words), ``endpointing`` (ms of silence that end an utterance, at least 300; ``false`` keeps
the default), ``utterance_end_ms`` (send ``UtteranceEnd``), ``vad_events`` (send ``SpeechStarted``),
``language``, ``model`` (accepted; the daemon's model answers). Other parameters are ignored and logged
once per connection.

Binary messages are audio. Out: ``Results`` (``is_final`` for committed text, never revised;
``speech_final`` on the last of an utterance; interim results are the uncommitted tail), ``SpeechStarted``,
``UtteranceEnd``, and ``Metadata`` after ``CloseStream`` (then a 1000 close). Control: ``KeepAlive``
(resets the idle timeout), ``Finalize`` (commit what was heard; its results carry ``from_finalize``),
``CloseStream``. A bad parameter is refused with HTTP 400 before the WebSocket opens; a bad control
message gets an ``Error`` message.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from streamer import __version__
from streamer.daemon.connection import WebSocketConnection
from streamer.daemon.utterances import TRY_AGAIN, Refused, StreamLimit, UtteranceStream, WebSocketAdapter
from streamer.streaming.events import Final, Partial, Word
from streamer.streaming.session import StreamConfig
from streamer.streaming.sources import PcmDecoder
from streamer.tokenizer import LANGUAGES

if TYPE_CHECKING:
    from streamer.daemon.server import Daemon

log = logging.getLogger(__name__)

SUPPORTED = {"encoding", "sample_rate", "channels", "interim_results", "punctuate", "smart_format", "endpointing",
             "utterance_end_ms", "vad_events", "language", "model", "token"}
_PUNCTUATION = "\"'“”‘’«»¿¡.,!?:;…)]}(["
CHANNEL = [0, 1]


class BadParameter(Exception):
    pass


def _flag(query: Any, name: str) -> bool:
    value = str(query.get(name, "false")).lower()
    if value not in ("true", "false"):
        raise BadParameter(f"{name} must be true or false")
    return value == "true"


def _int(query: Any, name: str, default: int, low: int, high: int) -> int:
    value = query.get(name)
    if value is None:
        return default
    if not str(value).isdigit() or not low <= int(value) <= high:
        raise BadParameter(f"{name} must be a whole number from {low} to {high}")
    return int(value)


class ListenOptions:
    """The connection's query, checked (BadParameter otherwise)."""

    def __init__(self, query: Any, multilingual: bool):
        encoding = query.get("encoding", "linear16")
        if encoding != "linear16":
            raise BadParameter(f"encoding {encoding!r} is not supported: send linear16 (16-bit PCM)")
        self.sample_rate = _int(query, "sample_rate", 16000, 8000, 48000)
        self.channels = _int(query, "channels", 1, 1, 8)
        self.interim_results = _flag(query, "interim_results")
        self.punctuate = _flag(query, "punctuate") or _flag(query, "smart_format")
        self.vad_events = _flag(query, "vad_events")
        self.utterance_end = query.get("utterance_end_ms") is not None
        _int(query, "utterance_end_ms", 1000, 1000, 60000)
        endpointing = str(query.get("endpointing", "")).lower()
        if endpointing in ("", "false", "true"):
            self.endpointing_ms: int | None = None
        else:
            self.endpointing_ms = max(300, _int(query, "endpointing", 0, 0, 60000))
        language = str(query.get("language", "en")).lower()
        code = language.split("-")[0]
        if language == "multi" and multilingual:
            self.language: str | None = None
        elif code not in LANGUAGES or (not multilingual and code != "en"):
            raise BadParameter(f"language {language!r} is not available"
                               + ("" if multilingual else ": this server's model is English-only"))
        else:
            self.language = code
        self.model = str(query.get("model", ""))
        self.ignored = sorted(set(query.keys()) - SUPPORTED)


def _plain(word: str) -> str:
    return word.strip().strip(_PUNCTUATION).lower()


class ListenSession(WebSocketAdapter):
    protocol = "deepgram"

    def __init__(self, daemon: Daemon, conn: WebSocketConnection, options: ListenOptions):
        super().__init__(daemon, conn, idle=daemon.options.idle_timeout)
        self.options = options
        self.request_id = str(uuid.uuid4())
        self.model_uuid = str(uuid.uuid5(uuid.NAMESPACE_URL, f"streamer:{daemon.model_name}"))
        self.created = datetime.datetime.now(datetime.UTC).isoformat().replace("+00:00", "Z")
        self.sha256 = hashlib.sha256()
        self.last_closed = True  # the last final closed its utterance (or there was none)
        self.last_end = 0.0
        self.finalize_cut: float | None = None

    def _config(self) -> StreamConfig:
        config = replace(self.daemon.options.stream, language=self.options.language or "en",
                         partials=self.options.interim_results)
        if self.options.endpointing_ms is not None:
            config = replace(config, hangover_ms=self.options.endpointing_ms)
        return config

    async def start(self) -> None:
        if self.options.ignored:
            log.info("deepgram session %s: ignoring parameters %s", self.request_id, ", ".join(self.options.ignored))
        try:
            self.ustream = UtteranceStream(self.daemon, self.protocol, self, self._config(),
                                           PcmDecoder("pcm_s16le", self.options.sample_rate, self.options.channels))
        except Refused as e:  # filled up since the handshake was checked
            await self.close_with(TRY_AGAIN, "over_capacity", str(e))
            return
        await self.run()

    async def on_bytes(self, data: bytes) -> None:
        assert self.ustream is not None
        self.sha256.update(data)
        try:
            self.ustream.feed(data)
        except StreamLimit as e:
            await self.limit_reached(e)

    async def on_text(self, text: str) -> None:
        try:
            message = json.loads(text)
            kind = message["type"] if isinstance(message, dict) else None
        except (ValueError, KeyError):
            kind = None
        if kind == "KeepAlive":
            return
        if kind == "Finalize":
            self._finalize()
        elif kind == "CloseStream":
            await self.on_end()
            self.send(self._metadata())
            await self.close_with(1000, "closed")
        else:
            self.error("INVALID_MESSAGE", "a text message is a JSON control: KeepAlive, Finalize or CloseStream")

    def _finalize(self) -> None:
        assert self.ustream is not None
        cut = self.ustream.finalize()
        if self.ustream.undecoded_before(cut):
            self.finalize_cut = cut
        else:
            self.send(self._results((), True, False, from_finalize=True))

    async def on_end(self) -> None:
        if self.ustream is not None:
            await self.ustream.finish()

    def error(self, code: str, message: str) -> None:
        self.send({"type": "Error", "variant": code, "description": message, "message": message, "code": code})

    # -- messages out ---------------------------------------------------------------------------------

    def _results(self, words: tuple[Word, ...], is_final: bool, speech_final: bool,
                 from_finalize: bool = False) -> dict[str, Any]:
        items = [{"word": _plain(w.word), "start": round(w.start, 3), "end": round(w.end, 3),
                  "confidence": round(w.probability, 4), "punctuated_word": w.word.strip()} for w in words]
        key = "punctuated_word" if self.options.punctuate else "word"
        transcript = " ".join(str(i[key]) for i in items)
        start = words[0].start if words else self.last_end
        end = words[-1].end if words else self.last_end
        confidence = sum(w.probability for w in words) / len(words) if words else 0.0
        model_info = {"name": self.options.model or self.daemon.model_name, "version": __version__,
                      "arch": "whisper"}
        return {
            "type": "Results", "channel_index": CHANNEL, "duration": round(end - start, 3), "start": round(start, 3),
            "is_final": is_final, "speech_final": speech_final, "from_finalize": from_finalize,
            "channel": {"alternatives": [{"transcript": transcript, "confidence": round(confidence, 4),
                                          "words": items}]},
            "metadata": {"request_id": self.request_id, "model_info": model_info, "model_uuid": self.model_uuid},
        }

    def _metadata(self) -> dict[str, Any]:
        received = self.ustream.received if self.ustream is not None else 0.0
        info = {"name": self.options.model or self.daemon.model_name, "version": __version__, "arch": "whisper"}
        return {"type": "Metadata", "transaction_key": "deprecated", "request_id": self.request_id,
                "sha256": self.sha256.hexdigest(), "created": self.created, "duration": round(received, 3),
                "channels": self.options.channels, "models": [self.model_uuid], "model_info": {self.model_uuid: info}}

    def speech_started(self, t: float) -> None:
        if self.options.vad_events:
            self.send({"type": "SpeechStarted", "channel": CHANNEL, "timestamp": round(t, 3)})

    def speech_stopped(self, t: float) -> None:
        pass  # Deepgram says so with speech_final and UtteranceEnd

    def partial(self, event: Partial) -> None:
        if event.words:
            self.send(self._results(event.words, False, False))

    def final(self, event: Final) -> None:
        if not event.words:
            return
        from_finalize = self.finalize_cut is not None and event.words[0].start < self.finalize_cut
        self.last_end = event.words[-1].end
        self.last_closed = event.closes
        self.send(self._results(event.words, True, event.closes, from_finalize))

    def utterance_ended(self, t: float) -> None:
        cut = self.finalize_cut
        from_finalize = cut is not None and t <= cut + 1e-3
        if not self.last_closed:  # its last words were committed before it ended: mark the end
            self.send(self._results((), True, True, from_finalize))
        self.last_closed = True
        if self.options.utterance_end:
            self.send({"type": "UtteranceEnd", "channel": CHANNEL, "last_word_end": round(self.last_end, 3)})
        if cut is not None and self.ustream is not None and not self.ustream.undecoded_before(cut):
            self.finalize_cut = None

    def failed(self) -> None:
        self.error("INTERNAL", "transcription failed on the server")


async def serve_listen(daemon: Daemon, conn: WebSocketConnection) -> None:
    assert daemon.engine is not None  # the endpoint is gated on readiness
    await ListenSession(daemon, conn, ListenOptions(conn.query, daemon.engine.tokenizer.is_multilingual)).start()


def check_handshake(daemon: Daemon, conn: WebSocketConnection) -> tuple[int, str] | None:
    """HTTP 400 for a bad query, 429 when the daemon is full (as Deepgram answers), before the WebSocket."""
    assert daemon.engine is not None
    try:
        ListenOptions(conn.query, daemon.engine.tokenizer.is_multilingual)
    except BadParameter as e:
        daemon.metrics.error("bad_parameter")
        return 400, f"{e}\n"
    why = daemon.readiness()
    if why is not None:
        daemon.metrics.error("over_capacity")
        return 429, f"the server takes no new stream now ({why})\n"
    return None
