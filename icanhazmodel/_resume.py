"""Resuming what an earlier run left: adopt a recorded temp file whose
ranges still check out, or clear it away.

Blocking (ranges are read back to re-check their CRCs): the pipeline and
the worker processes call these from a writer thread, just before an
object's ranges are queued.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._checksums import Digest
from ._files import PartialFile, describe_os_error, try_remove_unlocked
from ._jobs import FileJob
from ._manifest import PartialRecord
from ._verify import hash_span

if TYPE_CHECKING:
    from ._transfer import Transfers


def adopt(transfers: Transfers, job: FileJob, record: PartialRecord) -> str:
    """Reopen the recorded temp file and keep the ranges whose CRC still checks out.

    Blocking (it reads the ranges back): call it from a thread.
    """
    name = record.tmp_name.rsplit("/", 1)[-1]
    try:
        partial = PartialFile(transfers.tree, job.parts, job.obj.size, resume=name)
    except BlockingIOError:
        return "busy"  # another run is writing it right now
    except OSError as exc:
        transfers.notes.add(f"not resuming {job.obj.key!r}: {describe_os_error(exc)}")
        return "unusable"
    good = [r for r in record.ranges if _range_intact(partial, record.crc_algorithm, *r)]
    if not good:
        partial.keep()
        return "unusable"
    job.state.partial = partial
    job.state.partial_record = record
    job.part_size = record.part_size
    job.check.crc_algorithm = record.crc_algorithm
    job.state.done_ranges = good
    job.state.written = job.state.resumed = sum(end - start for start, end, _ in good)
    return "adopted"


def resume(transfers: Transfers, job: FileJob) -> None:
    """Adopt the first usable temp file of *job*'s candidates; clear the rest.

    Blocking (it reads recorded ranges back): call it from a thread.
    """
    for record in job.resume_candidates:
        if job.state.partial is None:
            verdict = adopt(transfers, job, record)
            if verdict == "adopted":
                transfers.temp_files.adopted(job)
                continue
            if verdict == "busy":
                continue  # a live run holds it: its record stays
        clear(transfers, record)
    job.resume_candidates = ()


def clear(transfers: Transfers, record: PartialRecord) -> None:
    """Remove a recorded temp file and forget its record, unless a live run holds it."""
    parts = transfers.tree.temp_parts(record.tmp_name)
    if parts is not None and not remove_stale(transfers, parts):
        return  # locked by a live run: its record stays
    transfers.events.partial_dropped(record.tmp_name)


def remove_stale(transfers: Transfers, parts: tuple[str, ...]) -> bool:
    """Remove a temp file no run will resume; False while a live run holds it."""
    try:
        return try_remove_unlocked(transfers.tree, parts)
    except OSError as exc:  # not ours to remove: say so, and forget it
        what = f"'{exc.filename}'" if exc.filename else "a recorded temp file"
        transfers.notes.add(f"note: {what} left alone: {exc.strerror or exc}")
        return True


def _range_intact(partial: PartialFile, algorithm: str, start: int, end: int, crc: int) -> bool:
    digest = Digest(algorithm)
    hash_span(partial, digest, start, end)
    return digest.crc == crc
