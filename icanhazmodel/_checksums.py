"""Checksums: which one S3 vouches for, computing it while streaming, and
combining per-range CRCs so a file fetched in parallel ranges is still
verified as a whole.

Pure computation; the pipeline calls these from its writer threads (zlib,
hashlib and awscrt release the GIL on large buffers).
"""

from __future__ import annotations

import base64
import hashlib
import re
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ._models import Verification

# Every full-object checksum S3 can hold, in order of preference: CRCs first
# (fast, and they combine across ranges), then the hashes.
CHECKSUM_ALGORITHMS = ("CRC64NVME", "CRC32C", "CRC32", "SHA256", "SHA1")
_CRC_WIDTH = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8}
_LEVEL = {
    "CRC32": Verification.CRC32,
    "CRC32C": Verification.CRC32C,
    "CRC64NVME": Verification.CRC64NVME,
    "SHA1": Verification.SHA1,
    "SHA256": Verification.SHA256,
    "MD5": Verification.ETAG_MD5,
    "MD5-MULTIPART": Verification.ETAG_MD5_MULTIPART,
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
    # Imported on first use: loading awscrt's native library costs ~25 ms of
    # start-up that runs needing only zlib's CRC32 or an MD5 never pay.
    from awscrt import checksums

    return checksums


def crc_update(algorithm: str, data: bytes | memoryview, previous: int = 0) -> int:
    if algorithm == "CRC32":
        return zlib.crc32(data, previous)
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
        total = crc_combine(algorithm, total, crc, end - start)
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
    parts: int = 0  # MD5-MULTIPART: how many parts the upload had

    @property
    def level(self) -> Verification:
        return _LEVEL[self.algorithm] if self.algorithm else Verification.SIZE_ONLY

    def describe(self, digest: bytes) -> str:
        return (
            f"{self.level.value} mismatch: S3 says {base64.b64encode(self.expected).decode()}, "
            f"the bytes received give {base64.b64encode(digest).decode()}"
        )


SIZE_ONLY = Expectation(None)


def choose(
    checksums: Mapping[str, str],
    checksum_type: str | None,
    etag: str,
    *,
    encrypted_with_key: bool = False,
) -> Expectation:
    """The strongest whole-object check available for one object.

    *checksums* are S3's base64 values by algorithm. A composite checksum
    (a multipart upload's checksum of part checksums, with a '-N' suffix)
    is passed over; so is any checksum of a multipart upload whose type S3
    did not state (a composite one may come without its suffix, as moto
    sends it). A plain 32-hex ETag is the MD5 of the bytes, and a multipart
    one ('<hex>-N') the MD5 of the parts' MD5s, except for SSE-KMS and SSE-C
    objects (*encrypted_with_key*), whose ETags are opaque.
    """
    multipart = _MULTIPART_ETAG.match(etag)
    if checksum_type == "FULL_OBJECT" or (checksum_type is None and not multipart):
        for algorithm in CHECKSUM_ALGORITHMS:
            value = checksums.get(algorithm)
            if value and "-" not in value:
                try:
                    return Expectation(algorithm, base64.b64decode(value, validate=True))
                except ValueError:
                    continue
    if encrypted_with_key:
        return SIZE_ONLY
    if _PLAIN_MD5_ETAG.match(etag):
        return Expectation("MD5", bytes.fromhex(etag))
    if multipart:
        return Expectation(MULTIPART_MD5, bytes.fromhex(multipart[1]), int(multipart[2]))
    return SIZE_ONLY


def equal_parts(size: int, first: int, count: int) -> tuple[int, ...] | None:
    """Part sizes if all but the last are *first* bytes, as uploaders make
    them; None where that cannot add up to *size*."""
    if count < 1 or first < 1 or not (count - 1) * first < size <= count * first:
        return None
    return (first,) * (count - 1) + (size - (count - 1) * first,)


class PartsDigest:
    """The MD5 of each part's MD5, fed the object's bytes in order: what a
    multipart upload's ETag is, given where its parts end."""

    algorithm = MULTIPART_MD5

    def __init__(self, layout: Iterable[int]) -> None:
        self._left = list(layout)  # bytes still to come in each part, first part first
        self._parts: list[bytes] = []
        self._md5 = new_hash("MD5")
        self.crc = 0

    def update(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view:
            if not self._left:
                raise ValueError("more bytes than the parts hold")
            take = min(len(view), self._left[0])
            self._md5.update(view[:take])
            view = view[take:]
            self._left[0] -= take
            if self._left[0] == 0:
                self._next_part()

    def _next_part(self) -> None:
        self._parts.append(self._md5.digest())
        self._md5 = new_hash("MD5")
        self._left.pop(0)

    def value(self) -> bytes:
        while self._left and self._left[0] == 0:  # zero-byte parts
            self._next_part()
        if self._left:
            return b""  # not every byte arrived: matches nothing
        return md5_of(b"".join(self._parts))


def md5_of(data: bytes) -> bytes:
    md5 = new_hash("MD5")
    md5.update(data)
    return md5.digest()


def multipart_parts(etag: str) -> int | None:
    """How many parts a multipart upload's ETag says it had; None if not one."""
    match = _MULTIPART_ETAG.match(etag)
    return int(match[2]) if match else None


def make_digest(
    algorithm: str | None, layout: tuple[int, ...] | None = None
) -> Digest | PartsDigest:
    """A running checksum for *algorithm*; MD5-MULTIPART needs the part layout."""
    if algorithm == MULTIPART_MD5:
        if layout is None:
            raise ValueError("a multipart ETag is checked only with its part layout")
        return PartsDigest(layout)
    return Digest(algorithm)


class Digest:
    """A running checksum of a byte stream: a CRC, a hashlib hash, or nothing."""

    def __init__(self, algorithm: str | None) -> None:
        self.algorithm = algorithm
        self.crc = 0
        self._hash = new_hash(algorithm) if algorithm and not is_crc(algorithm) else None

    def update(self, data: bytes) -> None:
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
