"""Pure planning: byte ranges and path conflicts."""

from __future__ import annotations

import itertools

from hypothesis import example, given, settings
from hypothesis import strategies as st

from icanhazmodel._plan import (
    MAX_PART_SIZE,
    MIN_PART_SIZE,
    ConflictTracker,
    MiB,
    byte_ranges,
    part_size_for,
)


def test_part_size_is_about_one_range_per_worker() -> None:
    assert part_size_for(32 * 16 * MiB, 32) == 16 * MiB


def test_part_size_is_clamped() -> None:
    assert part_size_for(10 * MiB, 32) == MIN_PART_SIZE
    assert part_size_for(100 * 1024 * MiB, 32) == MAX_PART_SIZE


@given(st.integers(0, 1 << 40), st.integers(1, 512))
def test_part_size_is_whole_mib_within_bounds(size: int, concurrency: int) -> None:
    part = part_size_for(size, concurrency)
    assert MIN_PART_SIZE <= part <= MAX_PART_SIZE
    assert part % MiB == 0


@given(st.integers(0, 1 << 34), st.integers(1, 1 << 28))
def test_ranges_tile_the_object_exactly(size: int, part_size: int) -> None:
    part_size = max(part_size, size // 4096 + 1)  # keep the list small
    ranges = byte_ranges(size, part_size)
    if size == 0:
        assert ranges == [(0, 0)]
        return
    assert ranges[0][0] == 0
    assert ranges[-1][1] == size
    for (_, end), (start, _) in itertools.pairwise(ranges):
        assert end == start
    assert all(0 < e - s <= part_size for s, e in ranges)


def _add_all(keys: list[str]) -> dict[str, str | None]:
    tracker = ConflictTracker()
    out = {}
    for key in keys:
        is_dir = key.endswith("/")
        parts = tuple((key[:-1] if is_dir else key).split("/"))
        out[key] = tracker.add(parts, is_dir=is_dir)
    return out


def test_file_and_prefix_of_others_conflict() -> None:
    found = _add_all(["a", "a-1/x", "a.txt", "a/b", "a/c/d", "b"])
    assert found == {"a": None, "a-1/x": None, "a.txt": None, "a/b": "a", "a/c/d": "a", "b": None}


def test_marker_with_the_name_of_a_file_conflicts() -> None:
    assert _add_all(["m/a", "m/a/"])["m/a/"] == "m/a"


def test_unsorted_listing_still_catches_file_after_directory() -> None:
    assert _add_all(["a/b", "a"])["a"] == "a/"


def test_no_conflicts_in_an_ordinary_tree() -> None:
    keys = sorted(["m/x/1", "m/x/2", "m/y/1", "m/", "m/x/", "n/1", "m.txt"])
    assert all(v is None for v in _add_all(keys).values())


# '!' sorts before '/', so 'a/x!' comes between 'a/x' and 'a/x/y': the file
# 'a/x' must stay open past it.
@settings(max_examples=500)
@example({"a/b", "a/b!", "a/b/a"})
@given(st.sets(st.lists(st.sampled_from("ab/!"), min_size=1, max_size=6).map("".join), max_size=40))
def test_tracker_agrees_with_brute_force_on_sorted_listings(raw: set[str]) -> None:
    keys = sorted(k for k in raw if "//" not in k and not k.startswith("/"))
    found = _add_all(keys)
    accepted: list[str] = []
    for key in keys:
        path = key.rstrip("/")
        is_dir = key.endswith("/")
        files = [k for k in accepted if not k.endswith("/")]
        # A conflict: an accepted file is a proper ancestor of this path
        # (or the path itself, for a marker).
        clash = any(path.startswith(f + "/") or (is_dir and path == f) for f in files)
        assert (found[key] is not None) == clash, (key, found[key], accepted)
        if not clash:
            accepted.append(key)
