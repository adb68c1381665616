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
from ._jobs import Check, FileJob, TransferState, Work
from ._models import RemoteObject
from ._objects import ObjectError, ObjectGone, ObjectSource, etag_problem
from ._tempfiles import TempFiles
from ._verify import MAX_RESTARTS, Verifier, parts_to_refetch
from ._writer import Writer

# Why a pinned object (--from-lock) failed, before the details.
NOT_AS_LOCKED = "no longer in S3 as the lock has it"
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
        *,
        pinned: bool = False,
    ) -> None:
        self.s3 = s3
        self.verifier = verifier
        self.temp_files = temp_files
        self.events = events
        self.writer = writer
        self._run = run  # fetch one range again (Transfers.run)
        # --from-lock: an object starts over only as the same object, never
        # as whatever the key holds now.
        self._pinned = pinned

    def gone(self, job: FileJob, exc: ObjectGone) -> str:
        """Why *job* failed when S3 answered that it has no such object."""
        if not self._pinned:
            return str(exc)
        version = job.obj.version_id
        return f"{NOT_AS_LOCKED}: " + (
            f"its version {version} was deleted" if version else "it was deleted"
        )

    async def finish(self, job: FileJob) -> None:
        """After an object's last range: land it, start it over, or report it."""
        partial = job.state.partial
        if (
            job.state.error is None
            and job.state.restart is None
            and job.state.written != job.obj.size
        ):
            job.state.error = f"got {job.state.written} bytes, expected {job.obj.size}"
        if job.state.error is None and job.state.restart is None and partial is not None:
            try:
                await self.verifier.hash_in_order(job)
                job.state.landed = await self.writer.call(self._verify_and_commit, job, partial)
            except ChecksumMismatch as exc:
                job.state.restart = str(exc)
            except OSError as exc:
                stop_if_fatal(exc, job.tree.root)
                job.state.error = describe_os_error(exc, job.final.parent)
            if job.state.restart is not None and await self.verifier.real_layout(job):
                await self._land_from_disk(job, partial)
            if job.state.restart is not None and (damaged := parts_to_refetch(job)):
                await self._refetch(job, damaged)
                return
        self.temp_files.done(job)
        if job.state.landed is not None:
            self.temp_files.forget(job, remove=False)
            self.events.landed(job, Landing.of(job))
            return
        self.temp_files.forget(job, remove=True)
        if job.state.restart is not None and job.state.restarts < MAX_RESTARTS:
            await self._start_over(job)
            return
        reason = job.state.error or f"{job.state.restart} (also after starting over)"
        if job.state.error is None and job.check.layout_inferred:
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
            job.state.landed = await self.writer.call(self._verify_and_commit, job, partial, True)
            job.state.restart = None
        except ChecksumMismatch:
            pass
        except OSError as exc:
            stop_if_fatal(exc, job.tree.root)
            job.state.restart = None
            job.state.error = describe_os_error(exc, job.final.parent)

    async def _refetch(self, job: FileJob, parts: list[tuple[int, int]]) -> None:
        """Fetch again only the ranges of the parts S3 says differ; the object
        is then checked whole again before it lands."""
        self.events.note(
            f"refetching {len(parts)} of {len(job.check.layout or ())} parts of {job.obj.key!r}: "
            f"{job.state.restart}"
        )
        job.state.restarts += 1
        job.state.restart = None
        ranges = [(s, e) for s, e, _ in job.state.done_ranges if any(a <= s < b for a, b in parts)]
        starts = {start for start, _ in ranges}
        job.state.done_ranges = [r for r in job.state.done_ranges if r[0] not in starts]
        if job.check.part_hashes is not None:
            for start in starts:
                job.check.part_hashes.pop(start, None)
        lost = sum(end - start for start, end in ranges)
        job.state.written -= lost
        job.state.resumed = min(job.state.resumed, job.state.written)
        self.events.progress(job, -lost)
        job.state.ranges_left = len(ranges)
        in_flight = anyio.CapacityLimiter(REFETCHES_IN_FLIGHT)

        async def again(start: int, end: int) -> None:
            async with in_flight:
                await self._run(Work(job, start, end))

        async with anyio.create_task_group() as tg:
            for start, end in ranges:
                tg.start_soon(again, start, end)

    async def _start_over(self, job: FileJob) -> None:
        """Fetch the object again from scratch, as one stream, by this worker."""
        self.events.progress(job, -(job.state.written - job.state.resumed))
        self.events.note(f"starting over: {job.obj.key!r}: {job.state.restart}")
        try:
            head = await self.s3.stat(job.obj)
        except ObjectError as exc:
            self.events.failed(job, f"{job.state.restart}; then {exc}")
            return
        obj = head.obj
        if problem := etag_problem(obj.etag):
            self.events.failed(job, f"{job.state.restart}; then {problem}")
            return
        if self._pinned and (obj.etag != job.obj.etag or obj.size != job.obj.size):
            self.events.failed(
                job, f"{NOT_AS_LOCKED}: its ETag is now {obj.etag}, the lock says {job.obj.etag}"
            )
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
            check=Check(expectation=self.verifier.expectation(head.headers)),
            state=TransferState(restarts=job.state.restarts + 1),
        )
        await self._run(Work(fresh, 0, fresh.obj.size))
