"""Desktop dictation for real: under Xvfb, `streamer dictate` records a PulseAudio microphone that a
fixture is played into, and xdotool types its finals into a Tk text window, read back afterwards."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamer.daemon.server import Daemon, ServeOptions
from streamer.dictate import Composer, typing_command
from streamer.errors import StreamerError
from streamer.textnorm import word_errors
from tests.conftest import normalize, play

HERE = Path(__file__).parent
WORDS = "and mister john dashwood had then leisure to consider how much there might be prudently"


@pytest.fixture(scope="module")
def display(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if shutil.which("Xvfb") is None or shutil.which("xdotool") is None:
        pytest.skip("needs Xvfb and xdotool (apt-get install xvfb xdotool)")
    pytest.importorskip("tkinter", reason="the text window needs Python's tkinter")
    read, write = os.pipe()
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1024x768x24", "-nolisten", "tcp"],
                            pass_fds=(write,), stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    try:
        yield f":{number}"
    finally:
        proc.terminate()
        proc.wait(10)


def test_finals_are_joined_with_spaces_and_punctuation_is_optional() -> None:
    composer = Composer(punctuation=True)
    assert [composer.text(t) for t in ("Hello there.", "How are you?", "")] == ["Hello there.", " How are you?", ""]
    plain = Composer(punctuation=False)
    assert [plain.text(t) for t in ("Hello, there.", "It's Bob's!")] == ["hello there", " it's bob's"]


def test_without_a_typing_tool_the_error_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    with pytest.raises(StreamerError, match="install xdotool .* or wtype"):
        typing_command()


async def streamer(env: dict[str, str], *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(sys.executable, "-m", "streamer", *args, env=env,
                                                stderr=asyncio.subprocess.PIPE)


async def test_dictation_types_the_finals_into_a_text_window(pulse, display, engine, tmp_path):
    d = Daemon(engine, "tiny.en", ServeOptions(port=0, token="dict"))
    await d.start()
    env = {**os.environ, **pulse, "DISPLAY": display}
    env.pop("WAYLAND_DISPLAY", None)
    typed = tmp_path / "window.txt"
    window = subprocess.Popen([sys.executable, str(HERE / "textwindow.py"), str(typed)], env=env)
    dictate = None
    try:
        for _ in range(100):
            if typed.exists():
                break
            await asyncio.sleep(0.1)
        assert typed.read_text() == ""
        dictate = await streamer(env, "dictate", f"ws://127.0.0.1:{d.port}/v1/stream", "--token", "dict",
                                 "--device", "pulse", "--no-feedback")
        assert dictate.stderr is not None
        line = await asyncio.wait_for(dictate.stderr.readline(), 60)
        assert b"dictation ready" in line, line

        async def toggle() -> None:
            proc = await streamer(env, "dictate", "--toggle")
            assert await proc.wait() == 0

        await toggle()  # the hotkey: on
        await asyncio.sleep(1.5)
        await play(pulse)
        await asyncio.sleep(1.0)
        await toggle()  # off: the last words are committed and typed
        for _ in range(150):
            if "prudently" in normalize(typed.read_text()):
                break
            await asyncio.sleep(0.2)
        text = normalize(typed.read_text())
        # The words arrive in the order spoken, none doubled or lost; the microphone is real and decoded
        # in real time, so one knife-edge word may be heard differently ("head" for "had") under load.
        head = text.split()[: len(WORDS.split())]
        assert word_errors(WORDS.split(), head) <= 1, text
        dictate.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(dictate.wait(), 30) == 0
    finally:
        if dictate is not None and dictate.returncode is None:
            dictate.kill()
            await dictate.wait()
        window.terminate()
        window.wait(10)
        await d.shutdown()
