"""A worker process: fetches the objects its parent sends, on its own event loop.

Forked by the run's fork server, or started as an interpreter of its own
that calls :func:`serve_on` (see ``_launch``), with one end of a socket
pair. It loads the direct GET path only (aiohttp and icanhazmodel's own
SigV4, never botocore), its own connection pool and writer threads, and
runs the same transfer code as a one-process run. It never writes the
manifest and draws no bar: progress, results, resume records and notes go
back to the parent in batches.

Workers run in a process group of their own, so a Ctrl-C reaches only the
parent (they ignore SIGINT anyway); they stop when the parent says so, or
when the parent's end of the pipe closes, so no worker outlives a parent
killed with ``kill -9``.
"""

from __future__ import annotations

import asyncio
import signal
from functools import partial
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectSendStream

from ._direct import DirectGets, HandedCredentials
from ._directstore import DirectStore
from ._engine import Engine, Step
from ._errors import IcanhazmodelError
from ._events import Landing
from ._files import Tree
from ._jobs import Check, FileJob, Work
from ._manifest import PartialRecord
from ._messages import (
    Abort,
    Bye,
    Events,
    Failed,
    Fatal,
    Inbox,
    Landed,
    NewCredentials,
    NoMoreTasks,
    Offer,
    Span,
    SpanDone,
    SpanResult,
    Task,
    WorkerSettings,
    send_message,
)
from ._progress import Notes
from ._transfer import Transfers
from ._window import Window
from ._writer import Writer

# How often a worker sends what happened: often enough for smooth bars,
# rarely enough that messages cost nothing next to the bytes. Answers go
# sooner when the worker runs low on work (see _answered).
FLUSH_SECONDS = 0.05


class _Stop(Exception):
    """The parent said Abort, or went away."""


