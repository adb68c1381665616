"""The one retry policy (``_retry``), with a fake clock: what is retried, how
often, for how long, and what the message says."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest

from icanhazmodel._objects import ObjectError, TransientObjectError
from icanhazmodel._retry import RetryPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def failing(errors: list[BaseException]) -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises *errors* in turn, then answers "ok"."""
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if errors:
            raise errors.pop(0)
        return "ok"

    return attempt, calls


def run(policy: RetryPolicy, attempt: Callable[[], Awaitable[str]], clock: Clock) -> str:
    return asyncio.run(policy.call(attempt, sleep=clock.sleep, clock=clock))


def test_a_transient_failure_is_tried_attempts_times_in_all() -> None:
    clock = Clock()
    attempt, calls = failing([TransientObjectError("S3 error 500")] * 5)
    assert run(RetryPolicy(attempts=6), attempt, clock) == "ok"
    assert calls[0] == 6
    attempt, calls = failing([TransientObjectError("S3 error 500")] * 6)
    with pytest.raises(ObjectError, match=r"^gave up after 6 attempts( over \d+ s)?: S3 error 500"):
        run(RetryPolicy(attempts=6), attempt, clock)
    assert calls[0] == 6


def test_throttling_uses_time_not_attempts() -> None:
    clock = Clock()
    slow_down = [TransientObjectError("S3 error SlowDown", throttled=True) for _ in range(40)]
    attempt, calls = failing(slow_down)
    assert run(RetryPolicy(attempts=6, throttle_seconds=600), attempt, clock) == "ok"
    assert calls[0] == 41


def test_a_request_throttled_for_the_whole_budget_gives_up_and_says_how_long() -> None:
    clock = Clock()
    always = [TransientObjectError("S3 error SlowDown", throttled=True) for _ in range(10_000)]
    attempt, calls = failing(always)
    with pytest.raises(ObjectError) as raised:
        run(RetryPolicy(attempts=6, throttle_seconds=60), attempt, clock)
    assert 59 <= clock.now <= 61
    assert str(raised.value).startswith(f"gave up after {calls[0]} attempts over 60 s")
    assert max(clock.slept) <= 10


def test_retry_after_is_honoured() -> None:
    clock = Clock()
    attempt, _ = failing([TransientObjectError("S3 error SlowDown", throttled=True, retry_after=7)])
    assert run(RetryPolicy(), attempt, clock) == "ok"
    assert clock.slept == [7]


def test_no_retries_means_one_attempt_even_when_throttled() -> None:
    clock = Clock()
    attempt, calls = failing([TransientObjectError("S3 error SlowDown", throttled=True)])
    with pytest.raises(ObjectError, match=r"^gave up after 1 attempt: "):
        run(RetryPolicy(attempts=1), attempt, clock)
    assert calls[0] == 1


def test_what_is_not_transient_is_not_retried() -> None:
    clock = Clock()
    attempt, calls = failing([ObjectError("S3 error AccessDenied")])
    with pytest.raises(ObjectError, match=r"^S3 error AccessDenied$"):
        run(RetryPolicy(), attempt, clock)
    assert calls[0] == 1
    assert clock.slept == []
