"""Listing a big prefix in parallel, in the order one listing would give.

ListObjectsV2 is one chain of pages per prefix: 1,000,000 keys are 1,000
round trips in a row. Once the first page shows a prefix is big, the rest is
fanned out. A delimiter listing (starting after the first page's last key)
names the sub-prefixes; every few of them become a boundary, and the key
range between two boundaries is listed as a chain of its own (a plain
listing of the prefix from just before its first boundary, stopped at the
next), up to LOOKAHEAD chains at once, each into a small buffer of pages.

Where a level is narrow (a dataset's train/ and val/), its sub-prefixes are
listed by delimiter too, and so on down, so that a prefix whose keys sit
under one or two folders is cut at the folders inside them: boundaries are
any sorted strings, at whatever depth.

Ranges, not one request per sub-prefix: a tree of 1,000 folders of 200 keys
would otherwise cost 1,000 requests where one chain costs 200 pages. Each
range is cut to hold about CHAIN_PAGES pages of keys (judged from how many
keys a sub-prefix held so far), so the requests stay about the pages plus
one per chain, and a chain is listed ahead as a whole.

The pages are handed on in key order, exactly the keys the sequential
listing would have sent in the same order (only page boundaries differ), so
everything that relies on that order downstream (the a-vs-a/b conflict
check, skip decisions, --shard) is unchanged. Memory stays bounded: at most
LOOKAHEAD chains with PAGES_AHEAD pages each wait, whatever the prefix
holds. A flat stretch (a delimiter page with no folder, more to come) is
cut at boundaries guessed from that page's keys (see _flat), as long as no
chain has reached the prefix's end; then one chain takes the rest.
"""

from __future__ import annotations

import bisect
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ._contract import TokenChain
from ._errors import most_telling
from ._flat import FlatGuess, just_before
from ._listxml import ListPage

if TYPE_CHECKING:
    from anyio.abc import TaskGroup
    from anyio.streams.memory import MemoryObjectSendStream

LOOKAHEAD = 16  # chains listed at once, ahead of the one being read
PAGES_AHEAD = 3  # pages each of them may hold before it waits
CHAIN_PAGES = 2  # pages of keys a chain is cut to hold, once the tree's density is known
FALLBACK_STEP = 8  # sub-prefixes to a chain until then
NARROW = 8  # a level of at most this many (big) sub-prefixes is cut at theirs too,
MAX_DEPTH = 4  # this many levels down at most,
DESCENTS = 16  # and at most this many of them followed (each is a request, in turn)

# (prefix, continuation token, delimiter, start after, below) -> one page,
# without the objects from the key *below* on (ListPage.cut says some were)
ListPageFn = Callable[[str, str | None, str | None, str | None, str | None], Awaitable[ListPage]]


@dataclass(frozen=True, slots=True)
class _Range:
    """Keys under the prefix in [low, high) (low None: after start_after; high
    None: to the end), listed from *start* (exclusive)."""

    start: str
    low: str | None
    high: str | None
    subs: int  # sub-prefixes it spans
    flat: bool = False  # cut where no folder is (see _flat)


class _Density:
    """Keys per sub-prefix, as seen so far: from the first page, then from
    every chain listed to its end.

    A chain is listed one page after another, so the reader waits on one
    that holds more than the pages it could list ahead; one that holds many
    fewer costs requests for nothing. Cutting chains to about CHAIN_PAGES
    pages of keys needs to know how many keys a sub-prefix holds.
    """

    def __init__(self, page_size: int) -> None:
        self.page_size = max(1, page_size)
        self.keys = 0
        self.subs = 0

    def seen(self, keys: int, subs: int) -> None:
        self.keys += keys
        self.subs += subs

    def holds_pages(self) -> bool:
        """Whether a sub-prefix holds a page of keys or more, as far as seen
        (yes until anything is): only then is one worth cutting inside."""
        return self.subs == 0 or self.keys >= self.subs * self.page_size

    def step(self, fallback: int) -> int:
        """Sub-prefixes to a chain (*fallback* until a chain or the first page told)."""
        if self.subs == 0:
            return fallback
        return max(1, round(CHAIN_PAGES * self.page_size * self.subs / max(1, self.keys)))


def first_page_density(keys: Sequence[str], prefix: str, delimiter: str) -> _Density:
    """What the first page (the keys up to start_after) says of the tree."""
    density = _Density(len(keys))
    subs = {
        key[len(prefix) :].split(delimiter, 1)[0] for key in keys if delimiter in key[len(prefix) :]
    }
    density.seen(sum(delimiter in key[len(prefix) :] for key in keys), len(subs))
    return density


