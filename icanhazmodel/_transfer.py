"""Fetching one byte range; the last range of an object hands it to landing.

An engine slot (``_engine``) hands each work item to :meth:`Transfers.run`.
What the bytes are checked against is ``_verify``'s; the temp file's life
is ``_tempfiles``'s; what happens after the last range (commit, mend, start
over, report) is ``_landing``'s. Small objects are
read whole into memory, checked, and written in one hop to a writer thread.
Larger ones stream, batch by batch, to their offsets in a temp file; the
batch's checksum is computed in the same thread hop, off the event loop.

What can go wrong, and what happens:

- a request that fails or is throttled: retried by the run's one policy
  (``_retry``), on whichever path it went;
- a stream that breaks: resumed with a new request after the last byte
  received (``Range``), up to ``retries`` times, pinned to the listed
  version with ``If-Match`` so two versions are never spliced together;
- the object changes in S3 mid-download (412), the bytes do not match S3's
  checksum, or the server ignores a byte range: the object starts over from
  scratch as one plain GET, once (or only its damaged parts are fetched
  again, see ``_landing``); then it is reported;
- anything else: the object is reported failed and the run goes on. Only
  errors that stop every write (disk full, read-only) end the run.

No file reaches its final path before its size and checksum are checked.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial

import anyio

from ._budget import MIN_COST, STREAM_COST
from ._checksums import (
    SIZE_ONLY,
    ChecksumMismatch,
    Digest,
    PartsDigest,
    by_crt,
    crc_in_python,
    load_crt_soon,
    make_digest,
)
from ._events import TransferEvents
from ._files import PartialFile, Tree, describe_os_error, stop_if_fatal, write_whole
from ._jobs import FileJob, Work, job_work
from ._landing import Lander
from ._models import RemoteObject
from ._objects import (
    Body,
    NeedsBotocore,
    ObjectChanged,
    ObjectError,
    ObjectGone,
    ObjectSource,
    RangeIgnored,
    TransientObjectError,
)
from ._progress import Notes
from ._resume import resume
from ._retry import Retrying, RetryPolicy, backoff
from ._tempfiles import TempFiles
from ._verify import Verifier
from ._window import Window
from ._writer import Writer

MiB = 1 << 20
# Objects up to this size are read whole into memory and written in one go:
# one thread hop per file instead of three.
SMALL_OBJECT = 1 * MiB
# Objects up to this size are checked and written on the event loop's thread
# (Writer.brief) while the filesystem answers fast: hashing and writing them
# takes tens of microseconds, less than the thread hop's GIL traffic.
BRIEF_WRITE = 128 * 1024
# Bytes gathered from the socket before each hop to a writer thread.
WRITE_BATCH = MiB // 2
# The most one read from the socket may return; with the batch, this bounds
# what each request in flight holds (measured: ~1.5 MiB per request).
READ_SIZE = 256 * 1024


@dataclass(slots=True)
class _Cursor:
    """How far one range has got; survives a broken stream."""

    offset: int


class Transfers:
    """Everything a worker needs to move bytes from S3 to disk."""

    def __init__(
        self,
        s3: ObjectSource,
        tree: Tree,
        events: TransferEvents,
        writer: Writer,
        *,
        retries: int,
        verify: bool,
        notes: Notes | None = None,
        window: Window,
        pinned: bool = False,
    ) -> None:
        # Requests in flight: told of the bytes moved and of every failure.
        self.window = window
        # Every request through the one retry policy; streams are resumed here.
        self.s3 = Retrying(s3, RetryPolicy.from_retries(retries), self.window.trouble)
        self.notes = notes or Notes()
        self.writer = writer
        self.tree = tree
        self.events = events
        self.verifier = Verifier(self.s3, writer, enabled=verify)
        self.temp_files = TempFiles(tree, events, writer)
        self.lander = Lander(
            self.s3, self.verifier, self.temp_files, events, writer, self.run, pinned=pinned
        )
        self.retries = retries

    def check_fatal(self, exc: OSError) -> None:
        """Stop the run on errors that every further write would hit too."""
        stop_if_fatal(exc, self.tree.root)

    # -- one object, then one work item -------------------------------------------

    async def prepare(self, job: FileJob) -> list[Work]:
        """Ready *job* to fetch, wherever it runs: adopt a temp file an
        earlier run left (told as resumed), cut its ranges at its upload's
        parts; then its work items, the ranges not on disk yet."""
        if job.resume_candidates:
            await self.writer.call(resume, self, job)
            if job.state.resumed:
                self.events.resumed(job, job.state.resumed)
        if job.obj.size > SMALL_OBJECT:  # a smaller one is read whole
            await self.verifier.align_to_parts(job)
        return job_work(job)

    async def run(self, work: Work) -> None:
        job = work.job
        if read_whole(job):
            await self._settle(job, partial(self._fetch_small, job))
        else:
            await self._settle(job, partial(self._fetch_range, work))

    async def took_span(
        self, job: FileJob, start: int, end: int, crc: int, part_hash: bytes | None
    ) -> None:
        """Another worker process wrote [start, end) of *job* (one of the
        ranges offered): count it as this process's own range."""

        async def record() -> None:
            job.state.written += end - start
            if part_hash is not None and job.check.part_hashes is not None:
                job.check.part_hashes[start] = part_hash
            self._range_done(job, start, end, crc)
            await self.verifier.hash_in_order(job)

        await self._settle(job, record)

    async def _settle(self, job: FileJob, step: Callable[[], Awaitable[None]]) -> None:
        """Run one range's *step*, then land the object if it was the last."""
        if job.state.error is None and job.state.restart is None:
            try:
                await step()
            except (ObjectChanged, ChecksumMismatch, RangeIgnored) as exc:
                job.state.restart = str(exc)
            except ObjectGone as exc:
                job.state.error = self.lander.gone(job, exc)
            except ObjectError as exc:
                job.state.error = str(exc)
                job.state.needs_botocore = isinstance(exc, NeedsBotocore)
            except OSError as exc:
                self.check_fatal(exc)
                job.state.error = describe_os_error(exc, job.final.parent)
        job.state.ranges_left -= 1
        if job.state.ranges_left == 0:
            await self.lander.finish(job)

    # -- objects shared between worker processes ------------------------------------

    async def open_to_share(self, job: FileJob) -> bool:
        """Make *job*'s temp file and learn its checks before any range runs,
        so its ranges can go to other processes (see ``_messages.Span``).
        False: it stays here whole, and its first range meets the problem."""
        if not job.multi_range:
            return False
        try:
            await self._open_partial(job)
        except (ObjectError, OSError):
            return False
        return job.state.partial_record is not None and job.check.expectation is not None

    async def fetch_span(
        self, job: FileJob, tmp_name: str, start: int, end: int
    ) -> tuple[int, bytes | None] | None:
        """Fetch [start, end) of an object another process owns into its temp
        file *tmp_name*: (the range's CRC, its part hash) once on disk, None
        if not (the owner then fetches it itself). Nothing is created, landed
        or removed here, and nothing is recorded for resuming."""
        try:
            joined = await self.writer.call(
                partial(PartialFile, self.tree, job.parts, job.obj.size, join=tmp_name)
            )
        except OSError:
            return None
        job.state.partial = joined
        outcome: tuple[int, bytes | None] | None = None
        try:
            await self._fetch_range(Work(job, start, end))
        except ObjectError:
            pass
        except OSError as exc:
            self.check_fatal(exc)
        else:
            if job.state.done_ranges:
                outcome = (job.state.done_ranges[-1][2], (job.check.part_hashes or {}).get(start))
        # Not in a finally: a cancelled write may still be in a writer
        # thread, and its descriptor must not be closed (and reused) under it.
        joined.keep()
        return outcome

    # -- small objects: whole in memory -------------------------------------------

    async def _fetch_small(self, job: FileJob) -> None:
        chunks: list[bytes] = []
        breaks = 0
        while True:
            # What arrived before a break is kept: the next request asks for the rest.
            received = sum(len(chunk) for chunk in chunks)
            body = await self.s3.open_body(
                job.obj, start=received, want_checksum=self.verifier.enabled
            )
            job.state.version_id = job.state.version_id or body.headers.version_id
            try:
                await self.verifier.expect_from_body(job, body)
                await self._read_into(body, chunks, received, job.obj.size)
                break
            except TransientObjectError as exc:
                breaks = await self._broke(breaks, exc)
        write = self.writer.brief if job.obj.size <= BRIEF_WRITE else self.writer.call
        job.state.landed = await write(self._check_and_write_small, job, chunks)
        job.state.written = job.obj.size
        self.events.progress(job, job.obj.size)
        self.window.moved(job.obj.size)

    async def _read_into(self, body: Body, chunks: list[bytes], received: int, size: int) -> None:
        try:
            while chunk := await body.read(READ_SIZE):
                chunks.append(chunk)
                received += len(chunk)
                if received > size:
                    raise ObjectError(f"S3 sent more than the listed {size} bytes")
        finally:
            body.close()
        if received != size:
            raise TransientObjectError(f"stream ended {size - received} bytes early")

    async def _broke(self, breaks: int, exc: TransientObjectError) -> int:
        """A stream broke mid-body (the request itself was answered): resume
        it, after a pause, unless it has broken *retries* times already."""
        self.window.trouble()
        if breaks >= self.retries:
            times = "once" if breaks == 0 else f"{breaks + 1} times"
            raise ObjectError(f"the download broke {times}: {exc}") from exc
        await anyio.sleep(backoff(breaks))
        return breaks + 1

    def _check_and_write_small(self, job: FileJob, chunks: list[bytes]) -> os.stat_result:
        self.verifier.check_small(job, chunks)
        return write_whole(self.tree, job.parts, chunks, job.obj.last_modified)

    # -- larger objects: ranges streamed into a temp file -------------------------

    async def _open_partial(self, job: FileJob) -> PartialFile:
        async with job.state.lock:
            # Another range of this object may have failed while we waited.
            if job.state.restart is not None:
                raise ObjectChanged(job.state.restart)
            if job.state.error is not None:
                raise ObjectError(job.state.error)
            if job.multi_range and job.check.expectation is None:
                await self.verifier.expect_from_head(job)
            if job.state.partial is None:
                await self.writer.call(self.temp_files.create, job)
            assert job.state.partial is not None
            return job.state.partial

    async def _fetch_range(self, work: Work) -> None:
        job = work.job
        partial = await self._open_partial(job)
        cursor = _Cursor(work.start)
        digest = Digest(job.check.crc_algorithm) if job.multi_range else None
        expectation = job.check.expectation or SIZE_ONLY
        part_hash = Digest(expectation.part_algorithm) if job.hashes_parts else None
        breaks = 0
        while cursor.offset < work.end and job.state.error is None and job.state.restart is None:
            try:
                await self._stream(job, partial, cursor, work.end, digest, part_hash)
            except TransientObjectError as exc:
                breaks = await self._broke(breaks, exc)
        if digest is not None and cursor.offset == work.end:
            if part_hash is not None and job.check.part_hashes is not None:
                job.check.part_hashes[work.start] = part_hash.value()
            self._range_done(job, work.start, work.end, digest.crc)
            await self.verifier.hash_in_order(job)

    def _range_done(self, job: FileJob, start: int, end: int, crc: int) -> None:
        job.state.done_ranges.append((start, end, crc))
        if job.state.partial_record is not None:
            self.events.range_done(job.state.partial_record, start, end, crc)

    async def _stream(
        self,
        job: FileJob,
        partial: PartialFile,
        cursor: _Cursor,
        end: int,
        range_digest: Digest | PartsDigest | None,
        part_hash: Digest | None = None,
    ) -> None:
        """GET [cursor, end) into the file, moving the cursor past what landed.

        On a broken stream the bytes already received are still written
        (they belong to the pinned version), so the retry resumes after them.
        """
        first = cursor.offset == 0 and not job.multi_range
        body = await self.s3.open_body(
            job.obj, start=cursor.offset, end=end, want_checksum=first and self.verifier.enabled
        )
        job.state.version_id = job.state.version_id or body.headers.version_id
        if first:
            expectation = await self.verifier.expect_from_body(job, body)
            job.check.digest = make_digest(expectation, job.check.layout)
        digest = range_digest if job.multi_range else job.check.digest
        asked = end - cursor.offset
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
                    await self._write(job, partial, cursor, batch, digest, part_hash)
                    batch, batched = [], 0
            if await body.read(1):
                # Read to the end: a body longer than asked for is another
                # version (a store that ignores If-Match), never cut to fit.
                raise ObjectChanged(
                    f"'{job.obj.key}' sent more than the {asked} bytes asked for: "
                    "it changed in S3 during the download"
                )
        except TransientObjectError:
            if batch:
                await self._write(job, partial, cursor, batch, digest, part_hash)
            raise
        finally:
            body.close()
        if batch:
            await self._write(job, partial, cursor, batch, digest, part_hash)

    async def _write(
        self,
        job: FileJob,
        partial: PartialFile,
        cursor: _Cursor,
        batch: list[bytes],
        digest: Digest | PartsDigest | None,
        part_hash: Digest | None = None,
    ) -> None:
        size = sum(len(chunk) for chunk in batch)
        await self.writer.call(_write_and_hash, partial, cursor.offset, batch, digest, part_hash)
        cursor.offset += size
        job.state.written += size
        self.events.progress(job, size)
        self.window.moved(size)

    # -- landing --------------------------------------------------------------------


