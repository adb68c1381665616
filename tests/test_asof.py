"""A prefix as it was at a time (``--at``): the pure choice of versions, checked
against a model with hypothesis, and runs against moto's versioned buckets."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

import icanhazmodel
from icanhazmodel._asof import AsOf, Entry, merged, parse_at
from icanhazmodel._errors import UsageError
from icanhazmodel._models import RemoteObject
from tests.conftest import Bucket, CliResult, run_cli, tree_of
from tests.faultproxy import Fault, fault_proxy

# -- which version of each key ------------------------------------------------------------

# (key, time, deleted) events: a key's history, in no particular order.
events = st.lists(
    st.tuples(st.sampled_from("abcde"), st.integers(0, 20), st.booleans()),
    max_size=40,
    unique_by=lambda e: (e[0], e[1]),
)


def entry(key: str, when: int, deleted: bool) -> Entry:
    obj = RemoteObject(key, 0 if deleted else when + 1, f"e{when}", float(when), (), f"v{when}")
    return Entry(obj, deleted)


@given(events, st.integers(-1, 21), st.integers(1, 7))
def test_each_key_takes_its_newest_entry_then_and_a_delete_marker_means_gone(
    history: list[tuple[str, int, bool]], at: int, page_size: int
) -> None:
    versions = [entry(k, t, False) for k, t, d in history if not d]
    markers = [entry(k, t, True) for k, t, d in history if d]
    listed = merged(versions, markers)  # by key, newest first, as S3 lists them
    pick = AsOf(float(at))
    chosen = []
    for start in range(0, len(listed), page_size):  # across page boundaries
        chosen += list(pick.feed(listed[start : start + page_size]))
    expected = []
    for key in sorted({k for k, _, _ in history}):
        then = [(t, d) for k, t, d in history if k == key and t <= at]
        if then and not max(then)[1]:
            expected.append((key, f"v{max(then)[0]}"))
    assert [(o.key, o.version_id) for o in chosen] == expected


@pytest.mark.parametrize(
    ("text", "when"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T12:30:00Z", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T14:30:00+02:00", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T12:30:00", datetime(2026, 11, 1, 12, 30, tzinfo=UTC)),
        ("2026-11-01T12:30:00.250Z", datetime(2026, 11, 1, 12, 30, 0, 250000, tzinfo=UTC)),
    ],
)
def test_at_reads_rfc3339_and_dates_in_utc(text: str, when: datetime) -> None:
    assert parse_at(text) == when.timestamp()


@pytest.mark.parametrize("text", ["yesterday", "2026-13-01", "1 Nov 2026", ""])
def test_at_that_is_not_a_time_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError, match="is not a time"):
        parse_at(text)


# -- against moto ---------------------------------------------------------------------------


def history(bucket: Bucket) -> float:
    """a and b, then (a second later) a new a, b deleted, c added: the time
    between the two."""
    bucket.client.put_bucket_versioning(
        Bucket=bucket.name, VersioningConfiguration={"Status": "Enabled"}
    )
    bucket.put_many({"m/a.bin": b"old a" * 1000, "m/b.txt": b"old b", "m/sub/d.txt": b"d"})
    listed = bucket.client.list_object_versions(Bucket=bucket.name, Prefix="m/")["Versions"]
    then = max(v["LastModified"].timestamp() for v in listed) + 0.5
    time.sleep(1.1)  # S3 times are to the second or millisecond: keep the two apart
    bucket.put("m/a.bin", b"new a" * 1000)
    bucket.delete("m/b.txt")
    bucket.put("m/c.txt", b"c")
    return then


AS_IT_WAS = {"m/a.bin": b"old a" * 1000, "m/b.txt": b"old b", "m/sub/d.txt": b"d"}


def cli(bucket: Bucket, *args: str) -> CliResult:
    return run_cli("-b", bucket.name, "--endpoint-url", bucket.endpoint, *args)


def stamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds")


def test_at_fetches_the_prefix_as_it_was(request_path: str, bucket: Bucket, tmp_path: Path) -> None:
    then = history(bucket)
    done = cli(bucket, "-k", "m", "-m", str(tmp_path), "--at", stamp(then))
    assert done.code == 0, done.stderr
    assert tree_of(tmp_path) == AS_IT_WAS
    now = cli(bucket, "-k", "m", "-m", str(tmp_path / "now"), "--at", stamp(time.time() + 5))
    assert now.code == 0, now.stderr
    assert tree_of(tmp_path / "now") == {
        "m/a.bin": b"new a" * 1000,
        "m/c.txt": b"c",
        "m/sub/d.txt": b"d",
    }


def test_at_works_with_filters_a_dry_run_and_a_lock(bucket: Bucket, tmp_path: Path) -> None:
    then = history(bucket)
    dry = cli(bucket, "-k", "m", "-m", str(tmp_path / "d"), "--at", stamp(then),
              "--exclude", "sub/*", "--dry-run", "--json")  # fmt: skip
    assert dry.code == 0, dry.stderr
    lines = [json.loads(line) for line in dry.stdout.splitlines()]
    planned = {line["key"] for line in lines if "action" in line}
    assert planned == {"m/a.bin", "m/b.txt"}
    lock_path = tmp_path / "then.lock"
    result = asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key="m", dest=tmp_path / "d",
                           endpoint_url=bucket.endpoint, at=datetime.fromtimestamp(then, UTC),
                           exclude=["sub/*"], lock=lock_path)
    )  # fmt: skip
    assert result.ok, result.problems
    lock = icanhazmodel.read_lock(lock_path)
    assert lock.at is not None
    assert [f.key for f in lock.files] == ["m/a.bin", "m/b.txt"]
    assert all(f.version_id for f in lock.files)
    again = cli(bucket, "--from-lock", str(lock_path), "-m", str(tmp_path / "again"))
    assert again.code == 0, again.stderr
    assert tree_of(tmp_path / "again") == {k: AS_IT_WAS[k] for k in ("m/a.bin", "m/b.txt")}


def test_at_with_the_key_of_one_object_fetches_that_object_as_it_was(
    bucket: Bucket, tmp_path: Path
) -> None:
    then = history(bucket)
    done = cli(bucket, "-k", "m/a.bin", "-m", str(tmp_path), "--at", stamp(then))
    assert done.code == 0, done.stderr
    assert tree_of(tmp_path) == {"m/a.bin": b"old a" * 1000}


def test_at_before_anything_existed_says_so(bucket: Bucket, tmp_path: Path) -> None:
    history(bucket)
    done = cli(bucket, "-k", "m", "-m", str(tmp_path), "--at", "2001-01-01")
    assert done.code != 0
    assert "as of 2001-01-01T00:00:00Z" in done.stderr
    assert not (tmp_path / "m").exists()


def test_at_on_a_bucket_without_versions_is_one_clear_line(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put("m/a", b"a")
    done = cli(bucket, "-k", "m", "-m", str(tmp_path), "--at", "2026-01-01")
    assert done.code == 2
    [line] = done.stderr.strip().splitlines()
    assert "--at needs a bucket that keeps versions" in line
    assert bucket.name in line
    assert not (tmp_path / "m").exists()


def test_at_with_shards_fetches_every_object_as_it_was_exactly_once(
    bucket: Bucket, tmp_path: Path
) -> None:
    then = history(bucket)
    keys = []
    for k in range(2):
        plan = asyncio.run(
            icanhazmodel.plan(
                bucket=bucket.name,
                key="m",
                dest=tmp_path,
                shard=f"{k}/2",
                endpoint_url=bucket.endpoint,
                at=stamp(then),
            )
        )
        keys += [o.key for o in plan.objects]
    assert sorted(keys) == sorted(AS_IT_WAS)


def test_a_throttled_page_of_versions_is_retried_not_fatal(bucket: Bucket, tmp_path: Path) -> None:
    then = history(bucket)
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(
            Fault(
                query_contains="versions",
                status_503=True,
                times=2,
                add_headers={"Retry-After": "0"},
            )
        )
        done = run_cli("-b", bucket.name, "--endpoint-url", proxy.endpoint, "-k", "m", "-m",
                       str(tmp_path), "--at", stamp(then))  # fmt: skip
        listings = [s for s in proxy.requests("GET", "") if "versions" in s.query]
    assert done.code == 0, done.stderr
    assert tree_of(tmp_path) == AS_IT_WAS
    assert len(listings) == 3  # two SlowDowns, then the page
