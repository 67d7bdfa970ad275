"""Streaming benchmark: per-word latency and WER of live (1x real time) transcription.

    python bench/streaming.py [--speed 1] [--gap 1.0] [--streams 1] [--interval 0.4]

Joins the fixture clips (three LibriVox sentences, five "cards" clips) with ``--gap`` seconds of
silence, then:
- offline: transcribes the joined file with ``streamer.decoding.transcribe`` (reference text), and
  derives reference word end times by aligning each clip offline (cross-attention DTW, whole clip);
- live: replays the file through the streaming engine at ``--speed`` times real time (``--streams``
  copies at once on one scheduler), recording when each word first appears in a partial and when it
  is committed in a final.
Prints the median and p90 of (first seen - word end in the audio) for partials and finals, the WER
of the finals against the offline text and of both against the human transcripts.
"""

from __future__ import annotations

import argparse
import re
import statistics
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from streamer import SAMPLE_RATE
from streamer.audio import load_audio
from streamer.decoding.transcribe import TranscribeOptions, transcribe
from streamer.engine import Engine
from streamer.model.loading import load_model
from streamer.streaming.events import Event, Final, Partial
from streamer.streaming.inference import run_windows
from streamer.streaming.live import LiveStream
from streamer.streaming.scheduler import Scheduler
from streamer.streaming.session import StreamConfig, WindowJob
from streamer.textnorm import normalize, word_errors

FIXTURES = Path(__file__).resolve().parent.parent / "tests" / "fixtures"
CLIPS = [f"sense_and_sensibility_01_austen_64kb-08{n}0.wav" for n in (7, 8, 9)] + [f"00{n}.wav" for n in range(1, 6)]


def normalize_words(text: str) -> list[str]:
    return normalize(text).split()


def wer(reference: list[str], hypothesis: list[str]) -> float:
    return word_errors(reference, hypothesis) / max(1, len(reference))


def truth() -> list[str]:
    words: list[str] = []
    for clip in CLIPS:
        txt = FIXTURES / clip.replace(".wav", ".txt")
        if txt.exists():
            words += normalize_words(txt.read_text())
        else:
            line = next(x for x in (FIXTURES / "cards.transcription").read_text().splitlines() if clip[:3] in x)
            words += normalize_words(re.sub(r"<.?s>|\(.*\)", "", line))
    return words


@dataclass
class RefWord:
    key: str
    start: float
    end: float
    partial_seen: float | None = None
    final_seen: float | None = None


def reference_words(engine: Engine, gap: float) -> tuple[np.ndarray, list[RefWord]]:
    pieces, refs, offset = [], [], 0.0
    silence = np.zeros(int(gap * SAMPLE_RATE), dtype=np.float32)
    for clip in CLIPS:
        audio = load_audio(FIXTURES / clip)
        job = WindowJob(0, 0, audio, (), (), "en", "transcribe", 0.0, 224, True)
        for w in run_windows(engine, [job])[0].words or []:
            for key in normalize_words(w.word):
                refs.append(RefWord(key, offset + w.start, offset + w.end))
        pieces += [audio, silence]
        offset += (len(audio) + len(silence)) / SAMPLE_RATE
    return np.concatenate(pieces), refs


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


def mark_seen(refs: list[RefWord], word: str, start: float, now: float, final: bool) -> None:
    """A word (starting at ``start`` in the stream) shown at ``now``: the first matching reference word
    not yet seen (in a final, or in any hypothesis) records it."""
    for key in normalize_words(word):
        for r in refs:
            unseen = r.final_seen is None if final else r.partial_seen is None
            if r.key == key and abs(r.start - start) < 0.8 and unseen:
                if final:
                    r.final_seen = now
                if r.partial_seen is None:
                    r.partial_seen = now
                break


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


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    return float(np.percentile(values, q))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--speed", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--streams", type=int, default=1)
    parser.add_argument("--interval", type=float, default=StreamConfig.interval)
    parser.add_argument("--compute-type", default="int8")
    parser.add_argument("--carry-seconds", type=float, default=StreamConfig.carry_seconds,
                        help="words carried into the next utterance's window (0: none)")
    parser.add_argument("--encoder-seconds", type=float, default=StreamConfig.encoder_seconds,
                        help="encode short windows padded to this many seconds instead of 30 (audio_ctx)")
    args = parser.parse_args()
    engine = Engine(load_model("tiny.en"), max_batch=max(8, args.streams), compute_type=args.compute_type)
    audio, refs = reference_words(engine, args.gap)
    offline = transcribe(engine.model, engine.tokenizer, audio, TranscribeOptions()).text
    config = StreamConfig(
        interval=args.interval, encoder_seconds=args.encoder_seconds, carry_seconds=args.carry_seconds
    )
    recorders, stats = live(engine, audio, refs, config, args.speed, args.streams)
    human = truth()
    offline_words = normalize_words(offline)
    print(f"audio {len(audio) / SAMPLE_RATE:.1f} s, {len(refs)} reference words, {args.streams} stream(s) "
          f"at {args.speed}x, interval {args.interval} s, encoder {args.encoder_seconds:g} s, "
          f"torch threads {torch.get_num_threads()}")
    print(f"offline WER vs human transcript: {100 * wer(human, offline_words):.1f}%")
    for n, rec in enumerate(recorders):
        streamed = normalize_words(" ".join(rec.finals))
        final_lat = [r.final_seen - r.end for r in rec.refs if r.final_seen is not None]
        partial_lat = [r.partial_seen - r.end for r in rec.refs if r.partial_seen is not None]
        print(
            f"stream {n}: committed latency median {statistics.median(final_lat):.2f} s p90 {pct(final_lat, 90):.2f} s"
            f" ({len(final_lat)}/{len(refs)} words matched); partial latency median "
            f"{statistics.median(partial_lat):.2f} s p90 {pct(partial_lat, 90):.2f} s; "
            f"WER vs offline {100 * wer(offline_words, streamed):.1f}%, vs human {100 * wer(human, streamed):.1f}% "
            f"(offline {100 * wer(human, offline_words):.1f}%)"
        )
    print(f"scheduler: {stats.jobs} windows in {stats.batches} batches, busy {stats.busy_seconds:.1f} s "
          f"for {len(audio) / SAMPLE_RATE * args.streams:.1f} s of stream audio")
    print("offline:  ", offline)
    print("streamed: ", " ".join(recorders[0].finals), "(stream 0)")


if __name__ == "__main__":
    main()
