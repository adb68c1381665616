"""The one retry policy: every request a run sends, on either path.

botocore's own retries are off (one attempt), so a request is retried here
and only here, and a message's count of attempts is the real one. What a
request may meet, and what happens:

- a transient failure (a dropped connection, a timeout, a 500): retried with
  capped exponential backoff and full jitter, up to ``attempts`` in all;
- throttling (503 SlowDown, 429, a Throttling code): the store asks for
  patience, not for giving up, so these do not use up attempts. They are
  retried, honouring ``Retry-After`` where the store sends one, until the
  request has been throttled for ``throttle_seconds`` (s5cmd keeps trying for
  about a minute too);
- anything else is not retried here.

A stream that breaks mid-body is not a request failing; the transfer resumes
it with a new request (see ``_transfer``), which this policy retries in turn.
"""

from __future__ import annotations

import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio

from ._models import RemoteObject
from ._objects import Body, HeadResult, ObjectError, ObjectSource, PartHead, TransientObjectError

T = TypeVar("T")

BACKOFF_BASE = 0.1
BACKOFF_CAP = 10.0
THROTTLE_BASE = 0.25  # a throttled store wants fewer requests: start slower
THROTTLE_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How long one request keeps trying (picklable: worker processes get it)."""

    attempts: int = 6  # for transient failures, in all (--retries + 1)
    throttle_seconds: float = THROTTLE_SECONDS

    @classmethod
    def from_retries(cls, retries: int) -> RetryPolicy:
        return cls(attempts=retries + 1)

    async def call(
        self,
        attempt: Callable[[], Awaitable[T]],
        *,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        clock: Callable[[], float] = time.monotonic,
        trouble: Callable[[], None] | None = None,
    ) -> T:
        """*attempt* until it succeeds, fails for good, or the budget is spent.

        Giving up raises :class:`ObjectError` saying how many attempts were
        made over how long, and the last failure. *trouble* hears every
        transient failure (the window of requests in flight backs off).
        """
        started = clock()
        tries = failures = 0
        throttled_since: float | None = None
        while True:
            tries += 1
            try:
                return await attempt()
            except TransientObjectError as exc:
                now = clock()
                if trouble is not None:
                    trouble()
                if exc.throttled:
                    throttled_since = now if throttled_since is None else throttled_since
                    left = self.throttle_seconds - (now - throttled_since)
                    delay = _throttle_delay(exc.retry_after, tries)
                    if left <= 0 or self.attempts <= 1:
                        raise _gave_up(tries, now - started, exc) from exc
                    await sleep(min(delay, left))
                    continue
                failures += 1
                if failures >= self.attempts:
                    raise _gave_up(tries, now - started, exc) from exc
                await sleep(backoff(failures - 1))


def backoff(failures: int) -> float:
    """Capped exponential backoff with full jitter, as botocore's standard mode."""
    return random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2**failures))


def _throttle_delay(retry_after: float | None, tries: int) -> float:
    """The store's own word (Retry-After) where it gave one, else backoff."""
    if retry_after is not None and retry_after >= 0:
        return retry_after
    return random.uniform(0, min(BACKOFF_CAP, THROTTLE_BASE * 2 ** min(tries, 16)))


def _gave_up(tries: int, seconds: float, exc: TransientObjectError) -> ObjectError:
    over = f" over {seconds:.0f} s" if seconds >= 1 else ""
    what = "attempt" if tries == 1 else "attempts"
    return ObjectError(f"gave up after {tries} {what}{over}: {exc}")


class Retrying:
    """An object source whose every request the policy retries: what a
    transfer fetches through, in the parent and in worker processes alike."""

    def __init__(
        self,
        source: ObjectSource,
        policy: RetryPolicy,
        trouble: Callable[[], None] | None = None,
    ) -> None:
        self._source = source
        self._policy = policy
        self._trouble = trouble  # told of every transient failure
        self.bucket = source.bucket

    async def open_body(
        self,
        obj: RemoteObject,
        *,
        start: int = 0,
        end: int | None = None,
        if_match: bool = True,
        want_checksum: bool = False,
    ) -> Body:
        return await self._policy.call(
            lambda: self._source.open_body(
                obj, start=start, end=end, if_match=if_match, want_checksum=want_checksum
            ),
            trouble=self._trouble,
        )

    async def stat(self, obj: RemoteObject) -> HeadResult:
        return await self._policy.call(lambda: self._source.stat(obj), trouble=self._trouble)

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        return await self._policy.call(
            lambda: self._source.part_head(obj, number), trouble=self._trouble
        )
