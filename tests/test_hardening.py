"""Attacks on the CLI: symlinks, hostile servers, broken manifests, limits.

Each test here reproduces one defect an adversarial review found (issue 9),
through the real CLI where it can, and checks the promise it broke: nothing
outside model_dir, never a wrong file, a dry run writes nothing, one-line
errors, and one bad object never ends the run.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import resource
import shutil
import sqlite3
import subprocess
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from icanhazmodel._checksums import crc_update
from icanhazmodel._files import PARTIAL_SUFFIX, Tree
from icanhazmodel._keys import RefusedKey, key_parts
from icanhazmodel._plan import ConflictTracker
from tests.conftest import Bucket, CliResult, entry_point, run_cli, tree_of
from tests.faultproxy import Fault, FaultProxy, fault_proxy
from tests.hostile_s3 import hostile_s3
from tests.sample_tree import pattern
from tests.test_errors import (  # noqa: F401 -- powerless_user is a fixture
    _auth_enforced,
    _iam_client,
    _iam_user,
    assert_one_line_error,
    powerless_user,
)
from tests.test_rerun import _killed_mid_download, _partials, _wait_for

MiB = 1 << 20
MANIFEST = Path(".icanhazmodel") / "manifest.sqlite3"


def cli(endpoint: str, bucket: str, key: str, dest: Path, *extra: str, **kw: object) -> CliResult:
    return run_cli(
        "-b", bucket, "--endpoint-url", endpoint, "-k", key, "-m", str(dest), *extra, **kw
    )  # type: ignore[arg-type]


def popen_cli(
    endpoint: str, bucket: str, key: str, dest: Path, *extra: str
) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            entry_point(),
            "-b",
            bucket,
            "--endpoint-url",
            endpoint,
            "-k",
            key,
            "-m",
            str(dest),
            *extra,
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@contextlib.contextmanager
def immutable(path: Path) -> Iterator[None]:
    """chattr +i: not even root may change *path* (or, for a folder, add to it)."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a path read-only for root")
    made = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"this filesystem has no immutable flag: {made.stderr.strip()}")
    try:
        yield
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


# -- 1. a directory swapped for a symlink mid-run ----------------------------------------------


