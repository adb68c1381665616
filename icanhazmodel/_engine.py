"""The engine: request slots taking work from one bounded stream.

Every process that moves bytes hosts one: the parent of a one-process run,
and each worker process. A slot takes one item at a time: a byte range of an
object (run by :class:`~._transfer.Transfers`) or some other request-sized
step that must share the same slots (a worker's span of an object another
process owns). The stream holds as many items as there are slots, so whoever
feeds the engine waits while every slot is busy: the listing never races
ahead of the downloads.

There are as many slots as the window's ceiling, and slot *k* works only
while *k* is below the window's level (``_window``): the level moves, the
slots follow, and taking an item costs no lock. Before it starts, an item
takes what it may hold from the memory budget (``_budget``), sized for
*streams* ranges streamed at once: many small files fit where few big
ranges do.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any, TypeAlias

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._budget import STREAM_COST, Budget
from ._jobs import FileJob, Work
from ._transfer import Transfers, holds
from ._window import Window

# A request-sized step that is not a range of an object this process owns.
Step: TypeAlias = Callable[[], Coroutine[Any, Any, None]]


class Engine:
    """Slots driving *transfers* over a stream of work items, as many at
    once as *window*'s level."""

    def __init__(self, transfers: Transfers, window: Window, streams: int) -> None:
        self.transfers = transfers
        self.window = window
        self.budget = Budget(max(1, streams) * STREAM_COST)
        self._send: MemoryObjectSendStream[Work | Step] | None = None
        self._group: TaskGroup | None = None
        self._ended = False  # the stream ended: parked slots leave

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Engine]:
        """Start the slots; on leaving, wait until every item queued is done."""
        slots = self.window.ceiling
        send, receive = anyio.create_memory_object_stream[Work | Step](slots)
        async with anyio.create_task_group() as group:
            for slot in range(slots):
                group.start_soon(self._slot, slot, receive.clone())
            receive.close()
            self._group = group
            try:
                async with send:
                    self._send = send
                    yield self
            finally:
                self._send = None

    async def add(self, job: FileJob) -> None:
        """Ready *job* (resume, align to its parts) and queue its ranges."""
        for work in await self.transfers.prepare(job):
            await self.put(work)

    async def put(self, item: Work | Step) -> None:
        """Queue one item; waits while every slot is busy."""
        assert self._send is not None, "the engine is not running"
        await self._send.send(item)

    def sender(self) -> MemoryObjectSendStream[Work | Step]:
        """A stream of its own into the slots, for a task that feeds them later
        (close it when done: the engine stops once every sender is closed)."""
        assert self._send is not None, "the engine is not running"
        return self._send.clone()

    def start_soon(self, step: Step) -> None:
        """Run *step* beside the slots, within the engine's lifetime."""
        assert self._group is not None, "the engine is not running"
        self._group.start_soon(step)

    async def _slot(self, slot: int, receive: MemoryObjectReceiveStream[Work | Step]) -> None:
        window = self.window
        async with receive:
            while True:
                while slot >= window.level:  # parked until the level rises past it
                    if self._ended:
                        return
                    await window.rose()
                try:
                    item = await receive.receive()
                except anyio.EndOfStream:
                    self._ended = True
                    window.wake()
                    return
                held = holds(item)
                await self.budget.take(held)
                window.started()
                try:
                    if isinstance(item, Work):
                        await self.transfers.run(item)
                    else:
                        await item()
                finally:
                    window.finished()
                    self.budget.give(held)
