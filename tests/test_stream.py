"""Files as they land: icanhazmodel.stream, fetch(on_file=...) and iter_files (issue 11)."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path

import pytest

import icanhazmodel
from icanhazmodel import LandedFile, NothingToFetch, Status
from tests.conftest import Bucket, tree_of
from tests.faultproxy import Fault, fault_proxy
from tests.sample_tree import pattern
from tests.test_processes import alive, descendants

KiB = 1 << 10


def fill(bucket: Bucket, count: int, size: int = 2 * KiB) -> dict[str, bytes]:
    objects = {f"p/{i:03d}.bin": pattern(f"s{i}", size) for i in range(count)}
    for key, data in objects.items():
        bucket.put(key, data)
    return objects


def temp_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if "icanhazmodel-partial" in p.name]


def no_worker_left(before: set[int]) -> bool:
    """Every child process this run started has gone (it may take a moment to be reaped)."""
    deadline = time.monotonic() + 2
    while time.monotonic() < deadline:
        if not [pid for pid in descendants(os.getpid()) if pid not in before and alive(pid)]:
            return True
        time.sleep(0.05)
    return False


def test_files_come_as_they_land_and_a_slow_one_comes_last(bucket: Bucket, tmp_path: Path) -> None:
    objects = fill(bucket, 8)
    slow = pattern("slow", 200 * KiB)
    bucket.put("p/slow.bin", slow)

    async def consume(endpoint: str) -> tuple[list[LandedFile], icanhazmodel.FetchResult]:
        seen = []
        async with icanhazmodel.stream(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=endpoint, concurrency=4
        ) as files:
            async for f in files:
                assert f.path is not None
                # On disk, whole and checked, by the time it is yielded.
                assert f.path.read_bytes() == (slow if f.key == "p/slow.bin" else objects[f.key])
                seen.append(f)
        return seen, files.result

    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="slow.bin", throttle=200 * KiB))  # ~1 s
        seen, result = asyncio.run(consume(proxy.endpoint))
    assert [f.key for f in seen][-1] == "p/slow.bin"
    assert sorted(f.key for f in seen) == sorted([*objects, "p/slow.bin"])
    assert {(f.status, f.verification) for f in seen} == {(Status.DOWNLOADED, "crc32")}
    assert all(f.ok for f in seen)
    assert result.downloaded == 9


def test_unchanged_and_failed_objects_are_in_the_stream_too(bucket: Bucket, tmp_path: Path) -> None:
    objects = fill(bucket, 3)
    asyncio.run(
        icanhazmodel.fetch(bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint)
    )
    bucket.put("p/new.bin", b"new")
    bucket.put("p/broken.bin", b"broken")

    async def consume(endpoint: str) -> list[LandedFile]:
        async with icanhazmodel.stream(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=endpoint, retries=0
        ) as files:
            return [f async for f in files]

    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="broken.bin", times=10, error=(500, "InternalError")))
        seen = asyncio.run(consume(proxy.endpoint))
    by_key = {f.key: f for f in seen}
    assert {k: by_key[k].status for k in objects} == dict.fromkeys(objects, Status.SKIPPED)
    assert by_key["p/new.bin"].status is Status.DOWNLOADED
    broken = by_key["p/broken.bin"]
    assert broken.status is Status.FAILED
    assert "InternalError" in broken.reason or "500" in broken.reason
    assert not broken.ok
    assert broken.path == tmp_path / "p" / "broken.bin"
    assert not broken.path.exists()


@pytest.mark.parametrize("opener", ["stream", "plan_stream"])
def test_a_run_wide_error_is_raised_from_the_loop(
    bucket: Bucket, tmp_path: Path, opener: str
) -> None:
    async def consume() -> None:
        async with getattr(icanhazmodel, opener)(
            bucket=bucket.name, key="nothing-here", dest=tmp_path, endpoint_url=bucket.endpoint
        ) as records:
            async for _ in records:
                pass

    with pytest.raises(NothingToFetch):
        asyncio.run(consume())


@pytest.mark.parametrize("processes", [1, 2])
def test_leaving_early_stops_the_run_within_two_seconds(
    bucket: Bucket, tmp_path: Path, processes: int
) -> None:
    fill(bucket, 24, 300 * KiB)
    before = set(descendants(os.getpid()))

    async def consume(endpoint: str) -> float:
        async with icanhazmodel.stream(
            bucket=bucket.name,
            key="p",
            dest=tmp_path,
            endpoint_url=endpoint,
            concurrency=2,
            processes=processes,
        ) as files:
            async for _ in files:
                break  # the first one is enough
            left = time.monotonic()
        return time.monotonic() - left

    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/", times=1000, throttle=300 * KiB))  # ~1 s an object
        took = asyncio.run(consume(proxy.endpoint))
    assert took < 2.0
    assert temp_files(tmp_path) == []
    assert 1 <= len(tree_of(tmp_path)) < 24
    assert no_worker_left(before)


def test_a_consumer_that_sleeps_stalls_and_fails_nothing(bucket: Bucket, tmp_path: Path) -> None:
    objects = fill(bucket, 30)

    async def consume() -> icanhazmodel.FetchResult:
        async with icanhazmodel.stream(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint, buffer=2
        ) as files:
            async for _ in files:
                await asyncio.sleep(0.05)
        return files.result

    result = asyncio.run(consume())
    assert result.ok
    assert result.downloaded == 30
    assert tree_of(tmp_path) == objects


def test_result_is_refused_until_every_record_is_read(bucket: Bucket, tmp_path: Path) -> None:
    fill(bucket, 2)

    async def consume() -> None:
        async with icanhazmodel.stream(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint
        ) as files:
            with pytest.raises(RuntimeError, match="read every record"):
                _ = files.result
            assert len([f async for f in files]) == 2
            assert files.result.downloaded == 2

    asyncio.run(consume())


@pytest.mark.parametrize("kind", ["sync", "async"])
def test_on_file_is_called_for_each_file(bucket: Bucket, tmp_path: Path, kind: str) -> None:
    objects = fill(bucket, 5)
    called: list[str] = []

    def sync_callback(f: LandedFile) -> None:
        called.append(f.key)

    async def async_callback(f: LandedFile) -> None:
        await asyncio.sleep(0)
        called.append(f.key)

    callback = sync_callback if kind == "sync" else async_callback
    result = asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name,
            key="p",
            dest=tmp_path,
            endpoint_url=bucket.endpoint,
            on_file=callback,
        )
    )
    assert sorted(called) == sorted(objects)
    assert result.downloaded == 5


def test_a_callback_that_raises_stops_the_run_with_that_exception(
    bucket: Bucket, tmp_path: Path
) -> None:
    fill(bucket, 20, 300 * KiB)
    before = set(descendants(os.getpid()))

    def callback(f: LandedFile) -> None:
        raise ValueError(f"no thanks: {f.key}")

    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/", times=1000, throttle=600 * KiB))
        started = time.monotonic()
        with pytest.raises(ValueError, match="no thanks"):
            asyncio.run(
                icanhazmodel.fetch(
                    bucket=bucket.name,
                    key="p",
                    dest=tmp_path,
                    endpoint_url=proxy.endpoint,
                    concurrency=2,
                    processes=2,
                    on_file=callback,
                )
            )
        took = time.monotonic() - started
    assert took < 5  # 20 objects at ~0.5 s each, two at a time, would take 5 s
    assert temp_files(tmp_path) == []
    assert no_worker_left(before)


def test_iter_files_runs_in_a_thread_of_its_own(bucket: Bucket, tmp_path: Path) -> None:
    objects = fill(bucket, 6)
    seen: list[str] = []
    results: list[icanhazmodel.FetchResult | None] = []

    def script() -> None:  # not async, and not on the main thread
        files = icanhazmodel.iter_files(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=bucket.endpoint
        )
        for f in files:
            assert f.path is not None
            seen.append(f.path.relative_to(tmp_path).as_posix())
        results.append(files.result)

    thread = threading.Thread(target=script)
    thread.start()
    thread.join(60)
    assert sorted(seen) == sorted(objects)
    assert results[0] is not None
    assert results[0].downloaded == 6


def test_closing_iter_files_early_stops_the_run(bucket: Bucket, tmp_path: Path) -> None:
    fill(bucket, 24, 300 * KiB)
    before = set(descendants(os.getpid()))
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(Fault(key_contains="p/", times=1000, throttle=300 * KiB))
        with icanhazmodel.iter_files(
            bucket=bucket.name, key="p", dest=tmp_path, endpoint_url=proxy.endpoint, concurrency=2
        ) as files:
            first = next(files)
            left = time.monotonic()
        took = time.monotonic() - left
    assert first.status is Status.DOWNLOADED
    assert took < 2.0
    with pytest.raises(RuntimeError, match="left early"):
        _ = files.result  # it never finished
    assert temp_files(tmp_path) == []
    assert no_worker_left(before)


def test_a_dry_run_is_not_a_stream(bucket: Bucket, tmp_path: Path) -> None:
    with pytest.raises(icanhazmodel.UsageError, match="plan"):
        icanhazmodel.iter_files(bucket=bucket.name, key="p", dest=tmp_path, dry_run=True)  # type: ignore[call-arg]


@pytest.mark.parametrize("folders", [False, True])
def test_folder_markers_come_only_when_asked(bucket: Bucket, tmp_path: Path, folders: bool) -> None:
    objects = fill(bucket, 2)
    bucket.put("p/empty/")  # a folder marker: a directory to make, no file

    async def consume() -> list[LandedFile]:
        async with icanhazmodel.stream(
            bucket=bucket.name,
            key="p",
            dest=tmp_path,
            endpoint_url=bucket.endpoint,
            folders=folders,
        ) as files:
            return [f async for f in files]

    seen = asyncio.run(consume())
    marked = [f for f in seen if f.status is Status.FOLDER]
    assert sorted(f.key for f in seen if f.status is Status.DOWNLOADED) == sorted(objects)
    assert (tmp_path / "p" / "empty").is_dir()
    if folders:
        assert [(f.key, f.ok) for f in marked] == [("p/empty/", True)]
        assert marked[0].path == tmp_path / "p" / "empty"
    else:
        assert marked == []


# -- plan_stream: a dry run's plan, one object at a time -----------------------------


def test_plan_stream_yields_what_plan_holds_in_the_same_order(
    bucket: Bucket, tmp_path: Path
) -> None:
    objects = fill(bucket, 6)
    bucket.put("p/006.bin/inner", b"under a file: refused")  # a file and a folder at once
    bucket.put("p/empty/", b"")  # a folder marker
    dest = tmp_path / "ptms"
    first = asyncio.run(
        icanhazmodel.fetch(
            bucket=bucket.name, key="p/003.bin", dest=dest, endpoint_url=bucket.endpoint
        )
    )
    assert first.downloaded == 1  # so the plan has a skip too
    bucket.put("p/006.bin", b"now a file")
    before = tree_of(dest)

    async def streamed() -> tuple[list[icanhazmodel.PlannedObject], icanhazmodel.Plan]:
        async with icanhazmodel.plan_stream(
            bucket=bucket.name, key="p", dest=dest, endpoint_url=bucket.endpoint, buffer=1
        ) as plans:
            with pytest.raises(RuntimeError, match="read every record"):
                _ = plans.plan
            got = [o async for o in plans]
        return got, plans.plan

    got, totals = asyncio.run(streamed())
    held = asyncio.run(
        icanhazmodel.plan(bucket=bucket.name, key="p", dest=dest, endpoint_url=bucket.endpoint)
    )
    assert got == list(held.objects)
    assert sorted(o.key for o in got) == sorted(
        [*objects, "p/006.bin", "p/006.bin/inner", "p/empty/"]
    )
    actions = {o.key: o.action for o in got}
    assert actions["p/003.bin"] is icanhazmodel.Action.SKIP
    assert actions["p/006.bin/inner"] is icanhazmodel.Action.REFUSED
    assert actions["p/empty/"] is icanhazmodel.Action.FOLDER
    assert totals.objects == ()  # streamed, not held
    for action in icanhazmodel.Action:
        assert totals.count(action) == held.count(action)
    assert totals.bytes_to_download == held.bytes_to_download
    assert tree_of(dest) == before  # a plan writes nothing


def test_a_full_stream_holds_the_run_until_a_record_is_read() -> None:
    """What pauses the listing: room() waits while *buffer* records are unread."""

    async def scenario() -> list[str]:
        plans = icanhazmodel.PlanStream(buffer=2)
        steps: list[str] = []

        async def producer() -> None:
            for name in ("a", "b", "c"):
                await plans.room()
                steps.append(f"put {name}")
                plans.put(icanhazmodel.PlannedObject(name, 1, name, icanhazmodel.Action.DOWNLOAD))

        task = asyncio.create_task(producer())
        await asyncio.sleep(0.05)
        steps.append("read")
        assert (await anext(plans)).key == "a"
        await asyncio.sleep(0.05)
        await task
        return steps

    assert asyncio.run(scenario()) == ["put a", "put b", "read", "put c"]
