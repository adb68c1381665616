"""Checksums: which one S3 vouches for, computing it while streaming, and
combining per-range CRCs so a file fetched in parallel ranges is still
verified as a whole.

Pure computation; the pipeline calls these from its writer threads (zlib,
hashlib and awscrt release the GIL on large buffers).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import re
import sys
import threading
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from . import _crcpy
from ._models import Verification

# Every full-object checksum S3 can hold, in order of preference: CRCs first
# (fast, and they combine across ranges), then the hashes.
CHECKSUM_ALGORITHMS = ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")
_CRC_WIDTH = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8}
_DIGEST_SIZE = {**_CRC_WIDTH, "SHA1": 20, "SHA256": 32}
_LEVEL = {
    "CRC32": Verification.CRC32,
    "CRC32C": Verification.CRC32C,
    "CRC64NVME": Verification.CRC64NVME,
    "SHA1": Verification.SHA1,
    "SHA256": Verification.SHA256,
    "MD5": Verification.ETAG_MD5,
    "MD5-MULTIPART": Verification.ETAG_MD5_MULTIPART,
}
_COMPOSITE_LEVEL = {
    "CRC32": Verification.CRC32_COMPOSITE,
    "CRC32C": Verification.CRC32C_COMPOSITE,
    "SHA1": Verification.SHA1_COMPOSITE,
    "SHA256": Verification.SHA256_COMPOSITE,
}
_PLAIN_MD5_ETAG = re.compile(r"^[0-9a-f]{32}$")
# A multipart upload's ETag: the MD5 of its parts' MD5s, then '-' and the count.
_MULTIPART_ETAG = re.compile(r"^([0-9a-f]{32})-([1-9][0-9]{0,4})$")
MULTIPART_MD5 = "MD5-MULTIPART"
# The CRC every range gets when the object has no CRC of its own: it lets a
# resumed download re-check the ranges already on disk. CRC32C, in hardware
# through awscrt (~0.02 s/GiB), not zlib's CRC32 (~0.3-0.5 s/GiB): it is paid
# even with --no-verify. Records name their algorithm, so older ones resume.
RANGE_CRC = "CRC32C"


def is_crc(algorithm: str) -> bool:
    return algorithm in _CRC_WIDTH


def _crt() -> Any:
    # Imported on first use: loading awscrt costs 50-70 ms (its crypto library
    # seeds a random generator from CPU jitter as it loads, though only its
    # checksums are used here), which runs needing only an MD5 never pay.
    from awscrt import checksums

    return checksums


def preload_crt() -> None:
    """Load awscrt now (see _crt): where processes are forked from one that
    did, each worker is spared that cost at its first CRC."""
    _crt()


def by_crt(algorithm: str) -> bool:
    """Whether *algorithm* is computed through awscrt (see _crt), past a
    run's first few bytes (PY_CRC_BUDGET)."""
    return algorithm in ("CRC32C", "CRC64NVME")


_loading: threading.Thread | None = None


def load_crt_soon() -> None:
    """Start loading awscrt in a thread, where a CRC will soon be needed: its
    load (see _crt) then overlaps the requests' round trips instead of
    following the first answer. It holds the GIL most of that time, so this
    gains where the run waits on the network, and costs nothing it would
    not have paid a moment later."""
    global _loading
    if _loading is None and "awscrt.checksums" not in sys.modules:
        _loading = threading.Thread(target=_load_quietly, name="icanhazmodel-awscrt", daemon=True)
        _loading.start()


def _load_quietly() -> None:
    # A failed load is raised where a CRC is computed, by the import there.
    with contextlib.suppress(ImportError):
        _crt()


# While awscrt is not loaded, CRC-32C and CRC-64/NVME are computed in plain
# Python (_crcpy, ~100 ns a byte) for up to this many bytes a process: ~26 ms
# at most, under awscrt's 50-70 ms load. A run planned to check more loads
# awscrt early instead (load_crt_soon), and uses it from then on.
PY_CRC_BUDGET = 256 * 1024
_py_crc_left = PY_CRC_BUDGET


def crc_in_python(nbytes: int) -> bool:
    """Whether a CRC over *nbytes* more would still be computed in Python."""
    return _loading is None and "awscrt.checksums" not in sys.modules and nbytes <= _py_crc_left


def crc_update(algorithm: str, data: bytes | memoryview, previous: int = 0) -> int:
    global _py_crc_left
    if algorithm == "CRC32":
        return zlib.crc32(data, previous)
    if by_crt(algorithm) and crc_in_python(len(data)):
        # Writer threads may race on the count: at worst a few more bytes in
        # Python. The values are the same either way.
        _py_crc_left -= len(data)
        return _crcpy.crc_update(algorithm, data, previous)
    crt = _crt()
    if algorithm == "CRC32C":
        return int(crt.crc32c(data, previous))
    if algorithm == "CRC64NVME":
        return int(crt.crc64nvme(data, previous))
    raise ValueError(f"not a CRC: {algorithm}")


