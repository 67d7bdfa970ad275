"""OpenAI Realtime transcription, driven by the official ``openai`` client library (``realtime.connect``)."""

from __future__ import annotations

import asyncio
import base64

import numpy as np
import pytest
import soxr
from openai import AsyncOpenAI

from streamer.audio import load_audio
from streamer.daemon.server import Daemon
from tests.conftest import FIXTURES, normalize
from tests.daemon.conftest import TOKEN

CLIPS = [FIXTURES / f"sense_and_sensibility_01_austen_64kb-{n}.wav" for n in ("0870", "0890")]
PACE = 4.0  # times real time: well inside what the daemon keeps up with, and a short test


def connect(d: Daemon, key: str = TOKEN):
    client = AsyncOpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key=key, max_retries=0)
    return client.realtime.connect(extra_query={"intent": "transcription"})


def pcm24k(audio: np.ndarray) -> bytes:
    resampled = soxr.resample(audio, 16000, 24000)
    return (np.clip(resampled, -1, 1) * 32767).astype("<i2").tobytes()


async def send_audio(conn, audio: np.ndarray, chunk_s: float = 0.1) -> None:
    data = pcm24k(audio)
    step = int(24000 * chunk_s) * 2
    for i in range(0, len(data), step):
        await conn.input_audio_buffer.append(audio=base64.b64encode(data[i : i + step]).decode())
        await asyncio.sleep(chunk_s / PACE)


def silence(seconds: float) -> np.ndarray:
    return np.zeros(int(16000 * seconds), np.float32)


async def collect(conn, completed: int, timeout: float = 60.0) -> list:
    events = []

    async def read():
        async for event in conn:
            events.append(event)
            if sum(e.type.endswith("transcription.completed") for e in events) == completed:
                return

    await asyncio.wait_for(read(), timeout)
    return events


def references() -> list[str]:
    return [normalize(clip.with_suffix(".txt").read_text()) for clip in CLIPS]


def words_in_common(a: str, b: str) -> float:
    x, y = a.split(), b.split()
    return sum(w in y for w in x) / max(1, len(x))


async def test_server_vad_makes_one_item_per_utterance(daemon):
    async with connect(daemon) as conn:
        created = await conn.recv()
        assert created.type == "session.created"
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": 24000}, "transcription": {"model": "whisper-1", "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 500}}}})
        audio = np.concatenate([load_audio(CLIPS[0]), silence(1.5), load_audio(CLIPS[1]), silence(1.5)])
        sender = asyncio.create_task(send_audio(conn, audio))
        events = await collect(conn, completed=2)
        await sender
    kinds = [e.type for e in events]
    assert kinds[0] == "session.updated"
    assert kinds.count("input_audio_buffer.speech_started") == 2
    assert kinds.count("input_audio_buffer.speech_stopped") == 2
    assert kinds.count("input_audio_buffer.committed") == 2
    completed = [e for e in events if e.type.endswith("transcription.completed")]
    for item, reference in zip(completed, references(), strict=True):
        deltas = "".join(e.delta for e in events
                         if e.type.endswith("transcription.delta") and e.item_id == item.item_id)
        assert deltas == item.transcript
        assert words_in_common(reference, normalize(item.transcript)) > 0.85
    started = [e for e in events if e.type == "input_audio_buffer.speech_started"]
    assert [e.item_id for e in started] == [e.item_id for e in completed]
    assert started[1].audio_start_ms > 7000  # the second clip begins after 7.1 s of speech and 1.5 s of silence


async def test_manual_commits_cut_the_items(daemon):
    async with connect(daemon) as conn:
        await conn.recv()  # session.created
        await conn.send({"type": "transcription_session.update", "session": {  # the beta form
            "input_audio_format": "pcm16", "input_audio_transcription": {"model": "whisper-1"},
            "turn_detection": None}})
        for clip in CLIPS:
            await send_audio(conn, np.concatenate([load_audio(clip), silence(0.5)]))
            await conn.input_audio_buffer.commit()
        events = await collect(conn, completed=2)
    kinds = [e.type for e in events]
    assert kinds[0] == "transcription_session.updated"
    assert "input_audio_buffer.speech_started" not in kinds
    committed = [e for e in events if e.type == "input_audio_buffer.committed"]
    completed = [e for e in events if e.type.endswith("transcription.completed")]
    assert [e.item_id for e in committed] == [e.item_id for e in completed]
    assert committed[1].previous_item_id == committed[0].item_id
    for item, reference in zip(completed, references(), strict=True):
        assert words_in_common(reference, normalize(item.transcript)) > 0.85


async def test_bad_events_get_realtime_errors_and_the_session_goes_on(daemon):
    async with connect(daemon) as conn:
        await conn.recv()
        await conn.send({"type": "input_audio_buffer.append", "audio": "not base64!"})
        bad_audio = await conn.recv()
        await conn.input_audio_buffer.commit()
        empty = await conn.recv()
        await conn.session.update(session={"type": "transcription", "audio": {"input": {
            "transcription": {"language": "de"}}}})
        english_only = await conn.recv()
        await conn.input_audio_buffer.clear()
        cleared = await conn.recv()
    assert bad_audio.type == "error" and bad_audio.error.param == "audio"
    assert empty.type == "error" and empty.error.code == "input_audio_buffer_commit_empty"
    assert english_only.type == "error" and "English-only" in english_only.error.message
    assert cleared.type == "input_audio_buffer.cleared"


async def test_a_wrong_key_is_refused_at_the_handshake(daemon):
    with pytest.raises(Exception) as refused:  # noqa: B017 - the SDK passes the websockets error through
        async with connect(daemon, "wrong") as conn:
            await conn.recv()
    assert "401" in str(refused.value)
    assert daemon.other_sessions["realtime"] == 0
