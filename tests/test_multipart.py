"""Objects uploaded in parts are checked by their multipart ETag: the MD5 of
each part's MD5, with the parts' boundaries learned from S3 (issue 10)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import zlib
from pathlib import Path
from typing import Any

import pytest

import icanhazmodel
from icanhazmodel import FetchResult
from icanhazmodel._checksums import (
    ChecksumMismatch,
    Expectation,
    PartsDigest,
    check_whole,
    choose,
    crcs_by_part,
    cut_within_parts,
    digest_of,
    equal_parts,
    part_spans,
    settle,
    within_parts,
)
from icanhazmodel._parts import damaged_parts
from tests.conftest import Bucket, tree_of
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern

MiB = 1 << 20


def upload_in_parts(
    client: Any,
    bucket: str,
    key: str,
    data: bytes,
    sizes: list[int],
    checksum: str | None,
    checksum_type: str | None = None,
    **create: str,
) -> str:
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    typed = {"ChecksumType": checksum_type} if checksum_type else {}
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **extra, **typed, **create)
    parts, start = [], 0
    for number, size in enumerate(sizes, 1):
        part = client.upload_part(
            Bucket=bucket,
            Key=key,
            UploadId=upload["UploadId"],
            PartNumber=number,
            Body=data[start : start + size],
            **extra,
        )
        parts.append({"PartNumber": number, "ETag": part["ETag"]} | {
            k: v for k, v in part.items() if k.startswith("Checksum")
        })  # fmt: skip
        start += size
    assert start == len(data)
    done = client.complete_multipart_upload(
        Bucket=bucket, Key=key, UploadId=upload["UploadId"], MultipartUpload={"Parts": parts}
    )
    return str(done["ETag"]).strip('"')


def fetch(endpoint: str, bucket: Bucket, dest: Path, **kwargs: object) -> FetchResult:
    kwargs.setdefault("concurrency", 3)
    return asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key="p", dest=dest, endpoint_url=endpoint, **kwargs)
    )


# -- pure ------------------------------------------------------------------------------------


def test_the_etag_is_the_md5_of_the_parts_md5s() -> None:
    data = pattern("pure", 12 * MiB + 5)
    sizes = [5 * MiB, 5 * MiB, 2 * MiB + 5]
    parts, start = [], 0
    for size in sizes:
        parts.append(hashlib.md5(data[start : start + size]).digest())
        start += size
    etag = hashlib.md5(b"".join(parts)).hexdigest() + "-3"
    expectation = choose({}, None, etag)
    digest = PartsDigest(sizes)
    for i in range(0, len(data), 333_333):
        digest.update(data[i : i + 333_333])
    assert expectation.parts == 3
    assert digest.value() == expectation.expected
    short = PartsDigest(sizes)
    short.update(data[:-1])
    assert short.value() == b""  # a byte missing matches nothing


def test_equal_parts_must_add_up() -> None:
    assert equal_parts(12, 5, 3) == (5, 5, 2)
    assert equal_parts(10, 5, 2) == (5, 5)
    assert equal_parts(10, 5, 3) is None  # the third part would be empty
    assert equal_parts(11, 5, 2) is None  # the last part would be bigger than the first


def test_which_check_a_multipart_upload_gets() -> None:
    """A checksum over the ETag; its kind from the type, the '-N', or the algorithm."""
    etag = "0" * 32 + "-2"
    crc, sha = "AAAAAA==", base64.b64encode(bytes(32)).decode()

    def kind(
        checksums: dict[str, str], checksum_type: str | None, **kw: bool
    ) -> tuple[object, ...]:
        e = choose(checksums, checksum_type, etag, **kw)
        return (e.algorithm, e.composite, e.level.value)

    assert kind({"CRC32": crc}, "COMPOSITE") == ("CRC32", True, "crc32-composite")
    assert kind({"CRC32C": crc + "-2"}, None) == ("CRC32C", True, "crc32c-composite")
    assert kind({"CRC32": crc}, "FULL_OBJECT") == ("CRC32", False, "crc32")
    # moto's HEAD: no type, no '-N': the bytes settle which kind it is.
    assert kind({"CRC32": crc}, None)[:2] == ("CRC32", None)
    # SHA is only ever COMPOSITE on a multipart upload, CRC64NVME only FULL_OBJECT.
    assert kind({"SHA256": sha}, None) == ("SHA256", True, "sha256-composite")
    assert kind({"CRC64NVME": base64.b64encode(bytes(8)).decode()}, None)[:2] == (
        "CRC64NVME",
        False,
    )
    # Not to be trusted: another part count, a short value, a type we do not know.
    for checksums, checksum_type in [
        ({"CRC32": crc + "-3"}, None),
        ({"CRC32": "AAA="}, "COMPOSITE"),
        ({"CRC32": crc}, "SOMETHING_NEW"),
    ]:
        assert choose(checksums, checksum_type, etag).algorithm == "MD5-MULTIPART"
    assert choose({}, None, etag, encrypted_with_key=True).algorithm is None
    assert kind({"CRC32": crc}, "COMPOSITE", encrypted_with_key=True)[0] == "CRC32"
    # One PUT: a composite value makes no sense, and the MD5 ETag is used.
    assert choose({"CRC32": crc + "-2"}, None, "0" * 32).algorithm == "MD5"


# S3 has no FULL_OBJECT SHA for multipart uploads.
@pytest.mark.parametrize(
    ("algorithm", "composite"),
    [
        ("CRC32", True),
        ("CRC32", False),
        ("CRC32C", True),
        ("CRC32C", False),
        ("SHA1", True),
        ("SHA256", True),
    ],
)
def test_settle_from_part_digests(algorithm: str, composite: bool) -> None:
    layout = (5 * MiB, 5 * MiB, 1 * MiB + 3)
    data = pattern(algorithm, sum(layout))
    digests = [digest_of(algorithm, data[s:e]) for s, e in part_spans(layout)]
    expected = digest_of(algorithm, b"".join(digests)) if composite else digest_of(algorithm, data)
    untyped = Expectation(algorithm, expected, 3, None if algorithm.startswith("CRC") else True)
    settled = settle(untyped, digests, layout)
    assert settled.composite is composite
    assert settled.level.value == (
        f"{algorithm.lower()}-composite" if composite else algorithm.lower()
    )
    # the same digests through PartsDigest, fed in odd-sized chunks
    running = PartsDigest(layout, algorithm)
    for i in range(0, len(data), 777_777):
        running.update(data[i : i + 777_777])
    assert check_whole(untyped, running, layout) == settled
    # one part off: a mismatch, whatever the kind
    wrong = [*digests[:1], digest_of(algorithm, b"x"), *digests[2:]]
    with pytest.raises(ChecksumMismatch):
        settle(untyped, wrong, layout)
    with pytest.raises(ChecksumMismatch):
        settle(untyped, None, layout)


def test_part_crcs_combine_from_ranges_within_parts() -> None:
    layout = (6, 6, 3)
    data = bytes(range(15))
    ranges = [(s, s + 3, zlib.crc32(data[s : s + 3])) for s in range(0, 15, 3)]
    assert crcs_by_part("CRC32", ranges, layout) == [
        zlib.crc32(data[s:e]).to_bytes(4, "big") for s, e in part_spans(layout)
    ]
    crossing = [(0, 4, 0), (4, 8, 0), (8, 12, 0), (12, 15, 0)]
    assert crcs_by_part("CRC32", crossing, layout) is None
    assert crcs_by_part("CRC32", ranges[:-1], layout) is None  # a gap
    assert within_parts(3, layout)
    assert not within_parts(4, layout)
    assert cut_within_parts((64 * MiB,) * 3 + (MiB,), 64 * MiB) == 64 * MiB
    assert cut_within_parts((100 * MiB,) * 3, 64 * MiB) == 50 * MiB
    assert cut_within_parts((5 * MiB, 6 * MiB, 1), 64 * MiB) == 0  # unequal parts


def test_damaged_parts_are_named_only_by_part_checksums_that_add_up() -> None:
    layout = (6, 6, 3)
    data = bytes(range(15))
    good = [digest_of("CRC32", data[s:e]) for s, e in part_spans(layout)]
    composite = Expectation("CRC32", digest_of("CRC32", b"".join(good)), 3, True)
    received = [good[0], b"\0\0\0\0", good[2]]
    assert damaged_parts(composite, layout, received, list(good)) == [(6, 12)]
    assert damaged_parts(composite, layout, received, [good[0], None, good[2]]) == []
    # what a store sends that is not each part's own checksum: whole restart
    assert damaged_parts(composite, layout, received, [good[0]] * 3) == []
    assert damaged_parts(composite, layout, received, list(good[:2])) == []


# -- over HTTP -------------------------------------------------------------------------------

LAYOUTS = {
    "5 MiB, uneven last": [5 * MiB, 5 * MiB, 1 * MiB + 17],
    "8 MiB": [8 * MiB, 8 * MiB, 3 * MiB],
    "one part": [7 * MiB],
    "unequal parts": [5 * MiB, 6 * MiB, 5 * MiB, 2 * MiB],
    # Part 1's size cannot be every part's: every part is asked (issue 21, 12).
    "unequal, part 1 smallest": [5 * MiB, 7 * MiB, 6 * MiB, 3 * MiB],
    "small, one part": [300_000],
}


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize("checksum", [None, "CRC32"])
@pytest.mark.parametrize("layout", list(LAYOUTS), ids=list(LAYOUTS))
def test_objects_uploaded_in_parts_are_verified(
    bucket: Bucket, tmp_path: Path, layout: str, checksum: str | None
) -> None:
    sizes = LAYOUTS[layout]
    data = pattern(layout, sum(sizes))
    etag = upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, checksum)
    assert etag.endswith(f"-{len(sizes)}")
    result = fetch(bucket.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    level = "crc32-composite" if checksum else "etag-md5-multipart"
    assert result.verification == {level: 1}


@pytest.mark.usefixtures("request_path")
def test_slowdown_answers_to_part_heads_are_retried(bucket: Bucket, tmp_path: Path) -> None:
    """Learning where an upload's parts end asks HEAD ?partNumber=1: a 503
    there is retried, and the object is still checked by its parts."""
    sizes = LAYOUTS["5 MiB, uneven last"]
    data = pattern("parthead503", sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, None)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(method="HEAD", query_contains="partNumber", status_503=True, times=3))
        result = fetch(proxy.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {"etag-md5-multipart": 1}
    assert proxy.faults[0].applied == 3


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize(
    ("checksum", "checksum_type", "level"),
    [
        ("CRC32C", None, "crc32c-composite"),
        ("SHA1", None, "sha1-composite"),
        ("SHA256", None, "sha256-composite"),
        ("CRC64NVME", None, "crc64nvme"),
        ("CRC32", "FULL_OBJECT", "crc32"),
        ("CRC32C", "FULL_OBJECT", "crc32c"),
    ],
)
@pytest.mark.parametrize("layout", ["5 MiB, uneven last", "unequal parts", "small, one part"])
def test_every_checksum_kind_of_a_multipart_upload_is_verified(
    bucket: Bucket,
    tmp_path: Path,
    layout: str,
    checksum: str,
    checksum_type: str | None,
    level: str,
) -> None:
    """Big ones are fetched in ranges (the checksum's kind from a HEAD, where
    moto leaves the type out), small ones in one GET (typed)."""
    sizes = LAYOUTS[layout]
    data = pattern(layout + checksum, sum(sizes))
    client = bucket.plain_client()
    upload_in_parts(client, bucket.name, "p/w.bin", data, sizes, checksum, checksum_type)
    result = fetch(bucket.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {level: 1}


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize(("checksum", "level"), [("CRC32", "crc32-composite"), (None, "size-only")])
def test_an_sse_kms_upload_in_parts_is_verified_by_its_checksum(
    bucket: Bucket, tmp_path: Path, checksum: str | None, level: str
) -> None:
    """Its ETag is no MD5: a checksum is the only content check, and the one
    case left to size only is such an object uploaded without one."""
    sizes = LAYOUTS["5 MiB, uneven last"]
    data = pattern("kms", sum(sizes))
    client = bucket.plain_client()
    upload_in_parts(
        client, bucket.name, "p/w.bin", data, sizes, checksum, ServerSideEncryption="aws:kms"
    )
    result = fetch(bucket.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {level: 1}
    if checksum is None:  # and the result says why, per object
        (only,) = result.size_only
        assert only.key == "p/w.bin"
        assert "SSE-KMS" in only.reason
    else:
        assert result.size_only == ()


def part_checksums(data: bytes, sizes: list[int], algorithm: str) -> list[str]:
    return [
        base64.b64encode(digest_of(algorithm, data[start:end])).decode()
        for start, end in part_spans(sizes)
    ]


def part_heads_tell_checksums(
    proxy: Any, sizes: list[int], checksums: list[str], name: str
) -> None:
    """moto's part HEADs leave the part's checksum out; S3 sends it in
    checksum mode. The proxy adds what upload_part answered for each part."""
    for number, value in enumerate(checksums, 1):
        proxy.add(
            Fault(
                method="HEAD",
                key_contains="w.bin",
                query_contains=f"partNumber={number}",
                times=10**6,
                add_headers={f"x-amz-checksum-{name.lower()}": value},
            )
        )


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize("algorithm", ["CRC32", "SHA256"])
def test_a_damaged_part_is_refetched_alone(bucket: Bucket, tmp_path: Path, algorithm: str) -> None:
    sizes = [5 * MiB] * 4 + [2 * MiB]
    data = pattern("damaged" + algorithm, sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, algorithm)
    with fault_proxy(bucket.endpoint) as proxy:
        part_heads_tell_checksums(proxy, sizes, part_checksums(data, sizes, algorithm), algorithm)
        flip = proxy.add(Fault(key_contains="w.bin", times=1, flip_at=12345))
        result = fetch(proxy.endpoint, bucket, tmp_path, concurrency=5)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {f"{algorithm.lower()}-composite": 1}
    gets = proxy.requests("GET", "w.bin")
    flipped = [seen.headers.get("range") for seen in gets if seen.fault is flip]
    assert len(flipped) == 1
    # One GET per part, then the flipped part once more: nothing else again.
    assert sorted(seen.headers.get("range") for seen in gets) == sorted(
        [f"bytes={start}-{end - 1}" for start, end in part_spans(sizes)] + flipped
    )


@pytest.mark.usefixtures("request_path")
def test_part_checksums_that_do_not_add_up_restart_the_whole_object(
    bucket: Bucket, tmp_path: Path
) -> None:
    """A store that answers a part HEAD with something other than the part's
    checksum never picks which parts to refetch: the object starts over whole."""
    sizes = [5 * MiB] * 3
    data = pattern("liar", sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, "CRC32")
    with fault_proxy(bucket.endpoint) as proxy:
        part_heads_tell_checksums(proxy, sizes, ["AAAAAA=="] * 3, "CRC32")
        proxy.add(Fault(key_contains="w.bin", times=1, flip_at=777))
        result = fetch(proxy.endpoint, bucket, tmp_path, concurrency=3)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    ranges = [seen.headers.get("range") for seen in proxy.requests("GET", "w.bin")]
    assert len(ranges) == 4  # three parts, then the whole object
    assert ranges[-1] is None


@pytest.mark.usefixtures("request_path")
@pytest.mark.parametrize("layout", ["8 MiB", "unequal parts"])
def test_a_flipped_byte_in_a_part_is_caught_and_never_lands(
    bucket: Bucket, tmp_path: Path, layout: str
) -> None:
    sizes = LAYOUTS[layout]
    data = pattern("flip" + layout, sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, None)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="w.bin", times=1, flip_at=1000))
        once = fetch(proxy.endpoint, bucket, tmp_path / "once")
        proxy.add(Fault(key_contains="w.bin", times=100, flip_at=1000))
        always = fetch(proxy.endpoint, bucket, tmp_path / "always")
    assert tree_of(tmp_path / "once") == {"p/w.bin": data}
    assert once.verification == {"etag-md5-multipart": 1}
    assert not always.ok
    assert "etag-md5-multipart mismatch" in always.problems[0].reason
    assert tree_of(tmp_path / "always") == {}


@pytest.mark.usefixtures("request_path")
def test_a_part_damaged_every_time_fails_the_object_and_never_lands(
    bucket: Bucket, tmp_path: Path
) -> None:
    sizes = [5 * MiB] * 3
    data = pattern("always", sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, "CRC32C")
    with fault_proxy(bucket.endpoint) as proxy:
        part_heads_tell_checksums(proxy, sizes, part_checksums(data, sizes, "CRC32C"), "CRC32C")
        proxy.add(Fault(key_contains="w.bin", times=100, flip_at=4321))
        result = fetch(proxy.endpoint, bucket, tmp_path, concurrency=3)
    assert not result.ok
    assert "crc32c-composite mismatch" in result.problems[0].reason
    assert tree_of(tmp_path) == {}


@pytest.mark.usefixtures("request_path")
def test_ranges_are_cut_at_the_parts_so_each_is_hashed_as_it_streams(
    bucket: Bucket, tmp_path: Path
) -> None:
    sizes = [5 * MiB, 5 * MiB, 5 * MiB, 3 * MiB]
    data = pattern("aligned", sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, None)
    with fault_proxy(bucket.endpoint) as proxy:
        result = fetch(proxy.endpoint, bucket, tmp_path, concurrency=4)
    asked = sorted(s.headers.get("range", "") for s in proxy.requests("GET", "w.bin"))
    bounds = [
        (start, start + size - 1)
        for start, size in zip([0, 5 * MiB, 10 * MiB, 15 * MiB], sizes, strict=True)
    ]
    assert asked == sorted(f"bytes={a}-{b}" for a, b in bounds)
    assert result.verification == {"etag-md5-multipart": 1}
    assert tree_of(tmp_path) == {"p/w.bin": data}
