"""Streaming accuracy and latency, in process: each speech set streamed live, against offline decoding.

    python bench/streaming.py [--sets librivox,cards,harbor,garden,workshop] [--speed 1] [--streams 1]
    python bench/streaming.py --speed 0            # inline, as fast as the machine goes (WER only)
    python bench/streaming.py --speed 0 --phases 0,0.05,0.1,0.15   # inline, each set at four offsets

For each set (bench/speech.py; its clips joined with 1 s gaps): offline transcription of the whole set
(``streamer.decoding.transcribe``) in float32 and in the streams' compute type (int8 by default, as
``streamer transcribe`` runs on a CPU), and live streaming through the streaming engine (one scheduler)
at ``--speed`` times real time, ``--streams`` copies at once. Prints per set: WER of both offline texts
and of each stream's finals against the human transcript, the difference to the offline text of the same
compute type, and (at a real-time speed) committed-word and partial latency: first seen minus the word's
end in the audio (reference times from an offline alignment). The totals weigh every word equally.

Inline, a stream's text depends on where its decodes fall: a decode 0.1 s sooner or later can commit
other words, and every later decode moves with it, so one run of a set differs from another by several
words for reasons that have nothing to do with a change under test (measured: harbor, workshop and garden
inline, 53 to 67 streamed errors of 514 words over offsets of 0 and 0.1 s, the same code). ``--phases``
streams each set after each of these lengths of silence and counts every run: compare configurations
over several.
"""

from __future__ import annotations

import argparse
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from functools import partial

import numpy as np
import torch
from speech import SETS, RefWord, config_overrides, mark_seen, normalize_words, pct, program, reference_words

from streamer import SAMPLE_RATE
from streamer.decoding.transcribe import TranscribeOptions, transcribe
from streamer.engine import Engine
from streamer.model.loading import load_model
from streamer.model.whisper import Whisper
from streamer.streaming.events import Event, Final, Partial
from streamer.streaming.live import LiveStream
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig
from streamer.streaming.transcriber import Transcriber
from streamer.textnorm import word_errors
from streamer.tokenizer import Tokenizer
from streamer.torch_threads import call_in_thread


@dataclass
class Recorder:
    refs: list[RefWord]
    began: float = 0.0
    finals: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, events: list[Event]) -> None:
        now = time.monotonic() - self.began
        with self.lock:
            for e in events:
                if isinstance(e, Partial | Final):
                    for w in e.words:
                        mark_seen(self.refs, w.word, w.start, now, isinstance(e, Final))
                if isinstance(e, Final):
                    self.finals.append(e.text)


def live(engine: Engine, audio: np.ndarray, refs: list[RefWord], config: StreamConfig, speed: float, streams: int):
    scheduler = Scheduler(engine)
    recorders = [Recorder([replace(r) for r in refs]) for _ in range(streams)]
    lives = [LiveStream(scheduler, rec, config) for rec in recorders]
    chunk = SAMPLE_RATE // 10
    began = time.monotonic()
    for rec in recorders:
        rec.began = began
    for i in range(0, len(audio), chunk):
        delay = began + i / SAMPLE_RATE / speed - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        for s in lives:
            s.feed(audio[i : i + chunk])
    for s in lives:
        s.end()
    for s in lives:
        s.wait()
    scheduler.close()
    return recorders, scheduler.stats


