"""``streamer listen``: stream a file or the microphone to a daemon and show or save its captions.

Text and JSON lines are written as events arrive (on a terminal the partial tail is rewritten in
place); SRT and WebVTT are written when the stream ends, their cues made from the finals' word times.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from streamer import SAMPLE_RATE
from streamer.client import Done, Final, ServerError, StreamClient
from streamer.errors import StreamerError
from streamer.formats import Cue, to_srt, to_vtt, word_cues
from streamer.streaming.output import EventWriter

log = logging.getLogger(__name__)

LISTEN_FORMATS = ("text", "jsonl", "srt", "vtt")
FRAME_SECONDS = 0.1


@dataclass
class ListenReport:
    seconds: float  # audio sent
    finals: int
    reconnects: int
    dropped_seconds: float


class CaptionFile:
    """Collects finals into cues; ``render`` gives the SRT or WebVTT text."""

    def __init__(self, fmt: str):
        self.fmt = fmt
        self.words: list[tuple[str, float, float]] = []
        self.cues: list[Cue] = []

    def add(self, final: Final) -> None:
        if final.words:
            self.words += [(w.word, w.start, w.end) for w in final.words]
        elif final.text and final.start is not None and final.end is not None:
            self._flush()
            self.cues.append(Cue(final.start, final.end, final.text))

    def _flush(self) -> None:
        self.cues += word_cues(self.words)
        self.words = []

    def render(self) -> str:
        self._flush()
        return to_srt(self.cues) if self.fmt == "srt" else to_vtt(self.cues)


async def file_blocks(path: str, speed: float) -> AsyncIterator[np.ndarray]:
    """The file's audio in 100 ms blocks, paced at ``speed`` times real time (0: no pacing)."""
    from streamer.audio import load_audio

    audio = await asyncio.to_thread(load_audio, path)
    loop = asyncio.get_running_loop()
    began = loop.time()
    step = int(FRAME_SECONDS * SAMPLE_RATE)
    for i in range(0, len(audio), step):
        if speed > 0:
            due = began + i / SAMPLE_RATE / speed
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
        yield audio[i : i + step]


async def listen(
    client: StreamClient,
    blocks: AsyncIterator[np.ndarray],
    fmt: str,
    out: TextIO,
    stop: asyncio.Event,
    live: bool | None = None,
) -> ListenReport:
    """Send ``blocks`` until they end or ``stop`` is set, then ``end``; write every event as it comes."""
    writer = EventWriter(out, "jsonl" if fmt == "jsonl" else "text", live=live)
    captions = CaptionFile(fmt) if fmt in ("srt", "vtt") else None
    sent = 0.0
    finals = 0

    async def send_all() -> None:
        nonlocal sent
        stopping = asyncio.create_task(stop.wait())
        try:
            iterator = aiter(blocks)
            while True:
                block_task = asyncio.ensure_future(anext(iterator))
                finished, _ = await asyncio.wait({block_task, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if block_task not in finished:
                    block_task.cancel()
                    break
                try:
                    block = block_task.result()
                except StopAsyncIteration:
                    break
                await client.send(block)
                sent += len(block) / SAMPLE_RATE
        finally:
            stopping.cancel()
        await client.end()

    await client.connect()
    sender = asyncio.create_task(send_all(), name="listen-send")
    try:
        async for event in client:
            if isinstance(event, ServerError):
                raise StreamerError(f"the server: {event.text} ({event.code})")
            if isinstance(event, Final):
                finals += 1
                if captions is not None:
                    captions.add(event)
            if captions is None and not isinstance(event, Done):
                writer.write([event.message])
            if isinstance(event, Done):
                break
        await sender
    finally:
        sender.cancel()
        await client.close()
        if captions is None:
            writer.close()
    if captions is not None:
        out.write(captions.render())
        out.flush()
    return ListenReport(sent, finals, client.reconnects, client.dropped_seconds)


def open_output(path: str | None) -> TextIO:
    if path is None or path == "-":
        return sys.stdout
    try:
        return Path(path).open("w", encoding="utf-8")
    except OSError as e:
        raise StreamerError(f"--output {path}: {e.strerror}") from None