def crc_combine(algorithm: str, first: int, second: int, second_length: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B)."""
    if second_length == 0:
        return first
    crt = _crt()
    if algorithm == "CRC32":
        return int(crt.combine_crc32(first, second, second_length))
    if algorithm == "CRC32C":
        return int(crt.combine_crc32c(first, second, second_length))
    if algorithm == "CRC64NVME":
        return int(crt.combine_crc64nvme(first, second, second_length))
    raise ValueError(f"not a CRC: {algorithm}")


def crc_of_ranges(algorithm: str, ranges: Iterable[tuple[int, int, int]]) -> int:
    """Combine (start, end, crc) ranges that tile an object from offset 0."""
    total = 0
    expected_start = 0
    for start, end, crc in sorted(ranges):
        if start != expected_start:
            raise ValueError(f"ranges leave a gap at byte {expected_start}")
        # The first range's CRC is already the object's so far: no combining,
        # so one range never needs awscrt (see crc_update).
        total = crc if start == 0 else crc_combine(algorithm, total, crc, end - start)
        expected_start = end
    return total


def contiguous_end(ranges: Iterable[tuple[int, int, int]], start: int) -> int:
    """How far the (start, end, crc) ranges cover the object without a gap from *start*."""
    end = start
    for range_start, range_end, _ in sorted(ranges):
        if range_start > end:
            break
        end = max(end, range_end)
    return end


def crc_bytes(algorithm: str, value: int) -> bytes:
    return value.to_bytes(_CRC_WIDTH[algorithm], "big")


class Hash(Protocol):
    def update(self, data: bytes | memoryview, /) -> None: ...
    def digest(self) -> bytes: ...


def new_hash(algorithm: str) -> Hash:
    """A hashlib object for SHA1, SHA256 or MD5."""
    if algorithm == "MD5":
        return hashlib.md5(usedforsecurity=False)
    return hashlib.new(algorithm.lower())


@dataclass(frozen=True, slots=True)
class Expectation:
    """What a downloaded object will be checked against."""

    algorithm: str | None  # "CRC64NVME" ... "SHA1", "MD5", "MD5-MULTIPART"; None: size only
    expected: bytes = b""
    parts: int = 0  # MD5-MULTIPART and composite checksums: how many parts the upload had
    # A checksum of the parts' checksums (COMPOSITE). None: S3 did not say
    # whether this CRC of a multipart upload is COMPOSITE or FULL_OBJECT, so
    # the bytes may match either; the check settles which.
    composite: bool | None = False
    why: str = ""  # for size only: why nothing stronger could be checked

    @property
    def level(self) -> Verification:
        if not self.algorithm:
            return Verification.SIZE_ONLY
        if self.composite is not False:
            return _COMPOSITE_LEVEL[self.algorithm]
        return _LEVEL[self.algorithm]

    @property
    def by_parts(self) -> bool:
        """Checked from a digest per part, so the part layout must be known."""
        return self.algorithm == MULTIPART_MD5 or self.composite is not False

    @property
    def part_algorithm(self) -> str | None:
        """What each part is digested with, for a check by parts."""
        return "MD5" if self.algorithm == MULTIPART_MD5 else self.algorithm

    @property
    def s3_checksum(self) -> str | None:
        """S3's checksum as "ALGORITHM:base64" ("-N" for one of N parts'
        checksums); None for an MD5 ETag (the ETag says it) or size only."""
        if self.algorithm not in CHECKSUM_ALGORITHMS:
            return None
        value = f"{self.algorithm}:{base64.b64encode(self.expected).decode()}"
        return f"{value}-{self.parts}" if self.composite and self.parts else value

    def describe(self, digest: bytes) -> str:
        return (
            f"{self.level.value} mismatch: S3 says {base64.b64encode(self.expected).decode()}, "
            f"the bytes received give {base64.b64encode(digest).decode()}"
        )


SIZE_ONLY = Expectation(None)
NO_VERIFY = "--no-verify"


def size_only(why: str) -> Expectation:
    """A check by size alone, saying why (reported per object in --json)."""
    return Expectation(None, why=why)


# S3 keeps SHA checksums of multipart uploads only as COMPOSITE, and
# CRC64NVME only as FULL_OBJECT; CRC32 and CRC32C can be either.
_ONLY_COMPOSITE = ("SHA1", "SHA256")
_ONLY_FULL_OBJECT = ("CRC64NVME",)


def choose(
    checksums: Mapping[str, str],
    checksum_type: str | None,
    etag: str,
    *,
    encrypted_with_key: bool = False,
) -> Expectation:
    """The strongest whole-object check available for one object.

    *checksums* are S3's base64 values by algorithm. On an object uploaded
    in parts (a '<hex>-N' ETag) a checksum is COMPOSITE when S3 says so or
    its value ends in '-N'; where S3 states no type (moto's HEAD, some
    stores), the algorithm may settle it, and a CRC32 or CRC32C is checked
    as either kind. A checksum is preferred to the ETag: it also names the
    part that is wrong. A plain 32-hex ETag is the MD5 of the bytes, and a
    multipart one the MD5 of the parts' MD5s, except for SSE-KMS and SSE-C
    objects (*encrypted_with_key*), whose ETags are opaque.
    """
    multipart = _MULTIPART_ETAG.match(etag)
    parts = int(multipart[2]) if multipart else 0
    for algorithm in CHECKSUM_ALGORITHMS:
        if expectation := _from_checksum(algorithm, checksums.get(algorithm), checksum_type, parts):
            return expectation
    if encrypted_with_key:
        return size_only("SSE-KMS/SSE-C: its ETag is not an MD5, and S3 holds no checksum for it")
    if _PLAIN_MD5_ETAG.match(etag):
        return Expectation("MD5", bytes.fromhex(etag))
    if multipart:
        return Expectation(MULTIPART_MD5, bytes.fromhex(multipart[1]), parts)
    return size_only(f"its ETag ({etag[:40]!r}) is not an MD5, and S3 holds no checksum for it")


def _from_checksum(
    algorithm: str, value: str | None, checksum_type: str | None, parts: int
) -> Expectation | None:
    if not value:
        return None
    encoded, _, suffix = value.partition("-")
    try:
        expected = base64.b64decode(encoded, validate=True)
    except ValueError:
        return None
    if len(expected) != _DIGEST_SIZE[algorithm]:
        return None
    if checksum_type == "FULL_OBJECT" and not suffix:
        return Expectation(algorithm, expected)
    if not parts:  # one PUT: a '-N' value or a COMPOSITE type makes no sense
        return Expectation(algorithm, expected) if not (suffix or checksum_type) else None
    if suffix and suffix != str(parts):
        return None  # another count of parts than the ETag's: trust neither
    if checksum_type == "COMPOSITE" or suffix or algorithm in _ONLY_COMPOSITE:
        return (
            None
            if algorithm in _ONLY_FULL_OBJECT
            else Expectation(algorithm, expected, parts, True)
        )
    if checksum_type is None:
        if algorithm in _ONLY_FULL_OBJECT:
            return Expectation(algorithm, expected)
        return Expectation(algorithm, expected, parts, None)
    return None  # a type we do not know


def equal_parts(size: int, first: int, count: int) -> tuple[int, ...] | None:
    """Part sizes if all but the last are *first* bytes, as uploaders make
    them; None where that cannot add up to *size*."""
    if count < 1 or first < 1 or not (count - 1) * first < size <= count * first:
        return None
    return (first,) * (count - 1) + (size - (count - 1) * first,)


def part_spans(layout: Iterable[int]) -> list[tuple[int, int]]:
    """[start, end) of each part, from the parts' sizes."""
    spans, start = [], 0
    for size in layout:
        spans.append((start, start + size))
        start += size
    return spans


