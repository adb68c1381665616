"""Progress reporting: tqdm bars on a terminal, plain lines in logs, or nothing.

The pipeline calls a :class:`Reporter`; it never imports tqdm itself. Calls
arrive from the event loop thread only, many times a second, so each
implementation keeps them cheap and lets the display refresh at its own pace.
"""

from __future__ import annotations

import collections
import sys
import time
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tqdm import tqdm

# Per-file bars: enough to see the big transfers, few enough to fit a screen.
FILE_BAR_SLOTS = 8
# Files smaller than this finish too fast for a bar of their own to help.
FILE_BAR_MIN_BYTES = 4 << 20


class Reporter(Protocol):
    """What a run tells about its progress. A reporter may also have

    - ``listing_done()``: called once the whole listing is in, so the totals
      stop growing (the built-in bars say "listing" until then);
    - ``resumed(key, nbytes)``: *nbytes* of *key* an earlier run left on
      disk count as done, but not toward the speed (without it they come
      to ``advanced``);
    - ``in_flight(level)``: the run now keeps *level* requests in flight,
      over all its processes (``-j auto`` moves it as the run goes).
    """

    def listed(self, files: int, nbytes: int) -> None:
        """More objects were found: grow the totals."""

    def file_started(self, key: str, size: int) -> None:
        """A download of *key* (or its first range) began."""

    def advanced(self, key: str, nbytes: int) -> None:
        """*nbytes* more of *key* reached disk (negative to rewind a retry)."""

    def file_done(self, key: str) -> None:
        """*key* landed, was skipped, or failed: it is no longer in flight."""

    def message(self, text: str) -> None:
        """A line for the user (a refused key, a retry) that must not break bars."""

    def close(self) -> None:
        """The run is over."""


class Notes:
    """Messages raised in worker threads, told to a reporter on the event loop.

    Reporters are called from the event loop only; code running in a thread
    (the manifest, the file layer) leaves its messages here instead.
    """

    def __init__(self) -> None:
        self._items: collections.deque[str] = collections.deque()

    def add(self, text: str) -> None:
        self._items.append(text)  # deque.append is atomic: safe from any thread

    def pop(self) -> str | None:
        try:
            return self._items.popleft()
        except IndexError:
            return None

    def say(self, reporter: Reporter) -> None:
        while (text := self.pop()) is not None:
            reporter.message(text)


class NullReporter:
    """Reports nothing: the library default."""

    def listed(self, files: int, nbytes: int) -> None:
        pass

    def file_started(self, key: str, size: int) -> None:
        pass

    def advanced(self, key: str, nbytes: int) -> None:
        pass

    def file_done(self, key: str) -> None:
        pass

    def message(self, text: str) -> None:
        pass

    def close(self) -> None:
        pass


class MessageReporter(NullReporter):
    """No progress, but messages still go to a stream (for --no-progress)."""

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._stream = stream

    def message(self, text: str) -> None:
        print(text, file=self._stream or sys.stderr, flush=True)


# Below this many columns a bar drops its name and its bar, keeping what
# matters (percent, bytes, files); a size is never cut mid-number.
NARROW_COLUMNS = 60
# An ETA from the first moments (one slow first byte) reads "22:24:12": none
# is shown until the rate has had this long to settle.
ETA_AFTER_SECONDS = 3.0

_WIDE = "{desc}: {pct}|{bar}| {done}/{size} [{elapsed}, {speed}, ETA {eta}{postfix}]"
_NARROW = "{pct} {done}/{size}{postfix}"
_NARROW_FILE = "{short} {pct} {done}/{size}"


def _bar_class() -> type[tqdm]:
    """tqdm with our sizes (KiB, MiB: the summary's units, where tqdm's
    'MB' means MiB), a settled ETA, and a layout that fits the terminal."""
    from tqdm import tqdm

    from ._output import human_size

    class Bar(tqdm):  # type: ignore[misc]  # tqdm is untyped
        @property
        def format_dict(self) -> dict[str, Any]:
            d: dict[str, Any] = super().format_dict
            n, total, rate = self.n, self.total or 0, d.get("rate")
            elapsed = float(d.get("elapsed") or 0.0)
            d["done"] = human_size(int(n)).replace(" ", "")
            d["size"] = human_size(int(total)).replace(" ", "")
            d["speed"] = f"{human_size(int(rate))}/s".replace(" ", "") if rate else "-/s"
            settled = rate and elapsed >= ETA_AFTER_SECONDS and total >= n
            d["eta"] = tqdm.format_interval((total - n) / rate) if settled else "--:--"
            ncols = int(d.get("ncols") or 0)
            if ncols and ncols < NARROW_COLUMNS:
                # A file's bar keeps as much of its name's end as fits beside
                # "100% 20.0MiB/20.0MiB"; the main bar needs no name.
                d["short"] = str(self.desc)[-max(ncols - 23, 1) :]
                d["bar_format"] = _NARROW if self.pos == 0 else _NARROW_FILE
            else:
                d["bar_format"] = _WIDE
            d["pct"] = f"{100 * n / total:3.0f}%" if total else "  -%"
            return d

    return Bar


def _done_already(bar: tqdm, nbytes: int) -> None:
    """Move *bar* on by *nbytes* that took no time: tqdm's rate is the
    change in n since its last print (smoothed) or n - initial over the time
    elapsed, so both marks move with n."""
    bar.n += nbytes
    bar.last_print_n += nbytes
    bar.initial += nbytes
    bar.refresh()


