"""Whole-process timings, as a user runs the commands: start-up, file transcription, daemon readiness.

    python bench/startup.py [--file talk.wav] [--repeat 3] [--device cpu|cuda]

Each figure is the wall time of a fresh process (best of ``--repeat``, warm page cache):
- ``streamer --help`` and ``streamer --version``;
- ``streamer transcribe FILE`` (text out), then where a fresh process's time goes: the interpreter, importing
  torch, streamer's modules, loading the model, int8 quantisation (CPU), reading the audio, transcribing
  (each step's best over ``--repeat`` processes); and, when faster-whisper is installed (``pip install
  'streamer[bench]'``), the same file through faster-whisper int8 greedy with the same weights and
  threads, as a whole ``python -c`` process, with the ratio and both texts' WER against each other;
- ``streamer serve``: time from the process start to ``/healthz`` answering 200 (liveness) and to
  ``/readyz`` answering 200 (model loaded and warm).
The default FILE joins the fixture speech (three LibriVox sentences and five card names, 25 s).
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import wave
from pathlib import Path

import numpy as np
from speech import normalize_words, program

from streamer.textnorm import word_errors

# The model directory is found by this script and passed in (argv[2]): importing streamer's loader here
# would import torch, which faster-whisper does not need, and charge its import to faster-whisper.
FASTER_WHISPER = """
import sys
from faster_whisper import WhisperModel
model = WhisperModel(sys.argv[2], device="cpu", compute_type="int8", cpu_threads={threads})
segments, _ = model.transcribe(sys.argv[1], beam_size=1, language="en")
print("".join(s.text for s in segments).strip())
"""

# The steps of ``streamer transcribe FILE`` in one fresh process, each timed (seconds, one line).
STEPS = """
import sys
import time
began = time.perf_counter()
import torch
torch_done = time.perf_counter()
torch.set_num_threads({threads})
from streamer.audio import load_audio
from streamer.decoding.transcribe import transcribe
from streamer.engine import apply_compute_type
from streamer.model.loading import load_model
modules = time.perf_counter()
loaded = load_model("tiny.en", device="{device}")
loaded_at = time.perf_counter()
apply_compute_type(loaded, "{compute_type}")
quantised = time.perf_counter()
audio = load_audio(sys.argv[1])
read = time.perf_counter()
transcribe(loaded.model, loaded.tokenizer, audio)
if "{device}" == "cuda":
    torch.cuda.synchronize()
done = time.perf_counter()
print(torch_done - began, modules - torch_done, loaded_at - modules, quantised - loaded_at, read - quantised,
      done - read)
"""
STEP_NAMES = ("import torch", "streamer modules", "load model", "compute type", "read audio", "transcribe")


def steps(clip: Path, device: str, threads: int, repeat: int) -> str:
    """Where a fresh ``streamer transcribe`` process spends its time: each step's best over ``repeat``."""
    compute_type = "int8" if device == "cpu" else "float16"
    interpreter, _ = timed([sys.executable, "-c", "pass"], repeat)
    code = STEPS.format(threads=threads, device=device, compute_type=compute_type)
    best = [float("inf")] * len(STEP_NAMES)
    for _ in range(repeat):
        _, out = timed([sys.executable, "-c", code, str(clip)], 1)
        best = [min(b, float(x)) for b, x in zip(best, out.split(), strict=True)]
    parts = [f"python {interpreter:.2f}"] + [f"{name} {t:.2f}" for name, t in zip(STEP_NAMES, best, strict=True)]
    return ", ".join(parts) + " s"


def timed(command: list[str], repeat: int) -> tuple[float, str]:
    """Best wall time of ``command`` over ``repeat`` runs, and its output."""
    best, out = float("inf"), ""
    for _ in range(repeat):
        began = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True)
        elapsed = time.perf_counter() - began
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr}")
        best, out = min(best, elapsed), done.stdout
    return best, out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(port: int, path: str, began: float, timeout: float = 120.0) -> float:
    while time.perf_counter() - began < timeout:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - began
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.01)
    raise SystemExit(f"{path} did not answer 200 within {timeout:g} s")


def serve_times(device: str, repeat: int) -> tuple[float, float]:
    best_live, best_ready = float("inf"), float("inf")
    for _ in range(repeat):
        port = free_port()
        began = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "streamer", "serve", "--port", str(port), "--device", device],
                                stderr=subprocess.DEVNULL)
        try:
            live = wait_for(port, "/healthz", began)
            ready = wait_for(port, "/readyz", began)
        finally:
            proc.terminate()
            proc.wait(60)
        best_live, best_ready = min(best_live, live), min(best_ready, ready)
    return best_live, best_ready


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--file", type=Path, default=None)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads for both transcribers")
    args = parser.parse_args()
    streamer = [sys.executable, "-m", "streamer"]
    with tempfile.TemporaryDirectory() as tmp:
        clip = args.file
        if clip is None:
            clip = Path(tmp) / "speech.wav"
            audio = program(["librivox", "cards"], gap=0.0).audio
            with wave.open(str(clip), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(16000)
                w.writeframes((np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes())
        with wave.open(str(clip)) as w:
            seconds = w.getnframes() / w.getframerate()
        print(f"{clip.name}: {seconds:.1f} s; best of {args.repeat} whole processes each")
        for flag in ("--help", "--version"):
            wall, _ = timed([*streamer, flag], args.repeat)
            print(f"streamer {flag}: {wall:.2f} s")
        ours, text = timed([*streamer, "transcribe", str(clip), "--device", args.device, "--threads",
                            str(args.threads)], args.repeat)
        print(f"streamer transcribe ({args.device}): {ours:.2f} s, {seconds / ours:.0f}x real time")
        print(f"  its steps: {steps(clip, args.device, args.threads, args.repeat)}")
        if args.device == "cpu":
            try:
                import faster_whisper  # noqa: F401
            except ImportError:
                print("faster-whisper is not installed (pip install 'streamer[bench]'): no comparison")
            else:
                from streamer.model.loading import bundled_files

                model_dir = str(bundled_files("tiny.en")["model.bin"].parent)
                theirs, their_text = timed([sys.executable, "-c", FASTER_WHISPER.format(threads=args.threads),
                                            str(clip), model_dir], args.repeat)
                ref, hyp = normalize_words(their_text), normalize_words(text)
                print(f"faster-whisper int8 greedy: {theirs:.2f} s; streamer / faster-whisper {ours / theirs:.2f}x; "
                      f"the texts differ by {word_errors(ref, hyp)} of {len(ref)} words")
        live, ready = serve_times(args.device, args.repeat)
        print(f"streamer serve ({args.device}): /healthz 200 after {live:.2f} s, /readyz 200 after {ready:.2f} s")


if __name__ == "__main__":
    main()
