"""The writer threads: a call that started runs to its end, even when the
task awaiting it is cancelled, and the wait for it costs no CPU. Brief calls
run on the loop's own thread until they turn out slow."""

from __future__ import annotations

import asyncio
import gc
import threading
import time

import anyio
import pytest

from icanhazmodel._writer import Writer


def test_a_cancelled_call_finishes_first_without_spinning() -> None:
    """A Ctrl-C while calls were queued used to make anyio re-cancel each
    waiting task at every turn of the loop: a busy loop that kept the writer
    threads from the GIL, and a run of small files took up to 7 s to stop."""
    writer = Writer(threads=1)
    finished = threading.Event()
    started = threading.Event()

    def slow() -> str:
        started.set()
        time.sleep(0.6)
        finished.set()
        return "done"

    async def main() -> tuple[float, float]:
        async with anyio.create_task_group() as tg:

            async def waiter() -> None:
                await writer.call(slow)

            tg.start_soon(waiter)
            await anyio.to_thread.run_sync(started.wait)
            wall, cpu = time.monotonic(), time.process_time()
            tg.cancel_scope.cancel()
        return time.monotonic() - wall, time.process_time() - cpu

    try:
        wall, cpu = anyio.run(main)
    finally:
        writer.close()
    assert finished.is_set()  # the cancelled task waited for its call
    assert wall >= 0.3
    assert cpu < 0.5 * wall, f"{cpu:.2f} s of CPU while waiting {wall:.2f} s"


def test_a_call_that_fails_after_cancellation_still_ends_the_task() -> None:
    writer = Writer(threads=1)
    started = threading.Event()

    def fails() -> None:
        started.set()
        time.sleep(0.2)
        raise OSError("disk gone")

    unhandled: list[dict[str, object]] = []

    async def main() -> str:
        asyncio.get_running_loop().set_exception_handler(lambda _, ctx: unhandled.append(ctx))
        async with anyio.create_task_group() as tg:
            tg.start_soon(writer.call, fails)
            await anyio.to_thread.run_sync(started.wait)
            tg.cancel_scope.cancel()
        return "ended"  # cancelled, not failed: the error was the call's, not the run's

    try:
        assert anyio.run(main) == "ended"
    finally:
        writer.close()
    gc.collect()  # an error nobody took is reported when its future goes
    # A worker printed "Future exception was never retrieved" under its
    # disk-full error, which then was no longer the last line.
    assert unhandled == []


@pytest.mark.parametrize("calls", [1, 20])
def test_results_come_back_to_each_caller(calls: int) -> None:
    writer = Writer(threads=2)

    async def main() -> list[int]:
        results: list[int] = [0] * calls

        async def one(i: int) -> None:
            results[i] = await writer.call(lambda: i * i)

        async with anyio.create_task_group() as tg:
            for i in range(calls):
                tg.start_soon(one, i)
        return results

    try:
        assert anyio.run(main) == [i * i for i in range(calls)]
    finally:
        writer.close()


def _brief_threads(pauses: list[float]) -> tuple[Writer, int, list[int]]:
    """Run one brief call per pause, each taking that long by the writer's
    clock (a fake one: a loaded machine must not change the verdict);
    return the writer, the loop's thread and the thread each call ran on."""
    ran_on: list[int] = []
    now = [0.0]
    writer = Writer(threads=1, clock=lambda: now[0])

    def call(pause: float) -> None:
        ran_on.append(threading.get_ident())
        now[0] += pause

    async def main() -> int:
        for pause in pauses:
            await writer.brief(call, pause)
        return threading.get_ident()

    try:
        loop_thread = anyio.run(main)
    finally:
        writer.close()
    return writer, loop_thread, ran_on


def test_brief_calls_run_on_the_loop_while_fast() -> None:
    _, loop_thread, ran_on = _brief_threads([0.0] * 50)
    assert ran_on == [loop_thread] * 50


def test_one_stall_alone_keeps_brief_calls_on_the_loop() -> None:
    """A filesystem that stalls once (a journal commit) is still fast."""
    writer, loop_thread, ran_on = _brief_threads([0.0, 0.05] + [0.0] * 20)
    assert ran_on == [loop_thread] * 22
    assert writer.briefs_inline


def test_brief_calls_move_to_the_threads_once_slow() -> None:
    """On a slow filesystem (a network mount) they would hold up every socket."""
    writer, loop_thread, ran_on = _brief_threads([0.005] * 10)
    # Capped at 4 ms each, the average passes 1 ms on the third call.
    assert ran_on[:3] == [loop_thread] * 3
    assert loop_thread not in ran_on[3:]
    assert not writer.briefs_inline


def test_an_error_in_a_brief_call_reaches_its_caller() -> None:
    writer = Writer(threads=1)

    def fails() -> None:
        raise OSError(28, "No space left on device")

    async def main() -> None:
        await writer.brief(fails)

    try:
        with pytest.raises(OSError, match="No space left"):
            anyio.run(main)
    finally:
        writer.close()
