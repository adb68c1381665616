"""The download path against two real S3 servers, moto and SeaweedFS, on both
GET paths (issue 27): the same answers wherever a store's answers matter.

moto is a model of S3 in Python; SeaweedFS a production store that answers
as AWS, MinIO and Ceph do where moto does not (a part HEAD is 206 with its
Content-Range). Each scenario runs on each server and each path; the
differential test holds the two paths to the same files, the same check of
each file, the same summary and the same exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel._output import summary_line
from tests.conftest import Bucket, run_cli, tree_of
from tests.sample_tree import pattern
from tests.test_errors import _auth_enforced, _iam_user
from tests.test_multipart import upload_in_parts

MiB = 1 << 20
FILES = {
    "p/a.txt": b"hello\n",
    "p/models/w.bin": pattern("stores-w", 300_000),
    "p/models/empty": b"",
    "p/data/train.jsonl": pattern("stores-train", 1_500_000),
}


def fetch(bucket: Bucket, key: str, dest: Path, **kwargs: object) -> icanhazmodel.FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key=key,
            dest=dest,
            endpoint_url=bucket.endpoint,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def filled(bucket: Bucket, files: dict[str, bytes] = FILES) -> dict[str, bytes]:
    for key, data in files.items():
        bucket.put(key, data)
    return files


def levels(dest: Path) -> dict[str, str]:
    """Each file's verification level, as the manifest recorded it."""
    with contextlib.closing(sqlite3.connect(dest / ".icanhazmodel" / "manifest.sqlite3")) as db:
        return dict(db.execute("SELECT key, verification FROM files"))


@pytest.fixture
def store(store_bucket: Bucket, request_path: str) -> Bucket:
    """A fresh bucket on moto and on SeaweedFS, fetched on both GET paths."""
    return store_bucket


