"""Writing under the model directory: directories, temp files, atomic landing.

Nothing here resolves a path twice. Each directory is reached from the model
directory one component at a time, opened with ``O_DIRECTORY|O_NOFOLLOW``
relative to its parent's file descriptor, and every create, open, ``utime``,
rename and unlink goes through a directory fd (``dir_fd=``) or the file's own
fd. A directory swapped for a symlink mid-run, or a symlink planted at a
temp file's name, therefore cannot send a byte outside the model directory:
the open fails instead of following the link.

Every function here is synchronous and blocking; the pipeline calls them in
worker threads. Each file is assembled in a hidden temp file beside its
target and renamed into place only when complete, so a final path only ever
holds a whole, checked file (or whatever was there before).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import secrets
import stat
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path

from ._errors import DestinationError, IcanhazmodelError, NotEnoughSpace
from ._keys import PARTIAL_SUFFIX, is_temp_name

_FILE_MODE = 0o666  # narrowed by the umask, as for any new file
_NAME_MAX = 255
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: a FIFO planted at a temp file's name must not hang the run.
_EXISTING_FLAGS = os.O_RDWR | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_PROBE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_NEW_FLAGS = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
# Directory fds kept open between calls. Listings come in key order, so a
# few dozen cover the folders in use; the rest are reopened when needed.
DIR_CACHE_SIZE = 64
# Directories already swept for stale temp files, remembered per run.
_SWEPT_MEMORY = 4096


class PathConflict(OSError):
    """The path is taken by something of the other kind (file vs directory)."""


class EscapesModelDir(OSError):
    """A symlink (or something that is not a plain directory) stands on the path."""


class UnusableTemp(OSError):
    """A temp file named by a manifest record that this run will not touch."""


def check_model_dir(path: str | os.PathLike[str]) -> Path:
    """Resolve the model directory and check it can be made and written.

    Creates nothing: the directory is made when the first file needs it, so a
    run that fails before (bad credentials, no such bucket) leaves no trace.
    """
    model_dir = Path(path)
    try:
        resolved = model_dir.resolve()
    except (OSError, RuntimeError) as exc:
        raise DestinationError(f"cannot use model_dir '{model_dir}': {exc}") from exc
    existing = resolved
    while not existing.exists() and existing != existing.parent:
        if existing.is_symlink():  # a dangling link: mkdir would fail on it
            raise DestinationError(f"model_dir '{model_dir}' is a broken symlink")
        existing = existing.parent
    if not existing.is_dir():
        if existing == resolved:
            raise DestinationError(f"model_dir '{model_dir}' exists and is not a directory")
        raise DestinationError(
            f"cannot create model_dir '{model_dir}': '{existing}' is not a directory"
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        what = "is not writable" if existing == resolved else f"cannot be created in '{existing}'"
        raise DestinationError(f"model_dir '{model_dir}' {what}")
    return resolved


def _open_child(parent: int, name: str, shown: Path, *, create: bool) -> int:
    """Open directory *name* inside the directory *parent*, never through a link."""
    for _ in range(3):
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o777, dir_fd=parent)
        except OSError as exc:
            if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            # Linux says ENOTDIR for a symlink opened with O_DIRECTORY|O_NOFOLLOW.
            if exc.errno == errno.ELOOP or stat.S_ISLNK(os.lstat(name, dir_fd=parent).st_mode):
                raise EscapesModelDir(
                    f"'{shown}' is a symlink: icanhazmodel never follows links inside "
                    "the model directory (one could lead out of it)"
                ) from None
            raise PathConflict(f"'{shown}' is a file where a directory must go") from None
    raise FileNotFoundError(errno.ENOENT, "directory keeps vanishing", str(shown))


class Tree:
    """The model directory, reached only through directory file descriptors.

    The root is created on first use. Directory fds are cached (bounded, LRU)
    and every caller gets its own duplicate, so evicting one never closes a
    descriptor another thread is using.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._root_fd = -1
        self._cache: OrderedDict[tuple[str, ...], int] = OrderedDict()
        self._swept: OrderedDict[tuple[str, ...], None] = OrderedDict()
        # Temp files a manifest still means to resume: never swept.
        self.keep_temp: Callable[[], set[str]] = set
        # The last folder a path was made in: keys come sorted, a folder's
        # files one after another, and a child of a made Path costs half of
        # a join from the root (a listing makes one per key).
        self._last_folder: tuple[tuple[str, ...], Path] = ((), root)
        # str(self.path(parts)) is this + "/".join(parts): the checked parts
        # hold no '', '.' or '..' for pathlib to tidy.
        self._str_prefix = "" if str(root) == "." else os.path.join(str(root), "")

    def path(self, parts: tuple[str, ...]) -> Path:
        folder, made = self._last_folder  # one read: other threads may replace it
        if parts[:-1] != folder:
            made = self.root.joinpath(*parts[:-1])
            self._last_folder = (parts[:-1], made)
        return made / parts[-1]

    def path_str(self, parts: tuple[str, ...]) -> str:
        """str(self.path(parts)), in a fraction of the time (for lstat, plan lines)."""
        return self._str_prefix + "/".join(parts)

    def _open_root(self, create: bool) -> int:
        if self._root_fd < 0:
            try:
                if create:
                    self.root.mkdir(parents=True, exist_ok=True)
                self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            except FileNotFoundError:
                if create:
                    raise DestinationError(f"cannot create model_dir '{self.root}'") from None
                raise
            except OSError as exc:
                if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
                    raise  # the pipeline's own word on these
                raise DestinationError(
                    f"cannot create model_dir '{self.root}': {exc.strerror}"
                ) from exc
        return self._root_fd

    def _walk(self, parts: tuple[str, ...], create: bool) -> int:
        """The cached fd of root/parts (caller holds the lock; do not close it)."""
        fd = self._open_root(create)
        depth = len(parts)
        while depth > 0 and parts[:depth] not in self._cache:
            depth -= 1
        if depth:
            fd = self._cache[parts[:depth]]
            self._cache.move_to_end(parts[:depth])
        for end in range(depth + 1, len(parts) + 1):
            prefix = parts[:end]
            fd = _open_child(fd, prefix[-1], self.path(prefix), create=create)
            self._cache[prefix] = fd
            if len(self._cache) > DIR_CACHE_SIZE:
                _, old = self._cache.popitem(last=False)
                os.close(old)
        return fd

    def directory(self, parts: tuple[str, ...], *, create: bool = True) -> int:
        """A new fd for root/parts, made if *create*; the caller closes it."""
        with self._lock:
            return os.dup(self._walk(parts, create))

    @contextlib.contextmanager
    def opened(self, parts: tuple[str, ...], *, create: bool = True) -> Iterator[int]:
        fd = self.directory(parts, create=create)
        try:
            yield fd
        finally:
            os.close(fd)

    def ensure_dir(self, parts: tuple[str, ...]) -> Path:
        """Make root/parts a directory, one checked component at a time."""
        with self._lock:
            self._walk(parts, True)
        return self.path(parts)

    def close(self) -> None:
        with self._lock:
            for fd in self._cache.values():
                os.close(fd)
            self._cache.clear()
            if self._root_fd >= 0:
                os.close(self._root_fd)
                self._root_fd = -1

    # -- temp files ---------------------------------------------------------------

    def temp_parts(self, relative: str) -> tuple[str, ...] | None:
        """The temp file a manifest record names, if it is a name icanhazmodel
        would have written (a record is never trusted further)."""
        parts = tuple(relative.split("/"))
        name = parts[-1]
        if (
            relative.startswith("/")
            or any(p in ("", ".", "..") for p in parts)
            or not is_temp_name(name)
        ):
            return None
        return parts

    def forget_sweep(self, dir_parts: tuple[str, ...]) -> None:
        """Sweep this folder again on next use (a worker process died writing there)."""
        with self._lock:
            self._swept.pop(dir_parts, None)

    def sweep(self, dir_parts: tuple[str, ...], dir_fd: int) -> None:
        """Remove stale temp files (from a run killed mid-write) in one directory.

        Stale: ours by name, owned by this user, a plain file with one link,
        not locked by a live run, and not kept by the manifest for resuming.
        Once per directory per run.
        """
        with self._lock:
            if dir_parts in self._swept:
                return
            self._swept[dir_parts] = None
            if len(self._swept) > _SWEPT_MEMORY:
                self._swept.popitem(last=False)
        keep: set[str] | None = None
        with os.scandir(dir_fd) as entries:
            names = [
                e.name for e in entries if is_temp_name(e.name) and e.is_file(follow_symlinks=False)
            ]
        for name in names:
            if keep is None:
                keep = self.keep_temp()
            if "/".join((*dir_parts, name)) not in keep:
                with contextlib.suppress(OSError):
                    remove_unlocked(dir_fd, name, own_only=True)


