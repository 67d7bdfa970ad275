"""OpenAI-compatible audio REST on the daemon's port: ``POST /v1/audio/transcriptions``,
``POST /v1/audio/translations`` and ``GET /v1/models``, for clients that take an OpenAI base URL.

A request is a multipart form: ``file`` (any format ffmpeg reads; WAV without it), ``model`` (accepted;
the daemon's model answers), ``language``, ``prompt``, ``response_format`` (``json``, ``text``, ``srt``,
``vtt``, ``verbose_json``; with ``timestamp_granularities[]=word`` it lists words too), ``temperature``
(0: Whisper's fallback schedule; above: sampling at that temperature) and ``stream=true`` (Server-Sent
Events: ``transcript.text.delta`` per segment as it is decoded, then ``transcript.text.done``).

The file is transcribed like ``streamer transcribe`` does it (offline, 30 s windows, previous text as
context), on the daemon's model, on one worker thread of its own: a file never waits behind live
streams' windows, nor they behind it. A request in progress counts against ``--max-sessions``.
Errors have OpenAI's shape ``{"error": {"message", "type", "param", "code"}}``: 400 bad form or audio,
401 token, 413 over ``--max-upload-mb``, 429 full, 503 starting or shutting down.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Message, Receive

from streamer.audio import load_audio_bytes
from streamer.daemon.http import offered_token, token_matches
from streamer.errors import AudioFileError
from streamer.tokenizer import LANGUAGES
from streamer.torch_threads import call_in_thread, use_threads

if TYPE_CHECKING:
    import numpy as np

    from streamer.daemon.server import Daemon
    from streamer.decoding.transcribe import Segment, Transcript
    from streamer.decoding.words import Word
    from streamer.engine import Engine

log = logging.getLogger(__name__)

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
MAX_FIELDS = 32


class ApiError(Exception):
    """An error answered in OpenAI's shape."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers

    def response(self) -> JSONResponse:
        body = {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, self.status, headers=self.headers)


class _Cancelled(Exception):
    """The client went away: the file's transcription stops at its next window."""


@dataclass(frozen=True)
class Params:
    task: str
    language: str | None
    prompt: str | None
    response_format: str
    temperature: float
    words: bool
    stream: bool


def parse_params(form: FormData, task: str, multilingual: bool) -> Params:
    """The form's fields, checked (ApiError 400 naming the field otherwise)."""

    def field(name: str) -> str | None:
        value = form.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise ApiError(400, f"{name} must be a text field", name)
        return value

    if task == "translate" and not multilingual:
        raise ApiError(400, "translation needs a multilingual model; this server's model is English-only", "model",
                       "model_not_multilingual")
    language = field("language")
    if language is not None:
        language = language.lower()
        if language not in LANGUAGES:
            raise ApiError(400, f"language {language!r} is not an ISO-639-1 code Whisper knows", "language")
        if not multilingual and language != "en":
            raise ApiError(400, "this server's model is English-only: language must be en", "language")
    response_format = field("response_format") or "json"
    if response_format not in FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(FORMATS)}", "response_format")
    try:
        temperature = float(field("temperature") or 0.0)
    except ValueError:
        raise ApiError(400, "temperature must be a number from 0 to 1", "temperature") from None
    if not 0.0 <= temperature <= 1.0:
        raise ApiError(400, "temperature must be a number from 0 to 1", "temperature")
    granularities = set(form.getlist("timestamp_granularities[]")) | set(form.getlist("timestamp_granularities"))
    if not granularities <= {"word", "segment"}:
        raise ApiError(400, "timestamp_granularities[] takes word and segment", "timestamp_granularities")
    if "word" in granularities and response_format != "verbose_json":
        raise ApiError(400, "word timestamps need response_format verbose_json", "timestamp_granularities")
    stream = (field("stream") or "false").lower()
    if stream not in ("true", "false"):
        raise ApiError(400, "stream must be true or false", "stream")
    return Params(task, language, field("prompt"), response_format, temperature, "word" in granularities,
                  stream == "true")


def _limited(receive: Receive, limit: int) -> Receive:
    """``receive`` that refuses a body over ``limit`` bytes (413), for uploads without a Content-Length."""
    seen = 0

    async def wrapped() -> Message:
        nonlocal seen
        message = await receive()
        if message["type"] == "http.request":
            seen += len(message.get("body", b""))
            if seen > limit:
                raise ApiError(413, f"the upload is over {limit // 1_000_000} MB (--max-upload-mb)", "file",
                               "file_too_large")
        return message

    return wrapped


