"""Long files: sequential vs batched transcription (and faster-whisper's sequential time on the CPU).

    python bench/longform.py [--minutes 10] [--device cpu|cuda] [--batch-sizes 8,32] [--threads 2]

The recording is the benchmark speech (LibriVox, cards and the three synthetic passages, about 4 min)
repeated to ``--minutes``, with 1 s between clips; WER is against the human transcripts. Each figure is
the transcription's wall time in a warm process (model loaded, one short warm-up), and its real-time
factor; faster-whisper (``pip install 'streamer[bench]'``) decodes the same recording, as a file, with
the same weights, int8, greedy, without VAD, on the same threads.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
import torch
from speech import SETS, normalize_words, program

from streamer import SAMPLE_RATE
from streamer.decoding.batched import transcribe_batched
from streamer.decoding.transcribe import transcribe
from streamer.engine import Engine
from streamer.model.loading import bundled_files, load_model
from streamer.textnorm import word_errors


def recording(minutes: float) -> tuple[np.ndarray, list[str]]:
    prog = program(list(SETS), gap=1.0)
    repeats = max(1, round(minutes * 60 / prog.seconds))
    return np.tile(prog.audio, repeats), prog.human() * repeats


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--batch-sizes", default="8", help="comma-separated")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--no-sequential", action="store_true", help="skip the sequential decode (slow on a CPU)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    audio, truth = recording(args.minutes)
    seconds = len(audio) / SAMPLE_RATE
    compute_type = "float16" if device.type == "cuda" else "int8"
    loaded = load_model("tiny.en", device=device)
    engine = Engine(loaded, max_batch=max(int(b) for b in args.batch_sizes.split(",")), compute_type=compute_type)
    engine.prepare_steps()
    transcribe_batched(engine, audio[: 20 * SAMPLE_RATE], batch_size=2)  # warm-up (kernels, allocations)
    print(f"{seconds / 60:.1f} min of speech ({len(truth)} words), tiny.en {compute_type} on {args.device}, "
          f"{args.threads} threads")

    def report(name: str, run: object) -> float:
        sync(device)
        began = time.perf_counter()
        text = run()  # type: ignore[operator]
        sync(device)
        wall = time.perf_counter() - began
        wer = word_errors(truth, normalize_words(text)) / len(truth) * 100
        print(f"{name}: {wall:.1f} s, {seconds / wall:.0f}x real time, WER {wer:.1f}%")
        return wall

    if not args.no_sequential:
        report("streamer sequential", lambda: transcribe(loaded.model, loaded.tokenizer, audio).text)
    for b in (int(x) for x in args.batch_sizes.split(",")):
        report(f"streamer --batch-size {b}", lambda b=b: transcribe_batched(engine, audio, batch_size=b).text)
    if device.type == "cpu":
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            print("faster-whisper is not installed (pip install 'streamer[bench]'): no comparison")
            return
        model = WhisperModel(str(bundled_files("tiny.en")["model.bin"].parent), device="cpu", compute_type="int8",
                             cpu_threads=args.threads)
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "long.wav"
            with wave.open(str(path), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(SAMPLE_RATE)
                w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
            report("faster-whisper int8 sequential",
                   lambda: "".join(s.text for s in model.transcribe(str(path), beam_size=1, language="en")[0]))


if __name__ == "__main__":
    main()
