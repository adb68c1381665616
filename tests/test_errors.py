"""Whole-run failures: a typed exception from the library, one line and an exit code
from the CLI, and nothing on disk damaged."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

import icanhazmodel
from tests.conftest import Bucket, CliResult, run_cli, tree_of


def _fetch(bucket: Bucket, key: str, dest: Path, **kwargs: object) -> icanhazmodel.FetchResult:
    kwargs.setdefault("endpoint_url", bucket.endpoint)
    return asyncio.run(icanhazmodel.fetch(bucket=bucket.name, key=key, dest=dest, **kwargs))


def _cli(bucket: Bucket, *args: str, **kwargs: object) -> CliResult:
    return run_cli("-b", bucket.name, "--endpoint-url", bucket.endpoint, *args, **kwargs)  # type: ignore[arg-type]


def assert_one_line_error(result: CliResult, code: int, *needles: str) -> None:
    assert result.code == code, result
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("icanhazmodel: error: ")
    for needle in needles:
        assert needle in lines[0]


def test_unknown_profile_is_named(bucket: Bucket, tmp_path: Path) -> None:
    with pytest.raises(icanhazmodel.ProfileNotFound, match="'nobody-here'"):
        _fetch(bucket, "p", tmp_path, profile="nobody-here")
    result = _cli(bucket, "-p", "nobody-here", "-k", "p", "-m", str(tmp_path))
    assert_one_line_error(result, 2, "'nobody-here'", "not found")


def test_a_profile_from_the_shared_files_is_used(
    bucket: Bucket, tmp_path: Path, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (aws_env / "credentials").write_text(
        "[kevin-digitalreasoning]\naws_access_key_id = abc\naws_secret_access_key = def\n"
    )
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    bucket.put("p/f", b"data")
    result = _fetch(bucket, "p", tmp_path, profile="kevin-digitalreasoning")
    assert result.ok
    assert tree_of(tmp_path) == {"p/f": b"data"}


def test_no_credentials_says_how_to_give_them(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(icanhazmodel.CredentialsError, match="--profile"):
        _fetch(bucket, "p", tmp_path)
    assert_one_line_error(_cli(bucket, "-k", "p", "-m", str(tmp_path)), 2, "no AWS credentials")


def test_missing_bucket_is_named(bucket: Bucket, tmp_path: Path) -> None:
    ghost = Bucket("no-such-bucket-here", bucket.endpoint, bucket.client)
    with pytest.raises(icanhazmodel.BucketNotFound, match="'no-such-bucket-here'"):
        _fetch(ghost, "p", tmp_path)
    assert_one_line_error(_cli(ghost, "-k", "p", "-m", str(tmp_path)), 2, "no-such-bucket-here")


def test_nothing_under_the_key_is_named(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p-sibling/x", b"x")
    with pytest.raises(icanhazmodel.NothingToFetch, match=r"s3://.*/p/"):
        _fetch(bucket, "p", tmp_path)
    assert_one_line_error(_cli(bucket, "-k", "p", "-m", str(tmp_path)), 1, "nothing at", "/p/")


@contextlib.contextmanager
def _auth_enforced(endpoint: str) -> Iterator[None]:
    """Make the moto server check IAM permissions for a while."""

    def set_count(value: str) -> None:
        request = urllib.request.Request(
            f"{endpoint}/moto-api/reset-auth",
            data=value.encode(),
            method="POST",
            headers={"Content-Type": "application/octet-stream"},
        )
        urllib.request.urlopen(request, timeout=10).read()

    set_count("0")
    try:
        yield
    finally:
        set_count("inf")


def _iam_client(endpoint: str) -> Any:
    """IAM on the moto server, as its admin (works while auth is not enforced)."""
    return boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


def _iam_user(bucket: Bucket, monkeypatch: pytest.MonkeyPatch, *, reader: bool) -> None:
    """Put the credentials of a fresh IAM user in the environment."""
    iam = _iam_client(bucket.endpoint)
    name = f"{'reader' if reader else 'powerless'}-{bucket.name}"
    iam.create_user(UserName=name)
    if reader:
        iam.put_user_policy(
            UserName=name,
            PolicyName="read",
            PolicyDocument=(
                '{"Version": "2012-10-17", "Statement": [{"Effect": "Allow", '
                '"Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}'
            ),
        )
    key = iam.create_access_key(UserName=name)["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])


@pytest.fixture
def powerless_user(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials of an IAM user with no permissions; moto checks every request."""
    _iam_user(bucket, monkeypatch, reader=False)
    with _auth_enforced(bucket.endpoint):
        yield