def inline(engine: Engine, audio: np.ndarray, config: StreamConfig, phase: float = 0.0) -> list[str]:
    """The finals of one stream decoded inline (no clock), after ``phase`` seconds of silence."""
    audio = np.concatenate([np.zeros(round(phase * SAMPLE_RATE), np.float32), audio])
    t = Transcriber(engine, config)
    events = []
    for i in range(0, len(audio), SAMPLE_RATE // 10):
        events += t.feed(audio[i : i + SAMPLE_RATE // 10])
    events += t.close()
    return [e.text for e in events if isinstance(e, Final)]


def offline_text(model: Whisper, tokenizer: Tokenizer, audio: np.ndarray) -> str:
    return transcribe(model, tokenizer, audio, TranscribeOptions()).text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--speed", type=float, default=1.0, help="times real time (0: inline, no latency figures)")
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--phases", default="0", help="inline: seconds of silence before each set, one run each")
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--config", default="", help="StreamConfig fields, e.g. 'interval=0.5,encoder_margin=None'")
    args = parser.parse_args()
    overrides = config_overrides(args.config)
    config = StreamConfig(**overrides)
    # torch runs on threads that end, as in the daemon, so that the streams' inference thread is the only
    # one with OpenMP workers while they run (streamer.torch_threads; on the main thread it was ~1.4x slower)
    engine = call_in_thread(lambda: Engine(load_model("tiny.en"), max_batch=max(8, args.streams),
                                           compute_type=args.compute_type))
    offline_model = call_in_thread(lambda: load_model("tiny.en"))
    print(f"{args.streams} stream(s) per set at {args.speed:g}x, torch threads {torch.get_num_threads()}, "
          f"config {overrides or 'default'}")
    totals = {"words": 0, "offline": 0, "float32": 0, "streamed": 0}
    all_final: list[float] = []
    all_partial: list[float] = []
    for name in args.sets.split(","):
        prog = program([name])
        human = prog.human()
        float32 = call_in_thread(partial(offline_text, offline_model.model, offline_model.tokenizer, prog.audio))
        f32_errors = word_errors(human, normalize_words(float32))
        if args.compute_type == "float32":  # the same model as the line above
            off_errors = f32_errors
        else:
            offline = call_in_thread(partial(offline_text, engine.model, engine.tokenizer, prog.audio))
            off_errors = word_errors(human, normalize_words(offline))
        if args.speed > 0:
            refs = call_in_thread(partial(reference_words, engine, prog))
            recorders, _ = live(engine, prog.audio, refs, config, args.speed, args.streams)
            texts = [rec.finals for rec in recorders]
        else:
            recorders = []
            texts = [inline(engine, prog.audio, config, float(phase)) for phase in args.phases.split(",")]
        line = (f"{name}: {len(human)} words, offline WER {100 * off_errors / len(human):.1f}% "
                f"({args.compute_type}; float32 {100 * f32_errors / len(human):.1f}%)")
        labels = [f"stream {n}" for n in range(len(texts))] if args.speed > 0 else [
            f"phase {phase}" for phase in args.phases.split(",")
        ]
        for label, finals in zip(labels, texts, strict=True):
            errors = word_errors(human, normalize_words(" ".join(finals)))
            totals["streamed"] += errors
            line += f"; {label} {100 * errors / len(human):.1f}% ({errors - off_errors:+d} words)"
        totals["words"] += len(human) * len(texts)
        totals["offline"] += off_errors * len(texts)
        totals["float32"] += f32_errors * len(texts)
        for rec in recorders:
            final_lat = [r.final_seen - r.end for r in rec.refs if r.final_seen is not None]
            all_final += final_lat
            all_partial += [r.partial_seen - r.end for r in rec.refs if r.partial_seen is not None]
            line += f"; committed median {pct(final_lat, 50):.2f} s p90 {pct(final_lat, 90):.2f} s"
        print(line, flush=True)
    words = totals["words"]  # every stream's (or phase's) words
    gap = 100 * (totals["streamed"] - totals["offline"]) / words
    print(f"all sets: offline WER {100 * totals['offline'] / words:.2f}% ({args.compute_type}; float32 "
          f"{100 * totals['float32'] / words:.2f}%), streamed {100 * totals['streamed'] / words:.2f}% "
          f"(difference {gap:+.2f} points to offline {args.compute_type})")
    if all_final:
        print(f"committed latency median {statistics.median(all_final):.2f} s p90 {pct(all_final, 90):.2f} s; "
              f"partial median {statistics.median(all_partial):.2f} s p90 {pct(all_partial, 90):.2f} s")


if __name__ == "__main__":
    main()
