"""The commit policy on a virtual clock: when each word is committed, and by which rule, reproducibly.

    python bench/replay.py [--sets librivox,cards,harbor,garden,workshop] [--cost 0.25] [--phases 0,0.1,0.2]
    python bench/replay.py --cost 1.5                        # as a stream sharing 2 cores with five others
    python bench/replay.py --config max_hold=None --trace 11:18 --sets librivox   # every decode of a span
    python bench/replay.py --save DIR                        # each replay's finals, to diff two builds
    python bench/replay.py --late 1.5                        # the words committed 1.5 s or more after they ended
    python bench/replay.py --sets librivox+cards+harbor      # one stream of the three, as bench/load.py sends them

One stream per set (bench/speech.py), fed in 50 ms frames on a clock that the audio, not the machine,
advances: a decode starts when the stream asks for one and the inference is free, and its result arrives
``--cost`` seconds of audio later (the audio that came meanwhile waits for the next decode, as in the
daemon, which cuts a window when it starts decoding it). The decodes themselves are real (tiny.en, int8
unless ``--compute-type``), so the text and the latency depend only on the audio, the configuration and
``--cost``: two configurations compare without the machine's noise, which bench/streaming.py at 1x cannot
avoid. A stream that shares the CPU with others waits for their decodes as well: ``--cost`` 0.25 is one
stream on 2 cores (a window costs 0.25-0.3 s there), 1.5 about six.

Prints per set and phase the WER of the finals against the human transcript, then committed latency (the
result's arrival minus the word's end, reference times from an offline alignment), over all words and
by the decode that committed them: ``partial`` (agreement or AlignAtt), ``settle`` (a word held past
``max_hold``) and ``final`` (the utterance's end), with the errors among the normalised words each kind
committed (substituted or inserted in one alignment of least edits to the human transcript; a word left
out counts against the word after it, or against the finals at the end). At ``--cost 0.2 --phases
0,0.1,0.2`` on the five sets a word committed by a settling decode was wrong 2.9x as often as one committed
by a partial decode (57 of 209 against 125 of 1310; finals 30 of 223): the words held past ``max_hold`` are
the ones tiny.en hears least surely (with ``max_hold=2.0``: 209 errors against 212, partial decodes then
committing 152 wrong of 1381, and committed p90 1.42 s against 1.36 s).
"""

from __future__ import annotations

import argparse
import statistics
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from speech import SETS, RefWord, config_overrides, mark_seen, normalize_words, pct, program, reference_words

from streamer import SAMPLE_RATE
from streamer.decoding.decode import DecodingResult
from streamer.engine import Engine
from streamer.model.loading import load_model
from streamer.streaming.events import Event, Final
from streamer.streaming.inference import run_windows
from streamer.streaming.session import StreamConfig, StreamSession, WindowJob

FRAME = SAMPLE_RATE // 20


@dataclass
class Replay:
    refs: list[RefWord]
    trace: tuple[float, float] | None = None
    late: float | None = None  # print each word committed this long or longer after it ended
    finals: list[str] = field(default_factory=list)
    latency: dict[str, list[float]] = field(default_factory=dict)  # by the kind of decode that committed
    kinds: list[str] = field(default_factory=list)  # the kind of decode that committed each normalised word

    def take(self, job: WindowJob, result: DecodingResult, events: list[Event], arrived: float) -> None:
        kind = "final" if job.final else "settle" if job.settle else "partial"
        for e in events:
            if not isinstance(e, Final):
                continue
            self.finals.append(e.text)
            self.kinds.extend([kind] * (len(normalize_words(" ".join(self.finals))) - len(self.kinds)))
            for w in e.words:
                unseen = [r for r in self.refs if r.final_seen is None]
                mark_seen(self.refs, w.word, w.start, arrived, True)
                waits = [arrived - r.end for r in unseen if r.final_seen is not None]
                self.latency.setdefault(kind, []).extend(waits)
                if self.late is not None and waits and max(waits) >= self.late:
                    print(f"  late: {w.word.strip()!r} ended {w.end:.2f} s, committed {max(waits):.2f} s after, "
                          f"by a {kind} decode of {job.start / SAMPLE_RATE:.2f}-{job.end / SAMPLE_RATE:.2f} s")
        if self.trace and self.trace[0] <= job.end / SAMPLE_RATE <= self.trace[1]:
            heard = " ".join(f"{w.word.strip()}({w.probability:.2f})" for w in result.words or [])
            print(f"  [{job.start / SAMPLE_RATE:.2f}-{job.end / SAMPLE_RATE:.2f} s {kind}] {heard}")
            for e in events:
                if isinstance(e, Final):
                    print(f"    committed {e.text!r}")


def wrong_words(reference: list[str], hypothesis: list[str]) -> tuple[list[int], list[int]]:
    """One alignment of least edits (as ``word_errors``): the indices of the hypothesis words that are
    substituted or inserted, and for each reference word left out the index of the hypothesis word after it."""
    rows, cols = len(reference) + 1, len(hypothesis) + 1
    d = [[0] * cols for _ in range(rows)]  # (R+1, H+1) edit distances
    for i in range(rows):
        d[i][0] = i
    for j in range(cols):
        d[0][j] = j
    for i in range(1, rows):
        for j in range(1, cols):
            same = reference[i - 1] == hypothesis[j - 1]
            d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + (not same))
    wrong: list[int] = []
    missing: list[int] = []
    i, j = rows - 1, cols - 1
    while i > 0 or j > 0:
        if i > 0 and j > 0 and d[i][j] == d[i - 1][j - 1] + (reference[i - 1] != hypothesis[j - 1]):
            if reference[i - 1] != hypothesis[j - 1]:
                wrong.append(j - 1)
            i, j = i - 1, j - 1
        elif j > 0 and d[i][j] == d[i][j - 1] + 1:
            wrong.append(j - 1)
            j -= 1
        else:
            missing.append(j)
            i -= 1
    return wrong, missing


