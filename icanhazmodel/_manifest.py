"""icanhazmodel's own record of what it wrote under a model directory.

A small SQLite database at ``model_dir/.icanhazmodel/manifest.sqlite3``:

- ``files``: for each file icanhazmodel landed, the object it came from
  (size, ETag, version) and the local file as it was left (size, mtime in
  ns). A later run skips an object only when both still match, so an object
  changed in S3 is fetched again and a file the user edited is noticed.
- ``partials`` and ``ranges``: for a large download in progress, its temp
  file and each byte range already on disk with that range's CRC, so an
  interrupted download resumes instead of starting over.

SQLite in WAL mode with a busy timeout lets two runs share one model
directory without losing each other's entries. Writes are buffered and
committed in batches; a crash loses at most the last batch, which only means
those files are fetched again. All methods block: call them from a thread.
"""

from __future__ import annotations

import contextlib
import os
import random
import sqlite3
import stat
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple
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
_U64 = 1 << 64
# SQLite caps the number of host parameters in one statement.
_BATCH = 500
# SQLite's unix VFS refuses longer paths (512 bytes, with room for "-wal").
_SQLITE_PATH_MAX = 500
# How often an in-memory manifest (a path too long for SQLite) is written back.
_PERSIST_SECONDS = 30.0
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
_WRITE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class FileRecord(NamedTuple):
    """What icanhazmodel wrote for one key. A named tuple, not a dataclass:
    a rerun makes one per listed key, and a row becomes one in 0.3 us, not 1."""

    key: str
    size: int
    etag: str
    version_id: str | None
    verification: str
    local_size: int
    local_mtime_ns: int


@dataclass(frozen=True, slots=True)
class PartialRecord:
    """A temp file holding some ranges of one object version."""

    tmp_name: str  # relative to the model directory
    key: str
    etag: str
    size: int
    part_size: int
    crc_algorithm: str
    ranges: tuple[tuple[int, int, int], ...] = ()  # (start, end, crc)


def _int(value: object) -> int:
    if not isinstance(value, int):
        raise sqlite3.DatabaseError(f"manifest holds {value!r} where a number belongs")
    return value


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


def manifest_path(root: Path) -> Path:
    return root / META_DIRNAME / MANIFEST_NAME


