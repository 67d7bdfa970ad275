"""Decoding benchmark: offline wall time and real-time factor, per-token decode latency by batch size.

    python bench/decode.py [--clip FILE] [--repeat N] [--batches 1,8,32]
    python bench/decode.py --device cuda [--models tiny.en,base] [--batches 1,8,32]

Prints, for the bundled tiny.en on a fixture clip: offline transcription wall time and real-time factor
(float32 and int8), the int8 encoder over a whole 30 s window and over the part a streaming re-decode
computes (and the cross-attention keys and values of each), per-token decode step latency and tokens/s
for each batch size, and, when faster-whisper is installed (``pip install 'streamer[bench]'``), the same
clip through faster-whisper int8 on the same weights in the same run, with the ratio. Decode steps run
eagerly ("eager": attending to the positions used so far) and as the fixed-shape step of a batch bucket
("static"); with ``--device cuda`` also as that step's CUDA graph ("graph", and "streaming graph": the
step of greedy rows without timestamps, as streaming decodes), for each model (bundled, or random:SHAPE),
in float16.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import torch

from streamer.audio import load_audio
from streamer.decoding.step import StepBuffers, forward, pick
from streamer.decoding.transcribe import transcribe
from streamer.engine import Engine
from streamer.mel import N_FRAMES, log_mel_spectrogram, log_mel_windows
from streamer.model.loading import bundled_files, load_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = ROOT / "tests" / "fixtures" / "sense_and_sensibility_01_austen_64kb-0870.wav"


def best_of(repeat: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def offline(compute_type: str, audio: np.ndarray, repeat: int) -> tuple[float, str]:
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type=compute_type)
    text = transcribe(engine.model, engine.tokenizer, audio).text  # warm-up
    return best_of(repeat, lambda: transcribe(engine.model, engine.tokenizer, audio)), text


def step_latency(model_name: str, compute_type: str, batch: int, mode: str, device: torch.device,
                 steps: int = 32, greedy_text: bool = False) -> float:
    """Seconds per one-token decode step (rules, pick, decoder) for ``batch`` rows over a 30 s encoder
    output. mode: "eager" (attends to the positions used so far), "static" (the fixed-shape step run
    eagerly) or "graph" (that step replayed as a CUDA graph). ``greedy_text``: the streaming step (greedy
    rows without timestamps: only their rules, no sampling)."""
    engine = Engine(load_model(model_name, device=device), max_batch=batch, compute_type=compute_type, step=mode)
    model = engine.model
    dims = model.dims
    with torch.inference_mode():
        features = engine.encode(torch.zeros(1, dims.n_mels, 3000)).expand(batch, -1, -1)
        model.decoder.set_audio(features, engine.cache)
        rows = torch.zeros(batch, dtype=torch.long, device=device)
        prompt = torch.full((batch, dims.n_text_ctx + 1), engine.tokenizer.sot, device=device)
        runner = engine.graphs.get(batch, dims.n_audio_ctx, greedy_text) if engine.graphs is not None else None
        if runner is not None:
            buffers = runner.buffers
        else:
            buffers = StepBuffers.new(batch, dims.n_vocab, dims.n_text_ctx, device)

        def run() -> float:
            buffers.load(torch.zeros(batch, dims.n_vocab, device=device), prompt, rows + 1, rows.float(),
                         rows + dims.n_text_ctx, (rows == 0) & (not greedy_text))
            sync(device)
            t0 = time.perf_counter()
            for i in range(steps):
                if runner is not None:
                    runner.replay()
                else:
                    forward(model, engine.cache, buffers, pick(engine.rules, buffers, greedy_text), kv_len=i + 2)
            sync(device)
            return (time.perf_counter() - t0) / steps

        run()  # warm-up (and the capture, for graphs)
        return statistics.median(run() for _ in range(3))


@torch.inference_mode()
def encoder_times(audio: np.ndarray, repeat: int) -> None:
    """int8 encoder time of one 30 s window holding the clip's first seconds (tiled when it is shorter):
    the whole window, and computed over the audio and 0.5 s after it rounded up to whole seconds, as a
    streaming partial decode does (the rest from the window of silence)."""
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type="int8")
    engine.silence()
    for seconds in (2, 5, 10, 20):
        clip = np.resize(audio, seconds * 16000)
        mels = log_mel_windows([clip], N_FRAMES)
        heard = 50 * math.ceil(seconds + 0.5)
        whole = best_of(repeat, partial(engine.encode, mels))
        part = best_of(repeat, partial(engine.encode, mels, heard=heard))
        print(f"encoder int8, {seconds:2d} s of audio in a 30 s window: whole {whole * 1000:6.1f} ms, "
              f"{heard // 50} s computed {part * 1000:6.1f} ms ({whole / part:.1f}x)")
        features = engine.encode(mels, heard=heard)  # (1, 1500, D)
        slots = engine.cache.view(0, 1)
        set_whole = best_of(repeat, partial(engine.model.decoder.set_audio, features, slots))
        set_part = best_of(repeat, partial(
            engine.model.decoder.set_audio, features, slots, heard=heard, after=engine.silence_kv()))
        print(f"  its cross-attention K/V: whole {set_whole * 1000:5.1f} ms, the part computed and the "
              f"silence's copied {set_part * 1000:5.1f} ms ({set_whole / set_part:.1f}x)")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def faster_whisper_offline(clip: Path, repeat: int) -> tuple[float, str] | None:
    try:
        from faster_whisper import WhisperModel
    except ImportError:
        return None
    model = WhisperModel(str(bundled_files("tiny.en")["model.bin"].parent), device="cpu", compute_type="int8")

    def run() -> str:
        segments, _ = model.transcribe(str(clip), beam_size=1, language="en")
        return "".join(s.text for s in segments).strip()

    text = run()
    return best_of(repeat, run), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clip", type=Path, default=DEFAULT_CLIP)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cuda: decode-step figures (eager, static, graph) only, float16")
    parser.add_argument("--models", default="tiny.en", help="with --device cuda: comma-separated models (tiny.en,base)")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: CUDA is not available here")
    if args.device == "cuda":
        gpu_steps(args.models.split(","), batches)
        return
    audio = load_audio(args.clip)
    duration = len(audio) / 16000
    print(f"clip: {args.clip.name} ({duration:.2f} s), torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"log-mel: {best_of(args.repeat, lambda: log_mel_spectrogram(audio)) * 1000:.1f} ms")

    ours: dict[str, float] = {}
    for compute_type in ("float32", "int8"):
        wall, text = offline(compute_type, audio, args.repeat)
        ours[compute_type] = wall
        print(f"streamer {compute_type:8s} offline: {wall * 1000:7.1f} ms  RTF {wall / duration:.3f}  {text!r}")
    fw = faster_whisper_offline(args.clip, args.repeat)
    if fw is None:
        print("faster-whisper: not installed (pip install 'streamer[bench]') - no comparison")
    else:
        wall, text = fw
        print(f"faster-whisper int8 offline: {wall * 1000:7.1f} ms  RTF {wall / duration:.3f}  {text!r}")
        for compute_type, ours_wall in ours.items():
            print(f"ratio streamer {compute_type} / faster-whisper int8: {ours_wall / wall:.2f}x")

    encoder_times(audio, args.repeat)
    for compute_type in ("float32", "int8"):
        for batch in batches:
            for mode in ("eager", "static"):
                per_step = step_latency("tiny.en", compute_type, batch, mode, torch.device("cpu"))
                print(f"decode step tiny.en {compute_type:8s} {mode:6s} batch {batch:3d}: "
                      f"{per_step * 1000:7.2f} ms/step, {batch / per_step:8.1f} tokens/s (CPU)")


def gpu_steps(models: list[str], batches: list[int]) -> None:
    cuda = torch.device("cuda")
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, float16, 30 s encoder output")
    for model_name in models:
        for batch in batches:
            t = {mode: step_latency(model_name, "float16", batch, mode, cuda) for mode in ("eager", "static", "graph")}
            t["streaming graph"] = step_latency(model_name, "float16", batch, "graph", cuda, greedy_text=True)
            line = ", ".join(f"{mode} {v * 1000:6.3f} ms ({batch / v:8.0f} tokens/s)" for mode, v in t.items())
            print(f"decode step {model_name} batch {batch:3d}: {line}; graph vs eager {t['eager'] / t['graph']:.1f}x")


if __name__ == "__main__":
    main()
