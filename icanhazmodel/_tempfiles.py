"""The temp-file lifecycle of a process's transfers.

A job that streams gets a temp file beside its target (``PartialFile``:
made, locked, written at offsets), recorded for resuming when it is several
ranges. It then ends one of three ways: committed onto its path (the record
is dropped), removed (a failure, a fresh start), or, when the run stops
early, kept for the next run to resume if it holds finished ranges. Adopting
one an earlier run left is ``_resume``'s part.
"""

from __future__ import annotations

from ._events import TransferEvents
from ._files import PartialFile, Tree
from ._jobs import FileJob
from ._manifest import PartialRecord
from ._writer import Writer


class TempFiles:
    """Every temp file this process's transfers hold open."""

    def __init__(self, tree: Tree, events: TransferEvents, writer: Writer) -> None:
        self.tree = tree
        self.events = events
        self.writer = writer
        self._open: set[FileJob] = set()

    def create(self, job: FileJob) -> None:
        """Make *job*'s temp file (blocking: in a writer thread)."""
        # Registered here, in the writer thread, so a run cancelled meanwhile
        # still knows about the file and cleans it up.
        partial = PartialFile(self.tree, job.parts, job.obj.size)
        job.state.partial = partial
        self._open.add(job)
        if job.multi_range:
            job.state.partial_record = PartialRecord(
                tmp_name=partial.tmp.relative_to(self.tree.root).as_posix(),
                key=job.obj.key,
                etag=job.obj.etag,
                size=job.obj.size,
                part_size=job.part_size,
                crc_algorithm=job.check.crc_algorithm,
            )

    def adopted(self, job: FileJob) -> None:
        """*job* took over a temp file an earlier run left (see ``_resume``)."""
        self._open.add(job)

    def done(self, job: FileJob) -> None:
        """*job* is over (landed or not): its temp file is no longer held open."""
        self._open.discard(job)

    def forget(self, job: FileJob, *, remove: bool) -> None:
        """Drop *job*'s temp file and its record (*remove*: delete the file too;
        else it was committed onto its path)."""
        if job.state.partial is not None and remove:
            job.state.partial.discard()
        if job.state.partial_record is not None:
            self.events.partial_dropped(job.state.partial_record.tmp_name)
        job.state.partial = None
        job.state.partial_record = None

    def abandon(self, *, keep_resumable: bool) -> None:
        """The run is stopping early: keep resumable temp files, remove the rest.

        Synchronous on purpose: this runs while the run is being cancelled,
        where an await would be cancelled again before it could clean up.
        """
        self.writer.drain()  # no thread may still be writing to these files
        for job in list(self._open):
            if job.state.partial is None:
                continue
            if keep_resumable and job.resumable:
                job.state.partial.keep()
            else:
                self.forget(job, remove=True)
        self._open.clear()
