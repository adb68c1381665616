"""Objects uploaded in parts are checked by their multipart ETag: the MD5 of
each part's MD5, with the parts' boundaries learned from S3 (issue 10)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import pytest

import icanhazmodel
from icanhazmodel import FetchResult
from icanhazmodel._checksums import PartsDigest, choose, equal_parts
from tests.conftest import Bucket, tree_of
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern

MiB = 1 << 20


def upload_in_parts(
    client: Any, bucket: str, key: str, data: bytes, sizes: list[int], checksum: str | None
) -> str:
    extra = {"ChecksumAlgorithm": checksum} if checksum else {}
    upload = client.create_multipart_upload(Bucket=bucket, Key=key, **extra)
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


def test_a_checksum_of_unknown_type_on_a_multipart_upload_is_not_trusted() -> None:
    """moto sends a COMPOSITE CRC32 without its '-N' and without a type."""
    etag = "0" * 32 + "-2"
    assert choose({"CRC32": "AAAAAA=="}, None, etag).algorithm == "MD5-MULTIPART"
    assert choose({"CRC32": "AAAAAA=="}, "FULL_OBJECT", etag).algorithm == "CRC32"
    assert choose({}, None, etag, encrypted_with_key=True).algorithm is None


# -- over HTTP -------------------------------------------------------------------------------

LAYOUTS = {
    "5 MiB, uneven last": [5 * MiB, 5 * MiB, 1 * MiB + 17],
    "8 MiB": [8 * MiB, 8 * MiB, 3 * MiB],
    "one part": [7 * MiB],
    "unequal parts": [5 * MiB, 6 * MiB, 5 * MiB, 2 * MiB],
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
    assert result.verification == {"etag-md5-multipart": 1}


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