class Worker:
    """One worker process's run: it hears its Transfers' events and sends them
    to the parent in batches, where the pool replays them into the run's ledger."""

    def __init__(self, conn: Connection, settings: WorkerSettings) -> None:
        self._conn = conn
        self._settings = settings
        self._events = Events()
        self._ids: dict[str, int] = {}  # key -> task id (a restart is a new job, same key)
        self._span_ids: dict[FileJob, int] = {}  # a job fetching a span -> the span's id
        self._notes = Notes()
        self._credentials = HandedCredentials(settings.credentials)
        self._tasks: asyncio.Queue[Task | Span | None] = asyncio.Queue()
        self._stopped = asyncio.Event()
        self._shared: dict[int, FileJob] = {}  # task id -> an object whose ranges it offered
        self._engine: Engine | None = None
        self._parent_gone = False
        self._transfers: Transfers | None = None
        self._flush_queued = False
        self._window = Window(settings.concurrency, adaptive=settings.adaptive)
        self._window.on_change = partial(self.in_flight, 0)

    # -- TransferEvents (batched for the parent) -----------------------------------

    def _task_of(self, job: FileJob) -> int | None:
        span = self._span_ids.get(job)
        return span if span is not None else self._ids.get(job.obj.key)

    def progress(self, job: FileJob, nbytes: int) -> None:
        task = self._task_of(job)
        if task is not None:
            self._events.progress[task] = self._events.progress.get(task, 0) + nbytes

    def resumed(self, job: FileJob, nbytes: int) -> None:
        task = self._ids.get(job.obj.key)
        if task is not None:
            self._events.resumed[task] = self._events.resumed.get(task, 0) + nbytes

    def note(self, text: str) -> None:
        self._events.notes.append(text)

    def landed(self, job: FileJob, landing: Landing) -> None:
        task = self._ids.pop(job.obj.key)
        self._shared.pop(task, None)
        self._events.results.append(Landed(task, landing))
        self._answered()

    def failed(self, job: FileJob, reason: str) -> None:
        task = self._ids.pop(job.obj.key)
        self._shared.pop(task, None)
        self._events.results.append(Failed(task, reason, needs_botocore=job.state.needs_botocore))
        self._answered()

    def _answered(self) -> None:
        """Send the answers at the loop's next turn (with whatever else is
        answered by then) if this worker holds no more tasks than it has
        requests in flight, or has answered that many: the parent refills it
        as they arrive. Waiting for the timer instead left a worker of small
        objects idle most of the time (20,000 x 16 KiB at -P 2: 16.7 s, not 6.5 s)."""
        concurrency = self._window.level
        if not self._flush_queued and (
            len(self._ids) <= concurrency or len(self._events.results) >= concurrency
        ):
            self._flush_queued = True
            asyncio.get_running_loop().call_soon(self._flush)

    def range_done(self, partial: PartialRecord, start: int, end: int, crc: int) -> None:
        self._events.ranges.append((partial, start, end, crc))

    def in_flight(self, source: int, level: int) -> None:
        self._events.level = level  # the parent knows which worker said it

    def partial_dropped(self, tmp_name: str) -> None:
        self._events.drops.append(tmp_name)  # one append: safe from a writer thread

    # -- talking to the parent ----------------------------------------------------

    def _flush(self) -> None:
        self._flush_queued = False
        while (note := self._notes.pop()) is not None:
            self._events.notes.append(note)
        if self._events:
            events, self._events = self._events, Events()
            self._send(events)

    def _send(self, message: Any) -> None:
        """Send *message* to the parent; if it is gone (killed, say), stop as on
        Abort, without a word: nobody is left to read one."""
        if self._parent_gone:
            return
        try:
            send_message(self._conn, message)
        except OSError:  # BrokenPipeError, ConnectionResetError
            self._parent_gone = True
            self._stopped.set()

    async def _flush_periodically(self) -> None:
        while True:
            await anyio.sleep(FLUSH_SECONDS)
            self._flush()

    def _on_message(self, message: Any) -> None:
        if isinstance(message, Task | Span):
            self._tasks.put_nowait(message)
        elif isinstance(message, SpanResult):
            assert self._engine is not None  # results follow offers, made while it runs
            self._engine.start_soon(partial(self._took_span, message))
        elif isinstance(message, NewCredentials):
            self._credentials.frozen = message.credentials
        elif isinstance(message, NoMoreTasks):
            self._tasks.put_nowait(None)
        else:  # Abort, or the parent went away
            self._stopped.set()

    def _heard(self, messages: list[Any] | None) -> None:
        if messages is None:  # the parent went away (killed, say): stop as on Abort
            self._parent_gone = True
            self._on_message(Abort())
            return
        for received in messages:  # a list, or Abort alone
            for message in received if isinstance(received, list) else [received]:
                self._on_message(message)

    # -- the run ------------------------------------------------------------------------

    async def serve(self) -> None:
        settings = self._settings
        loop = asyncio.get_running_loop()
        inbox = Inbox(self._conn, self._heard)
        # SIGTERM to the whole group (systemd, a container's stop): stop as on Abort.
        loop.add_signal_handler(signal.SIGTERM, self._stopped.set)
        gets = DirectGets.for_route(
            settings.route,
            self._credentials,
            pool_size=settings.concurrency + 2,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
            trust=settings.trust,
            proxies=settings.proxies,
            request_payer=settings.request_payer,
        )
        source = DirectStore(gets, settings.bucket, alone=True)
        tree = Tree(Path(settings.root))
        tree.keep_temp = lambda: set(settings.keep_temp)
        writer = Writer()
        transfers = Transfers(
            source,
            tree,
            self,
            writer,
            retries=settings.retries,
            verify=settings.verify,
            notes=self._notes,
            window=self._window,
            pinned=settings.pinned,
        )
        self._transfers = transfers
        try:
            await self._run(transfers)
            self._flush()
            self._send(Bye())
        except _Stop:
            transfers.temp_files.abandon(keep_resumable=True)
            self._flush()
        except IcanhazmodelError as exc:
            transfers.temp_files.abandon(keep_resumable=False)
            self._flush()
            self._send(Fatal(type(exc).__name__, str(exc)))
        finally:
            inbox.close()
            writer.close()
            tree.close()
            await source.aclose()

    async def _run(self, transfers: Transfers) -> None:
        async with anyio.create_task_group() as outer:
            outer.start_soon(self._flush_periodically)
            outer.start_soon(self._watch_for_stop, outer.cancel_scope)
            async with Engine(
                transfers, self._window, streams=self._settings.streams
            ).running() as engine:
                self._engine = engine
                while (task := await self._tasks.get()) is not None:
                    if isinstance(task, Span):
                        await engine.put(partial(self._fetch_span, task, transfers))
                    else:
                        await self._take(task, transfers, engine)
            outer.cancel_scope.cancel()
        if self._stopped.is_set():
            raise _Stop

    async def _watch_for_stop(self, scope: anyio.CancelScope) -> None:
        await self._stopped.wait()
        scope.cancel()

    async def _take(self, task: Task, transfers: Transfers, engine: Engine) -> None:
        job = FileJob(
            obj=task.obj,
            parts=task.parts,
            tree=transfers.tree,
            part_size=task.part_size,
            resume_candidates=task.resume,
        )
        self._ids[task.obj.key] = task.id
        if task.sweep_again:
            transfers.tree.forget_sweep(task.parts[:-1])
        works = await transfers.prepare(job)
        if task.share and len(works) > 1:
            engine.start_soon(partial(self._share, task.id, job, works, engine.sender()))
            return
        for work in works:
            await engine.put(work)

    # -- objects spread over processes ----------------------------------------------

    async def _share(
        self, task: int, job: FileJob, works: list[Work], send: MemoryObjectSendStream[Work | Step]
    ) -> None:
        """Offer all but the first of *job*'s ranges to the parent, which
        spreads them over every worker (this one too); run the first here."""
        assert self._transfers is not None
        async with send:
            if not await self._transfers.open_to_share(job):
                for work in works:
                    await send.send(work)
                return
            assert job.state.partial is not None
            assert job.check.expectation is not None
            self._shared[task] = job
            self._events.offers.append(
                Offer(
                    task,
                    job.state.partial.tmp_name,
                    job.check.crc_algorithm,
                    job.check.expectation,
                    job.hashes_parts,
                    tuple((work.start, work.end) for work in works[1:]),
                )
            )
            self._flush()  # now: other processes are waiting for work
            await send.send(works[0])

    async def _took_span(self, result: SpanResult) -> None:
        """One of this worker's offered ranges is back: on disk, or to fetch here."""
        job = self._shared.get(result.task)
        if job is None or self._transfers is None:
            return
        if result.crc is None:
            await self._transfers.run(Work(job, result.start, result.end))
        else:
            await self._transfers.took_span(
                job, result.start, result.end, result.crc, result.part_hash
            )

    async def _fetch_span(self, span: Span, transfers: Transfers) -> None:
        job = FileJob(
            obj=span.obj,
            parts=span.parts,
            tree=transfers.tree,
            part_size=span.end - span.start,
            check=Check(
                expectation=span.expectation,
                crc_algorithm=span.crc_algorithm,
                part_hashes={} if span.hash_part else None,
            ),
        )
        self._span_ids[job] = span.id
        try:
            outcome = await transfers.fetch_span(job, span.tmp_name, span.start, span.end)
        finally:
            del self._span_ids[job]
        crc, part_hash = outcome or (None, None)
        self._events.results.append(SpanDone(span.id, crc, part_hash))
        self._flush()  # its owner may be waiting for nothing else


def serve_on(fd: int) -> None:
    """Serve the parent on socket *fd* (spawned, or forked by ``_launch``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    conn = Connection(fd)
    settings = conn.recv()
    assert isinstance(settings, WorkerSettings)
    asyncio.run(Worker(conn, settings).serve())
    conn.close()
