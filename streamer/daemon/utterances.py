"""The one translation layer from a live stream's events to the protocols that speak in utterances
(OpenAI Realtime, Deepgram live, Wyoming): a ``UtteranceStream`` owns one connection's ``LiveStream``,
counts it against ``--max-sessions`` and hands its events, on the event loop, to a listener:

- ``speech_started(t)`` / ``speech_stopped(t)``: the VAD's boundaries (stream seconds);
- ``partial(event)``: the uncommitted tail, replaced by the next;
- ``final(event)``: committed text, in order, never revised;
- ``utterance_ended(t)``: the utterance's last decode is done (all its text is in the finals before);
- ``failed()``: inference failed for this stream.

``WebSocketAdapter`` is what the WebSocket protocols share beside it: the accepted connection, a bounded
outbox with its sender task, the receive loop, and draining at shutdown.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING, Any, Protocol

from websockets.exceptions import ConnectionClosed

from streamer.daemon.connection import WebSocketConnection
from streamer.daemon.http import settled
from streamer.streaming.events import Event, Final, Partial, UtteranceEnd
from streamer.streaming.segmenter import SpeechEnd, SpeechStart
from streamer.streaming.session import StreamConfig
from streamer.streaming.sources import PcmDecoder

if TYPE_CHECKING:
    from streamer.daemon.server import Daemon
    from streamer.streaming.live import LiveStream

log = logging.getLogger(__name__)

OUTBOX_SIZE = 1000  # messages waiting for one client; overflow policy: close (1008, the client is not reading)
POLICY = 1008
GOING_AWAY = 1001
TRY_AGAIN = 1013


class Refused(Exception):
    """The daemon takes no new stream now: ``reason`` is its readiness (starting, full, ...)."""

    def __init__(self, reason: str):
        super().__init__(f"the server takes no new stream now ({reason})")
        self.reason = reason


class StreamLimit(Exception):
    """The stream takes no more audio: ``code`` says why (the message, how to do better)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


class UtteranceListener(Protocol):
    def speech_started(self, t: float) -> None: ...
    def speech_stopped(self, t: float) -> None: ...
    def partial(self, event: Partial) -> None: ...
    def final(self, event: Final) -> None: ...
    def utterance_ended(self, t: float) -> None: ...
    def failed(self) -> None: ...


class UtteranceStream:
    """One live stream of a connection. Raises ``Refused`` when the daemon is not ready or full."""

    def __init__(self, daemon: Daemon, protocol: str, listener: UtteranceListener, config: StreamConfig,
                 decoder: PcmDecoder):
        from streamer.streaming.live import LiveStream

        why = daemon.readiness()
        if why is not None:
            daemon.metrics.error("over_capacity" if why in ("full", "saturated") else why)
            raise Refused(why)
        assert daemon.scheduler is not None  # ready
        self.daemon = daemon
        self.protocol = protocol
        self.listener = listener
        self.decoder = decoder
        self.loop = asyncio.get_running_loop()
        self.stream: LiveStream = LiveStream(daemon.scheduler, self._on_events, config, self._on_error)
        self.received = 0.0  # seconds of audio fed
        self.closed = False
        daemon.other_sessions[protocol] += 1
        with daemon.metrics.lock:
            daemon.metrics.sessions_total += 1

    def feed(self, data: bytes) -> None:
        """Encoded audio in. Raises StreamLimit ``too_fast`` when far ahead of inference, and
        ``session_too_long`` past ``--max-session-minutes`` (the protocol closes the stream)."""
        samples = self.decoder.decode(data)
        self.received += len(samples) / 16000
        with self.daemon.metrics.lock:
            self.daemon.metrics.audio_seconds += len(samples) / 16000
        if self.stream.behind:
            raise StreamLimit("too_fast", f"audio arrives faster than it is transcribed "
                              f"({self.stream.backlog_limit:.0f} s behind): send in real time")
        limit = self.daemon.options.max_session_seconds
        if limit is not None and self.received > limit:
            raise StreamLimit("session_too_long", f"a session is at most {limit:g} s of audio: start a new one")
        self.stream.feed(samples)

    def finalize(self) -> float:
        """Commit all heard so far; returns the stream time heard to."""
        return self.stream.finalize()

    def undecoded_before(self, t: float) -> bool:
        return self.stream.undecoded_before(t)

    async def finish(self) -> None:
        """No more audio: the last speech is decoded and every event delivered to the listener."""
        if self.closed:
            return
        self.stream.feed(self.decoder.decode(b"", last=True))
        self.stream.end()
        await asyncio.to_thread(self.stream.wait, self.daemon.options.drain_timeout)
        await settled(self.loop)  # the events the inference thread handed over have been dispatched

    def close(self) -> None:
        """Drop the stream (what is still decoding is discarded) and free its slot. Idempotent."""
        if self.closed:
            return
        self.closed = True
        self.stream.cancel()
        self.daemon.other_sessions[self.protocol] -= 1

    # -- the inference thread -> the event loop ------------------------------------------------------

    def _on_events(self, events: list[Event]) -> None:
        self.loop.call_soon_threadsafe(self._dispatch, events)

    def _on_error(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._fail)

    def _fail(self) -> None:
        if not self.closed:
            self.daemon.metrics.error("internal")
            self.listener.failed()

    def _dispatch(self, events: list[Event]) -> None:
        if self.closed:
            return
        listener = self.listener
        for event in events:
            if isinstance(event, SpeechStart):
                listener.speech_started(event.t)
            elif isinstance(event, SpeechEnd):
                listener.speech_stopped(event.t)
            elif isinstance(event, Partial):
                listener.partial(event)
            elif isinstance(event, Final):
                listener.final(event)
            elif isinstance(event, UtteranceEnd):
                listener.utterance_ended(event.t)