def replay(engine: Engine, audio: np.ndarray, config: StreamConfig, cost: float, record: Replay) -> None:
    """Stream ``audio`` through one session on the virtual clock; every decode takes ``cost`` seconds."""
    session = StreamSession(config)
    out: tuple[WindowJob, DecodingResult, float] | None = None  # the decode in flight and its arrival
    clock, fed, flushed = 0.0, 0, False
    while True:
        if out is not None and (out[2] <= clock or fed >= len(audio)):  # no audio left: time jumps to it
            job, result, arrived = out
            out, clock = None, max(clock, arrived)
            record.take(job, result, session.complete(job, result), arrived)
        if out is None and (job := session.next_job()) is not None:
            out = (job, run_windows(engine, [job])[0], clock + cost)
        elif fed < len(audio):
            session.feed(audio[fed : fed + FRAME])
            fed += FRAME
            clock = max(clock, fed / SAMPLE_RATE)
        elif not flushed:
            session.flush()
            flushed = True
        elif out is None:
            return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default=",".join(SETS))
    parser.add_argument("--cost", type=float, default=0.25, help="seconds of audio a decode takes")
    parser.add_argument("--phases", default="0", help="seconds of silence before each set, one replay each")
    parser.add_argument("--config", default="", help="StreamConfig fields, e.g. 'max_hold=None,hold_margin=0.8'")
    parser.add_argument("--trace", default=None, metavar="FROM:TO", help="print the decodes that end in this span")
    parser.add_argument("--late", type=float, default=None, metavar="SECONDS",
                        help="print each word committed this long or longer after it ended")
    parser.add_argument("--save", type=Path, default=None, help="write each replay's finals to DIR/SET-PHASE.txt")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="torch threads")
    parser.add_argument("--compute-type", default="int8", help="as serve's --compute-type (int8, int8_bfloat16, ...)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    overrides = config_overrides(args.config)
    config = StreamConfig(**overrides)
    trace = None
    if args.trace:
        lo, hi = args.trace.split(":")
        trace = (float(lo), float(hi))
    engine = Engine(load_model("tiny.en"), max_batch=8, compute_type=args.compute_type)
    print(f"decode cost {args.cost:g} s, {args.compute_type}, config {overrides or 'default'}")
    errors = words = 0
    latency: dict[str, list[float]] = {}
    committed: Counter[str] = Counter()  # normalised words by the kind of decode that committed them
    blamed: Counter[str] = Counter()  # ... that are wrong (substituted or inserted; left out: the word after)
    for name in args.sets.split(","):
        prog = program(name.split("+"))  # a+b: one stream of both, as bench/load.py's clients send
        human = prog.human()
        refs = reference_words(engine, prog)
        line = f"{name}: {len(human)} words"
        for phase in (float(p) for p in args.phases.split(",")):
            silence = np.zeros(round(phase * SAMPLE_RATE), np.float32)
            shifted = [RefWord(r.key, r.start + phase, r.end + phase) for r in refs]
            record = Replay(shifted, trace=trace, late=args.late)
            replay(engine, np.concatenate([silence, prog.audio]), config, args.cost, record)
            hypothesis = normalize_words(" ".join(record.finals))
            changed, missing = wrong_words(human, hypothesis)
            wrong = len(changed) + len(missing)  # word_errors(human, hypothesis)
            errors, words = errors + wrong, words + len(human)
            kinds = (record.kinds + ["final"] * len(hypothesis))[: len(hypothesis)]  # (numbers joined across finals)
            committed.update(kinds)
            blamed.update(kinds[j] for j in changed)
            blamed.update(kinds[j] if j < len(kinds) else "final" for j in missing)
            for kind, values in record.latency.items():
                latency.setdefault(kind, []).extend(values)
            if args.save is not None:
                args.save.mkdir(parents=True, exist_ok=True)
                (args.save / f"{name}-{phase:g}.txt").write_text("\n".join(record.finals) + "\n")
            line += f"; phase {phase:g}: WER {100 * wrong / len(human):.1f}% ({wrong})"
        print(line, flush=True)
    every = [x for values in latency.values() for x in values]
    print(f"all: {errors} errors of {words} words (WER {100 * errors / words:.2f}%); committed latency median "
          f"{statistics.median(every):.2f} s p90 {pct(every, 90):.2f} s")
    for kind in ("partial", "settle", "final"):
        values = latency.get(kind, [])
        if values:
            print(f"  committed by a {kind} decode: {len(values)} words, median {statistics.median(values):.2f} s "
                  f"p90 {pct(values, 90):.2f} s max {max(values):.2f} s; {blamed[kind]} errors in its "
                  f"{committed[kind]} normalised words")


if __name__ == "__main__":
    main()
