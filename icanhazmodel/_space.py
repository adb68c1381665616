"""Free space: a run stops before it would fill the disk, not once it has."""

from __future__ import annotations

import shutil
from pathlib import Path

from ._errors import NotEnoughSpace
from ._output import human_size


def free_bytes(root: Path) -> int | None:
    """Free space where *root* is (or would be created); None if unknown."""
    for path in (root, *root.parents):
        try:
            return shutil.disk_usage(path).free
        except OSError:
            continue
    return None


def sizes_apart(needed: int, free: int) -> tuple[str, str]:
    """Two sizes in words that never read the same when they differ."""
    shown = human_size(needed), human_size(free)
    if shown[0] == shown[1]:
        return f"{needed:,} bytes", f"{free:,} bytes"
    return shown


class SpaceCheck:
    """What the listing asks for so far, against the free space measured
    when the run started (checked off: --ignore-space, or a dry run)."""

    def __init__(self, root: Path, *, enforce: bool) -> None:
        self.root = root
        self.free = free_bytes(root)
        self._enforce = enforce
        self._needed = 0

    def need(self, nbytes: int) -> None:
        self._needed += nbytes
        if self._enforce and self.free is not None and self._needed > self.free:
            needed, free = sizes_apart(self._needed, self.free)
            raise NotEnoughSpace(
                f"the objects listed so far need {needed} but only "
                f"{free} is free under '{self.root}': free some space, "
                "or pass --ignore-space to try anyway"
            )
