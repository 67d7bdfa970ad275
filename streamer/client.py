"""An asyncio client for the daemon's protocol v1 (docs/protocol.md) that survives dropped connections.

    async with StreamClient("ws://127.0.0.1:8765/v1/stream", token="T") as client:
        await client.send(samples)        # float32 or int16 mono at sample_rate, any length
        await client.end()                # no more audio
        async for event in client:        # Ready, SpeechStart, Partial, Final, ..., Done
            print(event)

Events can be read while audio is sent (another task). When the connection drops, the client
reconnects with backoff and resumes its session (``{"type":"start","resume":ID,"from":N}``), so no
final is lost or repeated; audio sent while it is away waits in a bounded backlog (overflow policy:
drop the oldest, counted in ``dropped_seconds``). When the session cannot be resumed (the server
restarted), a new one starts and event times carry on from the audio already sent.

Every connection of one client names its session in the URL (``?session=ID``, a UUID made once per
client), so a load balancer that hashes on it sends a resume to the replica that holds the session;
a replica that is full refuses a new session with 1013 and the client tries again with backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from streamer.errors import StreamerError

log = logging.getLogger(__name__)

MAX_FRAME_SECONDS = 1.0  # the server's limit per frame
RECONNECT_CLOSES = {None, 1001, 1006, 1011, 1012, 1013, 1014}  # worth another try (1011: without an error)
_END = json.dumps({"type": "end"})
EVENT_QUEUE = 10_000  # events not yet read by the caller; overflow policy: stop reading the socket


class ClientError(StreamerError):
    """The server refused the session (or the client gave up reconnecting)."""

    def __init__(self, message: str, code: str = "connection"):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class TimedWord:
    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Ready:
    session: str
    model: str
    resumed: bool
    message: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SpeechStart:
    t: float
    message: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class SpeechEnd:
    t: float
    message: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class _Hypothesis:
    text: str
    start: float | None
    end: float | None
    words: tuple[TimedWord, ...]
    message: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Partial(_Hypothesis):
    """The uncommitted tail; replaces the previous one."""


@dataclass(frozen=True)
class Final(_Hypothesis):
    """Committed text. ``index`` counts over the whole client (it carries on across a new session)."""

    index: int = 0
    closes: bool = False


@dataclass(frozen=True)
class ServerError:
    code: str
    text: str
    message: dict[str, Any] = field(repr=False)


@dataclass(frozen=True)
class Done:
    message: dict[str, Any] = field(repr=False)


ClientEvent = Ready | SpeechStart | SpeechEnd | Partial | Final | ServerError | Done


def _shift(message: dict[str, Any], offset: float) -> dict[str, Any]:
    """The message with its times moved by ``offset`` seconds."""
    if not offset:
        return message
    out = dict(message)
    for key in ("t", "start", "end"):
        if isinstance(out.get(key), int | float):
            out[key] = round(out[key] + offset, 3)
    if isinstance(out.get("words"), list):
        out["words"] = [_shift(w, offset) for w in out["words"]]
    return out


def _words(message: dict[str, Any]) -> tuple[TimedWord, ...]:
    return tuple(
        TimedWord(str(w["word"]), float(w["start"]), float(w["end"]), float(w.get("probability", 1.0)))
        for w in message.get("words") or ()
    )


def pcm16_frames(samples: np.ndarray, sample_rate: int) -> list[bytes]:
    """Float (-1..1) or int16 samples as pcm_s16le frames of at most the server's 1 s."""
    if samples.dtype != np.int16:
        samples = (np.clip(np.nan_to_num(samples.astype(np.float32)), -1.0, 1.0) * 32767).astype(np.int16)
    data = samples.astype("<i2").tobytes()
    step = 2 * int(MAX_FRAME_SECONDS * sample_rate)
    return [data[i : i + step] for i in range(0, len(data), step)]


class _TryAgain(Exception):
    """The server refused the session for now (over capacity): try again after a backoff."""


# A resume answered unknown_session is tried this many times in all (with the reconnect backoff between,
# about 1-2 s) before the client starts a new session.
RESUME_TRIES = 4


