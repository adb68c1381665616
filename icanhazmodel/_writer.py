"""A few threads for blocking file I/O, handed work in batches.

Creating, writing and renaming files blocks, so it must stay off the event
loop. A thread hop per call (``anyio.to_thread.run_sync``) costs a wake-up
each way and a GIL hand-over per file, which for thousands of small files
costs more CPU than the writes themselves. Here the event loop puts calls on
a queue; a thread takes every call queued so far, runs them, and reports all
their results back in one ``call_soon_threadsafe``.

A call that was started always runs to the end, even if the task awaiting it
is cancelled: the awaiting task waits for it, then takes the cancellation.
So a temp file is never half-created behind the pipeline's back, and no file
descriptor is closed while a thread may still write to it.

Brief calls (a small file's create, write and rename) run on the event loop's
own thread instead, while they stay fast. Each hop costs little, but every
system call a writer thread makes hands the GIL to the loop and back: a
one-process run of 20,000 x 16 KiB objects made ~60 futex calls per file, and
spent ~26% less CPU with no threads at all. On a filesystem where such calls
are slow (a network mount) they would hold up every socket, so once they
have been slow the rest go to the threads.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]
_STOP = None
# Calls one thread takes at a time: enough to share one wake-up among many
# small files, few enough that big writes spread over every thread.
_GRAB = 8
# Brief calls run on the loop's thread until their moving average (each
# counted as at most _CAPPED, so one stall alone does not decide) passes
# this; then on the writer threads for the rest of the run.
SLOW_BRIEF_CALL = 0.001
_CAPPED = 0.004
_WEIGHT = 1 / 8


class Writer:
    """Runs blocking calls on a small, fixed set of threads."""

    def __init__(self, threads: int = 2, clock: Callable[[], float] = time.perf_counter) -> None:
        self._threads_wanted = threads
        self._clock = clock  # what times brief calls
        self._threads: list[threading.Thread] = []
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._pending = 0  # calls queued or running
        self._pending_lock = threading.Lock()
        self._all_done = threading.Event()
        self._all_done.set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._brief_average = 0.0

    async def brief(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)``, a call that is usually quick, on the loop's own
        thread while such calls stay fast, else as :meth:`call` does."""
        if not self.briefs_inline:
            return await self.call(fn, *args)
        started = self._clock()
        try:
            return fn(*args)
        finally:
            took = min(self._clock() - started, _CAPPED)
            self._brief_average += (took - self._brief_average) * _WEIGHT

    @property
    def briefs_inline(self) -> bool:
        """Whether brief calls still run on the loop's thread."""
        return self._brief_average <= SLOW_BRIEF_CALL

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a writer thread and return its result."""
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = self._loop.create_future()
        with self._pending_lock:
            self._pending += 1
            self._all_done.clear()
        if len(self._threads) < self._threads_wanted:
            self._start_thread()
        self._queue.put((fn, args, future))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The call is queued or running: let it finish first, in a scope
            # anyio knows is shielded. Catching each cancellation and waiting
            # again instead made anyio re-cancel the task at every turn of the
            # loop: a busy loop that starved the writer threads of the GIL,
            # so a Ctrl-C took up to 7 s to stop a run of small files.
            with anyio.CancelScope(shield=True):
                await asyncio.wait([future])
            if not future.cancelled():
                future.exception()  # taken: the task's outcome is its cancellation
            raise

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="icanhazmodel-writer", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job is _STOP:
                return
            batch = [job]
            while len(batch) < _GRAB:
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if more is _STOP:
                    self._queue.put(_STOP)  # for this thread's next turn
                    break
                batch.append(more)
            outcomes: list[_Outcome] = []
            for fn, args, future in batch:
                try:
                    outcomes.append((future, fn(*args), None))
                except BaseException as exc:
                    outcomes.append((future, None, exc))
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_deliver, outcomes)
            with self._pending_lock:
                self._pending -= len(batch)
                if self._pending == 0:
                    self._all_done.set()

    def drain(self) -> None:
        """Block until every queued call has run (for synchronous cleanup)."""
        self._all_done.wait()

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        for _ in self._threads:
            self._queue.put(_STOP)
        for thread in self._threads:
            thread.join()
        self._threads.clear()


def _deliver(outcomes: list[_Outcome]) -> None:
    for future, result, error in outcomes:
        if future.done():
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
