"""Wyoming (Home Assistant's voice pipeline) on its own TCP port, ``streamer serve --wyoming-port PORT``.

A thin adapter over the daemon's scheduler and the same streaming session a WebSocket client gets:

- ``describe`` -> ``info``: one ``asr`` program with the daemon's model and its languages, streaming
  transcripts supported;
- ``transcribe {language?}`` sets the language of the next audio;
- ``audio-start {rate, width, channels}`` opens a stream (it counts against ``--max-sessions``; when the
  daemon is full or not ready an ``error`` is sent instead), ``audio-chunk`` feeds it (any rate, 8-32 bit
  PCM, any channel count: mixed to mono and resampled), ``audio-stop`` ends it;
- each committed piece of text goes out at once as a ``transcript-chunk`` (after a ``transcript-start``),
  and after ``audio-stop`` the last ones, the whole ``transcript {text}``, then ``transcript-stop``.

Framing (wyoming 1.x): a JSON header line ``{"type", "data"?, "data_length"?, "payload_length"?}``, then
``data_length`` bytes of JSON merged into ``data``, then ``payload_length`` bytes of payload. Header lines,
data and payloads are bounded; a malformed event closes that connection only.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from streamer import __version__
from streamer.audio import WavFormat
from streamer.daemon.utterances import Refused, StreamLimit, UtteranceStream
from streamer.streaming.events import Final, Partial
from streamer.streaming.sources import PcmDecoder
from streamer.tokenizer import LANGUAGES

if TYPE_CHECKING:
    from streamer.daemon.server import Daemon

log = logging.getLogger(__name__)

MAX_HEADER = 64 * 1024  # bytes of a header line
MAX_DATA = 64 * 1024  # bytes of an event's JSON data
MAX_PAYLOAD = 1 << 20  # bytes of an audio chunk's payload (over 2 s of 48 kHz 32-bit stereo)
WIDTHS = (1, 2, 3, 4)  # bytes per sample: 8-bit unsigned, 16/24/32-bit signed PCM
PROTOCOL_VERSION = "1.8.0"  # the wyoming release whose events these are


class WyomingError(Exception):
    """A malformed event: the connection is closed."""


@dataclass
class WyomingEvent:
    type: str
    data: dict[str, Any]
    payload: bytes = b""


async def read_event(reader: asyncio.StreamReader) -> WyomingEvent | None:
    """The next event, or None at the end of the stream."""
    try:
        line = await reader.readuntil(b"\n")
    except asyncio.IncompleteReadError as e:
        if e.partial.strip():
            raise WyomingError("the connection ended inside a header line") from None
        return None
    except asyncio.LimitOverrunError:
        raise WyomingError(f"a header line over {MAX_HEADER} bytes") from None
    try:
        header = json.loads(line)
    except ValueError:
        raise WyomingError("a header line that is not JSON") from None
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
        raise WyomingError("a header without a type")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise WyomingError("data that is not an object")
    data_length = _length(header, "data_length", MAX_DATA)
    payload_length = _length(header, "payload_length", MAX_PAYLOAD)
    try:
        if data_length:
            extra = json.loads(await reader.readexactly(data_length))
            if not isinstance(extra, dict):
                raise WyomingError("data that is not an object")
            data.update(extra)
        payload = await reader.readexactly(payload_length) if payload_length else b""
    except asyncio.IncompleteReadError:
        raise WyomingError("the connection ended inside an event") from None
    except ValueError:
        raise WyomingError("data that is not JSON") from None
    return WyomingEvent(header["type"], data, payload)


def _length(header: dict[str, Any], name: str, limit: int) -> int:
    value = header.get(name) or 0
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= limit:
        raise WyomingError(f"{name} must be a whole number from 0 to {limit}")
    return value


def encode_event(kind: str, data: dict[str, Any] | None = None, payload: bytes = b"") -> bytes:
    header: dict[str, Any] = {"type": kind, "version": PROTOCOL_VERSION}
    body = json.dumps(data, ensure_ascii=False).encode() if data else b""
    if body:
        header["data_length"] = len(body)
    if payload:
        header["payload_length"] = len(payload)
    return json.dumps(header).encode() + b"\n" + body + payload


class WyomingConnection:
    """One client connection: any number of transcriptions, one after the other. The listener of its
    ``UtteranceStream`` (Wyoming has no revisable text: only the finals go out)."""

    def __init__(self, daemon: Daemon, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.daemon = daemon
        self.reader = reader
        self.writer = writer
        self.language: str | None = None
        self.ustream: UtteranceStream | None = None
        self.texts: list[str] = []  # this transcription's committed pieces
        self.started = False  # transcript-start sent
        self.began = 0.0
        self.refused = False  # this transcription was refused: its chunks are dropped (one error said so)

    def send(self, kind: str, data: dict[str, Any] | None = None) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode_event(kind, data))

    async def serve(self) -> None:
        try:
            while (event := await read_event(self.reader)) is not None:
                await self.handle(event)
                await self.writer.drain()
        except WyomingError as e:
            self.daemon.metrics.error("wyoming_malformed")
            log.info("wyoming client %s: %s; closing it", self.writer.get_extra_info("peername"), e)
            self.send("error", {"text": str(e), "code": "malformed"})
        except ConnectionError:
            pass
        finally:
            self._close_stream()
            self.writer.close()

    async def handle(self, event: WyomingEvent) -> None:
        kind, data = event.type, event.data
        if kind == "describe":
            self.send("info", self.daemon_info())
        elif kind == "transcribe":
            language = data.get("language")
            self.language = language if isinstance(language, str) and language in LANGUAGES else None
        elif kind == "audio-start":
            self.refused = False
            self._open(data)
        elif kind == "audio-chunk":
            if self.ustream is None and not self.refused:
                self._open(data)  # a chunk without audio-start (allowed by the protocol): its format opens it
            if self.ustream is not None:
                try:
                    self.ustream.feed(event.payload)
                except StreamLimit as e:
                    self.daemon.metrics.error(e.code)
                    self.send("error", {"text": str(e), "code": e.code})
                    self._close_stream()
                    self.refused = True
        elif kind == "audio-stop":
            await self._finish()
            self.refused = False
        elif kind == "ping":
            self.send("pong", {"text": data.get("text")} if data.get("text") else None)
        else:
            log.debug("wyoming: ignoring an event of type %r", kind)

    def daemon_info(self) -> dict[str, Any]:
        engine = self.daemon.engine
        multilingual = engine is not None and engine.tokenizer.is_multilingual
        languages = sorted(LANGUAGES) if multilingual else ["en"]
        attribution = {"name": "OpenAI (Whisper); streamer", "url": "https://github.com/openai/whisper"}
        model = {"name": self.daemon.model_name, "attribution": attribution, "installed": True,
                 "description": f"Whisper {self.daemon.model_name}", "version": __version__, "languages": languages}
        program = {"name": "streamer", "attribution": attribution, "installed": True,
                   "description": "streaming Whisper transcription", "version": __version__, "models": [model],
                   "supports_transcript_streaming": True, "requires_external_vad": False}
        return {"asr": [program], "tts": [], "handle": [], "intent": [], "wake": [], "mic": [], "snd": []}

    def _open(self, data: dict[str, Any]) -> None:
        self._close_stream()
        rate, width, channels = data.get("rate"), data.get("width"), data.get("channels")
        if not (isinstance(rate, int) and 8000 <= rate <= 48000 and width in WIDTHS and isinstance(channels, int)
                and 1 <= channels <= 8):
            raise WyomingError("audio needs rate 8000-48000, width 1-4 and channels 1-8")
        config = replace(self.daemon.options.stream, language=self.language or "en")
        decoder = PcmDecoder.for_format(WavFormat(1, channels, rate, 8 * int(width)))
        try:
            self.ustream = UtteranceStream(self.daemon, "wyoming", self, config, decoder)
        except Refused as e:
            self.refused = True
            self.send("error", {"text": str(e), "code": e.reason})
            return
        self.texts, self.started, self.began = [], False, time.monotonic()

    # -- UtteranceListener: only the committed text goes out ------------------------------------------

    def final(self, event: Final) -> None:
        if not event.text.strip():
            return
        if not self.started:
            self.send("transcript-start", {"language": self.language or "en"})
            self.started = True
        self.texts.append(event.text)
        self.send("transcript-chunk", {"text": event.text})

    def failed(self) -> None:
        self.send("error", {"text": "transcription failed on the server", "code": "internal"})
        self._close_stream()

    def speech_started(self, t: float) -> None:
        pass

    def speech_stopped(self, t: float) -> None:
        pass

    def partial(self, event: Partial) -> None:
        pass

    def utterance_ended(self, t: float) -> None:
        pass

    async def _finish(self) -> None:
        if self.ustream is None:
            self.send("transcript", {"text": ""})
            return
        await self.ustream.finish()
        if not self.started:
            self.send("transcript-start", {"language": self.language or "en"})
        text = " ".join(t.strip() for t in self.texts)
        self.send("transcript", {"text": text, "language": self.language or "en"})
        self.send("transcript-stop")
        log.info("wyoming transcription of %.1f s done", time.monotonic() - self.began)
        self._close_stream()

    def _close_stream(self) -> None:
        if self.ustream is not None:
            self.ustream.close()
            self.ustream = None


async def serve_wyoming(daemon: Daemon, host: str, port: int, tasks: set[asyncio.Task[None]]) -> asyncio.Server:
    """Listen for Wyoming clients; each connection is served by a task kept in ``tasks`` until it ends
    (the daemon cancels those left at shutdown)."""

    def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.create_task(WyomingConnection(daemon, reader, writer).serve(), name="wyoming-connection")
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return await asyncio.start_server(connected, host, port, limit=MAX_HEADER)
