"""``streamer mic``: live captions from a microphone in the terminal (and to caption displays)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

from streamer.cli.common import (
    Parser,
    add_model_options,
    add_stream_options,
    device,
    install_signals,
    language,
    non_negative_float,
    set_threads,
    stream_config,
    streaming_engine,
    token,
)
from streamer.errors import StreamerError
from streamer.torch_threads import run_in_thread

if TYPE_CHECKING:
    from streamer.streaming.events import Event

log = logging.getLogger(__name__)


def add(sub: argparse._SubParsersAction[Parser]) -> None:
    m = sub.add_parser("mic", help="live captions from a microphone in the terminal (and to caption displays)")
    m.add_argument("--device", default=None, help="input device name or index (default: the system's default)")
    m.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    m.add_argument("--language", default=None, help="spoken language (multilingual models; default: detect)")
    m.add_argument("--format", choices=("text", "jsonl"), default="text", help="terminal captions or JSON lines")
    m.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True, help="show partials")
    m.add_argument("--duration", type=non_negative_float, default=None, help="stop after this many seconds")
    m.add_argument("--serve", action="store_true",
                   help="also publish the captions at ws://HOST:PORT/v1/captions (and serve /v1/stream)")
    m.add_argument("--host", default="127.0.0.1", help="with --serve: address to bind")
    m.add_argument("--port", type=int, default=8765, help="with --serve: TCP port (0: any free port)")
    m.add_argument("--token", default=None, help="with --serve: require this token (default: $STREAMER_TOKEN)")
    add_model_options(m, device_flag="--compute-device")
    add_stream_options(m)
    m.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from streamer.mic import list_devices

    if args.list_devices:
        sys.stdout.write(list_devices())
        return 0
    if not 0 <= args.port <= 65535:
        raise StreamerError(f"--port: {args.port} is not a TCP port")
    spoken = language(args.language)
    target = device(args.compute_device)
    set_threads(args.threads)

    from streamer.daemon.captions import CaptionHub
    from streamer.daemon.server import Daemon, ServeOptions
    from streamer.mic import Microphone, caption_microphone
    from streamer.streaming.inference import warm_up
    from streamer.streaming.output import EventWriter
    from streamer.streaming.scheduler import Scheduler

    loaded, streaming = streaming_engine(args, target)
    if not loaded.tokenizer.is_multilingual and spoken not in (None, "en"):
        raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
    config = stream_config(args, language=spoken if loaded.tokenizer.is_multilingual else "en",
                           partials=args.partials)
    writer = EventWriter(sys.stdout, args.format)

    async def main() -> None:
        stop = asyncio.Event()
        install_signals(asyncio.get_running_loop(), stop.set)
        daemon: Daemon | None = None
        sinks: list[Callable[[list[Event]], None]] = [writer]
        if args.serve:
            options = ServeOptions(host=args.host, port=args.port, token=token(args), stream=config)
            daemon = Daemon(streaming, loaded.name, options)
            daemon.captions = hub = CaptionHub("mic", loaded.name)
            sinks.append(hub)
            try:
                await daemon.start()
            except OSError as e:
                raise StreamerError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
            assert daemon.scheduler is not None  # made by start()
            scheduler = daemon.scheduler
        else:
            scheduler = Scheduler(streaming)
            await run_in_thread(lambda: warm_up(streaming), "streamer-load")
        if sys.stderr.isatty():
            print("listening (Ctrl-C to stop)", file=sys.stderr)
        try:
            report = await caption_microphone(Microphone(args.device), scheduler, config, sinks, stop, args.duration)
        finally:
            writer.close()
            if daemon is not None:
                await daemon.shutdown()
            else:
                await asyncio.to_thread(scheduler.close)
        log.info("microphone: %.1f s of audio, %d words", report.seconds, report.words)

    asyncio.run(main())
    return 0
