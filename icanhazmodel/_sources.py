"""Where a run's objects come from, as batches for the planner.

Four ways, one shape: the one object a key names exactly; the objects under
a prefix (ListObjectsV2, fanned out over sub-prefixes once the first page
shows the prefix is big); the objects a lock names (``--from-lock``); and
the objects under a key as they were at a time (``--at``). Each yields
:class:`Batch` es in key order, and the run plans them alike: filters,
shards, conflicts, what is on disk.
"""

from __future__ import annotations

import os
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass

import anyio

from ._contract import BrokenListing, KeyOrder
from ._errors import NothingToFetch, S3Error, most_telling
from ._keys import directory_prefix
from ._lock import Lock
from ._models import RemoteObject
from ._s3 import S3

# Objects from a lock planned at a time, as a listing page would bring them.
LOCK_PAGE = 1000
# Batches listed before the planner asks for them (a listing page each, at most).
READ_AHEAD = 2


@dataclass(frozen=True, slots=True)
class Batch:
    """Objects to plan, and what --include/--exclude are relative to."""

    objects: list[RemoteObject]
    prefix: str
    more: bool = False  # further batches are coming
    last: bool = False  # this one ends the whole listing


@asynccontextmanager
async def ahead(
    batches: AsyncGenerator[Batch, None], count: int = READ_AHEAD
) -> AsyncIterator[AsyncIterator[Batch]]:
    """*batches*, listed in a task of their own up to *count* batches ahead.

    The planner queues a page's objects for the workers, and that waits
    until slots free up: pulled by the planner, the next page was only asked
    for once the last one had nearly been fetched, and the workers then sat
    idle for a list request's round trip (and a fan-out's first ones). The
    generator is iterated and closed in that one task (the fan-out's task
    group must be left by the task that entered it).
    """
    send, receive = anyio.create_memory_object_stream[Batch](count)

    async def pump() -> None:
        async with send, aclosing(batches):
            async for batch in batches:
                try:
                    await send.send(batch)
                except anyio.BrokenResourceError:
                    # The reader left (the run stops, its end closed before
                    # this task is cancelled): that, not this, says why.
                    return

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(pump)
            async with receive:
                yield receive
            tg.cancel_scope.cancel()  # left early: list no more
    except BaseExceptionGroup as group:
        raise most_telling(group) from None


def fan_out() -> bool:
    """Whether big prefixes are listed in parallel (ICANHAZMODEL_LIST_FANOUT=0: one chain)."""
    return os.environ.get("ICANHAZMODEL_LIST_FANOUT", "1") != "0"


async def exactly(obj: RemoteObject) -> AsyncGenerator[Batch, None]:
    yield Batch([obj], "", last=True)


async def listed(s3: S3, key: str) -> AsyncGenerator[Batch, None]:
    """The objects under *key* as a folder, holding the store to the listing
    contract (see ``_contract``): one page, and if it holds more than that,
    the rest fanned out over its sub-prefixes (in the same key order)."""
    prefix = directory_prefix(key)
    order = KeyOrder()
    try:
        pages = s3.list_pages(prefix)
        first = await anext(pages)
        order.check(first.objects)
        yield Batch(first.objects, prefix, more=first.more, last=not first.more)
        if first.more and first.objects and fan_out():
            await pages.aclose()
            keys = [o.key for o in first.objects]
            async with s3.fanned_out(prefix, keys) as rest:
                async for page in rest:
                    order.check(page.objects)
                    yield Batch(page.objects, prefix, more=page.more)
            return
        async for page in pages:
            order.check(page.objects)
            yield Batch(page.objects, prefix, more=page.more, last=not page.more)
    except BrokenListing as exc:
        where = f"s3://{s3.bucket}/{prefix}"
        raise S3Error(f"the store broke the listing of {where}: it {exc}") from None


async def locked(lock: Lock) -> AsyncGenerator[Batch, None]:
    """The lock's files instead of a listing, each pinned to its version or
    ETag (see ``_lock``)."""
    files = lock.files
    if not files:
        raise NothingToFetch("the lock names no files")
    for start in range(0, len(files), LOCK_PAGE):
        last = start + LOCK_PAGE >= len(files)
        page = [entry.remote() for entry in files[start : start + LOCK_PAGE]]
        yield Batch(page, lock.prefix, more=not last, last=last)


async def as_of(s3: S3, key: str, at: float) -> AsyncGenerator[Batch, None]:
    """*key* as it was at *at*: the one object it named then, else the
    objects under it, each at its version of then (see ``_asof``)."""
    prefix = directory_prefix(key)
    exact: bool | None = None  # decided by the first object current then
    async for found in s3.versions_at(key, at):
        if exact is None and found:
            exact = bool(key) and found[0].key == key and not key.endswith("/")
        if exact:
            yield Batch(found[:1], "", last=True)
            return
        page = [obj for obj in found if obj.key.startswith(prefix)]
        if page:
            yield Batch(page, prefix, more=True)
