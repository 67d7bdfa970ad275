"""The inference workers: batching, several workers, and a failing window that harms no other session."""

from __future__ import annotations

import os
import threading

import numpy as np
import pytest
import torch

from streamer.audio import load_audio
from streamer.decoding.decode import DecodingResult
from streamer.streaming.scheduler import Scheduler, default_workers
from streamer.streaming.session import WindowJob
from tests.conftest import normalize
from tests.streaming.conftest import SENSE


def job(audio: np.ndarray, prompt: tuple[int, ...] = ()) -> WindowJob:
    return WindowJob(0, 0, audio, prompt, (), "en", "transcribe", 0.0, 64, True)


def run_together(engine, jobs: list[WindowJob]) -> tuple[list[DecodingResult | BaseException], Scheduler]:
    """Submit ``jobs`` right after a 30 s window, so they run as one batch (with it, or after it)."""
    scheduler = Scheduler(engine, max_batch=len(jobs) + 1)
    outcomes: list[DecodingResult | BaseException | None] = [None] * len(jobs)
    done = threading.Semaphore(0)

    def callback(i):
        def record(_job, outcome):
            outcomes[i] = outcome
            done.release()
        return record

    scheduler.submit(lambda: job(np.zeros(30 * 16000, np.float32)), lambda _j, _o: done.release())
    for i, j in enumerate(jobs):
        scheduler.submit(lambda j=j: j, callback(i))
    for _ in range(len(jobs) + 1):
        assert done.acquire(timeout=120)
    scheduler.close()
    return [o for o in outcomes if o is not None], scheduler


def test_the_cpu_runs_one_window_a_batch(engine):
    scheduler = Scheduler(engine)
    scheduler.close()
    assert scheduler.max_batch == 1  # a window's result need not wait for the others' on the CPU


def test_the_cpu_trims_its_heap_every_second(engine):
    scheduler = Scheduler(engine)
    scheduler.close()
    assert scheduler.heap.interval == 1.0  # the windows' buffers fragment the heap within seconds there


def test_jobs_queued_while_busy_run_as_one_batch(engine):
    audio = load_audio(SENSE[1])
    outcomes, scheduler = run_together(engine, [job(audio), job(audio), job(audio)])
    assert scheduler.stats.jobs == 4 and scheduler.stats.batches <= 2  # not one batch per job
    assert all(isinstance(o, DecodingResult) and "ill" in normalize(o.text) for o in outcomes)


def test_a_window_that_fails_inference_fails_only_its_own_session(engine):
    audio = load_audio(SENSE[1])
    bad_prompt = (10**6,)  # no such token: the embedding lookup raises inside the batch
    outcomes, scheduler = run_together(engine, [job(audio), job(audio, bad_prompt), job(audio)])
    assert isinstance(outcomes[1], IndexError)
    assert isinstance(outcomes[0], DecodingResult) and isinstance(outcomes[2], DecodingResult)
    assert "young man" in normalize(outcomes[0].text) and "young man" in normalize(outcomes[2].text)
    assert scheduler.stats.errors == 1


def test_saturated_while_more_windows_wait_than_the_engine_decodes_at_once(engine):
    audio = load_audio(SENSE[1])
    scheduler = Scheduler(engine)
    rows = engine.max_batch
    done = threading.Semaphore(0)
    try:
        scheduler.submit(lambda: job(np.zeros(30 * 16000, np.float32)), lambda _j, _o: done.release())  # keeps it busy
        assert not scheduler.saturated
        for _ in range(rows + 2):
            scheduler.submit(lambda: job(audio), lambda _j, _o: done.release())
        # rows + 2 wait (rows + 1 if the thread took one with the first window): more than the engine's rows
        assert scheduler.saturated
        for _ in range(rows + 3):
            assert done.acquire(timeout=120)
        assert not scheduler.saturated
    finally:
        scheduler.close()


def test_urgent_requests_are_taken_first_and_the_rest_in_the_order_they_came(engine):
    scheduler = Scheduler(engine)
    taken, release = threading.Event(), threading.Event()
    order: list[str] = []
    done = threading.Semaphore(0)

    def blocker():  # holds the inference thread while the others queue up
        taken.set()
        release.wait(60)

    def request(name: str):
        def take():
            order.append(name)
            return job(np.zeros(16000, np.float32))
        return take

    flags = {"a": False, "b": False, "c": True, "d": False}
    try:
        scheduler.submit(blocker, lambda _j, _o: None)
        assert taken.wait(60)
        for name in "abcd":
            scheduler.submit(request(name), lambda _j, _o: done.release(), lambda name=name: flags[name])
        flags["d"] = True  # became urgent while it waited
        release.set()
        for _ in range(4):
            assert done.acquire(timeout=60)
    finally:
        release.set()
        scheduler.close()
    assert order == ["c", "d", "a", "b"]


def test_the_cpu_daemon_runs_two_workers(engine):
    assert default_workers(engine) == (2 if (os.cpu_count() or 1) >= 2 else 1)


def test_two_workers_decode_two_streams_windows_at_once(engine):
    audio = load_audio(SENSE[1])
    scheduler = Scheduler([engine, engine.replica()])
    both = threading.Barrier(2, timeout=60)  # broken, and the takes fail, unless both workers take at once
    outcomes: list[DecodingResult | BaseException] = []
    done = threading.Semaphore(0)

    def take():
        both.wait()
        return job(audio)

    def record(_job, outcome):
        outcomes.append(outcome)
        done.release()

    try:
        for _ in range(2):
            scheduler.submit(take, record)
        for _ in range(2):
            assert done.acquire(timeout=120)
    finally:
        scheduler.close()
    assert scheduler.workers == 2 and scheduler.stats.jobs == 2 and scheduler.stats.errors == 0
    assert all(isinstance(o, DecodingResult) and "ill" in normalize(o.text) for o in outcomes)


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread has no share to give")
def test_a_worker_runs_torch_on_every_thread_alone_and_on_its_share_beside_a_busy_one(engine):
    scheduler = Scheduler([engine, engine.replica()])
    taken, release = threading.Event(), threading.Event()
    threads: list[int] = []
    done = threading.Semaphore(0)

    def blocker():  # one worker busy
        threads.append(torch.get_num_threads())
        taken.set()
        release.wait(60)
        return job(np.zeros(16000, np.float32))

    def beside():
        threads.append(torch.get_num_threads())
        return job(np.zeros(16000, np.float32))

    every = torch.get_num_threads()
    try:
        scheduler.submit(blocker, lambda _j, _o: done.release())
        assert taken.wait(60)
        scheduler.submit(beside, lambda _j, _o: done.release())
        assert done.acquire(timeout=60)  # the second worker's
        release.set()
        assert done.acquire(timeout=60)
    finally:
        release.set()
        scheduler.close()
    assert threads == [every, every // 2]
    assert torch.get_num_threads() == every  # the caller's own count is untouched
