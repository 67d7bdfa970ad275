"""Three `streamer serve` replicas behind a real HAProxy with deploy/haproxy/haproxy.cfg, on 127.0.0.1:
session affinity by ?session=ID, resume through the balancer, a replica killed or drained mid-stream."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.client import Done, Final, Ready, StreamClient
from tests.conftest import FIXTURES, normalize
from tests.daemon.test_server import http_get as get
from tests.test_client import free_port

log = logging.getLogger(__name__)
CONFIG = Path(__file__).resolve().parents[2] / "deploy" / "haproxy" / "haproxy.cfg"
CLIPS = [FIXTURES / f"sense_and_sensibility_01_austen_64kb-08{n}0.wav" for n in (7, 8, 9)]
KEYS = ["dashwood", "young man", "selfish"]  # a phrase of each clip
GAP = np.zeros(SAMPLE_RATE, np.float32)

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None, reason="haproxy is not installed (apt-get install haproxy)"
)


def wait_until(check, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.1)


def ready(port: int) -> bool:
    try:
        return get(port, "/readyz")[0] == 200
    except OSError:
        return False


def active_sessions(port: int) -> int:
    try:
        body = get(port, "/metrics")[1]
    except OSError:  # a replica that has just exited
        return 0
    match = re.search(r"^streamer_sessions_active (\d+)", body, re.M)
    assert match, body
    return int(match.group(1))


@dataclass
class Cluster:
    replicas: list[subprocess.Popen[bytes]]
    ports: list[int]
    balancer: subprocess.Popen[bytes]
    port: int

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/v1/stream"

    def sessions(self) -> list[int]:
        return [active_sessions(p) if r.poll() is None else 0 for r, p in zip(self.replicas, self.ports, strict=True)]


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    ports = [free_port() for _ in range(3)]
    replicas = [
        subprocess.Popen(
            [sys.executable, "-m", "streamer", "serve", "--port", str(p), "--threads", "1", "--max-sessions", "6",
             "--resume-grace", "30"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for p in ports
    ]
    port = free_port()
    env = {**os.environ, "STREAMER_BIND": f"127.0.0.1:{port}",
           **{f"STREAMER_R{i + 1}": f"127.0.0.1:{p}" for i, p in enumerate(ports)}}
    balancer = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    try:
        wait_until(lambda: all(ready(p) for p in ports), 120, "the replicas are ready")
        wait_until(lambda: ready(port), 30, "HAProxy answers /readyz")
        time.sleep(1.5)  # HAProxy's health checks (every 0.5 s, rise 1) see every replica up
        yield Cluster(replicas, ports, balancer, port)
    finally:
        for proc in [balancer, *replicas]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


def clip(i: int) -> np.ndarray:
    return np.concatenate([load_audio(CLIPS[i % 3]), GAP])


async def stream(client: StreamClient, audio: np.ndarray, started: asyncio.Event | None = None) -> None:
    step = SAMPLE_RATE // 10
    for i in range(0, len(audio), step):
        await client.send(audio[i : i + step])
        if started is not None and i >= 2 * SAMPLE_RATE:
            started.set()
        await asyncio.sleep(0.1)


READY_AT: dict[StreamClient, list[float]] = {}  # client -> when each of its Ready events arrived (monotonic)


async def run_client(client: StreamClient, audio: np.ndarray, started: asyncio.Event | None = None) -> list:
    async def read() -> list:
        events = []
        async for e in client:
            if isinstance(e, Ready):
                READY_AT.setdefault(client, []).append(time.monotonic())
            events.append(e)
        return events

    await client.connect()
    reader = asyncio.create_task(read())
    await stream(client, audio, started)
    await client.end()
    return await asyncio.wait_for(reader, 180)


async def streaming(
    cluster: Cluster, audios: list[np.ndarray]
) -> tuple[list[StreamClient], list[asyncio.Task[list]], list[int]]:
    """A client per audio streaming it through the balancer; returns once each has sent 2 s, with the
    clients, their runs and the sessions per replica at that moment."""
    clients = [StreamClient(cluster.url) for _ in audios]
    started = [asyncio.Event() for _ in clients]
    runs = [asyncio.create_task(run_client(c, a, s)) for c, a, s in zip(clients, audios, started, strict=True)]
    for s in started:
        await s.wait()
    return clients, runs, await asyncio.to_thread(cluster.sessions)


def finals_of(events: list) -> list[Final]:
    return [e for e in events if isinstance(e, Final)]


def test_named_sessions_spread_over_the_replicas(cluster):
    async def main() -> list[int]:
        clients = [StreamClient(cluster.url) for _ in range(9)]
        for c in clients:
            await c.connect()
        counts = await asyncio.to_thread(cluster.sessions)
        for c in clients:
            await c.close()
        return counts

    counts = asyncio.run(main())
    log.info("9 named sessions over 3 replicas: %s", counts)
    # Consistent hashing with bounded load (125% of the average): 9 sessions, at most 4 on any replica.
    assert sum(counts) == 9 and all(1 <= n <= 4 for n in counts), counts


def test_a_dropped_connection_resumes_on_its_replica_through_the_balancer(cluster):
    async def main() -> tuple[list, StreamClient, list[int]]:
        client = StreamClient(cluster.url)
        audio = np.concatenate([clip(0), clip(1)])

        async def drop_midway() -> None:
            await asyncio.sleep(5.0)
            assert client._ws is not None
            client._ws.transport.abort()  # the network drops, mid-sentence

        dropper = asyncio.create_task(drop_midway())
        events = await run_client(client, audio)
        await dropper
        return events, client, await asyncio.to_thread(cluster.sessions)

    events, client, _ = asyncio.run(main())
    readies = [e for e in events if isinstance(e, Ready)]
    assert len(readies) == 2 and readies[1].resumed and readies[1].session == client.session_id
    finals = finals_of(events)
    assert [f.index for f in finals] == list(range(len(finals)))  # none lost, none repeated
    text = normalize(" ".join(f.text for f in finals))
    assert "dashwood" in text and "young man" in text
    assert isinstance(events[-1], Done) and client.lost_seconds == 0.0


def test_clients_of_a_killed_replica_carry_on_with_the_others(cluster):
    async def main() -> tuple[list[list], list[StreamClient], int]:
        clients, runs, counts = await streaming(cluster, [np.concatenate([clip(i), clip(i + 1)]) for i in range(6)])
        victim = max(range(3), key=counts.__getitem__)
        cluster.replicas[victim].send_signal(signal.SIGKILL)
        killed_at.append(time.monotonic())
        log.info("sessions per replica %s; killed replica %d", counts, victim + 1)
        return await asyncio.gather(*runs), clients, counts[victim]

    began = time.monotonic()
    killed_at: list[float] = []
    results, clients, killed = asyncio.run(main())
    assert killed >= 1
    moved = [(events, c) for events, c in zip(results, clients, strict=True) if c.reconnects]
    assert len(moved) == killed  # exactly the killed replica's clients reconnected
    for events, client in moved:
        readies = [e for e in events if isinstance(e, Ready)]
        assert len(readies) == 2 and not readies[1].resumed  # a new session, on another replica ...
        assert readies[1].session == client.session_id != readies[0].session  # ... under a new id
        assert 0.0 < client.lost_seconds < 8.0  # reported: what the dead replica had not committed
        log.info("client %s: new session %.2f s after the kill; %.1f s of audio reported lost", client.session_id,
                 READY_AT[client][1] - killed_at[0], client.lost_seconds)
        second = KEYS[(clients.index(client) + 1) % 3]  # streamed after the kill: heard by the new replica
        assert second in normalize(" ".join(f.text for f in finals_of(events)))
        assert isinstance(events[-1], Done)
    for events, _ in [(e, c) for e, c in zip(results, clients, strict=True) if not c.reconnects]:
        assert isinstance(events[-1], Done) and len(finals_of(events)) >= 2
    assert time.monotonic() - began < 150


def test_a_draining_replica_takes_no_new_session_and_delivers_its_finals(cluster):
    async def main() -> tuple[list[list], list[StreamClient], int, list[int]]:
        clients, runs, counts = await streaming(cluster, [clip(i) for i in range(3)])
        drained = max(range(3), key=counts.__getitem__)
        cluster.replicas[drained].send_signal(signal.SIGTERM)
        await asyncio.to_thread(wait_until, lambda: get(cluster.ports[drained], "/readyz")[0] == 503, 10, "503")
        late = [StreamClient(cluster.url) for _ in range(4)]  # new sessions while it drains
        for c in late:
            await c.connect()
        after = await asyncio.to_thread(cluster.sessions)
        for c in late:
            await c.close()
        return await asyncio.gather(*runs), clients, drained, after

    results, clients, drained, after = asyncio.run(main())
    assert after[drained] <= len(clients)  # none of the 4 late sessions went to the draining replica
    assert sum(after) - after[drained] >= 4
    for events in results:  # every client, the drained replica's too, got its sentence
        text = normalize(" ".join(f.text for f in finals_of(events)))
        assert text, events
        assert isinstance(events[-1], Done)
    assert cluster.replicas[drained].wait(90) == 0  # it exits once drained
