"""Hardening 3: worker processes, lying listings, throttling, multipart layouts.

Each test here failed before its fix (issue 21). Stores that lie are played by
:mod:`tests.hostile_s3` or by the fault proxy in front of moto; nothing in the
code under test is patched.
"""

from __future__ import annotations

import asyncio
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import _launch
from icanhazmodel._models import RemoteObject
from icanhazmodel._objects import PartHead
from icanhazmodel._parts import told_size, usual_part_size
from tests.conftest import Bucket, entry_point, run_cli, tree_of
from tests.faultproxy import Fault, FaultProxy, fault_proxy
from tests.hostile_s3 import HostileS3, hostile_s3
from tests.sample_tree import pattern

# -- 1: a child process never imports from the current directory ----------------------

PLANTED = """\
import os
with open(os.environ["PLANTED_MARKER"], "a") as marker:
    marker.write(f"{os.getpid()} ran planted code\\n")
raise ImportError("planted")
"""


def _tree(bucket: Bucket, count: int, size: int = 20_000) -> dict[str, bytes]:
    files = {f"p/{i:03d}.bin": pattern(f"h3-{i}", size) for i in range(count)}
    bucket.put_many(files)
    return files


@pytest.mark.parametrize("module", ["selectors.py", "aiohttp.py", "icanhazmodel.py"])
def test_1_workers_never_import_what_is_planted_where_the_tool_runs(
    module: str, bucket: Bucket, tmp_path: Path
) -> None:
    files = _tree(bucket, 12)
    here = tmp_path / "cwd"
    here.mkdir()
    (here / module).write_text(PLANTED)
    marker = tmp_path / "marker"
    result = run_cli(
        "--endpoint-url",
        bucket.endpoint,
        "-b",
        bucket.name,
        "-k",
        "p",
        "-m",
        str(tmp_path / "ptms"),
        "-P",
        "2",
        cwd=here,
        env={"PLANTED_MARKER": str(marker)},
    )
    assert not marker.exists(), marker.read_text()
    assert result.code == 0, result
    assert "2 processes" in result.stderr
    assert tree_of(tmp_path / "ptms") == files


def test_1_a_key_landed_in_the_current_directory_never_runs(bucket: Bucket, tmp_path: Path) -> None:
    """With -m ., a bucket's `selectors.py` lands where the tool runs; the next
    run's worker processes must not import it."""
    files = {f"f{i:03d}.bin": pattern(f"h3-{i}", 20_000) for i in range(12)}
    files["selectors.py"] = PLANTED.encode()
    for key, data in files.items():
        bucket.put(key, data)
    marker = tmp_path / "marker"
    here = tmp_path / "cwd"
    here.mkdir()
    for _ in range(2):
        result = run_cli(
            "--endpoint-url",
            bucket.endpoint,
            "-k",
            f"s3://{bucket.name}/",
            "-m",
            ".",
            "-P",
            "2",
            "--force",
            cwd=here,
            env={"PLANTED_MARKER": str(marker)},
        )
        assert result.code == 0, result
        assert "2 processes" in result.stderr
    assert not marker.exists(), marker.read_text()
    assert tree_of(here) == files


def test_1_spawned_workers_never_import_from_the_current_directory(
    bucket: Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = _tree(bucket, 12)
    monkeypatch.setattr(_launch, "_SERVER", "raise SystemExit(3)")  # no fork server
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "selectors.py").write_text(PLANTED)
    marker = tmp_path / "marker"
    monkeypatch.setenv("PLANTED_MARKER", str(marker))
    monkeypatch.chdir(here)
    result = asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=tmp_path / "ptms",
            endpoint_url=bucket.endpoint,
            processes=2,
        )
    )
    assert not marker.exists(), marker.read_text()
    assert result.ok, result
    assert result.processes == 2
    assert tree_of(tmp_path / "ptms") == files
    assert "selectors" not in {Path(p).name for p in sys.path}


# -- 6: worker processes get the raised open-file limit --------------------------------


def _soft_nofile(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    raise AssertionError(f"no open-file limit for {pid}")


def test_6_workers_get_the_raised_open_file_limit(bucket: Bucket, tmp_path: Path) -> None:
    """Under a soft limit of 128, -j 100 needs ~500 descriptors a process: the
    parent raises its own limit, and the workers (forked from a server that
    started first) must have it too, or their big files fail with EMFILE."""
    from tests.test_processes import start_cli, workers_of

    files = {f"p/{i:02d}": pattern(f"fd{i}", 30_000) for i in range(20)}
    bucket.put_many(files)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)

    def low_limit() -> None:  # in the CLI only: this test's own process needs more
        resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))

    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="/p/", throttle=30_000, times=10**6))
        proc = start_cli(
            proxy.endpoint, bucket.name, tmp_path, "-P", "2", "-j", "100", preexec_fn=low_limit
        )
        deadline = time.monotonic() + 30
        while len(workers := workers_of(proc.pid)) < 2 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        limits = {pid: _soft_nofile(pid) for pid in [proc.pid, *workers]}
        _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 0, stderr
    assert tree_of(tmp_path) == files
    assert len(set(limits.values())) == 1, limits  # the parent's, everywhere
    assert limits[proc.pid] > 128


