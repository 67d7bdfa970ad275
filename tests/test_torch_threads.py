import asyncio
import logging
import subprocess
import sys
import threading

import pytest
import torch

from streamer.torch_threads import call_in_thread, run_in_thread, use_threads


def test_call_in_thread_runs_the_function_on_a_thread_that_ends():
    ran_on: list[threading.Thread] = []

    def work() -> int:
        ran_on.append(threading.current_thread())
        return 42

    assert call_in_thread(work) == 42
    assert ran_on[0] is not threading.current_thread()
    assert not ran_on[0].is_alive()


def test_call_in_thread_raises_what_the_function_raised():
    def work() -> None:
        raise ValueError("no such model")

    with pytest.raises(ValueError, match="no such model"):
        call_in_thread(work)


async def test_run_in_thread_lets_the_event_loop_run_meanwhile():
    loop_ran = threading.Event()
    waiting = asyncio.create_task(run_in_thread(lambda: loop_ran.wait(10)))
    await asyncio.sleep(0)  # the function is waiting for the loop to do this
    loop_ran.set()
    assert await waiting is True


async def test_run_in_thread_raises_what_the_function_raised():
    def work() -> None:
        raise ValueError("bad weights")

    with pytest.raises(ValueError, match="bad weights"):
        await run_in_thread(work)


class _Records(logging.Handler):
    def __init__(self, loop: asyncio.AbstractEventLoop):
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []
        self.logged = asyncio.Event()
        self.loop = loop

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)
        self.loop.call_soon_threadsafe(self.logged.set)


async def test_a_failure_nobody_waits_for_any_more_is_logged():
    release = threading.Event()

    def work() -> None:
        release.wait(10)
        raise ValueError("failed after the caller left")

    waiting = asyncio.create_task(run_in_thread(work, "streamer-file"))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    records = _Records(asyncio.get_running_loop())
    logger = logging.getLogger("streamer.torch_threads")
    logger.addHandler(records)
    try:
        release.set()
        await asyncio.wait_for(records.logged.wait(), 10)
    finally:
        logger.removeHandler(records)
    [record] = records.records
    assert record.getMessage() == "streamer-file failed after its caller stopped waiting"
    assert record.exc_info is not None and str(record.exc_info[1]) == "failed after the caller left"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="counts the threads in /proc/self/task")
def test_a_thread_that_ran_parallel_torch_kernels_takes_its_openmp_workers_with_it():
    """The reason for the module: a loading thread must not leave a second pool of workers behind."""
    code = """
import os, time, torch
from streamer.torch_threads import call_in_thread
if not torch.backends.openmp.is_available():
    print("no-openmp"); raise SystemExit
torch.set_num_threads(2)
def tasks():
    return len(os.listdir("/proc/self/task"))
before = tasks()
during = call_in_thread(lambda: ((torch.ones(1 << 22) + 1).sum(), tasks())[1])
deadline = time.monotonic() + 10
while tasks() > before and time.monotonic() < deadline:  # the workers exit once their master has
    time.sleep(0.01)
print(before, during, tasks())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    if out.strip() == "no-openmp":
        pytest.skip("this torch has no OpenMP")
    before, during, after = map(int, out.split())
    assert during >= before + 2  # the thread itself and at least one OpenMP worker
    assert after == before


@pytest.mark.skipif(torch.get_num_threads() < 2, reason="one thread: no other count to keep")
def test_a_thread_keeps_the_torch_threads_it_asked_for_when_another_thread_sets_fewer_before_its_first_kernel():
    every = torch.get_num_threads()
    seen: list[int] = []

    def fewer() -> None:  # an inference worker beside a busy one: its share, and the process's count
        torch.set_num_threads(1)

    def fresh() -> None:
        use_threads(every)
        call_in_thread(fewer)
        torch.ones(1 << 20).sum()  # its first parallel kernel
        seen.append(torch.get_num_threads())

    try:
        call_in_thread(fresh)
    finally:
        torch.set_num_threads(every)  # the process's count, for the threads of the tests after this one
    assert seen == [every]
