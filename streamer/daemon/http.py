"""The daemon's one port: an ASGI application (Starlette routing) served by uvicorn, whose WebSocket
implementation is the websockets library's sans-I/O protocol.

- ``GET /healthz`` liveness, ``GET /readyz`` readiness, ``GET /metrics`` Prometheus text;
- ``/v1/stream`` protocol v1 and ``/v1/captions`` (WebSocket);
- ``/v1/audio/transcriptions``, ``/v1/audio/translations`` (POST), ``/v1/models`` (OpenAI REST);
- ``/v1/realtime`` (OpenAI Realtime transcription) and ``/v1/listen`` (Deepgram live), WebSocket;
- with ``--web``, the browser caption page at ``/``.

A WebSocket handshake that is refused gets a plain HTTP answer (401 token, 403 origin, 404 path, 503
not ready or shutting down) before any session exists.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from streamer.daemon.connection import WebSocketConnection
from streamer.daemon.web import static_file

if TYPE_CHECKING:
    import uvicorn

    from streamer.daemon.server import Daemon

log = logging.getLogger(__name__)

NO_CACHE = {"Cache-Control": "no-cache"}
Handler = Callable[[WebSocketConnection], Awaitable[None]]


def text(status: int, body: str, media_type: str = "text/plain; charset=utf-8") -> Response:
    return PlainTextResponse(body, status, headers=NO_CACHE, media_type=media_type)


def offered_token(headers: Mapping[str, str], query: Mapping[str, str]) -> str:
    """The token a client offers: ``Authorization: Bearer T`` (or Deepgram's ``Token T``), else ``?token=``."""
    auth = headers.get("authorization", "")
    for scheme in ("Bearer ", "Token "):
        if auth.startswith(scheme):
            return auth[len(scheme) :].strip()
    return query.get("token", "")


class WebSocketEndpoint:
    """An ASGI WebSocket route: checks the handshake, then hands the accepted connection to ``handler``.
    ``gated``: refused with 503 unless the daemon takes sessions (captions subscribers are not)."""

    def __init__(self, daemon: Daemon, handler: Handler, gated: bool = True,
                 check: Callable[[WebSocketConnection], tuple[int, str] | None] | None = None):
        self.daemon = daemon
        self.handler = handler
        self.gated = gated
        self.check = check  # the protocol's own checks of the handshake (its query): (status, body) or None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        conn = WebSocketConnection(scope, receive, send)
        refusal = self.daemon.refusal(conn.headers, conn.query, self.gated)
        if refusal is None and self.check is not None:
            refusal = self.check(conn)
        if refusal is not None:
            await conn.refuse(*refusal)
            return
        await conn.accept()
        await self.handler(conn)


async def _not_found(scope: Scope, receive: Receive, send: Send) -> None:
    """Unknown paths: 404, for HTTP requests and WebSocket handshakes alike."""
    body = "not found: the stream is at /v1/stream\n"
    if scope["type"] == "websocket":
        await WebSocketConnection(scope, receive, send).refuse(404, body)
    else:
        await text(404, body)(scope, receive, send)


def build_app(daemon: Daemon) -> Starlette:
    from streamer.daemon import deepgram, openai_audio, realtime

    async def healthz(request: Request) -> Response:  # liveness: the process serves
        return text(200, "ok\n")

    async def readyz(request: Request) -> Response:  # readiness: a new session would be taken
        why = daemon.readiness()
        return text(503 if why else 200, f"{why or 'ready'}\n")

    async def metrics(request: Request) -> Response:
        return text(200, daemon.metrics.render(), "text/plain; version=0.0.4; charset=utf-8")

    async def page(request: Request) -> Response:
        if daemon.options.web_dir is not None:
            found = static_file(daemon.options.web_dir, request.url.path)
            if found is not None:
                return Response(found[0], 200, headers=NO_CACHE, media_type=found[1])
        return text(404, "not found: the stream is at /v1/stream\n")

    async def captions(conn: WebSocketConnection) -> None:
        assert daemon.captions is not None
        await daemon.captions.serve(conn)

    routes = [
        Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics),
        WebSocketRoute("/v1/stream", WebSocketEndpoint(daemon, daemon.handle_v1)),
        *openai_audio.routes(daemon),
        WebSocketRoute("/v1/realtime", WebSocketEndpoint(
            daemon, partial(realtime.serve_realtime, daemon), check=partial(realtime.check_handshake, daemon))),
        WebSocketRoute("/v1/listen", WebSocketEndpoint(
            daemon, partial(deepgram.serve_listen, daemon), check=partial(deepgram.check_handshake, daemon))),
    ]
    if daemon.captions is not None:
        routes.append(WebSocketRoute("/v1/captions", WebSocketEndpoint(daemon, captions, gated=False)))
    routes.append(Route("/{path:path}", page))
    app = Starlette(routes=routes)
    app.router.default = _not_found
    return app


def bind(host: str, port: int, backlog: int = 2048) -> socket.socket:
    """A listening socket on (host, port), the first address the name resolves to."""
    family, kind, proto, _, address = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                         flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


async def start_http(daemon: Daemon, sock: socket.socket) -> uvicorn.Server:
    """uvicorn over ``sock``, serving ``build_app(daemon)``; stopped with ``server.shutdown()``."""
    import uvicorn

    from streamer.daemon.server import MAX_MESSAGE

    options = daemon.options
    config = uvicorn.Config(
        build_app(daemon), http="h11", ws="websockets-sansio", lifespan="off", log_config=None,
        access_log=False, server_header=False, date_header=False, headers=[("server", "streamer")],
        ws_max_size=MAX_MESSAGE, ws_ping_interval=options.keepalive, ws_ping_timeout=options.keepalive,
        ws_per_message_deflate=False, ssl_certfile=options.tls_cert, ssl_keyfile=options.tls_key,
        timeout_graceful_shutdown=5, timeout_keep_alive=5,
    )
    config.load()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve sets up (lifespan "off": nothing runs)
    await server.startup(sockets=[sock])
    await server.on_tick(0)  # sets the default response headers (the server header)
    return server


def token_matches(offered: str, token: str) -> bool:
    return hmac.compare_digest(offered.encode(), token.encode())


async def settled(loop: asyncio.AbstractEventLoop) -> None:
    """Run the callbacks already scheduled on the loop (call_soon_threadsafe) before going on."""
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done
