"""``streamer listen``: stream a file or the microphone to a daemon; print or save its captions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from streamer.cli.common import Parser, install_signals, non_negative_float, positive_float, token

log = logging.getLogger(__name__)


def add(sub: argparse._SubParsersAction[Parser]) -> None:
    li = sub.add_parser("listen", help="stream a file or the microphone to a daemon; print or save its captions")
    li.add_argument("url", nargs="?", default="ws://127.0.0.1:8765/v1/stream", help="the daemon's stream URL")
    li.add_argument("--token", default=None, help="the daemon's token (default: $STREAMER_TOKEN, if set)")
    src = li.add_mutually_exclusive_group()
    src.add_argument("--file", default=None, help="an audio file to stream")
    src.add_argument("--mic", action="store_true", help="stream the microphone (the default without --file)")
    li.add_argument("--device", default=None, help="with --mic: input device name or index")
    li.add_argument("--format", choices=("text", "jsonl", "srt", "vtt"), default="text",
                    help="text: live captions (finals only when piped); srt/vtt: caption files from word times")
    li.add_argument("--output", "-o", default=None, help="write here instead of stdout")
    li.add_argument("--language", default="en", help="spoken language, or 'auto' (multilingual models)")
    li.add_argument("--speed", type=non_negative_float, default=1.0,
                    help="with --file: times real time to send at (0: as fast as the server takes it)")
    li.add_argument("--duration", type=positive_float, default=None, help="with --mic: stop after this many seconds")
    li.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True,
                    help="ask for partial hypotheses")
    li.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamer.client import StreamClient
    from streamer.listen import file_blocks, listen, open_output
    from streamer.mic import Microphone

    language = None if args.language.lower() == "auto" else args.language
    client = StreamClient(
        args.url, token(args), language=language, partials=args.partials and args.format in ("text", "jsonl"),
    )
    out = open_output(args.output)

    async def main() -> None:
        stop = asyncio.Event()
        install_signals(asyncio.get_running_loop(), stop.set)
        mic: Microphone | None = None
        if args.file is not None:
            blocks = file_blocks(args.file, args.speed)
        else:
            mic = Microphone(args.device)
            mic.open()
            if args.duration:
                asyncio.get_running_loop().call_later(args.duration, stop.set)
            stop_task = asyncio.create_task(stop.wait())
            stop_task.add_done_callback(lambda _: mic.close() if mic is not None else None)
            blocks = mic.blocks()
        try:
            report = await listen(client, blocks, args.format, out, stop,
                                  live=False if args.output not in (None, "-") else None)
        finally:
            if mic is not None:
                mic.close()
        log.info("sent %.1f s of audio, %d finals, %d reconnect(s)", report.seconds, report.finals, report.reconnects)

    try:
        asyncio.run(main())
    finally:
        if out is not sys.stdout:
            out.close()
    return 0
