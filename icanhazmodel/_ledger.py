"""The run's ledger: where every outcome of a run is counted, recorded and shown.

It hears the transfers' events (:class:`~._events.TransferEvents`), the
ones of this process and the ones the pool replays from worker processes,
and the planner's verdicts (refused, skipped, kept). Each is told here once
to the tally, the manifest, the reporter (bars) and the watcher
(``icanhazmodel.stream``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from ._checksums import NO_VERIFY
from ._events import Landing
from ._jobs import FileJob
from ._lock import LockBook, LockedFile
from ._manifest import FileRecord, Manifest, PartialRecord
from ._models import FetchResult, LandedFile, ObjectReport, RemoteObject, Status
from ._output import LIVE_PROBLEMS, MORE_PROBLEMS, problem_line
from ._progress import Reporter

# Files checked by size only named in the result (and --json); more are counted.
SIZE_ONLY_LISTED = 1000


class Watcher(Protocol):
    """Who hears of each object's outcome as it happens (icanhazmodel.stream)."""

    def put(self, record: LandedFile) -> None: ...

    async def room(self) -> None:
        """Return when the watcher can take more: the listing waits on it."""


@dataclass
class Tally:
    """What the run did so far; becomes the FetchResult."""

    listed: int = 0
    excluded: int = 0
    other_shards: int = 0
    folders: int = 0
    downloaded: int = 0
    skipped: int = 0
    refused: int = 0
    failed: int = 0
    kept_local: int = 0
    bytes_downloaded: int = 0
    resumed: int = 0
    bytes_resumed: int = 0
    verification: Counter[str] = field(default_factory=Counter)
    problems: list[ObjectReport] = field(default_factory=list)
    size_only: list[ObjectReport] = field(default_factory=list)
    in_flight: dict[int, int] = field(default_factory=dict)  # process -> its level
    in_flight_peak: int = 0

    def result(self, seconds: float) -> FetchResult:
        return FetchResult(
            downloaded=self.downloaded,
            skipped=self.skipped,
            refused=self.refused,
            failed=self.failed,
            bytes_downloaded=self.bytes_downloaded,
            seconds=seconds,
            folders=self.folders,
            verification=dict(self.verification),
            problems=tuple(self.problems),
            excluded=self.excluded,
            other_shards=self.other_shards,
            kept_local=self.kept_local,
            size_only=tuple(self.size_only),
            resumed=self.resumed,
            bytes_resumed=self.bytes_resumed,
            in_flight=sum(self.in_flight.values()),
            in_flight_peak=self.in_flight_peak,
        )


