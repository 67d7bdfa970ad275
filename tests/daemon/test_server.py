"""The daemon against real websockets clients on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from streamer.audio import load_audio
from streamer.daemon.server import Daemon, ServeOptions
from streamer.decoding.transcribe import transcribe
from streamer.streaming.session import StreamConfig
from tests.conftest import FIXTURES, normalize

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"


@pytest.fixture
async def daemon(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token="s3cret", max_sessions=3))
    await d.start()
    yield d
    await d.shutdown()


def url(d: Daemon, token: str | None = "s3cret") -> str:
    return f"ws://127.0.0.1:{d.port}/v1/stream" + (f"?token={token}" if token else "")


def pcm16(audio: np.ndarray) -> bytes:
    return (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()


async def stream_file(uri: str, audio: np.ndarray, frame_s: float = 0.1, pace: float = 0.0, **start) -> list[dict]:
    events = []
    async with connect(uri, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", **start}))
        ready = json.loads(await ws.recv())
        assert ready["type"] == "ready"
        step = int(16000 * frame_s)
        data = pcm16(np.concatenate([audio, np.zeros(16000, np.float32)]))

        async def reader():
            async for message in ws:
                events.append(json.loads(message))

        task = asyncio.create_task(reader())
        for i in range(0, len(data), 2 * step):
            await ws.send(data[i : i + 2 * step])
            if pace:
                await asyncio.sleep(pace)
        await ws.send(json.dumps({"type": "end"}))
        await task
        assert ws.close_code == 1000
    return events


def finals(events: list[dict]) -> str:
    return " ".join(e["text"] for e in events if e["type"] == "final")


@pytest.mark.accuracy
async def test_round_trip_gives_the_offline_text(daemon, engine):
    audio = load_audio(CLIP)
    events = await stream_file(url(daemon), audio, pace=0.05)  # 0.2 s of audio every 0.05 s: 4x real time
    offline = transcribe(engine.model, engine.tokenizer, audio).text
    assert normalize(finals(events)) == normalize(offline)
    assert events[-1] == {"type": "done"}
    kinds = [e["type"] for e in events]
    assert kinds[0] == "speech_start" and "speech_end" in kinds and "partial" in kinds
    words = [w for e in events if e["type"] == "final" for w in e["words"]]
    assert all(set(w) == {"word", "start", "end", "probability"} for w in words)


async def test_header_token_and_other_rates(daemon):
    audio = load_audio(FIXTURES / "005.wav")
    import soxr

    audio48 = soxr.resample(audio, 16000, 48000).astype(np.float32)
    events = []
    async with connect(url(daemon, None), additional_headers={"Authorization": "Bearer s3cret"}) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": 48000, "encoding": "pcm_f32le"}))
        assert json.loads(await ws.recv())["sample_rate"] == 48000
        data = np.concatenate([audio48, np.zeros(48000, np.float32)]).astype("<f4").tobytes()
        for i in range(0, len(data), 4 * 4800):
            await ws.send(data[i : i + 4 * 4800])
        await ws.send(json.dumps({"type": "end"}))
        async for message in ws:
            events.append(json.loads(message))
    assert "spades" in normalize(finals(events)) and "hearts" in normalize(finals(events))


@pytest.mark.parametrize("token", [None, "wrong"])
async def test_bad_or_missing_token_is_refused_with_401(daemon, token):
    with pytest.raises(InvalidStatus) as info:
        async with connect(url(daemon, token)):
            pass
    assert info.value.response.status_code == 401


async def test_origins_outside_the_allowed_list_are_refused_with_403(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, origins=["https://captions.example"]))
    await d.start()
    try:
        uri = f"ws://127.0.0.1:{d.port}/v1/stream"
        with pytest.raises(InvalidStatus) as info:
            async with connect(uri, origin="https://elsewhere.example"):
                pass
        assert info.value.response.status_code == 403
        async with connect(uri, origin="https://captions.example") as ws:
            await ws.send(json.dumps({"type": "start"}))
            assert json.loads(await ws.recv())["type"] == "ready"
    finally:
        await d.shutdown()


async def expect_close(daemon, messages, code, error_code):
    async with connect(url(daemon)) as ws:
        for m in messages:
            await ws.send(m)
        received = []
        with pytest.raises(ConnectionClosed):
            while True:
                received.append(json.loads(await ws.recv()))
        assert ws.close_code == code
        errors = [r for r in received if r["type"] == "error"]
        assert errors and errors[-1]["code"] == error_code and errors[-1]["message"]


START = json.dumps({"type": "start"})


@pytest.mark.parametrize(
    ("messages", "code", "error_code"),
    [
        ([b"\x00\x00" * 160], 1003, "audio_before_start"),
        (["{not json"], 1008, "invalid_json"),
        ([json.dumps({"type": "start", "sample_rate": 7999})], 1008, "bad_start"),
        ([json.dumps({"type": "start", "encoding": "mp3"})], 1008, "bad_start"),
        ([json.dumps({"type": "start", "language": "de"})], 1008, "bad_start"),
        ([json.dumps({"type": "hello"})], 1008, "expected_start"),
        ([START, json.dumps({"type": "dance"})], 1003, "unknown_type"),
        ([START, START], 1003, "already_started"),
        ([START, b"\x00\x00\x00"], 1003, "partial_sample"),
        ([START, b"\x00\x00" * 20000], 1009, "frame_too_large"),
        ([json.dumps({"type": "start", "sample_rate": 0})], 1008, "bad_start"),
        ([json.dumps({"type": "start", "sample_rate": 192000})], 1008, "bad_start"),
        ([json.dumps({"type": "start", "sample_rate": "fast"})], 1008, "bad_start"),
        ([json.dumps({"type": "start", "volume": 11})], 1008, "bad_start"),
        (["[1, 2]"], 1008, "invalid_message"),
        ([START, b""], 1003, "empty_frame"),
        ([START, "{"], 1003, "invalid_json"),
        ([START, json.dumps({"no": "type"})], 1003, "unknown_type"),
    ],
    ids=["audio-first", "bad-json", "rate", "encoding", "language", "not-start", "unknown", "start-twice",
         "odd-bytes", "too-large", "rate-0", "rate-192k", "rate-text", "unknown-field", "json-array",
         "empty-frame", "bad-json-later", "no-type"],
)
async def test_bad_input_gets_an_error_and_its_close_code(daemon, messages, code, error_code):
    await expect_close(daemon, messages, code, error_code)


async def test_frames_over_the_message_limit_close_with_1009(daemon):
    async with connect(url(daemon), max_size=None) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(b"\x00" * (1 << 20))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1009


async def test_megabytes_of_text_close_with_1009(daemon):
    async with connect(url(daemon), max_size=None) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send("x" * (1 << 20))
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1009


async def test_invalid_utf8_text_closes_with_1007_and_the_daemon_carries_on(daemon):
    async with connect(url(daemon)) as ws:
        await ws.send(START)
        await ws.recv()
        await ws.send(b"\xff\xfe{}", text=True)  # a text frame whose bytes are not UTF-8
        with pytest.raises(ConnectionClosed):
            while True:
                await ws.recv()
        assert ws.close_code == 1007
    events = await stream_file(url(daemon), load_audio(FIXTURES / "001.wav"))
    assert events[-1] == {"type": "done"}


async def test_non_finite_and_clipped_float_samples_are_survived(daemon):
    audio = load_audio(CLIP)
    noisy = audio.copy()
    noisy[1000:1100] = np.nan
    noisy[2000:2100] = np.inf
    noisy[3000:3100] = 1e-40  # denormals
    noisy[4000:4100] = 40.0  # far past full scale
    events = []
    async with connect(url(daemon), max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "encoding": "pcm_f32le"}))
        await ws.recv()
        data = np.concatenate([noisy, np.zeros(16000, np.float32)]).astype("<f4").tobytes()
        for i in range(0, len(data), 6400):
            await ws.send(data[i : i + 6400])
        await ws.send(json.dumps({"type": "end"}))
        events = [json.loads(m) async for m in ws]
    assert "dashwood" in normalize(finals(events)) and events[-1] == {"type": "done"}


async def test_a_handshake_with_huge_headers_is_refused_and_the_daemon_carries_on(daemon):
    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    request = "GET /v1/stream HTTP/1.1\r\nHost: x\r\n" + "".join(f"X-Pad-{i}: {'a' * 4000}\r\n" for i in range(200))
    writer.write(request.encode() + b"\r\n")
    await writer.drain()
    status = await reader.readline()
    writer.close()
    assert status.split()[1] in (b"400", b"413", b"431")
    events = await stream_file(url(daemon), load_audio(FIXTURES / "001.wav"))
    assert events[-1] == {"type": "done"}


async def test_compression_is_never_negotiated_so_a_deflate_bomb_cannot_be_sent(daemon):
    """A client offering permessage-deflate gets no extension; a frame compressed anyway (RSV1 set: a
    megabyte of zeros deflated to about a kilobyte) is a protocol error (1002), and the daemon carries on."""
    import base64
    import zlib

    reader, writer = await asyncio.open_connection("127.0.0.1", daemon.port)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write((
        "GET /v1/stream?token=s3cret HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n"
    ).encode())
    head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101") and b"sec-websocket-extensions" not in head.lower()
    squeezer = zlib.compressobj(wbits=-15)
    bomb = squeezer.compress(b"\x00" * 1_000_000) + squeezer.flush(zlib.Z_SYNC_FLUSH)[:-4]
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(bomb))
    writer.write(bytes([0x80 | 0x40 | 0x2, 0x80 | 126]) + len(bomb).to_bytes(2, "big") + mask + masked)
    await writer.drain()
    reply = await asyncio.wait_for(reader.read(64), 10)
    writer.close()
    assert reply[0] & 0x0F == 0x8 and int.from_bytes(reply[2:4], "big") == 1002  # a close frame, 1002
    events = await stream_file(url(daemon), load_audio(FIXTURES / "001.wav"))
    assert events[-1] == {"type": "done"}


async def test_a_silent_client_is_closed_after_the_idle_timeout(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, idle_timeout=0.5))
    await d.start()
    try:
        async with connect(f"ws://127.0.0.1:{d.port}/v1/stream") as ws:
            await ws.send(START)
            await ws.recv()
            message = json.loads(await asyncio.wait_for(ws.recv(), 5))
            assert message["code"] == "idle"
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            assert ws.close_code == 1008
    finally:
        await d.shutdown()


async def test_an_inference_failure_closes_that_session_with_1011_and_the_daemon_carries_on(engine):
    failing = StreamConfig(initial_prompt=(10**6,))  # no such token: every decode of these sessions raises
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, stream=failing))
    await d.start()
    try:
        ws_url = f"ws://127.0.0.1:{d.port}/v1/stream"
        with pytest.raises(ConnectionClosed) as closed:
            await stream_file(ws_url, load_audio(FIXTURES / "001.wav"))
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1011
        status, _ = await asyncio.to_thread(http_get, d.port, "/healthz")
        assert status == 200 and d.metrics.errors.get("internal") == 1
    finally:
        await d.shutdown()


async def test_over_capacity_gets_1013(daemon):
    held = [await connect(url(daemon)) for _ in range(3)]
    try:
        for ws in held:
            await ws.send(START)
            await ws.recv()
        await expect_close(daemon, [], 1013, "over_capacity")
    finally:
        for ws in held:
            await ws.close()


@pytest.mark.accuracy
async def test_three_concurrent_sessions_each_get_their_own_text(daemon):
    clips = [CLIP, FIXTURES / "005.wav", FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav"]
    results = await asyncio.gather(*(stream_file(url(daemon), load_audio(c), pace=0.02) for c in clips))
    texts = [normalize(finals(r)) for r in results]
    assert "dashwood" in texts[0] and "spades" not in texts[0]
    assert "spades" in texts[1] and "dashwood" not in texts[1]
    assert "ill disposed" in texts[2] and "dashwood" not in texts[2]


async def test_the_event_loop_never_waits_on_inference(daemon):
    clips = [CLIP, FIXTURES / "005.wav", FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav"]
    # 4x real time: 8 s of audio each take over 2 s to send however fast the decodes are (at 10x real
    # time the sessions ended within the 2 s of 20 lag samples once partial decodes got faster)
    await asyncio.gather(*(stream_file(url(daemon), load_audio(c), pace=0.05) for c in clips))
    lag = daemon.metrics.loop_lag
    assert lag.n > 20  # sampled every 0.1 s while three sessions were decoded
    assert lag.max < 0.05, f"the event loop ran a timer {lag.max * 1000:.0f} ms late"


async def test_a_vanished_client_frees_its_session(daemon):
    ws = await connect(url(daemon))
    await ws.send(START)
    await ws.recv()
    await ws.send(pcm16(load_audio(CLIP)[:16000]))
    ws.transport.abort()  # no close frame
    for _ in range(100):
        if not daemon.sessions:
            break
        await asyncio.sleep(0.05)
    assert not daemon.sessions


async def test_a_client_far_faster_than_real_time_is_closed_with_too_fast(engine):
    """30 s of speech sent at once into sessions that buffer 12 s: a clear error and 1008, no crash."""
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, stream=StreamConfig(buffer_seconds=12.0)))
    await d.start()
    try:
        audio = np.concatenate([load_audio(CLIP)] * 4)
        async with connect(f"ws://127.0.0.1:{d.port}/v1/stream") as ws:
            await ws.send(START)
            await ws.recv()

            async def send_all() -> None:
                with contextlib.suppress(ConnectionClosed):  # the server closes while we send
                    for i in range(0, len(audio), 8000):
                        await ws.send(pcm16(audio[i : i + 8000]))

            sender = asyncio.create_task(send_all())
            received = []
            with pytest.raises(ConnectionClosed):
                while True:
                    received.append(json.loads(await ws.recv()))
            await sender
            assert ws.close_code == 1008
        assert [e["code"] for e in received if e["type"] == "error"] == ["too_fast"]
        events = await stream_file(f"ws://127.0.0.1:{d.port}/v1/stream", load_audio(CLIP), pace=0.05)
        assert "dashwood" in normalize(finals(events))  # the daemon carries on
    finally:
        await d.shutdown()


def http_get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


async def test_health_and_metrics(daemon):
    await stream_file(url(daemon), load_audio(FIXTURES / "001.wav"))
    status, body = await asyncio.to_thread(http_get, daemon.port, "/healthz")
    assert status == 200
    status, body = await asyncio.to_thread(http_get, daemon.port, "/metrics")
    assert status == 200
    assert "streamer_sessions_total 1" in body
    assert "streamer_final_latency_seconds_count" in body and "streamer_queue_depth" in body
    assert "streamer_loop_lag_seconds_count" in body and "streamer_sessions_active 0" in body
    assert "s3cret" not in body


def test_sigterm_under_load_drains_every_session_and_delivers_their_finals(tmp_path):
    """A real `streamer serve` process with three sessions streaming at once: SIGTERM mid-stream flushes
    each session's finals (everything it had received), closes each with 1001, and exits 0."""
    log_path = tmp_path / "log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "STREAMER_TOKEN": "t"}
    log_file = log_path.open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port)], env=env, stderr=log_file)
    clips = {CLIP: "dashwood", FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav": "young man",
             FIXTURES / "005.wav": "spades"}
    try:
        async def client(clip, sent: asyncio.Event) -> tuple[list[dict], int | None]:
            events = []
            async with connect(f"ws://127.0.0.1:{port}/v1/stream?token=t") as ws:
                await ws.send(START)
                await ws.recv()
                data = pcm16(load_audio(clip))
                for i in range(0, len(data), 8000):  # 250 ms frames, 4x real time
                    await ws.send(data[i : i + 8000])
                    await asyncio.sleep(0.0625)
                sent.set()
                async for message in ws:
                    events.append(json.loads(message))
                return events, ws.close_code

        async def main() -> list[tuple[list[dict], int | None]]:
            for _ in range(300):
                if "ready on" in log_path.read_text():
                    break
                await asyncio.sleep(0.1)
            sent = [asyncio.Event() for _ in clips]
            tasks = [asyncio.create_task(client(c, e)) for c, e in zip(clips, sent, strict=True)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in sent)), 60)
            proc.send_signal(signal.SIGTERM)  # while the last words are still being decoded
            return await asyncio.gather(*tasks)

        results = asyncio.run(main())
        for (events, code), word in zip(results, clips.values(), strict=True):
            assert code == 1001
            assert word in normalize(finals(events))
            assert events[-1] == {"type": "done"}
        assert proc.wait(timeout=60) == 0
        assert "Traceback" not in log_path.read_text()
    finally:
        proc.kill()
        log_file.close()