class StreamClient:
    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        sample_rate: int = 16000,
        language: str | None = "en",
        partials: bool = True,
        word_timestamps: bool = True,
        reconnect: bool = True,
        reconnect_for: float = 60.0,
        backlog_seconds: float = 60.0,
        open_timeout: float = 10.0,
        session_id: str | None = None,
    ):
        self.url = url
        # In every connection's URL, kept across reconnects (a new session after a failed resume gets a new one).
        self.session_id = session_id or str(uuid.uuid4())
        self.token = token
        self.sample_rate = sample_rate
        self.language = language
        self.partials = partials
        self.word_timestamps = word_timestamps
        self.reconnect = reconnect
        self.reconnect_for = reconnect_for
        self.backlog_seconds = backlog_seconds
        self.open_timeout = open_timeout
        self.session: str | None = None
        self.reconnects = 0
        self.dropped_seconds = 0.0  # audio dropped from a full backlog while disconnected
        # audio a server took but whose session could not be resumed (the server died or restarted) past
        # the last final it sent: its words may be lost
        self.lost_seconds = 0.0
        self._heard_until = 0.0  # end of the last final, in the client's audio seconds
        self._ws: ClientConnection | None = None
        self._events: asyncio.Queue[ClientEvent | BaseException | None] = asyncio.Queue(EVENT_QUEUE)
        self._backlog: deque[bytes | str] = deque()  # frames and control messages not yet sent
        self._backlog_bytes = 0
        self._send_lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._sent_seconds = 0.0  # audio handed to a connection (or dropped)
        self._offset = 0.0  # times of the current session start this far into the client's audio
        self._next_index = 0  # of the session's finals: the next one expected
        self._finals = 0  # over the whole client
        self._ending = False
        self._closed = False
        self._resume_refusals = 0  # of the current resume: answered unknown_session so far

    # -- connecting ---------------------------------------------------------------------------------

    async def __aenter__(self) -> StreamClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> Ready:
        """Open the session (retrying while the server is unreachable, up to ``reconnect_for``)."""
        ready = await self._open_with_backoff()
        self._reader = asyncio.create_task(self._read_loop(), name="streamer-client-reader")
        return ready

    def _start_message(self) -> dict[str, Any]:
        start: dict[str, Any] = {
            "type": "start", "sample_rate": self.sample_rate, "encoding": "pcm_s16le",
            "language": self.language, "partials": self.partials, "word_timestamps": self.word_timestamps,
        }
        if self.session is not None:
            start = {"type": "start", "resume": self.session, "from": self._next_index}
        return start

    @property
    def session_url(self) -> str:
        """The URL with this client's ``session`` parameter."""
        parts = urlsplit(self.url)
        query = "&".join(x for x in (parts.query, f"session={self.session_id}") if x)
        return urlunsplit(parts._replace(query=query))

    async def _open(self) -> Ready:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else None
        ws = await connect(self.session_url, additional_headers=headers, open_timeout=self.open_timeout, max_size=2**22)
        try:
            await ws.send(json.dumps(self._start_message()))
            reply = json.loads(await asyncio.wait_for(ws.recv(), self.open_timeout))
            if reply.get("type") == "error" and reply.get("code") == "unknown_session":
                await ws.close()
                self._resume_refusals += 1
                if self._resume_refusals < RESUME_TRIES:
                    # A balancer may have sent this one elsewhere (its replica's health check missed a beat
                    # under load): the replica that holds the session may take the next.
                    raise _TryAgain(f"session {self.session} is not on the server reached")
                lost = max(0.0, self._sent_seconds - max(self._offset, self._heard_until))
                self.lost_seconds += lost
                log.warning("session %s cannot be resumed (%s): starting a new one; %.1f s of audio sent to it "
                            "after its last final may be lost", self.session, reply.get("message"), lost)
                self.session = None
                # ... under a new id: the old one may still be live where it was, which refuses a new session
                self.session_id = str(uuid.uuid4())
                return await self._open()
            if reply.get("type") == "error" and reply.get("code") == "over_capacity":
                raise _TryAgain(str(reply.get("message", "the server is full")))
            if reply.get("type") != "ready":
                await ws.close()
                raise ClientError(f"the server refused the session: {reply.get('message', reply)}",
                                  str(reply.get("code", "refused")))
        except BaseException:
            await ws.close()
            raise
        resumed = bool(reply.get("resumed"))
        self._resume_refusals = 0
        if not resumed:
            self._offset = self._sent_seconds  # a new session's times start at its first sample
            self._next_index = 0
        self.session = str(reply["session"])
        async with self._send_lock:
            self._ws = ws
            await self._flush_backlog()
        event = Ready(self.session, str(reply.get("model", "")), resumed, reply)
        await self._events.put(event)
        return event

    async def _open_with_backoff(self) -> Ready:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.reconnect_for
        attempt = 0
        while True:
            try:
                return await self._open()
            except InvalidStatus as e:
                status = e.response.status_code
                if status in (401, 403, 404):
                    body = e.response.body.decode(errors="replace").strip() if e.response.body else ""
                    raise ClientError(f"{self.url}: HTTP {status} {body}".strip(), f"http_{status}") from None
                error: Exception = e
            except (OSError, TimeoutError, InvalidHandshake, ConnectionClosed, _TryAgain) as e:
                error = e
            if loop.time() >= deadline:
                raise ClientError(f"cannot reach {self.url}: {error}") from None
            delay = min(8.0, 0.25 * 2**attempt) * random.uniform(0.5, 1.0)
            attempt += 1
            log.info("cannot reach %s (%s): again in %.1f s", self.url, error, delay)
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))

    # -- receiving ----------------------------------------------------------------------------------

    def _parse(self, message: dict[str, Any]) -> ClientEvent | None:
        kind = message.get("type")
        shifted = _shift(message, self._offset)
        if kind == "final":
            index = int(message.get("index", self._next_index))
            if index < self._next_index:
                return None  # already delivered before a reconnect
            self._next_index = index + 1
            self._finals += 1
            end = shifted.get("end")
            if isinstance(end, int | float):
                self._heard_until = max(self._heard_until, float(end))
            shifted["index"] = self._finals - 1
            return Final(str(message["text"]), shifted.get("start"), shifted.get("end"), _words(shifted), shifted,
                         self._finals - 1, bool(message.get("closes")))
        if kind == "partial":
            return Partial(str(message["text"]), shifted.get("start"), shifted.get("end"), _words(shifted), shifted)
        if kind == "speech_start":
            return SpeechStart(float(shifted["t"]), shifted)
        if kind == "speech_end":
            return SpeechEnd(float(shifted["t"]), shifted)
        if kind == "error":
            return ServerError(str(message.get("code")), str(message.get("message")), message)
        if kind == "done":
            return Done(message)
        log.debug("ignoring a message of type %r", kind)
        return None

    async def _read_loop(self) -> None:
        try:
            while True:
                ws = self._ws
                assert ws is not None
                done = failed = False
                try:
                    async for raw in ws:
                        if not isinstance(raw, str):
                            continue
                        event = self._parse(json.loads(raw))
                        if isinstance(event, ServerError):
                            failed = True
                        if isinstance(event, Done):
                            done = True
                            if not self._ending:
                                continue  # the server is going away: this session is over, not the stream
                        if event is not None:
                            await self._events.put(event)
                except ConnectionClosed:
                    pass
                async with self._send_lock:
                    self._ws = None
                code = ws.close_code
                if done and self._ending:
                    break
                if failed or code not in RECONNECT_CLOSES or not self.reconnect or self._closed:
                    reason = ws.close_reason or "closed"
                    raise ClientError(f"the connection closed ({code} {reason})", "closed")
                if done:
                    self.session = None  # drained by a server shutdown: nothing left to resume
                if self._ending and not any(x == _END for x in self._backlog):
                    self._backlog.append(_END)  # it may not have reached the server
                log.warning("connection lost (%s): reconnecting", code)
                self.reconnects += 1
                await self._open_with_backoff()
        except (ClientError, ValueError, KeyError, TypeError) as e:
            await self._events.put(e if isinstance(e, ClientError) else ClientError(f"a bad message: {e}", "bad"))
        finally:
            await self._events.put(None)

    def __aiter__(self) -> StreamClient:
        return self

    async def __anext__(self) -> ClientEvent:
        event = await self._events.get()
        if event is None:
            self._events.put_nowait(None)  # later reads end too
            raise StopAsyncIteration
        if isinstance(event, BaseException):
            raise event
        return event

    # -- sending ------------------------------------------------------------------------------------

    async def _flush_backlog(self) -> None:
        """Send what waited (send lock held)."""
        while self._backlog and self._ws is not None:
            item = self._backlog[0]
            try:
                await self._ws.send(item)
            except ConnectionClosed:
                self._ws = None
                return
            self._backlog.popleft()
            if isinstance(item, bytes):
                self._backlog_bytes -= len(item)
                self._sent_seconds += len(item) / 2 / self.sample_rate

    def _keep(self, item: bytes | str) -> None:
        self._backlog.append(item)
        if isinstance(item, bytes):
            self._backlog_bytes += len(item)
        limit = 2 * self.sample_rate * self.backlog_seconds
        while self._backlog_bytes > limit:
            oldest = next(x for x in self._backlog if isinstance(x, bytes))
            self._backlog.remove(oldest)
            self._backlog_bytes -= len(oldest)
            seconds = len(oldest) / 2 / self.sample_rate
            self.dropped_seconds += seconds
            self._sent_seconds += seconds
            log.warning("disconnected for too long: %.1f s of audio dropped so far", self.dropped_seconds)

    async def _send(self, item: bytes | str) -> None:
        if self._closed:
            raise ClientError("the client is closed", "closed")
        async with self._send_lock:
            self._keep(item)
            await self._flush_backlog()

    async def send(self, samples: np.ndarray) -> None:
        """Audio at ``sample_rate``: float32 in -1..1 or int16, mono, any length."""
        for frame in pcm16_frames(np.asarray(samples).reshape(-1), self.sample_rate):
            await self._send(frame)

    async def finalize(self) -> None:
        """Commit everything said so far."""
        await self._send(json.dumps({"type": "finalize"}))

    async def end(self) -> None:
        """No more audio: the last finals and ``Done`` follow, then iteration stops."""
        self._ending = True
        await self._send(_END)

    async def close(self) -> None:
        """Close at once (without waiting for finals). Idempotent."""
        self._closed = True
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._ws is not None:
            await self._ws.close()
            self._ws = None
