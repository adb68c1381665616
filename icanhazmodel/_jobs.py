"""A job: one object on its way to disk, and the work items it is cut into.

The planner makes a :class:`FileJob` for each object to fetch; the
transfers (``_transfer``) fill in what they learn as its ranges arrive: its
expectation and layout (``_verify``), its temp file (``_tempfiles``), what
landed. A :class:`Work` item is one byte range of it: the unit an engine
slot takes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import anyio

from ._checksums import RANGE_CRC, SIZE_ONLY, Digest, Expectation, PartsDigest, is_crc
from ._files import PartialFile, Tree
from ._manifest import FileRecord, PartialRecord
from ._models import RemoteObject
from ._plan import byte_ranges


@dataclass(eq=False, slots=True)
class Check:
    """What an object is checked against, and its digests so far (``_verify``
    fills it in as the object's first answers and its ranges arrive)."""

    expectation: Expectation | None = None
    crc_algorithm: str = RANGE_CRC  # per-range CRC of multi-range downloads
    digest: Digest | PartsDigest | None = None  # whole-object digest of single-range downloads
    # Multi-range objects checked by a hash (MD5, SHA), which cannot be
    # combined from ranges: hashed in offset order as ranges complete, while
    # later ranges still download, so little is left to hash at the end.
    sequential: Digest | PartsDigest | None = None
    sequential_upto: int = 0
    layout: tuple[int, ...] | None = None  # part sizes, for a check by parts
    layout_inferred: bool = False  # from a usual part size: the store told none
    # Ranges cut at the parts of a multipart upload: each part's hash (MD5,
    # SHA) by start, hashed as it streams (None: not cut at parts). Part
    # CRCs need no such thing: they are combined from the ranges' CRCs.
    part_hashes: dict[int, bytes] | None = None
    # What S3 says each part's checksum is (from part HEADs, after a mismatch).
    part_checksums: list[bytes | None] | None = None
    _hash_lock: anyio.Lock | None = field(default=None, repr=False)

    @property
    def hash_lock(self) -> anyio.Lock:
        """Held while hashing ranges in order (see sequential)."""
        if self._hash_lock is None:
            self._hash_lock = anyio.Lock()
        return self._hash_lock


@dataclass(eq=False, slots=True)
class TransferState:
    """Where an object's download stands, in the process fetching it."""

    ranges_left: int = 1
    partial: PartialFile | None = None  # its temp file, once made
    partial_record: PartialRecord | None = None  # what a rerun needs to resume it
    done_ranges: list[tuple[int, int, int]] = field(default_factory=list)  # (start, end, crc)
    written: int = 0
    resumed: int = 0  # of written, bytes an earlier run left on disk
    landed: os.stat_result | None = None
    error: str | None = None
    restart: str | None = None  # why it starts over (changed in S3, failed its check)
    restarts: int = 0
    needs_botocore: bool = False  # the direct path alone cannot serve it
    version_id: str | None = None  # the version S3 answered with (a versioned bucket)
    # Made on first use: an anyio.Lock costs ~10 us (it asks which event
    # loop runs), a tenth of the CPU a dry run spends per key.
    _lock: anyio.Lock | None = field(default=None, repr=False)

    @property
    def lock(self) -> anyio.Lock:
        if self._lock is None:
            self._lock = anyio.Lock()
        return self._lock


@dataclass(eq=False)
class FileJob:
    """One object on its way to disk, as one or several byte ranges.

    Three things, kept apart: what the planner decided (the object, where it
    lands, how it is cut), what it is checked against (:class:`Check`) and
    where its download stands (:class:`TransferState`). The parent of a run
    with worker processes only ever uses the first; a worker fetching a
    range of another process's object gets the owner's check with it.
    """

    obj: RemoteObject
    parts: tuple[str, ...]
    tree: Tree  # the model directory it lands in, at .final
    part_size: int
    # Temp files an earlier run left for this object, best first: adopted
    # (or cleared away) just before its ranges are queued, wherever it runs.
    resume_candidates: tuple[PartialRecord, ...] = ()
    recorded: FileRecord | None = None  # what the manifest says of it, if the run asked
    check: Check = field(default_factory=Check)
    state: TransferState = field(default_factory=TransferState)

    @cached_property
    def final(self) -> Path:
        """Where it lands. Made when first asked: a rerun that skips it
        never needs a Path (a tenth of a listed key's cost)."""
        return self.tree.path(self.parts)

    @property
    def level(self) -> str:
        """How the file was (or will be) checked: a Verification value."""
        return (self.check.expectation or SIZE_ONLY).level.value

    @property
    def unverified(self) -> str:
        """Why the file was checked by size only ("" if it was not)."""
        return (self.check.expectation or SIZE_ONLY).why

    @property
    def multi_range(self) -> bool:
        return self.part_size < self.obj.size

    @property
    def hashes_parts(self) -> bool:
        """Whether its ranges are parts to hash (MD5, SHA) as they stream."""
        expectation = self.check.expectation
        return (
            self.check.part_hashes is not None
            and expectation is not None
            and expectation.by_parts
            and not is_crc(expectation.part_algorithm or "")
        )

    @property
    def resumable(self) -> bool:
        """Worth keeping the temp file if the run stops now."""
        state = self.state
        return self.multi_range and bool(state.done_ranges) and state.partial_record is not None


@dataclass(frozen=True, slots=True)
class Work:
    """One byte range [start, end) of one object: the unit a worker takes."""

    job: FileJob
    start: int
    end: int


def job_work(job: FileJob) -> list[Work]:
    """The work items of *job*: its byte ranges not already on disk."""
    done = {start for start, _, _ in job.state.done_ranges}
    ranges = [r for r in byte_ranges(job.obj.size, job.part_size) if r[0] not in done]
    if not ranges:  # every range resumed from disk: just land it
        ranges = [(job.obj.size, job.obj.size)]
    job.state.ranges_left = len(ranges)
    return [Work(job, start, end) for start, end in ranges]
