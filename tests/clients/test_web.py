"""The browser caption page in a real headless Chromium whose fake microphone plays a fixture WAV.

The page is driven through the Chrome DevTools Protocol (over the websockets library)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import shutil
import urllib.request
import wave
from pathlib import Path

import numpy as np
import pytest
from websockets.asyncio.client import connect

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.daemon.server import Daemon, ServeOptions
from streamer.daemon.web import default_web_dir
from tests.conftest import FIXTURES, normalize

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (Debian: apt-get install chromium)")


def write_wav(path: Path, audio: np.ndarray) -> None:
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(SAMPLE_RATE)
        f.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())


class Page:
    """One Chromium tab over CDP."""

    def __init__(self, ws):
        self.ws = ws
        self.ids = 0

    async def call(self, method: str, **params) -> dict:
        self.ids += 1
        await self.ws.send(json.dumps({"id": self.ids, "method": method, "params": params}))
        while True:
            reply = json.loads(await self.ws.recv())
            if reply.get("id") == self.ids:
                if "error" in reply:
                    raise RuntimeError(reply["error"])
                return reply["result"]

    async def eval(self, expression: str):
        result = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 60.0):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline:
            value = await self.eval(expression)
            if value:
                return value
            await asyncio.sleep(0.25)
        seen = await self.eval(
            "JSON.stringify(['state', 'note', 'finals', 'partial'].map(id => document.getElementById(id).textContent))"
        )
        raise AssertionError(f"timed out waiting for {expression}; the page shows {seen}")


@contextlib.asynccontextmanager
async def chromium(tmp_path: Path, url: str, wav: Path):
    profile = tmp_path / "profile"
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}%noloop", "--autoplay-policy=no-user-gesture-required",
        f"--user-data-dir={profile}", "--remote-debugging-port=0", "--window-size=1280,360", url,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        for _ in range(200):
            if port_file.exists() and port_file.read_text().strip():
                break
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])

        def targets() -> list[dict]:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=5) as r:
                return json.loads(r.read())

        for _ in range(100):
            pages = [t for t in await asyncio.to_thread(targets) if t["type"] == "page"]
            if pages:
                break
            await asyncio.sleep(0.1)
        async with connect(pages[0]["webSocketDebuggerUrl"], max_size=None) as ws:
            yield Page(ws)
    finally:
        proc.kill()
        await proc.wait()


async def test_the_page_captions_its_microphone_and_the_overlay_renders(engine, tmp_path):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token="pagetoken", web_dir=default_web_dir()))
    await d.start()
    wav = tmp_path / "speech.wav"
    # Chromium's fake microphone starts its file before the page's audio graph runs (up to 2 s early
    # here when PulseAudio is the output), so the speech starts 4 s in, as a speaker would after a click.
    lead, tail = np.zeros(4 * SAMPLE_RATE, np.float32), np.zeros(3 * SAMPLE_RATE, np.float32)
    write_wav(wav, np.concatenate([lead, load_audio(FIXTURES / "sense_and_sensibility_01_austen_64kb-0870.wav"),
                                   tail]))
    try:
        base = f"http://127.0.0.1:{d.port}/?token=pagetoken"
        async with chromium(tmp_path, base + "&autostart=1", wav) as page:
            await page.wait_for("document.getElementById('state').dataset.state === 'live'", 60)
            # the page named its session in the URL (32 hex digits, its own id), and the daemon adopted it
            assert [s for s in d.sessions if re.fullmatch(r"[0-9a-f]{32}", s)], list(d.sessions)
            text = await page.wait_for(
                "(t => /dashwood/i.test(t) && t)(document.getElementById('finals').textContent)", 120
            )
            assert "mister john dashwood" in normalize(text)
            assert await page.eval("getComputedStyle(document.getElementById('finals')).color") == "rgb(0, 0, 0)"

            await page.call("Emulation.setDefaultBackgroundColorOverride", color={"r": 0, "g": 0, "b": 0, "a": 0})
            await page.call("Page.navigate", url=base + "&overlay=1")
            text = await page.wait_for(
                "(t => /dashwood/i.test(t) && t)(document.getElementById('finals').textContent)", 120
            )
            assert await page.eval("getComputedStyle(document.getElementById('bar')).display") == "none"
            shot = base64.b64decode((await page.call("Page.captureScreenshot", format="png"))["data"])
        assert shot.startswith(b"\x89PNG\r\n\x1a\n")
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "overlay.png").write_bytes(shot)
    finally:
        await d.shutdown()
