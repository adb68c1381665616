"""Memory held by requests in flight: a budget in bytes, taken before each
request starts and given back when it ends.

How many requests a process keeps in flight is the window's to find
(``_window``), but what they hold differs by a hundredfold: a 16 KiB object
read whole holds 16 KiB, a range streamed to disk up to ~2 MiB (the unread
socket buffer, a write batch and a read). Counting both alike meant either
too few small files in flight where latency rules (each waits 20-50 ms for
its first byte) or too much memory for big ones. So the window counts
requests, up to :data:`~._window.AUTO_CEILING`, and this budget, sized for
:data:`~._window.AUTO_STREAMS` streamed ranges (:data:`~._window.AUTO_TLS_STREAMS`
over TLS), bounds their memory.
"""

from __future__ import annotations

import collections

import anyio

MiB = 1 << 20
# What one streamed range may hold at most: the connection's unread bytes
# (``_http.HIGH_WATER``, 768 KiB, plus one socket read of 256 KiB), a write
# batch (``_transfer.WRITE_BATCH``, 512 KiB) and the read in hand.
STREAM_COST = 2 * MiB
# What any request holds at least: its connection's buffers and bookkeeping.
MIN_COST = 64 * 1024


class Budget:
    """Bytes that requests in flight may hold at once, handed out in turn."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.free = limit
        self._waiting: collections.deque[tuple[int, anyio.Event]] = collections.deque()

    async def take(self, amount: int) -> None:
        """Wait until *amount* bytes are free (and nobody waits before us), then hold them."""
        amount = min(amount, self.limit)
        if not self._waiting and amount <= self.free:
            self.free -= amount
            return
        turn = (amount, anyio.Event())
        self._waiting.append(turn)
        try:
            await turn[1].wait()
        except BaseException:
            if turn in self._waiting:
                self._waiting.remove(turn)
            else:  # granted as it was cancelled: not ours to keep
                self.give(amount)
            raise

    def give(self, amount: int) -> None:
        """Return bytes taken, and hand them to whoever waits first, if they fit."""
        self.free += min(amount, self.limit)
        while self._waiting and self._waiting[0][0] <= self.free:
            amount, event = self._waiting.popleft()
            self.free -= amount
            event.set()
