"""``streamer serve``: the WebSocket daemon (protocol v1 at /v1/stream)."""

from __future__ import annotations

import argparse
import asyncio
from typing import TYPE_CHECKING

from streamer.cli.common import (
    Parser,
    add_model_options,
    add_stream_options,
    device,
    engine,
    install_signals,
    non_negative_float,
    positive_float,
    positive_int,
    set_threads,
    stream_config,
    token,
)
from streamer.errors import StreamerError

if TYPE_CHECKING:
    from streamer.engine import Engine


def add(sub: argparse._SubParsersAction[Parser]) -> None:
    v = sub.add_parser("serve", help="run the WebSocket daemon (protocol v1 at /v1/stream)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    v.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    v.add_argument("--token", default=None, help="require this token (default: $STREAMER_TOKEN, if set)")
    v.add_argument("--max-sessions", type=positive_int, default=8, help="concurrent sessions (more get 1013)")
    v.add_argument("--origins", nargs="+", default=None, help="allowed browser Origin headers (default: any)")
    v.add_argument("--tls-cert", default=None, help="certificate (PEM) for wss://")
    v.add_argument("--tls-key", default=None, help="private key (PEM) for --tls-cert")
    add_model_options(v)
    add_stream_options(v)
    v.add_argument("--max-batch", type=positive_int, default=None,
                   help="rows of the decode pool: windows decoded together at most on CUDA (default 128), and the "
                   "widest final beam search (default on CPU, which decodes one window at a time: at least 4 and "
                   "at least --final-beam-size)")
    v.add_argument("--workers", type=positive_int, default=None,
                   help="inference workers, each a thread with its own decode pool over the shared weights: "
                   "more windows decoded per second under load, on the CPU only (default: 2 on a CPU of two cores "
                   "or more, 1 on CUDA, where one worker decodes every stream's windows in batches)")
    v.add_argument("--resume-grace", type=non_negative_float, default=30.0,
                   help="seconds a dropped session waits for its client to resume it (0: no resume)")
    v.add_argument("--max-session-minutes", type=non_negative_float, default=0.0,
                   help="close a session after this much audio, its finals sent first (0: no limit)")
    v.add_argument("--web", nargs="?", const="", default=None, metavar="DIR",
                   help="serve the browser caption page at / (default DIR: clients/web)")
    v.add_argument("--idle-timeout", type=positive_float, default=60.0,
                   help="close a session after this many seconds without a message")
    v.add_argument("--wyoming-port", type=int, default=None, metavar="PORT",
                   help="also serve the Wyoming protocol (Home Assistant) on this TCP port")
    v.add_argument("--allocator", choices=("auto", "system"), default="auto",
                   help="malloc of the daemon: auto (default) runs it on jemalloc where installed (apt-get install "
                   "libjemalloc2: less heap, flat), system keeps the C library's (glibc: trimmed every second)")
    v.add_argument("--max-upload-mb", type=positive_float, default=100.0, metavar="MB",
                   help="the largest audio file POSTed to /v1/audio/transcriptions (OpenAI REST); default 100")
    v.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Listen at once (``/healthz`` answers), then load the model in the background (``/readyz`` answers
    200 once it is warm): torch and the weights take seconds to load."""
    if bool(args.tls_cert) != bool(args.tls_key):
        raise StreamerError("--tls-cert and --tls-key go together")
    if not 0 <= args.port <= 65535:
        raise StreamerError(f"--port: {args.port} is not a TCP port")
    if args.workers is not None and args.workers > 1 and args.compute_device == "cuda":
        raise StreamerError("--workers: several inference workers run on the CPU only; on CUDA one worker decodes "
                            "every stream's windows in batches (--max-batch)")
    if args.wyoming_port is not None and not 0 <= args.wyoming_port <= 65535:
        raise StreamerError(f"--wyoming-port: {args.wyoming_port} is not a TCP port")

    from streamer.daemon.server import Daemon, ServeOptions
    from streamer.daemon.web import check_web_dir, default_web_dir

    options = ServeOptions(
        host=args.host, port=args.port, token=token(args),
        max_sessions=args.max_sessions, origins=args.origins, tls_cert=args.tls_cert, tls_key=args.tls_key,
        resume_grace=args.resume_grace, idle_timeout=args.idle_timeout,
        web_dir=None if args.web is None else check_web_dir(args.web or default_web_dir()),
        max_session_seconds=60 * args.max_session_minutes if args.max_session_minutes else None,
        stream=stream_config(args), wyoming_port=args.wyoming_port,
        max_upload_mb=args.max_upload_mb, workers=args.workers,
    )

    def make_engine() -> Engine:
        target = device(args.compute_device)
        set_threads(args.threads)
        from streamer.model.loading import load_model

        return engine(args, load_model(args.model, device=target), target, args.max_batch)

    async def serve() -> None:
        daemon = Daemon(make_engine, args.model, options)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            loop.create_task(daemon.shutdown())

        install_signals(loop, stop)
        try:
            await daemon.start()
        except OSError as e:
            raise StreamerError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        await daemon.wait_stopped()

    asyncio.run(serve())
    return 0
