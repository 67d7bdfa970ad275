"""Load generator: N WebSocket clients streaming speech at 1x to a real daemon, from several processes.

    python bench/load.py --clients 6 [--procs 2] [--sets librivox,cards] [--frame 0.05] [--stagger 3]
    python bench/load.py --clients 1,2,4,6,8                      # a curve: one run per count
    python bench/load.py --url ws://HOST:PORT/v1/stream --pid PID  # against a running daemon
    python bench/load.py --clients 64,256 --procs 14 --serve "--device cuda --max-batch 256"

Starts ``streamer serve --port 0`` (with ``--serve`` options) in its own process, once for the whole
curve, unless ``--url`` names a running one. Client processes (``--procs``, spawned) each run their
share of the clients on one event loop; every client streams the program (``--sets``, joined with 1 s
gaps, bench/speech.py) in real time as pcm_s16le frames of ``--frame`` seconds, the clients starting
spread over ``--stagger`` seconds, then sends ``end`` and reads until ``done``.

A word's latency is the time its final (or, for partials, its first hypothesis) reaches the client
minus the time the client sent the end of that word (reference times from an offline alignment). Prints
per client and over all clients: committed median and p90, partial median, WER of the finals against
the human transcripts; the daemon's real-time factor, the share of wall time its inference workers were
busy, its hypothesis lag (a decode's result minus the arrival of the last audio it heard), peak RSS,
and the GPU's utilisation (nvidia-smi, when there is one). ``--no-words`` skips the word figures
(random-weight models say nothing meaningful); ``--json FILE`` saves every figure.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import replace
from pathlib import Path

import numpy as np
from speech import Program, RefWord, mark_seen, normalize_words, pct, program, reference_words

from streamer import SAMPLE_RATE
from streamer.textnorm import word_errors

# -- client processes -------------------------------------------------------------------------------


async def _client(url: str, pcm: bytes, frame_bytes: int, began: float, headers: dict[str, str]) -> dict:
    """Stream ``pcm`` paced from ``began`` (time.time()); returns what arrived, with arrival times
    relative to ``began``."""
    from websockets.asyncio.client import connect

    words: list[tuple[str, str, float, float]] = []  # (kind, word, start, arrival)
    finals: list[str] = []
    error = None
    try:
        delay = began - time.time()
        if delay > 0:
            await asyncio.sleep(delay)
        async with connect(url, max_size=None, additional_headers=headers, open_timeout=60) as ws:
            start = {"type": "start", "sample_rate": SAMPLE_RATE, "encoding": "pcm_s16le", "language": "en"}
            await ws.send(json.dumps(start))
            ready = json.loads(await ws.recv())
            if ready.get("type") != "ready":
                return {"words": [], "finals": [], "error": f"refused: {ready}"}

            async def read() -> None:
                async for raw in ws:
                    message = json.loads(raw)
                    kind = message["type"]
                    if kind in ("partial", "final"):
                        now = time.time() - began
                        words.extend((kind, w["word"], w["start"], now) for w in message["words"])
                        if kind == "final":
                            finals.append(message["text"])
                    elif kind == "done":
                        return
                    elif kind == "error":
                        raise RuntimeError(message)

            reader = asyncio.create_task(read())
            for i in range(0, len(pcm), frame_bytes):
                due = began + i / 2 / SAMPLE_RATE - time.time()
                if due > 0:
                    await asyncio.sleep(due)
                await ws.send(pcm[i : i + frame_bytes])
                if reader.done():
                    break
            await ws.send(json.dumps({"type": "end"}))
            await reader
    except Exception as e:  # reported per client, counted in the summary
        error = f"{type(e).__name__}: {e}"
    return {"words": words, "finals": finals, "error": error}


def _worker(args: tuple[str, bytes, int, list[float], dict[str, str]]) -> list[dict]:
    url, pcm, frame_bytes, starts, headers = args

    async def run() -> list[dict]:
        return await asyncio.gather(*(_client(url, pcm, frame_bytes, t, headers) for t in starts))

    return asyncio.run(run())


# -- the daemon ------------------------------------------------------------------------------------


def start_daemon(options: list[str], log: list[str] | None = None) -> tuple[subprocess.Popen[str], str]:
    """``streamer serve --port 0 OPTIONS`` in its own process, once it is ready: (process, its URL). Its
    log goes on to this process's stderr (and into ``log``)."""
    command = [sys.executable, "-m", "streamer", "serve", "--port", "0", *options]
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    stderr = proc.stderr
    assert stderr is not None

    def relay(line: str) -> None:
        sys.stderr.write(line)
        if log is not None:
            log.append(line)

    for line in stderr:
        relay(line)
        if m := re.search(r"ready on (ws://\S+)", line):
            threading.Thread(target=lambda: [relay(x) for x in stderr], daemon=True).start()
            return proc, m.group(1)
    raise SystemExit("the daemon exited before it was ready")


