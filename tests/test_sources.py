"""The listing runs ahead of the planner, in a task of its own (``_sources.ahead``)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator

import anyio
import pytest

import icanhazmodel
from icanhazmodel._errors import most_telling
from icanhazmodel._models import RemoteObject
from icanhazmodel._sources import READ_AHEAD, Batch, ahead


def _batch(n: int) -> Batch:
    obj = RemoteObject(key=f"p/{n:04d}", size=1, etag="e", last_modified=0.0)
    return Batch([obj], "p/", more=True)


class Listing:
    """A listing of *pages* batches that records how far it got and whether it was closed."""

    def __init__(self, pages: int, fail_after: int | None = None) -> None:
        self.pages = pages
        self.fail_after = fail_after
        self.produced = 0
        self.closed = False
        self.task: asyncio.Task[object] | None = None

    async def batches(self) -> AsyncGenerator[Batch, None]:
        self.task = asyncio.current_task()
        try:
            for n in range(self.pages):
                if self.fail_after is not None and n == self.fail_after:
                    raise icanhazmodel.S3Error(f"listing broke after page {n}")
                self.produced += 1
                yield _batch(n)
        finally:
            self.closed = True


def test_the_next_pages_are_listed_while_the_planner_is_busy_and_no_further() -> None:
    listing = Listing(pages=10)
    seen: list[int] = []

    async def plan() -> None:
        async with ahead(listing.batches()) as batches:
            async for _ in batches:
                await anyio.sleep(0.05)  # queueing this page's objects for the workers
                seen.append(listing.produced)

    asyncio.run(plan())
    # While the first page was planned, the listing went on: the next page
    # was already in hand, up to READ_AHEAD waiting plus one being handed on.
    assert seen[0] > 1
    assert max(got - i for i, got in enumerate(seen, start=1)) == READ_AHEAD + 1
    assert listing.closed


def test_the_listing_is_iterated_and_closed_in_one_task_not_the_planners() -> None:
    listing = Listing(pages=3)

    async def plan() -> asyncio.Task[object] | None:
        async with ahead(listing.batches()) as batches:
            async for _ in batches:
                pass
        return asyncio.current_task()

    planner = asyncio.run(plan())
    assert listing.task is not None
    assert listing.task is not planner
    assert listing.closed


def test_a_listing_error_reaches_the_planner_as_itself() -> None:
    listing = Listing(pages=5, fail_after=2)
    planned = 0

    async def plan() -> None:
        nonlocal planned
        async with ahead(listing.batches()) as batches:
            async for _ in batches:
                planned += 1

    with pytest.raises(icanhazmodel.S3Error, match="after page 2"):
        asyncio.run(plan())
    assert planned <= 2
    assert listing.closed


def test_a_planner_that_fails_stops_the_listing_with_its_own_error() -> None:
    listing = Listing(pages=1000)

    async def plan() -> None:
        async with ahead(listing.batches()) as batches:
            async for _ in batches:
                raise icanhazmodel.NotEnoughSpace("the listed objects do not fit")

    with pytest.raises(icanhazmodel.NotEnoughSpace):
        asyncio.run(plan())
    assert listing.closed
    assert listing.produced <= READ_AHEAD + 2


def test_a_cancelled_planner_ends_with_its_cancellation() -> None:
    """SIGTERM cancels the run's task while the listing waits for room: the
    cancellation, not the listing's closed stream, says why the run ended."""
    listing = Listing(pages=1000)

    async def plan() -> None:
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().call_later(0.1, task.cancel)
        async with ahead(listing.batches()) as batches:
            async for _ in batches:
                await asyncio.Event().wait()

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(plan())
    assert listing.closed


def test_the_most_telling_failure_of_a_task_group() -> None:
    cancelled = asyncio.CancelledError()
    ours = icanhazmodel.S3Error("the store broke")
    theirs = ValueError("something else")
    assert most_telling(BaseExceptionGroup("", [cancelled, theirs])) is theirs
    assert most_telling(BaseExceptionGroup("", [theirs, ExceptionGroup("", [ours])])) is ours
    interrupt = KeyboardInterrupt()
    assert most_telling(BaseExceptionGroup("", [ours, interrupt])) is interrupt
    assert most_telling(BaseExceptionGroup("", [cancelled])) is cancelled
    assert most_telling(theirs) is theirs
