"""Where torch runs: streaming decodes on an inference thread, with the model loaded on a thread that ends
(as the daemon and the streaming commands load it) or on one that lives on (as they did), against one thread.

    python bench/threads.py [--repeat 5]

Each arrangement runs in a process of its own (GNU OpenMP's worker pools are per process):

- ``one thread``: load and decode on the main thread (a single pool of OpenMP workers);
- ``loader ended``: load and warm up on a thread that ends (``streamer.torch_threads.call_in_thread``), then
  decode on a second thread, like the daemon's inference thread;
- ``loader kept``: load on a thread that lives on (asyncio's default executor did this), then decode on a
  second thread: two pools, more OpenMP workers than cores on a 2-core machine.

Prints per arrangement the mean time of an elementwise op over 192k floats (a kernel's start-up) and the
best-of-``--repeat`` mean time of partial decodes (3.5 and 7 s windows of three LibriVox clips, half of the
text forced, the rest a draft, as a live stream's re-decodes run), and the ratios to ``one thread``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from streamer.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
CLIPS = [FIXTURES / f"sense_and_sensibility_01_austen_64kb-{n}.wav" for n in ("0870", "0880", "0890")]
ARRANGEMENTS = ("one thread", "loader ended", "loader kept")


def measure(repeat: int) -> dict[str, float]:
    """On the calling thread: the elementwise op and the partial decodes, in ms."""
    import torch

    from streamer.audio import load_audio
    from streamer.streaming.inference import run_windows
    from streamer.streaming.session import StreamConfig, WindowJob

    engine = ENGINE[0]
    config = StreamConfig()

    def job(audio: np.ndarray, prefix: tuple[int, ...] = (), draft: tuple[int, ...] = ()) -> WindowJob:
        seconds = len(audio) / 16000
        sample_len = int(10 + 8 * seconds) - len(prefix)
        return WindowJob(0, 0, audio, (), prefix, "en", "transcribe", 0.0, sample_len, False,
                         encoder_heard=config.encoder_heard(seconds), draft=draft)

    partials = []
    for clip in CLIPS:
        audio = load_audio(clip)
        for start, seconds in ((0.0, 3.5), (1.0, 7.0)):
            window = audio[int(start * 16000) : int((start + seconds) * 16000)]
            tokens = run_windows(engine, [job(window[:-4800])])[0].tokens
            half = len(tokens) // 2
            partials.append(job(window, tuple(tokens[:half]), tuple(tokens[half:])))
    x = torch.randn(1, 500, 384)
    for _ in range(50):
        x + 1
    began = time.perf_counter()
    for _ in range(2000):
        x + 1
    add = (time.perf_counter() - began) / 2000
    best = float("inf")
    for _ in range(repeat):
        began = time.perf_counter()
        for j in partials:
            run_windows(engine, [j])
        best = min(best, (time.perf_counter() - began) / len(partials))
    return {"add_ms": add * 1000, "partial_ms": best * 1000}


ENGINE: list[Engine] = []


def load() -> None:
    import torch

    from streamer.engine import Engine
    from streamer.model.loading import load_model
    from streamer.streaming.inference import warm_up

    torch.set_num_threads(2)
    loaded = load_model("tiny.en", device=torch.device("cpu"))
    engine = Engine(loaded, max_batch=5, compute_type="int8", step="eager", max_windows=1)
    warm_up(engine)
    ENGINE.append(engine)


def on_thread(fn: Callable[[], object]) -> threading.Thread:
    thread = threading.Thread(target=fn)
    thread.start()
    return thread


def child(arrangement: str, repeat: int) -> None:
    from streamer.torch_threads import call_in_thread

    if arrangement == "one thread":
        load()
        print(json.dumps(measure(repeat)))
        return
    release = threading.Event()
    if arrangement == "loader ended":
        call_in_thread(load)
    else:
        loaded = threading.Event()

        def load_and_stay() -> None:  # a loader that lives on, idle
            load()
            loaded.set()
            release.wait()

        on_thread(load_and_stay)
        loaded.wait()
    result: list[dict[str, float]] = []
    on_thread(lambda: result.append(measure(repeat))).join()
    release.set()
    print(json.dumps(result[0]))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--child", choices=ARRANGEMENTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child, args.repeat)
        return
    figures = {}
    for arrangement in ARRANGEMENTS:
        out = subprocess.run([sys.executable, __file__, "--child", arrangement, "--repeat", str(args.repeat)],
                             capture_output=True, text=True, check=True).stdout
        figures[arrangement] = json.loads(out.strip().splitlines()[-1])
    base = figures["one thread"]
    for arrangement, f in figures.items():
        print(f"{arrangement:13s}: elementwise op {f['add_ms']:.3f} ms ({f['add_ms'] / base['add_ms']:.2f}x), "
              f"partial decode {f['partial_ms']:.1f} ms ({f['partial_ms'] / base['partial_ms']:.2f}x)")


if __name__ == "__main__":
    main()
