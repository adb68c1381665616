"""What the parent and its worker processes say to each other.

Plain, frozen dataclasses of plain values, pickled over a socket pair: no
botocore type, no open file, nothing that differs between versions of the
libraries. The parent sends one :class:`WorkerSettings`, then lists of
messages (tasks, spans, ...: what one turn of its loop queued), or
:class:`Abort` alone; each worker answers with batches of events and, at the
end, :class:`Bye`.

Both sides send with :func:`send_message` and read with an :class:`Inbox`, on their
event loop, so no thread hands a message to the loop.
"""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from ._checksums import Expectation
from ._direct import FrozenCredentials, Route
from ._events import Landing
from ._manifest import PartialRecord
from ._models import RemoteObject, pickled_by_fields
from ._proxy import Proxies
from ._tls import Trust


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """Everything a worker needs to fetch objects on its own."""

    root: str  # the model directory, resolved
    bucket: str
    route: Route
    credentials: FrozenCredentials | None
    concurrency: int  # requests in flight in this process: fixed, or the most (adaptive)
    streams: int  # ranges streamed at once, what its memory budget is sized for
    adaptive: bool  # found as the run goes (-j auto; see _window)
    pinned: bool  # --from-lock: objects land as named or fail (see _landing)
    retries: int
    verify: bool
    read_timeout: float
    connect_timeout: float
    trust: Trust  # whom TLS connections trust, as in the parent
    proxies: Proxies
    request_payer: str | None
    keep_temp: frozenset[str]  # temp files the manifest means to resume


# -- parent to worker ------------------------------------------------------------


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Task:
    """One object to fetch: the worker runs all of its byte ranges."""

    id: int
    obj: RemoteObject
    parts: tuple[str, ...]
    part_size: int
    resume: tuple[PartialRecord, ...] = ()  # candidates, best first
    sweep_again: bool = False  # a worker died writing here: sweep its leftovers
    # Offer the object's ranges back (Offer), for the parent to spread over
    # every worker: so one big object uses every process, not one.
    share: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Span:
    """Some other worker's object: fetch bytes [start, end) into its temp file.

    The owner created the temp file and holds it locked; this worker only
    writes the range there and answers :class:`SpanDone`. The owner still
    checks the whole object and lands it.
    """

    id: int
    task: int  # the owner's task
    obj: RemoteObject
    parts: tuple[str, ...]
    tmp_name: str  # in the folder of parts
    start: int
    end: int
    crc_algorithm: str
    expectation: Expectation
    hash_part: bool  # also digest the range as one part (MD5 or SHA parts)


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SpanResult:
    """To an owner: one of its offered ranges is on disk (*crc* set), or was
    not fetched (*crc* None: fetch it yourself)."""

    task: int
    start: int
    end: int
    crc: int | None
    part_hash: bytes | None = None


@dataclass(frozen=True, slots=True)
class NewCredentials:
    credentials: FrozenCredentials


@dataclass(frozen=True, slots=True)
class NoMoreTasks:
    """Finish what was sent, then say Bye."""


@dataclass(frozen=True, slots=True)
class Abort:
    """Stop now: keep resumable temp files, remove the rest."""


# -- worker to parent ------------------------------------------------------------


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Landed:
    id: int
    landing: Landing


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Failed:
    id: int
    reason: str
    needs_botocore: bool = False


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class Offer:
    """An owner's object is open (temp file made and locked, checks known):
    these of its ranges may go to any worker."""

    task: int
    tmp_name: str
    crc_algorithm: str
    expectation: Expectation
    hash_part: bool
    ranges: tuple[tuple[int, int], ...]


@pickled_by_fields
@dataclass(frozen=True, slots=True)
class SpanDone:
    id: int
    crc: int | None  # None: not fetched (any error: the owner tries it itself)
    part_hash: bytes | None = None


@dataclass(slots=True)
class Events:
    """What happened in one worker since its last batch."""

    progress: dict[int, int] = field(default_factory=dict)  # task id -> bytes (may be < 0)
    resumed: dict[int, int] = field(default_factory=dict)  # task id -> bytes adopted from disk
    results: list[Landed | Failed | SpanDone] = field(default_factory=list)
    offers: list[Offer] = field(default_factory=list)
    ranges: list[tuple[PartialRecord, int, int, int]] = field(default_factory=list)
    drops: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    level: int | None = None  # its requests in flight, if that changed

    def __bool__(self) -> bool:
        return bool(
            self.level is not None
            or self.progress
            or self.resumed
            or self.results
            or self.offers
            or self.ranges
            or self.drops
            or self.notes
        )


@dataclass(frozen=True, slots=True)
class Fatal:
    """A whole-run error in a worker: its class name and message."""

    kind: str
    message: str


@dataclass(frozen=True, slots=True)
class Bye:
    """Every task sent was answered; the worker exits."""


# -- on the wire -------------------------------------------------------------------------


def send_message(conn: Connection, message: Any) -> None:
    """Send *message* (a list of them, often) in :class:`Connection`'s framing.

    Pickled with plain ``pickle.dumps``: ``Connection.send`` builds a
    ``ForkingPickler``, which copies the copyreg table on every call."""
    conn.send_bytes(pickle.dumps(message, pickle.HIGHEST_PROTOCOL))


# Bytes read from a socket at a time (a batch of tasks or events is a few KiB).
READ_SIZE = 1 << 18


class Inbox:
    """What the other end of *conn* sends, read on the running event loop:
    a reader thread cost a GIL hand-over and a wake-up of the loop for every
    batch. *heard* gets each read's whole messages (maybe none), and None
    once the other end has closed or died."""

    def __init__(self, conn: Connection, heard: Callable[[list[Any] | None], None]) -> None:
        self._loop = asyncio.get_running_loop()
        self._socket: socket.socket | None = socket.socket(fileno=os.dup(conn.fileno()))
        self._buffer = bytearray()  # received, not yet a whole message
        self._heard = heard
        self._loop.add_reader(self._socket, self._readable)

    def _readable(self) -> None:
        assert self._socket is not None
        try:
            data = self._socket.recv(READ_SIZE, socket.MSG_DONTWAIT)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self.close()
            self._heard(None)
            return
        self._buffer += data
        self._heard(whole_messages(self._buffer))

    def close(self) -> None:
        """Read no more (idempotent)."""
        if self._socket is not None:
            self._loop.remove_reader(self._socket)
            self._socket.close()
            self._socket = None


def whole_messages(inbox: bytearray) -> list[Any]:
    """Take every whole message off the front of *inbox*, framed as
    :class:`multiprocessing.connection.Connection` sends them: a 4-byte
    big-endian length, or -1 and an 8-byte one."""
    messages = []
    at = 0
    with memoryview(inbox) as view:  # released before the inbox shrinks
        while len(view) - at >= 4:
            (size,) = struct.unpack_from("!i", view, at)
            start = at + 4
            if size == -1:
                if len(view) - at < 12:
                    break
                (size,) = struct.unpack_from("!Q", view, start)
                start += 8
            if len(view) - start < size:
                break
            messages.append(pickle.loads(view[start : start + size]))
            at = start + size
    del inbox[:at]
    return messages
