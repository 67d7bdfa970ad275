"""Deepgram live transcription, driven by the official ``deepgram-sdk`` pointed at the daemon."""

from __future__ import annotations

import asyncio
import contextlib

import numpy as np
import pytest
from deepgram import AsyncDeepgramClient
from deepgram.core.api_error import ApiError
from deepgram.environment import DeepgramClientEnvironment
from websockets.exceptions import ConnectionClosed

from streamer.audio import load_audio
from streamer.daemon.server import Daemon, ServeOptions
from tests.conftest import FIXTURES, normalize
from tests.daemon.conftest import TOKEN
from tests.daemon.test_realtime import words_in_common
from tests.daemon.test_server import http_get

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
PACE = 4.0


def client(d: Daemon, key: str = TOKEN) -> AsyncDeepgramClient:
    where = f"127.0.0.1:{d.port}"
    environment = DeepgramClientEnvironment(base=f"http://{where}", production=f"ws://{where}",
                                            agent=f"ws://{where}", agent_rest=f"http://{where}")
    return AsyncDeepgramClient(api_key=key, environment=environment)


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def send_audio(socket, audio: np.ndarray, chunk_s: float = 0.1) -> None:
    data = pcm16(audio)
    step = int(16000 * chunk_s) * 2
    for i in range(0, len(data), step):
        await socket.send_media(data[i : i + step])
        await asyncio.sleep(chunk_s / PACE)


async def read_all(socket, finalized: asyncio.Event | None = None) -> list:
    """Every message until the socket closes; ``finalized`` is set at the first result of a Finalize."""
    messages = []
    async for message in socket:
        messages.append(message)
        if finalized is not None and getattr(message, "from_finalize", False):
            finalized.set()
    return messages


async def test_live_results_then_metadata_on_close_stream(daemon):
    audio = np.concatenate([load_audio(CLIP), np.zeros(24000, np.float32)])
    async with client(daemon).listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=16000, interim_results="true", punctuate="true",
        vad_events="true", utterance_end_ms="1000", diarize="true",
    ) as socket:
        reader = asyncio.create_task(read_all(socket))
        await send_audio(socket, audio)
        await socket.send_close_stream()
        messages = await asyncio.wait_for(reader, 60)
    kinds = [m.type for m in messages]
    assert kinds[0] == "SpeechStarted" and kinds[-1] == "Metadata"
    finals = [m for m in messages if m.type == "Results" and m.is_final]
    interims = [m for m in messages if m.type == "Results" and not m.is_final]
    assert interims and finals and finals[-1].speech_final
    text = " ".join(m.channel.alternatives[0].transcript for m in finals if m.channel.alternatives[0].transcript)
    reference = normalize(CLIP.with_suffix(".txt").read_text())
    assert words_in_common(reference, normalize(text)) > 0.85
    words = [w for m in finals for w in m.channel.alternatives[0].words]
    assert words[0].punctuated_word == "And" and words[0].word == "and" and words[0].start < 1.0
    assert "UtteranceEnd" in kinds
    assert 8.5 < messages[-1].duration < 8.7  # 7.1 s of speech and 1.5 s of silence
    assert daemon.other_sessions["deepgram"] == 0


async def test_finalize_commits_what_was_heard(daemon):
    audio = load_audio(CLIP)[: 16000 * 4]  # the first four seconds, mid-sentence
    async with client(daemon).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as socket:
        finalized = asyncio.Event()
        reader = asyncio.create_task(read_all(socket, finalized))
        await send_audio(socket, audio)
        await socket.send_finalize()
        await asyncio.wait_for(finalized.wait(), 30)
        await socket.send_close_stream()
        messages = await asyncio.wait_for(reader, 60)
    flagged = [m for m in messages if m.type == "Results" and m.from_finalize]
    assert flagged and all(m.is_final for m in flagged)
    assert "dashwood" in normalize(" ".join(m.channel.alternatives[0].transcript for m in messages
                                            if m.type == "Results" and m.is_final))


@pytest.mark.parametrize(("query", "status"), [
    ({"encoding": "mulaw"}, 400), ({"language": "de"}, 400), ({"sample_rate": "100"}, 400),
])
async def test_bad_parameters_are_refused_before_the_websocket_opens(daemon, query, status):
    with pytest.raises(ApiError) as refused:
        async with client(daemon).listen.v1.connect(model="nova-3", **query):
            pass
    assert refused.value.status_code == status


async def test_a_wrong_key_is_401(daemon):
    with pytest.raises(ApiError) as refused:
        async with client(daemon, "wrong").listen.v1.connect(model="nova-3"):
            pass
    assert refused.value.status_code == 401


async def test_a_session_shows_in_metrics_by_protocol(daemon):
    async with client(daemon).listen.v1.connect(model="nova-3", encoding="linear16", sample_rate=16000) as socket:
        await socket.send_media(pcm16(load_audio(CLIP)[:1600]))
        status, text = await asyncio.to_thread(http_get, daemon.port, "/metrics")
        await socket.send_close_stream()
        await asyncio.wait_for(read_all(socket), 30)
    assert status == 200
    assert "streamer_sessions_active_deepgram 1" in text and "streamer_sessions_active 1" in text


async def test_past_the_session_length_limit_the_last_results_then_a_1008_close(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, max_session_seconds=3.0))
    await d.start()
    try:
        async with client(d, "any").listen.v1.connect(model="nova-3", encoding="linear16",
                                                      sample_rate=16000) as socket:
            messages: list = []

            async def read() -> int:
                try:
                    async for message in socket:
                        messages.append(message)
                except ConnectionClosed as e:
                    return e.rcvd.code if e.rcvd is not None else 1006
                return 1000

            reader = asyncio.create_task(read())
            with contextlib.suppress(ConnectionClosed):
                await send_audio(socket, load_audio(CLIP)[: 16000 * 5])
            code = await asyncio.wait_for(reader, 30)
    finally:
        await d.shutdown()
    assert code == 1008
    finals = " ".join(m.channel.alternatives[0].transcript for m in messages if m.type == "Results" and m.is_final)
    assert "dashwood" in normalize(finals)
    assert messages[-1].type == "Error" and messages[-1].variant == "session_too_long"