class _FanOut:
    """The state of one fanned-out listing: the chains being listed, what
    the tree looked like so far, and where the cutting stands."""

    def __init__(
        self, list_page: ListPageFn, prefix: str, first_page: Sequence[str], delimiter: str
    ) -> None:
        import anyio
        from anyio.streams.memory import MemoryObjectReceiveStream

        self.list_page = list_page
        self.prefix = prefix
        self.delimiter = delimiter
        self.start_after = first_page[-1]
        self.density = first_page_density(first_page, prefix, delimiter)
        self.descents = 0
        self.flat_sample: list[str] = []  # the keys of the page that showed no folder
        self.guess: FlatGuess | None = None
        self.ended = False  # a chain listed to the prefix's last key
        self.chains_in, self.chains_out = anyio.create_memory_object_stream[
            MemoryObjectReceiveStream[ListPage]
        ](LOOKAHEAD)
        # Every stream made, closed at the end even where a task was cancelled
        # before it could close its own.
        self.streams: list[MemoryObjectSendStream[Any] | MemoryObjectReceiveStream[Any]] = [
            self.chains_in,
            self.chains_out,
        ]

    def close(self) -> None:
        for stream in self.streams:
            stream.close()

    async def list_range(self, where: _Range, send: MemoryObjectSendStream[ListPage]) -> None:
        import anyio

        chain = TokenChain()
        token: str | None = None
        listed = 0
        async with send:
            while True:
                page = await self.list_page(
                    self.prefix, token, None, None if token else where.start, where.high
                )
                objects = page.objects
                if where.low is not None and objects and objects[0].key < where.low:
                    objects = objects[bisect.bisect_left([o.key for o in objects], where.low) :]
                if objects:
                    listed += len(objects)
                    try:
                        await send.send(ListPage(objects, None, more_to_come=True))
                    except anyio.BrokenResourceError:
                        return  # the reader left (the run stops): list no more
                if page.cut or page.next_token is None:
                    self.ended = self.ended or page.next_token is None
                    if where.flat and self.guess is not None and where.low and where.high:
                        self.guess.learned(listed, where.low, where.high)
                    elif where.subs:
                        self.density.seen(listed, where.subs)
                    return  # past the range's end, or the prefix's
                token = chain.follow(page.next_token)

    async def start(self, tg: TaskGroup, where: _Range) -> None:
        import anyio

        send, receive = anyio.create_memory_object_stream[ListPage](PAGES_AHEAD)
        self.streams.extend((send, receive))
        tg.start_soon(self.list_range, where, send)
        await self.chains_in.send(receive)

    async def sub_prefixes(self, sub: str, after: str | None, depth: int) -> AsyncIterator[str]:
        """The sub-prefixes of *sub* after the key *after*, in key order; those
        of a narrow level (a page of at most NARROW) are followed by their own,
        up to DESCENTS in all. A page with no sub-prefix and more to come ends
        the level (what follows is flat: a chain lists it)."""
        chain = TokenChain()
        token: str | None = None
        while True:
            page = await self.list_page(sub, token, self.delimiter, after, None)
            narrow = (
                token is None
                and page.next_token is None
                and len(page.prefixes) <= NARROW
                and self.density.holds_pages()
            )
            for found in page.prefixes:
                if after is None or found > after:
                    yield found
                # One holding *after* sorts before it: not a boundary, but
                # what it holds after *after* may be cut further.
                if narrow and depth < MAX_DEPTH and self.descents < DESCENTS:
                    self.descents += 1
                    inner = after if after is not None and after > found else None
                    async for deeper in self.sub_prefixes(found, inner, depth + 1):
                        yield deeper
            if page.next_token is None or not page.prefixes:
                if page.next_token is not None and depth == 0:
                    self.flat_sample.extend(obj.key for obj in page.objects)
                return
            token = chain.follow(page.next_token)

    async def walk(self, tg: TaskGroup) -> None:
        import anyio

        try:
            await self.cut_ranges(tg)
        except anyio.BrokenResourceError:
            # The reader left (a SIGTERM cancels the run's task, whose reader
            # closes its end before this task is cancelled): list no more, and
            # let the cancellation, not this, say why the run ended.
            return

    async def cut_ranges(self, tg: TaskGroup) -> None:
        """Cut the key range after start_after at every few sub-prefixes."""
        begin, low = self.start_after, None
        taken = 0  # sub-prefixes in the chain being cut
        async with self.chains_in:
            async for sub in self.sub_prefixes(self.prefix, self.start_after, 0):
                if taken and taken >= self.density.step(FALLBACK_STEP):
                    await self.start(tg, _Range(begin, low, sub, taken))
                    # Listed from just before the boundary; what sorts between
                    # that and the boundary is the previous chain's, and dropped.
                    begin, low, taken = sub[: -len(self.delimiter)], sub, 0
                taken += 1
            # The end; or a page of files and no folder: what follows is flat,
            # and walking it by delimiter pages would be as slow as one chain
            # that lists it. Cut it where the sample says (as long as no
            # chain has seen the prefix's end), then one chain for the rest.
            self.guess = FlatGuess.from_sample(
                self.flat_sample, CHAIN_PAGES * self.density.page_size, self.prefix
            )
            after = self.flat_sample[-1] if self.flat_sample else ""
            flat = False  # the range being cut starts at a guessed boundary
            while self.guess is not None and not self.ended:
                boundary = self.guess.next_boundary(after)
                if boundary is None:
                    break
                await self.start(tg, _Range(begin, low, boundary, taken, flat=flat))
                begin, low, taken, after = just_before(boundary), boundary, 0, boundary
                flat = True
            await self.start(tg, _Range(begin, low, None, taken))

    async def in_order(self) -> AsyncIterator[ListPage]:
        async with self.chains_out:
            async for chain in self.chains_out:
                async with chain:
                    async for page in chain:
                        yield page


@asynccontextmanager
async def fanned_out(
    list_page: ListPageFn, prefix: str, first_page: Sequence[str], delimiter: str = "/"
) -> AsyncIterator[AsyncIterator[ListPage]]:
    """The objects under *prefix* after the keys of its *first_page*, as pages in key order.

    Use as ``async with fanned_out(...) as pages: async for page in pages``:
    the listing tasks live in the ``async with``, so leaving it (or an error
    in any of them) stops them all.
    """
    import anyio

    fan = _FanOut(list_page, prefix, first_page, delimiter)
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(fan.walk, tg)
            yield fan.in_order()
            tg.cancel_scope.cancel()  # left early: stop listing
    except BaseExceptionGroup as group:
        raise most_telling(group) from None
    finally:
        fan.close()
