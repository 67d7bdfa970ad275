"""The daemon: an asyncio WebSocket server (the websockets library) over one shared inference thread.

Each connection is a ``ClientSession``: it parses protocol v1 messages, decodes audio frames, feeds
its own ``LiveStream`` and forwards the stream's events through a bounded outbox to a sender task.
Inference never runs on the event loop. Shutdown is ordered and idempotent: stop accepting (503),
flush every live session's finals and close it with 1001, close the server, stop the inference thread.
"""

from __future__ import annotations

import asyncio
import bisect
import hmac
import itertools
import json
import logging
import ssl
import time
from dataclasses import dataclass, field
from http import HTTPStatus
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response
from websockets.typing import Origin

from streamer.daemon import protocol
from streamer.daemon.captions import CaptionHub
from streamer.daemon.metrics import Metrics
from streamer.daemon.protocol import ProtocolError, Start
from streamer.engine import Engine
from streamer.streaming.events import Event, Final, Partial
from streamer.streaming.inference import warm_up
from streamer.streaming.live import LiveStream
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig
from streamer.streaming.sources import PcmDecoder

log = logging.getLogger(__name__)

OUTBOX_SIZE = 1000  # events waiting to be sent to one client; overflow policy: close (client not reading)
START_TIMEOUT = 10.0
MAX_MESSAGE = 256 * 1024  # a 1 s frame of 48 kHz float32 is 192 KiB
# Rate limit: a session holding more than this share of its buffer (60 s) for decoding is closed (1008
# too_fast). Pausing the socket instead would hold the WebSocket pings behind the audio and time out.
BACKLOG_SHARE = 2 / 3


@dataclass
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    max_sessions: int = 8
    origins: list[str] | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    drain_timeout: float = 30.0
    busy_encoder_seconds: float | None = 20.0  # see Scheduler; None: always 30 s
    idle_timeout: float = 60.0  # no message for this long closes a session
    stream: StreamConfig = field(default_factory=StreamConfig)


def _text_response(status: int, body: str, content_type: str = "text/plain; charset=utf-8") -> Response:
    data = body.encode()
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(data)))])
    return Response(status, HTTPStatus(status).phrase, headers, data)