# -- 3: a key named like a temp file is refused, not landed and swept ----------------------


def test_3_a_key_named_like_a_temp_file_is_refused_not_swept(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    lookalike = "p/d/.x.bin.0123456789ab.icanhazmodel-partial"
    bucket.put(lookalike, b"precious bytes")
    bucket.put("p/d/y.bin", b"y" * 100)
    for _ in range(2):
        result = asyncio.run(
            icanhazmodel.fetch(
                bucket=bucket.name,
                key="p",
                dest=tmp_path,
                endpoint_url=bucket.endpoint,
                force=True,
            )
        )
        assert [(r.key, r.status) for r in result.problems] == [
            (lookalike, icanhazmodel.Status.REFUSED)
        ]
        assert "named like icanhazmodel's temp files" in result.problems[0].reason
        assert tree_of(tmp_path) == {"p/d/y.bin": b"y" * 100}


# -- 2, 4, 5, 8: a listing that breaks the contract stops the run with one line ------------

MiB = 1 << 20
LISTED = {f"p/{i:03d}": f"object {i}\n".encode() for i in range(350)}


def _fetch_hostile(s3: HostileS3, dest: Path) -> icanhazmodel.FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(bucket=s3.bucket, key="p", dest=dest, endpoint_url=s3.endpoint)
    )