def test_1_a_folder_swapped_for_a_symlink_mid_run_gets_no_byte_outside(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest, outside = tmp_path / "ptms", tmp_path / "outside"
    outside.mkdir()
    for i in range(40):
        bucket.put(f"p/d/{i:02d}", pattern(f"s{i}", 20_000))
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/d/", times=40, throttle=100_000))
        proc = popen_cli(proxy.endpoint, bucket.name, "p", dest, "-j", "2")
        _wait_for(lambda: (dest / "p/d/00").exists() or proc.poll() is not None)
        (dest / "p/d").rename(dest / "p/moved")
        (dest / "p/d").symlink_to(outside)
        _, stderr = proc.communicate(timeout=60)
    assert list(outside.iterdir()) == [], stderr
    assert "Traceback" not in stderr
    # Every file the run wrote is in the folder it made, now named 'moved'.
    for path in (dest / "p/moved").iterdir():
        assert path.read_bytes() == pattern(f"s{int(path.name)}", 20_000)
    assert proc.returncode in (0, 1)


# -- 2. resume into a symlink planted at a recorded temp path ----------------------------------


def test_2_resume_never_writes_through_a_symlink_planted_at_the_temp_path(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    big = _killed_mid_download(bucket, dest, "plant")
    [partial] = _partials(dest)
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"\0" * (40 * MiB))  # the right length, to be tempting
    partial.unlink()
    partial.symlink_to(victim)
    # A forged record vouches for the victim's bytes, so only the link check is left.
    with sqlite3.connect(dest / MANIFEST) as db:
        [algorithm] = db.execute("SELECT crc_algorithm FROM partials").fetchone()
        for start, end in db.execute("SELECT start, end FROM ranges").fetchall():
            db.execute(
                "UPDATE ranges SET crc = ? WHERE start = ?",
                (crc_update(algorithm, b"\0" * (end - start)), start),
            )
    result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 0, result.stderr
    assert victim.read_bytes() == b"\0" * (40 * MiB)
    assert (dest / "p/big.bin").read_bytes() == big
    assert not partial.is_symlink()  # the planted link is gone, its target kept


# -- 3. the manifest's folder under another spelling or through a link -------------------------


def test_3_keys_cannot_reach_the_manifest_by_case_or_through_a_link(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    bucket.put("f", b"first")
    assert cli(bucket.endpoint, bucket.name, "s3://" + bucket.name + "/", dest).code == 0
    before = (dest / MANIFEST).read_bytes()
    (dest / "alias").symlink_to(dest / ".icanhazmodel")
    bucket.put(".ICANHAZMODEL/manifest.sqlite3", b"overwrite")
    bucket.put("alias/manifest.sqlite3", b"overwrite")
    result = cli(bucket.endpoint, bucket.name, "s3://" + bucket.name + "/", dest)
    assert result.code == 1
    assert (dest / MANIFEST).read_bytes()[:16] == before[:16] == b"SQLite format 3\0"
    assert "'.ICANHAZMODEL/manifest.sqlite3'" in result.stderr
    assert "'alias/manifest.sqlite3'" in result.stderr
    assert "is a symlink" in result.stderr
    with sqlite3.connect(dest / MANIFEST) as db:
        assert db.execute("SELECT count(*) FROM files").fetchone()[0] == 1


# -- 4. a server that answers 200 to everything ------------------------------------------------


@pytest.mark.parametrize("key", ["models/bert/weights.bin", "models/bert"])
@pytest.mark.usefixtures("request_path")  # both GET paths
def test_4_a_captive_portal_is_not_s3_and_lands_nothing(tmp_path: Path, key: str) -> None:
    dest = tmp_path / "ptms"
    with hostile_s3(portal=True) as s3:
        result = cli(s3.endpoint, s3.bucket, key, dest)
    assert_one_line_error(result, 1, "without an ETag", "--endpoint-url")
    assert not dest.exists()


def test_4_a_get_without_etag_stops_the_run(tmp_path: Path) -> None:
    dest = tmp_path / "ptms"
    with hostile_s3(objects={"m/a": b"model"}) as s3:
        good = cli(s3.endpoint, s3.bucket, "m", dest)
        assert good.code == 0, good.stderr
        s3.objects["m/b"] = b"more"
        s3.portal = True  # the listing was fine; now a portal takes over
        result = cli(s3.endpoint, s3.bucket, "m/b", dest)
    assert_one_line_error(result, 1, "without an ETag")
    assert tree_of(dest) == {"m/a": b"model"}


# -- 5. a body longer than listed --------------------------------------------------------------


@pytest.mark.usefixtures("request_path")  # both GET paths
def test_5_a_body_longer_than_listed_is_never_cut_to_fit(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "ptms"
    listed = pattern("old", 2 * MiB)
    newer = pattern("new", 3 * MiB)  # another version, served without a length
    with hostile_s3(
        objects={"m/w.bin": listed, "m/ok": b"ok"},
        etags={"m/w.bin": "0123456789abcdef0123456789abcdef-2"},  # multipart: size-only
        served={"m/w.bin": newer},
    ) as s3:
        result = cli(s3.endpoint, s3.bucket, "m", dest, "--retries", "0")
    assert result.code == 1, result.stderr
    assert "sent more than the" in result.stderr
    assert tree_of(dest) == {"m/ok": b"ok"}  # no temp file either


# -- 6. a dry run with a read-only manifest folder ---------------------------------------------


def test_6_a_dry_run_reads_a_read_only_manifest_and_writes_nothing(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    bucket.put("p/a", b"a")
    bucket.put("p/b", b"b")
    assert cli(bucket.endpoint, bucket.name, "p", dest).code == 0
    meta = dest / ".icanhazmodel"
    before = sorted(p.name for p in meta.iterdir())
    with immutable(meta):
        result = cli(bucket.endpoint, bucket.name, "p", dest, "--dry-run")
        after = sorted(p.name for p in meta.iterdir())
    assert result.code == 0, result.stderr
    assert "skip 2 unchanged" in result.stderr
    assert "would download 0 files" in result.stderr
    assert after == before == ["manifest.sqlite3"]  # no -wal, no -shm


def test_6_a_dry_run_leaves_no_wal_or_shm_files(bucket: Bucket, tmp_path: Path) -> None:
    dest = tmp_path / "ptms"
    bucket.put("p/a", b"a")
    assert cli(bucket.endpoint, bucket.name, "p", dest).code == 0
    result = cli(bucket.endpoint, bucket.name, "p", dest, "--dry-run")
    assert result.code == 0
    assert sorted(p.name for p in (dest / ".icanhazmodel").iterdir()) == ["manifest.sqlite3"]


# -- 7. a manifest that cannot be written ------------------------------------------------------


def test_7_a_manifest_that_cannot_be_written_is_one_line_after_the_summary(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    bucket.put("p/a", b"a")
    assert cli(bucket.endpoint, bucket.name, "p", dest).code == 0
    bucket.put("p/new", b"new file")
    with immutable(dest / MANIFEST):
        result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "1 file downloaded" in result.stderr  # the summary is there
    [error] = [line for line in result.stderr.splitlines() if "error:" in line]
    assert "cannot update the manifest" in error
    assert str(dest / MANIFEST) in error
    assert (dest / "p/new").read_bytes() == b"new file"


def test_7_records_wait_for_a_manifest_that_comes_back(tmp_path: Path) -> None:
    from icanhazmodel._manifest import FileRecord, Manifest

    tree = Tree(tmp_path)
    manifest = Manifest(tree)
    manifest.add_file(FileRecord("a", 1, "e", None, "crc32", 1, 1))
    manifest.flush()
    manifest.close()
    with immutable(tmp_path / MANIFEST):
        manifest = Manifest(tree)
        manifest.add_file(FileRecord("b", 1, "e", None, "crc32", 1, 1))
        manifest.flush()
        assert manifest.write_error is not None
        assert "cannot update the manifest" in manifest.write_error
        assert manifest.pending() == 1  # kept, not lost
    manifest.close()  # writable again: the record lands, and close never raises
    assert manifest.write_error is None
    with sqlite3.connect(tmp_path / MANIFEST) as db:
        assert sorted(r[0] for r in db.execute("SELECT key FROM files")) == ["a", "b"]
    tree.close()


# -- 8. someone else's leftover at a recorded temp path ----------------------------------------


def _forge_partial(dest: Path, tmp_name: str, key: str, etag: str, size: int) -> None:
    with sqlite3.connect(dest / MANIFEST) as db:
        db.execute(
            "INSERT INTO partials VALUES (?, ?, ?, ?, ?, ?)",
            (tmp_name, key, etag, size, 8 * MiB, "CRC32"),
        )
        db.execute("INSERT INTO ranges VALUES (?, 0, ?, 1)", (tmp_name, 8 * MiB))


def test_8_a_folder_at_a_recorded_temp_path_is_reported_and_the_run_goes_on(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    big = pattern("leftover", 20 * MiB)
    bucket.put("p/big.bin", big)
    bucket.put("p/small", b"small")
    assert cli(bucket.endpoint, bucket.name, "p/small", dest).code == 0
    tmp_name = "p/.big.bin.000000000000" + PARTIAL_SUFFIX
    (dest / tmp_name).mkdir()
    etag = bucket.client.head_object(Bucket=bucket.name, Key="p/big.bin")["ETag"].strip('"')
    _forge_partial(dest, tmp_name, "p/big.bin", etag, len(big))
    result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert (dest / "p/big.bin").read_bytes() == big
    assert tmp_name in result.stderr  # named, and left alone
    assert (dest / tmp_name).is_dir()


# -- 9. an ETag that cannot go back in a header ------------------------------------------------


@pytest.mark.usefixtures("request_path")  # both GET paths
def test_9_an_etag_with_a_control_character_fails_alone_and_fast(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "ptms"
    with hostile_s3(
        objects={"m/bad": b"bad", "m/good": b"good"}, etags={"m/bad": "abc\ndef"}
    ) as s3:
        started = time.monotonic()
        result = cli(s3.endpoint, s3.bucket, "m", dest)
        took = time.monotonic() - started
    assert result.code == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "cannot be sent back" in result.stderr
    assert tree_of(dest) == {"m/good": b"good"}
    assert took < 10


# -- 10. a manifest with damaged pages ---------------------------------------------------------


@pytest.mark.parametrize("where", ["header", "pages"])
def test_10_a_damaged_manifest_is_set_aside_and_a_fresh_one_started(
    bucket: Bucket, tmp_path: Path, where: str
) -> None:
    dest = tmp_path / "ptms"
    bucket.put_many({f"p/{i:03d}-{'x' * 60}": b"%d" % i for i in range(300)})
    assert cli(bucket.endpoint, bucket.name, "p", dest).code == 0
    db = dest / MANIFEST
    data = bytearray(db.read_bytes())
    assert len(data) > 3 * 4096
    if where == "header":
        data[:16] = b"not a database!!"
    else:
        data[4096:] = b"\xa5" * (len(data) - 4096)
    db.write_bytes(bytes(data))
    dry = cli(bucket.endpoint, bucket.name, "p", dest, "--dry-run")
    assert_one_line_error(dry, 2, "is damaged", "delete it")
    result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 0, result.stderr
    assert "set aside" in result.stderr
    assert "Traceback" not in result.stderr
    [aside] = (dest / ".icanhazmodel").glob("manifest.sqlite3.damaged-*")
    assert aside.read_bytes()[:16] == bytes(data[:16])
    rerun = cli(bucket.endpoint, bucket.name, "p", dest)
    assert "300 unchanged" in rerun.stderr


# -- 11. configuration mistakes ----------------------------------------------------------------


def test_11_a_malformed_aws_config_is_one_line(
    bucket: Bucket, tmp_path: Path, aws_env: Path
) -> None:
    (aws_env / "config").write_text("[default\nregion = us-east-1\n[[[\n")
    result = cli(bucket.endpoint, bucket.name, "p", tmp_path / "ptms")
    assert_one_line_error(result, 2, "AWS config file", str(aws_env / "config"))


@pytest.mark.parametrize(
    ("url", "culprit"),
    [("http://[::1", "http://[::1"), ("http://127.0.0.1:99999", "99999")],
)
def test_11_a_broken_endpoint_url_is_one_line(tmp_path: Path, url: str, culprit: str) -> None:
    result = cli(url, "b", "p", tmp_path / "ptms")
    assert_one_line_error(result, 2, "--endpoint-url", culprit)


def test_11_a_failing_credential_process_names_the_profile(
    bucket: Bucket, tmp_path: Path, aws_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (aws_env / "config").write_text(
        "[profile broken]\ncredential_process = sh -c 'echo token service down >&2; exit 3'\n"
    )
    result = cli(bucket.endpoint, bucket.name, "p", tmp_path / "ptms", "-p", "broken")
    assert_one_line_error(result, 2, "broken", "credential")
    assert not (tmp_path / "ptms").exists()


def test_11_a_missing_ca_bundle_names_the_variable(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    result = cli(
        "https://127.0.0.1:9", "b", "p", tmp_path / "ptms", env={"AWS_CA_BUNDLE": str(missing)}
    )
    assert_one_line_error(result, 2, "AWS_CA_BUNDLE", str(missing))


# -- 12. whole-run failures leave nothing behind -----------------------------------------------


@pytest.mark.parametrize(
    "case", ["no such bucket", "nothing under the key", "filters match nothing", "unreachable"]
)
def test_12_a_run_that_fails_before_any_download_creates_nothing(
    bucket: Bucket, tmp_path: Path, case: str
) -> None:
    bucket.put("p/a", b"a")
    dest = tmp_path / "deep" / "ptms"
    args = {
        "no such bucket": (bucket.endpoint, "no-such-bucket", "p"),
        "nothing under the key": (bucket.endpoint, bucket.name, "q"),
        "filters match nothing": (bucket.endpoint, bucket.name, "p"),
        "unreachable": ("http://127.0.0.1:9", bucket.name, "p"),
    }[case]
    extra = ("--include", "*.nothing") if case == "filters match nothing" else ()
    result = cli(*args, dest, *extra, "--retries", "0")
    assert result.code in (1, 2), result.stderr
    assert list(tmp_path.iterdir()) == []


def test_12_wrong_credentials_create_nothing(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket.put("p/a", b"a")
    _iam_user(bucket, monkeypatch, reader=True)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with _auth_enforced(bucket.endpoint):
        result = cli(bucket.endpoint, bucket.name, "p", tmp_path / "ptms")
    assert_one_line_error(result, 2, "rejected the credentials")
    assert list(tmp_path.iterdir()) == []


# -- 13. temp files left by kill -9 ------------------------------------------------------------


def test_13_stale_temp_files_are_swept_from_the_folders_a_run_writes(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    folder = dest / "p"
    folder.mkdir(parents=True)
    stale = [folder / f".small.{t}{PARTIAL_SUFFIX}" for t in ("0a0a0a0a0a0a", "0b0b0b0b0b0b")]
    for path in stale:
        path.write_bytes(b"half a file from a killed run")
    live = folder / f".other.0c0c0c0c0c0c{PARTIAL_SUFFIX}"
    live.write_bytes(b"another run is writing this")
    bucket.put("p/small", b"small")
    bucket.put("p/mid.bin", pattern("mid", 3 * MiB))
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # a live run holds its files locked
        result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 0, result.stderr
    assert [p.name for p in _partials(dest)] == [live.name]


def test_13_a_kill_9_mid_write_leaves_nothing_after_the_next_run(
    bucket: Bucket, tmp_path: Path
) -> None:
    dest = tmp_path / "ptms"
    bucket.put("p/one.bin", pattern("k9", 3 * MiB))  # one request, no manifest record
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="one.bin", times=1, throttle=256 * 1024))
        proc = popen_cli(proxy.endpoint, bucket.name, "p", dest)
        _wait_for(lambda: bool(_partials(dest)) or proc.poll() is not None)
        proc.kill()
        proc.communicate()
    assert len(_partials(dest)) == 1
    result = cli(bucket.endpoint, bucket.name, "p", dest)
    assert result.code == 0, result.stderr
    assert _partials(dest) == []
    assert (dest / "p/one.bin").read_bytes() == pattern("k9", 3 * MiB)


# -- 14. the open-file limit -------------------------------------------------------------------


def _limited(soft: int, hard: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize(("soft", "hard"), [(256, 256), (256, 4096)], ids=["hard", "soft"])
def test_14_a_low_open_file_limit_does_not_fail_objects(
    bucket: Bucket, tmp_path: Path, soft: int, hard: int
) -> None:
    if resource.getrlimit(resource.RLIMIT_NOFILE)[1] < hard:
        pytest.skip("the hard limit here is lower than the test needs")
    bucket.put_many({f"p/{i:03d}": b"%d" % i for i in range(300)})
    dest = tmp_path / "ptms"
    proc = subprocess.run(
        [entry_point(), "-b", bucket.name, "--endpoint-url", bucket.endpoint, "-k", "p",
         "-m", str(dest), "-j", "200"],
        preexec_fn=lambda: _limited(soft, hard),
        capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len(tree_of(dest)) == 300
    assert ("requests in flight instead of 200" in proc.stderr) == (hard == 256)


# -- 15. memory per directory ------------------------------------------------------------------


def test_15_conflict_tracking_and_folder_cache_stay_bounded_over_many_folders(
    tmp_path: Path,
) -> None:
    from icanhazmodel._files import DIR_CACHE_SIZE

    tracker = ConflictTracker()
    tree = Tree(tmp_path)
    tracemalloc.start()
    for i in range(5_000):
        parts = ("data", f"{i:06d}", "shard.bin")
        assert tracker.add(parts, is_dir=False) is None
        tree.ensure_dir(parts[:-1])
    small, _ = tracemalloc.get_traced_memory()
    for i in range(5_000, 40_000):
        parts = ("data", f"{i:06d}", "shard.bin")
        assert tracker.add(parts, is_dir=False) is None
        if i % 20 == 0:
            tree.ensure_dir(parts[:-1])
    large, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(tracker) <= 3
    assert len(tree._cache) <= DIR_CACHE_SIZE
    assert large - small < 256 * 1024  # flat: not ~0.4 KiB per folder
    tree.close()


# -- 16. a model_dir path too long for SQLite --------------------------------------------------


def test_16_a_long_model_dir_path_still_keeps_a_manifest(bucket: Bucket, tmp_path: Path) -> None:
    dest = tmp_path.joinpath(*["d" * 100] * 6)
    assert len(str(dest / MANIFEST).encode()) > 512
    bucket.put("p/a", b"a")
    bucket.put("p/b", b"b")
    first = cli(bucket.endpoint, bucket.name, "p", dest)
    assert first.code == 0, first.stderr
    assert (dest / MANIFEST).is_file()
    rerun = cli(bucket.endpoint, bucket.name, "p", dest)
    assert rerun.code == 0
    assert "2 unchanged" in rerun.stderr


# -- 17. an endpoint with its default port spelled out -----------------------------------------


def test_17_an_endpoint_with_its_default_port_is_signed_as_sent(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root to listen on port 80")
    host, port = bucket.endpoint.removeprefix("http://").split(":")
    try:
        proxy = FaultProxy((host, int(port)), port=80)
    except OSError as exc:
        pytest.skip(f"port 80 is taken: {exc}")
    try:
        bucket.put("p/f", b"data")
        _iam_user(bucket, monkeypatch, reader=True)
        with _auth_enforced(bucket.endpoint):
            result = cli("http://127.0.0.1:80", bucket.name, "p", tmp_path)
        assert result.code == 0, result.stderr
        [get] = proxy.requests("GET", "/p/f")
        assert get.headers.get("user-agent", "").startswith("icanhazmodel/")  # no fallback
    finally:
        proxy.close()


# -- 18. credentials that stop working mid-run -------------------------------------------------


def test_18_credentials_revoked_mid_run_stop_the_run_once(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for i in range(30):
        bucket.put(f"p/{i:02d}", pattern(f"c{i}", 50_000))
    _iam_user(bucket, monkeypatch, reader=True)
    iam = _iam_client(bucket.endpoint)
    dest = tmp_path / "ptms"
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", times=30, throttle=200_000))
        with _auth_enforced(bucket.endpoint):
            proc = popen_cli(proxy.endpoint, bucket.name, "p", dest, "-j", "2")
            _wait_for(lambda: (dest / "p/00").exists() or proc.poll() is not None)
        # Checks off for a moment, so the admin's own call goes through.
        iam.delete_access_key(
            UserName=f"reader-{bucket.name}", AccessKeyId=os.environ["AWS_ACCESS_KEY_ID"]
        )
        with _auth_enforced(bucket.endpoint):
            _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 2, stderr
    assert "Traceback" not in stderr
    assert stderr.count("rejected the credentials") == 1
    assert "failed:" not in stderr


# -- 19. small things --------------------------------------------------------------------------


def test_19_a_key_under_a_file_key_is_refused_with_the_right_words(
    bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/a", b"file")
    bucket.put("p/a/b", b"under it")
    result = cli(bucket.endpoint, bucket.name, "p", tmp_path)
    assert result.code == 1
    assert "'p/a' is already the file of key 'p/a', so it cannot also be a folder" in (
        result.stderr
    )


def test_19_a_kept_local_edit_is_not_called_failed(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/a", b"a")
    assert cli(bucket.endpoint, bucket.name, "p", tmp_path).code == 0
    (tmp_path / "p/a").write_bytes(b"mine")
    result = cli(bucket.endpoint, bucket.name, "p", tmp_path)
    assert result.code == 1
    assert "1 kept as edited locally" in result.stderr
    assert "failed" not in result.stderr.splitlines()[0]


def test_19_sizes_that_differ_never_read_the_same() -> None:
    from icanhazmodel._space import sizes_apart as _sizes_apart

    need, free = _sizes_apart(210_000, 209_000)
    assert need != free
    assert _sizes_apart(5 * MiB, MiB) == ("5.0 MiB", "1.0 MiB")


@pytest.mark.parametrize(
    "char", ["\u202e", "\u200b", "\u200d", "\u2066", "\ufeff", "\u061c"], ids=repr
)
def test_19_bidi_and_zero_width_characters_are_refused(char: str) -> None:
    with pytest.raises(RefusedKey, match="invisible"):
        key_parts(f"models/evil{char}txt.exe")


@pytest.mark.usefixtures("powerless_user")
def test_19_an_exact_keys_auth_error_names_the_key_not_a_folder(
    bucket: Bucket, tmp_path: Path
) -> None:
    result = cli(bucket.endpoint, bucket.name, "p/metrics.json", tmp_path)
    assert_one_line_error(result, 1, f"looking up s3://{bucket.name}/p/metrics.json")
    assert "metrics.json/" not in result.stderr
