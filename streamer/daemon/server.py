"""The daemon: one HTTP/WebSocket port (uvicorn, Starlette routing, see ``http``) over one shared
inference thread.

Each connection is a ``ClientSession``: it parses protocol v1 messages, decodes audio frames, feeds
its own ``LiveStream`` and forwards the stream's events through a bounded outbox to a sender task.
Inference never runs on the event loop. The server listens first and loads the model after (so a
supervisor sees it alive at once): ``/healthz`` is liveness (200 while the process serves), ``/readyz``
readiness (200 once the model is loaded and warm, 503 while starting, draining or full). Shutdown is
ordered and idempotent: stop accepting (503), flush every live session's finals and close it with 1001,
close the server, stop the inference thread.

Importing this module does not import torch: the model's code is loaded with the model.
"""

from __future__ import annotations

import asyncio
import bisect
import json
import logging
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from websockets.exceptions import ConnectionClosed

from streamer.daemon import protocol
from streamer.daemon.captions import CaptionHub
from streamer.daemon.connection import WebSocketConnection
from streamer.daemon.http import bind, offered_token, start_http, token_matches
from streamer.daemon.metrics import Metrics
from streamer.daemon.protocol import ProtocolError, Start
from streamer.streaming.events import Event, Final, Partial, UtteranceEnd
from streamer.streaming.session import StreamConfig
from streamer.streaming.sources import PcmDecoder
from streamer.torch_threads import run_in_thread

if TYPE_CHECKING:
    import uvicorn

    from streamer.daemon.utterances import WebSocketAdapter
    from streamer.engine import Engine
    from streamer.streaming.scheduler import Scheduler

log = logging.getLogger(__name__)

OTHER_PROTOCOLS = ("wyoming", "openai", "realtime", "deepgram")
RESUME_HISTORY = 1000  # finals a session keeps for a client that resumes it
OUTBOX_SIZE = 1000  # events waiting to be sent to one client; overflow policy: close (client not reading)
START_TIMEOUT = 10.0
MAX_MESSAGE = 256 * 1024  # a 1 s frame of 48 kHz float32 is 192 KiB


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
    idle_timeout: float = 60.0  # no message for this long closes a session
    resume_grace: float = 30.0  # a dropped session can be resumed for this long (0: not at all)
    max_session_seconds: float | None = None  # audio per session; then its finals, and a 1008 close
    keepalive: float = 20.0  # ping interval; a client that does not answer within this is dropped
    web_dir: Path | None = None  # serve the browser caption page (clients/web) at /
    wyoming_port: int | None = None  # also serve Wyoming (Home Assistant) on this TCP port (0: any free one)
    max_upload_mb: float = 100.0  # the largest file POSTed to the OpenAI-compatible REST endpoints
    workers: int | None = None  # inference workers (None: scheduler.default_workers: 2 on the CPU, 1 on a GPU)
    stream: StreamConfig = field(default_factory=StreamConfig)


class _SessionLimit(Exception):
    """The session has received ``max_session_seconds`` of audio."""


