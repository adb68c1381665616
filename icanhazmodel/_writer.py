"""A few threads for blocking file I/O, handed work in batches.

Creating, writing and renaming files blocks, so it must stay off the event
loop. A thread hop per call (``anyio.to_thread.run_sync``) costs a wake-up
each way and a GIL hand-over per file, which for thousands of small files
costs more CPU than the writes themselves. Here the event loop appends calls
to a queue and wakes a thread only if none is awake; a thread runs every
call queued so far, then reports all their results back in one
``call_soon_threadsafe``.

A call that was started always runs to the end, even if the task awaiting it
is cancelled: the awaiting task waits for it, then takes the cancellation.
So a temp file is never half-created behind the pipeline's back, and no file
descriptor is closed while a thread may still write to it.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


_GRAB = 4


class Writer:
    """Runs blocking calls on a small, fixed set of threads."""

    def __init__(self, threads: int = 4) -> None:
        self._threads_wanted = threads
        self._threads: list[threading.Thread] = []
        self._queue: deque[_Job] = deque()
        self._ready = threading.Condition()
        self._idle = 0
        self._busy = 0
        self._closing = False
        self._loop: asyncio.AbstractEventLoop | None = None

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` on a writer thread and return its result."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._ready:
            if self._loop is None:
                self._loop = loop
            self._queue.append((fn, args, future))
            if self._idle:
                self._ready.notify()
            elif len(self._threads) < self._threads_wanted:
                self._start_thread()
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The call is already queued or running: let it finish first.
            while not future.done():
                try:
                    await asyncio.shield(future)
                except asyncio.CancelledError:
                    continue
                except BaseException:
                    break
            raise

    def _start_thread(self) -> None:
        thread = threading.Thread(target=self._run, name="icanhazmodel-writer", daemon=True)
        self._threads.append(thread)
        thread.start()

    def _run(self) -> None:
        while True:
            with self._ready:
                while not self._queue and not self._closing:
                    self._idle += 1
                    self._ready.wait()
                    self._idle -= 1
                if not self._queue:
                    return
                # A few calls at a time: enough to share one wake-up among
                # many small files, few enough that big writes spread over
                # every thread.
                batch = [self._queue.popleft() for _ in range(min(_GRAB, len(self._queue)))]
                self._busy += 1
            outcomes: list[_Outcome] = []
            for fn, args, future in batch:
                try:
                    outcomes.append((future, fn(*args), None))
                except BaseException as exc:
                    outcomes.append((future, None, exc))
            with self._ready:
                self._busy -= 1
                self._ready.notify_all()
            loop = self._loop
            if loop is not None and not loop.is_closed():
                loop.call_soon_threadsafe(_deliver, outcomes)

    def drain(self) -> None:
        """Block until every queued call has run (for synchronous cleanup)."""
        with self._ready:
            while self._queue or self._busy:
                self._ready.wait(timeout=0.1)

    def close(self) -> None:
        """Run what is queued, then stop the threads."""
        with self._ready:
            self._closing = True
            self._ready.notify_all()
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