class TqdmReporter:
    """One aggregate bar (position 0) and per-file bars for the largest files.

    File bars fill the lines under the main bar from the top and do not stay
    behind (``leave=False``); when one finishes, those below it move up a
    line, so a file finishing out of order leaves no blank line between
    live bars.
    """

    def __init__(self, stream: IO[str] | None = None) -> None:
        self._tqdm = _bar_class()
        self._stream = stream or sys.stderr
        self._files_total = 0
        self._files_done = 0
        self._listing = True  # the totals still grow
        self._in_flight = 0
        self._total = self._tqdm(
            total=0,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc="icanhazmodel",
            file=self._stream,
            position=0,
            dynamic_ncols=True,
            mininterval=0.2,
            smoothing=0.1,
        )
        self._bars: dict[str, tqdm] = {}  # in screen order, from line 1

    def _postfix(self) -> None:
        files = f"{self._files_done}/{self._files_total}"
        what = f"{files}+ files, listing" if self._listing else f"{files} files"
        if self._in_flight:
            what += f", {self._in_flight} in flight"
        self._total.set_postfix_str(what, refresh=False)

    def in_flight(self, level: int) -> None:
        self._in_flight = level
        self._postfix()

    def listing_done(self) -> None:
        self._listing = False
        self._postfix()
        self._total.refresh()

    def listed(self, files: int, nbytes: int) -> None:
        self._files_total += files
        self._total.total += nbytes
        self._postfix()
        self._total.refresh()

    def _smallest_bar(self) -> str | None:
        if not self._bars:
            return None
        return min(self._bars, key=lambda k: self._bars[k].total or 0)

    def file_started(self, key: str, size: int) -> None:
        if size < FILE_BAR_MIN_BYTES or key in self._bars:
            return
        if len(self._bars) >= FILE_BAR_SLOTS:
            smallest = self._smallest_bar()
            if smallest is None or (self._bars[smallest].total or 0) >= size:
                return
            self._close_bar(smallest)
        slot = len(self._bars) + 1
        name = key.rsplit("/", 1)[-1]
        self._bars[key] = self._tqdm(
            total=size,
            unit="B",
            unit_scale=True,
            unit_divisor=1024,
            desc=name[-30:],
            file=self._stream,
            position=slot,
            leave=False,
            dynamic_ncols=True,
            mininterval=0.2,
        )

    def advanced(self, key: str, nbytes: int) -> None:
        self._total.update(nbytes)
        bar = self._bars.get(key)
        if bar is not None:
            bar.update(nbytes)

    def resumed(self, key: str, nbytes: int) -> None:
        for bar in (self._total, self._bars.get(key)):
            if bar is not None:
                _done_already(bar, nbytes)

    def _close_bar(self, key: str) -> None:
        bar = self._bars.pop(key)
        bar.close()
        # The bars below move up, top first, each clearing the line it
        # leaves; tqdm holds a fixed position as a negative number.
        for line, below in enumerate(self._bars.values(), start=1):
            if abs(below.pos) != line:
                below.clear()
                below.pos = -line
                below.refresh()

    def file_done(self, key: str) -> None:
        self._files_done += 1
        self._postfix()
        if key in self._bars:
            self._close_bar(key)

    def message(self, text: str) -> None:
        self._tqdm.write(text, file=self._stream)

    def close(self, interrupted: bool = False) -> None:
        """Take the bars down. Interrupted, the main bar goes too: the line
        left is then the error's, not a bar with '^C' written over it."""
        for key in list(self._bars):
            self._close_bar(key)
        if interrupted:
            self._total.leave = False
        else:
            self._total.refresh()
        self._total.close()


class LineReporter(MessageReporter):
    """A plain progress line every few seconds, for logs that are not terminals."""

    def __init__(
        self,
        stream: IO[str] | None = None,
        every: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(stream)
        self._clock = clock
        self._every = every
        self._files_total = 0
        self._files_done = 0
        self._bytes_total = 0
        self._bytes_done = 0
        self._bytes_resumed = 0  # of done: on disk before, not this run's speed
        self._started = clock()
        self._next = self._started + every
        self._listing = True
        self._in_flight = 0

    def in_flight(self, level: int) -> None:
        self._in_flight = level

    def listing_done(self) -> None:
        self._listing = False

    def listed(self, files: int, nbytes: int) -> None:
        self._files_total += files
        self._bytes_total += nbytes

    def advanced(self, key: str, nbytes: int) -> None:
        self._bytes_done += nbytes
        self._maybe_print()

    def resumed(self, key: str, nbytes: int) -> None:
        self._bytes_done += nbytes
        self._bytes_resumed += nbytes

    def file_done(self, key: str) -> None:
        self._files_done += 1
        self._maybe_print()

    def _maybe_print(self) -> None:
        now = self._clock()
        if now < self._next:
            return
        self._next = now + self._every
        elapsed = now - self._started
        fetched = self._bytes_done - self._bytes_resumed
        rate = fetched / elapsed / (1 << 20) if elapsed > 0 else 0.0
        self.message(
            f"progress: {self._files_done}/{self._files_total}"
            f"{'+ files (listing)' if self._listing else ' files'}, "
            f"{self._bytes_done / (1 << 20):.1f}/{self._bytes_total / (1 << 20):.1f} MiB, "
            f"{rate:.1f} MiB/s"
            + (f", {self._in_flight} requests in flight" if self._in_flight else "")
        )
