"""``streamer dictate``: speak, and the finals are typed into the focused window.

The running dictation listens on a Unix socket for ``begin``, ``end`` and ``toggle``; bind a desktop
shortcut to ``streamer dictate --toggle`` (toggle mode), or ``--begin`` on key press and ``--end`` on
release (push-to-talk, e.g. with xbindkeys or sxhkd). While on, the microphone streams to the daemon
(``StreamClient``); each final is typed with xdotool (X11) or wtype (Wayland) as it is committed.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import socket
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from streamer.client import Final, ServerError, StreamClient
from streamer.errors import StreamerError
from streamer.mic import Microphone

log = logging.getLogger(__name__)

COMMANDS = ("begin", "end", "toggle")


def control_path() -> Path:
    runtime = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/streamer-{os.getuid()}"
    return Path(runtime) / "streamer-dictate.sock"


def send_command(command: str, path: Path | None = None) -> None:
    """Tell the running ``streamer dictate`` to begin, end or toggle."""
    path = path or control_path()
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        try:
            s.sendto(command.encode(), str(path))
        except (FileNotFoundError, ConnectionRefusedError):
            raise StreamerError(f"no streamer dictate is running (nothing listens on {path})") from None


def typing_command(prefer: str = "auto") -> list[str]:
    """The command that types text into the focused window, text appended as its last argument."""
    wayland = bool(os.environ.get("WAYLAND_DISPLAY"))
    x11 = bool(os.environ.get("DISPLAY"))
    order = {"auto": ["wtype", "xdotool"] if wayland else ["xdotool", "wtype"], "xdotool": ["xdotool"],
             "wtype": ["wtype"]}[prefer]
    for tool in order:
        if shutil.which(tool) is None:
            continue
        if tool == "xdotool" and x11:
            return ["xdotool", "type", "--clearmodifiers", "--delay", "4", "--"]
        if tool == "wtype" and wayland:
            return ["wtype", "--"]
    raise StreamerError(
        "cannot type into windows: install xdotool (X11, $DISPLAY set) or wtype (Wayland, $WAYLAND_DISPLAY set)"
    )


_PUNCTUATION = re.compile(r"[^\w\s'-]")


@dataclass
class Composer:
    """Turns finals into the text to type: a space between them, and optionally without Whisper's
    punctuation and capitals."""

    punctuation: bool = True
    _typed: bool = False

    def reset(self) -> None:
        self._typed = False

    def text(self, final: str) -> str:
        words = final.strip()
        if not self.punctuation:
            words = " ".join(_PUNCTUATION.sub(" ", words).lower().split())
        if not words:
            return ""
        joined = words if not self._typed or words[0] in ".,!?;:" else f" {words}"
        self._typed = True
        return joined


def beep(frequency: float) -> None:
    """A short tone on the default output when there is one (never an error if not)."""
    try:
        import sounddevice as sd

        t = np.arange(int(0.08 * 16000)) / 16000
        sd.play((0.2 * np.sin(2 * np.pi * frequency * t)).astype(np.float32), 16000)
    except Exception as e:  # no output device, no PortAudio: the beep is a nicety
        log.debug("no beep: %s", e)


def notify(message: str) -> None:
    if shutil.which("notify-send"):
        subprocess.run(["notify-send", "-t", "1500", "streamer", message], check=False, capture_output=True)


class Dictation:
    """Owns the control socket, and while on, the microphone and a session on the daemon."""

    def __init__(
        self,
        make_client: Callable[[], StreamClient],
        device: str | None,
        type_command: list[str],
        composer: Composer,
        feedback: bool = True,
    ):
        self.make_client = make_client
        self.device = device
        self.type_command = type_command
        self.composer = composer
        self.feedback = feedback
        self.typed_finals = 0
        self._commands: asyncio.Queue[str] = asyncio.Queue(16)  # overflow policy: drop the command, logged
        self._run: asyncio.Task[None] | None = None
        self._stop_run = asyncio.Event()

    def _command(self, data: bytes) -> None:
        command = data.decode(errors="replace").strip()
        if command not in COMMANDS:
            log.warning("ignoring an unknown command %r on the control socket", command)
            return
        try:
            self._commands.put_nowait(command)
        except asyncio.QueueFull:
            log.warning("too many commands queued: %r dropped", command)

    async def serve(self, path: Path, stop: asyncio.Event) -> None:
        """Take commands until ``stop``; a dictation still on is ended (its last finals typed)."""
        loop = asyncio.get_running_loop()
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        if path.exists():
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect(str(path))
                except ConnectionRefusedError:
                    path.unlink()  # left by one that died
                else:
                    raise StreamerError(f"another streamer dictate is running (it listens on {path})")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(str(path))
        path.chmod(0o600)
        sock.setblocking(False)
        loop.add_reader(sock.fileno(), lambda: self._command(sock.recv(256)))
        log.warning("dictation ready: streamer dictate --toggle (or --begin/--end) to speak")
        stopping = asyncio.create_task(stop.wait())
        try:
            while True:
                getting = asyncio.create_task(self._commands.get())
                done, _ = await asyncio.wait({getting, stopping}, return_when=asyncio.FIRST_COMPLETED)
                if getting not in done:
                    getting.cancel()
                    break
                await self._apply(getting.result())
        finally:
            stopping.cancel()
            loop.remove_reader(sock.fileno())
            sock.close()
            path.unlink(missing_ok=True)
            await self._end()

    async def _apply(self, command: str) -> None:
        on = self._run is not None and not self._run.done()
        if command == "begin" or (command == "toggle" and not on):
            if not on:
                self._stop_run = asyncio.Event()
                self._run = asyncio.create_task(self._dictate(self._stop_run), name="dictation")
        elif on:
            await self._end()

    async def _end(self) -> None:
        if self._run is None:
            return
        self._stop_run.set()
        try:
            await self._run
        except StreamerError as e:
            log.error("dictation failed: %s", e)
        self._run = None

    async def _type(self, text: str) -> None:
        if not text:
            return
        result = await asyncio.to_thread(subprocess.run, [*self.type_command, text], capture_output=True, text=True)
        if result.returncode != 0:
            log.error("%s failed: %s", self.type_command[0], result.stderr.strip() or result.returncode)

    async def _dictate(self, stop: asyncio.Event) -> None:
        if self.feedback:
            beep(880)
            notify("dictation on")
        log.info("dictation on")
        self.composer.reset()
        mic = Microphone(self.device)
        mic.open()
        client = self.make_client()
        try:
            await client.connect()
        except BaseException:
            mic.close()
            raise

        async def send() -> None:
            watcher = asyncio.create_task(stop.wait())
            watcher.add_done_callback(lambda _: mic.close())
            try:
                async for block in mic.blocks():
                    await client.send(block)
            finally:
                watcher.cancel()
                mic.close()
            await client.end()

        sender = asyncio.create_task(send(), name="dictation-send")
        try:
            async for event in client:
                if isinstance(event, Final):
                    await self._type(self.composer.text(event.text))
                    self.typed_finals += 1
                elif isinstance(event, ServerError):
                    raise StreamerError(f"the server: {event.text} ({event.code})")
            await sender
        finally:
            sender.cancel()
            mic.close()
            await client.close()
            log.info("dictation off")
            if self.feedback:
                beep(440)
                notify("dictation off")
