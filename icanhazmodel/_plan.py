"""Pure planning: how objects are cut into byte ranges, and path conflicts.

No I/O here; everything is tested directly with plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

from ._manifest import FileRecord
from ._models import Action, RemoteObject

MiB = 1 << 20
MIN_PART_SIZE = 8 * MiB
MAX_PART_SIZE = 64 * MiB


def part_size_for(size: int, concurrency: int) -> int:
    """The range size for an object of *size* bytes.

    About one range per worker, so one big file uses every connection, but
    never under 8 MiB (per-request overhead) nor over 64 MiB (so the tail of
    a run is never one slow stream). Rounded up to whole MiB.
    """
    per_worker = -(-size // max(concurrency, 1))
    rounded = -(-per_worker // MiB) * MiB
    return min(max(rounded, MIN_PART_SIZE), MAX_PART_SIZE)


def byte_ranges(size: int, part_size: int) -> list[tuple[int, int]]:
    """Split [0, size) into half-open ranges of at most *part_size* bytes.

    A zero-byte object is one empty range, so it still makes one request.
    """
    if part_size <= 0:
        raise ValueError("part_size must be positive")
    if size <= 0:
        return [(0, 0)]
    return [(start, min(start + part_size, size)) for start in range(0, size, part_size)]


class ConflictTracker:
    """Spots keys that need one path to be both a file and a directory.

    S3 lists keys in sorted order, so every key under 'a/' arrives after the
    file key 'a', in one contiguous run. The file keys whose run may still
    come form a stack of nested ranges; a file key is dropped once the
    listing has passed its run, which keeps memory small however long the
    listing. Directory paths are remembered too (there are far fewer of them
    than files) so that an unsorted listing still has file-after-directory
    conflicts caught; anything this misses is caught by the filesystem.
    """

    def __init__(self) -> None:
        self._open_files: list[str] = []
        self._open_set: set[str] = set()
        self._dirs: set[str] = set()

    def _drop_passed(self, path: str) -> None:
        while self._open_files:
            top = self._open_files[-1]
            if path <= top + "/" or path.startswith(top + "/"):
                return
            self._open_files.pop()
            self._open_set.discard(top)

    def _file_ancestor(self, parts: tuple[str, ...]) -> str | None:
        for depth in range(1, len(parts)):
            ancestor = "/".join(parts[:depth])
            if ancestor in self._open_set:
                return ancestor
        return None

    def add(self, parts: tuple[str, ...], *, is_dir: bool) -> str | None:
        """Record one key's path; return the key it conflicts with, if any.

        *parts* is the key's path split on '/', without a directory marker's
        trailing slash. A conflicting key is not recorded.
        """
        path = "/".join(parts)
        self._drop_passed(path)
        taken_by_file = self._file_ancestor((*parts, "") if is_dir else parts)
        if taken_by_file is not None:
            return taken_by_file
        if not is_dir and path in self._dirs:
            return path + "/"
        for depth in range(1, len(parts) + (1 if is_dir else 0)):
            self._dirs.add("/".join(parts[:depth]))
        if not is_dir:
            self._open_files.append(path)
            self._open_set.add(path)
        return None


@dataclass(frozen=True, slots=True)
class LocalFile:
    size: int
    mtime_ns: int


def decide(
    obj: RemoteObject, record: FileRecord | None, local: LocalFile | None, *, force: bool
) -> Action:
    """Whether *obj* must be fetched, given what icanhazmodel last wrote for it.

    Trusts nothing it did not record itself: a file is skipped only if the
    manifest says icanhazmodel wrote it from this very object version and
    the file on disk still has the size and mtime it was left with. A file
    changed on disk since then is kept (and reported) unless *force*.
    """
    if force or record is None or local is None:
        return Action.DOWNLOAD
    if (local.size, local.mtime_ns) != (record.local_size, record.local_mtime_ns):
        return Action.KEEP_LOCAL
    same_version = obj.version_id is None or obj.version_id == record.version_id
    if same_version and (obj.etag, obj.size) == (record.etag, record.size):
        return Action.SKIP
    return Action.DOWNLOAD
