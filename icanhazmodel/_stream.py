"""Files as they land: the records a run hands to :func:`icanhazmodel.stream`.

The run calls :meth:`FileStream.put` from its event loop as each object's
outcome is known and awaits :meth:`FileStream.room` before it lists or queues
more work. So a slow consumer never holds up a socket: downloads already
under way finish and their records wait in memory, while the listing pauses
once *buffer* records are unread. Records in memory are at most *buffer*,
plus a listing page's worth, plus the downloads in flight.
"""

from __future__ import annotations

from collections import deque

from ._models import FetchResult, LandedFile, Status


class FileStream:
    """An async iterator of :class:`LandedFile`, in the order they landed."""

    def __init__(self, buffer: int, *, folders: bool = False) -> None:
        # Imported here: `import icanhazmodel` (and so --help) stays light.
        from anyio import Event

        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self._event = Event
        self._buffer = buffer
        self._folders = folders  # yield folder markers too
        self._records: deque[LandedFile] = deque()
        self._arrived = Event()
        self._taken = Event()
        self._done = False
        self._error: BaseException | None = None
        self._result: FetchResult | None = None

    # -- the run's side ----------------------------------------------------------------

    def put(self, record: LandedFile) -> None:
        if record.status is Status.FOLDER and not self._folders:
            return
        self._records.append(record)
        self._arrived.set()

    async def room(self) -> None:
        """Wait while *buffer* records are unread."""
        while len(self._records) >= self._buffer:
            self._taken = self._event()
            await self._taken.wait()

    def finish(self, result: FetchResult | None = None, error: BaseException | None = None) -> None:
        self._result, self._error, self._done = result, error, True
        self._arrived.set()

    # -- the consumer's side -----------------------------------------------------------

    def __aiter__(self) -> FileStream:
        return self

    async def __anext__(self) -> LandedFile:
        while not self._records:
            if self._done:
                if self._error is not None:
                    error, self._error = self._error, None
                    raise error
                raise StopAsyncIteration
            self._arrived = self._event()
            await self._arrived.wait()
        record = self._records.popleft()
        self._taken.set()
        return record

    @property
    def result(self) -> FetchResult:
        """The whole run's result, once every record has been read."""
        if self._result is None or self._records:
            raise RuntimeError("the run has not finished: read every file first")
        return self._result
