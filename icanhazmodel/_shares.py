"""Objects shared between worker processes, as the parent keeps them.

An object of several byte ranges is opened once by the worker it was sent
to (its owner): the owner makes and locks the temp file and learns the
object's layout and what it will be checked against, then offers all its
ranges but the first (:class:`~._messages.Offer`). That is the plan, made
once, before any range is handed out. From then on a range is one task out
(:class:`~._messages.Span`, to whichever worker has the fewest bytes to
fetch) and one result back (:class:`~._messages.SpanDone`), which the parent
hands to the owner as it arrives (:class:`~._messages.SpanResult`): workers
speak only to the parent, and an owner hashing MD5 or SHA parts in offset
order starts on a range as soon as it is in, not when the last one is.

This class holds the ranges offered and not yet answered, and the bytes
each has reported (taken back if it fails, since the owner then fetches it
again and reports those bytes itself).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ._jobs import FileJob
from ._messages import Offer, Span


class Shares:
    """The parent's record of shared ranges: queued, in flight, answered."""

    def __init__(self, new_id: Callable[[], int]) -> None:
        self._new_id = new_id
        self._queued: deque[Span] = deque()  # offered, not yet sent
        self._in_flight: dict[int, Span] = {}  # span id -> span, until its owner hears
        self._advanced: dict[int, int] = {}  # span id -> bytes it reported

    def __bool__(self) -> bool:
        """Whether any range waits to be sent."""
        return bool(self._queued)

    def offer(self, job: FileJob, offer: Offer) -> int:
        """Queue *offer*'s ranges of *job*; the bytes handed out."""
        for start, end in offer.ranges:
            span = Span(
                self._new_id(),
                offer.task,
                job.obj,
                job.parts,
                offer.tmp_name,
                start,
                end,
                offer.crc_algorithm,
                offer.expectation,
                offer.hash_part,
            )
            self._in_flight[span.id] = span
            self._queued.append(span)
        return sum(end - start for start, end in offer.ranges)

    def next(self) -> Span:
        return self._queued.popleft()

    def progress(self, span_id: int, nbytes: int) -> int | None:
        """Count *nbytes* for a span; the task it belongs to (None: not a
        span, or one whose owner died)."""
        span = self._in_flight.get(span_id)
        if span is None:
            return None
        self._advanced[span_id] = self._advanced.get(span_id, 0) + nbytes
        return span.task

    def answered(self, span_id: int) -> tuple[Span, int] | None:
        """The span now answered, and the bytes it reported; None if its
        owner died since (the object starts over elsewhere)."""
        span = self._in_flight.pop(span_id, None)
        advanced = self._advanced.pop(span_id, 0)
        return None if span is None else (span, advanced)

    def forget(self, task_id: int) -> None:
        """Forget every range of *task_id*: its owner died, and whoever takes
        the object over starts it again (a late SpanDone is then ignored)."""
        self._queued = deque(span for span in self._queued if span.task != task_id)
        for span_id in [i for i, span in self._in_flight.items() if span.task == task_id]:
            del self._in_flight[span_id]
            self._advanced.pop(span_id, None)

    def clear(self) -> None:
        self._queued.clear()