def _damaged(exc: sqlite3.Error) -> bool:
    """SQLITE_CORRUPT or SQLITE_NOTADB: the file itself is broken."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    return code in (11, 26) or type(exc) is sqlite3.DatabaseError


def _ignore(text: str) -> None:
    pass


class Manifest:
    """One run's connection to the manifest; safe to call from any thread.

    Nothing is created until there is a record to write, so a run that
    fails early leaves no manifest behind. The manifest's folder is reached
    through the tree's directory fds (never through a symlink), and SQLite
    is pointed at it through ``/proc/self/fd`` where that exists. Where the
    path is too long for SQLite (512 bytes), the manifest is kept in memory
    and written back whole, atomically, now and then and at the end.

    Writing never raises: a failure is kept in :attr:`write_error`, the
    records stay buffered, and the next flush tries again.
    """

    def __init__(
        self, tree: Tree, *, read_only: bool = False, notice: Callable[[str], None] = _ignore
    ) -> None:
        self.root = tree.root
        self._tree = tree
        self._read_only = read_only
        self._notice = notice
        self._lock = threading.Lock()
        self._pending_files: list[FileRecord] = []
        self._pending_ranges: list[tuple[PartialRecord, int, int, int]] = []
        self._pending_drops: list[str] = []
        self._db: sqlite3.Connection | None = None
        self._meta_fd = -1
        self._in_memory = False
        self._persisted_at = 0.0
        self.write_error: str | None = None
        self.path = manifest_path(tree.root)
        with self._lock:
            self._connect(create=False)

    # -- opening ------------------------------------------------------------------

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

    def _connect(self, *, create: bool) -> sqlite3.Connection | None:
        """Open the manifest (creating it if *create*); None if there is none yet."""
        if self._db is not None:
            return self._db
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
            self._db = self._open_db()
        except sqlite3.DatabaseError as exc:
            if not _damaged(exc):
                raise DestinationError(f"cannot open the manifest '{self.path}': {exc}") from exc
            self._set_aside(exc)
            self._db = self._open_db()
        return self._db

    def _open_db(self) -> sqlite3.Connection:
        name = self._sqlite_name()
        if self._read_only:
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

    def _persist(self) -> None:
        """Write the in-memory copy back: temp file, then atomic rename."""
        assert self._db is not None
        image = self._db.serialize()
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

    def _drop_connection(self) -> None:
        if self._db is not None and not self._in_memory:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None

    def _set_aside(self, exc: sqlite3.Error) -> None:
        """Move a damaged manifest out of the way so a fresh one can start."""
        if self._read_only:
            raise DestinationError(
                f"the manifest '{self.path}' is damaged ({exc}): a normal run sets it aside "
                "and starts a fresh one, or delete it"
            ) from exc
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
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

    # -- reading ----------------------------------------------------------------

    def _select(self, sql: str, keys: Sequence[str] | None) -> list[tuple[object, ...]]:
        """Rows of *sql*, run for *keys* in batches (its ``{marks}``), or once
        as it is (None)."""
        if keys is not None and not keys:
            return []
        with self._lock:
            for attempt in range(2):
                try:
                    return self._select_locked(sql, keys)
                except sqlite3.OperationalError as exc:
                    if "no such table" in str(exc):
                        return []  # a read-only look at a manifest without our tables
                    raise DestinationError(
                        f"cannot read the manifest '{self.path}': {exc}"
                    ) from exc
                except sqlite3.DatabaseError as exc:
                    if not _damaged(exc) or attempt:
                        raise DestinationError(
                            f"cannot read the manifest '{self.path}': {exc}"
                        ) from exc
                    self._set_aside(exc)
                    self._connect(create=False)
        return []

    def _select_locked(self, sql: str, keys: Sequence[str] | None) -> list[tuple[object, ...]]:
        if self._db is None:
            return []
        if keys is None:
            return self._db.execute(sql).fetchall()
        rows: list[tuple[object, ...]] = []
        for i in range(0, len(keys), _BATCH):
            chunk = keys[i : i + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows += self._db.execute(sql.format(marks=marks), chunk).fetchall()
        return rows

    def partial_names(self) -> set[str]:
        """Every temp file the manifest means to resume (relative paths)."""
        with self._lock:
            if self._db is None:
                return set()
            try:
                return {str(r[0]) for r in self._db.execute("SELECT tmp_name FROM partials")}
            except sqlite3.Error:
                return set()

    def files(self, keys: Sequence[str]) -> dict[str, FileRecord]:
        rows = self._select(
            "SELECT key, size, etag, version_id, verification, local_size, local_mtime_ns "
            "FROM files WHERE key IN ({marks})",
            keys,
        )
        records = {}
        for row in rows:
            key, size, etag, version, level, local_size, local_mtime = row
            if (
                type(key) is str
                and type(size) is int
                and type(etag) is str
                and (version is None or type(version) is str)
                and type(level) is str
                and type(local_size) is int
                and type(local_mtime) is int
            ):
                records[key] = FileRecord._make(row)  # as stored: no conversion needed
            else:
                records[str(key)] = FileRecord(
                    str(key),
                    _int(size),
                    str(etag),
                    None if version is None else str(version),
                    str(level),
                    _int(local_size),
                    _int(local_mtime),
                )
        return records

    def partials(self, keys: Sequence[str]) -> dict[str, list[PartialRecord]]:
        # Most runs have none to resume: one look at the table, not a lookup
        # of every key (a tenth of what an unchanged key costs a rerun).
        if not keys or not self._select("SELECT 1 FROM partials LIMIT 1", None):
            return {}
        heads = self._select(
            "SELECT tmp_name, key, etag, size, part_size, crc_algorithm "
            "FROM partials WHERE key IN ({marks})",
            keys,
        )
        if not heads:
            return {}
        ranges: dict[str, list[tuple[int, int, int]]] = {}
        for tmp_name, start, end, crc in self._select(
            "SELECT tmp_name, start, end, crc FROM ranges WHERE tmp_name IN ({marks})",
            [str(head[0]) for head in heads],
        ):
            ranges.setdefault(str(tmp_name), []).append((_int(start), _int(end), _int(crc) % _U64))
        found: dict[str, list[PartialRecord]] = {}
        for tmp_name, key, etag, size, part_size, algorithm in heads:
            record = PartialRecord(
                tmp_name=str(tmp_name),
                key=str(key),
                etag=str(etag),
                size=_int(size),
                part_size=_int(part_size),
                crc_algorithm=str(algorithm),
                ranges=tuple(sorted(ranges.get(str(tmp_name), ()))),
            )
            found.setdefault(record.key, []).append(record)
        return found

    # -- writing (buffered) -----------------------------------------------------

    def add_file(self, record: FileRecord) -> None:
        with self._lock:
            self._pending_files.append(record)

    def add_range(self, partial: PartialRecord, start: int, end: int, crc: int) -> None:
        with self._lock:
            self._pending_ranges.append((partial, start, end, crc))

    def drop_partial(self, tmp_name: str) -> None:
        with self._lock:
            self._pending_drops.append(tmp_name)

    def pending(self) -> int:
        return len(self._pending_files) + len(self._pending_ranges) + len(self._pending_drops)

    def flush(self) -> None:
        """Commit everything buffered so far in one transaction.

        Never raises: on failure the records stay buffered for the next try
        and :attr:`write_error` says why.
        """
        with self._lock:
            files, self._pending_files = self._pending_files, []
            ranges, self._pending_ranges = self._pending_ranges, []
            drops, self._pending_drops = self._pending_drops, []
            if self._read_only or not (files or ranges or drops):
                return
            try:
                self._commit(files, ranges, drops)
            except (sqlite3.Error, OSError) as exc:
                self._drop_connection()  # the next try opens it afresh (writable again?)
                self._pending_files[:0] = files
                self._pending_ranges[:0] = ranges
                self._pending_drops[:0] = drops
                first = self.write_error is None
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else exc
                self.write_error = f"cannot update the manifest '{self.path}': {reason}"
                if first:
                    self._notice(f"warning: {self.write_error}; trying again later")
                return
            self.write_error = None

    def _commit(
        self,
        files: list[FileRecord],
        ranges: list[tuple[PartialRecord, int, int, int]],
        drops: list[str],
    ) -> None:
        for attempt in range(2):
            db = self._connect(create=True)
            assert db is not None
            try:
                with db:
                    self._write(db, files, ranges, drops)
                break
            except sqlite3.DatabaseError as exc:
                if not _damaged(exc) or attempt:
                    raise
                self._set_aside(exc)
        if self._in_memory and time.monotonic() - self._persisted_at > _PERSIST_SECONDS:
            self._persist()

    @staticmethod
    def _write(
        db: sqlite3.Connection,
        files: Iterable[FileRecord],
        ranges: Iterable[tuple[PartialRecord, int, int, int]],
        drops: Iterable[str],
    ) -> None:
        db.executemany(
            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (
                    f.key,
                    f.size,
                    f.etag,
                    f.version_id,
                    f.verification,
                    f.local_size,
                    f.local_mtime_ns,
                )
                for f in files
            ],
        )
        for partial, start, end, crc in ranges:
            db.execute(
                "INSERT OR IGNORE INTO partials VALUES (?, ?, ?, ?, ?, ?)",
                (
                    partial.tmp_name,
                    partial.key,
                    partial.etag,
                    partial.size,
                    partial.part_size,
                    partial.crc_algorithm,
                ),
            )
            db.execute(
                "INSERT OR REPLACE INTO ranges VALUES (?, ?, ?, ?)",
                # SQLite integers are signed 64-bit; a CRC64 may not fit unsigned.
                (partial.tmp_name, start, end, crc - _U64 if crc >= _U64 // 2 else crc),
            )
        for tmp_name in drops:
            db.execute("DELETE FROM ranges WHERE tmp_name = ?", (tmp_name,))
            db.execute("DELETE FROM partials WHERE tmp_name = ?", (tmp_name,))

    def close(self) -> None:
        """Flush (once more) and close; never raises (see :attr:`write_error`)."""
        self.flush()
        with self._lock:
            if self._db is not None:
                if self._in_memory and not self._read_only and self.write_error is None:
                    self._persisted_at = 0.0
                    try:
                        self._persist()
                    except OSError as exc:
                        self.write_error = (
                            f"cannot update the manifest '{self.path}': {exc.strerror or exc}"
                        )
                with contextlib.suppress(sqlite3.Error):
                    self._db.close()
                self._db = None
            if self._meta_fd >= 0:
                os.close(self._meta_fd)
                self._meta_fd = -1


def _nonempty(dir_fd: int, name: str) -> bool:
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_size > 0
    except OSError:
        return False
