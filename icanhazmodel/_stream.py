"""Records as a run makes them: files as they land (:func:`icanhazmodel.stream`)
and a dry run's plan (:func:`icanhazmodel.plan_stream`).

The run calls :meth:`RecordStream.put` from its event loop as each record is
known and awaits :meth:`RecordStream.room` before it lists or queues more
work. So a slow consumer never holds up a socket: downloads already
under way finish and their records wait in memory, while the listing pauses
once *buffer* records are unread. Records in memory are at most *buffer*,
plus a listing page's worth, plus the downloads in flight.
"""

from __future__ import annotations

from collections import deque
from typing import Generic, TypeVar

from ._models import FetchResult, LandedFile, Plan, PlannedObject, Status

T = TypeVar("T")


class RecordStream(Generic[T]):
    """An async iterator of a run's records, in the order the run made them."""

    def __init__(self, buffer: int) -> None:
        # Imported here: `import icanhazmodel` (and so --help) stays light.
        from anyio import Event

        if buffer < 1:
            raise ValueError("buffer must be at least 1")
        self._event = Event
        self._buffer = buffer
        self._records: deque[T] = deque()
        self._arrived = Event()
        self._taken = Event()
        self._done = False
        self._error: BaseException | None = None
        self._result: FetchResult | None = None

    # -- the run's side ----------------------------------------------------------------

    def put(self, record: T) -> None:
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

    def __aiter__(self) -> RecordStream[T]:
        return self

    async def __anext__(self) -> T:
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
            raise RuntimeError(UNFINISHED)
        return self._result


# A run left early (a break, an exception) is stopped, as a generator closed
# early is: it has no result, as such a generator has no return value.
UNFINISHED = (
    "no result yet: read every record first (a run whose loop left early, by a break "
    "or an exception, was stopped then, and has none)"
)


class FileStream(RecordStream[LandedFile]):
    """Each object's :class:`LandedFile`, in the order they landed."""

    def __init__(self, buffer: int, *, folders: bool = False) -> None:
        super().__init__(buffer)
        self._folders = folders  # yield folder markers too

    def put(self, record: LandedFile) -> None:
        if record.status is Status.FOLDER and not self._folders:
            return
        super().put(record)


class PlanStream(RecordStream[PlannedObject]):
    """A dry run's :class:`PlannedObject` records, as they are decided."""

    @property
    def plan(self) -> Plan:
        """The plan's totals (its objects were streamed), once every record is read."""
        plan = self.result.plan
        assert plan is not None  # a dry run always has one
        return plan

    def pacer(self) -> _Pacer:
        """The run's watcher: it hears of no file, and pauses the listing while
        *buffer* planned objects are unread."""
        return _Pacer(self)


class _Pacer:
    def __init__(self, plans: PlanStream) -> None:
        self._plans = plans

    def put(self, record: LandedFile) -> None:
        """A dry run's files (refused, say) are in its plan already."""

    async def room(self) -> None:
        await self._plans.room()
