"""How many requests a process keeps in flight: found as the run goes, not guessed.

What the right number is depends on the network, not on the machine. Where
each request waits 20 ms for its first byte, 16 small files in flight make
800 requests a second and 64 make 3,200; where S3 paces each connection to
~50-100 MB/s, a big file needs dozens of connections to fill a fast link;
where a prefix is throttled, more requests only earn more ``503 SlowDown``.
No fixed ``-j`` is right for all three, so by default a run looks for its
level the way TCP looks for its window (additive increase, multiplicative
decrease), with a hill climb on top, since here more in flight costs CPU
and memory even where it loses nothing:

- it starts at :data:`START` and, every :data:`EPOCH` seconds in which the
  engine's slots were busy (the work, not the listing, was the limit), tries
  a higher level: twice as many until the first sign of trouble, a step of
  an eighth after;
- a higher level stays only if it moved at least :data:`GAIN` times the
  bytes a second the lower one did; else the run goes back to the lower
  one and tries again :data:`HOLD` seconds later (a network changes);
- throttling, a timeout or a 5xx (the retry policy hears each) cuts the
  level to :data:`BACKOFF` of itself, at most once an epoch, and growth
  stays careful for the rest of the run.

``-j N`` fixes the level at N (no search); ``-j auto`` searches up to
:data:`AUTO_CEILING` per process, while the memory those requests hold is
bounded apart (``_budget``): at most :data:`AUTO_STREAMS` streamed ranges'
worth (:data:`AUTO_TLS_STREAMS` over TLS), so the high levels go to small
files, which hold little. Each
worker process runs a window of its own: like TCP flows sharing a link,
windows that each back off on the store's signals share it, and the run's
level is their sum.

The engine's slots read :attr:`Window.level` (slot *k* works while *k* is
below it), so taking work costs no lock; the window only counts bytes and
looks at the clock.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import anyio

# Where a search starts. 2,500 x 16 KiB from a local server, 2 cores: from
# 16 the run took 3.1-3.5 s, from 32 3.0-3.2 s, and through a store that
# admits 400 requests/s 7.6-8.7 s against 7.2-7.7 s (from 64: no faster,
# more CPU). A search rarely climbed past 32 in a run this short.
START = 32
# The most a search goes to, per process. Small files, latency-bound, gain
# up to here: 2,500 x 16 KiB through 20 ms a request took 4.6-5.2 s at the
# old ceiling of 64, 4.3-4.6 s at 128 and 4.2-4.3 s at 256 (2 cores).
AUTO_CEILING = 256
# Ranges streamed at once, per process, under -j auto: what the memory
# budget is sized for (each may hold ~2 MiB; see _budget). What a process
# peaks at follows the server's speed: 4 x 128 MiB from s3rver peaked at
# 96-105 MiB with 64 streams, but 8 x 256 MiB from a faster server
# (../shared/bench/fastserve.py) at 124-131 MiB, about 52 MiB plus 1.2 MiB a
# stream, past the 128 MiB we hold to. With 48 it peaked at 107-112 MiB,
# with 32 at 86-89, in the same wall time (2.0-2.7 s; 2 cores), and through
# 20 MB/s a connection 48 streams were no slower than 64.
AUTO_STREAMS = 48
# The same over TLS. asyncio's TLS layer keeps a 256 KiB buffer and up to
# 256 KiB not yet decrypted per connection, and hands on each read as 16 KiB
# records joined again. 4 x 128 MiB over TLS, 2 cores, peaked at 125-163 MiB
# with 64 streams and 110-125 MiB with 32, in the same wall time.
AUTO_TLS_STREAMS = 32
FLOOR = 2  # the least a search backs off to
EPOCH = 0.4  # seconds over which a level's throughput is measured
GAIN = 1.10  # a higher level must move this much more to stay
HOLD = 2.0  # seconds at a level before a failed probe is tried again
BACKOFF = 0.7  # the level is cut to this much of itself on trouble
BUSY = 0.7  # the share of an epoch the slots must be full to try a higher level


def first_level(ceiling: int, adaptive: bool, start: int = START) -> int:
    """Where a window starts: *start* (if the ceiling allows), or the fixed level."""
    return min(start, max(1, ceiling)) if adaptive else max(1, ceiling)


class Window:
    """The level of requests in flight for one process (see the module's docs)."""

    def __init__(
        self,
        ceiling: int,
        *,
        adaptive: bool,
        start: int = START,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ceiling = max(1, ceiling)
        self.adaptive = adaptive
        self.level = first_level(ceiling, adaptive, start)
        self.peak = self.level
        self._clock = clock
        self._changed: anyio.Event | None = None  # set when the level rises
        # The epoch being measured.
        self._epoch_at = clock()
        self._bytes = 0
        self._busy = 0.0  # seconds of it with every slot working
        self._working = 0
        self._working_since = self._epoch_at
        # The search.
        self._probe: tuple[int, float] | None = None  # (level, rate) before a probe
        self._careful = False  # trouble was seen: grow by steps, not doubling
        self._hold_until = 0.0
        self._cut_at = -math.inf
        self.cuts = 0
        self.on_change: Callable[[int], None] | None = None  # told each new level
        self._announced = False

    # -- what the engine and the transfers tell it ------------------------------------

    def started(self) -> None:
        if not self._announced:  # its first request: the run shows its level from now
            self._announced = True
            if self.on_change is not None:
                self.on_change(self.level)
        self._account()
        self._working += 1

    def finished(self) -> None:
        self._account()
        self._working -= 1
        self._tick()

    def moved(self, nbytes: int) -> None:
        """*nbytes* more reached disk (or were taken back: negative)."""
        self._bytes += nbytes
        self._tick()

    def trouble(self) -> None:
        """A request was throttled, timed out or met a 5xx: back off."""
        if not self.adaptive:
            return
        now = self._clock()
        if now - self._cut_at < EPOCH:
            return  # one burst of 503s is one signal, not ten
        self._cut_at = now
        self._careful = True
        self._probe = None
        self._hold_until = now + EPOCH
        self.cuts += 1
        self._set(max(min(FLOOR, self.level), int(self.level * BACKOFF)))
        self._new_epoch(now)

    async def rose(self) -> None:
        """Return once the level rises (or :meth:`wake` is called)."""
        import anyio  # here: the settings import this module, and start must stay light

        if self._changed is None:
            self._changed = anyio.Event()
        await self._changed.wait()

    def wake(self) -> None:
        """Wake whoever waits in :meth:`rose` (the engine, at its end)."""
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    # -- the search -----------------------------------------------------------------------

    def _account(self) -> None:
        now = self._clock()
        if self._working >= self.level:
            self._busy += now - self._working_since
        self._working_since = now

    def _tick(self) -> None:
        if not self.adaptive:
            return
        now = self._clock()
        elapsed = now - self._epoch_at
        if elapsed < EPOCH:
            return
        self._account()
        rate = self._bytes / elapsed
        busy = self._busy / elapsed >= BUSY
        if self._probe is not None:
            before, before_rate = self._probe
            self._probe = None
            if rate < before_rate * GAIN:  # the higher level bought nothing: back
                self._set(before)
                self._hold_until = now + HOLD
                self._new_epoch(now)
                return
        if busy and now >= self._hold_until and self.level < self.ceiling:
            self._probe = (self.level, rate)
            step = max(1, self.level // 8) if self._careful else self.level
            self._set(min(self.ceiling, self.level + step))
        self._new_epoch(now)

    def _new_epoch(self, now: float) -> None:
        self._epoch_at = now
        self._working_since = now
        self._bytes = 0
        self._busy = 0.0

    def _set(self, level: int) -> None:
        if level == self.level:
            return
        rose = level > self.level
        self.level = level
        self.peak = max(self.peak, level)
        if rose:
            self.wake()
        if self.on_change is not None:
            self.on_change(level)
