"""A prefix as it was at a time (``--at``): which version of each key.

ListObjectVersions names every version and delete marker under a prefix,
by key, newest first within a key (its pages carry the two kinds in two
lists; :func:`merged` puts them back in that one order). At time T a key
held its newest entry from T or before: a version (fetch it) or a delete
marker (the key did not exist then). A key whose every entry is newer
than T did not exist either. Pure: no I/O here.
"""

from __future__ import annotations

import calendar
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from ._errors import UsageError
from ._models import RemoteObject


@dataclass(frozen=True, slots=True)
class Entry:
    """One row of ListObjectVersions: a version, or a delete marker."""

    obj: RemoteObject  # with its version_id; size/etag meaningless for a marker
    deleted: bool = False


def merged(versions: Iterable[Entry], markers: Iterable[Entry]) -> list[Entry]:
    """One page's versions and delete markers in listing order: by key, newest first."""
    return sorted([*versions, *markers], key=lambda e: (e.obj.key, -e.obj.last_modified))


class AsOf:
    """Picks, key by key, the entry current at *at* (POSIX seconds), across pages."""

    def __init__(self, at: float) -> None:
        self.at = at
        self._key: str | None = None  # the key being read
        self._settled = False  # its entry at *at* was found

    def feed(self, entries: Iterable[Entry]) -> Iterator[RemoteObject]:
        """The objects current at *at* among *entries* (in listing order)."""
        for entry in entries:
            key = entry.obj.key
            if key != self._key:
                self._key, self._settled = key, False
            if self._settled or entry.obj.last_modified > self.at:
                continue  # an older entry of a key already settled; or newer than *at*
            self._settled = True
            if not entry.deleted:
                yield entry.obj


_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def parse_at(text: str) -> float:
    """--at: an RFC 3339 time (``2026-11-01T12:00:00Z``, any offset; none
    means UTC) or a date (``2026-11-01``: its first second, UTC), as POSIX seconds."""
    value = text.strip()
    try:
        if _DATE.match(value):
            when = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
        else:
            when = datetime.fromisoformat(value.replace("z", "Z"))
            if when.tzinfo is None:
                when = when.replace(tzinfo=UTC)
    except ValueError:
        raise UsageError(
            f"--at '{text}' is not a time: use RFC 3339 (2026-11-01T12:00:00Z) or a date "
            "(2026-11-01)"
        ) from None
    return calendar.timegm(when.utctimetuple()) + when.microsecond / 1e6


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