class Ledger:
    """One run's tally, manifest, reporter and watcher, told each outcome once."""

    def __init__(
        self,
        manifest: Manifest | None,
        reporter: Reporter,
        watcher: Watcher | None = None,
        lock: LockBook | None = None,
    ) -> None:
        self.tally = Tally()
        self.manifest = manifest
        self.reporter = reporter
        self.watcher = watcher
        self.lock = lock  # the files the run stands for, if it writes a lock
        # Optional in a user's Reporter: without it, resumed bytes are progress.
        self._resumed = getattr(reporter, "resumed", reporter.advanced)
        self._show_in_flight = getattr(reporter, "in_flight", None)

    # -- TransferEvents --------------------------------------------------------------

    def progress(self, job: FileJob, nbytes: int) -> None:
        self.reporter.advanced(job.obj.key, nbytes)

    def resumed(self, job: FileJob, nbytes: int) -> None:
        self._resumed(job.obj.key, nbytes)

    def in_flight(self, source: int, level: int) -> None:
        levels = self.tally.in_flight
        levels[source] = level
        total = sum(levels.values())
        self.tally.in_flight_peak = max(self.tally.in_flight_peak, total)
        if self._show_in_flight is not None:
            self._show_in_flight(total)

    def range_done(self, partial: PartialRecord, start: int, end: int, crc: int) -> None:
        if self.manifest is not None:
            self.manifest.add_range(partial, start, end, crc)

    def partial_dropped(self, tmp_name: str) -> None:
        if self.manifest is not None:  # its buffer takes a lock: any thread may call
            self.manifest.drop_partial(tmp_name)

    def landed(self, job: FileJob, landing: Landing) -> None:
        """Count one landed file and record it in the manifest (wherever it landed)."""
        obj, tally = job.obj, self.tally
        why = landing.unverified
        if why and why != NO_VERIFY and len(tally.size_only) < SIZE_ONLY_LISTED:
            report = ObjectReport(obj.key, Status.DOWNLOADED, why, str(job.final), obj.size)
            tally.size_only.append(report)
        tally.downloaded += 1
        tally.bytes_downloaded += landing.new_bytes
        if landing.new_bytes < landing.size:  # the rest was on disk from an earlier run
            tally.resumed += 1
            tally.bytes_resumed += landing.size - landing.new_bytes
        tally.verification[landing.level] += 1
        etag = landing.etag or obj.etag  # what landed, if it changed in S3 meanwhile
        version_id = landing.version_id or obj.version_id
        if self.manifest is not None:
            self.manifest.add_file(
                FileRecord(
                    obj.key,
                    obj.size,
                    etag,
                    version_id,
                    landing.level,
                    landing.size,
                    landing.mtime_ns,
                )
            )
        if self.lock is not None:
            self.lock.add(
                LockedFile(
                    obj.key,
                    "/".join(job.parts),
                    landing.size,
                    etag,
                    version_id,
                    obj.last_modified,
                    landing.checksum,
                    landing.level,
                )
            )
        self.reporter.file_done(obj.key)
        self.tell(obj, job.final, Status.DOWNLOADED, landing.level)

    def failed(self, job: FileJob, reason: str) -> None:
        self.report(job.obj, Status.FAILED, reason, job.final)
        self.reporter.file_done(job.obj.key)

    def note(self, text: str) -> None:
        self.reporter.message(text)

    # -- the planner's verdicts ---------------------------------------------------------

    def stands_for(self, job: FileJob) -> None:
        """The run stands for *job*'s file without landing it now: it is on
        disk as S3 has it (a rerun's skip), or a dry run would fetch it."""
        if self.lock is not None:
            obj, recorded = job.obj, job.recorded
            self.lock.add(
                LockedFile(
                    obj.key,
                    "/".join(job.parts),
                    obj.size,
                    obj.etag,
                    obj.version_id or (recorded.version_id if recorded else None),
                    obj.last_modified,
                    None,  # S3's checksum: the manifest keeps none
                    recorded.verification if recorded else None,
                )
            )

    def report(
        self, obj: RemoteObject, status: Status, reason: str, path: os.PathLike[str] | None = None
    ) -> None:
        """A problem with *obj*: counted, told live (the first few), and kept for the summary."""
        if status is Status.REFUSED:
            self.tally.refused += 1
        elif status is Status.LOCALLY_MODIFIED:
            self.tally.kept_local += 1
        else:
            self.tally.failed += 1
        where = os.fspath(path) if path is not None else None
        self.tally.problems.append(ObjectReport(obj.key, status, reason, where, obj.size))
        told = len(self.tally.problems)
        if told <= LIVE_PROBLEMS:
            self.reporter.message(problem_line(self.tally.problems[-1]))
        elif told == LIVE_PROBLEMS + 1:
            self.reporter.message(MORE_PROBLEMS)
        self.tell(obj, path, status, reason=reason)

    def tell(
        self,
        obj: RemoteObject,
        path: os.PathLike[str] | None,
        status: Status,
        level: str | None = None,
        reason: str = "",
    ) -> None:
        """Hand *obj*'s outcome to the watcher, if the run has one."""
        if self.watcher is not None:
            where = Path(path) if path is not None else None
            self.watcher.put(LandedFile(obj.key, where, obj.size, obj.etag, status, level, reason))