class ClientSession:
    """One transcription session. It outlives its connection: a client that drops without ``end`` can
    resume it (``{"type":"start","resume":ID,"from":N}``) within ``resume_grace`` seconds, gets every
    final it missed and goes on as if the connection had never dropped."""

    def __init__(self, daemon: Daemon, session_id: str, start: Start):
        self.daemon = daemon
        self.id = session_id
        self.start = start
        self.loop = asyncio.get_running_loop()
        self.conn: WebSocketConnection | None = None
        self.outbox: asyncio.Queue[dict[str, object] | None] | None = None
        self.sender: asyncio.Task[None] | None = None
        from streamer.streaming.live import LiveStream

        self.decoder = PcmDecoder(start.encoding, start.sample_rate)
        config = StreamConfig(**{**daemon.options.stream.__dict__, "language": start.language,
                                 "partials": start.partials})
        assert daemon.scheduler is not None  # sessions are taken once the daemon is ready
        self.stream = LiveStream(daemon.scheduler, self._on_events, config, self._on_error, self._on_decoded)
        self.finals: deque[dict[str, object]] = deque(maxlen=RESUME_HISTORY)  # the last finals sent
        self.final_count = 0
        self.draining = False
        self._expiry: asyncio.TimerHandle | None = None
        self._parked = asyncio.Event()
        self._arrivals: list[tuple[float, float]] = []  # (audio seconds received, monotonic time)
        self._received = 0.0

    # -- events from the stream (inference thread or loop thread) -----------------------------------

    def _on_events(self, events: list[Event]) -> None:
        self.loop.call_soon_threadsafe(self._enqueue, events)

    def _on_error(self, error: BaseException) -> None:
        self.loop.call_soon_threadsafe(self._fail, error)

    def _on_decoded(self, heard: float) -> None:
        self.loop.call_soon_threadsafe(self._observe_lag, heard, time.monotonic())

    def _observe_lag(self, heard: float, now: float) -> None:
        self.daemon.metrics.hypothesis_lag.observe(max(0.0, now - self._arrival(heard)))

    def _fail(self, error: BaseException) -> None:
        self.daemon.metrics.error("internal")
        if self.conn is None:
            self.expire()
            return
        self._put({"type": "error", "code": "internal", "message": "transcription failed on the server"})
        self.loop.create_task(self.conn.close(protocol.INTERNAL, "internal error"))

    def _put(self, message: dict[str, object] | None) -> None:
        if self.outbox is None or self.conn is None:
            return  # detached: finals wait in self.finals for a resume
        try:
            self.outbox.put_nowait(message)
        except asyncio.QueueFull:
            self.daemon.metrics.error("client_not_reading")
            self.loop.create_task(self.conn.close(protocol.POLICY, "client is not reading"))

    def _enqueue(self, events: list[Event]) -> None:
        now = time.monotonic()
        for event in events:
            if isinstance(event, Final):
                for w in event.words:
                    self.daemon.metrics.final_latency.observe(max(0.0, now - self._arrival(w.end)))
                message = {**event.to_dict(self.start.word_timestamps), "index": self.final_count}
                self.final_count += 1
                self.finals.append(message)
                self._put(message)
            elif isinstance(event, Partial):
                if self.start.partials:
                    self._put(event.to_dict(self.start.word_timestamps))
            elif not isinstance(event, UtteranceEnd):  # not a protocol v1 message
                self._put(event.to_dict())

    def _arrival(self, t: float) -> float:
        i = bisect.bisect_left(self._arrivals, (t, 0.0))
        return self._arrivals[min(i, len(self._arrivals) - 1)][1] if self._arrivals else time.monotonic()

    @staticmethod
    async def _sender(conn: WebSocketConnection, outbox: asyncio.Queue[dict[str, object] | None]) -> None:
        while (message := await outbox.get()) is not None:
            await conn.send(json.dumps(message, ensure_ascii=False))

    def _sender_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (error := task.exception()) is None:
            return
        if isinstance(error, ConnectionClosed):
            log.debug("session %s: the connection closed while sending", self.id)
        else:
            log.error("session %s: sending failed", self.id, exc_info=error)

    # -- a connection -------------------------------------------------------------------------------

    async def serve(self, conn: WebSocketConnection, from_index: int | None = None) -> None:
        """Run this session over ``conn`` until it ends or the connection drops. ``from_index``: a
        resume, replaying the finals from that index."""
        self.conn = conn
        self.outbox = asyncio.Queue(OUTBOX_SIZE)
        ready: dict[str, object] = {
            "type": "ready", "session": self.id, "model": self.daemon.model_name,
            "sample_rate": self.start.sample_rate, "encoding": self.start.encoding,
            "resume_grace": self.daemon.options.resume_grace,
        }
        if from_index is not None:
            first = self.final_count - len(self.finals)  # the oldest final still kept
            ready |= {"resumed": True, "next_index": self.final_count, "missed": max(0, first - from_index)}
        await conn.send(json.dumps(ready))
        if from_index is not None:
            for message in self.finals:
                if int(message["index"]) >= from_index:  # type: ignore[call-overload]
                    self._put(message)
        self.sender = asyncio.create_task(self._sender(conn, self.outbox), name=f"send-{self.id}")
        self.sender.add_done_callback(self._sender_done)
        dropped = False
        try:
            try:
                await self._receive_audio()
            except _SessionLimit:
                limit = self.daemon.options.max_session_seconds
                error = ProtocolError("session_too_long", f"a session is at most {limit:g} s of audio: start a new one",
                                      protocol.POLICY)
                await self._finish(protocol.POLICY, "session too long", error.to_dict())
                return
            if not self.draining:
                await self._finish(protocol.NORMAL, "done", {"type": "done"})
        except ProtocolError as e:
            self.daemon.metrics.error(e.code)
            log.info("session %s: %s (close %d)", self.id, e.message, e.close_code)
            await self._send_quietly(json.dumps(e.to_dict()))
            await conn.close(e.close_code, e.code)
        except ConnectionClosed:
            dropped = True
        finally:
            if dropped and not self.draining and self.daemon.options.resume_grace > 0:
                self._detach()
            elif not self.draining:
                self.stream.end()  # whatever is left is decoded and dropped; the slot is freed
            if self.sender is not None and not self.sender.done() and not self.draining:
                self.sender.cancel()

    def _detach(self) -> None:
        """The connection dropped without ``end``: keep the session as it is (the audio of a resume carries
        on where this stopped, mid-sentence or not); its finals wait for the client. On expiry, its
        stream is cancelled: finals decoded then would reach nobody."""
        log.info("session %s: the client went away; resumable for %g s", self.id, self.daemon.options.resume_grace)
        self.conn = None
        self.outbox = None
        self.daemon.park(self)
        self._expiry = self.loop.call_later(self.daemon.options.resume_grace, self.expire)
        self._parked.set()

    async def let_go(self) -> None:
        """Drop the current connection (a client resumes from a new one) and wait until parked."""
        if self.conn is not None:
            self.conn.abort()
        await self._parked.wait()

    def take_up(self) -> None:
        """A client resumes this detached session."""
        self._parked.clear()
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None

    def expire(self) -> None:
        """No resume within the grace period (or the server stops): the session is over. Idempotent."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self.daemon.detached.pop(self.id, None) is not None:
            log.info("session %s: not resumed; closed", self.id)
        self.stream.cancel()  # its finals would reach nobody

    async def _send_quietly(self, text: str) -> None:
        assert self.conn is not None
        try:
            await self.conn.send(text)
        except ConnectionClosed:
            log.debug("session %s: closed before a message could be sent", self.id)

    async def _receive_audio(self) -> None:
        assert self.conn is not None
        limit = self.daemon.options.max_session_seconds
        while True:
            try:
                message = await self.conn.recv(self.daemon.options.idle_timeout)
            except TimeoutError:
                raise ProtocolError("idle", "no audio or keepalive for too long", protocol.POLICY) from None
            if self.draining:
                continue  # drain() is flushing this session; audio after that is not taken
            if isinstance(message, bytes):
                protocol.check_frame(message, self.start)
                samples = self.decoder.decode(message)
                self._received += len(samples) / 16000
                self._arrivals.append((self._received, time.monotonic()))
                del self._arrivals[:-2000]
                with self.daemon.metrics.lock:
                    self.daemon.metrics.audio_seconds += len(samples) / 16000
                self._check_rate()
                self.stream.feed(samples)
                if limit is not None and self._received >= limit:
                    raise _SessionLimit
            else:
                control = protocol.parse_control(message)
                if control.type == "finalize":
                    self.stream.finalize()
                elif control.type == "end":
                    return

    def _check_rate(self) -> None:
        """A client far ahead of inference (sending much faster than real time) is closed."""
        if self.stream.behind:
            raise ProtocolError(
                "too_fast",
                f"audio arrives faster than it is transcribed ({self.stream.backlog_limit:.0f} s behind): "
                "send in real time", protocol.POLICY,
            )

    async def _flush(self) -> None:
        """The last speech is decoded and every final handed to the sender, which then stops."""
        self.stream.end()
        await asyncio.to_thread(self.stream.wait, self.daemon.options.drain_timeout)
        # Events delivered with call_soon_threadsafe before the wait ended have run by now.
        self._put(None)
        if self.sender is not None:
            await self.sender

    async def _finish(self, code: int, reason: str, last: dict[str, object]) -> None:
        assert self.conn is not None
        await self._flush()
        await self._send_quietly(json.dumps(last))
        await self.conn.close(code, reason)

    async def drain(self) -> None:
        """Server shutdown: flush this session's finals, then close with 1001."""
        self.draining = True
        await self._finish(protocol.GOING_AWAY, "server shutting down", {"type": "done"})


