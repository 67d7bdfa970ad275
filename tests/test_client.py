"""The Python client and `streamer listen` against a real daemon on 127.0.0.1."""

from __future__ import annotations

import asyncio
import socket
import sys

import numpy as np
import pytest

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.client import ClientError, Done, Final, Ready, StreamClient
from streamer.daemon.server import Daemon, ServeOptions
from streamer.decoding.transcribe import transcribe
from streamer.textnorm import wer
from tests.conftest import FIXTURES, normalize
from tests.test_cli import parse_srt

CLIP = FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"
CLIP2 = FIXTURES / "sense_and_sensibility_01_austen_64kb-0880.wav"


@pytest.fixture
async def daemon(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token="t0ken"))
    await d.start()
    yield d
    await d.shutdown()


def url(d: Daemon) -> str:
    return f"ws://127.0.0.1:{d.port}/v1/stream"


async def send_paced(client: StreamClient, audio: np.ndarray, speed: float = 4.0) -> None:
    step = SAMPLE_RATE // 10
    for i in range(0, len(audio), step):
        await client.send(audio[i : i + step])
        await asyncio.sleep(0.1 / speed)


async def collect(client: StreamClient) -> list:
    return [event async for event in client]


async def send_with_a_drop(client: StreamClient, audio: np.ndarray, at: float) -> None:
    """Send ``audio`` paced, the network dropping ``at`` seconds in, then end the stream."""
    half = int(at * SAMPLE_RATE)
    await send_paced(client, audio[:half])
    assert client._ws is not None
    client._ws.transport.abort()  # the network drops
    await send_paced(client, audio[half:])
    await client.end()


async def test_events_arrive_typed_and_end_with_done(daemon, engine):
    audio = np.concatenate([load_audio(CLIP), np.zeros(SAMPLE_RATE, np.float32)])
    async with StreamClient(url(daemon), "t0ken") as client:
        reader = asyncio.create_task(collect(client))
        await send_paced(client, audio)
        await client.end()
        events = await reader
    assert isinstance(events[0], Ready) and not events[0].resumed
    assert isinstance(events[-1], Done)
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.index for f in finals] == list(range(len(finals)))
    assert finals[-1].closes
    offline = transcribe(engine.model, engine.tokenizer, audio).text
    assert wer(offline, " ".join(f.text for f in finals)) == 0.0
    words = [w for f in finals for w in f.words]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))


async def test_a_bad_token_is_a_clear_error(daemon):
    client = StreamClient(url(daemon), "wrong")
    with pytest.raises(ClientError, match="401"):
        await client.connect()


async def test_a_dropped_connection_is_resumed_without_losing_or_repeating_finals(daemon, engine):
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([load_audio(CLIP), gap, load_audio(CLIP2), gap])
    async with StreamClient(url(daemon), "t0ken") as client:
        reader = asyncio.create_task(collect(client))
        await send_with_a_drop(client, audio, 5.5)
        events = await reader
    readies = [e for e in events if isinstance(e, Ready)]
    assert len(readies) == 2 and readies[1].resumed and readies[0].session == readies[1].session
    assert client.reconnects == 1
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.index for f in finals] == list(range(len(finals)))
    words = [w for f in finals for w in f.words]
    assert all(a.end <= b.start + 1e-6 for a, b in zip(words, words[1:], strict=False))  # no audio heard twice
    # No phrase lost or repeated across the drop: the words offline transcription hears, as many, give or take
    # the knife-edge words that a live decode's timing may hear otherwise ("in his power" as "as power", or
    # "ill-disposed" as "old-sposed": 4 errors of 30 words in 2 runs of 8 on an AMD EPYC's kernels).
    offline = normalize(transcribe(engine.model, engine.tokenizer, audio).text).split()
    streamed = normalize(" ".join(f.text for f in finals)).split()
    assert abs(len(streamed) - len(offline)) <= 2
    assert wer(" ".join(offline), " ".join(streamed)) <= 0.2


