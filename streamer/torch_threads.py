"""Run torch work on a thread of its own that ends with it, so that the inference thread runs at full speed.

Every thread that runs torch's parallel CPU kernels keeps a pool of OpenMP worker threads for as long as it
lives. GNU OpenMP (the one torch's wheels ship) counts the workers of every pool, and once there are more
than cores it stops spinning between kernels: each kernel then waits for its sleeping workers to wake.
Measured on 2 cores (tiny.en int8): an elementwise op over 192k floats 0.09 ms against 0.013 ms, a streaming
partial decode of the daemon's 131 ms against 96 ms, as soon as a second thread (the one that loaded the
model) had run parallel kernels before the inference thread. So a long-lived process keeps one thread that
runs torch, its inference thread; loading, quantising and warming up the model, and each uploaded file, run
on threads that end with their work, and take their pools with them.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")

log = logging.getLogger(__name__)


class _Outcome(Generic[T]):
    """What a function returned or raised, taken on the thread that ran it."""

    def __init__(self, fn: Callable[[], T]):
        self.fn = fn
        self.value: T | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.value = self.fn()
        except BaseException as e:  # handed to the caller, which raises it
            self.error = e

    def drop(self, name: str) -> None:
        """Nobody waits for the result any more: an exception is logged, not lost."""
        if self.error is not None:
            log.error("%s failed after its caller stopped waiting", name, exc_info=self.error)

    def result(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value  # type: ignore[return-value]  # fn returned it


def use_threads(n: int) -> None:
    """Run this thread's torch kernels on ``n`` threads from now on, whatever other threads set. torch keeps one
    count for the process, which a thread takes at its first parallel kernel (or first ask), and one of its own
    after that, which ``torch.set_num_threads`` sets along with the process's: so the process's is taken
    first here, and a count another thread sets before this one's first kernel does not replace ``n``."""
    import torch

    torch.get_num_threads()
    torch.set_num_threads(n)


def call_in_thread(fn: Callable[[], T], name: str = "streamer-torch") -> T:
    """``fn()`` on a new thread, which ends when it returns; its result, or its exception raised here."""
    outcome = _Outcome(fn)
    thread = threading.Thread(target=outcome.run, name=name)
    thread.start()
    thread.join()
    return outcome.result()


async def run_in_thread(fn: Callable[[], T], name: str = "streamer-torch") -> T:
    """``call_in_thread`` for a coroutine: the event loop runs on while ``fn`` does. Cancelling the
    awaiting task does not stop ``fn`` (nothing can, midway); its result is then dropped."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[None] = loop.create_future()
    outcome = _Outcome(fn)

    def run() -> None:
        outcome.run()
        try:
            loop.call_soon_threadsafe(done.set_result, None)  # shielded: only this settles it
        except RuntimeError:  # the loop has closed
            outcome.drop(name)

    threading.Thread(target=run, name=name).start()
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        done.add_done_callback(lambda _: outcome.drop(name))
        raise
    return outcome.result()
