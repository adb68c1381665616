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

import sqlite3
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ._errors import DestinationError
from ._files import Tree
from ._manifestfile import ManifestFile, damaged

_U64 = 1 << 64
# SQLite caps the number of host parameters in one statement.
_BATCH = 500


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


def _ignore(text: str) -> None:
    pass


class Manifest:
    """One run's connection to the manifest; safe to call from any thread.

    Nothing is created until there is a record to write (the file itself
    is ``_manifestfile``'s).

    Writing never raises: a failure is kept in :attr:`write_error`, the
    records stay buffered, and the next flush tries again.
    """

    def __init__(
        self, tree: Tree, *, read_only: bool = False, notice: Callable[[str], None] = _ignore
    ) -> None:
        self.root = tree.root
        self._read_only = read_only
        self._notice = notice
        self._file = ManifestFile(tree, read_only=read_only, notice=notice)
        self._lock = threading.Lock()
        self._pending_files: list[FileRecord] = []
        self._pending_ranges: list[tuple[PartialRecord, int, int, int]] = []
        self._pending_drops: list[str] = []
        self.write_error: str | None = None
        self.path = self._file.path
        with self._lock:
            self._file.connect(create=False)

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
                    if not damaged(exc) or attempt:
                        raise DestinationError(
                            f"cannot read the manifest '{self.path}': {exc}"
                        ) from exc
                    self._file.set_aside(exc)
                    self._file.connect(create=False)
        return []

    def _select_locked(self, sql: str, keys: Sequence[str] | None) -> list[tuple[object, ...]]:
        db = self._file.db
        if db is None:
            return []
        if keys is None:
            return db.execute(sql).fetchall()
        rows: list[tuple[object, ...]] = []
        for i in range(0, len(keys), _BATCH):
            chunk = keys[i : i + _BATCH]
            marks = ",".join("?" * len(chunk))
            rows += db.execute(sql.format(marks=marks), chunk).fetchall()
        return rows

    def partial_names(self) -> set[str]:
        """Every temp file the manifest means to resume (relative paths)."""
        with self._lock:
            db = self._file.db
            if db is None:
                return set()
            try:
                return {str(r[0]) for r in db.execute("SELECT tmp_name FROM partials")}
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
                self._file.drop_connection()
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
            db = self._file.connect(create=True)
            assert db is not None
            try:
                with db:
                    self._write(db, files, ranges, drops)
                break
            except sqlite3.DatabaseError as exc:
                if not damaged(exc) or attempt:
                    raise
                self._file.set_aside(exc)
        self._file.persist_if_due()

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
            error = self._file.close(write_back=self.write_error is None)
            self.write_error = self.write_error or error
