"""Lock files: exactly which objects a run fetched, to fetch them again.

A prefix in S3 is not a release: objects are overwritten and added, and the
same command a week later may fetch a different model. ``--lock FILE``
writes, at the end of a run that fetched everything it listed, one JSON
document naming every file under the model directory the run stands for:
its key, path, size, ETag, version id (on a versioned bucket), S3 checksum
where S3 sent one, and how it was checked. ``--from-lock FILE`` fetches
exactly those objects again: by version id where the lock has one, else by
ETag (``If-Match``), checked as usual; an object that is no longer in S3 in
that form fails by name, and is never replaced by what the key holds now.

Pure data and JSON here; where the run fills a lock and where it reads one
are ``_ledger`` and ``_pipeline``.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._errors import UsageError
from ._models import RemoteObject

FORMAT = 1  # the "icanhazmodel_lock" field: what a reader must understand


class LockError(UsageError):
    """A lock file that cannot be read or written."""


@dataclass(frozen=True, slots=True)
class LockedFile:
    """One object a run fetched (or found unchanged on disk)."""

    key: str
    path: str  # under the model directory, '/'-separated (the key's path)
    size: int
    etag: str  # without quotes
    version_id: str | None  # on a versioned bucket
    last_modified: float  # POSIX seconds, as S3 listed it (the file's mtime)
    checksum: str | None = None  # S3's, "ALGORITHM:base64", where S3 sent one
    verification: str | None = None  # how it was checked; None: not fetched by this run

    def remote(self) -> RemoteObject:
        """The object as a run plans it: pinned to this version and ETag."""
        return RemoteObject(
            key=self.key,
            size=self.size,
            etag=self.etag,
            last_modified=self.last_modified,
            version_id=self.version_id,
        )


@dataclass(frozen=True, slots=True)
class Lock:
    """What a lock file says: the run it came from, and its files by key."""

    bucket: str
    key: str  # the key or prefix the run was given
    prefix: str  # what --include/--exclude were relative to
    files: tuple[LockedFile, ...]
    endpoint_url: str | None = None  # where it was fetched from (never used to connect)
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    shard: str | None = None  # "K/N"
    created: str = ""  # RFC 3339, UTC
    at: str | None = None  # --at: the time the prefix was taken as of (RFC 3339)


def lock_document(lock: Lock) -> dict[str, Any]:
    return {
        "icanhazmodel_lock": FORMAT,
        "created": lock.created,
        "bucket": lock.bucket,
        "endpoint_url": lock.endpoint_url,
        "key": lock.key,
        "prefix": lock.prefix,
        "include": list(lock.include),
        "exclude": list(lock.exclude),
        "shard": lock.shard,
        "at": lock.at,
        "files": [
            {
                "key": f.key,
                "path": f.path,
                "size": f.size,
                "etag": f.etag,
                "version_id": f.version_id,
                "last_modified": f.last_modified,
                "checksum": f.checksum,
                "verification": f.verification,
            }
            for f in lock.files
        ],
    }


def write_lock(path: Path, lock: Lock) -> None:
    """Write *lock* to *path* atomically: a temp file beside it, then rename."""
    import tempfile  # here: the settings import this module, and start must stay light

    text = json.dumps(lock_document(lock), indent=1, ensure_ascii=False) + "\n"
    folder = path.parent
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as exc:
        raise LockError(f"cannot write the lock '{path}': {exc.strerror or exc}") from exc
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as file:
            file.write(text)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise LockError(f"cannot write the lock '{path}': {exc.strerror or exc}") from exc


def read_lock(path: str | os.PathLike[str]) -> Lock:
    """The lock file at *path*, checked; :class:`LockError` says what is wrong."""
    where = Path(path)
    try:
        document = json.loads(where.read_text(encoding="utf-8"))
    except OSError as exc:
        raise LockError(f"cannot read the lock '{where}': {exc.strerror or exc}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise LockError(f"the lock '{where}' is not JSON: {exc}") from None
    try:
        return _parse(document)
    except (KeyError, TypeError, ValueError) as exc:
        raise LockError(f"the lock '{where}' is not an icanhazmodel lock: {exc}") from None


def _parse(document: Any) -> Lock:
    if not isinstance(document, Mapping) or "icanhazmodel_lock" not in document:
        raise ValueError("no 'icanhazmodel_lock' field")
    if document["icanhazmodel_lock"] != FORMAT:
        raise ValueError(
            f"format {document['icanhazmodel_lock']!r}, this version reads {FORMAT}: "
            "upgrade icanhazmodel"
        )
    files = tuple(_file(entry) for entry in _list(document, "files"))
    keys = [f.key for f in files]
    if len(set(keys)) != len(keys):
        raise ValueError("a key is listed twice")
    return Lock(
        bucket=_str(document, "bucket"),
        key=_str(document, "key", empty=True),
        prefix=_str(document, "prefix", empty=True),
        files=files,
        endpoint_url=_optional_str(document, "endpoint_url"),
        include=tuple(_strings(document, "include")),
        exclude=tuple(_strings(document, "exclude")),
        shard=_optional_str(document, "shard"),
        created=_str(document, "created", empty=True),
        at=_optional_str(document, "at"),
    )


def _file(entry: Any) -> LockedFile:
    if not isinstance(entry, Mapping):
        raise TypeError("a file entry is not an object")
    size = entry["size"]
    if type(size) is not int or size < 0:
        raise ValueError(f"file {entry.get('key')!r} has size {size!r}")
    modified = entry.get("last_modified", 0.0)
    if type(modified) not in (int, float):
        raise ValueError(f"file {entry.get('key')!r} has last_modified {modified!r}")
    return LockedFile(
        key=_str(entry, "key"),
        path=_str(entry, "path"),
        size=size,
        etag=_str(entry, "etag"),
        version_id=_optional_str(entry, "version_id"),
        last_modified=float(modified),
        checksum=_optional_str(entry, "checksum"),
        verification=_optional_str(entry, "verification"),
    )


def _str(document: Mapping[str, Any], name: str, *, empty: bool = False) -> str:
    value = document[name]
    if not isinstance(value, str) or (not value and not empty):
        raise ValueError(f"'{name}' is {value!r}, not a string")
    return value


def _optional_str(document: Mapping[str, Any], name: str) -> str | None:
    value = document.get(name)
    if value is not None and not isinstance(value, str):
        raise ValueError(f"'{name}' is {value!r}, not a string")
    return value


def _list(document: Mapping[str, Any], name: str) -> list[Any]:
    value = document[name]
    if not isinstance(value, list):
        raise TypeError(f"'{name}' is not a list")
    return value


def _strings(document: Mapping[str, Any], name: str) -> Iterable[str]:
    for value in _list(document, name) if name in document else []:
        if not isinstance(value, str):
            raise TypeError(f"'{name}' holds {value!r}, not a string")
        yield value


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class LockBook:
    """The files a run stands for, gathered as they land or are found
    unchanged; sorted by key when the lock is made."""

    def __init__(self) -> None:
        self._files: dict[str, LockedFile] = {}

    def add(self, entry: LockedFile) -> None:
        self._files[entry.key] = entry

    def files(self) -> tuple[LockedFile, ...]:
        return tuple(self._files[key] for key in sorted(self._files))
