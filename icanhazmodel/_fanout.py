"""Listing a big prefix in parallel, in the order one listing would give.

ListObjectsV2 is one chain of pages per prefix: 1,000,000 keys are 1,000
round trips in a row. Once the first page shows a prefix is big, the rest is
fanned out. A delimiter listing (starting after the first page's last key)
names the sub-prefixes; every few of them become a boundary, and the key
range between two boundaries is listed as a chain of its own (a plain
listing of the prefix from just before its first boundary, stopped at the
next), up to LOOKAHEAD chains at once, each into a small buffer of pages.

Ranges, not one request per sub-prefix: a tree of 1,000 folders of 200 keys
would otherwise cost 1,000 requests where one chain costs 200 pages; with
about CHAINS_PER_PAGE chains per delimiter page, the requests stay about
the pages plus one per chain.

The pages are handed on in key order, exactly the keys the sequential
listing would have sent in the same order (only page boundaries differ), so
everything that relies on that order downstream (the a-vs-a/b conflict
check, skip decisions, --shard) is unchanged. Memory stays bounded: at most
LOOKAHEAD chains with PAGES_AHEAD pages each wait, whatever the prefix
holds. A flat prefix (no sub-prefixes) stays one chain.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._errors import S3Error
from ._listxml import ListPage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectSendStream

LOOKAHEAD = 16  # chains listed at once, ahead of the one being read
PAGES_AHEAD = 2  # pages each of them may hold before it waits
CHAINS_PER_PAGE = 32  # chains cut from one delimiter page's sub-prefixes

# (prefix, continuation token, delimiter, start after) -> one page
ListPageFn = Callable[[str, str | None, str | None, str | None], Awaitable[ListPage]]


@dataclass(frozen=True, slots=True)
class _Range:
    """Keys under the prefix in [low, high) (low None: after start_after; high
    None: to the end), listed from *start* (exclusive)."""

    start: str
    low: str | None
    high: str | None


@asynccontextmanager
async def fanned_out(
    list_page: ListPageFn, prefix: str, start_after: str, delimiter: str = "/"
) -> AsyncIterator[AsyncIterator[ListPage]]:
    """The objects under *prefix* after the key *start_after*, as pages in key order.

    Use as ``async with fanned_out(...) as pages: async for page in pages``:
    the listing tasks live in the ``async with``, so leaving it (or an error
    in any of them) stops them all.
    """
    import anyio
    from anyio.streams.memory import MemoryObjectReceiveStream

    chains_in, chains_out = anyio.create_memory_object_stream[MemoryObjectReceiveStream[ListPage]](
        LOOKAHEAD
    )
    # Every stream made, closed at the end even where a task was cancelled
    # before it could close its own.
    streams: list[MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any]] = [
        chains_in,
        chains_out,
    ]

    async def list_range(where: _Range, send: MemoryObjectSendStream[ListPage]) -> None:
        token: str | None = None
        async with send:
            while True:
                page = await list_page(prefix, token, None, None if token else where.start)
                keys = [obj.key for obj in page.objects]
                first = bisect.bisect_left(keys, where.low) if where.low is not None else 0
                end = bisect.bisect_left(keys, where.high) if where.high is not None else len(keys)
                if first < end:
                    await send.send(ListPage(page.objects[first:end], None, more_to_come=True))
                if end < len(keys) or page.next_token is None:
                    return  # past the range's end, or the prefix's
                if page.next_token == token:  # a store that would loop forever
                    raise S3Error(f"S3 sent the same continuation token twice listing {prefix}")
                token = page.next_token

    async def start(tg: TaskGroup, where: _Range) -> None:
        send, receive = anyio.create_memory_object_stream[ListPage](PAGES_AHEAD)
        streams.extend((send, receive))
        tg.start_soon(list_range, where, send)
        await chains_in.send(receive)

    async def walk(tg: TaskGroup) -> None:
        """Cut the key range after start_after at every few sub-prefixes."""
        token: str | None = None
        begin, low = start_after, None
        async with chains_in:
            while True:
                page = await list_page(prefix, token, delimiter, start_after)
                # The sub-prefix holding start_after is not a boundary: the
                # chain before covers the rest of it.
                subs = [sub for sub in page.prefixes if sub > start_after]
                step = max(1, -(-len(subs) // CHAINS_PER_PAGE))
                for boundary in subs[step::step] if low is None else subs[::step]:
                    await start(tg, _Range(begin, low, boundary))
                    # Listed from just before the boundary; what sorts between
                    # that and the boundary is the previous chain's, and dropped.
                    begin, low = boundary[: -len(delimiter)], boundary
                if page.next_token is None:
                    await start(tg, _Range(begin, low, None))
                    return
                if page.next_token == token:
                    raise S3Error(f"S3 sent the same continuation token twice listing {prefix}")
                token = page.next_token

    async def in_order() -> AsyncIterator[ListPage]:
        async with chains_out:
            async for chain in chains_out:
                async with chain:
                    async for page in chain:
                        yield page

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(walk, tg)
            yield in_order()
            tg.cancel_scope.cancel()  # left early: stop listing
    except BaseExceptionGroup as group:
        raise _most_telling(group) from None
    finally:
        for stream in streams:
            stream.close()


def _most_telling(group: BaseExceptionGroup) -> BaseException:
    """The error that ended the listing, out of the task group's: not the
    cancellations it caused in the other listings."""
    import anyio

    cancelled = anyio.get_cancelled_exc_class()
    flat = list(_leaves(group))
    for exc in flat:
        if not isinstance(exc, cancelled):
            return exc
    return flat[0]


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from _leaves(inner)
    else:
        yield exc