@pytest.fixture
def reader_user(bucket: Bucket, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Credentials of a user allowed to read; moto checks every signature."""
    _iam_user(bucket, monkeypatch, reader=True)
    with _auth_enforced(bucket.endpoint):
        yield


ODD_KEYS = [
    "p/with space.txt",
    "p/plus+sign",
    "p/per%cent",
    "p/question?mark",
    "p/hash#tag",
    "p/amp&er=sand",
    "p/tilde~and_dash-dot.",
    "p/ünïcödé/ファイル.bin",
    "p/emoji 🤖",
    "p/(brackets)[and]{braces}",
    "p/quote'and\"double",
    "p/semi;colon,comma:colon",
    "p/at@dollar$star*",
]


def test_odd_keys_are_signed_right_on_both_paths(
    bucket: Bucket, tmp_path: Path, request_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in ODD_KEYS:
        bucket.put(key, key.encode())
    _iam_user(bucket, monkeypatch, reader=True)
    with _auth_enforced(bucket.endpoint):
        result = _fetch(bucket, "p", tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {key: key.encode() for key in ODD_KEYS}


def test_a_bad_secret_is_refused_on_both_paths(
    bucket: Bucket, tmp_path: Path, request_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.put("p/f", b"x")
    _iam_user(bucket, monkeypatch, reader=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    with _auth_enforced(bucket.endpoint), pytest.raises(icanhazmodel.CredentialsError):
        _fetch(bucket, "p", tmp_path)
    assert tree_of(tmp_path) == {}


@pytest.mark.usefixtures("powerless_user")
def test_access_denied_names_the_bucket(bucket: Bucket, tmp_path: Path) -> None:
    with pytest.raises(icanhazmodel.AccessDenied, match=bucket.name):
        _fetch(bucket, "p", tmp_path)
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path))
    assert_one_line_error(result, 1, "access denied", bucket.name)


def test_model_dir_under_a_file_cannot_be_created(bucket: Bucket, tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"precious")
    with pytest.raises(icanhazmodel.DestinationError, match="file/ptms"):
        _fetch(bucket, "p", tmp_path / "file" / "ptms")
    result = _cli(bucket, "-k", "p", "-m", str(tmp_path / "file" / "ptms"))
    assert_one_line_error(result, 2, "cannot create model_dir")
    assert (tmp_path / "file").read_bytes() == b"precious"


@contextlib.contextmanager
def read_only_dir(path: Path) -> Iterator[Path]:
    """A directory this process cannot write to, whatever its privileges."""
    path.mkdir()
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield path
        finally:
            path.chmod(0o755)
        return
    # root ignores permission bits, but not a read-only mount.
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(path)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"running as root and cannot mount a read-only tmpfs: {mounted.stderr!r}")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=True)


def test_read_only_model_dir_is_a_clear_error(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/f", b"x")
    with read_only_dir(tmp_path / "ro") as ro:
        with pytest.raises(icanhazmodel.DestinationError, match="not writable"):
            _fetch(bucket, "p", ro)
        assert_one_line_error(_cli(bucket, "-k", "p", "-m", str(ro)), 2, str(ro))


def test_missing_bucket_option_says_both_ways(tmp_path: Path) -> None:
    result = run_cli("-k", "p", "-m", str(tmp_path))
    assert_one_line_error(result, 2, "--bucket", "ICANHAZMODEL_BUCKET")


def test_missing_key_is_a_usage_error(tmp_path: Path) -> None:
    result = run_cli("-b", "bkt")
    assert_one_line_error(result, 2, "--model_key")


@pytest.mark.parametrize(
    ("flags", "culprit"),
    [
        (["--endpoint-url", "notaurl"], "--endpoint-url"),
        (["--endpoint-url", "ftp://x"], "--endpoint-url"),
        (["--region", "not a region!"], "--region"),
        (["--shard", "5"], "--shard"),
        (["--include="], "--include"),
        (["-k", "s3://"], "s3://"),
        (["--version-id", "v1", "-k", "folder/"], "--version-id"),
    ],
)
def test_bad_values_name_their_option(tmp_path: Path, flags: list[str], culprit: str) -> None:
    result = run_cli("-b", "bkt", "-k", "key", "-m", str(tmp_path / "m"), *flags)
    assert_one_line_error(result, 2, culprit)
    assert not (tmp_path / "m").exists()


def test_bad_option_value_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("-b", "bkt", "-k", "p", "-j", "0"), 2, "concurrency")
    assert_one_line_error(run_cli("-b", "bkt/key", "-k", "p"), 2, "bkt/key")
    assert_one_line_error(run_cli("--no-such-flag"), 2, "--no-such-flag")


def test_unreachable_endpoint_is_one_line(tmp_path: Path) -> None:
    # Port 9 on loopback: nothing listens there.
    result = run_cli(
        "-b",
        "bkt",
        "-k",
        "p",
        "--endpoint-url",
        "http://127.0.0.1:9",
        "-m",
        str(tmp_path),
        "--retries",
        "0",
    )
    assert_one_line_error(result, 1, "cannot reach")
