"""The OpenAI-compatible REST endpoints, driven by the official ``openai`` client library."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from pathlib import Path

import openai
import pytest
from openai import AsyncOpenAI
from websockets.asyncio.client import connect

from streamer.audio import load_audio
from streamer.daemon.server import Daemon, ServeOptions
from streamer.decoding.transcribe import transcribe
from streamer.engine import Engine
from tests.conftest import FIXTURES, normalize

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
TOKEN = "s3cret"


@pytest.fixture
async def daemon(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token=TOKEN, max_sessions=2, max_upload_mb=1.0))
    await d.start()
    yield d
    await d.shutdown()


def client(d: Daemon, key: str = TOKEN) -> AsyncOpenAI:
    return AsyncOpenAI(base_url=f"http://127.0.0.1:{d.port}/v1", api_key=key, max_retries=0)


@pytest.fixture(scope="module")
def offline_text(tiny) -> str:
    return transcribe(tiny.model, tiny.tokenizer, load_audio(CLIP)).text


async def test_json_gives_the_offline_transcription(daemon, offline_text):
    result = await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP)
    assert normalize(result.text) == normalize(offline_text)


@pytest.mark.parametrize(("fmt", "starts"), [("text", "And Mr. John"), ("srt", "1\n00:00:00,000 --> "),
                                             ("vtt", "WEBVTT\n\n00:00:00.000 --> ")])
async def test_text_srt_and_vtt(daemon, fmt, starts):
    result = await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP, response_format=fmt)
    assert isinstance(result, str) and result.startswith(starts)
    assert "prudently" in result


async def test_verbose_json_lists_segments_and_words_in_order(daemon):
    result = await client(daemon).audio.transcriptions.create(
        model="whisper-1", file=CLIP, response_format="verbose_json", timestamp_granularities=["word", "segment"],
    )
    assert result.language == "english" and 7.0 < result.duration < 7.2
    assert result.segments and result.segments[0].start < 1.0
    words = result.words or []
    assert [w.word for w in words][:4] == ["And", "Mr.", "John", "Dashwood"]
    assert all(a.start <= a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))
    assert words[-1].end <= result.duration


async def test_stream_sends_deltas_then_the_whole_text(daemon, offline_text):
    stream = await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP, stream=True)
    deltas, done = [], None
    async for event in stream:
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
        elif event.type == "transcript.text.done":
            done = event.text
    assert deltas and done is not None
    assert normalize("".join(deltas)) == normalize(done) == normalize(offline_text)


async def test_any_format_ffmpeg_reads(daemon, offline_text, tmp_path):
    if shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg not installed")
    ogg = tmp_path / "clip.ogg"
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(CLIP), "-c:a", "libopus", str(ogg)], check=True)
    result = await client(daemon).audio.transcriptions.create(model="whisper-1", file=ogg)
    assert "prudently" in normalize(result.text)


async def test_models_lists_the_loaded_model(daemon):
    models = await client(daemon).models.list()
    assert [m.id for m in models.data] == ["tiny.en"]


async def test_a_wrong_key_is_401(daemon):
    with pytest.raises(openai.AuthenticationError) as refused:
        await client(daemon, "wrong").audio.transcriptions.create(model="whisper-1", file=CLIP)
    assert refused.value.code == "invalid_api_key"


@pytest.mark.parametrize(("upload", "kwargs", "param"), [
    (FIXTURES / "bad.wav", {}, "file"),
    (CLIP, {"language": "de"}, "language"),
    (CLIP, {"response_format": "mp3"}, "response_format"),
    (CLIP, {"temperature": 3}, "temperature"),
    (CLIP, {"timestamp_granularities": ["word"]}, "timestamp_granularities"),
])
async def test_bad_requests_are_400_naming_the_field(daemon, upload: Path, kwargs, param):
    with pytest.raises(openai.BadRequestError) as refused:
        await client(daemon).audio.transcriptions.create(model="whisper-1", file=upload, **kwargs)
    assert refused.value.param == param and refused.value.message


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")  # the SDK marks translations deprecated
async def test_translation_needs_a_multilingual_model(daemon):
    with pytest.raises(openai.BadRequestError) as refused:
        await client(daemon).audio.translations.create(model="whisper-1", file=CLIP)
    assert refused.value.code == "model_not_multilingual"


async def test_an_upload_over_the_limit_is_413(daemon, tmp_path):
    big = tmp_path / "big.wav"
    big.write_bytes(CLIP.read_bytes() * 6)  # over --max-upload-mb 1
    with pytest.raises(openai.APIStatusError) as refused:
        await client(daemon).audio.transcriptions.create(model="whisper-1", file=big)
    assert refused.value.status_code == 413


async def test_a_full_server_answers_429(daemon):
    uri = f"ws://127.0.0.1:{daemon.port}/v1/stream?token={TOKEN}"
    async with connect(uri) as first, connect(uri) as second:  # max_sessions 2
        for ws in (first, second):
            await ws.send(json.dumps({"type": "start"}))
            await ws.recv()
        with pytest.raises(openai.RateLimitError):
            await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP)
        assert daemon.other_sessions["openai"] == 0


async def start_upload(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A transcription request whose body has only begun to arrive (a slow upload)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = (b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n"
            b"Content-Type: audio/wav\r\n\r\n") + CLIP.read_bytes()[:1000]
    writer.write(
        b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Length: {len(head) + 100_000}\r\n".encode()
        + b"Content-Type: multipart/form-data; boundary=b\r\n\r\n" + head
    )
    await writer.drain()
    return reader, writer


async def until(check, timeout: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_uploads_still_arriving_count_against_max_sessions(daemon):
    slow = [await start_upload(daemon.port) for _ in range(2)]  # max_sessions 2
    await until(lambda: daemon.session_count == 2)
    with pytest.raises(openai.RateLimitError):
        await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP)
    for _, writer in slow:  # the clients give up mid-upload: their sessions are freed
        writer.close()
    await until(lambda: daemon.session_count == 0)
    result = await client(daemon).audio.transcriptions.create(model="whisper-1", file=CLIP)
    assert "prudently" in result.text


@pytest.mark.filterwarnings("ignore:deprecated:DeprecationWarning")
async def test_translation_on_base(base, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng not installed")
    wav = tmp_path / "de.wav"
    sentence = "Ich habe heute keine Zeit. Morgen gehe ich mit meinem Hund in den Park."
    # slowly: base translates it greedily above Whisper's log-probability threshold (no sampled fallback)
    subprocess.run(["espeak-ng", "-v", "de", "-s", "130", "-w", str(wav), sentence], check=True)
    d = Daemon(Engine(base, max_batch=2), "base", ServeOptions(port=0))
    await d.start()
    try:
        english = await client(d, "any").audio.translations.create(model="whisper-1", file=wav)
        german = await client(d, "any").audio.transcriptions.create(model="whisper-1", file=wav, language="de")
    finally:
        await d.shutdown()
    assert "dog" in normalize(english.text) and "park" in normalize(english.text)
    assert "hund" in normalize(german.text)
