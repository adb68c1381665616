"""Verification: what an object will be checked against, and the check.

One object's checks, in the order they happen:

- **expectation**: from the first GET's headers, or a HEAD for a ranged
  download: a whole-object checksum, the ETag's MD5, a check by parts of a
  multipart upload, or its size alone (saying why) (``_checksums.choose``);
- **layout**: where a multipart upload's parts end, asked of S3 (or
  inferred, see ``_parts``); ranges are cut at parts where they are equal,
  so each part is digested as it streams;
- **digests**: per range (a CRC, combined), per part (a hash as it
  streams), or one in offset order for hashes that cannot be combined;
- **check**: before the file reaches its path, from the digests where they
  cover it, else read back from disk;
- **damaged parts**: after a check by parts fails, S3's checksum of each
  part says which to fetch again.

The state lives on the job (``FileJob``); :class:`Verifier` holds what the
checks need from the run: the store (for HEADs) and the writer thread.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ._checksums import (
    NO_VERIFY,
    SIZE_ONLY,
    ChecksumMismatch,
    Digest,
    Expectation,
    PartsDigest,
    check_whole,
    choose,
    contiguous_end,
    crc_bytes,
    crc_of_ranges,
    crcs_by_part,
    cut_within_parts,
    is_crc,
    make_digest,
    multipart_parts,
    part_spans,
    settle,
    size_only,
    within_parts,
)
from ._files import PartialFile
from ._models import ObjectHeaders
from ._objects import Body, ObjectChanged, ObjectError, ObjectSource
from ._parts import ask_every_part, damaged_parts, learn_layout, part_checksum
from ._writer import Writer

if TYPE_CHECKING:
    from ._jobs import FileJob

# A checksum mismatch or a mid-download overwrite: one fresh start, then report.
MAX_RESTARTS = 1
# Parts bigger than this are not one range each (too few ranges in flight):
# such uploads are hashed serially instead.
MAX_ALIGNED_PART = 64 << 20
# Bytes read back at a time to hash ranges already on disk (page cache).
HASH_BLOCK = 256 * 1024


class Verifier:
    """The checks of a run's objects (with --no-verify: their sizes only)."""

    def __init__(self, s3: ObjectSource, writer: Writer, *, enabled: bool) -> None:
        self.s3 = s3
        self.writer = writer
        self.enabled = enabled

    # -- expectation and layout ------------------------------------------------------

    def expectation(self, headers: ObjectHeaders) -> Expectation:
        """What the object's bytes will be checked against (size only with --no-verify)."""
        if not self.enabled:
            return size_only(NO_VERIFY)
        return choose(
            headers.checksums,
            headers.checksum_type,
            headers.etag,
            encrypted_with_key=headers.encrypted_with_key,
        )

    async def expect(self, job: FileJob, headers: ObjectHeaders) -> Expectation:
        if job.check.expectation is None:
            job.check.expectation = self.expectation(headers)
        if job.check.expectation.by_parts and job.check.layout is None:
            await self._learn_layout(job, job.check.expectation.parts)
        return job.check.expectation

    async def expect_from_body(self, job: FileJob, body: Body) -> Expectation:
        """The expectation from a GET's headers; the body is closed if that fails
        (learning a multipart layout asks S3 once more)."""
        try:
            return await self.expect(job, body.headers)
        except BaseException:
            body.close()
            raise

    async def expect_from_head(self, job: FileJob) -> None:
        """A ranged GET carries no whole-object checksum: HEAD tells it."""
        if not self.enabled:
            job.check.expectation = size_only(NO_VERIFY)
            return
        head = await self.s3.stat(job.obj)
        if (head.obj.etag, head.obj.size) != (job.obj.etag, job.obj.size):
            raise ObjectChanged(f"'{job.obj.key}' changed in S3 since it was listed")
        # A multipart upload's layout asks S3 once more (HEAD ?partNumber=1).
        expectation = await self.expect(job, head.headers)
        algorithm = expectation.algorithm
        if algorithm and is_crc(algorithm) and not job.state.done_ranges:
            job.check.crc_algorithm = algorithm
        if algorithm and not crcs_tell(job) and not job.hashes_parts:
            job.check.sequential = make_digest(expectation, job.check.layout)

    async def _learn_layout(self, job: FileJob, parts: int) -> None:
        """Where a multipart upload's parts end (see ``_parts``); where that
        cannot be known, the object is checked by size only, saying why."""
        # (A CRC that may be FULL_OBJECT could still be checked whole here;
        # stores that cannot tell part sizes have not been seen to send one.)
        if parts == 1:
            job.check.layout = (job.obj.size,)
            return
        layout = await learn_layout(self.s3, job.obj, parts)
        if layout.sizes is None:
            job.check.expectation = size_only(layout.why)
        job.check.layout = layout.sizes
        job.check.layout_inferred = layout.inferred

    async def align_to_parts(self, job: FileJob) -> None:
        """Cut an object (one that streams: not read whole) uploaded in equal
        parts at its parts, before its ranges
        are queued: each part is then digested as it streams, in parallel, and
        the multipart ETag or COMPOSITE checksum checked from the parts'
        digests without reading back. Parts over MAX_ALIGNED_PART are cut in
        even shares (part CRCs combine from them; a hash is then fed in order)."""
        parts = multipart_parts(job.obj.etag)
        if (
            not self.enabled
            or parts is None
            or parts < 2
            or job.state.partial is not None  # resumed: its ranges are cut already
        ):
            return
        try:
            layout = await learn_layout(self.s3, job.obj, parts)
        except ObjectError:
            return  # the first range's HEAD will tell what it can
        sizes = layout.sizes
        cut = cut_within_parts(sizes, MAX_ALIGNED_PART) if sizes else 0
        if sizes is None or not cut:
            return
        job.check.layout = sizes
        job.check.layout_inferred = layout.inferred
        job.part_size = cut
        if cut == sizes[0]:
            job.check.part_hashes = {}

    async def real_layout(self, job: FileJob) -> bool:
        """After a check by parts failed: ask S3 each part's size (and checksum).
        True if the parts are not as guessed (the bytes may be right after all)."""
        expectation = job.check.expectation
        if expectation is None or not expectation.by_parts or expectation.parts < 2:
            return False
        heads = await ask_every_part(self.s3, job.obj, expectation.parts)
        if heads is None:
            return False
        job.check.part_checksums = [part_checksum(expectation, head) for head in heads]
        real = tuple(head.size for head in heads)
        if real == job.check.layout:
            return False
        job.check.layout = real
        return True

    # -- digests as bytes arrive --------------------------------------------------------

    async def hash_in_order(self, job: FileJob) -> None:
        """Feed the sequential digest every byte now contiguous from its cursor."""
        if job.check.sequential is None or job.state.partial is None:
            return
        async with job.check.hash_lock:
            while (end := contiguous_end(job.state.done_ranges, job.check.sequential_upto)) > (
                start := job.check.sequential_upto
            ):
                await self.writer.call(
                    hash_span, job.state.partial, job.check.sequential, start, end
                )
                job.check.sequential_upto = end

    # -- the check (blocking: in a writer thread) ------------------------------------------

    def check_small(self, job: FileJob, chunks: list[bytes]) -> None:
        """Check an object read whole into memory, before it is written."""
        expectation = job.check.expectation or SIZE_ONLY
        if expectation.algorithm:
            digest = make_digest(expectation, job.check.layout)
            for chunk in chunks:
                digest.update(chunk)
            job.check.expectation = check_whole(expectation, digest, job.check.layout)

    def check_file(self, job: FileJob, partial: PartialFile, from_disk: bool = False) -> None:
        """Check a temp file before it is committed (*from_disk*: read it back,
        with what is now known of its layout). Settled: a CRC S3 left untyped
        is then known COMPOSITE or whole."""
        expectation = job.check.expectation or SIZE_ONLY
        if expectation.algorithm:
            job.check.expectation = _check(job, partial, expectation, from_disk)