class Daemon:
    """``engine``: the engine, or a function that makes it (loading the model), run once the server
    listens."""

    def __init__(self, engine: Engine | Callable[[], Engine], model_name: str, options: ServeOptions | None = None):
        self.engine: Engine | None = None if callable(engine) else engine
        self._make_engine = engine if callable(engine) else None
        self.model_name = model_name
        self.options = options or ServeOptions()
        self.metrics = Metrics()
        self.scheduler: Scheduler | None = None
        self.sessions: dict[str, ClientSession] = {}  # with a connection
        self.detached: dict[str, ClientSession] = {}  # dropped, waiting for a resume (at most max_sessions)
        # live sessions of the other protocols (an OpenAI REST request in progress is one)
        self.other_sessions: dict[str, int] = dict.fromkeys(OTHER_PROTOCOLS, 0)
        # Uploaded files are transcribed one at a time, beside the inference thread of live streams: each on
        # a thread of its own that this worker waits for (``streamer.torch_threads``).
        self.file_worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamer-files")
        self.adapters: set[WebSocketAdapter] = set()  # connections of the Realtime and Deepgram protocols
        self._wyoming: asyncio.Server | None = None
        self._wyoming_tasks: set[asyncio.Task[None]] = set()
        self.captions: CaptionHub | None = None  # a published session (streamer mic --serve) at /v1/captions
        self.ready = False
        self.draining = False
        self._socket: socket.socket | None = None
        self._http: uvicorn.Server | None = None
        self._port: int | None = None
        self._stopped = asyncio.Event()
        self._shutdown_task: asyncio.Task[None] | None = None
        self._lag_watch: asyncio.Task[None] | None = None
        self.metrics.gauges["sessions_active"] = lambda: self.session_count
        for name in OTHER_PROTOCOLS:
            self.metrics.gauges[f"sessions_active_{name}"] = self._protocol_gauge(name)
        self.metrics.gauges["sessions_detached"] = lambda: len(self.detached)
        self.metrics.gauges["tasks"] = lambda: len(asyncio.all_tasks())  # evaluated on the event loop
        self.metrics.gauges["ready"] = lambda: float(self.ready and not self.draining)
        self.metrics.gauges["queue_depth"] = lambda: self.scheduler.depth if self.scheduler else 0
        self.metrics.gauges["inference_busy_seconds"] = lambda: self._stats("busy_seconds")  # summed over workers
        self.metrics.gauges["inference_workers"] = lambda: self.scheduler.workers if self.scheduler else 0
        self.metrics.gauges["inference_windows"] = lambda: self._stats("jobs")
        self.metrics.gauges["inference_batches"] = lambda: self._stats("batches")
        self.metrics.gauges["real_time_factor"] = lambda: self._stats("busy_seconds") / max(
            1e-9, self.metrics.audio_seconds
        )

    def _protocol_gauge(self, name: str) -> Callable[[], float]:
        return lambda: float(self.other_sessions[name])

    def _stats(self, name: str) -> float:
        return float(getattr(self.scheduler.stats, name)) if self.scheduler is not None else 0.0

    @property
    def port(self) -> int:
        assert self._port is not None, "the daemon has not started"
        return self._port

    @property
    def listening(self) -> bool:
        """The port takes connections (from start() until the server is closed)."""
        return self._http is not None

    def authorized(self, headers: Any, query: Any) -> bool:
        """The client offers the daemon's token (or the daemon has none)."""
        token = self.options.token
        return not token or token_matches(offered_token(headers, query), token)

    @property
    def session_count(self) -> int:
        """Live sessions of every protocol (what ``--max-sessions`` bounds)."""
        return len(self.sessions) + sum(self.other_sessions.values())

    @property
    def wyoming_port(self) -> int:
        assert self._wyoming is not None and self._wyoming.sockets
        return int(self._wyoming.sockets[0].getsockname()[1])

    def readiness(self) -> str | None:
        """Why the daemon takes no new session now (None: it does)."""
        if self.draining:
            return "draining"
        if not self.ready:
            return "starting"
        if self.session_count >= self.options.max_sessions:
            return "full"
        if self.scheduler is not None and self.scheduler.saturated:
            return "saturated"
        return None

    def refusal(self, headers: Any, query: Any, gated: bool = True) -> tuple[int, str] | None:
        """Why a WebSocket handshake is answered with plain HTTP instead: (status, body), or None.
        ``gated``: the endpoint opens sessions, so it waits for the model and stops at shutdown."""
        if gated and (self.draining or not self.ready):
            return 503, "server shutting down\n" if self.draining else "not ready\n"
        origins = self.options.origins
        if origins and headers.get("origin") not in origins:
            self.metrics.error("bad_origin")
            return 403, "this origin is not allowed (--origin)\n"
        if not self.authorized(headers, query):
            self.metrics.error("unauthorized")
            log.info("refused a connection without a valid token")  # the token itself is never logged
            return 401, "a valid token is needed (Authorization: Bearer or ?token=)\n"
        return None

    async def handle_v1(self, conn: WebSocketConnection) -> None:
        """A protocol v1 connection on /v1/stream."""
        try:
            if self.session_count >= self.options.max_sessions:
                message = f"the server is at its limit of {self.options.max_sessions} sessions"
                raise ProtocolError("over_capacity", message, protocol.TRY_AGAIN)
            start = await self._receive_start(conn)
            chosen = protocol.parse_session_id(str(conn.query))
            if start.resume is not None:
                if chosen is not None and chosen != start.resume:
                    raise ProtocolError("bad_start", "resume names another session than the URL's session",
                                        protocol.POLICY)
                session = await self._resume(start)
            else:
                if chosen is not None and (chosen in self.sessions or chosen in self.detached):
                    raise ProtocolError(
                        "session_exists", f"session {chosen!r} is live on this server: resume it or choose another id",
                        protocol.SESSION_EXISTS,
                    )
                session = ClientSession(self, chosen or secrets.token_urlsafe(12), start)
                with self.metrics.lock:
                    self.metrics.sessions_total += 1
        except ProtocolError as e:
            self.metrics.error(e.code)
            log.info("connection from %s refused: %s (close %d)", conn.remote_address, e.message, e.close_code)
            try:
                await conn.send(json.dumps(e.to_dict()))
            except ConnectionClosed:
                return
            await conn.close(e.close_code, e.code)
            return
        except ConnectionClosed:
            return
        self.sessions[session.id] = session
        log.info("session %s %s from %s", session.id, "resumed" if start.resume else "opened", conn.remote_address)
        try:
            await session.serve(conn, start.from_index if start.resume else None)
        finally:
            if session.conn in (None, conn):  # not yet taken up by a resuming connection
                self.sessions.pop(session.id, None)
            log.info("session %s: connection closed", session.id)

    async def _receive_start(self, conn: WebSocketConnection) -> Start:
        try:
            first = await conn.recv(START_TIMEOUT)
        except TimeoutError:
            raise ProtocolError("no_start", f"no start message within {START_TIMEOUT:g} s", protocol.POLICY) from None
        if isinstance(first, bytes):
            raise ProtocolError("audio_before_start", "send {\"type\": \"start\"} before audio", protocol.UNSUPPORTED)
        assert self.engine is not None  # sessions are taken once the daemon is ready
        return protocol.parse_start(first, self.engine.tokenizer.is_multilingual)

    async def _resume(self, start: Start) -> ClientSession:
        assert start.resume is not None
        if (current := self.sessions.get(start.resume)) is not None and self.options.resume_grace > 0:
            # the client reconnected before this server noticed its old connection drop
            protocol.check_resume(start, current.start)
            await current.let_go()
        session = self.detached.get(start.resume)
        if session is None:
            grace = self.options.resume_grace
            raise ProtocolError(
                "unknown_session",
                f"no session {start.resume!r} to resume here (it ended, {grace:g} s passed, or it lived on another "
                "server): start a new one", protocol.UNKNOWN_SESSION,
            )
        protocol.check_resume(start, session.start)
        del self.detached[start.resume]
        session.take_up()
        return session

    def park(self, session: ClientSession) -> None:
        """Keep a dropped session for a resume; the oldest parked one goes when there are too many."""
        self.detached[session.id] = session
        while len(self.detached) > self.options.max_sessions:
            next(iter(self.detached.values())).expire()

    def _load(self) -> list[Engine]:
        """The engine, loaded if need be, and a replica of it for each further inference worker, warmed up
        (the first inference is slow): on a thread that ends with it, so that the workers' threads are the
        only ones left with torch's OpenMP workers (``streamer.torch_threads``)."""
        from streamer.streaming.inference import warm_up
        from streamer.streaming.scheduler import default_workers

        engine = self.engine
        if engine is None:
            assert self._make_engine is not None
            engine = self._make_engine()
            self.model_name = engine.loaded.name
        workers = self.options.workers or default_workers(engine)
        engines = [engine, *(engine.replica() for _ in range(workers - 1))]
        for e in engines:
            warm_up(e)
        return engines

    async def start(self) -> None:
        """Listen, then load the model (if the daemon was given a function that makes the engine) and warm
        it up; /readyz turns 200 and sessions are taken once that is done. torch is imported after the
        server listens, on the loading thread."""
        self._socket = bind(self.options.host, self.options.port)
        self._port = int(self._socket.getsockname()[1])
        try:
            self._http = await start_http(self, self._socket)
        except BaseException:
            self._socket.close()
            raise
        self._lag_watch = asyncio.create_task(self._watch_loop_lag(), name="loop-lag")
        if self.options.wyoming_port is not None:
            from streamer.daemon.wyoming import serve_wyoming

            self._wyoming = await serve_wyoming(self, self.options.host, self.options.wyoming_port,
                                                self._wyoming_tasks)
            log.warning("wyoming on tcp://%s:%d", self.options.host, self.wyoming_port)
        log.info("listening on %s:%d; loading the model", self.options.host, self.port)
        try:
            engines = await run_in_thread(self._load, "streamer-load")
        except BaseException:
            await self._close_server()
            raise
        from streamer.streaming.scheduler import Scheduler

        self.engine = engines[0]
        self.scheduler = Scheduler(engines, max_queue=max(16, 2 * self.options.max_sessions))
        self.ready = True
        scheme = "wss" if self.options.tls_cert else "ws"
        log.warning("streamer ready on %s://%s:%d/v1/stream (model %s)", scheme, self.options.host, self.port,
                    self.model_name)
        if self.options.web_dir is not None:
            log.warning("caption page: http://%s:%d/ (add ?token=... when the server has a token)",
                        self.options.host, self.port)

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
        for parked in list(self.detached.values()):
            parked.expire()  # nobody to deliver to
        drains = [s.drain() for s in list(self.sessions.values())] + [a.drain() for a in list(self.adapters)]
        if drains:
            await asyncio.wait_for(asyncio.gather(*drains, return_exceptions=True), self.options.drain_timeout + 5)
        if self.captions is not None:
            await self.captions.close()
        await self._close_server()
        self.file_worker.shutdown(wait=False, cancel_futures=True)
        if self.scheduler is not None:
            await asyncio.to_thread(self.scheduler.close)
        self._stopped.set()

    async def _close_server(self) -> None:
        if self._wyoming is not None:
            self._wyoming.close()
            for task in list(self._wyoming_tasks):
                task.cancel()
            await asyncio.gather(*self._wyoming_tasks, return_exceptions=True)
            await self._wyoming.wait_closed()
        if self._http is not None:
            await self._http.shutdown()
            self._http = None
        if self._socket is not None:
            self._socket.close()
        if self._lag_watch is not None:
            self._lag_watch.cancel()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
