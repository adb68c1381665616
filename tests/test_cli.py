"""The real `icanhazmodel` entry point, run as a subprocess against moto."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import icanhazmodel
from tests.conftest import Bucket, entry_point, run_cli, tree_of
from tests.sample_tree import MODEL_KEY, everything, model_tree

SCALE = 1 / 64


@pytest.fixture
def sample_bucket(bucket: Bucket) -> Bucket:
    bucket.put_all(everything(SCALE))
    return bucket


def test_the_seed_command_mirrors_the_key(
    sample_bucket: Bucket, tmp_path: Path, aws_env: Path
) -> None:
    (aws_env / "credentials").write_text(
        "[kevin-digitalreasoning]\naws_access_key_id = k\naws_secret_access_key = s\n"
    )
    result = run_cli(
        "--profile",
        "kevin-digitalreasoning",
        "--model_key",
        MODEL_KEY,
        "--bucket",
        sample_bucket.name,
        "--endpoint-url",
        sample_bucket.endpoint,
        cwd=tmp_path,
    )
    assert result.code == 0, result.stderr
    assert tree_of(tmp_path / "ptms") == {o.key: o.data() for o in model_tree(SCALE)}
    assert "11 files downloaded" in result.stderr
    assert "3 folders" in result.stderr
    assert result.stdout == ""


def test_short_and_dashed_spellings_work(sample_bucket: Bucket, tmp_path: Path) -> None:
    key = f"{MODEL_KEY}/metrics.json"
    for flags in (["-m", "a", "-k", key], ["--model-dir", "b", "--model-key", key]):
        result = run_cli(
            "-b",
            sample_bucket.name,
            "--endpoint-url",
            sample_bucket.endpoint,
            *flags,
            cwd=tmp_path,
        )
        assert result.code == 0, result.stderr
        assert (tmp_path / flags[1] / key).is_file()


def test_bucket_and_endpoint_from_the_environment(sample_bucket: Bucket, tmp_path: Path) -> None:
    key = f"{MODEL_KEY}/metrics.json"
    result = run_cli(
        "-k",
        key,
        "-m",
        str(tmp_path),
        env={"ICANHAZMODEL_BUCKET": sample_bucket.name, "AWS_ENDPOINT_URL": sample_bucket.endpoint},
    )
    assert result.code == 0, result.stderr
    assert (tmp_path / key).is_file()


def test_the_s3_specific_endpoint_variable_wins(sample_bucket: Bucket, tmp_path: Path) -> None:
    key = f"{MODEL_KEY}/metrics.json"
    result = run_cli(
        "-b",
        sample_bucket.name,
        "-k",
        key,
        "-m",
        str(tmp_path),
        "--retries",
        "0",
        env={
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
            "AWS_ENDPOINT_URL_S3": sample_bucket.endpoint,
        },
    )
    assert result.code == 0, result.stderr


def test_refused_keys_are_named_and_exit_1(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/ok", b"ok")
    bucket.put("p/../escape", b"evil")
    result = run_cli(
        "-b", bucket.name, "--endpoint-url", bucket.endpoint, "-k", "p", "-m", str(tmp_path / "d")
    )
    assert result.code == 1
    assert "'p/../escape'" in result.stderr
    assert "1 refused" in result.stderr
    assert tree_of(tmp_path) == {"d/p/ok": b"ok"}


def test_quiet_prints_nothing_on_success(sample_bucket: Bucket, tmp_path: Path) -> None:
    result = run_cli(
        "-q",
        "-b",
        sample_bucket.name,
        "--endpoint-url",
        sample_bucket.endpoint,
        "-k",
        MODEL_KEY,
        "-m",
        str(tmp_path),
    )
    assert result.code == 0
    assert (result.stdout, result.stderr) == ("", "")


def test_a_reader_that_stops_early_gets_no_traceback(sample_bucket: Bucket, tmp_path: Path) -> None:
    """`icanhazmodel --dry-run ... | head -1`: the plan's lines, and the
    flush at exit, meet a closed pipe, which is no error of the run's."""
    # ~80 KiB of plan lines: more than a pipe holds
    sample_bucket.put_many({f"many/{i:04d}.json": b"{}" for i in range(1200)})
    reader, writer = os.pipe()
    proc = subprocess.Popen(
        [
            entry_point(),
            "--dry-run",
            "-b",
            sample_bucket.name,
            "--endpoint-url",
            sample_bucket.endpoint,
            "-k",
            "many",
            "-m",
            str(tmp_path / "d"),
        ],
        stdout=writer,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )
    os.close(writer)
    with os.fdopen(reader, "rb") as head:
        first = head.readline()
    _, stderr = proc.communicate(timeout=60)
    assert first.startswith(b"download")
    assert "Traceback" not in stderr
    assert proc.returncode == 1  # the plan did not all reach its reader


def test_progress_can_be_forced_in_a_pipe(sample_bucket: Bucket, tmp_path: Path) -> None:
    result = run_cli(
        "--progress",
        "-b",
        sample_bucket.name,
        "--endpoint-url",
        sample_bucket.endpoint,
        "-k",
        MODEL_KEY,
        "-m",
        str(tmp_path),
    )
    assert result.code == 0
    assert "icanhazmodel:" in result.stderr
    assert "B/s" in result.stderr


def test_version_and_help() -> None:
    version = run_cli("--version")
    assert version.code == 0
    assert icanhazmodel.__version__ in version.stdout
    help_text = run_cli("--help").stdout
    for option in [
        "--profile",
        "--bucket",
        "--model_dir",
        "--model_key",
        "--endpoint-url",
        "--region",
        "--concurrency",
        "--progress",
        "--quiet",
        "--version",
    ]:
        assert option in help_text


def test_python_dash_m_runs_the_same_cli() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "icanhazmodel", "--version"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0
    assert icanhazmodel.__version__ in proc.stdout


def test_help_and_version_load_none_of_the_run_s_imports() -> None:
    """--help and --version (and `import icanhazmodel`) must start fast: the
    S3 client stack is imported only when a run starts."""
    code = (
        "import sys, icanhazmodel, icanhazmodel._cli; "
        "heavy = sorted(m for m in ('aioboto3', 'botocore', 'aiohttp', 'anyio') "
        "if m in sys.modules); print(heavy)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "[]"
