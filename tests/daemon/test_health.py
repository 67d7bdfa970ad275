"""Liveness and readiness: /healthz answers as soon as the daemon listens, /readyz once it takes sessions."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time

import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from streamer.daemon.server import Daemon, ServeOptions
from streamer.errors import ModelFileError
from tests.daemon.test_server import http_get as get


async def test_the_daemon_is_live_while_its_model_loads_and_ready_after(engine):
    loaded = threading.Event()

    def load():  # the real engine, handed over once the test lets the "load" finish
        loaded.wait(30)
        return engine

    d = Daemon(load, "tiny.en", ServeOptions(port=0, max_sessions=1))
    starting = asyncio.create_task(d.start())
    try:
        while not d.listening:  # listening comes first
            await asyncio.sleep(0.01)
        assert await asyncio.to_thread(get, d.port, "/healthz") == (200, "ok\n")
        assert await asyncio.to_thread(get, d.port, "/readyz") == (503, "starting\n")
        with pytest.raises(InvalidStatus) as refused:
            await connect(f"ws://127.0.0.1:{d.port}/v1/stream")
        assert refused.value.response.status_code == 503
        loaded.set()
        await starting
        assert await asyncio.to_thread(get, d.port, "/readyz") == (200, "ready\n")
        async with connect(f"ws://127.0.0.1:{d.port}/v1/stream") as ws:
            await ws.send('{"type": "start"}')
            await ws.recv()
            assert await asyncio.to_thread(get, d.port, "/readyz") == (503, "full\n")  # max_sessions 1
            assert await asyncio.to_thread(get, d.port, "/healthz") == (200, "ok\n")
    finally:
        loaded.set()
        await d.shutdown()


async def test_draining_turns_readiness_off_but_not_liveness(engine):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0))
    await d.start()
    ws = await connect(f"ws://127.0.0.1:{d.port}/v1/stream")
    await ws.send('{"type": "start"}')
    await ws.recv()
    d.draining = True  # as shutdown() sets it first
    try:
        assert await asyncio.to_thread(get, d.port, "/readyz") == (503, "draining\n")
        assert await asyncio.to_thread(get, d.port, "/healthz") == (200, "ok\n")
    finally:
        d.draining = False
        await ws.close()
        await d.shutdown()


async def test_the_model_is_loaded_and_warmed_up_on_a_thread_that_has_ended_once_ready(engine):
    """The inference thread must be the only live thread that has run torch's kernels
    (``streamer.torch_threads``)."""
    loaders: list[threading.Thread] = []

    def load():
        loaders.append(threading.current_thread())
        return engine

    d = Daemon(load, "tiny.en", ServeOptions(port=0))
    await d.start()
    try:
        [loader] = loaders
        assert loader is not threading.main_thread()
        await asyncio.to_thread(loader.join, 10)  # it hands the engine over, then ends
        assert not loader.is_alive()
        assert loader not in threading.enumerate()
    finally:
        await d.shutdown()


async def test_a_model_that_fails_to_load_stops_the_daemon_cleanly():
    def load():
        raise ModelFileError("/models/x: no such model")

    d = Daemon(load, "x", ServeOptions(port=0))
    with pytest.raises(ModelFileError, match="no such model"):
        await d.start()
    assert not d.listening


def test_serve_answers_healthz_before_torch_is_even_imported(tmp_path):
    """The whole process: /healthz answers within a fraction of the model's load time."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamer", "-v", "serve", "--port", "0"], stderr=subprocess.PIPE, text=True
    )
    try:
        began = time.monotonic()
        assert proc.stderr is not None
        port = None
        for line in proc.stderr:
            if "listening on" in line:
                port = int(line.rsplit(":", 1)[1].split(";")[0])
                break
        assert port is not None
        live = time.monotonic() - began
        assert get(port, "/healthz") == (200, "ok\n")
        for line in proc.stderr:
            if "ready on" in line:
                break
        ready = time.monotonic() - began
        assert get(port, "/readyz") == (200, "ready\n")
        assert live < ready
    finally:
        proc.terminate()
        proc.wait(30)
