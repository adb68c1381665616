"""Requests in flight (``_window``): the search with a fake clock, the engine's
slots following the level, and a run against a real server that throttles."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import anyio
import pytest

import icanhazmodel
from icanhazmodel._engine import Engine
from icanhazmodel._window import BACKOFF, EPOCH, GAIN, HOLD, START, Window
from tests.conftest import Bucket, CliResult, run_cli, tree_of
from tests.faultproxy import Fault, fault_proxy

MiB = 1 << 20


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def busy_epoch(window: Window, clock: Clock, rate: float) -> None:
    """One epoch with every slot working, moving *rate* bytes a second."""
    working = window.level
    for _ in range(working):
        window.started()
    clock.now += EPOCH
    window.moved(int(rate * EPOCH))
    for _ in range(working):
        window.finished()


def test_a_fixed_level_never_moves() -> None:
    clock = Clock()
    window = Window(8, adaptive=False, clock=clock)
    assert window.level == 8
    for rate in (1e6, 1e7, 1e8):
        busy_epoch(window, clock, rate)
    window.trouble()
    assert window.level == 8
    assert window.peak == 8


def test_the_search_doubles_while_more_in_flight_buys_more_speed() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    assert window.level == 16
    busy_epoch(window, clock, 1e6)  # measured at 16: try 32
    assert window.level == 32
    busy_epoch(window, clock, 2e6)  # 32 moved twice as much: keep it, try 64
    assert window.level == 64
    busy_epoch(window, clock, 4e6)  # the ceiling
    assert window.level == 64
    assert window.peak == 64


def test_a_higher_level_that_buys_nothing_is_given_back_then_tried_again_later() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    busy_epoch(window, clock, 1e6)
    assert window.level == 32
    busy_epoch(window, clock, 1e6 * (GAIN - 0.05))  # not enough more: back to 16
    assert window.level == 16
    held = 0
    while window.level == 16:  # held there for a while, then it tries again
        busy_epoch(window, clock, 1e6)
        held += 1
    assert window.level == 32
    assert held == round(HOLD / EPOCH)


def test_slots_not_all_busy_means_the_work_is_the_limit_not_the_level() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    for _ in range(3):
        window.started()  # 3 of 16 slots working: the listing is the limit
        clock.now += EPOCH
        window.moved(10 * MiB)
        for _ in range(3):
            window.finished()
        window.finished()
    assert window.level == 16


def test_trouble_cuts_the_level_once_an_epoch_and_growth_turns_careful() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    busy_epoch(window, clock, 1e6)
    busy_epoch(window, clock, 2e6)
    assert window.level == 64
    window.trouble()
    assert window.level == int(64 * BACKOFF) == 44
    window.trouble()  # the same burst of 503s: one signal
    assert window.level == 44
    clock.now += EPOCH
    window.trouble()  # a later one cuts again
    assert window.level == int(44 * BACKOFF) == 30
    assert window.cuts == 2
    busy_epoch(window, clock, 1e6)
    busy_epoch(window, clock, 1e6)  # measured at 30 after the hold: try 30 + 30 // 8
    assert window.level == 33


def test_trouble_never_takes_the_level_to_zero() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    for _ in range(30):
        clock.now += EPOCH
        window.trouble()
    assert window.level == 2


def test_each_new_level_is_told_and_the_first_one_at_the_first_request() -> None:
    clock = Clock()
    window = Window(64, adaptive=True, start=16, clock=clock)
    told: list[int] = []
    window.on_change = told.append
    window.started()
    window.finished()
    assert told == [16]
    busy_epoch(window, clock, 1e6)
    clock.now += EPOCH
    window.trouble()
    assert told == [16, 32, 22]


# -- the engine's slots follow the level --------------------------------------------------


def test_the_engine_runs_as_many_steps_at_once_as_the_level_says() -> None:
    async def main() -> list[int]:
        window = Window(8, adaptive=True, start=2)
        engine = Engine(None, window, streams=8)  # type: ignore[arg-type]  # steps need no transfers
        running = 0
        seen: list[int] = []
        release = anyio.Event()

        async def step() -> None:
            nonlocal running
            running += 1
            seen.append(running)
            await release.wait()
            running -= 1

        async with engine.running():
            for _ in range(6):
                await engine.put(step)
            await anyio.sleep(0.05)
            at_two = running
            window._set(5)  # the level rises: parked slots take work
            await anyio.sleep(0.05)
            at_five = running
            release.set()
        return [at_two, at_five, max(seen)]

    assert asyncio.run(main()) == [2, 5, 5]


def test_streamed_ranges_are_bounded_by_memory_not_by_the_level() -> None:
    """At level 8 with memory for 2 streams, 2 ranges run at once; small
    objects (see test_budget) would fill the other slots."""

    async def main() -> int:
        window = Window(8, adaptive=False)
        engine = Engine(None, window, streams=2)  # type: ignore[arg-type]
        running = most = 0

        async def step() -> None:  # another process's span: a stream's worth
            nonlocal running, most
            running += 1
            most = max(most, running)
            await anyio.sleep(0.01)
            running -= 1

        async with engine.running():
            for _ in range(12):
                await engine.put(step)
        assert engine.budget.free == engine.budget.limit
        return most

    assert asyncio.run(main()) == 2


def test_the_engine_ends_even_with_slots_parked_above_the_level() -> None:
    async def main() -> int:
        window = Window(16, adaptive=True, start=1)
        engine = Engine(None, window, streams=16)  # type: ignore[arg-type]
        done = 0

        async def step() -> None:
            nonlocal done
            done += 1

        with anyio.fail_after(5):
            async with engine.running():
                for _ in range(10):
                    await engine.put(step)
        return done

    assert asyncio.run(main()) == 10


# -- against a real server ----------------------------------------------------------------


class Levels:
    """A Reporter that keeps each level of requests in flight it is told."""

    def __init__(self) -> None:
        self.levels: list[int] = []

    def in_flight(self, level: int) -> None:
        self.levels.append(level)

    def listed(self, files: int, nbytes: int) -> None: ...
    def file_started(self, key: str, size: int) -> None: ...
    def advanced(self, key: str, nbytes: int) -> None: ...
    def file_done(self, key: str) -> None: ...
    def message(self, text: str) -> None: ...
    def close(self) -> None: ...


def test_a_throttled_store_brings_the_level_down_and_every_file_still_lands(
    request_path: str, bucket: Bucket, tmp_path: Path
) -> None:
    objects = {f"p/{i:03d}": bytes([i]) * 2000 for i in range(40)}
    bucket.put_many(objects)
    levels = Levels()
    with fault_proxy(bucket.endpoint) as proxy:
        proxy.add(
            Fault(key_contains="p/0", status_503=True, times=6, add_headers={"Retry-After": "0"})
        )
        result = asyncio.run(
            icanhazmodel.fetch(
                bucket=bucket.name,
                key="p",
                dest=tmp_path,
                endpoint_url=proxy.endpoint,
                progress=levels,  # type: ignore[arg-type]  # the optional methods only
            )
        )
    assert result.ok, result.problems
    assert tree_of(tmp_path) == objects
    told = levels.levels
    assert told[0] == START  # the first process to fetch, at its start
    # The SlowDowns cut it (summed over processes, where several fetch).
    assert any(later < earlier for earlier, later in itertools.pairwise(told))
    assert result.in_flight_peak == max(told)


def cli(bucket: Bucket, *args: str) -> CliResult:
    return run_cli("-b", bucket.name, "--endpoint-url", bucket.endpoint, *args)


def test_json_says_the_level_found_and_a_fixed_one(bucket: Bucket, tmp_path: Path) -> None:
    bucket.put_many({f"p/{i}": b"x" * 100 for i in range(5)})
    auto = cli(bucket, "-k", "p", "-m", str(tmp_path / "a"), "--json", "-P", "1")
    fixed = cli(bucket, "-k", "p", "-m", str(tmp_path / "b"), "--json", "-P", "1", "-j", "3")
    assert auto.code == 0, auto.stderr
    assert fixed.code == 0, fixed.stderr
    auto_doc, fixed_doc = json.loads(auto.stdout), json.loads(fixed.stdout)
    assert auto_doc["in_flight"] == auto_doc["in_flight_peak"] == START
    assert fixed_doc["in_flight"] == fixed_doc["in_flight_peak"] == 3


@pytest.mark.parametrize("value", ["0", "many", "513"])
def test_a_bad_concurrency_is_one_clear_line(bucket: Bucket, tmp_path: Path, value: str) -> None:
    done = cli(bucket, "-k", "p", "-m", str(tmp_path), "-j", value)
    assert done.code == 2
    [line] = done.stderr.strip().splitlines()
    assert "--concurrency must be 'auto' or" in line
    assert value in line
    assert not (tmp_path / "p").exists()


# -- where the level shows --------------------------------------------------------------------


def test_the_level_shows_on_the_bar_and_in_the_log_line() -> None:
    import io

    from icanhazmodel._progress import LineReporter, TqdmReporter

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    bars = TqdmReporter(Terminal())
    bars._total.dynamic_ncols = lambda _: (200, 24)
    bars.listed(3, 3 * MiB)
    assert "in flight" not in str(bars._total)  # nothing in flight yet: nothing said
    bars.in_flight(48)
    assert "0/3+ files, listing, 48 in flight" in str(bars._total)
    bars.close()

    now = [0.0]
    out = io.StringIO()
    line = LineReporter(out, every=5.0, clock=lambda: now[0])
    line.listed(2, 200)
    line.in_flight(23)
    now[0] = 6.0
    line.advanced("a", 100)
    assert out.getvalue().rstrip().endswith(", 23 requests in flight")