def transcribe_file(engine: Engine, audio: np.ndarray, params: Params, on_segment: Callable[[Segment], None] | None,
                    cancelled: threading.Event, threads: int) -> tuple[Transcript, list[Word]]:
    """The file's transcript (and its words if asked): on a thread of the daemon's file worker's own, with torch on
    ``threads`` threads (the daemon's: inference workers side by side lower the process's count meanwhile)."""
    import torch

    from streamer.decoding.decode import DecodingOptions
    from streamer.decoding.transcribe import TEMPERATURES, TranscribeOptions, transcribe
    from streamer.decoding.words import word_timestamps

    def progress(done: float, total: float) -> None:
        if cancelled.is_set():
            raise _Cancelled

    use_threads(threads)
    options = TranscribeOptions(
        decoding=DecodingOptions(task=params.task, language=params.language),
        temperatures=TEMPERATURES if params.temperature == 0 else (params.temperature,),
        initial_prompt=params.prompt,
    )
    with torch.inference_mode():
        transcript = transcribe(engine.model, engine.tokenizer, audio, options, progress, on_segment)
    words = []
    if params.words:
        words = word_timestamps(engine.model, engine.tokenizer, audio, transcript.segments, transcript.language,
                                params.task)
    return transcript, words


def render(transcript: Transcript, words: list[Word], params: Params) -> Response:
    from streamer.formats import to_srt, to_vtt, transcript_cues

    usage = {"type": "duration", "seconds": round(transcript.duration, 3)}
    fmt = params.response_format
    if fmt == "text":
        return PlainTextResponse(transcript.text + "\n")
    if fmt == "srt":
        return PlainTextResponse(to_srt(transcript_cues(transcript)))
    if fmt == "vtt":
        return PlainTextResponse(to_vtt(transcript_cues(transcript)), media_type="text/vtt")
    if fmt == "json":
        return JSONResponse({"text": transcript.text, "usage": usage})
    segments = [
        {"id": i, "seek": round(s.start * 100), "start": round(s.start, 3), "end": round(s.end, 3), "text": s.text,
         "tokens": s.tokens, "temperature": s.temperature, "avg_logprob": round(s.avg_logprob, 4),
         "compression_ratio": round(s.compression_ratio, 3), "no_speech_prob": round(s.no_speech_prob, 4)}
        for i, s in enumerate(transcript.segments)
    ]
    body: dict[str, Any] = {
        "task": params.task, "language": LANGUAGES.get(transcript.language, transcript.language),
        "duration": round(transcript.duration, 3), "text": transcript.text, "segments": segments, "usage": usage,
    }
    if params.words:
        body["words"] = [{"word": w.word, "start": w.start, "end": w.end} for w in words]
    return JSONResponse(body)


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