def _check(
    job: FileJob, partial: PartialFile, expectation: Expectation, from_disk: bool
) -> Expectation:
    """The bytes of *job* against *expectation*, from what was digested as
    they streamed where that covers them, else read back from disk."""
    size = job.obj.size
    if from_disk:  # read back, with what is now known (a multipart layout)
        return check_whole(expectation, _read_back(partial, expectation, job), job.check.layout)
    if not job.multi_range:
        return check_whole(expectation, job.check.digest or Digest(None), job.check.layout)
    if expectation.by_parts and job.check.layout and (digests := _streamed_parts(job)) is not None:
        return settle(expectation, digests, job.check.layout)
    if not expectation.by_parts and expectation.algorithm == job.check.crc_algorithm:
        crc = crc_bytes(
            job.check.crc_algorithm, crc_of_ranges(job.check.crc_algorithm, job.state.done_ranges)
        )
        if crc != expectation.expected:
            raise ChecksumMismatch(expectation.describe(crc))
        return expectation
    if job.check.sequential is not None and job.check.sequential_upto == size:
        return check_whole(expectation, job.check.sequential, job.check.layout)
    # Ranges resumed before the digest was set up, or parts that turned
    # out not to be as guessed: read it back.
    return check_whole(expectation, _read_back(partial, expectation, job), job.check.layout)


def crcs_tell(job: FileJob) -> bool:
    """Whether the ranges' CRCs alone will check this job: a whole-object CRC
    (ranges combine), or part CRCs from ranges that stay within parts."""
    expectation = job.check.expectation or SIZE_ONLY
    if expectation.part_algorithm != job.check.crc_algorithm:
        return False
    if not expectation.by_parts:
        return True
    return job.check.layout is not None and within_parts(job.part_size, job.check.layout)


def _streamed_parts(job: FileJob) -> list[bytes] | None:
    """Each part's digest as its bytes streamed; None where that did not cover them."""
    expectation = job.check.expectation or SIZE_ONLY
    layout = job.check.layout or ()
    if job.hashes_parts and job.check.part_hashes is not None:
        starts = [start for start, _ in part_spans(layout)]
        if set(job.check.part_hashes) == set(starts):
            return [job.check.part_hashes[start] for start in starts]
        return None
    if expectation.part_algorithm == job.check.crc_algorithm:
        return crcs_by_part(job.check.crc_algorithm, job.state.done_ranges, layout)
    return None


def parts_to_refetch(job: FileJob) -> list[tuple[int, int]]:
    """After a check by parts failed: the parts to fetch again (see damaged_parts),
    where S3 told each part's checksum and this run has not refetched parts yet."""
    if (
        job.check.expectation is None
        or job.check.layout is None
        or job.check.part_checksums is None
        or job.state.partial is None
        or job.state.restarts >= MAX_RESTARTS
        or (received := _streamed_parts(job)) is None
    ):
        return []
    return damaged_parts(
        job.check.expectation, job.check.layout, received, job.check.part_checksums
    )


def _read_back(
    partial: PartialFile, expectation: Expectation, job: FileJob
) -> Digest | PartsDigest:
    digest = make_digest(expectation, job.check.layout)
    hash_span(partial, digest, 0, job.obj.size)
    return digest


def hash_span(partial: PartialFile, digest: Digest | PartsDigest, start: int, end: int) -> None:
    """Feed *digest* the bytes [start, end) already on disk."""
    for block in partial.blocks(start, end, block=HASH_BLOCK):
        digest.update(block)
