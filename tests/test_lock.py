"""Lock files (``--lock``, ``--from-lock``, ``read_lock``) against moto over HTTP:
a run writes what it stands for, and a later run fetches exactly that, even
after the objects were overwritten or deleted, or fails naming each one it
cannot fetch as locked."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

import icanhazmodel
from icanhazmodel import Lock, LockError, read_lock
from tests.conftest import Bucket, CliResult, run_cli, tree_of

FIRST = {"m/config.yaml": b"layers: 2\n", "m/weights.bin": b"w" * 300_000, "m/vocab.txt": b"a\nb\n"}


def fetch(store: Bucket, dest: Path, **kwargs: Any) -> icanhazmodel.FetchResult:
    return asyncio.run(icanhazmodel.fetch(dest=dest, endpoint_url=store.endpoint, **kwargs))


def cli(bucket: Bucket, *args: str) -> CliResult:
    return run_cli("--endpoint-url", bucket.endpoint, *args)


def versioned(bucket: Bucket) -> None:
    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )


def test_a_lock_names_every_file_as_s3_has_it(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    result = fetch(bucket, tmp_path / "d", bucket=bucket.name, key="m", lock=lock_path)
    assert result.ok, result.problems
    lock = read_lock(lock_path)
    assert (lock.bucket, lock.key, lock.prefix) == (bucket.name, "m", "m/")
    assert lock.endpoint_url == bucket.endpoint
    assert [f.key for f in lock.files] == sorted(FIRST)
    for entry in lock.files:
        head = bucket.client.head_object(Bucket=bucket.name, Key=entry.key)
        assert entry.path == entry.key
        assert entry.size == len(FIRST[entry.key])
        assert entry.etag == head["ETag"].strip('"')
        assert entry.version_id is None  # the bucket keeps no versions
        assert entry.verification in {v.value for v in icanhazmodel.Verification}
        assert entry.verification != icanhazmodel.Verification.SIZE_ONLY.value
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".model.lock")] == []


def test_from_lock_fetches_the_old_bytes_after_an_overwrite_and_a_delete(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    versioned(bucket)
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    assert fetch(bucket, tmp_path / "first", bucket=bucket.name, key="m", lock=lock_path).ok
    assert all(f.version_id for f in read_lock(lock_path).files)
    bucket.put("m/weights.bin", b"NEW" * 1000)
    bucket.delete("m/vocab.txt")
    bucket.put("m/added.txt", b"not in the lock")
    again = cli(bucket, "--from-lock", str(lock_path), "-m", str(tmp_path / "again"))
    assert again.code == 0, again.stderr
    assert tree_of(tmp_path / "again") == FIRST


def test_from_lock_fails_naming_an_object_that_changed_where_versions_are_not_kept(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    assert fetch(bucket, tmp_path / "first", bucket=bucket.name, key="m", lock=lock_path).ok
    bucket.put("m/weights.bin", b"NEW" * 1000)
    bucket.delete("m/vocab.txt")
    result = fetch(bucket, tmp_path / "again", from_lock=lock_path)
    failed = {p.key: p.reason for p in result.failures}
    assert set(failed) == {"m/weights.bin", "m/vocab.txt"}
    assert failed["m/weights.bin"].startswith("no longer in S3 as the lock has it: its ETag is now")
    assert failed["m/vocab.txt"] == "no longer in S3 as the lock has it: it was deleted"
    # Never the new bytes in place of the locked ones: only what matched landed.
    assert tree_of(tmp_path / "again") == {"m/config.yaml": FIRST["m/config.yaml"]}


def test_from_lock_fails_naming_a_version_that_is_gone(bucket: Bucket, tmp_path: Path) -> None:
    versioned(bucket)
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    assert fetch(bucket, tmp_path / "first", bucket=bucket.name, key="m", lock=lock_path).ok
    gone = next(f for f in read_lock(lock_path).files if f.key == "m/vocab.txt")
    bucket.client.delete_object(Bucket=bucket.name, Key=gone.key, VersionId=gone.version_id)
    done = cli(bucket, "--from-lock", str(lock_path), "-m", str(tmp_path / "again"))
    assert done.code != 0
    reason = f"no longer in S3 as the lock has it: its version {gone.version_id} was deleted"
    assert f"failed: 'm/vocab.txt': {reason}" in done.stderr
    assert set(tree_of(tmp_path / "again")) == {"m/config.yaml", "m/weights.bin"}


def test_files_on_disk_that_match_the_lock_are_skipped(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    dest = tmp_path / "d"
    assert fetch(bucket, dest, bucket=bucket.name, key="m", lock=lock_path).ok
    again = fetch(bucket, dest, from_lock=read_lock(lock_path), lock=tmp_path / "again.lock")
    assert again.ok, again.problems
    assert (again.skipped, again.downloaded) == (3, 0)

    # The rerun's lock stands for the same files, checked the same way (S3's
    # checksum values are only known to the run that fetched the bytes).
    def same(lock: Lock) -> list[tuple[object, ...]]:
        return [(f.key, f.size, f.etag, f.version_id, f.verification) for f in lock.files]

    assert same(read_lock(tmp_path / "again.lock")) == same(read_lock(lock_path))


def test_a_dry_run_writes_the_lock_of_what_it_would_fetch(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / "plan.lock"
    done = cli(bucket, "-b", bucket.name, "-k", "m", "-m", str(tmp_path / "d"), "--dry-run",
               "--lock", str(lock_path))  # fmt: skip
    assert done.code == 0, done.stderr
    assert not (tmp_path / "d" / "m").exists()
    lock = read_lock(lock_path)
    assert [(f.key, f.size, f.verification) for f in lock.files] == [
        (key, len(FIRST[key]), None) for key in sorted(FIRST)
    ]


def test_a_run_that_did_not_fetch_everything_writes_no_lock(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many({"m/a": b"a", "m/b": b"b"})
    dest = tmp_path / "d"
    (dest / "m" / "b").mkdir(parents=True)  # a folder where a file must go: refused
    done = cli(bucket, "-b", bucket.name, "-k", "m", "-m", str(dest), "--lock",
               str(tmp_path / "x.lock"))  # fmt: skip
    assert done.code != 0
    assert "was not written" in done.stderr
    assert not (tmp_path / "x.lock").exists()


def test_filters_and_shards_are_kept_in_the_lock(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    result = fetch(
        bucket, tmp_path / "d", bucket=bucket.name, key="m", include=["*.txt", "*.yaml"],
        lock=lock_path,
    )  # fmt: skip
    assert result.ok
    lock = read_lock(lock_path)
    assert lock.include == ("*.txt", "*.yaml")
    assert [f.key for f in lock.files] == ["m/config.yaml", "m/vocab.txt"]
    document = json.loads(lock_path.read_text())
    assert document["icanhazmodel_lock"] == 1
    assert document["shard"] is None


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("not json", "is not JSON"),
        ('{"files": []}', "no 'icanhazmodel_lock' field"),
        ('{"icanhazmodel_lock": 9, "files": []}', "format 9"),
        (
            '{"icanhazmodel_lock": 1, "bucket": "b", "key": "", "prefix": "", "created": "",'
            ' "files": [{"key": "k", "path": "k", "size": -1, "etag": "e"}]}',
            "size -1",
        ),
    ],
)
def test_a_bad_lock_is_one_clear_line(bucket: Bucket, tmp_path: Path, text: str, says: str) -> None:
    lock_path = tmp_path / "bad.lock"
    lock_path.write_text(text)
    done = cli(bucket, "--from-lock", str(lock_path), "-m", str(tmp_path / "d"))
    assert done.code == 2
    [line] = done.stderr.strip().splitlines()
    assert str(lock_path) in line
    assert says in line
    with pytest.raises(LockError, match=says):
        read_lock(lock_path)


def test_a_missing_lock_and_a_disagreeing_bucket_are_usage_errors(
    bucket: Bucket, tmp_path: Path
) -> None:
    done = cli(bucket, "--from-lock", str(tmp_path / "none.lock"), "-m", str(tmp_path / "d"))
    assert done.code == 2
    assert "cannot read the lock" in done.stderr
    bucket.put_many(FIRST)
    lock_path = tmp_path / "model.lock"
    assert fetch(bucket, tmp_path / "d", bucket=bucket.name, key="m", lock=lock_path).ok
    other = cli(bucket, "--from-lock", str(lock_path), "-b", "other-bucket", "-m", str(tmp_path))
    assert other.code == 2
    assert "is not the lock's bucket" in other.stderr
    assert isinstance(read_lock(lock_path), Lock)


@pytest.mark.parametrize("where", ["no-such-folder/x.lock", "."])
def test_a_lock_that_cannot_be_written_is_said_before_anything_is_fetched(
    bucket: Bucket, tmp_path: Path, where: str
) -> None:
    bucket.put_many(FIRST)
    lock_path = tmp_path / where
    done = cli(bucket, "-b", bucket.name, "-k", "m", "-m", str(tmp_path / "d"), "--lock",
               str(lock_path))  # fmt: skip
    assert done.code == 2
    [line] = done.stderr.strip().splitlines()
    says = "there is no folder" if where.startswith("no-such") else "is a folder"
    assert line.startswith(f"icanhazmodel: error: --lock '{lock_path}'")
    assert says in line
    assert not (tmp_path / "d").exists()


def test_the_library_names_its_own_keywords_in_lock_errors(bucket: Bucket, tmp_path: Path) -> None:
    with pytest.raises(icanhazmodel.UsageError, match=r"^lock= '.*': there is no folder"):
        fetch(bucket, tmp_path / "d", bucket=bucket.name, key="m", lock=tmp_path / "no/x.lock")
    lock_path = tmp_path / "model.lock"
    lock_path.write_text(
        json.dumps(
            {
                "icanhazmodel_lock": 1,
                "bucket": "b",
                "key": "m",
                "prefix": "m/",
                "created": "",
                "files": [],
            }
        )
    )
    with pytest.raises(icanhazmodel.UsageError, match=r"^bucket= 'other' is not the lock's"):
        fetch(bucket, tmp_path / "d", bucket="other", from_lock=lock_path)
