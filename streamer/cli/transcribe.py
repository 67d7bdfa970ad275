"""``streamer transcribe``: files offline (or replayed live through the streaming engine with --stream)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import TextIO

from streamer.cli.common import (
    Parser,
    add_model_options,
    add_stream_options,
    default_compute_type,
    device,
    engine,
    language,
    non_negative_float,
    positive_int,
    set_threads,
    stream_config,
    streaming_engine,
)
from streamer.errors import StreamerError

log = logging.getLogger(__name__)


def add(sub: argparse._SubParsersAction[Parser]) -> None:
    t = sub.add_parser("transcribe", help="transcribe audio files offline")
    t.add_argument(
        "files", nargs="+", metavar="FILE",
        help="audio files (WAV; other formats need ffmpeg); with --stream, - reads a WAV (or --raw PCM) from stdin",
    )
    t.add_argument("--language", default=None, help="spoken language code or name (default: detect)")
    t.add_argument("--task", choices=("transcribe", "translate"), default="transcribe")
    t.add_argument("--beam-size", type=positive_int, default=None, help="beam search width (default: greedy)")
    t.add_argument(
        "--batch-size", type=positive_int, default=None, metavar="N",
        help="decode N windows of a file at once, cut at its pauses (fast on a GPU; windows are not prompted "
        "with the text before them; greedy only)",
    )
    t.add_argument(
        "--format", choices=("text", "json", "srt", "vtt", "jsonl"), default="text",
        help="output format (jsonl: one event per line, with --stream)",
    )
    t.add_argument("--stream", action="store_true", help="run the streaming engine, writing events as they happen")
    t.add_argument(
        "--speed", type=non_negative_float, default=1.0,
        help="with --stream: times real time to feed the audio at (0: as fast as possible)",
    )
    t.add_argument("--raw", action="store_true", help="with --stream -: stdin is pcm_s16le, 16 kHz, mono")
    t.add_argument("--partials", action=argparse.BooleanOptionalAction, default=True, help="with --stream: partials")
    t.add_argument("--output-dir", type=Path, default=None, help="write FILE.FORMAT there instead of stdout")
    add_model_options(t)
    add_stream_options(t)
    t.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None,
        help="progress bar on stderr for audio over a minute (default: when stderr is a terminal)",
    )
    t.set_defaults(run=run, one_shot=True)


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


def run(args: argparse.Namespace) -> int:
    spoken = language(args.language)
    if args.output_dir is not None and not args.output_dir.is_dir():
        raise StreamerError(f"--output-dir: {args.output_dir} is not a directory")
    if args.stream:
        return _stream(args, spoken)
    if args.format == "jsonl":
        raise StreamerError("--format jsonl needs --stream")
    if args.raw or "-" in args.files:
        raise StreamerError("reading stdin (- and --raw) needs --stream")
    target = device(args.compute_device)
    set_threads(args.threads)

    from streamer.audio import load_audio
    from streamer.decoding.batched import transcribe_batched
    from streamer.decoding.decode import DecodingOptions
    from streamer.decoding.transcribe import TranscribeOptions, transcribe
    from streamer.engine import apply_compute_type
    from streamer.formats import format_transcript
    from streamer.model.loading import load_model

    if args.batch_size is not None and args.beam_size is not None:
        raise StreamerError("--batch-size decodes greedily: leave out --beam-size")
    loaded = load_model(args.model, device=target)
    batched = None if args.batch_size is None else engine(args, loaded, target, max_batch=args.batch_size)
    if batched is None:
        apply_compute_type(loaded, default_compute_type(args, target))
    if not loaded.tokenizer.is_multilingual:
        if spoken not in (None, "en"):
            raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
        if args.task == "translate":
            raise StreamerError(f"--task translate: model {loaded.name} is English-only")
    options = TranscribeOptions(
        decoding=DecodingOptions(task=args.task, language=spoken, beam_size=args.beam_size)
    )
    show_progress = sys.stderr.isatty() if args.progress is None else args.progress
    for file in args.files:
        audio = load_audio(file)
        progress = ProgressBar(sys.stderr, Path(file).name) if show_progress and len(audio) > 60 * 16000 else None
        if batched is not None:
            result = transcribe_batched(batched, audio, options, args.batch_size, progress=progress)
        else:
            result = transcribe(loaded.model, loaded.tokenizer, audio, options, progress=progress)
        out = format_transcript(result, args.format, str(file))
        if args.output_dir is not None:
            suffix = {"text": "txt"}.get(args.format, args.format)
            written = args.output_dir / f"{Path(file).stem}.{suffix}"
            written.write_text(out, encoding="utf-8")
            log.info("wrote %s", written)
        else:
            if len(args.files) > 1 and args.format == "text":
                sys.stdout.write(f"{file}: ")
            sys.stdout.write(out)
            sys.stdout.flush()
    return 0


def _stream(args: argparse.Namespace, spoken: str | None) -> int:
    if args.format not in ("text", "jsonl"):
        raise StreamerError("--stream writes --format text or jsonl")
    if len(args.files) > 1:
        raise StreamerError("--stream takes one FILE")
    if args.raw and args.files != ["-"]:
        raise StreamerError("--raw is for stdin (FILE -)")
    if args.task == "translate" or args.beam_size:
        raise StreamerError("--stream decodes greedily and transcribes (no --beam-size, no --task translate)")
    target = device(args.compute_device)
    set_threads(args.threads)

    from streamer.audio import load_audio
    from streamer.streaming.output import EventWriter
    from streamer.streaming.replay import replay
    from streamer.streaming.sources import raw_chunks, wav_chunks

    loaded, streaming = streaming_engine(args, target)
    if not loaded.tokenizer.is_multilingual and spoken not in (None, "en"):
        raise StreamerError(f"--language {args.language}: model {loaded.name} is English-only")
    config = stream_config(args, language=spoken if loaded.tokenizer.is_multilingual else "en",
                           partials=args.partials)
    if args.files == ["-"]:
        stdin = sys.stdin.buffer
        chunks = raw_chunks(stdin) if args.raw else wav_chunks(stdin)
    else:
        audio = load_audio(args.files[0])
        chunks = iter([audio])
    writer = EventWriter(sys.stdout, args.format)
    try:
        replay(chunks, streaming, writer, config, speed=args.speed)
    finally:
        writer.close()
    return 0
