"""Decoding benchmark: offline wall time and real-time factor, per-token decode latency by batch size.

    python bench/decode.py [--clip FILE] [--repeat N] [--batches 1,8,32]

Prints, for the bundled tiny.en on a fixture clip: offline transcription wall time and real-time factor
(float32 and int8), per-token decode step latency and tokens/s for each batch size, and, when
faster-whisper is installed (``pip install 'streamer[bench]'``), the same clip through faster-whisper
int8 on the same weights in the same run, with the ratio. CUDA figures (eager vs graphs) need a GPU.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from streamer.audio import load_audio
from streamer.decoding.transcribe import transcribe
from streamer.engine import Engine
from streamer.mel import log_mel_spectrogram
from streamer.model.loading import bundled_files, load_model

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CLIP = ROOT / "tests" / "fixtures" / "sense_and_sensibility_01_austen_64kb-0870.wav"


def best_of(repeat: int, fn) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def offline(compute_type: str, audio, repeat: int) -> tuple[float, str]:  # type: ignore[no-untyped-def]
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type=compute_type)
    text = transcribe(engine.model, engine.tokenizer, audio).text  # warm-up
    return best_of(repeat, lambda: transcribe(engine.model, engine.tokenizer, audio)), text


def step_latency(compute_type: str, batch: int, steps: int = 32) -> float:
    """Seconds per one-token decode step for ``batch`` rows over a 30 s encoder output."""
    engine = Engine(load_model("tiny.en"), max_batch=batch, compute_type=compute_type)
    model = engine.model
    with torch.inference_mode():
        features = engine.encode(torch.zeros(1, model.dims.n_mels, 3000)).expand(batch, -1, -1)
        cache = model.decoder.new_cache(batch)
        model.decoder.set_audio(features, cache)
        tokens = torch.full((batch, 1), 50257)
        model.decoder(tokens, torch.zeros(batch, 1, dtype=torch.long), cache, kv_len=1)
        t0 = time.perf_counter()
        for i in range(1, steps + 1):
            logits = model.decoder(tokens, torch.full((batch, 1), i), cache, kv_len=i + 1)[:, 0]
            logits = engine.rules.apply(logits, _state(batch))
            tokens = logits.argmax(dim=-1, keepdim=True)
        return (time.perf_counter() - t0) / steps


def _state(batch: int):  # type: ignore[no-untyped-def]
    from streamer.decoding.rules import RuleState

    return RuleState.new([True] * batch, torch.device("cpu"))


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
    args = parser.parse_args()
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

    for compute_type in ("float32", "int8"):
        for batch in (int(b) for b in args.batches.split(",")):
            per_step = statistics.median(step_latency(compute_type, batch) for _ in range(3))
            print(
                f"decode step {compute_type:8s} batch {batch:3d}: {per_step * 1000:7.2f} ms/step, "
                f"{batch / per_step:8.1f} tokens/s (eager, static cache, CPU)"
            )
    if not torch.cuda.is_available():
        print("CUDA: not available here - no eager vs CUDA-graph figures")


if __name__ == "__main__":
    main()