class WebSocketAdapter:
    """A protocol's WebSocket connection: ``run`` reads messages until the client leaves (or ``idle``
    seconds pass without one, when set), handing them to ``on_text`` / ``on_bytes``; ``send`` queues a
    JSON message for the sender task. The daemon drains adapters at shutdown (``drain``)."""

    protocol = "?"

    def __init__(self, daemon: Daemon, conn: WebSocketConnection, idle: float | None = None):
        self.daemon = daemon
        self.conn = conn
        self.idle = idle
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(OUTBOX_SIZE)
        self.ustream: UtteranceStream | None = None
        self.closing = False
        self._sender: asyncio.Task[None] | None = None

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.daemon.metrics.error("client_not_reading")
            self.closing = True
            self.loop.create_task(self.conn.close(POLICY, "client is not reading"))

    async def _send_all(self) -> None:
        try:
            while (message := await self.outbox.get()) is not None:
                await self.conn.send(json.dumps(message, ensure_ascii=False))
        except ConnectionClosed:
            log.debug("%s client left while messages were being sent", self.protocol)

    async def on_text(self, text: str) -> None:
        raise NotImplementedError

    async def on_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    async def on_end(self) -> None:
        """The client closed (or the server drains): deliver what is left, if the protocol wants it."""

    async def run(self) -> None:
        self._sender = asyncio.create_task(self._send_all(), name=f"{self.protocol}-send")
        self.daemon.adapters.add(self)
        try:
            while not self.closing:
                try:
                    message = await self.conn.recv(self.idle)
                except TimeoutError:
                    await self.close_with(POLICY, "idle", "no audio or keepalive for too long")
                    break
                if isinstance(message, str):
                    await self.on_text(message)
                else:
                    await self.on_bytes(message)
        except ConnectionClosed:
            pass
        finally:
            self.daemon.adapters.discard(self)
            if self.ustream is not None:
                self.ustream.close()
            if not self._sender.done():
                self._sender.cancel()

    async def close_with(self, code: int, reason: str, message: str | None = None) -> None:
        """Send what is queued (and an error ``message``, through ``error``), then close."""
        if message is not None:
            self.error(reason, message)
        await self._flush_outbox()
        self.closing = True
        await self.conn.close(code, reason)

    def error(self, code: str, message: str) -> None:
        raise NotImplementedError

    async def limit_reached(self, limit: StreamLimit) -> None:
        """The stream takes no more audio: what was said up to a length limit is delivered, then 1008."""
        self.daemon.metrics.error(limit.code)
        if limit.code == "session_too_long":
            await self.on_end()
        await self.close_with(POLICY, limit.code, str(limit))

    async def _flush_outbox(self) -> None:
        if self._sender is None or self._sender.done():
            return
        try:
            self.outbox.put_nowait(None)
        except asyncio.QueueFull:
            self._sender.cancel()
            return
        await asyncio.wait_for(asyncio.shield(self._sender), 10.0)

    async def drain(self) -> None:
        """Server shutdown: the stream's last words are delivered, then a 1001 close."""
        try:
            await self.on_end()
        except ConnectionClosed:
            return
        await self.close_with(GOING_AWAY, "server shutting down")
