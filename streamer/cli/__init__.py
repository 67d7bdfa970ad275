"""The ``streamer`` command line: one module per command, each with its options (``add``) and its work
(``run``). Logging is configured here and nowhere else. Nothing here imports torch: ``--help``,
``--version`` and the client commands start at once; commands that run a model import it when they run.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from streamer import __version__
from streamer.cli import dictate, listen, mic, serve, transcribe
from streamer.cli.common import EXIT_USAGE, Parser
from streamer.errors import StreamerError
from streamer.heap import use_jemalloc

COMMANDS = (transcribe, serve, listen, dictate, mic)


def build_parser() -> Parser:
    parser = Parser(prog="streamer", description="Streaming speech transcription on Whisper.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None, quick_exit: bool = False) -> int:
    """Run one command; returns its exit status. ``quick_exit`` (the ``streamer`` program itself, never
    a caller in the same process): a one-shot command that imported torch ends the process here, and
    the daemon starts itself again on jemalloc if it is installed (``--allocator``)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if quick_exit and getattr(args, "allocator", "system") == "auto":
        use_jemalloc(list(sys.orig_argv))
    try:
        code = int(args.run(args))
    except StreamerError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        code = EXIT_USAGE
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return 130
    if quick_exit and getattr(args, "one_shot", False) and "torch" in sys.modules:
        exit_now(code)
    return code


def exit_now(code: int) -> NoReturn:
    """End the process without the interpreter's teardown: after ``import torch`` it takes 0.4-0.5 s
    on two cores (finalising torch's thousands of objects and modules), a sixth of a short
    ``streamer transcribe``. Only for a command that has finished its work: its output is flushed and
    its files closed here; it has no threads or child processes left (atexit handlers do not run)."""
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (BrokenPipeError, ValueError):  # a reader that went away; a stream closed already
            code = code or 1
    os._exit(code)


def run() -> None:
    """The ``streamer`` program (console script and ``python -m streamer``)."""
    sys.exit(main(quick_exit=True))


if __name__ == "__main__":
    run()
