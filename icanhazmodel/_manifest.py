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

import random
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

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


@dataclass(frozen=True, slots=True)
class FileRecord:
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


def _set_up(db: sqlite3.Connection) -> None:
    """WAL mode and the tables, tolerating another run doing the same.

    Switching to WAL needs a moment alone with the file, and SQLite answers
    "database is locked" at once rather than waiting, so two runs starting
    together retry here; once the file is in WAL mode it stays so.
    """
    for attempt in range(100):
        try:
            if db.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
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


class Manifest:
    """One run's connection to the manifest; safe to call from any thread."""

    def __init__(self, root: Path, *, read_only: bool = False) -> None:
        self.root = root
        self._lock = threading.Lock()
        self._pending_files: list[FileRecord] = []
        self._pending_ranges: list[tuple[PartialRecord, int, int, int]] = []
        self._pending_drops: list[str] = []
        path = manifest_path(root)
        self._db: sqlite3.Connection | None
        if read_only:
            if not path.exists():
                self._db = None
                return
            self._db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False)
        else:
            path.parent.mkdir(exist_ok=True)
            self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
            _set_up(self._db)
        self._db.execute("PRAGMA busy_timeout=30000")

    # -- reading ----------------------------------------------------------------

    def _select(self, sql: str, keys: Sequence[str]) -> list[tuple[object, ...]]:
        if self._db is None or not keys:
            return []
        rows: list[tuple[object, ...]] = []
        with self._lock:
            for i in range(0, len(keys), _BATCH):
                chunk = keys[i : i + _BATCH]
                marks = ",".join("?" * len(chunk))
                try:
                    rows += self._db.execute(sql.format(marks=marks), chunk).fetchall()
                except sqlite3.OperationalError:
                    return []  # a read-only look at a manifest without our tables
        return rows

    def files(self, keys: Sequence[str]) -> dict[str, FileRecord]:
        rows = self._select(
            "SELECT key, size, etag, version_id, verification, local_size, local_mtime_ns "
            "FROM files WHERE key IN ({marks})",
            keys,
        )
        return {
            str(key): FileRecord(
                str(key),
                _int(size),
                str(etag),
                None if version is None else str(version),
                str(level),
                _int(local_size),
                _int(local_mtime),
            )
            for key, size, etag, version, level, local_size, local_mtime in rows
        }

    def partials(self, keys: Sequence[str]) -> dict[str, list[PartialRecord]]:
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
        """Commit everything buffered so far in one transaction."""
        with self._lock:
            files, self._pending_files = self._pending_files, []
            ranges, self._pending_ranges = self._pending_ranges, []
            drops, self._pending_drops = self._pending_drops, []
            if self._db is None or not (files or ranges or drops):
                return
            with self._db:
                self._write(self._db, files, ranges, drops)

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
        try:
            self.flush()
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
