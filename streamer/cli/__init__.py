"""The ``streamer`` command line: one module per command, each with its options (``add``) and its work
(``run``). Logging is configured here and nowhere else. Nothing here imports torch: ``--help``,
``--version`` and the client commands start at once; commands that run a model import it when they run.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from streamer import __version__
from streamer.cli import dictate, listen, mic, serve, transcribe
from streamer.cli.common import EXIT_USAGE, Parser
from streamer.errors import StreamerError

COMMANDS = (transcribe, serve, listen, dictate, mic)


def build_parser() -> Parser:
    parser = Parser(prog="streamer", description="Streaming speech transcription on Whisper.")
    parser.add_argument("--version", action="version", version=f"streamer {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    for command in COMMANDS:
        command.add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=(logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)],
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return int(args.run(args))
    except StreamerError as e:
        print(f"streamer: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("streamer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
