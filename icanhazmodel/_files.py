"""Writing under the model directory: directories, temp files, atomic landing.

Every function here is synchronous and blocking; the pipeline calls them in
worker threads. Each file is assembled in a hidden temp file beside its
target and renamed into place only when complete, so a final path only ever
holds a whole, checked file (or whatever was there before).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

from ._errors import DestinationError

PARTIAL_SUFFIX = ".icanhazmodel-partial"
_FILE_MODE = 0o666  # narrowed by the umask, as for any new file
_NAME_MAX = 255


class PathConflict(OSError):
    """The path is taken by something of the other kind (file vs directory)."""


class EscapesModelDir(OSError):
    """The path resolves outside the model directory (through a symlink)."""


def prepare_model_dir(path: str | os.PathLike[str], create: bool = True) -> Path:
    """Create (if asked) and resolve the model directory, checking it is writable.

    Without *create* (a dry run) nothing is made: the path is only resolved.
    """
    model_dir = Path(path)
    try:
        if create:
            model_dir.mkdir(parents=True, exist_ok=True)
        resolved = model_dir.resolve(strict=create)
    except FileExistsError as exc:
        raise DestinationError(f"model_dir '{model_dir}' exists and is not a directory") from exc
    except OSError as exc:
        raise DestinationError(f"cannot create model_dir '{model_dir}': {exc.strerror}") from exc
    if resolved.exists() and not resolved.is_dir():
        raise DestinationError(f"model_dir '{model_dir}' exists and is not a directory")
    if create and not os.access(resolved, os.W_OK | os.X_OK):
        raise DestinationError(f"model_dir '{model_dir}' is not writable")
    return resolved


class Tree:
    """Makes directories under one root, never following a path out of it.

    Directories already checked are remembered, so a run of many files in
    few folders pays for each folder once.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._root_text = str(root)
        self._known: set[tuple[str, ...]] = {()}

    def path(self, parts: tuple[str, ...]) -> Path:
        return self.root.joinpath(*parts)

    def _inside(self, path: Path) -> bool:
        real = os.path.realpath(path)
        return real == self._root_text or real.startswith(self._root_text + os.sep)

    def ensure_dir(self, parts: tuple[str, ...]) -> Path:
        """Make root/parts a directory, one checked component at a time."""
        for depth in range(1, len(parts) + 1):
            prefix = parts[:depth]
            if prefix in self._known:
                continue
            path = self.path(prefix)
            try:
                os.mkdir(path)
            except FileExistsError:
                if os.path.islink(path) and not self._inside(path):
                    raise EscapesModelDir(
                        f"'{path}' is a symlink leading out of the model directory"
                    ) from None
                if not os.path.isdir(path):
                    raise PathConflict(f"'{path}' is a file where a directory must go") from None
            except NotADirectoryError:
                raise PathConflict(
                    f"a file in '{self.path(parts)}' stands where a directory must go"
                ) from None
            self._known.add(prefix)
        return self.path(parts)

    def temp_file(self, relative: str) -> Path | None:
        """The temp file a manifest record names, if it is one of ours and
        lies inside the model directory (a record is never trusted further)."""
        parts = relative.split("/")
        name = parts[-1]
        if (
            relative.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or not (name.startswith(".") and name.endswith(PARTIAL_SUFFIX))
        ):
            return None
        path = self.path(tuple(parts))
        return path if self._inside(path.parent) else None


def temp_path(final: Path) -> Path:
    """A unique hidden name beside *final*, within the 255-byte name limit."""
    token = secrets.token_hex(6)
    room = _NAME_MAX - len(PARTIAL_SUFFIX) - len(token) - 3
    stem = final.name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return final.with_name(f".{stem}.{token}{PARTIAL_SUFFIX}")


def _open_new(path: Path) -> int:
    flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    return os.open(path, flags, _FILE_MODE)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def land(tmp: Path, final: Path, mtime: float) -> os.stat_result:
    """Give *tmp* the object's mtime and rename it over *final* atomically.

    Returns the landed file's stat, as recorded in the manifest.
    """
    os.utime(tmp, (mtime, mtime))
    landed = os.stat(tmp)
    try:
        os.replace(tmp, final)
    except IsADirectoryError:
        raise PathConflict(f"'{final}' is a directory where a file must go") from None
    return landed


def remove_quietly(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def write_whole(final: Path, chunks: list[bytes], mtime: float) -> os.stat_result:
    """Write a small object held in memory: temp file, then atomic rename."""
    tmp = temp_path(final)
    fd = _open_new(tmp)
    try:
        try:
            offset = 0
            for chunk in chunks:
                _write_all(fd, chunk, offset)
                offset += len(chunk)
        finally:
            os.close(fd)
        return land(tmp, final, mtime)
    except BaseException:
        remove_quietly(tmp)
        raise


class PartialFile:
    """A temp file assembled from byte ranges written at their offsets.

    The file is locked (flock) while open, so a second run sharing the model
    directory never resumes into a file this run is still writing; the lock
    dies with the process, so after a crash the file can be resumed.
    """

    def __init__(self, final: Path, size: int, *, resume: Path | None = None) -> None:
        self.final = final
        self.size = size
        self.tmp = resume if resume is not None else temp_path(final)
        if resume is None:
            self._fd = _open_new(self.tmp)
        else:
            self._fd = os.open(self.tmp, os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if resume is None:
                # The full length up front, so ranges can land in any order.
                os.ftruncate(self._fd, size)
            elif os.fstat(self._fd).st_size != size:
                raise ValueError(f"'{self.tmp}' has the wrong length to resume")
        except BaseException:
            os.close(self._fd)
            self._fd = -1
            if resume is None:
                remove_quietly(self.tmp)
            raise

    def write(self, offset: int, chunks: list[bytes]) -> None:
        """Write *chunks* back to back from *offset*, in one system call if it can."""
        expected = sum(len(chunk) for chunk in chunks)
        written = os.pwritev(self._fd, chunks, offset)
        if written < expected:  # a short write: finish piece by piece
            _write_all(self._fd, b"".join(chunks)[written:], offset + written)

    def blocks(self, start: int, end: int, block: int = 1 << 20) -> Iterator[bytes]:
        """The bytes of [start, end) as written so far, in blocks."""
        while start < end:
            data = os.pread(self._fd, min(block, end - start), start)
            if not data:
                raise OSError(f"'{self.tmp}' is shorter than expected")
            yield data
            start += len(data)

    def _close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def commit(self, mtime: float) -> os.stat_result:
        self._close()
        try:
            return land(self.tmp, self.final, mtime)
        except BaseException:
            remove_quietly(self.tmp)
            raise

    def keep(self) -> None:
        """Close, leaving the file for a later run to resume."""
        self._close()

    def discard(self) -> None:
        self._close()
        remove_quietly(self.tmp)


def try_remove_unlocked(path: Path) -> bool:
    """Remove a temp file unless a live run holds its lock."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return True
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    try:
        remove_quietly(path)
    finally:
        os.close(fd)
    return True
