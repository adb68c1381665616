"""The store on the direct path: every request a run makes, without botocore.

:class:`DirectStore` answers what :class:`~._botostore.BotocoreStore`
answers, through :class:`~._direct.DirectGets` (aiohttp and our SigV4). An
answer this path cannot read (a redirect, an authorization scheme it does
not speak) raises :class:`~._objects.FallBack`, for the run's router
(``_s3``) to ask botocore instead. A worker process has no botocore: its
store is *alone*, and raises :class:`~._objects.NeedsBotocore` there, an
object error that sends the object back to the parent.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from ._direct import DirectGets
from ._listxml import ListPage
from ._models import ObjectHeaders, RemoteObject
from ._objects import (
    Body,
    FallBack,
    HeadResult,
    NeedsBotocore,
    ObjectError,
    PartHead,
    TransientObjectError,
    byte_range,
    checked,
    direct_errors,
    not_s3,
    posix_time,
)


class DirectStore:
    """One bucket on the direct path."""

    def __init__(self, gets: DirectGets, bucket: str, *, alone: bool = False) -> None:
        self.gets = gets
        self.bucket = bucket
        self._alone = alone

    @contextlib.contextmanager
    def _object_errors(self, key: str) -> Iterator[None]:
        try:
            with direct_errors(key):
                yield
        except FallBack as exc:
            if not self._alone:
                raise
            raise NeedsBotocore(f"the direct path cannot serve it ({exc})") from exc

    # -- run-level requests: raw answers, translated by the router -----------------

    async def lookup(self, key: str, version_id: str | None) -> HeadResult:
        size, headers, modified = await self.gets.head(key, version_id)
        return head_result(key, version_id, size, headers, modified)

    async def list_page(
        self,
        prefix: str,
        token: str | None,
        delimiter: str | None = None,
        start_after: str | None = None,
        below: str | None = None,
    ) -> ListPage:
        return await self.gets.list_page(prefix, token, delimiter, start_after, below)

    # -- one object's requests (ObjectSource) ----------------------------------------

    async def open_body(
        self,
        obj: RemoteObject,
        *,
        start: int = 0,
        end: int | None = None,
        if_match: bool = True,
        want_checksum: bool = False,
    ) -> Body:
        end = obj.size if end is None else end
        ranged = byte_range(obj, start, end)
        etag = f'"{obj.etag}"' if if_match and obj.etag else None
        with self._object_errors(obj.key):
            raw = await self.gets.open(
                obj.key,
                byte_range=ranged,
                if_match=etag,
                version_id=obj.version_id,
                want_checksum=want_checksum,
            )
        return checked(Body(raw, obj.key, raw.headers), obj, start, end, ranged)

    async def stat(self, obj: RemoteObject) -> HeadResult:
        with self._object_errors(obj.key):
            size, headers, modified = await self.gets.head(obj.key, obj.version_id)
        if not headers.etag:
            raise not_s3(f"HEAD s3://{self.bucket}/{obj.key}")
        return head_result(obj.key, obj.version_id, size, headers, modified)

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        try:
            with self._object_errors(obj.key):
                _, headers, _ = await self.gets.head(obj.key, obj.version_id, number)
        except TransientObjectError:
            raise
        except ObjectError:
            return None
        return PartHead.of(headers)

    async def aclose(self) -> None:
        await self.gets.aclose()


def head_result(
    key: str, version_id: str | None, size: int, headers: ObjectHeaders, modified: str
) -> HeadResult:
    """A direct HEAD's answer as the pipeline takes it."""
    fresh = RemoteObject(
        key=key,
        size=size,
        etag=headers.etag,
        last_modified=posix_time(modified),
        checksum_algorithms=tuple(headers.checksums),
        version_id=version_id,
    )
    return HeadResult(fresh, headers)
