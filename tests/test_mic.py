"""The microphone on a real PortAudio device: a PulseAudio null sink's monitor, fed by paplay."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import sys

import pytest
from websockets.asyncio.client import connect

from streamer.mic import Microphone, caption_microphone
from streamer.streaming.events import Event, Final
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig
from tests.conftest import FIXTURES, normalize, play

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
WORDS = "and mister john dashwood had then leisure to consider how much there might be prudently"


async def test_microphone_captions_speech_played_into_the_device(pulse, engine):
    scheduler = Scheduler(engine)
    events: list[Event] = []
    stop = asyncio.Event()

    async def speak() -> None:
        await asyncio.sleep(0.5)
        await play(pulse)
        await asyncio.sleep(2.0)  # the speech end is heard, then stop
        stop.set()

    speaker = asyncio.create_task(speak())
    try:
        report = await caption_microphone(Microphone("pulse"), scheduler, StreamConfig(), [events.extend], stop)
    finally:
        await speaker
        scheduler.close()
    text = normalize(" ".join(e.text for e in events if isinstance(e, Final)))
    assert WORDS in text
    assert report.seconds > 7.0 and report.dropped_blocks == 0
    assert report.words >= len(WORDS.split())


async def test_an_unknown_device_is_a_clear_error(pulse, engine):
    from streamer.errors import StreamerError

    with pytest.raises(StreamerError, match="no-such-microphone"):
        await caption_microphone(Microphone("no-such-microphone"), Scheduler(engine), StreamConfig(), [],
                                 asyncio.Event())


async def test_mic_command_prints_captions_and_serves_them_to_subscribers(pulse):
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer.cli", "mic", "--device", "pulse", "--serve", "--port", "0",
        "--token", "t0ken", stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=pulse,
    )
    assert proc.stderr is not None and proc.stdout is not None
    port = None
    while port is None:
        line = (await asyncio.wait_for(proc.stderr.readline(), 120)).decode()
        assert line, "the mic command exited before it was ready"
        if m := re.search(r"ready on ws://127\.0\.0\.1:(\d+)/", line):
            port = int(m.group(1))
    got: list[dict] = []
    async with connect(f"ws://127.0.0.1:{port}/v1/captions?token=t0ken") as ws:
        assert json.loads(await ws.recv())["type"] == "ready"
        await play(pulse)
        while not any(e["type"] == "final" and "then" in normalize(e["text"]) for e in got):
            got.append(json.loads(await asyncio.wait_for(ws.recv(), 30)))
        proc.send_signal(signal.SIGINT)  # ordered stop: the last finals, then done
        async for message in ws:
            got.append(json.loads(message))
    stdout, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0
    published = normalize(" ".join(e["text"] for e in got if e["type"] == "final"))
    assert WORDS in published
    assert got[-1]["type"] == "done"
    assert WORDS in normalize(stdout.decode())  # the terminal captions (finals, one line per utterance)
