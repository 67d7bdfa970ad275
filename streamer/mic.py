"""Microphone capture with sounddevice (PortAudio), handed to the asyncio loop, and its live session.

PortAudio calls ``_callback`` on its own thread with each block; the callback copies the block and
hands it to the loop with ``call_soon_threadsafe``, where it joins a bounded queue. Overflow policy:
**drop and count** — when the queue is full (the consumer is stuck for ``max_seconds``), the new block
is dropped, counted in ``dropped_blocks`` and reported in the log; PortAudio's own input overflows are
counted in ``device_overflows``. ``blocks()`` yields 16 kHz mono float32 (resampled when the device
cannot record at 16 kHz). ``caption_microphone`` runs the microphone through a ``LiveStream``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from streamer import SAMPLE_RATE
from streamer.errors import StreamerError
from streamer.streaming.events import Event, Final
from streamer.streaming.live import LiveStream
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig
from streamer.streaming.sources import PcmDecoder

log = logging.getLogger(__name__)


def _sounddevice() -> Any:
    try:
        import sounddevice
    except OSError as e:  # the PortAudio shared library is missing
        raise StreamerError(
            f"the microphone needs PortAudio ({e}); on Debian/Ubuntu: apt-get install libportaudio2"
        ) from None
    return sounddevice


def list_devices() -> str:
    """The input devices, one per line: index, name, channels, default sample rate."""
    sd = _sounddevice()
    lines = []
    for index, dev in enumerate(sd.query_devices()):
        if dev["max_input_channels"] > 0:
            lines.append(
                f"{index:3d}  {dev['name']}  ({dev['max_input_channels']} in, {dev['default_samplerate']:.0f} Hz)"
            )
    return "\n".join(lines) + "\n" if lines else "no input devices found\n"


def _device(name: str | None) -> int | str | None:
    return int(name) if name is not None and name.isdigit() else name


class Microphone:
    def __init__(self, device: str | None = None, block_seconds: float = 0.05, max_seconds: float = 10.0):
        self.device = _device(device)
        self.block_seconds = block_seconds
        self.max_blocks = max(1, round(max_seconds / block_seconds))
        self.sample_rate = SAMPLE_RATE
        self.dropped_blocks = 0
        self.device_overflows = 0
        self._queue: asyncio.Queue[np.ndarray | None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None

    def open(self) -> None:
        """Start recording (call on the event loop that will read ``blocks()``)."""
        sd = _sounddevice()
        self._loop = asyncio.get_running_loop()
        self._queue = asyncio.Queue(self.max_blocks + 1)  # + 1: room for the end marker
        try:
            info = sd.query_devices(self.device, "input")
        except (ValueError, sd.PortAudioError) as e:
            raise StreamerError(f"--device {self.device}: {e} (streamer mic --list-devices shows the inputs)") from None
        try:
            sd.check_input_settings(self.device, channels=1, dtype="float32", samplerate=SAMPLE_RATE)
        except (ValueError, sd.PortAudioError):
            self.sample_rate = int(info["default_samplerate"])  # resampled to 16 kHz as it arrives
        try:
            self._stream = sd.InputStream(
                device=self.device, channels=1, dtype="float32", samplerate=self.sample_rate,
                blocksize=round(self.block_seconds * self.sample_rate), callback=self._callback,
            )
            self._stream.start()
        except sd.PortAudioError as e:
            raise StreamerError(f"cannot record from {info['name']!r}: {e}") from None
        log.info("recording from %r at %d Hz", info["name"], self.sample_rate)

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread: copy the block and hand it to the loop (never block here)."""
        if status.input_overflow:
            self.device_overflows += 1
        assert self._loop is not None
        if not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._put, indata[:, 0].copy())

    def _put(self, block: np.ndarray | None) -> None:
        assert self._queue is not None
        if self._queue.qsize() < self.max_blocks:
            self._queue.put_nowait(block)
        else:
            self.dropped_blocks += 1
            if self.dropped_blocks == 1 or self.dropped_blocks % 100 == 0:
                log.warning("audio queue full: %d microphone block(s) dropped so far", self.dropped_blocks)

    async def blocks(self) -> AsyncIterator[np.ndarray]:
        """16 kHz mono float32 blocks until ``close``."""
        assert self._queue is not None, "open() first"
        decoder = PcmDecoder("pcm_f32le", self.sample_rate)
        while (block := await self._queue.get()) is not None:
            yield block if self.sample_rate == SAMPLE_RATE else decoder.decode(block.tobytes())

    def close(self) -> None:
        """Stop recording; ``blocks()`` ends after the blocks already queued. Idempotent."""
        if self._stream is not None:
            self._stream.stop()
            self._stream.close()
            self._stream = None
            if self._queue is not None:
                self._queue.put_nowait(None)  # blocks stop coming now: the marker always has room
        if self.dropped_blocks or self.device_overflows:
            log.warning(
                "microphone: %d block(s) dropped (queue full), %d device overflow(s)",
                self.dropped_blocks, self.device_overflows,
            )


@dataclass
class MicReport:
    seconds: float  # audio taken from the microphone
    words: int  # words committed
    dropped_blocks: int
    device_overflows: int


async def caption_microphone(
    mic: Microphone,
    scheduler: Scheduler,
    config: StreamConfig,
    sinks: Sequence[Callable[[list[Event]], None]],
    stop: asyncio.Event,
    duration: float | None = None,
    drain_timeout: float = 30.0,
) -> MicReport:
    """Record until ``stop`` is set (or ``duration`` seconds), transcribing live on ``scheduler``; every
    event goes to each sink on the event loop thread. The last speech is flushed before it returns."""
    loop = asyncio.get_running_loop()
    words = 0
    failure: list[BaseException] = []

    def deliver(events: list[Event]) -> None:
        nonlocal words
        words += sum(len(e.words) for e in events if isinstance(e, Final))
        for sink in sinks:
            sink(events)

    def on_error(error: BaseException) -> None:
        failure.append(error)
        loop.call_soon_threadsafe(stop.set)

    def on_events(events: list[Event]) -> None:  # the inference thread
        loop.call_soon_threadsafe(deliver, events)

    stream = LiveStream(scheduler, on_events, config, on_error)
    mic.open()
    watcher = asyncio.create_task(stop.wait(), name="mic-stop")
    watcher.add_done_callback(lambda _: mic.close())
    received = 0
    limit = None if duration is None else round(duration * SAMPLE_RATE)
    try:
        async for block in mic.blocks():
            if limit is not None:
                block = block[: limit - received]
            received += len(block)
            stream.feed(block)
            if limit is not None and received >= limit:
                stop.set()
    finally:
        mic.close()
        watcher.cancel()
        stream.end()
        if not await asyncio.to_thread(stream.wait, drain_timeout):
            log.warning("the last speech was not transcribed within %g s", drain_timeout)
        # Events delivered with call_soon_threadsafe before the wait ended run before this line resumes.
    if failure:
        raise StreamerError(f"transcription failed: {failure[0]}")
    return MicReport(received / SAMPLE_RATE, words, mic.dropped_blocks, mic.device_overflows)