def test_a_prefix_is_mirrored(store: Bucket, tmp_path: Path) -> None:
    files = filled(store)
    store.put("p-decoy/x", b"not under p/")
    result = fetch(store, "p", tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == files
    assert set(levels(tmp_path)) == set(files)


def test_an_exact_key_is_fetched_alone(store: Bucket, tmp_path: Path) -> None:
    filled(store)
    result = fetch(store, "p/models/w.bin", tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/models/w.bin": FILES["p/models/w.bin"]}


@pytest.mark.parametrize(
    "sizes",
    [[5 * MiB] * 3, [5 * MiB, 5 * MiB, 1 * MiB + 17], [5 * MiB, 7 * MiB, 6 * MiB, 3 * MiB]],
    ids=["equal parts", "unequal last part", "unequal parts"],
)
def test_a_multipart_upload_is_checked_by_its_parts(
    store: Bucket, tmp_path: Path, sizes: list[int]
) -> None:
    data = pattern(f"stores-mp-{len(sizes)}-{sizes[-1]}", sum(sizes))
    upload_in_parts(store.plain_client(), store.name, "p/mp.bin", data, sizes, None)
    result = fetch(store, "p", tmp_path, concurrency=4)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/mp.bin": data}
    assert result.verification == {"etag-md5-multipart": 1}
    assert result.size_only == ()


@pytest.mark.parametrize("algorithm", ["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"])
@pytest.mark.parametrize("size", [1000, 2 * MiB + 3], ids=["one GET", "ranged"])
def test_each_uploaded_checksum_is_what_checks_the_file(
    store: Bucket, tmp_path: Path, algorithm: str, size: int
) -> None:
    data = pattern(f"stores-{algorithm}-{size}", size)
    store.client.put_object(
        Bucket=store.name, Key="p/c.bin", Body=data, ChecksumAlgorithm=algorithm
    )
    result = fetch(store, "p", tmp_path, concurrency=3)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/c.bin": data}
    assert result.verification == {algorithm.lower(): 1}


def test_a_rerun_skips_and_a_changed_object_is_fetched_again(store: Bucket, tmp_path: Path) -> None:
    files = filled(store)
    assert fetch(store, "p", tmp_path).downloaded == len(files)
    again = fetch(store, "p", tmp_path)
    assert (again.downloaded, again.skipped) == (0, len(files))
    store.put("p/a.txt", b"changed in S3\n")
    third = fetch(store, "p", tmp_path)
    assert (third.downloaded, third.skipped) == (1, len(files) - 1)
    assert (tmp_path / "p/a.txt").read_bytes() == b"changed in S3\n"


@contextlib.contextmanager
def wrong_secret(store: Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A secret the store refuses: SeaweedFS checks every signature; moto
    does once told to, for an IAM user's keys."""
    if store.server == "moto":
        _iam_user(store, monkeypatch, reader=True)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
        with _auth_enforced(store.endpoint):
            yield
        return
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    yield


def test_a_wrong_secret_is_one_line_and_writes_nothing(
    store: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    filled(store)
    with wrong_secret(store, monkeypatch):
        with pytest.raises(icanhazmodel.CredentialsError):
            fetch(store, "p", tmp_path / "lib")
        result = run_cli(
            "--endpoint-url",
            store.endpoint,
            "-b",
            store.name,
            "-k",
            "p",
            "-m",
            str(tmp_path / "cli"),
        )
    assert result.code == 2, result
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not (tmp_path / "lib").exists()
    assert not (tmp_path / "cli").exists()


def test_a_missing_bucket_and_a_missing_prefix_are_one_line_each(
    store: Bucket, tmp_path: Path
) -> None:
    filled(store)
    no_bucket = run_cli(
        "--endpoint-url", store.endpoint, "-b", store.name + "-gone", "-k", "p", "-m", str(tmp_path)
    )
    assert no_bucket.code == 2, no_bucket
    assert f"bucket '{store.name}-gone' does not exist" in no_bucket.stderr
    no_prefix = run_cli(
        "--endpoint-url",
        store.endpoint,
        "-b",
        store.name,
        "-k",
        "nothing/here",
        "-m",
        str(tmp_path),
    )
    assert no_prefix.code == 1, no_prefix
    assert "nothing at s3://" in no_prefix.stderr
    for result in (no_bucket, no_prefix):
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert "Traceback" not in result.stderr
    assert not tmp_path.joinpath("ptms").exists()
    assert tree_of(tmp_path) == {}


def test_worker_processes_fetch_the_same_files(store: Bucket, tmp_path: Path) -> None:
    files = filled(store)
    data = pattern("stores-mp-processes", 11 * MiB + 1)
    upload_in_parts(
        store.plain_client(), store.name, "p/mp.bin", data, [5 * MiB] * 2 + [MiB + 1], None
    )
    result = fetch(store, "p", tmp_path, processes=2)
    assert result.ok, result.problems
    # Worker processes fetch on the direct path; botocore's keeps one process.
    assert result.processes == (2 if os.environ.get("ICANHAZMODEL_DIRECT_GETS") != "0" else 1)
    assert tree_of(tmp_path) == files | {"p/mp.bin": data}
    assert levels(tmp_path)["p/mp.bin"] == "etag-md5-multipart"


# -- the two paths agree ---------------------------------------------------------------------


def test_both_paths_give_the_same_answer_on_each_store(
    store_bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = filled(store_bucket)
    data = pattern("stores-diff-mp", 12 * MiB + 5)
    upload_in_parts(
        store_bucket.plain_client(),
        store_bucket.name,
        "p/mp.bin",
        data,
        [5 * MiB] * 2 + [2 * MiB + 5],
        None,
    )
    for algorithm in ("CRC32C", "SHA256"):
        store_bucket.client.put_object(
            Bucket=store_bucket.name,
            Key=f"p/{algorithm}.bin",
            Body=b"z" * 5000,
            ChecksumAlgorithm=algorithm,
        )
    answers = {}
    for path in ("direct", "botocore"):
        monkeypatch.setenv("ICANHAZMODEL_DIRECT_GETS", "1" if path == "direct" else "0")
        dest = tmp_path / path
        cli = run_cli(
            "--endpoint-url",
            store_bucket.endpoint,
            "-b",
            store_bucket.name,
            "-k",
            "p",
            "-m",
            str(dest),
        )
        result = fetch(store_bucket, "p", dest, force=True)
        answers[path] = (
            tree_of(dest),
            levels(dest),
            cli.code,
            cli.stderr.splitlines()[1:],  # the verification line, and any problem
            summary_line(result).split(" in ")[0],
        )
    assert answers["direct"] == answers["botocore"]
    assert set(answers["direct"][0]) == set(files) | {"p/mp.bin", "p/CRC32C.bin", "p/SHA256.bin"}
    assert answers["direct"][1]["p/mp.bin"] == "etag-md5-multipart"