class Balancer:
    """A TCP balancer on 127.0.0.1 that sends the connections numbered in ``astray`` (from 0) to the
    ``other`` port and the rest to ``home``: a balancer whose health check of ``home`` missed a beat."""

    def __init__(self, home: int, other: int, astray: set[int]):
        self.home, self.other, self.astray = home, other, astray
        self.connections = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._route, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()

    async def _route(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        port = self.other if self.connections in self.astray else self.home
        self.connections += 1
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass  # one side went away: close the other
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_a_resume_sent_to_the_wrong_server_is_tried_again(engine):
    """The first resume reaches a server that never had the session (unknown_session); the client tries
    again rather than starting anew, and the next attempt resumes the session where it lives."""
    home = Daemon(engine, "tiny.en", ServeOptions(port=0))
    other = Daemon(engine, "tiny.en", ServeOptions(port=0))
    await other.start()
    await home.start()
    balancer = Balancer(home.port, other.port, astray={1})
    gap = np.zeros(SAMPLE_RATE, np.float32)
    audio = np.concatenate([load_audio(CLIP), gap])
    try:
        async with StreamClient(f"ws://127.0.0.1:{await balancer.start()}/v1/stream") as client:
            reader = asyncio.create_task(collect(client))
            await send_with_a_drop(client, audio, 4.5)
            events = await asyncio.wait_for(reader, 60)
    finally:
        await balancer.close()
        await home.shutdown()
        await other.shutdown()
    assert balancer.connections == 3  # the first session, the resume sent astray, the resume that worked
    readies = [e for e in events if isinstance(e, Ready)]
    assert len(readies) == 2 and readies[1].resumed and readies[0].session == readies[1].session == client.session_id
    assert client.lost_seconds == 0.0
    finals = [e for e in events if isinstance(e, Final)]
    assert [f.index for f in finals] == list(range(len(finals)))
    assert "dashwood" in normalize(" ".join(f.text for f in finals))
    assert isinstance(events[-1], Done)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_the_client_reconnects_after_the_server_restarts(engine):
    port = free_port()
    first = Daemon(engine, "tiny.en", ServeOptions(port=port))
    await first.start()
    clip = np.concatenate([load_audio(CLIP), np.zeros(SAMPLE_RATE, np.float32)])
    second_clip = np.concatenate([load_audio(CLIP2), np.zeros(SAMPLE_RATE, np.float32)])
    second: Daemon | None = None
    try:
        async with StreamClient(f"ws://127.0.0.1:{port}/v1/stream") as client:
            reader = asyncio.create_task(collect(client))
            await send_paced(client, clip)
            await first.shutdown()  # drains the session (its finals, done, 1001)
            await client.send(second_clip)  # kept in the backlog while the server is away
            second = Daemon(engine, "tiny.en", ServeOptions(port=port))
            await second.start()
            await client.end()
            events = await asyncio.wait_for(reader, 60)
    finally:
        if second is not None:
            await second.shutdown()
    readies = [e for e in events if isinstance(e, Ready)]
    # a new session (the first one was drained), under the client's own session id again
    assert len(readies) == 2 and not readies[1].resumed
    assert readies[0].session == readies[1].session == client.session_id
    finals = [e for e in events if isinstance(e, Final)]
    text = normalize(" ".join(f.text for f in finals))
    assert "dashwood" in text and "young man" in text
    later = [f for f in finals if "young" in normalize(f.text)]
    assert later[0].start is not None and later[0].start >= len(clip) / SAMPLE_RATE - 0.5  # times carry on
    assert isinstance(events[-1], Done)


async def test_every_connection_names_the_clients_session_in_the_url(daemon):
    client = StreamClient(url(daemon) + "?lang=x", "t0ken", session_id="my-session-0001")
    assert client.session_url.endswith("/v1/stream?lang=x&session=my-session-0001")
    async with client:
        ready = await anext(client)
    assert isinstance(ready, Ready) and ready.session == "my-session-0001"
    assert StreamClient(url(daemon)).session_id != StreamClient(url(daemon)).session_id  # a new UUID each


async def test_a_full_server_is_tried_again_until_a_session_ends(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, max_sessions=1))
    await d.start()
    try:
        first = StreamClient(url(d))
        await first.connect()
        second = StreamClient(url(d), reconnect_for=60)
        waiting = asyncio.create_task(second.connect())

        async def refused() -> None:
            while not d.metrics.errors.get("over_capacity"):
                await asyncio.sleep(0.05)

        await asyncio.wait_for(refused(), 30)  # the second client was turned away (1013) at least once
        assert not waiting.done()
        await first.end()
        assert isinstance((await collect(first))[-1], Done)
        ready = await asyncio.wait_for(waiting, 30)
        assert ready.session == second.session_id
        await second.close()
    finally:
        await d.shutdown()


async def run_listen(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "streamer", "listen", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def parse_vtt(text: str) -> list[tuple[int, str, str, str]]:
    assert text.startswith("WEBVTT\n\n")
    cues = []
    for i, block in enumerate(text[len("WEBVTT\n\n") :].strip().split("\n\n"), start=1):
        times, *lines = block.split("\n")
        start, end = times.split(" --> ")
        assert len(start) == len(end) == len("00:00:00.000") and start[8] == "."
        cues.append((i, start, end, " ".join(lines)))
    return cues


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
async def test_listen_writes_caption_files_that_parse_back(daemon, engine, tmp_path, fmt):
    gap = np.zeros(SAMPLE_RATE, np.float32)
    out = tmp_path / f"captions.{fmt}"
    code, _, err = await run_listen(url(daemon), "--token", "t0ken", "--file", str(CLIP), "--speed", "0",
                                    "--format", fmt, "--output", str(out))
    assert code == 0, err
    text = out.read_text()
    cues = parse_vtt(text) if fmt == "vtt" else parse_srt(text)
    assert [c[0] for c in cues] == list(range(1, len(cues) + 1))
    assert all(start < end for _, start, end, _ in cues)
    assert all(a[2] <= b[1] for a, b in zip(cues, cues[1:], strict=False))
    offline = transcribe(engine.model, engine.tokenizer, np.concatenate([load_audio(CLIP), gap])).text
    assert wer(offline, " ".join(c[3] for c in cues)) <= 0.05


async def test_listen_prints_one_line_per_utterance_when_piped(daemon):
    code, out, err = await run_listen(url(daemon), "--token", "t0ken", "--file", str(FIXTURES / "005.wav"),
                                      "--speed", "0")
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 1 and "\x1b" not in out
    assert "spades" in normalize(lines[0])


async def test_listen_to_a_server_with_a_bad_token_exits_2_with_one_line(daemon):
    code, out, err = await run_listen(url(daemon), "--token", "nope", "--file", str(CLIP))
    assert code == 2
    assert err.strip().startswith("streamer: error:") and "401" in err and "Traceback" not in err