@pytest.mark.parametrize("fanout", ["1", "0"])
def test_an_honest_paged_listing_mirrors_everything(
    fanout: str, request_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ICANHAZMODEL_LIST_FANOUT", fanout)
    with hostile_s3(objects=dict(LISTED), page_size=100) as s3:
        result = _fetch_hostile(s3, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == LISTED


LIES = [
    ("no-token", "truncated but sent no continuation token"),  # 2
    ("repeat-last", r"listed 'p/\d+' twice"),  # 4
    ("ignore-start-after", "(keys must come in order)"),  # 4, in the parallel listing
    ("token-cycle", r"a second time|listed .* after"),  # 5
    ("unsorted", "listed 'p/000' after 'p/001'"),  # 8
]


@pytest.mark.parametrize(
    ("lie", "said", "fanout"),
    [
        (lie, said, fanout)
        for lie, said in LIES
        for fanout in ("1", "0")
        # One chain of pages never sends start-after.
        if not (lie == "ignore-start-after" and fanout == "0")
    ],
)
def test_a_listing_that_breaks_the_contract_stops_the_run(
    lie: str,
    said: str,
    fanout: str,
    request_path: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """One chain of pages (fanout 0) always meets the lie; the parallel listing
    may list around it (its chains are short), and must then be complete."""
    monkeypatch.setenv("ICANHAZMODEL_LIST_FANOUT", fanout)
    with hostile_s3(objects=dict(LISTED), page_size=100, lie=lie) as s3:
        outcome: icanhazmodel.FetchResult | icanhazmodel.S3Error
        try:
            outcome = _fetch_hostile(s3, tmp_path / "lib")
        except icanhazmodel.S3Error as exc:
            outcome = exc
        if isinstance(outcome, icanhazmodel.S3Error):
            assert "broke the listing of s3://hostile/p/" in str(outcome)
            assert re.search(said, str(outcome)), outcome
        else:
            assert fanout == "1", "one chain of pages cannot miss the lie"
            assert outcome.ok, outcome.problems
            assert tree_of(tmp_path / "lib") == LISTED
        cli = run_cli(
            "--endpoint-url", s3.endpoint, "-b", s3.bucket, "-k", "p", "-m", str(tmp_path / "cli")
        )
    assert "Traceback" not in cli.stderr
    landed = tree_of(tmp_path / "cli") if (tmp_path / "cli").exists() else {}
    if cli.code == 0:
        assert fanout == "1"
        assert landed == LISTED
        return
    assert cli.code == 1, cli
    errors = [line for line in cli.stderr.splitlines() if "error" in line]
    assert len(errors) == 1, cli.stderr
    assert "broke the listing" in errors[0]
    # Whatever landed before the break is whole and right.
    assert all(LISTED[key] == data for key, data in landed.items())


# -- 9: both listing readers read a declared encoding alike ------------------------------


def test_9_a_listing_in_another_encoding_is_read_as_declared() -> None:
    from icanhazmodel._listxml import parse_list_page, quick_list_page, tree_list_page

    # 'Ã©' in ISO-8859-1 is the bytes C3 A9: read as UTF-8 they would be 'é'.
    body = (
        '<?xml version="1.0" encoding="ISO-8859-1"?>'
        "<ListBucketResult><IsTruncated>false</IsTruncated>"
        "<Contents><Key>p/Ã©.txt</Key><Size>1</Size><ETag>&quot;x&quot;</ETag>"
        "<LastModified>2026-11-28T06:00:00.000Z</LastModified></Contents>"
        "</ListBucketResult>"
    ).encode("iso-8859-1")
    assert quick_list_page(body.decode("utf-8")) is None
    assert [o.key for o in parse_list_page(body).objects] == ["p/Ã©.txt"]
    assert parse_list_page(body) == tree_list_page(body)


def test_9_a_store_listing_in_latin_1_is_mirrored_under_the_right_names(
    request_path: str, tmp_path: Path
) -> None:
    objects = {"p/Ã©.txt": b"accented\n", "p/plain.txt": b"plain\n"}
    with hostile_s3(objects=dict(objects), encoding="ISO-8859-1") as s3:
        result = _fetch_hostile(s3, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == objects


# -- 10: workers whose parent was killed stop without a word ------------------------------


def test_10_workers_of_a_parent_killed_hard_stop_without_a_traceback(
    bucket: Bucket, tmp_path: Path
) -> None:
    """Many small objects keep progress and results waiting to be sent, so
    each worker's next send meets the dead parent's closed socket."""
    bucket.put_many({f"p/{i:04d}": b"x" * 2000 for i in range(1200)})
    proc = subprocess.Popen(
        [entry_point(), "--endpoint-url", bucket.endpoint, "-b", bucket.name, "-k", "p",
         "-m", str(tmp_path), "--no-progress", "-P", "2", "-j", "8"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while len(list(tmp_path.rglob("p/0*"))) < 50 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.kill()
    # Read to the end: the workers write to the same stderr until they exit.
    _, stderr = proc.communicate(timeout=30)
    assert "Traceback" not in stderr, stderr
    assert "BrokenPipe" not in stderr, stderr


# -- 11: throttling slows a run down, and one policy retries on both paths ------------------


def _fetch(endpoint: str, bucket: Bucket, dest: Path, **kwargs: object) -> icanhazmodel.FetchResult:
    return asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=dest,
            endpoint_url=endpoint,
            **kwargs,  # type: ignore[arg-type]
        )
    )


def test_11_an_object_throttled_many_times_in_a_row_still_lands(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/hot", b"hot" * 1000)
    bucket.put("p/cold", b"cold")
    with fault_proxy(bucket.endpoint) as proxy:
        # "Retry-After: 0" keeps the test fast; backoff is test_retry's.
        proxy.add(
            Fault(key_contains="p/hot", status_503=True, times=12, add_headers={"Retry-After": "0"})
        )
        result = _fetch(proxy.endpoint, bucket, tmp_path)
        gets = proxy.requests("GET", "p/hot")
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/hot": b"hot" * 1000, "p/cold": b"cold"}
    assert len(gets) == 13  # twelve SlowDowns and the answer: nothing multiplied


def test_11_an_object_that_always_fails_is_asked_exactly_retries_plus_one_times(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/bad", b"bad")
    bucket.put("p/good", b"good")
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/bad", error=(500, "InternalError"), times=1000))
        result = _fetch(proxy.endpoint, bucket, tmp_path, retries=3)
        gets = proxy.requests("GET", "p/bad")
    [failure] = result.failures
    assert failure.key == "p/bad"
    assert "gave up after 4 attempts" in failure.reason
    assert len(gets) == 4  # botocore's own retries no longer multiply ours
    assert tree_of(tmp_path) == {"p/good": b"good"}


def test_11_retry_after_is_honoured(request_path: str, bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("p/hot", b"hot")
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/hot", status_503=True, add_headers={"Retry-After": "1"}))
        result = _fetch(proxy.endpoint, bucket, tmp_path)
        first, second = proxy.requests("GET", "p/hot")
    assert result.ok, result.problems
    assert second.at - first.at >= 1.0


def test_11_a_listing_page_that_fails_is_retried_not_fatal(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    bucket.put("p/a", b"a")
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(query_contains="list-type", status_503=True, times=3))
        proxy.add(Fault(query_contains="list-type", error=(500, "InternalError"), times=2))
        result = _fetch(proxy.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/a": b"a"}


@pytest.mark.parametrize("concurrency", [16, 64])
def test_11_a_busy_store_slows_the_run_down_and_loses_nothing(
    concurrency: int, request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    files = {f"p/{i:03d}": pattern(f"busy{i}", 1000) for i in range(200)}
    bucket.put_many(files)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.admit_per_second = 30  # busy even when a loaded machine runs it slowly
        result = _fetch(proxy.endpoint, bucket, tmp_path, concurrency=concurrency)
    assert result.ok, result.problems[:3]
    assert tree_of(tmp_path) == files
    assert proxy.throttled > 0  # it was busy


# -- 12: multipart layouts are checked wherever they can be -------------------------------


@pytest.mark.parametrize(
    ("size", "parts", "usual"),
    [
        (64 * MiB, 13, 5 * MiB),  # 64 MiB in 13 parts: 5 MiB parts, nothing else fits
        (12 * 5 * MiB + 1, 13, None),  # 5 MiB and 5 MB both fit
        (16 * MiB, 3, None),  # 6 and 7 MiB (and MB) fit: no guess
        (5 * MiB + 1, 2, None),
        (100 * 8_000_000, 100, 8_000_000),  # whole MB
        (10, 1, None),
    ],
)
def test_12_the_usual_part_size_is_inferred_only_when_one_fits(
    size: int, parts: int, usual: int | None
) -> None:
    assert usual_part_size(size, parts) == usual


def test_12_a_part_head_is_taken_for_the_part_only_when_it_says_so() -> None:
    obj = RemoteObject("k", 12 * MiB, "0" * 32 + "-3", 0.0)
    part = 5 * MiB
    assert told_size(PartHead(part, {}, f"bytes 0-{part - 1}/{12 * MiB}", 3), obj, 3, 0) == part
    assert told_size(PartHead(part, {}, None, 3), obj, 3, 0) == part  # moto: 200, no range
    assert told_size(PartHead(12 * MiB, {}), obj, 3, 0) is None  # the whole object
    assert told_size(PartHead(part, {}, f"bytes 0-{part - 1}/999", 3), obj, 3, 0) is None
    assert told_size(PartHead(part, {}, f"bytes 1-{part}/{12 * MiB}", 3), obj, 3, 0) is None
    assert told_size(PartHead(part, {}, None, 4), obj, 3, 0) is None  # another upload


def _upload(bucket: Bucket, sizes: list[int], seed: str) -> bytes:
    from tests.test_multipart import upload_in_parts

    data = pattern(seed, sum(sizes))
    upload_in_parts(bucket.plain_client(), bucket.name, "p/w.bin", data, sizes, None)
    return data


def _ignoring_part_numbers(proxy: FaultProxy) -> None:
    """A store (Ceph RGW, say) that answers HEAD ?partNumber=N with the whole object."""
    proxy.add(Fault(method="HEAD", query_contains="partNumber", drop_query=True, times=10**6))


def test_12_a_store_ignoring_part_numbers_gets_the_layout_inferred(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    data = _upload(bucket, [5 * MiB] * 12 + [4 * MiB], "rgw")
    with fault_proxy(bucket.endpoint) as proxy:
        _ignoring_part_numbers(proxy)
        result = _fetch(proxy.endpoint, bucket, tmp_path, concurrency=4)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {"etag-md5-multipart": 1}
    assert result.size_only == ()


def test_12_where_no_one_usual_size_fits_size_only_says_so_truly(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    data = _upload(bucket, [5 * MiB + 1, 5 * MiB + 1, 6 * MiB - 2], "rgw2")
    with fault_proxy(bucket.endpoint) as proxy:
        _ignoring_part_numbers(proxy)
        result = _fetch(proxy.endpoint, bucket, tmp_path)
    assert result.ok, result.problems
    assert tree_of(tmp_path) == {"p/w.bin": data}
    assert result.verification == {"size-only": 1}
    (only,) = result.size_only
    assert "answers HEAD with partNumber with the whole object" in only.reason
    assert "not exactly one usual part size" in only.reason


def test_12_a_wrong_inference_is_fetched_again_then_fails_by_name(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    """Parts of 5,300,000 bytes: only 5 MiB is a usual size that fits, and
    it is not theirs. The check fails, the object is fetched once more, then
    it fails like any mismatch, saying the part size was a guess."""
    _upload(bucket, [5_300_000] * 12 + [4_000_000], "rgw3")
    with fault_proxy(bucket.endpoint) as proxy:
        _ignoring_part_numbers(proxy)
        result = _fetch(proxy.endpoint, bucket, tmp_path, concurrency=4)
        plain_gets = [s for s in proxy.requests("GET", "w.bin") if "range" not in s.headers]
    [failure] = result.failures
    assert "etag-md5-multipart mismatch" in failure.reason
    assert "also after starting over" in failure.reason
    assert "--no-verify" in failure.reason
    assert len(plain_gets) == 1  # fetched again once, whole
    assert tree_of(tmp_path) == {}
