"""The host's share of serving streams: Python work per audio frame and per decode, without the model.

    python bench/host.py [--sessions 64] [--frame 0.1] [--sets librivox] [--repeat 3]

On a GPU the daemon is limited by its host (bench/gpu.sh's profiles): one event loop takes every
client's frames (decode to float, VAD, ring buffer, whether a decode is due), and one inference thread, besides
launching the model, turns each result into events (loop check, agreement, commits) and picks the
session's next window. This measures both paths on this machine's CPU, with the model's part taken out:

- capture: ``PcmDecoder.decode`` + ``StreamSession.feed`` + ``due`` for every frame of every session,
  as the daemon's event loop runs them (the job itself is made on the inference thread);
- results: the decodes of one stream are recorded once (the bundled model, int8, inline), then
  replayed into fresh sessions: ``complete`` + ``next_job`` per decode, as the inference thread runs
  them after each batch;
- daemon (``--clients N``): a real ``streamer serve`` takes N WebSocket clients streaming silence at 1x
  (nothing to decode): its CPU time per frame is the whole capture path, the WebSocket layer and the
  event loop included.

Prints microseconds per frame and per decode, and what one core sustains: frames per second (clients
at 1x sending ``--frame`` s frames) and decodes per second.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from speech import program

from streamer.decoding.decode import DecodingResult
from streamer.engine import Engine
from streamer.model.loading import load_model
from streamer.streaming.inference import run_windows
from streamer.streaming.session import StreamSession
from streamer.streaming.sources import PcmDecoder


def capture(pcm: bytes, frame_bytes: int, sessions: int) -> float:
    """Seconds per frame of the capture path, over ``sessions`` sessions fed in turn."""
    streams = [(PcmDecoder(), StreamSession()) for _ in range(sessions)]
    frames = 0
    began = time.perf_counter()
    for offset in range(0, len(pcm), frame_bytes):
        chunk = pcm[offset : offset + frame_bytes]
        for decoder, session in streams:
            session.feed(decoder.decode(chunk))
            session.due()  # what a live stream asks per frame (its job is made on the inference thread)
            frames += 1
    return (time.perf_counter() - began) / frames


def record(engine: Engine, audio: np.ndarray, chunk: int) -> list[DecodingResult]:
    """Every decode of one stream of ``audio`` fed in ``chunk``-sample pieces, in order."""
    session, results = StreamSession(), []

    def drain() -> None:
        while (job := session.next_job()) is not None:
            result = run_windows(engine, [job])[0]
            results.append(result)
            session.complete(job, result)

    for i in range(0, len(audio), chunk):
        session.feed(audio[i : i + chunk])
        drain()
    session.flush()
    drain()
    return results


def replay(audio: np.ndarray, chunk: int, results: list[DecodingResult], sessions: int) -> float:
    """Seconds per decode of ``complete`` + ``next_job``: ``sessions`` fresh sessions take the same audio
    and the recorded results (the jobs come out the same, since they depend only on audio and results)."""
    spent = 0.0
    for _ in range(sessions):
        session, played = StreamSession(), iter(results)
        for i in range(0, len(audio), chunk):
            session.feed(audio[i : i + chunk])
            spent += _answer(session, played)
        session.flush()
        spent += _answer(session, played)
    return spent / (sessions * len(results))


def _answer(session: StreamSession, played: Iterator[DecodingResult]) -> float:
    """Seconds spent handing ``session`` its due jobs' recorded results (complete, then the next job)."""
    t = time.perf_counter()
    job = session.next_job()
    took = time.perf_counter() - t
    while job is not None:
        result = next(played)
        t = time.perf_counter()
        session.complete(job, result)
        job = session.next_job()
        took += time.perf_counter() - t
    return took


def daemon(clients: int, seconds: float, frame: float, procs: int) -> float:
    """CPU seconds a real daemon spends per frame of ``clients`` streams of silence at 1x."""
    from load import _worker, start_daemon

    proc, url = start_daemon(["--max-sessions", str(clients)])
    try:
        pcm = bytes(2 * int(seconds * 16000))
        frame_bytes = 2 * int(frame * 16000)
        began = time.time() + 2.0 + procs * 0.5
        starts = [began + 2.0 * i / clients for i in range(clients)]
        before = _cpu_seconds(proc.pid)
        with mp.get_context("spawn").Pool(procs) as pool:
            outcomes = pool.map(_worker, [(url, pcm, frame_bytes, starts[p::procs], {}) for p in range(procs)])
        spent = _cpu_seconds(proc.pid) - before
    finally:
        proc.terminate()
        proc.wait(60)
    errors = [c["error"] for group in outcomes for c in group if c["error"]]
    if errors:
        raise SystemExit(f"{len(errors)} client(s) failed, e.g. {errors[0]}")
    return spent / (clients * -(-len(pcm) // frame_bytes))


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sessions", type=int, default=64)
    parser.add_argument("--frame", type=float, default=0.1, help="seconds of audio per client frame")
    parser.add_argument("--sets", default="librivox", help="speech sets every session hears (bench/speech.py)")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each path; the median is printed")
    parser.add_argument("--clients", type=int, default=0, help="also drive a real daemon with this many clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="with --clients: seconds each client streams")
    parser.add_argument("--procs", type=int, default=2, help="with --clients: client processes")
    args = parser.parse_args()
    prog = program(args.sets.split(","))
    pcm = (np.clip(prog.audio, -1, 1) * 32767).astype("<i2").tobytes()
    chunk = int(args.frame * 16000)
    per_frame = statistics.median(capture(pcm, 2 * chunk, args.sessions) for _ in range(args.repeat))
    print(f"capture: {1e6 * per_frame:.1f} us per {args.frame:g} s frame ({args.sessions} sessions): one core "
          f"takes {1 / per_frame:.0f} frames/s, {args.frame / per_frame:.0f} clients at 1x")
    engine = Engine(load_model("tiny.en"), max_batch=1, compute_type="int8")
    audio = PcmDecoder().decode(pcm)
    results = record(engine, audio, chunk)
    per_decode = statistics.median(replay(audio, chunk, results, args.sessions) for _ in range(args.repeat))
    print(f"results: {1e6 * per_decode:.1f} us per decode (complete + next_job, {len(results)} decodes a "
          f"stream, {args.sessions} streams): one core takes {1 / per_decode:.0f} decodes/s")
    if args.clients:
        per_frame = daemon(args.clients, args.seconds, args.frame, args.procs)
        print(f"daemon: {1e6 * per_frame:.1f} us of CPU per {args.frame:g} s frame ({args.clients} WebSocket "
              f"clients streaming silence): one core takes {args.frame / per_frame:.0f} clients at 1x")


if __name__ == "__main__":
    main()