class ClientSession:
    def __init__(self, daemon: Daemon, conn: ServerConnection, session_id: str):
        self.daemon = daemon
        self.conn = conn
        self.id = session_id
        self.loop = asyncio.get_running_loop()
        self.outbox: asyncio.Queue[dict[str, object] | None] = asyncio.Queue(OUTBOX_SIZE)
        self.stream: LiveStream | None = None
        self.start: Start | None = None
        self.draining = False
        self.sender: asyncio.Task[None] | None = None
        self._arrivals: list[tuple[float, float]] = []  # (audio seconds received, monotonic time)
        self._received = 0.0

    # -- events from the stream (inference thread or loop thread) -----------------------------------

    def _on_events(self, events: list[Event]) -> None:
        self.loop.call_soon_threadsafe(self._enqueue, events)

    def _on_error(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._fail, error)

    def _fail(self, error: BaseException) -> None:
        self.daemon.metrics.error("internal")
        self._put({"type": "error", "code": "internal", "message": "transcription failed on the server"})
        self.loop.create_task(self.conn.close(protocol.INTERNAL, "internal error"))

    def _put(self, message: dict[str, object] | None) -> None:
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.daemon.metrics.error("client_not_reading")
            self.loop.create_task(self.conn.close(protocol.POLICY, "client is not reading"))

    def _enqueue(self, events: list[Event]) -> None:
        assert self.start is not None
        now = time.monotonic()
        for event in events:
            if isinstance(event, Final):
                for w in event.words:
                    self.daemon.metrics.final_latency.observe(max(0.0, now - self._arrival(w.end)))
            if isinstance(event, Partial | Final):
                if isinstance(event, Partial) and not self.start.partials:
                    continue
                self._put(event.to_dict(self.start.word_timestamps))
            else:
                self._put(event.to_dict())

    def _arrival(self, t: float) -> float:
        i = bisect.bisect_left(self._arrivals, (t, 0.0))
        return self._arrivals[min(i, len(self._arrivals) - 1)][1] if self._arrivals else time.monotonic()

    async def _sender(self) -> None:
        while (message := await self.outbox.get()) is not None:
            await self.conn.send(json.dumps(message, ensure_ascii=False))

    # -- the connection -----------------------------------------------------------------------------

    async def run(self) -> None:
        try:
            start = await self._receive_start()
            self.start = start
            decoder = PcmDecoder(start.encoding, start.sample_rate)
            config = self.daemon.options.stream
            config = StreamConfig(**{**config.__dict__, "language": start.language, "partials": start.partials})
            self.stream = LiveStream(self.daemon.scheduler, self._on_events, config, self._on_error)
            self.sender = asyncio.create_task(self._sender(), name=f"send-{self.id}")
            await self.conn.send(json.dumps({
                "type": "ready", "session": self.id, "model": self.daemon.model_name,
                "sample_rate": start.sample_rate, "encoding": start.encoding,
            }))
            await self._receive_audio(decoder)
            if not self.draining:
                await self._finish(protocol.NORMAL, "done")
        except ProtocolError as e:
            self.daemon.metrics.error(e.code)
            log.info("session %s: %s (close %d)", self.id, e.message, e.close_code)
            await self._send_quietly(json.dumps(e.to_dict()))
            await self.conn.close(e.close_code, e.code)
        except ConnectionClosed:
            log.info("session %s: the client went away", self.id)
        finally:
            if self.stream is not None:
                self.stream.end()  # whatever is left is decoded and dropped; the slot is freed
            if self.sender is not None and not self.sender.done() and not self.draining:
                self.sender.cancel()

    async def _send_quietly(self, text: str) -> None:
        try:
            await self.conn.send(text)
        except ConnectionClosed:
            log.debug("session %s: closed before a message could be sent", self.id)

    async def _receive_start(self) -> Start:
        try:
            first = await asyncio.wait_for(self.conn.recv(), START_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("no_start", f"no start message within {START_TIMEOUT:g} s", protocol.POLICY) from None
        if isinstance(first, bytes):
            raise ProtocolError("audio_before_start", "send {\"type\": \"start\"} before audio", protocol.UNSUPPORTED)
        return protocol.parse_start(first, self.daemon.engine.tokenizer.is_multilingual)

    async def _receive_audio(self, decoder: PcmDecoder) -> None:
        assert self.stream is not None and self.start is not None
        while True:
            try:
                message = await asyncio.wait_for(self.conn.recv(), self.daemon.options.idle_timeout)
            except TimeoutError:
                raise ProtocolError("idle", "no audio or keepalive for too long", protocol.POLICY) from None
            if self.draining:
                continue  # drain() is flushing this session; audio after that is not taken
            if isinstance(message, bytes):
                protocol.check_frame(message, self.start)
                samples = decoder.decode(message)
                self._received += len(samples) / 16000
                self._arrivals.append((self._received, time.monotonic()))
                del self._arrivals[:-2000]
                with self.daemon.metrics.lock:
                    self.daemon.metrics.audio_seconds += len(samples) / 16000
                self._check_rate()
                self.stream.feed(samples)
            else:
                control = protocol.parse_control(message)
                if control.type == "finalize":
                    self.stream.finalize()
                elif control.type == "end":
                    return

    def _check_rate(self) -> None:
        """A client far ahead of inference (sending much faster than real time) is closed."""
        assert self.stream is not None
        limit = BACKLOG_SHARE * self.stream.session.config.buffer_seconds
        if self.stream.buffered_seconds > limit:
            raise ProtocolError(
                "too_fast", f"audio arrives faster than it is transcribed ({limit:.0f} s behind): send in real time",
                protocol.POLICY,
            )

    async def _flush(self) -> None:
        """The last speech is decoded and every final handed to the sender, which then stops."""
        assert self.stream is not None
        self.stream.end()
        await asyncio.to_thread(self.stream.wait, self.daemon.options.drain_timeout)
        # Events delivered with call_soon_threadsafe before the wait ended have run by now.
        self._put(None)
        if self.sender is not None:
            await self.sender

    async def _finish(self, code: int, reason: str) -> None:
        await self._flush()
        await self._send_quietly(json.dumps({"type": "done"}))
        await self.conn.close(code, reason)

    async def drain(self) -> None:
        """Server shutdown: flush this session's finals, then close with 1001."""
        self.draining = True
        if self.stream is not None:
            await self._finish(protocol.GOING_AWAY, "server shutting down")
        else:
            await self.conn.close(protocol.GOING_AWAY, "server shutting down")


class Daemon:
    def __init__(self, engine: Engine, model_name: str, options: ServeOptions | None = None):
        self.engine = engine
        self.model_name = model_name
        self.options = options or ServeOptions()
        self.metrics = Metrics()
        self.scheduler = Scheduler(
            engine, max_queue=max(16, 2 * self.options.max_sessions),
            busy_encoder_seconds=self.options.busy_encoder_seconds,
        )
        self.sessions: dict[str, ClientSession] = {}
        self.captions: CaptionHub | None = None  # a published session (streamer mic --serve) at /v1/captions
        self.ready = False
        self.draining = False
        self._ids = itertools.count(1)
        self._server: Server | None = None
        self._stopped = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self.metrics.gauges["sessions_active"] = lambda: len(self.sessions)
        self.metrics.gauges["tasks"] = lambda: len(asyncio.all_tasks())  # evaluated on the event loop
        self.metrics.gauges["queue_depth"] = lambda: self.scheduler.depth
        self.metrics.gauges["inference_busy_seconds"] = lambda: self.scheduler.stats.busy_seconds
        self.metrics.gauges["real_time_factor"] = lambda: self.scheduler.stats.busy_seconds / max(
            1e-9, self.metrics.audio_seconds
        )

    @property
    def port(self) -> int:
        assert self._server is not None
        return int(self._server.sockets[0].getsockname()[1])

    def _authorized(self, request: Request) -> bool:
        token = self.options.token
        if not token:
            return True
        offered = ""
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            offered = auth[len("Bearer ") :]
        else:
            offered = parse_qs(urlsplit(request.path).query).get("token", [""])[0]
        return hmac.compare_digest(offered.encode(), token.encode())

    def _process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/healthz":
            ok = self.ready and not self.draining
            return _text_response(200 if ok else 503, "ok\n" if ok else "not ready\n")
        if path == "/metrics":
            return _text_response(200, self.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")
        if path != "/v1/stream" and not (path == "/v1/captions" and self.captions is not None):
            return _text_response(404, "not found: the stream is at /v1/stream\n")
        if self.draining or not self.ready:
            return _text_response(503, "server shutting down\n" if self.draining else "not ready\n")
        if not self._authorized(request):
            self.metrics.error("unauthorized")
            log.info("refused a connection without a valid token")  # the token itself is never logged
            return _text_response(401, "a valid token is needed (Authorization: Bearer or ?token=)\n")
        return None

    async def _handle(self, conn: ServerConnection) -> None:
        assert conn.request is not None
        if urlsplit(conn.request.path).path == "/v1/captions" and self.captions is not None:
            await self.captions.serve(conn)
            return
        session_id = f"s{next(self._ids)}"
        if len(self.sessions) >= self.options.max_sessions:
            self.metrics.error("over_capacity")
            limit = self.options.max_sessions
            message = f"the server is at its limit of {limit} sessions"
            error = ProtocolError("over_capacity", message, protocol.TRY_AGAIN)
            try:
                await conn.send(json.dumps(error.to_dict()))
            except ConnectionClosed:
                return
            await conn.close(protocol.TRY_AGAIN, "over capacity")
            return
        session = ClientSession(self, conn, session_id)
        self.sessions[session_id] = session
        with self.metrics.lock:
            self.metrics.sessions_total += 1
        log.info("session %s opened from %s", session_id, conn.remote_address)
        try:
            await session.run()
        finally:
            self.sessions.pop(session_id, None)
            log.info("session %s closed", session_id)

    async def start(self) -> None:
        await asyncio.to_thread(warm_up, self.engine)  # the first inference is slow: do it now
        ssl_context = None
        if self.options.tls_cert:
            ssl_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ssl_context.load_cert_chain(self.options.tls_cert, self.options.tls_key)
        self._server = await serve(
            self._handle, self.options.host, self.options.port, process_request=self._process_request,
            max_size=MAX_MESSAGE, compression=None, ssl=ssl_context, max_queue=64,
            origins=[Origin(o) for o in self.options.origins] if self.options.origins else None,
            logger=log, server_header="streamer",
        )
        self._lag_watch = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        self.ready = True
        scheme = "wss" if ssl_context else "ws"
        log.warning("streamer ready on %s://%s:%d/v1/stream (model %s)", scheme, self.options.host, self.port,
                    self.model_name)

    async def _watch_loop_lag(self, period: float = 0.1) -> None:
        """Measures how late the event loop wakes a timer (inference must never block it)."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + period
            await asyncio.sleep(period)
            self.metrics.loop_lag.observe(max(0.0, loop.time() - due))

    async def shutdown(self) -> None:
        """Stop accepting, flush and close every session (1001), close the server. Idempotent."""
        if self._shutdown_task is None:
            self._shutdown_task = asyncio.create_task(self._shutdown())
        await asyncio.shield(self._shutdown_task)

    async def _shutdown(self) -> None:
        self.draining = True
        log.warning("shutting down: flushing %d session(s)", len(self.sessions))
        drains = [s.drain() for s in list(self.sessions.values())]
        if drains:
            await asyncio.wait_for(asyncio.gather(*drains, return_exceptions=True), self.options.drain_timeout + 5)
        if self.captions is not None:
            self.captions.close()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        await asyncio.to_thread(self.scheduler.close)
        if self._lag_watch is not None:
            self._lag_watch.cancel()
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
