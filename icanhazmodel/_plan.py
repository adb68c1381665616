"""Pure planning: how objects are cut into byte ranges, and path conflicts.

No I/O here; everything is tested directly with plain values.
"""

from __future__ import annotations

from typing import NamedTuple

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
    file key 'a', in one contiguous run. The paths (files and folders) whose
    run may still come form a stack of nested ranges; a path is dropped once
    the listing has passed its run, so memory stays small however long or
    wide the listing: a few entries per level of the deepest key. A listing
    out of order still has file-after-folder conflicts caught while the
    folder is on the stack; anything this misses is caught by the filesystem.
    """

    # Only an unsorted listing can pile up this many open paths.
    MAX_OPEN = 10_000

    def __init__(self) -> None:
        self._open: list[str] = []
        self._is_dir: dict[str, bool] = {}

    def _drop_passed(self, path: str) -> None:
        while self._open:
            top = self._open[-1]
            if path <= top + "/" or path.startswith(top + "/"):
                return
            self._open.pop()
            del self._is_dir[top]

    def _push(self, path: str, *, is_dir: bool) -> None:
        self._open.append(path)
        self._is_dir[path] = is_dir
        if len(self._open) > self.MAX_OPEN:
            forgotten, self._open = (
                self._open[: self.MAX_OPEN // 2],
                self._open[self.MAX_OPEN // 2 :],
            )
            for old in forgotten:
                self._is_dir.pop(old, None)

    def __len__(self) -> int:
        return len(self._open)

    def add(self, parts: tuple[str, ...], *, is_dir: bool) -> str | None:
        """Record one key's path; return the key it conflicts with, if any.

        *parts* is the key's path split on '/', without a directory marker's
        trailing slash. The answer is a file key ('a'), or a folder ('a/')
        that other keys already use. A conflicting key is not recorded.
        """
        path = "/".join(parts)
        stack = self._open
        if (
            not is_dir
            and len(parts) > 1
            and len(stack) >= 2
            and stack[-2] == path[: -len(parts[-1]) - 1]
            and self._is_dir[stack[-2]]
            and not self._is_dir[stack[-1]]
            and path > stack[-1] + "/"
            and path not in self._is_dir
        ):
            # The next file of a folder, as most keys of a sorted listing
            # are: the one before it (on top, above the folder) is passed;
            # the folder and all above it were checked when it came.
            del self._is_dir[stack.pop()]
            self._push(path, is_dir=False)
            return None
        self._drop_passed(path)
        if (
            not is_dir
            and len(parts) > 1
            and stack
            and stack[-1] == path[: -len(parts[-1]) - 1]
            and self._is_dir[stack[-1]]
            and path not in self._is_dir
        ):
            # A file in the folder on top: the first of its folder, say.
            self._push(path, is_dir=False)
            return None
        folders = ["/".join(parts[:depth]) for depth in range(1, len(parts))]
        if is_dir:
            folders.append(path)
        for folder in folders:
            if self._is_dir.get(folder) is False:
                return folder
        if not is_dir and self._is_dir.get(path):
            return path + "/"
        for folder in folders:
            if folder not in self._is_dir:
                self._push(folder, is_dir=True)
        if not is_dir:
            self._push(path, is_dir=False)
        return None


class LocalFile(NamedTuple):
    """A file's size and mtime on disk (a named tuple: one per listed key)."""

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
