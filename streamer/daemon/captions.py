"""Publishing one live session (the daemon's microphone) to caption displays over WebSocket.

A subscriber connects to ``/v1/captions`` (same token rules as ``/v1/stream``), receives a ``ready``
message, the last finals already spoken (so a display that joins late has context), then every event
of the session as it happens, in the protocol v1 format. Subscribers send nothing.

Each subscriber has a bounded outbox. Overflow policy: **close** — a display that stops reading is
closed with 1008 instead of holding memory; the session and the other displays carry on.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque

from websockets.exceptions import ConnectionClosed

from streamer.daemon import protocol
from streamer.daemon.connection import WebSocketConnection
from streamer.streaming.events import Event, Final, Partial, UtteranceEnd

log = logging.getLogger(__name__)

OUTBOX_SIZE = 500
HISTORY = 20  # finals replayed to a new subscriber


class CaptionHub:
    def __init__(self, session_id: str, model_name: str, history: int = HISTORY):
        self.session_id = session_id
        self.model_name = model_name
        self.recent: deque[dict[str, object]] = deque(maxlen=history)
        self._outboxes: dict[WebSocketConnection, asyncio.Queue[dict[str, object] | None]] = {}
        self._senders: set[asyncio.Task[None]] = set()
        self.closed = False

    @property
    def subscribers(self) -> int:
        return len(self._outboxes)

    def __call__(self, events: list[Event]) -> None:
        """A session's events, as protocol v1 messages with word timestamps, to every subscriber."""
        self.publish([e.to_dict(True) if isinstance(e, Partial | Final) else e.to_dict() for e in events
                      if not isinstance(e, UtteranceEnd)])

    def publish(self, messages: list[dict[str, object]]) -> None:
        """Hand messages to every subscriber (event loop thread)."""
        for message in messages:
            if message["type"] == "final":
                self.recent.append(message)
            for conn, outbox in list(self._outboxes.items()):
                try:
                    outbox.put_nowait(message)
                except asyncio.QueueFull:
                    log.info("caption subscriber %s is not reading: closing it", conn.remote_address)
                    del self._outboxes[conn]
                    asyncio.get_running_loop().create_task(conn.close(protocol.POLICY, "client is not reading"))

    async def serve(self, conn: WebSocketConnection) -> None:
        """One subscriber's connection, until it or the hub closes."""
        if self.closed:
            await conn.close(protocol.GOING_AWAY, "server shutting down")
            return
        outbox: asyncio.Queue[dict[str, object] | None] = asyncio.Queue(OUTBOX_SIZE)
        self._outboxes[conn] = outbox
        hello = {"type": "ready", "session": self.session_id, "model": self.model_name, "subscriber": True}
        for message in (hello, *self.recent):
            outbox.put_nowait(message)
        sender = asyncio.create_task(self._send(conn, outbox), name="captions-send")
        self._senders.add(sender)
        sender.add_done_callback(self._senders.discard)
        try:
            async for _ in conn:  # subscribers have nothing to say; this notices when they leave
                pass
        except ConnectionClosed:
            pass
        finally:
            self._outboxes.pop(conn, None)
            if not self.closed:  # the subscriber left; at close() the sender finishes on its own
                sender.cancel()

    async def _send(self, conn: WebSocketConnection, outbox: asyncio.Queue[dict[str, object] | None]) -> None:
        try:
            while (message := await outbox.get()) is not None:
                await conn.send(json.dumps(message, ensure_ascii=False))
            await conn.send(json.dumps({"type": "done"}))
            await conn.close(protocol.GOING_AWAY, "the session ended")
        except ConnectionClosed:
            log.debug("caption subscriber %s left", conn.remote_address)

    async def close(self, timeout: float = 10.0) -> None:
        """The session is over: every subscriber gets what is queued, then ``done`` and a 1001 close;
        returns once they have (or after ``timeout``)."""
        self.closed = True
        for conn, outbox in list(self._outboxes.items()):
            if outbox.full():  # it is not reading: no room for the end marker, close it now
                await conn.close(protocol.GOING_AWAY, "the session ended")
            else:
                outbox.put_nowait(None)
        if self._senders:
            await asyncio.wait(set(self._senders), timeout=timeout)
