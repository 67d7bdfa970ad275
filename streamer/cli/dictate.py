"""``streamer dictate``: type what is said into the focused window (hotkeys: --toggle or --begin/--end)."""

from __future__ import annotations

import argparse
import asyncio

from streamer.cli.common import Parser, install_signals, token


def add(sub: argparse._SubParsersAction[Parser]) -> None:
    d = sub.add_parser("dictate", help="type what you say into the focused window (hotkey: --toggle or --begin/--end)")
    d.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/v1/stream", help="the daemon's stream URL")
    d.add_argument("--token", default=None, help="the daemon's token (default: $STREAMER_TOKEN, if set)")
    d.add_argument("--device", default=None, help="input device name or index (default: the system's default)")
    d.add_argument("--language", default="en", help="spoken language, or 'auto' (multilingual models)")
    cmd = d.add_mutually_exclusive_group()
    cmd.add_argument("--toggle", action="store_const", const="toggle", dest="command_word",
                     help="tell the running dictation to start or stop (bind a hotkey to this)")
    cmd.add_argument("--begin", action="store_const", const="begin", dest="command_word",
                     help="push-to-talk: start (bind to the key press)")
    cmd.add_argument("--end", action="store_const", const="end", dest="command_word",
                     help="push-to-talk: stop (bind to the key release)")
    d.add_argument("--typer", choices=("auto", "xdotool", "wtype"), default="auto",
                   help="how to type: xdotool (X11) or wtype (Wayland); auto picks by session")
    d.add_argument("--punctuation", action=argparse.BooleanOptionalAction, default=True,
                   help="type Whisper's punctuation and capitals (--no-punctuation: plain lower-case words)")
    d.add_argument("--feedback", action=argparse.BooleanOptionalAction, default=True,
                   help="a beep and a desktop notification on start and stop, where available")
    d.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamer.client import StreamClient
    from streamer.dictate import Composer, Dictation, control_path, send_command, typing_command

    if args.command_word is not None:
        send_command(args.command_word)
        return 0
    type_command = typing_command(args.typer)
    secret = token(args)
    language = None if args.language.lower() == "auto" else args.language

    def make_client() -> StreamClient:
        return StreamClient(args.url, secret, language=language, partials=False, word_timestamps=False)

    dictation = Dictation(make_client, args.device, type_command, Composer(args.punctuation), args.feedback)

    async def main() -> None:
        stop = asyncio.Event()
        install_signals(asyncio.get_running_loop(), stop.set)
        await dictation.serve(control_path(), stop)

    asyncio.run(main())
    return 0
