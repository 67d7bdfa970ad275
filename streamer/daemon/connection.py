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
        self._aborted = False
        self._waiter: asyncio.Task[Any] | None = None  # the task waiting in recv
        self._interrupted: str | None = None  # why recv cancelled it: "abort" or "timeout"

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

    async def recv(self, timeout: float | None = None) -> str | bytes:
        """The next message (text as str, binary as bytes); TimeoutError if none comes within ``timeout``
        seconds.

        It waits in the calling task: a timeout or ``abort`` cancels that task's wait (a timer, not a
        task and a wait per message: the daemon takes ten messages a second from every client)."""
        if self._closed is not None:
            raise self._closed
        if self._aborted:
            raise self._mark_closed(ABNORMAL, "connection let go")
        task = asyncio.current_task()
        assert task is not None, "recv() runs in a task"
        self._waiter = task
        timer = None if timeout is None else task.get_loop().call_later(timeout, self._interrupt, task, "timeout")
        try:
            message: dict[str, Any] = await self._receive()  # type: ignore[assignment]
        except asyncio.CancelledError:
            reason, self._interrupted = self._interrupted, None
            if reason is None or task.uncancel() > 0:  # cancelled from outside (too)
                raise
            if reason == "timeout":
                raise TimeoutError(f"no message within {timeout:g} s") from None
            raise self._mark_closed(ABNORMAL, "connection let go") from None
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        raise self._mark_closed(int(message.get("code") or 1005), str(message.get("reason") or ""))

    def _interrupt(self, task: asyncio.Task[Any], reason: str) -> None:
        """End ``task``'s wait in recv (it raises TimeoutError or ConnectionClosed)."""
        if self._waiter is task and self._interrupted is None:
            self._interrupted = reason
            task.cancel()

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
        if not self._aborted:
            self._aborted = True
            if self._waiter is not None:
                self._interrupt(self._waiter, "abort")

    async def __aiter__(self) -> AsyncIterator[str | bytes]:
        try:
            while True:
                yield await self.recv()
        except ConnectionClosed:
            return
