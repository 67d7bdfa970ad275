"""One inference thread that owns the engine and serves every stream.

Sessions submit window jobs (at most one each in flight); whatever has queued up while the engine was
busy runs as one batch (shared encoder batch, shared decoder slot pool), so many streams cost little
more than one. Results go back through each job's callback, on the inference thread.

A window is decoded the same way whatever the load (its encoder length is the session's choice), so
a stream's text does not depend on how many others share the engine; under load each stream is simply
decoded less often (it has one job in flight, and its next covers all the audio that came meanwhile).

Overflow policy of the queue: **reject** — ``submit`` raises ``Overloaded`` when ``max_queue`` jobs
wait, and the caller (a session) retries with its next job once its audio moves on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from streamer.decoding.decode import DecodingResult
from streamer.engine import Engine
from streamer.heap import HeapTrimmer
from streamer.streaming.inference import run_windows
from streamer.streaming.session import WindowJob

log = logging.getLogger(__name__)

Callback = Callable[[WindowJob, "DecodingResult | BaseException"], None]


class Overloaded(Exception):
    """The inference queue is full."""


class SchedulerClosed(RuntimeError):
    """A job was submitted after ``close``."""


@dataclass
class SchedulerStats:
    batches: int = 0
    jobs: int = 0
    busy_seconds: float = 0.0
    audio_seconds: float = 0.0  # audio decoded (windows overlap, so more than the streams' audio)
    errors: int = 0


class Scheduler:
    def __init__(
        self, engine: Engine, max_queue: int = 256, max_batch: int | None = None, trim_interval: float = 10.0,
    ):
        self.engine = engine
        self.max_queue = max_queue
        self.max_batch = max_batch or engine.max_batch
        self.stats = SchedulerStats()
        self.heap = HeapTrimmer(trim_interval)
        self._queue: deque[tuple[WindowJob, Callback]] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="streamer-inference", daemon=True)
        self._thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def saturated(self) -> bool:
        """More windows wait than the next batch takes: a new stream would slow every stream down."""
        return len(self._queue) > self.max_batch

    def submit(self, job: WindowJob, callback: Callback) -> None:
        with self._cond:
            if self._stopping:
                raise SchedulerClosed("the scheduler is closed")
            if len(self._queue) >= self.max_queue:
                raise Overloaded(f"{len(self._queue)} inference jobs are waiting")
            self._queue.append((job, callback))
            self._cond.notify()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            jobs = [job for job, _ in batch]
            began = time.perf_counter()
            outcomes = self._run_batch(jobs)
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

    def _run_batch(self, jobs: list[WindowJob]) -> list[DecodingResult | BaseException]:
        """The batch's results; if it fails, each job is run alone, so only a failing window's session
        gets the exception and the others their results."""
        try:
            return list(run_windows(self.engine, jobs))
        except Exception as e:
            if len(jobs) == 1:
                log.exception("inference failed for a window")
                self.stats.errors += 1
                return [e]
        log.warning("a batch of %d windows failed: running them one at a time", len(jobs))
        return [outcome for job in jobs for outcome in self._run_batch([job])]

    def close(self, timeout: float | None = None) -> None:
        """Finish the queued jobs, then stop the thread. Idempotent."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)
