"""The parts of a multipart upload: where they end, and which arrived damaged.

A multipart ETag and a COMPOSITE checksum are digests of the parts' digests,
so checking one needs the part layout, which S3 tells one part HEAD at a
time (``partNumber=k``): AWS, MinIO and SeaweedFS answer 206 with the part's
Content-Range, moto 200 with its length. Uploaders make every part but the
last one size, so part 1's HEAD is usually enough; where part 1's size does
not add up (unequal parts), every part is asked. A store that ignores
``partNumber`` (Ceph RGW answers the whole object) tells nothing; the layout
is then inferred where (size, part count) admits one usual part size (a
whole number of MiB or MB, as SDKs cut them). Every part is also asked after
a check failed, before anything is called corrupt; in checksum mode those
HEADs carry each part's own checksum, which names the parts to fetch again.
"""

from __future__ import annotations

import base64
import contextlib
import re
from dataclasses import dataclass

import anyio

from ._checksums import ChecksumMismatch, Expectation, equal_parts, part_spans, settle
from ._models import RemoteObject
from ._objects import ObjectChanged, ObjectError, ObjectSource, PartHead

PART_HEADS_IN_FLIGHT = 16
MiB = 1 << 20
MB = 1_000_000
_CONTENT_RANGE = re.compile(r"^bytes (\d+)-(\d+)/(\d+)$")


@dataclass(frozen=True, slots=True)
class Layout:
    """Where a multipart upload's parts end, and how that is known."""

    sizes: tuple[int, ...] | None  # None: unknown (checked by size only, for *why*)
    inferred: bool = False  # from a usual part size, not from the store
    why: str = ""


async def learn_layout(s3: ObjectSource, obj: RemoteObject, parts: int) -> Layout:
    """The layout of *obj*, uploaded in *parts* parts (see the module's docstring)."""
    try:
        first = await s3.part_head(obj, 1)
    except ObjectChanged:
        raise
    except ObjectError:
        first = None
    told = told_size(first, obj, parts, 0) if first is not None else None
    if told is not None:
        if (equal := equal_parts(obj.size, told, parts)) is not None:
            return Layout(equal)
        heads = await ask_every_part(s3, obj, parts)
        if heads is not None:
            return Layout(tuple(head.size for head in heads))
        return Layout(
            None,
            why=f"uploaded in {parts} parts, and the sizes S3 gave them (HEAD with "
            "partNumber) do not add up to the object's",
        )
    answer = (
        "answers HEAD with partNumber with the whole object"
        if first is not None and first.size == obj.size
        else "did not tell the parts' sizes (HEAD with partNumber)"
    )
    size = usual_part_size(obj.size, parts)
    if size is not None:
        return Layout(equal_parts(obj.size, size, parts), inferred=True)
    return Layout(
        None,
        why=f"uploaded in {parts} parts; the store {answer}, and not exactly one usual "
        f"part size (whole MiB or MB) fits {obj.size:,} bytes in {parts} parts",
    )


def told_size(head: PartHead, obj: RemoteObject, parts: int, start: int | None) -> int | None:
    """The part's size, if *head* is an answer about that part: its
    Content-Range (where sent) says it starts at *start* (None: anywhere) in
    an object of obj.size, its parts count (where sent) is *parts*, and it is
    not the whole object (a store that ignored partNumber)."""
    if head.parts_count is not None and head.parts_count != parts:
        return None
    if head.content_range is not None:
        match = _CONTENT_RANGE.match(head.content_range.strip())
        if match is None:
            return None
        first, last, total = (int(g) for g in match.groups())
        if total != obj.size or last - first + 1 != head.size:
            return None
        if start is not None and first != start:
            return None
        return head.size
    if head.size <= 0 or (head.size >= obj.size and parts > 1):
        return None  # the whole object: the store ignored partNumber
    return head.size


def usual_part_size(size: int, parts: int) -> int | None:
    """The usual part size (a whole number of MiB or of MB) that cuts *size*
    bytes into *parts* parts, all but the last that size, if exactly one does.

    Where several fit, none is chosen: a wrong guess would fail a good file
    (its check by parts cannot pass), where size only is honest about it.
    """
    if parts < 2:
        return None
    low = -(-size // parts)  # (parts - 1) * p < size <= parts * p
    high = (size - 1) // (parts - 1)
    fits = [range(-(-low // unit) * unit, high + 1, unit) for unit in (MiB, MB)]
    if sum(map(len, fits)) > 2:
        return None
    found = {p for candidates in fits for p in candidates}
    return found.pop() if len(found) == 1 else None


async def ask_every_part(s3: ObjectSource, obj: RemoteObject, parts: int) -> list[PartHead] | None:
    """HEAD every part; None if S3 will not tell of one, or the sizes do not add up."""
    heads: list[PartHead | None] = [None] * parts
    in_flight = anyio.Semaphore(PART_HEADS_IN_FLIGHT)

    async def ask(number: int) -> None:
        async with in_flight:
            with contextlib.suppress(ObjectError):
                heads[number - 1] = await s3.part_head(obj, number)

    async with anyio.create_task_group() as tg:
        for number in range(1, parts + 1):
            tg.start_soon(ask, number)
    known = [head for head in heads if head is not None]
    if len(known) != parts or sum(head.size for head in known) != obj.size:
        return None
    starts = [start for start, _ in part_spans(head.size for head in known)]
    if any(told_size(h, obj, parts, at) is None for h, at in zip(known, starts, strict=True)):
        return None
    return known


def part_checksum(expectation: Expectation, head: PartHead) -> bytes | None:
    """The part's own checksum of *expectation*'s algorithm from a part HEAD; None
    if it sent none (or a '-N' value: the object's, not the part's)."""
    value = head.checksums.get(expectation.part_algorithm or "")
    if not value or "-" in value:
        return None
    try:
        return base64.b64decode(value, validate=True)
    except ValueError:
        return None


def damaged_parts(
    expectation: Expectation,
    layout: tuple[int, ...],
    received: list[bytes],
    told: list[bytes | None],
) -> list[tuple[int, int]]:
    """The [start, end) of each part whose digest differs from what S3 told.

    Empty (the object starts over whole) unless S3 told every part's
    checksum and those reproduce the object's own: then they are the parts'
    checksums and not something else a store chose to send.
    """
    if len(told) != len(layout) or len(received) != len(layout):
        return []
    known = [digest for digest in told if digest is not None]
    if len(known) != len(told):
        return []
    try:
        settle(expectation, known, layout)
    except ChecksumMismatch:
        return []
    return [
        span
        for span, mine, theirs in zip(part_spans(layout), received, known, strict=True)
        if mine != theirs
    ]
