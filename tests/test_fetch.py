"""The library API against a real S3 endpoint (moto's server over HTTP)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import FetchResult, Status
from tests.conftest import Bucket, tree_of
from tests.sample_tree import MODEL_KEY, decoys, everything, markers, model_tree

SCALE = 1 / 16  # the biggest sample file is 16 MiB: several ranges at -j 4


def _fetch(bucket: Bucket, key: str, dest: Path, **kwargs: object) -> FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name, key=key, dest=dest, endpoint_url=bucket.endpoint, **kwargs
        )
    )


@pytest.fixture
def sample_bucket(bucket: Bucket) -> Bucket:
    bucket.put_all(everything(SCALE))
    return bucket


def expected_tree(scale: float = SCALE) -> dict[str, bytes]:
    return {obj.key: obj.data() for obj in model_tree(scale)}


def test_the_seed_tree_lands_at_the_same_paths_as_its_keys(
    sample_bucket: Bucket, tmp_path: Path
) -> None:
    result = _fetch(sample_bucket, MODEL_KEY, tmp_path / "ptms", concurrency=4)

    assert tree_of(tmp_path / "ptms") == expected_tree()
    files = len(model_tree(SCALE))
    assert result.downloaded == files
    assert result.folders == len(markers())
    assert result.bytes_downloaded == sum(len(d) for d in expected_tree().values())
    assert (result.refused, result.failed, result.skipped) == (0, 0, 0)
    assert result.ok
    # Markers became directories, even the empty one.
    assert (tmp_path / "ptms" / MODEL_KEY / "checkpoints").is_dir()


def test_files_get_the_objects_last_modified_time(sample_bucket: Bucket, tmp_path: Path) -> None:
    _fetch(sample_bucket, MODEL_KEY, tmp_path)
    key = model_tree(SCALE)[0].key
    head = sample_bucket.client.head_object(Bucket=sample_bucket.name, Key=key)
    assert (tmp_path / key).stat().st_mtime == head["LastModified"].timestamp()


def test_sibling_decoys_are_never_pulled(sample_bucket: Bucket, tmp_path: Path) -> None:
    _fetch(sample_bucket, MODEL_KEY, tmp_path)
    on_disk = set(tree_of(tmp_path))
    for decoy in decoys():
        assert decoy.key not in on_disk
    assert not (tmp_path / "conduct/secrecy/en/version_1.20").exists()


def test_an_exact_key_fetches_that_one_object(sample_bucket: Bucket, tmp_path: Path) -> None:
    key = f"{MODEL_KEY}/models/ft/cs-secrecy-avg-pool.cognition.spec.yaml"
    result = _fetch(sample_bucket, key, tmp_path)
    assert tree_of(tmp_path) == {key: expected_tree()[key]}
    assert result.downloaded == 1


def test_a_trailing_slash_means_the_directory(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("m/a", b"file a")
    bucket.put("m/a/b", b"under a")
    result = _fetch(bucket, "m/a/", tmp_path)
    assert tree_of(tmp_path) == {"m/a/b": b"under a"}
    assert result.ok


def test_an_exact_key_wins_over_the_prefix_of_the_same_name(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("m/a", b"file a")
    bucket.put("m/a/b", b"under a")
    _fetch(bucket, "m/a", tmp_path)
    assert tree_of(tmp_path) == {"m/a": b"file a"}


UNSAFE = {
    "p/../x": "'..' path segment",
    "p/../../etc/passwd": "'..' path segment",
    "p/./y": "'.' path segment",
    "p//z": "empty path segment",
    "p/back\\slash": "backslash",
    "p/nul\x00x": "control character",
    "p/ctl\x01x": "control character",
    "p/" + "x" * 300: "longer than 255 bytes",
    "p/not-empty-marker/": "not an empty folder marker",
}


def test_unsafe_keys_are_refused_and_the_rest_lands(bucket: Bucket, tmp_path: Path) -> None:
    for key in UNSAFE:
        bucket.put(key, b"evil")
    bucket.put("p/ok", b"good")
    dest = tmp_path / "models"
    result = _fetch(bucket, "p", dest)

    assert tree_of(dest) == {"p/ok": b"good"}
    assert sorted(os.listdir(tmp_path)) == ["models"]  # nothing written beside it
    assert result.downloaded == 1
    assert result.refused == len(UNSAFE)
    assert not result.ok
    reasons = {r.key: r.reason for r in result.refusals}
    for key, why in UNSAFE.items():
        assert why in reasons[key]


def test_a_file_that_is_also_a_prefix_is_reported_not_crashed(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/a", b"file")
    bucket.put("p/a/b", b"nested")
    bucket.put("p/a/c/", b"")
    bucket.put("p/z", b"other")
    result = _fetch(bucket, "p", tmp_path)

    assert tree_of(tmp_path) == {"p/a": b"file", "p/z": b"other"}
    assert {r.key for r in result.refusals} == {"p/a/b", "p/a/c/"}
    assert all("p/a" in r.reason for r in result.refusals)


def test_a_local_file_where_a_directory_must_go_fails_that_object(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/d/x", b"x")
    bucket.put("p/y", b"y")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "d").write_bytes(b"precious")
    result = _fetch(bucket, "p", tmp_path)

    assert (tmp_path / "p" / "d").read_bytes() == b"precious"
    assert (tmp_path / "p" / "y").read_bytes() == b"y"
    [failure] = result.failures
    assert failure.key == "p/d/x"
    assert "where a directory must go" in failure.reason


def test_a_local_directory_where_a_file_must_go_fails_that_object(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/f", b"file")
    (tmp_path / "p" / "f").mkdir(parents=True)
    (tmp_path / "p" / "f" / "keep").write_bytes(b"keep")
    result = _fetch(bucket, "p", tmp_path)

    assert (tmp_path / "p" / "f" / "keep").read_bytes() == b"keep"
    [failure] = result.failures
    assert "is a directory where a file must go" in failure.reason
    assert tree_of(tmp_path) == {"p/f/keep": b"keep"}  # no temp file left


def test_a_symlink_out_of_the_model_dir_is_not_followed(bucket: Bucket, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    dest = tmp_path / "ptms"
    (dest / "p").mkdir(parents=True)
    (dest / "p" / "link").symlink_to(outside)
    bucket.put("p/link/sub/file", b"escape attempt")
    bucket.put("p/ok", b"ok")
    result = _fetch(bucket, "p", dest)

    assert list(outside.iterdir()) == []
    assert (dest / "p" / "ok").read_bytes() == b"ok"
    [failure] = result.failures
    assert "is a symlink" in failure.reason


def test_an_existing_good_file_is_replaced_atomically(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/f", b"new contents")
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "f").write_bytes(b"old")
    _fetch(bucket, "p", tmp_path)
    assert tree_of(tmp_path) == {"p/f": b"new contents"}


def test_big_objects_arrive_whole_through_ranges(bucket: Bucket, tmp_path: Path) -> None:
    from tests.sample_tree import pattern

    big = pattern("big", 20 * (1 << 20) + 12345)  # three 8 MiB ranges, last one short
    bucket.put("p/big.bin", big)
    result = _fetch(bucket, "p", tmp_path, concurrency=3)
    assert (tmp_path / "p" / "big.bin").read_bytes() == big
    assert result.bytes_downloaded == len(big)


def test_zero_byte_files_land(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/empty", b"")
    result = _fetch(bucket, "p", tmp_path)
    assert tree_of(tmp_path) == {"p/empty": b""}
    assert result.ok


def test_many_objects_across_listing_pages(bucket: Bucket, tmp_path: Path) -> None:
    expected = {f"p/{i // 100:02d}/{i:05d}.txt": f"object {i}\n".encode() for i in range(1205)}
    bucket.put_many(expected)
    result = _fetch(bucket, "p", tmp_path, concurrency=16)
    assert tree_of(tmp_path) == expected
    assert result.downloaded == len(expected)


@pytest.mark.anyio
async def test_fetch_can_be_awaited_inside_a_running_loop(
    sample_bucket: Bucket, tmp_path: Path
) -> None:
    result = await icanhazmodel.fetch(
        bucket=sample_bucket.name,
        key=MODEL_KEY,
        dest=tmp_path,
        endpoint_url=sample_bucket.endpoint,
    )
    assert isinstance(result, FetchResult)
    assert tree_of(tmp_path) == expected_tree()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_result_names_refused_objects_with_status(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/a\\b", b"x")
    result = _fetch(bucket, "p", tmp_path)
    [report] = result.problems
    assert report.status is Status.REFUSED
    assert report.key == "p/a\\b"
