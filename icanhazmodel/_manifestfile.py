"""The manifest's SQLite file: finding it, opening it, and keeping it sound.

``_manifest`` says what the records are and when they are read and written;
this module owns the file they live in:

- it is reached through the tree's directory fds (never through a symlink),
  and SQLite is pointed at it through ``/proc/self/fd`` where that exists;
- nothing is created until there is a record to write, so a run that fails
  early leaves no manifest behind;
- WAL mode and a busy timeout let two runs share one model directory;
- a damaged file is set aside and a fresh one started (its records only
  saved downloads: files on disk are checked against S3 again);
- where the path is too long for SQLite (512 bytes), the manifest is kept in
  memory and written back whole, atomically, now and then and at the end.

Not thread-safe: the :class:`~._manifest.Manifest` calls it under its lock.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import stat
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import quote

from ._errors import DestinationError
from ._files import Tree
from ._keys import META_DIRNAME

MANIFEST_NAME = "manifest.sqlite3"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    key TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    etag TEXT NOT NULL,
    version_id TEXT,
    verification TEXT NOT NULL,
    local_size INTEGER NOT NULL,
    local_mtime_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS partials (
    tmp_name TEXT PRIMARY KEY,
    key TEXT NOT NULL,
    etag TEXT NOT NULL,
    size INTEGER NOT NULL,
    part_size INTEGER NOT NULL,
    crc_algorithm TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS partials_by_key ON partials (key);
CREATE TABLE IF NOT EXISTS ranges (
    tmp_name TEXT NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    crc INTEGER NOT NULL,
    PRIMARY KEY (tmp_name, start)
);
"""
# SQLite's unix VFS refuses longer paths (512 bytes, with room for "-wal").
_SQLITE_PATH_MAX = 500
# How often an in-memory manifest (a path too long for SQLite) is written back.
_PERSIST_SECONDS = 30.0


def manifest_path(root: Path) -> Path:
    return root / META_DIRNAME / MANIFEST_NAME


