"""Wyoming (Home Assistant) on `streamer serve --wyoming-port`, driven by the `wyoming` package's own client."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest
import soxr
from wyoming.asr import Transcribe, Transcript, TranscriptChunk
from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.client import AsyncTcpClient
from wyoming.error import Error
from wyoming.info import Describe, Info

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.daemon.server import Daemon, ServeOptions
from streamer.textnorm import wer
from tests.conftest import FIXTURES, normalize

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
CLIP2 = FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav"


@pytest.fixture
async def daemon(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, wyoming_port=0, max_sessions=2))
    await d.start()
    yield d
    await d.shutdown()


def client(d: Daemon) -> AsyncTcpClient:
    return AsyncTcpClient("127.0.0.1", d.wyoming_port)


async def test_describe_names_a_streaming_asr_program_with_the_model(daemon):
    async with client(daemon) as c:
        await c.write_event(Describe().event())
        event = await c.read_event()
    assert event is not None and Info.is_type(event.type)
    program = Info.from_event(event).asr[0]
    assert program.supports_transcript_streaming and program.installed
    assert program.models[0].name == "tiny.en" and program.models[0].languages == ["en"]


def stereo_44k(audio: np.ndarray) -> bytes:
    """16 kHz mono float -> 44.1 kHz stereo 16-bit PCM (another format than the model's)."""
    resampled = soxr.resample(audio, SAMPLE_RATE, 44100)
    both = np.stack([resampled, resampled], axis=1)  # (n, 2)
    return (np.clip(both, -1, 1) * 32767).astype("<i2").tobytes()


async def test_speech_in_any_format_is_transcribed_chunk_by_chunk_while_it_streams(daemon, engine):
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([load_audio(CLIP), gap, load_audio(CLIP2), gap])
    pcm = stereo_44k(audio)
    step = 44100 * 4 // 10  # 100 ms of 16-bit stereo
    events: list[tuple[float, str, dict]] = []

    async with client(daemon) as c:

        async def read() -> None:
            while (event := await c.read_event()) is not None:
                events.append((time.monotonic(), event.type, event.data))
                if event.type == "transcript-stop":
                    return

        reader = asyncio.create_task(read())
        await c.write_event(Transcribe(language="en").event())
        await c.write_event(AudioStart(rate=44100, width=2, channels=2).event())
        for i in range(0, len(pcm), step):
            await c.write_event(AudioChunk(rate=44100, width=2, channels=2, audio=pcm[i : i + step]).event())
            await asyncio.sleep(0.025)  # 4x real time
        stopped = time.monotonic()
        await c.write_event(AudioStop().event())
        await asyncio.wait_for(reader, 60)

    kinds = [k for _, k, _ in events]
    assert kinds[0] == "transcript-start" and kinds[-2:] == ["transcript", "transcript-stop"]
    chunks = [TranscriptChunk(text=d["text"]) for _, k, d in events if k == "transcript-chunk"]
    assert any(t < stopped for t, k, _ in events if k == "transcript-chunk")  # text while audio still came in
    text = Transcript(text=events[-2][2]["text"]).text
    assert normalize(text) == normalize(" ".join(ch.text for ch in chunks))
    assert "dashwood" in normalize(text) and "young man" in normalize(text)
    assert wer(normalize(text), normalize("And Mr. John Dashwood had then leisure to consider how much there "
                                          "might be prudently in his power to do for them. He was not an "
                                          "ill-disposed young man.")) <= 0.15


async def test_a_malformed_header_closes_that_connection_only(daemon):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.wyoming_port)
    writer.write(b"this is not json\n")
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)  # an error event, then the end of the stream
    writer.close()
    assert b'"error"' in reply and b"not JSON" in reply
    async with client(daemon) as c:  # the daemon serves on
        await c.write_event(Describe().event())
        event = await c.read_event()
    assert event is not None and Info.is_type(event.type)


@pytest.mark.parametrize("header", [
    b'{"type": "audio-chunk", "payload_length": 99999999}\n',  # over the payload limit
    b'{"type": "audio-start", "data": {"rate": 16000, "width": 7, "channels": 1}}\n',  # no such width
])
async def test_an_event_out_of_bounds_is_refused(daemon, header):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.wyoming_port)
    writer.write(header)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(), 10)
    writer.close()
    assert b'"error"' in reply and daemon.metrics.errors.get("wyoming_malformed", 0) >= 1


async def test_a_transcription_past_max_sessions_gets_an_error_and_sessions_count_by_protocol(daemon):
    start = AudioStart(rate=16000, width=2, channels=1).event()
    async with client(daemon) as a, client(daemon) as b, client(daemon) as c:
        await a.write_event(start)
        await b.write_event(start)
        await c.write_event(start)
        event = await c.read_event()
        assert event is not None and Error.is_type(event.type) and Error.from_event(event).code == "full"
        assert daemon.other_sessions["wyoming"] == 2 and daemon.readiness() == "full"
        body = daemon.metrics.render()
        assert "streamer_sessions_active_wyoming 2" in body and "streamer_sessions_active 2" in body
