"""The inference workers: threads that each own an engine and together serve every stream.

Streams queue a request for a decode (at most one each queued or in flight); whatever has queued up
while the engine was busy runs as one batch (shared encoder batch, shared decoder slot pool), so many
streams cost little more than one. A request is a ``take`` function that makes the job when its batch
begins, not when it was queued: the window then holds all the audio that arrived while it waited, so a
decode's result is at most one batch behind the stream (under load a job made at submission was a
queue's wait older). Results go back through each request's callback, on the worker's thread.

A window is decoded the same way whatever the load (its encoder length is the session's choice), so
a stream's text does not depend on how many others share the engine; under load each stream is simply
decoded less often (it has one job in flight, and its next covers all the audio that came meanwhile).

A request may say it is urgent (``submit``'s ``urgent``, read when a batch is made up): urgent requests
are taken first, in the order they came. A stream's request is urgent once its utterance has ended:
its final decode commits the utterance's last words, which would otherwise wait behind every other
stream's partial decode (on the CPU one window at a time, ~0.1 s each).

Several workers (``default_workers``: two on the CPU) may serve one queue, each a thread with an engine of
its own over the same weights (``Engine.replica``): on two cores, two workers decode 1.3x the windows one
does (70 windows of a stream's replay at a 0.85 s decode cost: 7.0-7.1 s against 8.9-9.3 s, each worker
running torch on both cores; 6.7 s with one core each, but a window alone then took 12.5 s rather than
9.0 s), since the decoder's small kernels and the Python between them leave a core idle that another
window's work fills. A worker that starts a batch while another is busy runs torch on its share of the
threads, alone on all of them: live, with a daemon's event loop on the same cores, 6 clients on two cores
(bench/load.py --sets librivox,cards,harbor) got 1008-1108 windows decoded in 105 s with one core per
worker, 858-899 with both cores each, 1065-1075 with the share (committed median/p90 1.03-1.07/2.22-2.30 s),
against 749-883 with one worker (1.06-1.26/2.12-2.59 s); 8 clients 808 against 595 (1.50/2.84 against
1.67/3.31 s). A stream still has one job at a time, so its results arrive in order.

Overflow policy of the queue: **reject** — ``submit`` raises ``Overloaded`` when ``max_queue`` jobs
wait, and the caller (a session) retries with its next job once its audio moves on.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from streamer.decoding.decode import DecodingResult
from streamer.engine import Engine
from streamer.heap import HeapTrimmer
from streamer.streaming.inference import run_windows
from streamer.streaming.session import WindowJob
from streamer.torch_threads import use_threads

log = logging.getLogger(__name__)

Callback = Callable[[WindowJob, "DecodingResult | BaseException"], None]
Take = Callable[[], "WindowJob | None"]  # makes the job when its batch begins; None: nothing to do any more
Urgent = Callable[[], bool]  # asked with the scheduler's lock held: it reads a flag, never blocks


def never() -> bool:
    return False


class Overloaded(Exception):
    """The inference queue is full."""


class SchedulerClosed(RuntimeError):
    """A job was submitted after ``close``."""


@dataclass
class SchedulerStats:
    batches: int = 0
    jobs: int = 0
    busy_seconds: float = 0.0  # summed over the workers
    audio_seconds: float = 0.0  # audio decoded (windows overlap, so more than the streams' audio)
    errors: int = 0


def default_batch(engine: Engine) -> int:
    """Windows per batch: as many as the engine decodes together on a GPU; one on the CPU, where a batch
    gains nothing in the encoder (it runs one 30 s window at a time there, ``Engine.encoder_rows``) and
    every window waits for the whole batch. bench/load.py, 6 clients on 2 cores: committed median/p90
    3.43/5.58 s with 1 window, 3.40/5.65 s with 2, 4.98/8.48 s with the 5 rows of the pool; RSS peak
    615, 656 and 743 MiB."""
    return 1 if engine.device.type == "cpu" else engine.max_batch


def default_trim_interval(engine: Engine) -> float:
    """Seconds between heap trims (``HeapTrimmer``; glibc's malloc only, jemalloc needs none): 1 on the CPU,
    where the windows' buffers of varying sizes fragment the heap faster than trims every 10 s keep up with
    (issue 13: under 600 MB with 4 streams); 10 elsewhere. bench/load.py --sets librivox,cards,harbor, 2 cores,
    trimming every 10 s: RSS peak 592, 648 and 634-660 MiB with 1, 4 and 6 clients (6: committed median/p90
    1.25-1.35/2.40-2.51 s over three runs); every 3 s, 597 and 616 MiB with 4 and 6; every second, 547, 554-566
    and 572-588 MiB (6: 1.32-1.83/2.40-3.73 s over four runs). The price: the pages handed back are faulted in
    again, and one stream's inference thread was busy 43% of the time against 36%."""
    return 1.0 if engine.device.type == "cpu" else 10.0


def default_workers(engine: Engine) -> int:
    """Inference workers (each an engine and a thread): two on a CPU of two cores or more (see the module's
    note), one on a GPU, whose one engine decodes the streams' windows in batches."""
    return 2 if engine.device.type == "cpu" and (os.cpu_count() or 1) >= 2 else 1


class Scheduler:
    def __init__(
        self, engine: Engine | Sequence[Engine], max_queue: int = 256, max_batch: int | None = None,
        trim_interval: float | None = None,
    ):
        """``engine``: one engine, or one per worker (``Engine.replica``), each served by a thread of its own;
        ``max_batch``: windows per batch (default: ``default_batch``); ``trim_interval``: seconds between heap
        trims (default: ``default_trim_interval``)."""
        engines = [engine] if isinstance(engine, Engine) else list(engine)
        if not engines:
            raise ValueError("a scheduler needs an engine")
        self.engine = engines[0]
        self.workers = len(engines)
        self.max_queue = max_queue
        self.max_batch = max_batch or default_batch(self.engine)
        self.stats = SchedulerStats()
        self.heap = HeapTrimmer(default_trim_interval(self.engine) if trim_interval is None else trim_interval)
        self._queue: deque[tuple[Take, Callback, Urgent]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._running = 0  # workers decoding a batch now
        self.threads = torch.get_num_threads()  # torch's threads for a worker alone (--threads) ...
        self._share = max(1, self.threads // self.workers)  # ... and for one of several busy at once
        self._threads = [
            threading.Thread(target=self._run, args=(i, e), name="streamer-inference" + (f"-{i}" if i else ""),
                             daemon=True)
            for i, e in enumerate(engines)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def saturated(self) -> bool:
        """More windows wait than the engine decodes at once (its rows, whatever the batch policy): a new
        stream would slow every stream down."""
        return len(self._queue) > self.engine.max_batch

    def submit(self, take: Take, callback: Callback, urgent: Urgent = never) -> None:
        """Queue a decode: ``take()`` is called on a worker's thread, with no lock of the scheduler's
        held, when the batch it joins begins; the job it returns is decoded, then ``callback(job,
        outcome)`` runs there too. ``urgent()`` is asked, with the scheduler's lock held (so it must
        only read a flag), whenever a batch is made up while the request waits: True puts it first."""
        with self._cond:
            if self._stopping:
                raise SchedulerClosed("the scheduler is closed")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"{len(self._queue)} inference jobs are waiting")
            self._queue.append((take, callback, urgent))
            self._cond.notify_all()  # the first free worker takes it (``_run``)

    def _run(self, index: int, engine: Engine) -> None:
        """Worker ``index``: batches off the queue, through its own engine, until the queue is closed and empty.
        A worker takes a request only while the workers before it are busy, so that a stream alone keeps to
        the first one (the same engine and threads for every window: a daemon with one client whose windows
        went to either worker spent 0.42 s of inference per second of audio, against 0.35 s with one)."""
        use_threads(self.threads)
        while True:
            with self._cond:
                while not (self._queue and self._running >= index) and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                requests = self._next_requests()
                self._running += 1
                shared = self._running > 1  # another worker is busy (never, with one worker)
                if self._queue:
                    self._cond.notify_all()  # the next worker may take the rest now
            try:
                if shared:  # this thread's count, and the process's until the batch ends (``use_threads``)
                    torch.set_num_threads(self._share)
                batch = self._take(requests)
                jobs = [job for job, _ in batch]
                began = time.perf_counter()
                outcomes = self._run_batch(engine, jobs) if jobs else []
            finally:
                if shared:
                    torch.set_num_threads(self.threads)
                with self._cond:
                    self._running -= 1
                    self._cond.notify_all()  # a request may wait for this worker, not a later one
            if not batch:
                continue
            with self._cond:
                self.stats.batches += 1
                self.stats.jobs += len(jobs)
                self.stats.busy_seconds += time.perf_counter() - began
                self.stats.audio_seconds += sum(len(j.audio) for j in jobs) / 16000
            for (job, callback), outcome in zip(batch, outcomes, strict=True):
                try:
                    callback(job, outcome)
                except Exception:
                    log.exception("a session's result handler failed")
            del jobs, outcomes, batch
            self.heap.maybe_trim()

    def _next_requests(self) -> list[tuple[Take, Callback]]:
        """Up to ``max_batch`` requests off the queue (lock held): the urgent ones first, then the oldest."""
        chosen: list[tuple[Take, Callback, Urgent]] = []
        rest: deque[tuple[Take, Callback, Urgent]] = deque()
        for entry in self._queue:
            (chosen if len(chosen) < self.max_batch and entry[2]() else rest).append(entry)
        while rest and len(chosen) < self.max_batch:
            chosen.append(rest.popleft())
        self._queue = rest
        return [(take, callback) for take, callback, _ in chosen]

    def _take(self, requests: list[tuple[Take, Callback]]) -> list[tuple[WindowJob, Callback]]:
        """The requests' jobs, made now. A ``take`` that raises (its own failure to handle) is logged and
        its request dropped."""
        batch = []
        for take, callback in requests:
            try:
                job = take()
            except Exception:
                log.exception("a stream failed to make its decode")
                with self._cond:
                    self.stats.errors += 1
                continue
            if job is not None:
                batch.append((job, callback))
        return batch

    def _run_batch(self, engine: Engine, jobs: list[WindowJob]) -> list[DecodingResult | BaseException]:
        """The batch's results; if it fails, each job is run alone, so only a failing window's session
        gets the exception and the others their results."""
        try:
            return list(run_windows(engine, jobs))
        except Exception as e:
            if len(jobs) == 1:
                log.exception("inference failed for a window")
                with self._cond:
                    self.stats.errors += 1
                return [e]
        log.warning("a batch of %d windows failed: running them one at a time", len(jobs))
        return [outcome for job in jobs for outcome in self._run_batch(engine, [job])]

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the workers (``timeout``: seconds to wait for each). Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout)
