"""The cost of an utterance's final decode in streaming: greedy against beam search, per window length.

    python bench/final_decode.py [--seconds 4,8,12] [--beams 1,3,5] [--repeat 5] [--compute-type int8]

A window of ``--seconds`` of speech (the start of tests/fixtures/speech/workshop.wav) is decoded as the
streaming engine decodes an utterance's final (run_windows: log-mel, the 30 s encoder pass, decode
without timestamps, word alignment) with ``final_beam_size`` 1 (greedy) and each of ``--beams``; prints
the median wall time of each, and each beam width's cost against greedy, with the encoder pass alone
for scale. The beams of one window read its cross-attention keys and values once for all of them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
from speech import FIXTURES

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.engine import Engine
from streamer.mel import N_FRAMES, log_mel_windows
from streamer.model.loading import load_model
from streamer.streaming.inference import run_windows
from streamer.streaming.session import WindowJob


def median_seconds(repeat: int, fn: Callable[[], object]) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        fn()
        times.append(time.perf_counter() - began)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", default="4,8,12")
    parser.add_argument("--beams", default="1,3,5")
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--compute-type", default="int8")
    args = parser.parse_args()
    engine = Engine(load_model("tiny.en"), max_batch=8, compute_type=args.compute_type)
    audio = load_audio(FIXTURES / "speech" / "workshop.wav")
    mel = log_mel_windows([audio[: 30 * SAMPLE_RATE]], N_FRAMES, engine.model.dims.n_mels, engine.device)
    encoder = median_seconds(args.repeat, lambda: engine.encode(mel))
    threads = torch.get_num_threads()
    print(f"tiny.en {args.compute_type}, torch threads {threads}: 30 s encoder pass {encoder * 1000:.0f} ms")
    for seconds in (float(s) for s in args.seconds.split(",")):
        window = audio[: int(seconds * SAMPLE_RATE)].copy()
        line = f"{seconds:g} s window:"
        greedy = None
        for beams in (int(b) for b in args.beams.split(",")):
            job = WindowJob(0, 0, window, (), (), "en", "transcribe", 0.0, int(10 + 8 * seconds), True,
                            beam_size=beams if beams > 1 else None)
            words = len(run_windows(engine, [job])[0].words or [])
            took = median_seconds(args.repeat, lambda job=job: run_windows(engine, [job]))
            greedy = took if greedy is None else greedy
            line += f"  beam {beams}: {took * 1000:.0f} ms ({took / greedy:.2f}x greedy, {words} words)"
        print(line, flush=True)


if __name__ == "__main__":
    main()
