"""The parts of a multipart upload: where they end, and which arrived damaged.

A multipart ETag and a COMPOSITE checksum are digests of the parts' digests,
so checking one needs the part layout, which S3 tells only one part HEAD at
a time (``partNumber=k``). Uploaders make every part but the last one size,
so part 1's HEAD is usually enough; every part is asked only after a check
failed, before anything is called corrupt. In checksum mode those HEADs also
carry each part's own checksum, which names the parts to fetch again.
"""

from __future__ import annotations

import base64
import contextlib

import anyio

from ._checksums import ChecksumMismatch, Expectation, equal_parts, part_spans, settle
from ._models import RemoteObject
from ._objects import ObjectError, ObjectSource, PartHead

PART_HEADS_IN_FLIGHT = 16


async def equal_layout(s3: ObjectSource, obj: RemoteObject, parts: int) -> tuple[int, ...] | None:
    """The layout uploaders make (equal parts but the last), from part 1's size."""
    first = await s3.part_head(obj, 1)
    return equal_parts(obj.size, first.size, parts) if first else None


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