def read_whole(job: FileJob) -> bool:
    """Whether *job* is read into memory whole (small), not streamed to disk."""
    return job.obj.size <= SMALL_OBJECT and not job.multi_range


def load_crt_for(jobs: list[FileJob], verify: bool, more: bool) -> None:
    """Start loading awscrt if fetching *jobs* (and, *more*, the listing's
    pages to come) checks more CRC bytes than Python is worth."""
    crcs = sum(job.obj.size for job in jobs if computes_crt_crc(job.obj, verify))
    if crcs and (more or not crc_in_python(crcs)):
        load_crt_soon()


def computes_crt_crc(obj: RemoteObject, verify: bool) -> bool:
    """Whether fetching *obj* computes a CRC that awscrt computes fast (or
    Python, for a run's first few bytes; see _checksums.PY_CRC_BUDGET): a
    streamed object's ranges each get one (RANGE_CRC), and S3's own may be one."""
    return obj.size > SMALL_OBJECT or (verify and any(map(by_crt, obj.checksum_algorithms)))


def holds(item: object) -> int:
    """The most bytes *item* holds while in flight, for the engine's budget:
    a small object its size, a streamed range (or another process's span)
    a stream's worth."""
    if isinstance(item, Work) and read_whole(item.job):
        return max(MIN_COST, item.job.obj.size)
    return STREAM_COST


def _write_and_hash(
    partial: PartialFile,
    offset: int,
    batch: list[bytes],
    digest: Digest | PartsDigest | None,
    part_hash: Digest | None = None,
) -> None:
    # One pwritev for the batch (one GIL hand-over), and no joined copy: a
    # copy per batch per range adds up to many MiB of peak memory.
    partial.write(offset, batch)
    for running in (digest, part_hash):
        if running is not None:
            for chunk in batch:
                running.update(chunk)
