"""The download pipeline: one producer, a bounded stream, a pool of workers.

The producer pages through the listing and turns each object into byte
ranges (work items), sent into a memory object stream of bounded size, so the
listing is never held whole and downloading starts with the first page. Each
worker takes one range at a time and streams it to disk; the worker that
completes an object's last range lands the file. The worker count is the
run's whole request budget: a big file and many small ones share it.
"""

from __future__ import annotations

import errno
import random
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import anyio
from anyio.abc import ObjectReceiveStream, ObjectSendStream
from anyio.to_thread import run_sync

from ._config import FetchConfig
from ._errors import DestinationError, IcanhazmodelError, NothingToFetch
from ._files import EscapesModelDir, PartialFile, PathConflict, Tree, write_whole
from ._keys import RefusedKey, directory_prefix, is_dir_marker, key_parts
from ._models import FetchResult, ObjectReport, RemoteObject, Status, Verification
from ._plan import ConflictTracker, byte_ranges, part_size_for
from ._progress import Reporter
from ._s3 import S3, ObjectError, TransientObjectError

MiB = 1 << 20
# Objects up to this size are read whole into memory and written in one go:
# one thread hop per file instead of three.
SMALL_OBJECT = 1 * MiB
# Bytes gathered from the socket before each hop to a writer thread.
WRITE_BATCH = 1 * MiB
READ_SIZE = 1 * MiB
BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0

# Errors that mean no further file can be written: stop the run rather than
# fail every remaining object one by one.
_FATAL_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT}


@dataclass(eq=False)
class FileJob:
    """One object being downloaded, possibly as several ranges."""

    obj: RemoteObject
    parts: tuple[str, ...]
    final: Path
    ranges_left: int
    lock: anyio.Lock = field(default_factory=anyio.Lock)
    partial: PartialFile | None = None
    written: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Work:
    """One byte range [start, end) of one object: the unit a worker takes."""

    job: FileJob
    start: int
    end: int


@dataclass
class Tally:
    """What the run did so far; becomes the FetchResult."""

    listed: int = 0
    folders: int = 0
    downloaded: int = 0
    skipped: int = 0
    refused: int = 0
    failed: int = 0
    bytes_downloaded: int = 0
    verification: Counter[str] = field(default_factory=Counter)
    problems: list[ObjectReport] = field(default_factory=list)


def _describe_os_error(exc: OSError) -> str:
    if isinstance(exc, PathConflict | EscapesModelDir):
        return str(exc)
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _most_telling(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The one failure worth reporting from a task group's failures.

    One task's error cancels the others, so there is usually exactly one;
    an interrupt or one of our own errors wins over anything else.
    """
    flat: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(exc.exceptions)
        else:
            flat.append(exc)
    for kind in (KeyboardInterrupt, IcanhazmodelError):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    return flat[0]


async def _backoff(attempt: int) -> None:
    """Capped exponential backoff with full jitter, as botocore's standard mode."""
    await anyio.sleep(random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**attempt)))


