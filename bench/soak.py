"""Load and soak: N clients streaming at 1x to a real daemon for M minutes (loopback only).

    python bench/soak.py [--clients 4] [--minutes 10] [--url ws://HOST:PORT/v1/stream --pid PID]

Starts ``streamer serve --port 0`` in its own process (unless ``--url``/``--pid`` name a running one).
Each client streams the fixture speech (bench/speech.py's librivox and cards sets, 33 s, looped, each
client starting at a different point) in real time in 20 ms frames for M minutes, then sends ``end``. While it runs, the
daemon's RSS, open file descriptors, asyncio task count and loop lag are sampled every 10 s.
Prints committed-word latency percentiles (from the final's arrival and the word's end time in the
audio sent), the real-time factor, RSS at start and end and its slope (least squares, MiB per hour,
over the second half of the run), file descriptors, tasks, protocol errors and handler exceptions,
and per client the words lost: runs of 3+ reference words of the audio sent (offline transcription of
each loop) that no final contains, and the words invented: runs of 3+ committed words with no reference
word under them (a phrase made up, or committed twice).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import time
from pathlib import Path

import numpy as np
from load import metrics, start_daemon
from speech import RefWord, normalize_words, pct, program, reference_words
from websockets.asyncio.client import ClientConnection, connect

from streamer import SAMPLE_RATE
from streamer.engine import Engine
from streamer.model.loading import load_model
from streamer.textnorm import word_errors


def sample_process(pid: int) -> tuple[float, int]:
    status = Path(f"/proc/{pid}/status").read_text()
    rss_kib = int(re.search(r"VmRSS:\s+(\d+)", status).group(1))  # type: ignore[union-attr]
    return rss_kib / 1024, len(list(Path(f"/proc/{pid}/fd").iterdir()))


async def client(url: str, audio: np.ndarray, offset: int, seconds: float, texts: list[str]) -> list[float]:
    """Stream ``seconds`` of the looped audio from ``offset``; returns the committed-word latencies."""
    total = int(seconds * SAMPLE_RATE)
    looped = np.concatenate([audio[offset:], np.tile(audio, total // len(audio) + 1)])[:total]
    pcm = (np.clip(looped, -1, 1) * 32767).astype("<i2").tobytes()
    latencies: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start"}))
        assert json.loads(await ws.recv())["type"] == "ready"
        began = time.monotonic()

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "final":
                    now = time.monotonic() - began
                    latencies.extend(now - w["end"] for w in message["words"])
                    texts.append(message["text"])

        reader = asyncio.create_task(read())
        await send_paced(ws, pcm, began, 2 * SAMPLE_RATE // 50)  # 20 ms frames
        await reader
    return latencies


async def send_paced(ws: ClientConnection, pcm: bytes, began: float, step: int) -> None:
    """pcm_s16le 16 kHz in frames of ``step`` bytes, each sent when its audio is due (1x from
    ``began``), then ``end``."""
    for i in range(0, len(pcm), step):
        delay = began + i / 2 / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(pcm[i : i + step])
    await ws.send(json.dumps({"type": "end"}))


async def run(args: argparse.Namespace, url: str, pid: int, audio: np.ndarray):
    samples: list[tuple[float, float, int, float]] = []  # (t, rss MiB, fds, tasks)
    seconds = args.minutes * 60
    finals: list[list[str]] = [[] for _ in range(args.clients)]
    stride = len(audio) // max(1, args.clients)
    tasks = [
        asyncio.create_task(client(url, audio, (n * stride) % len(audio), seconds, finals[n]))
        for n in range(args.clients)
    ]
    began = time.monotonic()
    while not all(t.done() for t in tasks):
        rss, fds = sample_process(pid)
        m = await asyncio.to_thread(metrics, url)
        samples.append((time.monotonic() - began, rss, fds, m.get("streamer_tasks", float("nan"))))
        await asyncio.wait(tasks, timeout=10)
    results = await asyncio.gather(*tasks, return_exceptions=True)
    return results, samples, await asyncio.to_thread(metrics, url), finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--url", default=None)
    parser.add_argument("--pid", type=int, default=None, help="the running daemon's process id (with --url)")
    parser.add_argument("--save", type=Path, default=None, help="write each client's finals to DIR/clientN.txt")
    args = parser.parse_args()
    prog = program(["librivox", "cards"])
    refs = reference_words(Engine(load_model("tiny.en"), compute_type="int8"), prog)
    audio = prog.audio
    proc = None
    log: list[str] = []
    url, pid = args.url, args.pid
    if url is None:
        proc, url = start_daemon(["--max-sessions", str(args.clients)], log)
        pid = proc.pid
    assert url is not None and pid is not None
    try:
        results, samples, final_metrics, finals = asyncio.run(run(args, url, pid, audio))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(timeout=60)
    exceptions = [r for r in results if isinstance(r, BaseException)]
    latencies = [x for r in results if not isinstance(r, BaseException) for x in r]
    tracebacks = sum("Traceback" in line for line in log) if proc is not None else float("nan")
    half = [s for s in samples if s[0] >= samples[-1][0] / 2] if samples else []
    slope = float("nan")
    if len(half) >= 3:
        t = np.array([s[0] for s in half]) / 3600
        slope = float(np.polyfit(t, np.array([s[1] for s in half]), 1)[0])
    print(f"{args.clients} client(s) at 1x for {args.minutes:g} min over WebSocket ({len(audio) / SAMPLE_RATE:.0f} s "
          f"of fixture speech, looped)")
    print(f"committed-word latency: median {statistics.median(latencies):.2f} s, p90 {pct(latencies, 90):.2f} s, "
          f"p99 {pct(latencies, 99):.2f} s, max {max(latencies):.2f} s ({len(latencies)} words)")
    print(f"real-time factor {final_metrics.get('streamer_real_time_factor', float('nan')):.3f}; "
          f"loop lag max {1000 * final_metrics.get('streamer_loop_lag_max_seconds', float('nan')):.0f} ms")
    print(f"RSS {samples[0][1]:.0f} MiB at start, {samples[-1][1]:.0f} MiB at the end, slope over the second half "
          f"{slope:+.1f} MiB/hour; open fds {samples[0][2]} -> {samples[-1][2]}; asyncio tasks "
          f"{samples[0][3]:.0f} -> {samples[-1][3]:.0f} (max {max(s[3] for s in samples):.0f})")
    errors = final_metrics.get("streamer_errors_total", 0.0)
    print(f"protocol errors {errors:.0f}; client exceptions {len(exceptions)}; "
          f"tracebacks in the daemon's log {tracebacks}")
    timeline = [f"{t / 60:.0f}m {rss:.0f}" for t, rss, _, _ in samples[:: max(1, len(samples) // 10)]]
    print("RSS MiB over time:", ", ".join(timeline))
    stride = len(audio) // max(1, args.clients)
    for n, texts in enumerate(finals):
        if args.save is not None:
            args.save.mkdir(parents=True, exist_ok=True)
            (args.save / f"client{n}.txt").write_text("\n".join(texts) + "\n")
        expected = expected_words(refs, (n * stride) % len(audio) / SAMPLE_RATE, args.minutes * 60,
                                  len(audio) / SAMPLE_RATE)
        got = normalize_words(" ".join(texts))
        lost, invented = edit_runs(expected, got)
        print(f"client {n}: {len(got)} words committed, {len(expected)} in the reference of the audio sent; "
              f"WER {100 * word_errors(expected, got) / max(1, len(expected)):.1f}%; lost: "
              f"{sum(len(r.split()) for r in lost)} words in {len(lost)} run(s) of 3+; invented: "
              f"{sum(len(r.split()) for r in invented)} words in {len(invented)} run(s) of 3+")
        for run_ in lost:
            print(f"    lost: {run_}")
        for run_ in invented:
            print(f"    invented: {run_}")


def edit_runs(expected: list[str], got: list[str], min_run: int = 3) -> tuple[list[str], list[str]]:
    """Runs of ``min_run`` or more consecutive words that a word-level Levenshtein alignment deletes from
    the reference (a phrase or sentence dropped, as opposed to a word misheard) and inserts (a phrase
    invented, or committed twice): (lost, invented)."""
    n, m = len(expected), len(got)
    cost = np.zeros((n + 1, m + 1), dtype=np.int32)
    cost[:, 0] = np.arange(n + 1)
    cost[0, :] = np.arange(m + 1)
    for i in range(1, n + 1):
        row, above, word = cost[i], cost[i - 1], expected[i - 1]
        same = np.fromiter((h == word for h in got), dtype=bool, count=m)
        diagonal = above[:-1] + ~same
        for j in range(1, m + 1):
            row[j] = min(above[j] + 1, row[j - 1] + 1, diagonal[j - 1])
    runs: dict[str, list[str]] = {"lost": [], "invented": []}
    run: list[str] = []
    kind = "lost"
    i, j = n, m

    def close() -> None:
        if len(run) >= min_run:
            runs[kind].append(" ".join(reversed(run)))
        run.clear()

    while i > 0 or j > 0:
        if i > 0 and j > 0 and cost[i, j] == cost[i - 1, j - 1] + (expected[i - 1] != got[j - 1]):
            close()
            i, j = i - 1, j - 1
        elif i > 0 and cost[i, j] == cost[i - 1, j] + 1:
            if kind != "lost":
                close()
                kind = "lost"
            run.append(expected[i - 1])  # deleted: no final has it
            i -= 1
        else:
            if kind != "invented":
                close()
                kind = "invented"
            run.append(got[j - 1])  # inserted: no reference word under it
            j -= 1
    close()
    return runs["lost"][::-1], runs["invented"][::-1]


def expected_words(refs: list[RefWord], offset: float, seconds: float, loop: float) -> list[str]:
    """The reference words of the looped audio a client sent: from ``offset`` for ``seconds``."""
    words, t = [], -offset  # stream time of the current loop's start
    while t < seconds:
        words += [r.key for r in refs if r.start + t >= 0 and r.end + t <= seconds]
        t += loop
    return words


if __name__ == "__main__":
    main()