def metrics(url: str) -> dict[str, float]:
    """The daemon's /metrics samples by name (labelled samples of one name summed; buckets by bound)."""
    http = re.sub(r"^ws", "http", url).split("/v1/")[0] + "/metrics"
    out: dict[str, float] = {}
    for line in urllib.request.urlopen(http, timeout=30).read().decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            if "_bucket{" in name:
                name = name.split("{")[0] + "@" + name.split('le="')[1].rstrip('"}')
            else:
                name = name.split("{")[0]
            out[name] = out.get(name, 0.0) + float(value)
    return out


def histogram_quantile(m: dict[str, float], name: str, q: float, before: dict[str, float] | None = None) -> float:
    """Upper bound of the bucket holding quantile ``q`` of a /metrics histogram (of what was observed
    since ``before``, when given)."""
    buckets = sorted(
        ((float("inf") if k.endswith("+Inf") else float(k.split("@")[1]), v - (before or {}).get(k, 0.0))
         for k, v in m.items() if k.startswith(name + "_bucket@")),
    )
    if not buckets or buckets[-1][1] == 0:
        return float("nan")
    total = buckets[-1][1]
    return next(bound for bound, count in buckets if count >= q * total)


class Sampler:
    """Samples the daemon's RSS and the GPU's utilisation every ``period`` seconds while a run goes on."""

    def __init__(self, pid: int | None, period: float = 1.0):
        self.pid, self.period = pid, period
        self.rss: list[float] = []
        self.gpu: list[float] = []
        self.gpu_memory: list[float] = []  # MiB
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._smi = shutil.which("nvidia-smi")

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            if self.pid is not None:
                status = Path(f"/proc/{self.pid}/status")
                if status.exists():
                    found = re.search(r"VmRSS:\s+(\d+)", status.read_text())
                    if found:
                        self.rss.append(int(found.group(1)) / 1024)
            if self._smi:
                out = subprocess.run([self._smi, "--query-gpu=utilization.gpu,memory.used",
                                      "--format=csv,noheader,nounits"], capture_output=True, text=True).stdout
                if out.strip():
                    utilisation, memory = out.strip().splitlines()[0].split(",")
                    self.gpu.append(float(utilisation))
                    self.gpu_memory.append(float(memory))

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# -- one run ---------------------------------------------------------------------------------------