def temp_name(final_name: str) -> str:
    """A unique hidden name beside *final_name*, within the 255-byte name limit."""
    token = secrets.token_hex(6)
    room = _NAME_MAX - len(PARTIAL_SUFFIX) - len(token) - 3
    stem = final_name.encode("utf-8")[:room].decode("utf-8", "ignore")
    return f".{stem}.{token}{PARTIAL_SUFFIX}"


def temp_path(final: Path) -> Path:
    return final.with_name(temp_name(final.name))


def _create_locked(dir_fd: int, final_name: str) -> tuple[int, str]:
    """Create and lock a new temp file beside *final_name*.

    Locked at once, so a sweep by another run never removes it; should a
    sweep slip in between create and lock, the unlinked file is noticed
    (no links left) and another name is used.
    """
    while True:
        name = temp_name(final_name)
        fd = os.open(name, _NEW_FLAGS, _FILE_MODE, dir_fd=dir_fd)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.fstat(fd).st_nlink > 0:
                return fd, name
        except BlockingIOError:
            pass
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=dir_fd)
            raise
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _land(fd: int, dir_fd: int, tmp: str, final: str, mtime: float, shown: Path) -> os.stat_result:
    """Give the open temp file the object's mtime and rename it over *final*."""
    os.utime(fd, (mtime, mtime))
    landed = os.fstat(fd)
    try:
        os.replace(tmp, final, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except IsADirectoryError:
        raise PathConflict(f"'{shown}' is a directory where a file must go") from None
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise PathConflict(f"'{shown}' is a directory where a file must go") from None
        raise
    return landed


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


def write_whole(
    tree: Tree, parts: tuple[str, ...], chunks: list[bytes], mtime: float
) -> os.stat_result:
    """Write a small object held in memory: temp file, then atomic rename."""
    with tree.opened(parts[:-1]) as dir_fd:
        tree.sweep(parts[:-1], dir_fd)
        fd, tmp = _create_locked(dir_fd, parts[-1])
        try:
            try:
                offset = 0
                for chunk in chunks:
                    _write_all(fd, chunk, offset)
                    offset += len(chunk)
                return _land(fd, dir_fd, tmp, parts[-1], mtime, tree.path(parts))
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(dir_fd, tmp)
            raise


def _check_adoptable(fd: int, shown: Path) -> None:
    """A temp file to resume must be a plain file of ours with no other links."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise UnusableTemp(errno.EINVAL, "not a regular file", str(shown))
    if st.st_nlink != 1:
        raise UnusableTemp(errno.EMLINK, "it has other hard links", str(shown))
    if st.st_uid != os.geteuid():
        raise UnusableTemp(errno.EPERM, "it belongs to another user", str(shown))


class PartialFile:
    """A temp file assembled from byte ranges written at their offsets.

    The file is locked (flock) while open, so a second run sharing the model
    directory never resumes into a file this run is still writing; the lock
    dies with the process, so after a crash the file can be resumed. It
    holds its directory's fd, so landing never looks the path up again.

    With *join*, another worker process of the run owns the file (created,
    holds it locked, will land it): this one only writes ranges into it,
    then lets go with :meth:`keep`.
    """

    def __init__(
        self,
        tree: Tree,
        parts: tuple[str, ...],
        size: int,
        *,
        resume: str | None = None,
        join: str | None = None,
    ) -> None:
        self.final = tree.path(parts)
        self.size = size
        self._name = parts[-1]
        self._dir_fd = tree.directory(parts[:-1], create=join is None)
        self._fd = -1
        try:
            if join is not None:
                self.tmp_name = join
                self._join(join)
            elif resume is None:
                tree.sweep(parts[:-1], self._dir_fd)
                self._fd, self.tmp_name = _create_locked(self._dir_fd, self._name)
                # The full length up front, so ranges can land in any order.
                os.ftruncate(self._fd, size)
            else:
                self.tmp_name = resume
                self._adopt(resume)
        except BaseException:
            if resume is None and join is None and self._fd >= 0:
                _unlink_quietly(self._dir_fd, self.tmp_name)
            self._close()
            os.close(self._dir_fd)
            raise
        self.tmp = self.final.with_name(self.tmp_name)

    def _open_existing(self, name: str, shown: Path) -> None:
        """Open temp file *name*, never following or creating it."""
        try:
            self._fd = os.open(name, _EXISTING_FLAGS, dir_fd=self._dir_fd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnusableTemp(errno.ELOOP, "it is a symlink", str(shown)) from None
            raise
        _check_adoptable(self._fd, shown)

    def _adopt(self, name: str) -> None:
        shown = self.final.with_name(name)
        self._open_existing(name, shown)
        fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: busy
        os.set_blocking(self._fd, True)
        if os.fstat(self._fd).st_size != self.size:
            raise UnusableTemp(errno.EINVAL, "it has the wrong length to resume", str(shown))

    def _join(self, name: str) -> None:
        if not is_temp_name(name):
            raise UnusableTemp(errno.EINVAL, "not a temp file of icanhazmodel", name)
        shown = self.final.with_name(name)
        self._open_existing(name, shown)
        # Written only while its owner holds it locked: an owner that died or
        # let go may have removed, kept or landed it, and no range goes there.
        try:
            fcntl.flock(self._fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pass
        else:
            raise UnusableTemp(errno.ESTALE, "no process of this run is writing it", str(shown))
        os.set_blocking(self._fd, True)
        if os.fstat(self._fd).st_size != self.size:
            raise UnusableTemp(errno.EINVAL, "it has the wrong length", str(shown))

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

    def _release_dir(self) -> None:
        if self._dir_fd >= 0:
            fd, self._dir_fd = self._dir_fd, -1
            os.close(fd)

    def commit(self, mtime: float) -> os.stat_result:
        try:
            return _land(self._fd, self._dir_fd, self.tmp_name, self._name, mtime, self.final)
        except BaseException:
            _unlink_quietly(self._dir_fd, self.tmp_name)
            raise
        finally:
            self._close()
            self._release_dir()

    def keep(self) -> None:
        """Close, leaving the file for a later run to resume."""
        self._close()
        self._release_dir()

    def discard(self) -> None:
        self._close()
        if self._dir_fd >= 0:
            _unlink_quietly(self._dir_fd, self.tmp_name)
        self._release_dir()


def remove_unlocked(dir_fd: int, name: str, *, own_only: bool = False) -> bool:
    """Remove temp file *name* unless a live run holds its lock.

    A symlink at that name is removed as a link (its target is never
    touched). Anything else that is not a plain file raises ``UnusableTemp``.
    """
    try:
        fd = os.open(
            name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd
        )
    except FileNotFoundError:
        return True
    except OSError as exc:
        if exc.errno != errno.ELOOP:
            raise
        _unlink_quietly(dir_fd, name)  # a planted symlink: drop the link itself
        return True
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise UnusableTemp(errno.EISDIR, "it is not a plain file", name)
        if own_only and st.st_uid != os.geteuid():
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        _unlink_quietly(dir_fd, name)
    finally:
        os.close(fd)
    return True


def try_remove_unlocked(tree: Tree, parts: tuple[str, ...]) -> bool:
    """Remove the temp file at root/parts unless a live run holds its lock."""
    try:
        dir_fd = tree.directory(parts[:-1], create=False)
    except FileNotFoundError:
        return True
    try:
        return remove_unlocked(dir_fd, parts[-1])
    except UnusableTemp as exc:
        raise UnusableTemp(exc.errno, exc.strerror, str(tree.path(parts))) from None
    finally:
        os.close(dir_fd)


# -- what a failed write means --------------------------------------------------------


def describe_os_error(exc: OSError, folder: Path | None = None) -> str:
    """*exc* in a user's words. A temp file's name means nothing to them: an
    error making or writing one names the folder it was to be in."""
    if isinstance(exc, IcanhazmodelError | PathConflict | EscapesModelDir):
        return str(exc)
    name = os.fsdecode(exc.filename) if exc.filename else ""
    if folder is not None and is_temp_name(os.path.basename(name)):
        where = f" (writing in folder '{folder}')"
    else:
        where = f" ({name})" if name else ""
    return f"{exc.strerror or exc}{where}"


def stop_if_fatal(exc: OSError, root: Path) -> None:
    """Stop the run on errors that every further write under *root* would hit too."""
    if isinstance(exc, IcanhazmodelError):  # e.g. model_dir cannot be created
        raise exc
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f" (writing '{exc.filename}')" if exc.filename else ""
        raise NotEnoughSpace(
            f"no space left under '{root}'{where}: free some and run "
            "again; files that already landed are kept and skipped"
        ) from exc
    if exc.errno == errno.EROFS:
        raise DestinationError(f"cannot write under '{root}': {describe_os_error(exc)}") from exc
