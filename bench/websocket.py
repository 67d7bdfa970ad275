"""WebSocket benchmark: committed-word latency of N clients streaming at 1x to a real daemon.

    python bench/websocket.py [--clients 1] [--frame 0.02] [--url ws://HOST:PORT/v1/stream]

Starts ``streamer serve --port 0`` in its own process (unless ``--url`` names a running one), then
N clients each stream the joined fixture audio (bench/streaming.py) in real time as pcm_s16le frames.
A word's latency is the time its final arrives at the client minus the time the client sent the end
of that word (its reference end time, from an offline alignment). Prints median and p90 per client and
over all clients, the partial latency, WER of each client's finals, and the daemon's /metrics summary.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import subprocess
import sys
import time
import urllib.request
from dataclasses import replace

import numpy as np
from streaming import RefWord, mark_seen, normalize_words, pct, reference_words, truth, wer
from websockets.asyncio.client import ClientConnection, connect

from streamer import SAMPLE_RATE
from streamer.engine import Engine
from streamer.model.loading import load_model


async def client(url: str, audio: np.ndarray, refs: list[RefWord], frame_s: float, began: float) -> list[str]:
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    step = 2 * int(frame_s * SAMPLE_RATE)
    finals: list[str] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "pcm_s16le"}))
        assert json.loads(await ws.recv())["type"] == "ready"

        async def read() -> None:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] in ("partial", "final"):
                    now = time.monotonic() - began
                    for w in message["words"]:
                        mark_seen(refs, w["word"], w["start"], now, message["type"] == "final")
                if message["type"] == "final":
                    finals.append(message["text"])

        reader = asyncio.create_task(read())
        await send_paced(ws, pcm, began, step)
        await reader
    return finals


async def send_paced(ws: ClientConnection, pcm: bytes, began: float, step: int) -> None:
    """pcm_s16le 16 kHz in frames of ``step`` bytes, each sent when its audio is due (1x from
    ``began``), then ``end``."""
    for i in range(0, len(pcm), step):
        delay = began + i / 2 / SAMPLE_RATE - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        await ws.send(pcm[i : i + step])
    await ws.send(json.dumps({"type": "end"}))


def start_daemon(*options: str) -> tuple[subprocess.Popen[str], str]:
    """``streamer serve --port 0 OPTIONS`` in its own process, once it is ready: (process, its URL)."""
    command = [sys.executable, "-m", "streamer.cli", "serve", "--port", "0", *options]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    for line in proc.stderr:
        if m := re.search(r"ready on (ws://\S+)", line):
            return proc, m.group(1)
    raise SystemExit("the daemon exited before it was ready")


def metrics(url: str) -> dict[str, float]:
    """The daemon's /metrics samples by name (labelled samples of one name summed)."""
    http = url.replace("ws://", "http://").replace("/v1/stream", "/metrics")
    out: dict[str, float] = {}
    for line in urllib.request.urlopen(http, timeout=10).read().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{")[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


async def run(args: argparse.Namespace, url: str, audio: np.ndarray, refs: list[RefWord]):
    per_client = [[replace(r) for r in refs] for _ in range(args.clients)]
    began = time.monotonic() + 0.5
    finals = await asyncio.gather(*(client(url, audio, r, args.frame, began) for r in per_client))
    return per_client, finals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=1)
    parser.add_argument("--frame", type=float, default=0.02, help="seconds of audio per WebSocket frame")
    parser.add_argument("--gap", type=float, default=1.0)
    parser.add_argument("--busy-encoder-seconds", type=float, default=20.0, help="passed to streamer serve")
    parser.add_argument("--url", default=None, help="a running daemon's ws://.../v1/stream (default: start one)")
    args = parser.parse_args()
    engine = Engine(load_model("tiny.en"), compute_type="int8")
    audio, refs = reference_words(engine, args.gap)
    del engine
    proc = None
    url = args.url
    if url is None:
        proc, url = start_daemon(
            "--max-sessions", str(args.clients), "--busy-encoder-seconds", str(args.busy_encoder_seconds)
        )
    try:
        per_client, finals = asyncio.run(run(args, url, audio, refs))
        summary = metrics(url)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    human = truth()
    print(f"{args.clients} client(s) at 1x over WebSocket, {args.frame * 1000:.0f} ms frames, "
          f"{len(audio) / SAMPLE_RATE:.1f} s of audio each")
    all_final: list[float] = []
    all_partial: list[float] = []
    for n, (rs, texts) in enumerate(zip(per_client, finals, strict=True)):
        final_lat = [r.final_seen - r.end for r in rs if r.final_seen is not None]
        partial_lat = [r.partial_seen - r.end for r in rs if r.partial_seen is not None]
        all_final += final_lat
        all_partial += partial_lat
        print(f"client {n}: committed median {statistics.median(final_lat):.2f} s p90 {pct(final_lat, 90):.2f} s "
              f"({len(final_lat)}/{len(rs)} words); partial median {statistics.median(partial_lat):.2f} s; "
              f"WER vs human {100 * wer(human, normalize_words(' '.join(texts))):.1f}%")
    print(f"all clients: committed latency median {statistics.median(all_final):.2f} s, "
          f"p90 {pct(all_final, 90):.2f} s; partial median {statistics.median(all_partial):.2f} s, "
          f"p90 {pct(all_partial, 90):.2f} s")
    print("client 0 finals:", " ".join(finals[0]))
    keys = ("streamer_real_time_factor", "streamer_inference_busy_seconds", "streamer_loop_lag_max_seconds")
    print("daemon:", ", ".join(f"{k} {summary[k]:.3g}" for k in keys if k in summary))


if __name__ == "__main__":
    main()