def cut_within_parts(layout: tuple[int, ...], most: int) -> int:
    """A range size of at most *most* bytes whose ranges never cross a part
    boundary: a whole part, or an even share of one. 0 if none fits."""
    first = layout[0]
    if any(size % first for size in layout[:-1]):
        return 0  # unequal parts: no one size fits
    for share in range(-(-first // most), 65):
        if first % share == 0:
            return first // share
    return 0


def within_parts(range_size: int, layout: tuple[int, ...]) -> bool:
    """Whether ranges of *range_size* (cut from offset 0) never cross a part boundary."""
    return range_size > 0 and all(size % range_size == 0 for size in layout[:-1])


def crcs_by_part(
    algorithm: str, ranges: Iterable[tuple[int, int, int]], layout: tuple[int, ...]
) -> list[bytes] | None:
    """Each part's CRC, combined from (start, end, crc) ranges that tile the
    object; None where a range crosses a part boundary or leaves a gap."""
    by_start = sorted(ranges)
    digests: list[bytes] = []
    i = 0
    for start, end in part_spans(layout):
        crc, at = 0, start
        while i < len(by_start) and by_start[i][0] < end:
            range_start, range_end, range_crc = by_start[i]
            if range_start != at or range_end > end:
                return None
            crc = crc_combine(algorithm, crc, range_crc, range_end - range_start)
            at = range_end
            i += 1
        if at != end:
            return None
        digests.append(crc_bytes(algorithm, crc))
    return digests if i == len(by_start) else None


class PartsDigest:
    """A digest per part, fed the object's bytes in order: what a multipart
    ETag or a COMPOSITE checksum is checked from, given where the parts end."""

    def __init__(self, layout: Iterable[int], algorithm: str = "MD5") -> None:
        self.algorithm = algorithm  # of each part
        self._left = list(layout)  # bytes still to come in each part, first part first
        self._parts: list[bytes] = []
        self._digest = Digest(algorithm)

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if not self._left:
                raise ValueError("more bytes than the parts hold")
            take = min(len(view), self._left[0])
            self._digest.update(view[:take])
            view = view[take:]
            self._left[0] -= take
            if self._left[0] == 0:
                self._next_part()

    def _next_part(self) -> None:
        self._parts.append(self._digest.value())
        self._digest = Digest(self.algorithm)
        self._left.pop(0)

    def part_digests(self) -> list[bytes] | None:
        """Each part's digest; None if not every byte arrived."""
        while self._left and self._left[0] == 0:  # zero-byte parts
            self._next_part()
        return None if self._left else list(self._parts)

    def value(self) -> bytes:
        """The multipart ETag's MD5 (of the parts' MD5s); b"" if bytes are missing."""
        digests = self.part_digests()
        return b"" if digests is None else digest_of(self.algorithm, b"".join(digests))


def digest_of(algorithm: str, data: bytes) -> bytes:
    digest = Digest(algorithm)
    digest.update(data)
    return digest.value()


def multipart_parts(etag: str) -> int | None:
    """How many parts a multipart upload's ETag says it had; None if not one."""
    match = _MULTIPART_ETAG.match(etag)
    return int(match[2]) if match else None


def make_digest(
    expectation: Expectation, layout: tuple[int, ...] | None = None
) -> Digest | PartsDigest:
    """A running checksum for *expectation*; a check by parts needs the part layout."""
    if expectation.by_parts:
        if layout is None:
            raise ValueError("a check by parts needs the part layout")
        return PartsDigest(layout, expectation.part_algorithm or "MD5")
    return Digest(expectation.algorithm)


def settle(
    expectation: Expectation, part_digests: list[bytes] | None, layout: tuple[int, ...]
) -> Expectation:
    """Check a check by parts from each part's digest. Returns the expectation
    met (a CRC S3 left untyped settles as COMPOSITE or FULL_OBJECT); raises
    ChecksumMismatch."""
    algorithm = expectation.part_algorithm
    if not expectation.by_parts or algorithm is None:
        raise ValueError("not a check by parts")
    if part_digests is None or len(part_digests) != len(layout):
        raise ChecksumMismatch(f"{expectation.level.value} mismatch: not every part arrived")
    composite = digest_of(algorithm, b"".join(part_digests))
    if composite == expectation.expected:
        return (
            expectation
            if expectation.composite is not None
            else replace(expectation, composite=True)
        )
    if expectation.composite is None:
        whole = 0
        for digest, size in zip(part_digests, layout, strict=True):
            whole = crc_combine(algorithm, whole, int.from_bytes(digest, "big"), size)
        if crc_bytes(algorithm, whole) == expectation.expected:
            return Expectation(algorithm, expectation.expected)
    raise ChecksumMismatch(expectation.describe(composite))


def check_whole(
    expectation: Expectation, digest: Digest | PartsDigest, layout: tuple[int, ...] | None
) -> Expectation:
    """Check a running digest made by make_digest; see settle."""
    if isinstance(digest, PartsDigest):
        assert layout is not None
        return settle(expectation, digest.part_digests(), layout)
    if digest.value() != expectation.expected:
        raise ChecksumMismatch(expectation.describe(digest.value()))
    return expectation


class Digest:
    """A running checksum of a byte stream: a CRC, a hashlib hash, or nothing."""

    def __init__(self, algorithm: str | None) -> None:
        self.algorithm = algorithm
        self.crc = 0
        self._hash = new_hash(algorithm) if algorithm and not is_crc(algorithm) else None

    def update(self, data: bytes | memoryview) -> None:
        if self._hash is not None:
            self._hash.update(data)
        elif self.algorithm:
            self.crc = crc_update(self.algorithm, data, self.crc)

    def value(self) -> bytes:
        if self._hash is not None:
            return self._hash.digest()
        if self.algorithm:
            return crc_bytes(self.algorithm, self.crc)
        return b""


class ChecksumMismatch(Exception):
    """The bytes received do not match what S3 vouches for."""
