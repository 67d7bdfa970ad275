"""One WebSocket connection taken by the HTTP layer (uvicorn + Starlette, uvicorn's ``websockets-sansio``
implementation), with the few calls a session makes: ``recv``, ``send``, ``close``, ``abort``.

It speaks raw ASGI underneath, so that every protocol on the port (v1, captions, OpenAI Realtime,
Deepgram) shares one notion of a closed connection: ``websockets.exceptions.ConnectionClosed``, raised by
``recv`` and ``send`` once the peer has gone, the connection was closed or ``abort`` was called.
Incoming messages are bounded by the server (``ws_max_size``: 1009) and read one at a time (uvicorn
pauses the socket until the application has taken a message).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

from starlette.datastructures import Headers, QueryParams
from starlette.types import Receive, Scope, Send
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

log = logging.getLogger(__name__)

ABNORMAL = 1006  # no close frame (the peer vanished, or the server let the connection go)


class WebSocketConnection:
    def __init__(self, scope: Scope, receive: Receive, send: Send):
        self.path: str = scope["path"]
        self.query = QueryParams(scope.get("query_string", b""))
        self.headers = Headers(scope=scope)
        client = scope.get("client")
        self.remote_address: tuple[str, int] | None = (client[0], client[1]) if client else None
        self._receive = receive
        self._send = send
        self._closed: ConnectionClosed | None = None
        self._close_sent = False
        self._aborted: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    async def _connected(self) -> None:
        message = await self._receive()  # ASGI: the handshake's "websocket.connect" comes first
        if message["type"] != "websocket.connect":
            raise self._mark_closed(ABNORMAL, "the client left during the handshake")

    async def accept(self) -> None:
        await self._connected()
        await self._send({"type": "websocket.accept", "subprotocol": None, "headers": []})

    async def refuse(self, status: int, body: str, headers: dict[str, str] | None = None) -> None:
        """Answer the handshake with a plain HTTP response instead of a WebSocket."""
        await self._connected()
        data = body.encode()
        raw = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(data)).encode()),
               (b"cache-control", b"no-cache")]
        raw += [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
        await self._send({"type": "websocket.http.response.start", "status": status, "headers": raw})
        await self._send({"type": "websocket.http.response.body", "body": data})
        self._mark_closed(ABNORMAL, "refused")

    def _mark_closed(self, code: int, reason: str) -> ConnectionClosed:
        if self._closed is None:
            self._closed = ConnectionClosed(Close(code, reason), None)
        return self._closed

    async def recv(self) -> str | bytes:
        """The next message (text as str, binary as bytes)."""
        if self._closed is not None:
            raise self._closed
        pending = asyncio.ensure_future(self._receive())
        try:
            await asyncio.wait((pending, self._aborted), return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not pending.done():
                pending.cancel()
        if not pending.done() or pending.cancelled():
            raise self._mark_closed(ABNORMAL, "connection let go")
        message: dict[str, Any] = pending.result()  # type: ignore[assignment]
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        raise self._mark_closed(int(message.get("code") or 1005), str(message.get("reason") or ""))

    async def send(self, message: str | bytes) -> None:
        if self._closed is not None or self._close_sent:
            raise self._closed or self._mark_closed(ABNORMAL, "closed")
        event: dict[str, Any] = {"type": "websocket.send"}
        event["text" if isinstance(message, str) else "bytes"] = message
        try:
            await self._send(event)
        except OSError:  # uvicorn's ClientDisconnected
            raise self._mark_closed(ABNORMAL, "the peer went away") from None

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame (once; later calls do nothing)."""
        if self._close_sent or self._closed is not None:
            return
        self._close_sent = True
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason[:120]})
        except OSError:
            log.debug("the peer went away before the close frame")
        self._mark_closed(code, reason)

    def abort(self) -> None:
        """Let the connection go now: a pending or later ``recv`` raises ConnectionClosed (1006); the
        transport closes when its handler returns."""
        if not self._aborted.done():
            self._aborted.set_result(None)

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosed:
            return
