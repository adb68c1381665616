"""Running again on the same directory: skip what is unchanged, fetch what
changed, keep what the user edited, resume what was interrupted."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import FetchResult, Status
from icanhazmodel._progress import NullReporter
from tests.conftest import Bucket, entry_point, run_cli, tree_of
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern

MiB = 1 << 20


def fetch(bucket: Bucket, dest: Path, endpoint: str | None = None, **kwargs: object) -> FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=dest,
            endpoint_url=endpoint or bucket.endpoint,
            **kwargs,
        )
    )


@pytest.fixture
def filled(bucket: Bucket) -> Bucket:
    bucket.put("p/a.txt", b"alpha")
    bucket.put("p/sub/b.bin", pattern("b", 3 * MiB))
    bucket.put("p/big.bin", pattern("big", 20 * MiB))
    return bucket


def inodes(root: Path) -> dict[str, int]:
    return {p.relative_to(root).as_posix(): p.stat().st_ino for p in root.rglob("*") if p.is_file()}


def test_unchanged_objects_are_skipped_without_a_get(filled: Bucket, tmp_path: Path) -> None:
    first = fetch(filled, tmp_path)
    before = inodes(tmp_path / "p")
    with fault_proxy(filled.endpoint) as proxy:
        second = fetch(filled, tmp_path, proxy.endpoint)
        object_gets = [s for s in proxy.requests("GET", "/p/") if "list-type" not in s.path]
        assert object_gets == []
        assert proxy.requests("HEAD", "/p/") == []
    assert (first.downloaded, second.downloaded, second.skipped) == (3, 0, 3)
    assert inodes(tmp_path / "p") == before


def test_a_changed_object_is_fetched_again(filled: Bucket, tmp_path: Path) -> None:
    fetch(filled, tmp_path)
    filled.put("p/a.txt", b"alpha, second edition")
    result = fetch(filled, tmp_path)
    assert (result.downloaded, result.skipped) == (1, 2)
    assert (tmp_path / "p/a.txt").read_bytes() == b"alpha, second edition"


def test_a_locally_edited_file_is_kept_and_reported(filled: Bucket, tmp_path: Path) -> None:
    fetch(filled, tmp_path)
    (tmp_path / "p/a.txt").write_bytes(b"my notes")
    result = fetch(filled, tmp_path)
    assert (tmp_path / "p/a.txt").read_bytes() == b"my notes"
    [kept] = result.failures
    assert kept.status is Status.LOCALLY_MODIFIED
    assert "--force" in kept.reason
    assert not result.ok

    cli = run_cli(
        "-b", filled.name, "--endpoint-url", filled.endpoint, "-k", "p", "-m", str(tmp_path)
    )
    assert cli.code == 1
    assert "--force" in cli.stderr
    assert "p/a.txt" in cli.stderr


def test_force_replaces_edits_and_refetches_everything(filled: Bucket, tmp_path: Path) -> None:
    fetch(filled, tmp_path)
    (tmp_path / "p/a.txt").write_bytes(b"my notes")
    result = fetch(filled, tmp_path, force=True)
    assert result.downloaded == 3
    assert (tmp_path / "p/a.txt").read_bytes() == b"alpha"


def test_a_deleted_local_file_is_fetched_again(filled: Bucket, tmp_path: Path) -> None:
    fetch(filled, tmp_path)
    (tmp_path / "p/sub/b.bin").unlink()
    result = fetch(filled, tmp_path)
    assert (result.downloaded, result.skipped) == (1, 2)
    assert (tmp_path / "p/sub/b.bin").read_bytes() == pattern("b", 3 * MiB)


def test_a_file_not_written_by_icanhazmodel_is_replaced(filled: Bucket, tmp_path: Path) -> None:
    (tmp_path / "p").mkdir()
    (tmp_path / "p/a.txt").write_bytes(b"stale copy from elsewhere")
    result = fetch(filled, tmp_path)
    assert result.ok
    assert (tmp_path / "p/a.txt").read_bytes() == b"alpha"


def _recorded_ranges(root: Path) -> int:
    db = root / ".icanhazmodel" / "manifest.sqlite3"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(db) as conn:
            return int(conn.execute("SELECT count(*) FROM ranges").fetchone()[0])
    except sqlite3.OperationalError:  # the run is still creating the tables
        return 0


# Starts a program with SIGINT ignored, as a script's background job inherits it.
_SIGINT_IGNORED = (
    "import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); "
    "os.execv(sys.argv[1], sys.argv[1:])"
)


def _start_slow_cli(
    bucket: Bucket, dest: Path, endpoint: str, *, sigint_ignored: bool = False
) -> subprocess.Popen[str]:
    wrapper = [sys.executable, "-c", _SIGINT_IGNORED] if sigint_ignored else []
    return subprocess.Popen(
        [
            *wrapper,
            entry_point(),
            "-b",
            bucket.name,
            "--endpoint-url",
            endpoint,
            "-k",
            "p",
            "-m",
            str(dest),
            "-j",
            "4",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _wait_for(condition: object, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def _partials(root: Path) -> list[Path]:
    return sorted(root.rglob("*.icanhazmodel-partial"))


def _killed_mid_download(bucket: Bucket, dest: Path, seed: str) -> bytes:
    """Start a CLI run of a 40 MiB object whose first range crawls, and
    kill -9 it once two other ranges are recorded. Returns the object's bytes."""
    big = pattern(seed, 40 * MiB)
    bucket.put("p/big.bin", big)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="big.bin", times=1, throttle=64 * 1024))
        proc = _start_slow_cli(bucket, dest, proxy.endpoint)
        try:
            _wait_for(lambda: _recorded_ranges(dest) >= 2)
        finally:
            proc.kill()
            proc.communicate()
    return big