class Run:
    """One fetch: owns the tally, the tree under model_dir and the workers."""

    def __init__(self, config: FetchConfig, s3: S3, tree: Tree, reporter: Reporter) -> None:
        self.config = config
        self.s3 = s3
        self.tree = tree
        self.reporter = reporter
        self.tally = Tally()
        self._conflicts = ConflictTracker()
        # Temp files being assembled, removed if the run stops early.
        self._partials: set[PartialFile] = set()

    # -- the whole run --------------------------------------------------------

    async def execute(self) -> FetchResult:
        started = time.monotonic()
        exact = None
        if not self.config.key.endswith("/"):
            head = await self.s3.head(self.config.key)
            exact = head.obj if head else None
        send, receive = anyio.create_memory_object_stream[Work](self.config.concurrency)
        try:
            async with anyio.create_task_group() as tg:
                for _ in range(self.config.concurrency):
                    tg.start_soon(self._work, receive.clone())
                receive.close()
                await self._produce(send, exact)
        except BaseExceptionGroup as group:
            raise _most_telling(group) from None
        finally:
            # Synchronous on purpose: this also runs when the run is cancelled,
            # where an await would be cancelled again before it could clean up.
            for partial in self._partials:
                partial.discard()
            self._partials.clear()
        return self._result(time.monotonic() - started)

    def _result(self, seconds: float) -> FetchResult:
        t = self.tally
        return FetchResult(
            downloaded=t.downloaded,
            skipped=t.skipped,
            refused=t.refused,
            failed=t.failed,
            bytes_downloaded=t.bytes_downloaded,
            seconds=seconds,
            folders=t.folders,
            verification=dict(t.verification),
            problems=tuple(t.problems),
        )

    # -- producer -------------------------------------------------------------

    async def _produce(self, send: ObjectSendStream[Work], exact: RemoteObject | None) -> None:
        async with send:
            if exact is not None:
                await self._plan_page([exact], send)
                return
            prefix = directory_prefix(self.config.key)
            async for page in self.s3.list_pages(prefix):
                await self._plan_page(page, send)
            if self.tally.listed == 0:
                raise NothingToFetch(
                    f"nothing at s3://{self.s3.bucket}/{self.config.key} "
                    f"or under s3://{self.s3.bucket}/{prefix}"
                )

    async def _plan_page(self, page: list[RemoteObject], send: ObjectSendStream[Work]) -> None:
        self.tally.listed += len(page)
        self.reporter.listed(len(page), sum(obj.size for obj in page))
        for obj in page:
            if is_dir_marker(obj.key, obj.size):
                await self._make_directory(obj)
                continue
            job = self._job_for(obj)
            if job is None:
                continue
            self.reporter.file_started(obj.key, obj.size)
            part_size = part_size_for(obj.size, self.config.concurrency)
            ranges = (
                byte_ranges(obj.size, part_size) if obj.size > SMALL_OBJECT else [(0, obj.size)]
            )
            job.ranges_left = len(ranges)
            for start, end in ranges:
                await send.send(Work(job, start, end))

    def _job_for(self, obj: RemoteObject) -> FileJob | None:
        try:
            parts = key_parts(obj.key)
        except RefusedKey as exc:
            self._refuse(obj, f"key {exc}")
            return None
        clash = self._conflicts.add(parts, is_dir=False)
        if clash is not None:
            self._refuse(obj, f"its path is also the directory of key '{clash}/...'")
            return None
        return FileJob(obj=obj, parts=parts, final=self.tree.path(parts), ranges_left=1)

    async def _make_directory(self, obj: RemoteObject) -> None:
        try:
            parts = key_parts(obj.key, is_dir_marker=True)
        except RefusedKey as exc:
            self._refuse(obj, f"key {exc}")
            return
        clash = self._conflicts.add(parts, is_dir=True)
        if clash is not None:
            self._refuse(obj, f"its path is also the file of key '{clash}'")
            return
        try:
            await run_sync(self.tree.ensure_dir, parts)
        except OSError as exc:
            self._check_fatal(exc)
            self._fail(obj, _describe_os_error(exc))
            return
        self.tally.folders += 1
        self.reporter.file_done(obj.key)

    # -- outcomes -------------------------------------------------------------

    def _refuse(self, obj: RemoteObject, reason: str) -> None:
        self.tally.refused += 1
        self.tally.problems.append(ObjectReport(obj.key, Status.REFUSED, reason, size=obj.size))
        self.reporter.message(f"refused: {obj.key!r}: {reason}")
        self.reporter.file_done(obj.key)

    def _fail(self, obj: RemoteObject, reason: str, path: Path | None = None) -> None:
        self.tally.failed += 1
        where = str(path) if path else None
        self.tally.problems.append(ObjectReport(obj.key, Status.FAILED, reason, where, obj.size))
        self.reporter.message(f"failed: {obj.key!r}: {reason}")
        self.reporter.file_done(obj.key)

    def _landed(self, job: FileJob, level: Verification) -> None:
        self.tally.downloaded += 1
        self.tally.bytes_downloaded += job.written
        self.tally.verification[level.value] += 1
        self.reporter.file_done(job.obj.key)

    def _check_fatal(self, exc: OSError) -> None:
        if exc.errno in _FATAL_ERRNOS:
            raise DestinationError(
                f"cannot write under '{self.tree.root}': {_describe_os_error(exc)}"
            ) from exc

    # -- workers --------------------------------------------------------------

    async def _work(self, receive: ObjectReceiveStream[Work]) -> None:
        async with receive:
            async for work in receive:
                await self._do(work)

    async def _do(self, work: Work) -> None:
        job = work.job
        if job.error is None:
            try:
                if job.obj.size <= SMALL_OBJECT:
                    await self._fetch_small(job)
                else:
                    await self._fetch_range(work)
            except ObjectError as exc:
                job.error = str(exc)
            except OSError as exc:
                self._check_fatal(exc)
                job.error = _describe_os_error(exc)
        job.ranges_left -= 1
        if job.ranges_left == 0:
            await self._finish(job)

    async def _finish(self, job: FileJob) -> None:
        """Called once per object, after its last range: land it or fail it."""
        partial, job.partial = job.partial, None
        if job.error is None and job.written != job.obj.size:
            job.error = f"got {job.written} bytes, expected {job.obj.size}"
        if job.error is None and partial is not None:
            try:
                await run_sync(partial.commit, job.obj.last_modified)
            except OSError as exc:
                self._check_fatal(exc)
                job.error = _describe_os_error(exc)
            finally:
                self._partials.discard(partial)
        if job.error is None:
            self._landed(job, Verification.SIZE_ONLY)
            return
        if partial is not None:
            self._partials.discard(partial)
            await run_sync(partial.discard)
        self._fail(job.obj, job.error, job.final)

    async def _fetch_small(self, job: FileJob) -> None:
        """GET a small object whole into memory, then write it in one hop."""
        obj = job.obj
        attempt = 0
        while True:
            try:
                chunks = await self._read_all(obj)
                break
            except TransientObjectError as exc:
                if attempt >= self.config.retries:
                    raise ObjectError(f"gave up after {attempt + 1} attempts: {exc}") from exc
                await _backoff(attempt)
                attempt += 1
        await run_sync(self._write_small, job, chunks)
        job.written = obj.size
        self.reporter.advanced(obj.key, obj.size)

    def _write_small(self, job: FileJob, chunks: list[bytes]) -> None:
        self.tree.ensure_dir(job.parts[:-1])
        write_whole(job.final, chunks, job.obj.last_modified)

    async def _read_all(self, obj: RemoteObject) -> list[bytes]:
        body = await self.s3.open_body(obj)
        try:
            chunks = []
            received = 0
            while chunk := await body.read(READ_SIZE):
                chunks.append(chunk)
                received += len(chunk)
                if received > obj.size:
                    raise ObjectError(f"S3 sent more than the listed {obj.size} bytes")
        finally:
            body.close()
        if received != obj.size:
            raise TransientObjectError(f"got {received} of {obj.size} bytes")
        return chunks

    async def _open_partial(self, job: FileJob) -> PartialFile:
        async with job.lock:
            if job.partial is None:
                job.partial = await run_sync(self._create_partial, job)
                self._partials.add(job.partial)
            return job.partial

    def _create_partial(self, job: FileJob) -> PartialFile:
        self.tree.ensure_dir(job.parts[:-1])
        return PartialFile(job.final, job.obj.size)

    async def _fetch_range(self, work: Work) -> None:
        """Stream one range to its offset, resuming where a broken stream stopped."""
        job = work.job
        partial = await self._open_partial(job)
        cursor = _Cursor(work.start)
        failures = 0
        while cursor.offset < work.end and job.error is None:
            try:
                await self._stream_range(job, partial, cursor, work.end)
            except TransientObjectError as exc:
                if failures >= self.config.retries:
                    raise ObjectError(f"gave up after {failures + 1} attempts: {exc}") from exc
                await _backoff(failures)
                failures += 1

    async def _stream_range(
        self, job: FileJob, partial: PartialFile, cursor: _Cursor, end: int
    ) -> None:
        """GET [cursor, end) into the file, moving the cursor past what landed.

        On a broken stream the bytes already received are still written
        (they belong to the pinned version), so the retry resumes after them.
        """
        body = await self.s3.open_body(job.obj, start=cursor.offset, end=end)
        batch: list[bytes] = []
        batched = 0
        try:
            while cursor.offset + batched < end:
                chunk = await body.read(min(READ_SIZE, end - cursor.offset - batched))
                if not chunk:
                    raise TransientObjectError(
                        f"stream ended {end - cursor.offset - batched} bytes early"
                    )
                batch.append(chunk)
                batched += len(chunk)
                if batched >= WRITE_BATCH:
                    await self._write_batch(job, partial, cursor, batch)
                    batch, batched = [], 0
        except TransientObjectError:
            if batch:
                await self._write_batch(job, partial, cursor, batch)
            raise
        finally:
            body.close()
        if batch:
            await self._write_batch(job, partial, cursor, batch)

    async def _write_batch(
        self, job: FileJob, partial: PartialFile, cursor: _Cursor, batch: list[bytes]
    ) -> None:
        size = sum(len(chunk) for chunk in batch)
        await run_sync(partial.write, cursor.offset, batch)
        cursor.offset += size
        job.written += size
        self.reporter.advanced(job.obj.key, size)


@dataclass(slots=True)
class _Cursor:
    """How far one range has been written; survives a broken stream."""

    offset: int
