"""Never a wrong byte: checksums, transient faults, restarts, all through a
fault-injecting proxy in front of the real moto server."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import FetchResult
from tests.conftest import Bucket, tree_of
from tests.faultproxy import Fault, FaultProxy, fault_proxy
from tests.sample_tree import pattern

MiB = 1 << 20
BIG = 20 * MiB + 4321  # three ranges at -j 3 (8 MiB parts)


def fetch(endpoint: str, bucket: Bucket, key: str, dest: Path, **kwargs: object) -> FetchResult:
    kwargs.setdefault("concurrency", 3)
    return asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key=key, dest=dest, endpoint_url=endpoint, **kwargs)
    )


@pytest.fixture
def proxy(bucket: Bucket, request_path: str) -> Iterator[FaultProxy]:
    """The fault proxy; every test using it runs over both GET paths."""
    with fault_proxy(bucket.endpoint) as p:
        yield p


def test_gets_take_the_direct_path_unless_turned_off(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, request_path: str
) -> None:
    bucket.put("p/f", b"data")
    fetch(proxy.endpoint, bucket, "p", tmp_path)
    [get] = proxy.requests("GET", "/p/f")
    agent = get.headers.get("user-agent", "")
    if request_path == "direct":
        assert agent.startswith("icanhazmodel/")
    else:
        assert "Botocore" in agent or "aioboto3" in agent


ALGORITHMS = ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("size", [1000, 3 * MiB, BIG], ids=["small", "one-range", "ranges"])
def test_s3_checksums_are_verified(
    bucket: Bucket, tmp_path: Path, algorithm: str, size: int
) -> None:
    data = pattern(f"{algorithm}{size}", size)
    bucket.put("p/f", data, ChecksumAlgorithm=algorithm)
    result = fetch(bucket.endpoint, bucket, "p", tmp_path)
    assert (tmp_path / "p/f").read_bytes() == data
    assert result.verification == {algorithm.lower(): 1}


def test_without_a_checksum_the_md5_etag_is_checked(bucket: Bucket, tmp_path: Path) -> None:
    plain = bucket.plain_client()
    plain.put_object(Bucket=bucket.name, Key="p/small", Body=b"x" * 1000)
    plain.put_object(Bucket=bucket.name, Key="p/big", Body=pattern("big", BIG))
    result = fetch(bucket.endpoint, bucket, "p", tmp_path)
    assert result.verification == {"etag-md5": 2}


def test_no_verify_skips_content_hashing(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/f", b"abc", ChecksumAlgorithm="SHA256")
    result = fetch(bucket.endpoint, bucket, "p", tmp_path, verify=False)
    assert result.verification == {"size-only": 1}
    assert result.size_only == ()  # asked for: not listed as a shortfall


@pytest.mark.parametrize("size", [1000, 3 * MiB, BIG], ids=["small", "one-range", "ranges"])
def test_a_flipped_byte_never_lands_and_the_object_starts_over(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, size: int
) -> None:
    data = pattern("flip", size)
    bucket.put("p/f", data)
    proxy.add(Fault(key_contains="p/f", flip_at=size // 2 if size < BIG else 100))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    assert (tmp_path / "p/f").read_bytes() == data
    assert result.ok
    assert len(proxy.requests("HEAD", "p/f")) >= 1  # the fresh start asks again


@pytest.mark.parametrize("size", [1000, BIG], ids=["small", "ranges"])
def test_corruption_every_time_is_reported_and_never_lands(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, size: int
) -> None:
    bucket.put("p/f", pattern("flip", size))
    bucket.put("p/g", b"fine")
    (tmp_path / "p").mkdir()
    (tmp_path / "p/f").write_bytes(b"old good file")
    proxy.add(Fault(key_contains="p/f", flip_at=10, times=100))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    [failure] = result.failures
    assert failure.key == "p/f"
    assert "mismatch" in failure.reason
    assert tree_of(tmp_path) == {"p/f": b"old good file", "p/g": b"fine"}


# A fresh interpreter, as a user's: the test process has awscrt loaded.
FRESH_FETCH = """
import asyncio, sys, icanhazmodel
bucket, dest, endpoint = sys.argv[1:]
result = asyncio.run(icanhazmodel.fetch(
    bucket=bucket, key="p", dest=dest, endpoint_url=endpoint, processes=1))