def test_a_killed_run_resumes_from_what_is_on_disk(bucket: Bucket, tmp_path: Path) -> None:
    big = _killed_mid_download(bucket, tmp_path, "resume")
    assert not (tmp_path / "p/big.bin").exists()
    assert len(_partials(tmp_path)) == 1

    result = fetch(bucket, tmp_path)
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert 0 < result.bytes_downloaded < len(big)
    assert _partials(tmp_path) == []


class _Counted(NullReporter):
    def __init__(self) -> None:
        self.advanced_bytes = 0
        self.resumed_bytes = 0

    def advanced(self, key: str, nbytes: int) -> None:
        self.advanced_bytes += nbytes

    def resumed(self, key: str, nbytes: int) -> None:
        self.resumed_bytes += nbytes


@pytest.mark.parametrize("processes", [1, 2], ids=["one process", "worker processes"])
def test_resumed_bytes_are_told_apart_from_fetched_ones(
    bucket: Bucket, tmp_path: Path, processes: int
) -> None:
    """Bytes adopted from disk count toward the bars' totals, not their speed."""
    big = _killed_mid_download(bucket, tmp_path, f"told-{processes}")
    counted = _Counted()
    result = fetch(bucket, tmp_path, processes=processes, progress=counted)
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert result.resumed == 1
    assert counted.resumed_bytes == result.bytes_resumed > 0
    assert counted.advanced_bytes == result.bytes_downloaded == len(big) - result.bytes_resumed


def test_a_damaged_range_in_a_resumed_file_is_fetched_again(bucket: Bucket, tmp_path: Path) -> None:
    big = _killed_mid_download(bucket, tmp_path, "damage")
    [partial] = _partials(tmp_path)
    with open(partial, "r+b") as f:  # damage every recorded range
        for offset in range(0, 40 * MiB, MiB):
            f.seek(offset)
            f.write(b"\0" * 10)
    result = fetch(bucket, tmp_path)
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert result.ok
    assert result.bytes_downloaded == len(big)  # no damaged range was trusted