def damaged(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file itself is broken."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (11, 26) or type(exc) is sqlite3.DatabaseError


class ManifestFile:
    """The connection to one model directory's manifest file, opened on demand."""

    def __init__(self, tree: Tree, *, read_only: bool, notice: Callable[[str], None]) -> None:
        self._tree = tree
        self.read_only = read_only
        self._notice = notice
        self.db: sqlite3.Connection | None = None
        self._meta_fd = -1
        self._in_memory = False
        self._persisted_at = 0.0
        self.path = manifest_path(tree.root)

    def _open_meta_dir(self, create: bool) -> bool:
        if self._meta_fd >= 0:
            return True
        try:
            self._meta_fd = self._tree.directory((META_DIRNAME,), create=create)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise DestinationError(f"cannot keep records in '{self.path.parent}': {exc}") from exc
        return True

    def _sqlite_name(self) -> str:
        if os.path.isdir(f"/proc/self/fd/{self._meta_fd}"):
            return f"/proc/self/fd/{self._meta_fd}/{MANIFEST_NAME}"
        return str(self.path)

    def connect(self, *, create: bool) -> sqlite3.Connection | None:
        """Open the manifest (creating it if *create*); None if there is none yet."""
        if self.db is not None:
            return self.db
        if not self._open_meta_dir(create):
            return None
        try:
            st = os.lstat(MANIFEST_NAME, dir_fd=self._meta_fd)
        except FileNotFoundError:
            if not create:
                return None
        else:
            if not stat.S_ISREG(st.st_mode):
                raise DestinationError(
                    f"'{self.path}' is not a regular file (a symlink?): remove it and run again"
                )
        try:
            self.db = self._open_db()
        except sqlite3.DatabaseError as exc:
            if not damaged(exc):
                raise DestinationError(f"cannot open the manifest '{self.path}': {exc}") from exc
            self.set_aside(exc)
            self.db = self._open_db()
        return self.db

    def _open_db(self) -> sqlite3.Connection:
        name = self._sqlite_name()
        if self.read_only:
            wal = self.path.with_name(MANIFEST_NAME + "-wal")
            # immutable: no lock, no -shm/-wal files made. Only when there is
            # no journal to read: a crashed run's WAL still holds records.
            mode = "mode=ro" if _nonempty(self._meta_fd, wal.name) else "immutable=1"
            try:
                db = sqlite3.connect(
                    f"file:{quote(name)}?{mode}", uri=True, check_same_thread=False
                )
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.OperationalError:
                if len(str(self.path).encode()) < _SQLITE_PATH_MAX:
                    raise
                db = self._load_into_memory()
        else:
            try:
                db = sqlite3.connect(name, check_same_thread=False, timeout=30)
                _set_up(db)
            except sqlite3.OperationalError as exc:
                if "unable to open" not in str(exc) or len(str(self.path).encode()) < (
                    _SQLITE_PATH_MAX
                ):
                    raise
                db = self._load_into_memory()
                _set_up(db, wal=False)
        db.execute("PRAGMA busy_timeout=30000")
        return db

    def _load_into_memory(self) -> sqlite3.Connection:
        """The manifest as an in-memory copy, for paths too long for SQLite."""
        self._in_memory = True
        db = sqlite3.connect(":memory:", check_same_thread=False)
        try:
            fd = os.open(
                MANIFEST_NAME, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=self._meta_fd
            )
        except FileNotFoundError:
            return db
        with os.fdopen(fd, "rb") as file:
            image = bytearray(file.read())
        if len(image) >= 20 and image[18:20] == b"\x02\x02":
            image[18:20] = b"\x01\x01"  # WAL mode cannot be used in memory
        if image:
            db.deserialize(bytes(image))
        return db

    def persist_if_due(self) -> None:
        """Write an in-memory copy back if it has not been for a while."""
        if self._in_memory and time.monotonic() - self._persisted_at > _PERSIST_SECONDS:
            self._persist()

    def _persist(self) -> None:
        """Write the in-memory copy back: temp file, then atomic rename."""
        assert self.db is not None
        image = self.db.serialize()
        tmp = f".{MANIFEST_NAME}.{os.getpid()}.tmp"
        fd = os.open(
            tmp,
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o666,
            dir_fd=self._meta_fd,
        )
        try:
            with os.fdopen(fd, "wb") as file:
                file.write(image)
            os.replace(tmp, MANIFEST_NAME, src_dir_fd=self._meta_fd, dst_dir_fd=self._meta_fd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp, dir_fd=self._meta_fd)
            raise
        self._persisted_at = time.monotonic()

    def drop_connection(self) -> None:
        """Forget the connection: the next write opens it afresh (writable again?)."""
        if self.db is not None and not self._in_memory:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None

    def set_aside(self, exc: sqlite3.Error) -> None:
        """Move a damaged manifest out of the way so a fresh one can start."""
        if self.read_only:
            raise DestinationError(
                f"the manifest '{self.path}' is damaged ({exc}): a normal run sets it aside "
                "and starts a fresh one, or delete it"
            ) from exc
        if self.db is not None:
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
        stamp = time.strftime("%Y%m%dT%H%M%S")
        aside = f"{MANIFEST_NAME}.damaged-{stamp}"
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.replace(
                    MANIFEST_NAME + suffix,
                    aside + suffix,
                    src_dir_fd=self._meta_fd,
                    dst_dir_fd=self._meta_fd,
                )
        self._notice(
            f"note: the manifest was damaged ({exc}); set aside as "
            f"'{self.path.with_name(aside)}', starting a fresh one: files on disk are "
            "checked against S3 again"
        )

    def close(self, *, write_back: bool) -> str | None:
        """Close (writing an in-memory copy back first if *write_back*);
        what went wrong writing it back, if anything."""
        error = None
        if self.db is not None:
            if self._in_memory and not self.read_only and write_back:
                try:
                    self._persist()
                except OSError as exc:
                    error = f"cannot update the manifest '{self.path}': {exc.strerror or exc}"
            with contextlib.suppress(sqlite3.Error):
                self.db.close()
            self.db = None
        if self._meta_fd >= 0:
            os.close(self._meta_fd)
            self._meta_fd = -1
        return error


def _set_up(db: sqlite3.Connection, *, wal: bool = True) -> None:
    """WAL mode and the tables, tolerating another run doing the same.

    Switching to WAL needs a moment alone with the file, and SQLite answers
    "database is locked" at once rather than waiting, so two runs starting
    together retry here; once the file is in WAL mode it stays so.
    """
    for attempt in range(100):
        try:
            if wal and db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 99:
                raise
            time.sleep(0.02 + random.random() * 0.05)


def _nonempty(dir_fd: int, name: str) -> bool:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size > 0
    except OSError:
        return False