print(sorted(result.verification.items()))
print([(f.key, f.reason) for f in result.failures])
print("awscrt.checksums" in sys.modules)
"""


def test_a_run_of_a_few_small_files_checks_crcs_in_python_and_still_catches_a_flip(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/a.yaml", pattern("a", 3000), ChecksumAlgorithm="CRC64NVME")
    bucket.put("p/b.json", pattern("b", 900), ChecksumAlgorithm="CRC32C")
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/a.yaml", flip_at=1500, times=100))
        done = subprocess.run(
            [sys.executable, "-c", FRESH_FETCH, bucket.name, str(tmp_path), proxy.endpoint],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    verification, failures, crt_loaded = done.stdout.splitlines()
    assert crt_loaded == "False"  # both CRCs were computed in Python
    assert "('crc32c', 1)" in verification
    assert "p/a.yaml" in failures
    assert "mismatch" in failures
    assert tree_of(tmp_path) == {"p/b.json": pattern("b", 900)}


@pytest.mark.parametrize("size", [300_000, 3 * MiB, BIG], ids=["small", "one-range", "ranges"])
def test_a_broken_stream_resumes_where_it_stopped(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, size: int
) -> None:
    data = pattern("cut", size)
    bucket.put("p/f", data)
    proxy.add(Fault(key_contains="p/f", cut_after=100_000))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    assert (tmp_path / "p/f").read_bytes() == data
    assert result.ok
    resumed = [
        s
        for s in proxy.requests("GET", "p/f")
        if s.headers.get("range", "").startswith("bytes=")
        and s.fault is None
        and int(s.headers["range"][6:].split("-")[0]) % (8 * MiB) != 0
    ]
    assert resumed, [s.headers.get("range") for s in proxy.requests("GET", "p/f")]
    assert all(s.headers.get("if-match") for s in resumed)


def test_a_stalled_transfer_is_dropped_and_retried(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path
) -> None:
    data = pattern("stall", 3 * MiB)
    bucket.put("p/f", data)
    proxy.add(Fault(key_contains="p/f", stall_after=1000, stall_seconds=5))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path, stall_timeout=1.0)
    assert (tmp_path / "p/f").read_bytes() == data
    assert result.ok


def test_slowdown_answers_are_retried(bucket: Bucket, proxy: FaultProxy, tmp_path: Path) -> None:
    bucket.put("p/f", b"data")
    proxy.add(Fault(key_contains="p/f", status_503=True, times=3))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    assert (tmp_path / "p/f").read_bytes() == b"data"
    assert result.ok


@pytest.mark.parametrize(
    ("size", "flip", "failing_heads"),
    [
        # An object of several ranges asks HEAD what to check it against.
        (BIG, False, 3),
        # A damaged byte starts a small object over, which begins with a HEAD.
        (4000, True, 2),
    ],
    ids=["ranged", "fresh-start"],
)
def test_slowdown_answers_to_a_head_are_retried(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, size: int, flip: bool, failing_heads: int
) -> None:
    """A 503 on a HEAD is retried as a GET's is, not the object's end."""
    data = pattern(f"head503-{size}", size)
    bucket.put("p/f", data)
    if flip:
        proxy.add(Fault(key_contains="p/f", flip_at=100, times=1))
    proxy.add(Fault(method="HEAD", key_contains="p/f", status_503=True, times=failing_heads))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    assert result.ok, result.problems
    assert (tmp_path / "p/f").read_bytes() == data
    assert len(proxy.requests("HEAD", "p/f")) >= failing_heads + 1


def test_an_object_overwritten_mid_download_is_fetched_again_whole(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path
) -> None:
    old, new = pattern("old", BIG), pattern("new", BIG + 7)
    bucket.put("p/f", old)
    proxy.add(Fault(key_contains="p/f", cut_after=MiB, before_cut=lambda: bucket.put("p/f", new)))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path)
    assert (tmp_path / "p/f").read_bytes() == new  # never a splice of old and new
    assert result.ok


def test_an_object_that_keeps_failing_is_named_and_the_rest_lands(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path
) -> None:
    bucket.put("p/bad", pattern("bad", 500_000))
    bucket.put("p/good", b"good")
    proxy.add(Fault(key_contains="p/bad", cut_after=1000, times=100))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path, retries=2)
    [failure] = result.failures
    assert failure.key == "p/bad"
    assert "broke 3 times" in failure.reason
    assert tree_of(tmp_path) == {"p/good": b"good"}


@pytest.mark.parametrize("verify", [True, False], ids=["verify", "no-verify"])
def test_a_server_that_ignores_range_cannot_put_wrong_bytes_on_disk(
    bucket: Bucket, proxy: FaultProxy, tmp_path: Path, verify: bool
) -> None:
    data = pattern("range", BIG)
    bucket.put("p/big", data)
    proxy.add(Fault(key_contains="p/big", drop_range=True, times=1000))
    result = fetch(proxy.endpoint, bucket, "p", tmp_path, verify=verify)
    # The ranged answers are refused; the object starts over as one plain GET.
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/big": data}
    assert any("range" not in s.headers for s in proxy.requests("GET", "p/big"))
