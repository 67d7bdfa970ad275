"""The ``streamer`` command line. Logging is configured here and nowhere else."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn, TextIO

import torch

from streamer import __version__
from streamer.errors import StreamerError

if TYPE_CHECKING:
    from streamer.engine import Engine
    from streamer.model.loading import LoadedModel
    from streamer.streaming.events import Event

log = logging.getLogger(__name__)

EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return n


def _non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value!r}")
    return x


def _positive_float(value: str) -> float:
    x = _non_negative_float(value)
    if x == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return x


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="streamer", description="Streaming speech transcription on Whisper.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    t = sub.add_parser("transcribe", help="transcribe audio files offline")
    t.add_argument(
        "files", nargs="+", metavar="FILE",
        help="audio files (WAV; other formats need ffmpeg); with --stream, - reads a WAV (or --raw PCM) from stdin",
    )
    t.add_argument("--model", default="tiny.en", help="bundled name (tiny.en, base) or a model path")
    t.add_argument("--language", default=None, help="spoken language code or name (default: detect)")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--beam-size", type=_positive_int, default=None, help="beam search width (default: greedy)")
    t.add_argument(
        "--format", choices=("text", "json", "srt", "vtt", "jsonl"), default="text",
        help="output format (jsonl: one event per line, with --stream)",
    )
    t.add_argument("--stream", action="store_true", help="run the streaming engine, writing events as they happen")
    t.add_argument(
        "--speed", type=_non_negative_float, default=1.0,
        help="with --stream: times real time to feed the audio at (0: as fast as possible)",
    )
    t.add_argument("--raw", action="store_true", help="with --stream -: stdin is pcm_s16le, 16 kHz, mono")
    t.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True, help="with --stream: partials")
    t.add_argument("--output-dir", type=Path, default=None, help="write FILE.FORMAT there instead of stdout")
    t.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    t.add_argument(
        "--compute-type", choices=("float32", "int8", "float16", "bfloat16"), default=None,
        help="weights precision (default: float32 on CPU, float16 on CUDA; int8 is CPU-only)",
    )
    t.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference")
    t.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on CUDA, run the streaming decode step eagerly instead of as CUDA graphs")
    t.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr for audio over a minute (default: when stderr is a terminal)",
    )
    v = sub.add_parser("serve", help="run the WebSocket daemon (protocol v1 at /v1/stream)")
    v.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    v.add_argument("--port", type=int, default=8765, help="TCP port (0: any free port)")
    v.add_argument("--model", default="tiny.en", help="bundled name (tiny.en, base) or a model path")
    v.add_argument("--token", default=None, help="require this token (default: $STREAMER_TOKEN, if set)")
    v.add_argument("--max-sessions", type=_positive_int, default=8, help="concurrent sessions (more get 1013)")
    v.add_argument("--origins", nargs="+", default=None, help="allowed browser Origin headers (default: any)")
    v.add_argument("--tls-cert", default=None, help="certificate (PEM) for wss://")
    v.add_argument("--tls-key", default=None, help="private key (PEM) for --tls-cert")
    v.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    v.add_argument("--compute-type", choices=("float32", "int8", "float16", "bfloat16"), default=None,
                   help="weights precision (default: int8 on CPU, float16 on CUDA)")
    v.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference")
    v.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on CUDA, run the streaming decode step eagerly instead of as CUDA graphs")
    v.add_argument(
        "--busy-encoder-seconds", type=_non_negative_float, default=20.0,
        help="under load, encode windows of ongoing speech padded to this many seconds instead of 30 "
        "(faster, may cost accuracy; 30 or 0: never)",
    )
    v.add_argument("--resume-grace", type=_non_negative_float, default=30.0,
                   help="seconds a dropped session waits for its client to resume it (0: no resume)")
    v.add_argument("--max-session-minutes", type=_non_negative_float, default=0.0,
                   help="close a session after this much audio, its finals sent first (0: no limit)")
    v.add_argument("--web", nargs="?", const="", default=None, metavar="DIR",
                   help="serve the browser caption page at / (default DIR: clients/web)")
    v.add_argument("--idle-timeout", type=_positive_float, default=60.0,
                   help="close a session after this many seconds without a message")

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
    li.add_argument("--speed", type=_non_negative_float, default=1.0,
                    help="with --file: times real time to send at (0: as fast as the server takes it)")
    li.add_argument("--duration", type=_positive_float, default=None, help="with --mic: stop after this many seconds")
    li.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True,
                    help="ask for partial hypotheses")

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

    m = sub.add_parser("mic", help="live captions from a microphone in the terminal (and to caption displays)")
    m.add_argument("--device", default=None, help="input device name or index (default: the system's default)")
    m.add_argument("--list-devices", action="store_true", help="list the input devices and exit")
    m.add_argument("--model", default="tiny.en", help="bundled name (tiny.en, base) or a model path")
    m.add_argument("--language", default=None, help="spoken language (multilingual models; default: detect)")
    m.add_argument("--format", choices=("text", "jsonl"), default="text", help="terminal captions or JSON lines")
    m.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True, help="show partials")
    m.add_argument("--duration", type=_non_negative_float, default=None, help="stop after this many seconds")
    m.add_argument("--serve", action="store_true",
                   help="also publish the captions at ws://HOST:PORT/v1/captions (and serve /v1/stream)")
    m.add_argument("--host", default="127.0.0.1", help="with --serve: address to bind")
    m.add_argument("--port", type=int, default=8765, help="with --serve: TCP port (0: any free port)")
    m.add_argument("--token", default=None, help="with --serve: require this token (default: $STREAMER_TOKEN)")
    m.add_argument("--compute-device", choices=("cpu", "cuda"), default="cpu", help="where the model runs")
    m.add_argument("--compute-type", choices=("float32", "int8", "float16", "bfloat16"), default=None,
                   help="weights precision (default: int8 on CPU, float16 on CUDA)")
    m.add_argument("--threads", type=_positive_int, default=None, help="CPU threads for inference")
    m.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on CUDA, run the streaming decode step eagerly instead of as CUDA graphs")
    return parser


def _device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise StreamerError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


class ProgressBar:
    """A one-line progress bar rewritten in place on a stream."""

    def __init__(self, stream: TextIO, label: str, width: int = 30):
        self.stream = stream
        self.label = label
        self.width = width

    def __call__(self, done: float, total: float) -> None:
        frac = 1.0 if total <= 0 else min(1.0, done / total)
        filled = round(frac * self.width)
        bar = "#" * filled + "-" * (self.width - filled)
        self.stream.write(f"\r{self.label} [{bar}] {frac * 100:3.0f}% {done:6.1f}/{total:.1f} s")
        if frac >= 1.0:
            self.stream.write("\n")
        self.stream.flush()


def _engine(args: argparse.Namespace, loaded: LoadedModel, device: torch.device) -> Engine:
    """The streaming engine: int8 on the CPU, float16 and CUDA graphs on a GPU unless told otherwise."""
    from streamer.engine import Engine

    compute_type = args.compute_type or ("float16" if device.type == "cuda" else "int8")
    return Engine(loaded, compute_type=compute_type, step="auto" if args.cuda_graphs else "eager")


def cmd_transcribe(args: argparse.Namespace) -> int:
    from streamer.audio import load_audio
    from streamer.decoding.decode import DecodingOptions
    from streamer.decoding.transcribe import TranscribeOptions, transcribe
    from streamer.engine import apply_compute_type
    from streamer.formats import format_transcript
    from streamer.model.loading import load_model

    language = _language(args.language)
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.output_dir is not None and not args.output_dir.is_dir():
        raise StreamerError(f"--output-dir: {args.output_dir} is not a directory")
    if args.stream:
        return _stream(args, language, device)
    if args.format == "jsonl":
        raise StreamerError("--format jsonl needs --stream")
    if args.raw or "-" in args.files:
        raise StreamerError("reading stdin (- and --raw) needs --stream")
    loaded = load_model(args.model, device=device)
    apply_compute_type(loaded, args.compute_type or ("float16" if device.type == "cuda" else "float32"))
    if not loaded.tokenizer.is_multilingual:
        if language not in (None, "en"):
            raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
        if args.task == "translate":
            raise StreamerError(f"--task translate: model {loaded.name} is English-only")
    options = TranscribeOptions(
        decoding=DecodingOptions(task=args.task, language=language, beam_size=args.beam_size)
    )
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    for file in args.files:
        audio = load_audio(file)
        progress = ProgressBar(sys.stderr, Path(file).name) if show_progress and len(audio) > 60 * 16000 else None
        result = transcribe(loaded.model, loaded.tokenizer, audio, options, progress=progress)
        out = format_transcript(result, args.format, str(file))
        if args.output_dir is not None:
            suffix = {"text": "txt"}.get(args.format, args.format)
            target = args.output_dir / f"{Path(file).stem}.{suffix}"
            target.write_text(out, encoding="utf-8")
            log.info("wrote %s", target)
        else:
            if len(args.files) > 1 and args.format == "text":
                sys.stdout.write(f"{file}: ")
            sys.stdout.write(out)
            sys.stdout.flush()
    return 0


def _stream(args: argparse.Namespace, language: str | None, device: torch.device) -> int:
    from streamer.audio import load_audio
    from streamer.model.loading import load_model
    from streamer.streaming.output import EventWriter
    from streamer.streaming.replay import replay
    from streamer.streaming.session import StreamConfig
    from streamer.streaming.sources import raw_chunks, wav_chunks

    if args.format not in ("text", "jsonl"):
        raise StreamerError("--stream writes --format text or jsonl")
    if len(args.files) > 1:
        raise StreamerError("--stream takes one FILE")
    if args.raw and args.files != ["-"]:
        raise StreamerError("--raw is for stdin (FILE -)")
    if args.task == "translate" or args.beam_size:
        raise StreamerError("--stream decodes greedily and transcribes (no --beam-size, no --task translate)")
    loaded = load_model(args.model, device=device)
    engine = _engine(args, loaded, device)
    if not loaded.tokenizer.is_multilingual and language not in (None, "en"):
        raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
    config = StreamConfig(language=language if loaded.tokenizer.is_multilingual else "en", partials=args.partials)
    if args.files == ["-"]:
        stdin = sys.stdin.buffer
        chunks = raw_chunks(stdin) if args.raw else wav_chunks(stdin)
    else:
        audio = load_audio(args.files[0])
        chunks = iter([audio])
    writer = EventWriter(sys.stdout, args.format)
    try:
        replay(chunks, engine, writer, config, speed=args.speed)
    finally:
        writer.close()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from streamer.daemon.server import Daemon, ServeOptions
    from streamer.daemon.web import check_web_dir, default_web_dir
    from streamer.model.loading import load_model

    if bool(args.tls_cert) != bool(args.tls_key):
        raise StreamerError("--tls-cert and --tls-key go together")
    if not 0 <= args.port <= 65535:
        raise StreamerError(f"--port: {args.port} is not a TCP port")
    device = _device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device=device)
    engine = _engine(args, loaded, device)
    options = ServeOptions(
        host=args.host, port=args.port, token=args.token or os.environ.get("STREAMER_TOKEN") or None,
        max_sessions=args.max_sessions, origins=args.origins, tls_cert=args.tls_cert, tls_key=args.tls_key,
        busy_encoder_seconds=args.busy_encoder_seconds if 0 < args.busy_encoder_seconds < 30 else None,
        resume_grace=args.resume_grace, idle_timeout=args.idle_timeout,
        web_dir=None if args.web is None else check_web_dir(args.web or default_web_dir()),
        max_session_seconds=60 * args.max_session_minutes if args.max_session_minutes else None,
    )

    async def run() -> None:
        daemon = Daemon(engine, loaded.name, options)
        loop = asyncio.get_running_loop()

        def stop() -> None:
            loop.create_task(daemon.shutdown())

        _install_signals(loop, stop)
        try:
            await daemon.start()
        except OSError as e:
            raise StreamerError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
        await daemon.wait_stopped()

    asyncio.run(run())
    return 0


def _language(name: str | None) -> str | None:
    from streamer.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    if name is None:
        return None
    code = TO_LANGUAGE_CODE.get(name.lower(), name.lower())
    if code not in LANGUAGES:
        raise StreamerError(f"--language: unknown language {name!r}")
    return code


def _install_signals(loop: asyncio.AbstractEventLoop, first: Callable[[], None]) -> None:
    """SIGTERM/SIGINT: the first runs ``first`` (an orderly stop), a second exits at once."""
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        if count > 1:
            log.warning("second signal: exiting now")
            os._exit(1)
        first()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)


def cmd_mic(args: argparse.Namespace) -> int:
    from streamer.daemon.captions import CaptionHub
    from streamer.daemon.server import Daemon, ServeOptions
    from streamer.mic import Microphone, caption_microphone, list_devices
    from streamer.model.loading import load_model
    from streamer.streaming.inference import warm_up
    from streamer.streaming.output import EventWriter
    from streamer.streaming.scheduler import Scheduler
    from streamer.streaming.session import StreamConfig

    if args.list_devices:
        sys.stdout.write(list_devices())
        return 0
    if not 0 <= args.port <= 65535:
        raise StreamerError(f"--port: {args.port} is not a TCP port")
    language = _language(args.language)
    device = _device(args.compute_device)
    if args.threads:
        torch.set_num_threads(args.threads)
    loaded = load_model(args.model, device=device)
    if not loaded.tokenizer.is_multilingual and language not in (None, "en"):
        raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
    engine = _engine(args, loaded, device)
    config = StreamConfig(language=language if loaded.tokenizer.is_multilingual else "en", partials=args.partials)
    writer = EventWriter(sys.stdout, args.format)

    async def run() -> None:
        stop = asyncio.Event()
        _install_signals(asyncio.get_running_loop(), stop.set)
        daemon: Daemon | None = None
        sinks: list[Callable[[list[Event]], None]] = [writer]
        if args.serve:
            token = args.token or os.environ.get("STREAMER_TOKEN") or None
            daemon = Daemon(engine, loaded.name, ServeOptions(host=args.host, port=args.port, token=token))
            daemon.captions = hub = CaptionHub("mic", loaded.name)
            sinks.append(hub)
            try:
                await daemon.start()
            except OSError as e:
                raise StreamerError(f"cannot listen on {args.host}:{args.port}: {e.strerror}") from None
            scheduler = daemon.scheduler
        else:
            scheduler = Scheduler(engine)
            await asyncio.to_thread(warm_up, engine)
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

    asyncio.run(run())
    return 0


def cmd_listen(args: argparse.Namespace) -> int:
    from streamer.client import StreamClient
    from streamer.listen import file_blocks, listen, open_output
    from streamer.mic import Microphone

    language = None if args.language.lower() == "auto" else args.language
    client = StreamClient(
        args.url, args.token or os.environ.get("STREAMER_TOKEN") or None, language=language,
        partials=args.partials and args.format in ("text", "jsonl"),
    )
    out = open_output(args.output)

    async def run() -> None:
        stop = asyncio.Event()
        _install_signals(asyncio.get_running_loop(), stop.set)
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
        asyncio.run(run())
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def cmd_dictate(args: argparse.Namespace) -> int:
    from streamer.client import StreamClient
    from streamer.dictate import Composer, Dictation, control_path, send_command, typing_command

    if args.command_word is not None:
        send_command(args.command_word)
        return 0
    type_command = typing_command(args.typer)
    token = args.token or os.environ.get("STREAMER_TOKEN") or None
    language = None if args.language.lower() == "auto" else args.language

    def make_client() -> StreamClient:
        return StreamClient(args.url, token, language=language, partials=False, word_timestamps=False)

    dictation = Dictation(make_client, args.device, type_command, Composer(args.punctuation), args.feedback)

    async def run() -> None:
        stop = asyncio.Event()
        _install_signals(asyncio.get_running_loop(), stop.set)
        await dictation.serve(control_path(), stop)

    asyncio.run(run())
    return 0


COMMANDS = {
    "transcribe": cmd_transcribe, "serve": cmd_serve, "mic": cmd_mic, "listen": cmd_listen, "dictate": cmd_dictate,
}


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return COMMANDS[args.command](args)
    except StreamerError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
