"""What a transfer tells the run: one vocabulary, wherever the bytes move.

:class:`~._transfer.Transfers` reports through :class:`TransferEvents` and
nothing else. In a one-process run the run's ledger (``_ledger``) hears the
calls: it keeps the tally, the manifest, the bars and the watcher. In a
worker process the worker hears them, batches them into one message per
turn, and the parent's pool replays them, call for call, into that same
ledger, with the parent's job for the worker's. So a new display, a new
record or a new count is written once, in the ledger.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from ._models import pickled_by_fields

if TYPE_CHECKING:
    from ._jobs import FileJob
    from ._manifest import PartialRecord


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Landing:
    """What the ledger keeps of a file that landed (a worker sends it as is)."""

    level: str  # how it was checked: a Verification value
    size: int  # on disk, and its mtime: what a rerun compares
    mtime_ns: int
    new_bytes: int  # fetched by this run; the rest an earlier run left
    unverified: str = ""  # why it was checked by size only
    # The object that landed: its ETag (changed, if it changed in S3 and was
    # fetched again) and S3's checksum where S3 sent one ("ALGORITHM:base64").
    etag: str = ""
    checksum: str | None = None
    version_id: str | None = None  # the version that landed (a versioned bucket)

    @classmethod
    def of(cls, job: FileJob) -> Landing:
        assert job.state.landed is not None
        expectation = job.check.expectation
        return cls(
            job.level,
            job.state.landed.st_size,
            job.state.landed.st_mtime_ns,
            job.state.written - job.state.resumed,
            job.unverified,
            job.obj.etag,
            expectation.s3_checksum if expectation is not None else None,
            job.obj.version_id or job.state.version_id,
        )


class TransferEvents(Protocol):
    """Everything a transfer reports. Called on the event loop, except
    :meth:`partial_dropped`, which may come from a writer thread."""

    def progress(self, job: FileJob, nbytes: int) -> None:
        """*nbytes* more of *job* reached disk (negative: taken back, to fetch again)."""

    def resumed(self, job: FileJob, nbytes: int) -> None:
        """*nbytes* of *job* an earlier run left on disk were adopted: done,
        but not this run's speed."""

    def range_done(self, partial: PartialRecord, start: int, end: int, crc: int) -> None:
        """[start, end) of a temp file is on disk, with this CRC: a rerun may resume it."""

    def partial_dropped(self, tmp_name: str) -> None:
        """A temp file is gone, or will not be resumed: forget its record."""

    def landed(self, job: FileJob, landing: Landing) -> None:
        """*job* is at its final path, checked."""

    def failed(self, job: FileJob, reason: str) -> None:
        """*job* could not be fetched; *reason* is in the user's words."""

    def note(self, text: str) -> None:
        """A line for the user (a retry, a restart) that must not break bars."""

    def in_flight(self, source: int, level: int) -> None:
        """Process *source* (0: this one; a worker: its number) now keeps
        *level* requests in flight (see ``_window``)."""