@pytest.mark.parametrize(
    ("sig", "sigint_ignored"),
    [(signal.SIGINT, False), (signal.SIGTERM, False), (signal.SIGTERM, True)],
    ids=["SIGINT", "SIGTERM", "SIGTERM-with-SIGINT-ignored"],
)
def test_ctrl_c_stops_fast_and_leaves_only_resumable_temp_files(
    bucket: Bucket, tmp_path: Path, sig: signal.Signals, sigint_ignored: bool
) -> None:
    """Also SIGTERM to a program that inherited SIGINT ignored (a script's
    background job): it once stopped only by way of SIGINT, so never."""
    big = pattern("sigint", 40 * MiB)
    bucket.put("p/big.bin", big)
    (tmp_path / "p").mkdir()
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="big.bin", times=1, throttle=64 * 1024))
        proc = _start_slow_cli(bucket, tmp_path, proxy.endpoint, sigint_ignored=sigint_ignored)
        _wait_for(lambda: _recorded_ranges(tmp_path) >= 1 or proc.poll() is not None)
        sent = time.monotonic()
        proc.send_signal(sig)
        _, stderr = proc.communicate(timeout=10)
        took = time.monotonic() - sent
    assert proc.returncode == 130, stderr
    assert took < 2.0
    assert "run the same command again" in stderr.strip().splitlines()[-1]
    assert "Traceback" not in stderr
    assert not (tmp_path / "p/big.bin").exists()
    [partial] = _partials(tmp_path)
    assert _recorded_ranges(tmp_path) >= 1
    result = fetch(bucket, tmp_path)
    assert (tmp_path / "p/big.bin").read_bytes() == big
    assert result.bytes_downloaded < len(big)
    assert not partial.exists()


def test_two_runs_at_once_do_not_corrupt_each_other(filled: Bucket, tmp_path: Path) -> None:
    for i in range(40):
        filled.put(f"p/many/{i:03d}", pattern(f"m{i}", 10_000 + i))
    procs = [
        subprocess.Popen(
            [
                entry_point(),
                "-b",
                filled.name,
                "--endpoint-url",
                filled.endpoint,
                "-k",
                "p",
                "-m",
                str(tmp_path),
                "-j",
                "4",
                "--force",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outputs
    expected = {
        "p/a.txt": b"alpha",
        "p/sub/b.bin": pattern("b", 3 * MiB),
        "p/big.bin": pattern("big", 20 * MiB),
        **{f"p/many/{i:03d}": pattern(f"m{i}", 10_000 + i) for i in range(40)},
    }
    assert tree_of(tmp_path) == expected
    rerun = fetch(filled, tmp_path)
    assert rerun.skipped == len(expected)  # the manifest lost no entry


def test_disk_full_is_one_clear_error_and_cleans_up(bucket: Bucket, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    dest = tmp_path / "small"
    dest.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(dest)], capture_output=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {mounted.stderr!r}")
    try:
        (dest / "p").mkdir()
        (dest / "p" / "keep.txt").write_bytes(b"precious")
        bucket.put("p/small.txt", b"fits")
        bucket.put("p/big.bin", pattern("full", 20 * MiB))
        # --ignore-space: skip the up-front check, so the disk really fills up.
        result = run_cli(
            "-b",
            bucket.name,
            "--endpoint-url",
            bucket.endpoint,
            "-k",
            "p",
            "-m",
            str(dest),
            "--ignore-space",
        )
        assert result.code == 1, result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines[-1].startswith("icanhazmodel: error: no space left under")
        assert str(dest) in lines[-1]
        assert "Traceback" not in result.stderr
        assert _partials(dest) == []
        assert not (dest / "p" / "big.bin").exists()
        assert (dest / "p" / "keep.txt").read_bytes() == b"precious"

        # Without --ignore-space the run stops before writing the big file.
        early = run_cli(
            "-b", bucket.name, "--endpoint-url", bucket.endpoint, "-k", "p", "-m", str(dest)
        )
        assert early.code == 1
        assert "is free under" in early.stderr
        assert "--ignore-space" in early.stderr
        assert _partials(dest) == []
    finally:
        subprocess.run(["umount", str(dest)], check=True)