class OpenAIAudio:
    def __init__(self, daemon: Daemon):
        self.daemon = daemon
        self.created = int(time.time())

    def routes(self) -> list[Route]:
        return [
            Route("/v1/models", self.models, methods=["GET"]),
            Route("/v1/audio/transcriptions", self.transcriptions, methods=["POST"]),
            Route("/v1/audio/translations", self.translations, methods=["POST"]),
        ]

    def _check_token(self, request: Request) -> None:
        token = self.daemon.options.token
        if token and not token_matches(offered_token(request.headers, request.query_params), token):
            self.daemon.metrics.error("unauthorized")
            raise ApiError(401, "a valid API key is needed: the server's token as Authorization: Bearer", None,
                           "invalid_api_key")

    async def models(self, request: Request) -> Response:
        try:
            self._check_token(request)
        except ApiError as e:
            return e.response()
        model = {"id": self.daemon.model_name, "object": "model", "created": self.created, "owned_by": "streamer"}
        return JSONResponse({"object": "list", "data": [model]})

    async def transcriptions(self, request: Request) -> Response:
        return await self._handle(request, "transcribe")

    async def translations(self, request: Request) -> Response:
        return await self._handle(request, "translate")

    async def _handle(self, request: Request, task: str) -> Response:
        daemon = self.daemon
        try:
            self._check_token(request)
            why = daemon.readiness()
            if why in ("full", "saturated"):
                daemon.metrics.error("over_capacity")
                raise ApiError(429, f"the server is at capacity ({why}): try again shortly", None, "over_capacity",
                               "rate_limit_error", {"Retry-After": "1"})
            if why is not None:
                raise ApiError(503, f"the server takes no request now ({why})", None, why, "server_error",
                               {"Retry-After": "1"})
        except ApiError as e:
            return e.response()
        # Admitted: the request holds a session from here, while its upload is still being read, so that
        # uploads arriving together cannot all pass the check above and exceed --max-sessions.
        daemon.other_sessions["openai"] += 1
        release = _Once(lambda: daemon.other_sessions.__setitem__("openai", daemon.other_sessions["openai"] - 1))
        try:
            params, audio = await self._read(request, task)
        except ApiError as e:
            release()
            return e.response()
        except ClientDisconnect:
            release()
            log.info("a client went away during its upload")
            return Response(status_code=400)  # nobody reads it
        except BaseException:  # the server is stopping (cancelled)
            release()
            raise
        with daemon.metrics.lock:
            daemon.metrics.sessions_total += 1
        if params.stream:
            return StreamingResponse(self._stream(audio, params, release), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            transcript, words = await self._run(audio, params, None, threading.Event())
        except Exception:
            log.exception("transcription of an uploaded file failed")
            daemon.metrics.error("internal")
            return ApiError(500, "transcription failed on the server", None, "internal", "server_error").response()
        finally:
            release()
        return render(transcript, words, params)

    async def _read(self, request: Request, task: str) -> tuple[Params, np.ndarray]:
        """The request's checked fields and its decoded audio (ApiError 400 or 413 otherwise)."""
        form = await self._form(request)
        assert self.daemon.engine is not None  # ready
        params = parse_params(form, task, self.daemon.engine.tokenizer.is_multilingual)
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "file is required: the audio as a multipart file field", "file")
        data = await upload.read()
        try:
            return params, await asyncio.to_thread(load_audio_bytes, data, upload.filename or "upload")
        except AudioFileError as e:
            raise ApiError(400, str(e), "file", "invalid_audio") from None

    async def _form(self, request: Request) -> FormData:
        limit = int(self.daemon.options.max_upload_mb * 1_000_000)
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise ApiError(413, f"the upload is over {limit // 1_000_000} MB (--max-upload-mb)", "file",
                           "file_too_large")
        limited = Request(request.scope, _limited(request.receive, limit))
        try:
            return await limited.form(max_files=1, max_fields=MAX_FIELDS)
        except HTTPException as e:  # a malformed multipart body
            raise ApiError(400, f"the form cannot be read: {e.detail}") from None

    def _run(self, audio: np.ndarray, params: Params, on_segment: Callable[[Segment], None] | None,
             cancelled: threading.Event) -> asyncio.Future[tuple[Transcript, list[Word]]]:
        assert self.daemon.engine is not None and self.daemon.scheduler is not None
        job = functools.partial(transcribe_file, self.daemon.engine, audio, params, on_segment, cancelled,
                                self.daemon.scheduler.threads)
        return asyncio.get_running_loop().run_in_executor(self.daemon.file_worker, call_in_thread, job, "streamer-file")

    async def _stream(self, audio: np.ndarray, params: Params, release: Callable[[], None]) -> AsyncIterator[str]:
        """Server-Sent Events: a delta per segment as its window is decoded, then the whole text. The
        queue holds one entry per decoded segment of this one file (policy: unbounded, producer is ours)."""
        loop = asyncio.get_running_loop()
        deltas: asyncio.Queue[str] = asyncio.Queue()
        cancelled = threading.Event()

        def on_segment(segment: Segment) -> None:  # the file's thread
            loop.call_soon_threadsafe(deltas.put_nowait, segment.text)

        job = self._run(audio, params, on_segment, cancelled)
        job.add_done_callback(lambda f: f.cancelled() or f.exception())  # read even when the client left
        waiter: asyncio.Future[str] | None = None
        first = True
        try:
            while not job.done() or not deltas.empty():
                waiter = asyncio.ensure_future(deltas.get())
                await asyncio.wait((waiter, job), return_when=asyncio.FIRST_COMPLETED)
                if not waiter.done():
                    continue
                text = waiter.result().lstrip() if first else waiter.result()
                first = False
                yield _sse({"type": "transcript.text.delta", "delta": text})
            try:
                transcript, _ = job.result()
            except Exception:
                log.exception("transcription of an uploaded file failed")
                self.daemon.metrics.error("internal")
                yield _sse({"error": {"message": "transcription failed on the server", "type": "server_error",
                                      "param": None, "code": "internal"}})
                return
            usage = {"type": "duration", "seconds": round(transcript.duration, 3)}
            yield _sse({"type": "transcript.text.done", "text": transcript.text, "usage": usage})
        finally:
            if waiter is not None and not waiter.done():
                waiter.cancel()
            cancelled.set()
            release()


class _Once:
    """A callable that runs ``action`` the first time it is called only."""

    def __init__(self, action: Callable[[], None]):
        self._action: Callable[[], None] | None = action

    def __call__(self) -> None:
        action, self._action = self._action, None
        if action is not None:
            action()


def routes(daemon: Daemon) -> list[Route]:
    return OpenAIAudio(daemon).routes()
