"""A pool of worker processes, so a run uses more than one core.

The parent lists, plans and decides (manifest, filters, shards, conflicts,
free space); each object to fetch becomes a :class:`~._messages.Task` sent to
the worker with the fewest bytes outstanding, up to a bounded number of
tasks per worker. Each worker fetches an object with its own event loop,
connections and writer threads (``_worker``), and sends back progress,
results, resume records and notes, which the parent alone turns into bars
and manifest records.

An object of several byte ranges is shared: its worker (the owner) makes
the temp file, then offers its other ranges back; the parent hands them out
to whichever workers have the fewest bytes to fetch, ahead of new objects,
and passes each outcome to the owner, which checks the whole object and
lands it as before (``_shares``). So one big file uses every process.

A worker that dies (OOM killer, ``kill -9``) loses nothing: its unanswered
tasks go to the others, once, and the folders it wrote in are swept again.
Stopping (Ctrl-C, an error) sends every worker Abort and waits a moment;
whatever is still alive then is killed. Workers read their end of a socket
pair, so none outlives a parent that died without a word.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections import deque
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from . import _errors
from ._direct import FrozenCredentials
from ._events import TransferEvents
from ._jobs import FileJob
from ._launch import Child
from ._manifest import PartialRecord
from ._messages import (
    Abort,
    Bye,
    Events,
    Fatal,
    Inbox,
    Landed,
    NewCredentials,
    NoMoreTasks,
    Offer,
    SpanDone,
    SpanResult,
    Task,
    WorkerSettings,
    send_message,
)
from ._shares import Shares
from ._transfer import SMALL_OBJECT
from ._window import first_level

# Tasks a worker holds (queued or running) per request it keeps in flight:
# enough that it never waits for the parent, few enough to balance the load.
TASKS_PER_REQUEST = 2
# How long stopping workers may take before they are killed.
STOP_SECONDS = 1.5


@dataclass(eq=False)
class _Worker:
    index: int
    child: Child
    conn: Connection
    capacity: int
    span_capacity: int
    outstanding: dict[int, int] = field(default_factory=dict)  # task id -> bytes
    spans: dict[int, int] = field(default_factory=dict)  # span id -> bytes
    load: int = 0  # bytes of both, kept as they change: read for every object sent
    outbox: list[Any] = field(default_factory=list)  # sent at the loop's next turn
    inbox: Inbox | None = None  # what it says, read on the loop
    alive: bool = True
    said_bye: bool = False

    def hold(self, table: dict[int, int], key: int, nbytes: int) -> None:
        self.load += nbytes - table.get(key, 0)
        table[key] = nbytes

    def release(self, table: dict[int, int], key: int) -> None:
        self.load -= table.pop(key, 0)

    def stop_reading(self) -> None:
        if self.inbox is not None:
            self.inbox.close()

    def has_room(self) -> bool:
        return self.alive and len(self.outstanding) < self.capacity

    def has_room_for_span(self) -> bool:
        # Counted apart from tasks: an owner's task waits on its spans, so
        # tasks filling every slot must never keep spans out.
        return self.alive and len(self.spans) < self.span_capacity


class Pool:
    """Worker processes fed whole objects by one dispatcher on the run's loop."""

    def __init__(
        self,
        events: TransferEvents,
        settings: WorkerSettings,
        started: list[tuple[Child, Connection]],
    ) -> None:
        """Run the workers *started* (see ``_launch``), each already sent
        *settings*; what they report is replayed into *events* (the run's ledger)."""
        self._events = events
        self._settings = settings
        # Until a worker says what level it found: where its window starts.
        first = first_level(settings.concurrency, settings.adaptive)
        self._loop = asyncio.get_running_loop()
        self._workers = [
            _Worker(
                i,
                child,
                conn,
                capacity=first * TASKS_PER_REQUEST,
                span_capacity=settings.concurrency,
            )
            for i, (child, conn) in enumerate(started)
        ]
        self._jobs: dict[int, FileJob] = {}
        self._tasks: dict[int, Task] = {}
        self._owner_of: dict[int, _Worker] = {}  # task id -> the worker it was sent to
        self._shares = Shares(self._new_id)
        self._attempts: dict[int, int] = {}
        self._pending: deque[Task] = deque()
        self._max_pending = sum(w.capacity for w in self._workers)
        self._waiters: list[asyncio.Future[None]] = []
        self._fatal: BaseException | None = None
        self._next_id = 0
        # Bytes reported so far, by task id (with its spans' bytes).
        self._advanced: dict[int, int] = {}
        # Objects a worker could not fetch on the direct path: the run takes them back.
        self.needs_botocore: list[FileJob] = []
        for worker in self._workers:
            worker.inbox = Inbox(worker.conn, functools.partial(self._heard, worker))

    @property
    def size(self) -> int:
        return len(self._workers)

    # -- waking the dispatcher and the producer ------------------------------------------

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    async def _changed(self) -> None:
        waiter = self._loop.create_future()
        self._waiters.append(waiter)
        await waiter

    def _check_fatal(self) -> None:
        if self._fatal is not None:
            raise self._fatal

    # -- the parent's side ------------------------------------------------------------------

    async def submit(self, job: FileJob, resume: tuple[PartialRecord, ...] = ()) -> None:
        """Send one object to a worker; waits while every worker is full (backpressure)."""
        while len(self._pending) >= self._max_pending:
            self._check_fatal()
            await self._changed()
        self._check_fatal()
        task_id = self._new_id()
        # The worker shares it if it turns out to be several ranges (cut at
        # its upload's parts, perhaps, which only the worker learns).
        share = len(self._workers) > 1 and job.obj.size > SMALL_OBJECT
        task = Task(task_id, job.obj, job.parts, job.part_size, resume, share=share)
        self._jobs[task_id] = job
        self._tasks[task_id] = task
        self._pending.append(task)
        self._dispatch()

    def _new_id(self) -> int:
        new, self._next_id = self._next_id, self._next_id + 1
        return new

    async def finish(self) -> None:
        """Wait until every task is answered, then let the workers go."""
        while self._pending or self._shares or self._unanswered():
            self._check_fatal()
            if not any(w.alive for w in self._workers):
                self._fail_everything("every worker process died")
                break
            await self._changed()
        for worker in self._workers:
            if worker.alive:
                self._send(worker, NoMoreTasks())
        while any(w.alive and not w.said_bye for w in self._workers):
            self._check_fatal()
            await self._changed()
        for worker in self._workers:
            worker.stop_reading()
            await asyncio.to_thread(worker.child.wait)
            worker.child.release()
            with contextlib.suppress(OSError):
                worker.conn.close()

    async def share_credentials(self, credentials: FrozenCredentials) -> None:
        for worker in self._workers:
            if worker.alive:
                self._send(worker, NewCredentials(credentials))

    def abort(self) -> None:
        """Stop every worker now (synchronous: runs while the run is cancelled)."""
        for worker in self._workers:
            worker.stop_reading()
            if worker.alive:
                with contextlib.suppress(OSError):
                    send_message(worker.conn, Abort())
        deadline = time.monotonic() + STOP_SECONDS
        for worker in self._workers:
            if not worker.child.wait(max(0.0, deadline - time.monotonic())):
                worker.child.kill()
                worker.child.wait()
            worker.child.release()
            worker.alive = False
            with contextlib.suppress(OSError):
                worker.conn.close()

    def _unanswered(self) -> int:
        return sum(len(w.outstanding) for w in self._workers)

    def _dispatch(self) -> None:
        while self._shares:  # first: they finish objects already begun
            ready = [w for w in self._workers if w.has_room_for_span()]
            if not ready:
                break
            worker = min(ready, key=lambda w: w.load)
            span = self._shares.next()
            worker.hold(worker.spans, span.id, span.end - span.start)
            self._send(worker, span)
        while self._pending:
            ready = [w for w in self._workers if w.has_room()]
            if not ready:
                return
            worker = min(ready, key=lambda w: (w.load, len(w.outstanding)))
            task = self._pending.popleft()
            worker.hold(worker.outstanding, task.id, task.obj.size)
            self._owner_of[task.id] = worker
            self._send(worker, task)
        self._wake()  # room in the queue for the producer

    def _send(self, worker: _Worker, message: Any) -> None:
        """Queue *message* for *worker*: whatever one turn of the loop queued
        goes as one list, one pickle and one write (per object, a message of
        its own cost the parent more than listing and planning it)."""
        if not worker.alive:
            return
        if not worker.outbox:
            self._loop.call_soon(self._post, worker)
        worker.outbox.append(message)

    def _post(self, worker: _Worker) -> None:
        messages, worker.outbox = worker.outbox, []
        if not worker.alive or not messages:
            return
        try:
            send_message(worker.conn, messages)
        except OSError:
            self._died(worker)

    def _fail_everything(self, reason: str) -> None:
        self._shares.clear()
        while self._pending:
            task = self._pending.popleft()
            self._events.failed(self._jobs.pop(task.id), reason)

    # -- what workers say (read on the loop) ---------------------------------------------

    def _heard(self, worker: _Worker, messages: list[Any] | None) -> None:
        if messages is None:  # it exited, or died
            self._deliver(worker, None)
            return
        for message in messages:
            self._deliver(worker, message)
            if isinstance(message, Bye | Fatal):  # its last word
                worker.stop_reading()
                return

    def _deliver(self, worker: _Worker, message: Any) -> None:
        if isinstance(message, Events):
            self._take_events(worker, message)
        elif isinstance(message, Bye):
            worker.said_bye = True
        elif isinstance(message, Fatal):
            error = getattr(_errors, message.kind, _errors.S3Error)
            self._fatal = error(message.message)
        elif message is None and not worker.said_bye:
            self._died(worker)
        self._dispatch()  # room freed: send more, and wake whoever waits

    def _take_events(self, worker: _Worker, events: Events) -> None:
        """Replay a worker's batch into the run's events, with the parent's jobs."""
        into = self._events
        if events.level is not None:
            worker.capacity = events.level * TASKS_PER_REQUEST  # tasks for its requests
            into.in_flight(worker.index + 1, events.level)
        for record, start, end, crc in events.ranges:
            into.range_done(record, start, end, crc)
        for tmp_name in events.drops:
            into.partial_dropped(tmp_name)
        for text in events.notes:
            into.note(text)
        for offer in events.offers:
            self._offered(worker, offer)
        for task_id, nbytes in events.resumed.items():
            if (job := self._jobs.get(task_id)) is not None:
                self._advanced[task_id] = self._advanced.get(task_id, 0) + nbytes
                into.resumed(job, nbytes)
        for some_id, nbytes in events.progress.items():
            owner = self._shares.progress(some_id, nbytes)
            if owner is None and some_id not in self._jobs:
                continue  # a span of an object that started over elsewhere
            of = some_id if owner is None else owner
            self._advanced[of] = self._advanced.get(of, 0) + nbytes
            into.progress(self._jobs[of], nbytes)
        for result in events.results:
            if isinstance(result, SpanDone):
                worker.release(worker.spans, result.id)
                self._span_done(result.id, result.crc, result.part_hash)
                continue
            worker.release(worker.outstanding, result.id)
            self._tasks.pop(result.id, None)
            self._owner_of.pop(result.id, None)
            self._advanced.pop(result.id, None)
            job = self._jobs.pop(result.id)
            if isinstance(result, Landed):
                into.landed(job, result.landing)
            elif result.needs_botocore:
                self.needs_botocore.append(job)  # and the rest of the run stays in the parent
            else:
                into.failed(job, result.reason)

    # -- objects shared between workers ----------------------------------------------------

    def _offered(self, worker: _Worker, offer: Offer) -> None:
        job = self._jobs.get(offer.task)
        if job is None or self._owner_of.get(offer.task) is not worker:
            return
        # Its own share is the rest.
        handed_out = self._shares.offer(job, offer)
        worker.hold(worker.outstanding, offer.task, worker.outstanding[offer.task] - handed_out)

    def _span_done(self, span_id: int, crc: int | None, part_hash: bytes | None = None) -> None:
        """Tell the owner how its range went (*crc* None: fetch it yourself)."""
        if (answered := self._shares.answered(span_id)) is None:
            return  # its owner died: the object starts over elsewhere
        span, advanced = answered
        if crc is None and advanced:  # the owner fetches it again, and reports that
            self._advanced[span.task] = self._advanced.get(span.task, 0) - advanced
            self._events.progress(self._jobs[span.task], -advanced)
        self._send(
            self._owner_of[span.task], SpanResult(span.task, span.start, span.end, crc, part_hash)
        )

    def _died(self, worker: _Worker) -> None:
        """A worker went away without Bye: hand its tasks to the others, once."""
        if not worker.alive:
            return
        worker.alive = False
        code = worker.child.exit_code()
        self._events.note(
            f"note: worker process {worker.child.pid} stopped"
            + (f" (exit {code})" if code is not None else "")
            + f"; its {len(worker.outstanding)} objects go to the others"
            + (f", {len(worker.spans)} ranges back to their owners" if worker.spans else "")
        )
        for task_id in list(worker.outstanding):
            worker.release(worker.outstanding, task_id)
            task = self._tasks[task_id]
            self._owner_of.pop(task_id, None)
            self._shares.forget(task_id)
            self._events.progress(self._jobs[task_id], -self._advanced.pop(task_id, 0))
            self._attempts[task_id] = self._attempts.get(task_id, 0) + 1
            if self._attempts[task_id] > 1:
                self._tasks.pop(task_id)
                self._events.failed(self._jobs.pop(task_id), "its worker process died, twice")
                continue
            # Its partial records were streamed to the parent; the new worker
            # sweeps the folder, so what the dead one left unrecorded goes too.
            self._pending.appendleft(
                Task(task.id, task.obj, task.parts, task.part_size, (), True, share=task.share)
            )
        # Ranges it was fetching for objects other workers own: back to them.
        for span_id in list(worker.spans):
            worker.release(worker.spans, span_id)
            self._span_done(span_id, None)
        self._dispatch()
