"""Plain data passed between the layers and returned to callers."""

from __future__ import annotations

import enum
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

_T = TypeVar("_T")


def pickled_by_fields(cls: type[_T]) -> type[_T]:
    """Pickle a slotted dataclass as its class and field values.

    Its default ``__getstate__``/``__setstate__`` look the fields up on every
    call: 3.8 us to pickle a Task and 4 us to load it, against 1.1 and 1.8
    this way. A run of small objects over worker processes pickles one each
    way per object, on the parent's one core.
    """
    get = operator.attrgetter(*(f.name for f in fields(cls)))  # type: ignore[arg-type]
    one = len(fields(cls)) == 1  # type: ignore[arg-type]

    def __reduce__(self: Any) -> tuple[type[_T], tuple[Any, ...]]:
        return cls, (get(self),) if one else get(self)

    setattr(cls, "__reduce__", __reduce__)  # noqa: B010 - mypy rejects assigning a method
    return cls


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class RemoteObject:
    """One object as S3 listed it: enough to plan, fetch and verify it."""

    key: str
    size: int
    etag: str  # without the surrounding quotes
    last_modified: float  # POSIX seconds
    checksum_algorithms: tuple[str, ...] = ()  # as listed, e.g. ("CRC64NVME",)
    version_id: str | None = None


@dataclass(frozen=True, slots=True)
class ObjectHeaders:
    """What a GET or HEAD answer says about the object, whichever path sent it."""

    etag: str  # without the surrounding quotes
    checksums: Mapping[str, str]  # S3's base64 values by algorithm, e.g. {"CRC32": ...}
    checksum_type: str | None  # FULL_OBJECT or COMPOSITE
    encrypted_with_key: bool  # SSE-KMS or SSE-C: the ETag is not an MD5
    content_length: int | None = None
    content_range: str | None = None
    parts_count: int | None = None  # x-amz-mp-parts-count, on a HEAD with partNumber
    version_id: str | None = None  # x-amz-version-id: on a versioned bucket


def encrypted_with_key(sse: str | None, customer_algorithm: str | None) -> bool:
    """SSE-KMS and SSE-C objects have ETags that are not the MD5 of their bytes."""
    return (sse or "").startswith("aws:kms") or bool(customer_algorithm)


class Status(enum.StrEnum):
    """What happened (or, in a dry run, would happen) to one object."""

    DOWNLOADED = "downloaded"
    SKIPPED = "skipped"  # unchanged since icanhazmodel last wrote it
    REFUSED = "refused"  # cannot be mirrored safely; never requested
    FAILED = "failed"
    LOCALLY_MODIFIED = "locally-modified"  # kept: edited since icanhazmodel wrote it
    FOLDER = "folder"  # a folder marker, mirrored as a directory (stream(folders=True))


class Action(enum.StrEnum):
    """What a run does (or a dry run would do) with one listed object."""

    DOWNLOAD = "download"
    SKIP = "skip"  # unchanged since icanhazmodel wrote it
    KEEP_LOCAL = "keep-local"  # changed on disk since; kept unless --force
    REFUSED = "refused"
    FOLDER = "folder"  # a folder marker: a directory to create


@dataclass(frozen=True, slots=True)
class PlannedObject:
    """One line of a dry run's plan."""

    key: str
    size: int
    path: str  # where it goes on disk
    action: Action
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Plan:
    """What a run would do, object by object, without writing anything."""

    objects: tuple[PlannedObject, ...]  # empty where they were streamed out as planned
    excluded: int = 0
    other_shards: int = 0
    free_bytes: int | None = None  # free space under model_dir, if known
    # Objects per action and bytes to download, counted as they were planned
    # (None: count *objects*).
    counts: Mapping[Action, int] | None = None
    download_bytes: int | None = None

    def count(self, action: Action) -> int:
        if self.counts is not None:
            return self.counts.get(action, 0)
        return sum(1 for o in self.objects if o.action is action)

    @property
    def bytes_to_download(self) -> int:
        if self.download_bytes is not None:
            return self.download_bytes
        return sum(o.size for o in self.objects if o.action is Action.DOWNLOAD)


