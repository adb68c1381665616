"""After an object's last range: land it, mend it, start it over, or report it.

The order of what is tried, once every range of a job is in:

1. check it (``_verify``) and commit its temp file onto the key's path;
2. a check by parts that failed: ask S3 each part's size; if the parts were
   not as guessed, check the bytes on disk again against the real layout;
3. still failing, where S3 told each part's checksum: fetch again only the
   parts that differ (once), then check the whole object again;
4. otherwise start the object over from scratch as one stream (once);
5. then report it failed, in the user's words.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import anyio

from ._checksums import ChecksumMismatch
from ._events import Landing, TransferEvents
from ._files import PartialFile, describe_os_error, stop_if_fatal
from ._jobs import FileJob, Work
from ._models import RemoteObject
from ._objects import ObjectError, ObjectSource, etag_problem
from ._tempfiles import TempFiles
from ._verify import MAX_RESTARTS, Verifier, parts_to_refetch
from ._writer import Writer

# Damaged parts fetched again at once, on top of the run's own requests.
REFETCHES_IN_FLIGHT = 4


class Lander:
    """The end of every job in one process's transfers."""

    def __init__(
        self,
        s3: ObjectSource,
        verifier: Verifier,
        temp_files: TempFiles,
        events: TransferEvents,
        writer: Writer,
        run: Callable[[Work], Awaitable[None]],
    ) -> None:
        self.s3 = s3
        self.verifier = verifier
        self.temp_files = temp_files
        self.events = events
        self.writer = writer
        self._run = run  # fetch one range again (Transfers.run)

    async def finish(self, job: FileJob) -> None:
        """After an object's last range: land it, start it over, or report it."""
        partial = job.partial
        if job.error is None and job.restart is None and job.written != job.obj.size:
            job.error = f"got {job.written} bytes, expected {job.obj.size}"
        if job.error is None and job.restart is None and partial is not None:
            try:
                await self.verifier.hash_in_order(job)
                job.landed = await self.writer.call(self._verify_and_commit, job, partial)
            except ChecksumMismatch as exc:
                job.restart = str(exc)
            except OSError as exc:
                stop_if_fatal(exc, job.tree.root)
                job.error = describe_os_error(exc, job.final.parent)
            if job.restart is not None and await self.verifier.real_layout(job):
                await self._land_from_disk(job, partial)
            if job.restart is not None and (damaged := parts_to_refetch(job)):
                await self._refetch(job, damaged)
                return
        self.temp_files.done(job)
        if job.landed is not None:
            self.temp_files.forget(job, remove=False)
            self.events.landed(job, Landing.of(job))
            return
        self.temp_files.forget(job, remove=True)
        if job.restart is not None and job.restarts < MAX_RESTARTS:
            await self._start_over(job)
            return
        reason = job.error or f"{job.restart} (also after starting over)"
        if job.error is None and job.layout_inferred:
            reason += (
                "; its part size was inferred (the store does not tell part sizes): "
                "if the store's copy is right, --no-verify takes it by its size"
            )
        self.events.failed(job, reason)

    def _verify_and_commit(
        self, job: FileJob, partial: PartialFile, from_disk: bool = False
    ) -> os.stat_result:
        self.verifier.check_file(job, partial, from_disk)
        return partial.commit(job.obj.last_modified)

    async def _land_from_disk(self, job: FileJob, partial: PartialFile) -> None:
        """Check the bytes on disk again against the layout S3 just told."""
        try:
            job.landed = await self.writer.call(self._verify_and_commit, job, partial, True)
            job.restart = None
        except ChecksumMismatch:
            pass
        except OSError as exc:
            stop_if_fatal(exc, job.tree.root)
            job.restart = None
            job.error = describe_os_error(exc, job.final.parent)

    async def _refetch(self, job: FileJob, parts: list[tuple[int, int]]) -> None:
        """Fetch again only the ranges of the parts S3 says differ; the object
        is then checked whole again before it lands."""
        self.events.note(
            f"refetching {len(parts)} of {len(job.layout or ())} parts of {job.obj.key!r}: "
            f"{job.restart}"
        )
        job.restarts += 1
        job.restart = None
        ranges = [(s, e) for s, e, _ in job.done_ranges if any(a <= s < b for a, b in parts)]
        starts = {start for start, _ in ranges}
        job.done_ranges = [r for r in job.done_ranges if r[0] not in starts]
        if job.part_hashes is not None:
            for start in starts:
                job.part_hashes.pop(start, None)
        lost = sum(end - start for start, end in ranges)
        job.written -= lost
        job.resumed = min(job.resumed, job.written)
        self.events.progress(job, -lost)
        job.ranges_left = len(ranges)
        in_flight = anyio.CapacityLimiter(REFETCHES_IN_FLIGHT)

        async def again(start: int, end: int) -> None:
            async with in_flight:
                await self._run(Work(job, start, end))

        async with anyio.create_task_group() as tg:
            for start, end in ranges:
                tg.start_soon(again, start, end)

    async def _start_over(self, job: FileJob) -> None:
        """Fetch the object again from scratch, as one stream, by this worker."""
        self.events.progress(job, -(job.written - job.resumed))
        self.events.note(f"starting over: {job.obj.key!r}: {job.restart}")
        try:
            head = await self.s3.stat(job.obj)
        except ObjectError as exc:
            self.events.failed(job, f"{job.restart}; then {exc}")
            return
        obj = head.obj
        if problem := etag_problem(obj.etag):
            self.events.failed(job, f"{job.restart}; then {problem}")
            return
        fresh = FileJob(
            obj=RemoteObject(
                key=job.obj.key,
                size=obj.size,
                etag=obj.etag,
                last_modified=obj.last_modified,
                checksum_algorithms=obj.checksum_algorithms,
                version_id=job.obj.version_id,
            ),
            parts=job.parts,
            tree=job.tree,
            part_size=max(obj.size, 1),
            restarts=job.restarts + 1,
            expectation=self.verifier.expectation(head.headers),
        )
        await self._run(Work(fresh, 0, fresh.obj.size))