def profile(pid: int, seconds: float, delay: float, out: Path) -> subprocess.Popen[bytes] | None:
    """py-spy (when installed) samples the daemon for ``seconds`` after ``delay``, into ``out`` (collapsed
    stacks, one line per stack with its sample count, every thread)."""
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        print("py-spy is not installed: no profile", file=sys.stderr)
        return None
    record = f"{spy} record --nonblocking --threads --format raw -d {seconds:g} -o {out} --pid {pid}"
    command = f"sleep {delay:.1f} && {record}"
    return subprocess.Popen(["sh", "-c", command], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run(args: argparse.Namespace, n: int, prog: Program, refs: list[RefWord], url: str, pid: int | None) -> dict:
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    pcm = (np.clip(prog.audio, -1, 1) * 32767).astype("<i2").tobytes()
    frame_bytes = 2 * int(args.frame * SAMPLE_RATE)
    began = time.time() + 2.0 + args.procs * 0.5  # spawned processes need a moment to start
    starts = [began + (args.stagger * i / max(1, n - 1) if n > 1 else 0.0) for i in range(n)]
    shares = [starts[p :: args.procs] for p in range(args.procs)]
    before = metrics(url)
    t0 = time.monotonic()
    spy = None
    if args.profile and pid is not None and n == args.profile_clients:
        spy = profile(pid, args.profile, began - time.time() + args.stagger + 5, args.profile_dir / f"daemon-{n}.txt")
    with Sampler(pid) as sampler, mp.get_context("spawn").Pool(args.procs) as pool:
        outcomes = pool.map(_worker, [(url, pcm, frame_bytes, s, headers) for s in shares if s])
    wall = time.monotonic() - t0
    after = metrics(url)
    if spy is not None:
        spy.wait(60)
    clients = [c for group in outcomes for c in group]  # arrival times are on each client's own clock
    result: dict = {"clients": n, "audio_seconds": prog.seconds, "wall": wall, "errors": [c["error"] for c in clients
                                                                                          if c["error"]]}
    busy = after.get("streamer_inference_busy_seconds", 0.0) - before.get("streamer_inference_busy_seconds", 0.0)
    audio = after.get("streamer_audio_seconds_total", 0.0) - before.get("streamer_audio_seconds_total", 0.0)
    workers = max(1.0, after.get("streamer_inference_workers", 1.0))
    result["workers"] = workers
    result["busy_share"] = busy / wall / workers  # of the workers' time
    result["rtf"] = busy / max(1e-9, audio)
    result["hypothesis_lag_p50"] = histogram_quantile(after, "streamer_hypothesis_lag_seconds", 0.5, before)
    result["hypothesis_lag_p90"] = histogram_quantile(after, "streamer_hypothesis_lag_seconds", 0.9, before)
    windows = after.get("streamer_inference_windows", 0.0) - before.get("streamer_inference_windows", 0.0)
    batches = after.get("streamer_inference_batches", 0.0) - before.get("streamer_inference_batches", 0.0)
    result["windows"] = windows
    result["batch_mean"] = windows / max(1.0, batches)
    result["loop_lag_max"] = after.get("streamer_loop_lag_max_seconds", float("nan"))
    result["rss_peak_mib"] = max(sampler.rss, default=float("nan"))
    result["gpu_util_mean"] = statistics.fmean(sampler.gpu) if sampler.gpu else float("nan")
    result["gpu_memory_peak_mib"] = max(sampler.gpu_memory, default=float("nan"))
    if args.words:
        human = prog.human()
        finals_all, partials_all, per_client = [], [], []
        late: dict[tuple[float, str], list[float]] = {}  # (start, word): latencies over args.late
        for c in clients:
            mine = [replace(r) for r in refs]
            for kind, word, start, arrival in c["words"]:
                mark_seen(mine, word, start, arrival, kind == "final")
            final_lat = [r.final_seen - r.end for r in mine if r.final_seen is not None]
            for r in mine:
                if args.late and r.final_seen is not None and r.final_seen - r.end > args.late:
                    late.setdefault((r.start, r.key), []).append(r.final_seen - r.end)
            partial_lat = [r.partial_seen - r.end for r in mine if r.partial_seen is not None]
            got = normalize_words(" ".join(c["finals"]))
            wer = word_errors(human, got) / max(1, len(human))
            per_client.append({"median": pct(final_lat, 50), "p90": pct(final_lat, 90), "wer": wer,
                               "matched": len(final_lat), "words": len(mine), "finals": " ".join(c["finals"])})
            finals_all += final_lat
            partials_all += partial_lat
        result["per_client"] = per_client
        result["committed_p50"] = pct(finals_all, 50)
        result["committed_p90"] = pct(finals_all, 90)
        result["partial_p50"] = pct(partials_all, 50)
        result["wer_mean"] = statistics.fmean(c["wer"] for c in per_client) if per_client else float("nan")
        result["wer_max"] = max((c["wer"] for c in per_client), default=float("nan"))
        result["finals_client0"] = " ".join(clients[0]["finals"]) if clients else ""
        result["late"] = [{"start": t, "word": w, "latencies": sorted(v)} for (t, w), v in sorted(late.items())]
    return result


def report(r: dict, verbose: bool) -> None:
    print(f"{r['clients']} client(s), {r['audio_seconds']:.0f} s of speech each at 1x, wall {r['wall']:.0f} s: "
          f"inference busy {100 * r['busy_share']:.0f}% of {r.get('workers', 1):.0f} worker(s)' wall time, "
          f"real-time factor {r['rtf']:.3f}, "
          f"{r['windows']:.0f} windows in batches of {r['batch_mean']:.1f} on average, hypothesis lag "
          f"p50 <= {r['hypothesis_lag_p50']:g} s p90 <= {r['hypothesis_lag_p90']:g} s, daemon RSS peak "
          f"{r['rss_peak_mib']:.0f} MiB, GPU utilisation {r['gpu_util_mean']:.0f}% (memory peak "
          f"{r['gpu_memory_peak_mib']:.0f} MiB), event-loop lag max "
          f"{1000 * r['loop_lag_max']:.0f} ms, client errors {len(r['errors'])}")
    for e in r["errors"][:5]:
        print("   error:", e)
    if "committed_p50" in r:
        print(f"   committed latency median {r['committed_p50']:.2f} s p90 {r['committed_p90']:.2f} s; partial "
              f"median {r['partial_p50']:.2f} s; WER vs human mean {100 * r['wer_mean']:.1f}% "
              f"max {100 * r['wer_max']:.1f}%")
        if verbose:
            for i, c in enumerate(r["per_client"]):
                print(f"   client {i}: committed median {c['median']:.2f} s p90 {c['p90']:.2f} s "
                      f"({c['matched']}/{c['words']} words), WER {100 * c['wer']:.1f}%")
        for w in r.get("late", []):
            print(f"   late: {w['word']!r} at {w['start']:.1f} s, {len(w['latencies'])} client(s): "
                  + " ".join(f"{x:.1f}" for x in w["latencies"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", default="1", help="a number, or a comma-separated curve of numbers")
    parser.add_argument("--procs", type=int, default=1, help="client processes")
    parser.add_argument("--sets", default="librivox,cards", help="speech sets streamed by every client")
    parser.add_argument("--frame", type=float, default=0.05, help="seconds of audio per WebSocket frame")
    parser.add_argument("--stagger", type=float, default=3.0, help="seconds over which the clients start")
    parser.add_argument("--serve", default="", help="options for streamer serve (quoted)")
    parser.add_argument("--url", default=None, help="a running daemon's ws://.../v1/stream (default: start one)")
    parser.add_argument("--pid", type=int, default=None, help="with --url: its process id (for RSS)")
    parser.add_argument("--token", default=None)
    parser.add_argument("--no-words", dest="words", action="store_false",
                        help="no word latency or WER (random-weight models)")
    parser.add_argument("--json", type=Path, default=None, help="save the figures here")
    parser.add_argument("--profile", type=float, default=0.0,
                        help="sample the daemon with py-spy for this many seconds (in the run of the most clients)")
    parser.add_argument("--profile-dir", type=Path, default=Path("."), help="where the profiles go")
    parser.add_argument("--late", type=float, default=0.0,
                        help="list the words committed more than this many seconds after they ended (all clients)")
    parser.add_argument("-v", "--verbose", action="store_true", help="per-client figures")
    args = parser.parse_args()
    prog = program(args.sets.split(","))
    refs: list[RefWord] = []
    if args.words:
        from streamer.engine import Engine
        from streamer.model.loading import load_model

        refs = reference_words(Engine(load_model("tiny.en"), compute_type="int8"), prog)
    counts = [int(x) for x in args.clients.split(",")]
    args.profile_clients = max(counts)
    proc = None
    url, pid = args.url, args.pid
    if url is None:  # one daemon for the whole curve, started once
        proc, url = start_daemon([*shlex.split(args.serve), "--max-sessions", str(max(counts))])
        pid = proc.pid
    results = []
    try:
        for n in counts:
            result = run(args, n, prog, refs, url, pid)
            report(result, args.verbose)
            results.append(result)
            if args.json:
                args.json.write_text(json.dumps(results, indent=1))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    if args.words and results:
        print("client 0 finals:", results[-1]["finals_client0"])


if __name__ == "__main__":
    main()