class Verification(enum.StrEnum):
    """How thoroughly a landed file was checked against S3."""

    CRC32 = "crc32"
    CRC32C = "crc32c"
    CRC64NVME = "crc64nvme"
    SHA1 = "sha1"
    SHA256 = "sha256"
    ETAG_MD5 = "etag-md5"
    ETAG_MD5_MULTIPART = "etag-md5-multipart"
    # A multipart upload's COMPOSITE checksum: the checksum of its parts' checksums.
    CRC32_COMPOSITE = "crc32-composite"
    CRC32C_COMPOSITE = "crc32c-composite"
    SHA1_COMPOSITE = "sha1-composite"
    SHA256_COMPOSITE = "sha256-composite"
    SIZE_ONLY = "size-only"


@dataclass(frozen=True, slots=True)
class ObjectReport:
    """One object that did not land: refused, failed, or kept as edited locally."""

    key: str
    status: Status
    reason: str = ""
    path: str | None = None  # where it goes (or would go) on disk
    size: int | None = None


@dataclass(frozen=True, slots=True)
class LandedFile:
    """One object's outcome, as :func:`icanhazmodel.stream` yields it the moment
    it is known: on disk and checked (``downloaded``), already there
    (``skipped``), or not landed (``failed``, ``refused``, ``locally-modified``,
    with the reason)."""

    key: str
    path: Path | None  # where it is (or would have gone); None for a key refused as unsafe
    size: int
    etag: str
    status: Status
    verification: str | None = None  # a Verification value, for a downloaded file
    reason: str = ""

    @property
    def ok(self) -> bool:
        """It is on disk as S3 has it (fetched now or earlier, or a folder made)."""
        return self.status in (Status.DOWNLOADED, Status.SKIPPED, Status.FOLDER)


@dataclass(frozen=True, slots=True)
class FetchResult:
    """The outcome of one :func:`icanhazmodel.fetch` run.

    Counts cover every listed object. ``problems`` names each refused or
    failed object with the reason, so a caller can act on them.
    """

    downloaded: int  # files written
    skipped: int
    refused: int
    failed: int
    bytes_downloaded: int
    seconds: float
    folders: int = 0  # folder markers mirrored as directories
    verification: Mapping[str, int] = field(default_factory=dict)
    problems: tuple[ObjectReport, ...] = ()
    excluded: int = 0  # left out by --include/--exclude
    other_shards: int = 0  # left to the other --shard processes
    plan: Plan | None = None  # set by a dry run
    kept_local: int = 0  # edited on disk since icanhazmodel wrote them: kept
    processes: int = 1  # processes that fetched: 1, or the worker processes
    manifest_error: str | None = None  # records of this run could not be saved
    # Files checked by size alone though content checks were on, and why
    # (an SSE-KMS ETag without a checksum, a store that hides part sizes).
    size_only: tuple[ObjectReport, ...] = ()
    resumed: int = 0  # of downloaded, files finished from an earlier run's temp file
    bytes_resumed: int = 0  # bytes an earlier run left on disk (not in bytes_downloaded)
    # Requests in flight (every process's, summed): at the end, and the most
    # at once. With -j auto, what the run found; with -j N, N per process.
    in_flight: int = 0
    in_flight_peak: int = 0

    @property
    def ok(self) -> bool:
        """True when every listed object is on disk and correct, and recorded."""
        return (
            self.refused == 0
            and self.failed == 0
            and self.kept_local == 0
            and self.manifest_error is None
        )

    @property
    def failures(self) -> tuple[ObjectReport, ...]:
        """Objects that did not land: failed, or kept because edited locally."""
        return tuple(p for p in self.problems if p.status is not Status.REFUSED)

    @property
    def refusals(self) -> tuple[ObjectReport, ...]:
        return tuple(p for p in self.problems if p.status is Status.REFUSED)
