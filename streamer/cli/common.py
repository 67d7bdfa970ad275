"""What the commands share: the argument parser, value types, the model options, signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn

from streamer import COMPUTE_TYPES
from streamer.errors import StreamerError

if TYPE_CHECKING:
    import torch

    from streamer.engine import Engine
    from streamer.model.loading import LoadedModel
    from streamer.streaming.session import StreamConfig

log = logging.getLogger(__name__)

EXIT_USAGE = 2


class Parser(argparse.ArgumentParser):
    """argparse, but errors are one line and exit with code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def positive_int(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive whole number, got {value!r}")
    return n


def non_negative_float(value: str) -> float:
    try:
        x = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {value!r}") from None
    if not x >= 0 or x == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a finite number >= 0, got {value!r}")
    return x


def positive_float(value: str) -> float:
    x = non_negative_float(value)
    if x == 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {value!r}")
    return x


def add_model_options(p: argparse.ArgumentParser, device_flag: str = "--device") -> None:
    """--model, the device, --compute-type, --threads and (for the streaming engine) --no-cuda-graphs."""
    p.add_argument("--model", default="tiny.en", help="bundled name (tiny.en, base) or a model path")
    p.add_argument(device_flag, dest="compute_device", choices=("cpu", "cuda"), default="cpu",
                   help="where the model runs")
    p.add_argument("--compute-type", choices=COMPUTE_TYPES, default=None,
                   help="weights precision (default: int8 on CPU, float16 on CUDA)")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for inference")
    p.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false",
                   help="on CUDA, run the decode step eagerly instead of as CUDA graphs")


def device(name: str) -> torch.device:
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        raise StreamerError("--device cuda: CUDA is not available on this machine")
    return torch.device(name)


def set_threads(threads: int | None) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def default_compute_type(args: argparse.Namespace, target: torch.device) -> str:
    return str(args.compute_type or ("float16" if target.type == "cuda" else "int8"))


def engine(args: argparse.Namespace, loaded: LoadedModel, target: torch.device, max_batch: int | None = None) -> Engine:
    """The engine: int8 on the CPU, float16 and CUDA graphs on a GPU unless told otherwise."""
    from streamer.engine import Engine

    # On a CPU the streams' windows are decoded one at a time (``Scheduler``: a batch gains nothing
    # there), so the pool holds cross-attention keys and values for one window, and a row for each beam
    # of a final decode (a beam search is cut to the pool's rows), at least 4 (the scheduler's backlog
    # past the engine's rows marks the daemon saturated): 46 MB of tiny.en's KV cache, against 114 MB
    # when it held 5 windows.
    if max_batch is not None or target.type == "cuda":
        rows, windows = max_batch or 128, None
    else:
        rows, windows = max(4, stream_config(args).final_beam_size or 1), 1  # streaming commands: add_stream_options
    return Engine(loaded, max_batch=rows, compute_type=default_compute_type(args, target),
                  step="auto" if args.cuda_graphs else "eager", max_windows=windows)


def streaming_engine(args: argparse.Namespace, target: torch.device) -> tuple[LoadedModel, Engine]:
    """The model and the engine of a streaming command, made on a thread that ends with it: the streams'
    inference thread is then the only one left with torch's OpenMP workers (``streamer.torch_threads``)."""
    from streamer.model.loading import load_model
    from streamer.torch_threads import call_in_thread

    def make() -> tuple[LoadedModel, Engine]:
        loaded = load_model(args.model, device=target)
        return loaded, engine(args, loaded, target)

    return call_in_thread(make, "streamer-load")


def add_stream_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encoder-margin", type=non_negative_float, default=None, metavar="SECONDS",
                   help="a partial decode's encoder computes the audio and this much of the silence after it, the "
                   "rest of the 30 s window taken from a window of silence (default 0.5 on the CPU; on a GPU, "
                   "where windows are encoded in batches, 30: the whole window)")
    p.add_argument("--final-beam-size", type=positive_int, default=None, metavar="N",
                   help="beams of an utterance's final decode, which commits its remaining words (default "
                   "5 on the CPU; 1, greedy, on a GPU, where finals share the other streams' batched decode)")
    p.add_argument("--max-hold", type=non_negative_float, default=None, metavar="SECONDS",
                   help="the longest a heard word waits for the re-decodes to agree on it before a decode like the "
                   "final one settles it (default 1.5; 0: until the utterance ends)")
    p.add_argument("--majority-hold", type=non_negative_float, default=None, metavar="SECONDS",
                   help="how long after it ended a word the re-decodes dispute is committed as most of them have "
                   "it (default 1.0; 0: no majority)")


def stream_config(args: argparse.Namespace, **fields: Any) -> StreamConfig:
    """The streaming settings the options ask for."""
    from streamer.streaming.session import StreamConfig

    if args.max_hold is not None:
        fields.setdefault("max_hold", args.max_hold or None)
    if getattr(args, "majority_hold", None) is not None:
        fields.setdefault("majority_hold", args.majority_hold or None)
    margin = getattr(args, "encoder_margin", None)
    if margin is None and getattr(args, "compute_device", "cpu") != "cpu":
        margin = 30.0  # rows computed as far as their own audio would split the GPU's encoder batches
    if margin is not None:
        fields.setdefault("encoder_margin", margin if margin < 30.0 else None)
    beams = args.final_beam_size
    if beams is None and getattr(args, "compute_device", "cpu") != "cpu":
        beams = 1  # a beam search runs alone and eagerly: on a GPU it would hold up the batched graph steps
    if beams is not None:
        fields.setdefault("final_beam_size", beams if beams > 1 else None)
    return StreamConfig(**fields)


def language(name: str | None) -> str | None:
    from streamer.tokenizer import LANGUAGES, TO_LANGUAGE_CODE

    if name is None:
        return None
    code = TO_LANGUAGE_CODE.get(name.lower(), name.lower())
    if code not in LANGUAGES:
        raise StreamerError(f"--language: unknown language {name!r}")
    return code


def token(args: argparse.Namespace) -> str | None:
    return args.token or os.environ.get("STREAMER_TOKEN") or None


def install_signals(loop: asyncio.AbstractEventLoop, first: Callable[[], None]) -> None:
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
