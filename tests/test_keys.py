"""Key → path: the rule that keeps every byte inside the model directory."""

from __future__ import annotations

import os
import posixpath
import re

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from icanhazmodel._keys import (
    META_DIRNAME,
    RefusedKey,
    _check_segment,
    directory_prefix,
    is_dir_marker,
    key_parts,
)


def test_nested_key_maps_to_its_segments() -> None:
    key = "conduct/secrecy/en/version_1.2/models/ft/cs-secrecy-avg-pool.cognition.spec.yaml"
    assert key_parts(key) == tuple(key.split("/"))


def test_directory_marker_maps_to_the_directory() -> None:
    assert key_parts("a/b/", is_dir_marker=True) == ("a", "b")


@pytest.mark.parametrize(
    ("key", "reason"),
    [
        ("", "empty"),
        ("/etc/passwd", "absolute"),
        ("a//b", "empty path segment"),
        ("a/./b", "'.' path segment"),
        ("a/../../etc/passwd", "'..' path segment"),
        ("..", "'..' path segment"),
        ("a/b\x00c", "control character"),
        ("a/b\nc", "control character"),
        ("a/\x7f", "control character"),
        ("a/\x85x", "control character"),
        ("a\\..\\b", "backslash"),
        ("a/b/", "not an empty folder marker"),
        (f"{META_DIRNAME}/manifest", META_DIRNAME),
        ("a/" + "x" * 256, "longer than 255 bytes"),
    ],
)
def test_unsafe_keys_are_refused_with_a_reason(key: str, reason: str) -> None:
    with pytest.raises(RefusedKey, match=re.escape(reason)):
        key_parts(key)


def test_names_that_only_look_odd_are_kept() -> None:
    for key in ["a/...", "a/.hidden", "a/b..c", "a/ space /x", "a/ünïcödé", "a/*?", "C:/x"]:
        assert key_parts(key) == tuple(key.split("/"))


def test_a_long_name_within_the_limit_is_kept() -> None:
    name = "é" * 127  # 254 bytes of UTF-8
    assert key_parts(f"a/{name}") == ("a", name)


def test_markers_are_zero_byte_keys_ending_in_slash() -> None:
    assert is_dir_marker("a/b/", 0)
    assert not is_dir_marker("a/b/", 5)
    assert not is_dir_marker("a/b", 0)


def test_directory_prefix_always_ends_in_a_slash() -> None:
    assert directory_prefix("conduct/secrecy/en/version_1.2") == "conduct/secrecy/en/version_1.2/"
    assert directory_prefix("models/") == "models/"
    assert directory_prefix("") == ""


def _inside(root: str, parts: tuple[str, ...]) -> bool:
    joined = os.path.normpath(os.path.join(root, *parts))
    return joined.startswith(root + os.sep)


@given(st.text(max_size=60))
def test_any_accepted_key_stays_inside_the_model_dir(key: str) -> None:
    try:
        parts = key_parts(key)
    except RefusedKey:
        return
    root = "/models/root"
    assert _inside(root, parts)
    # Faithful: the path spells the key exactly, segment for segment.
    assert "/".join(parts) == key
    assert all(p not in ("", ".", "..") and "\\" not in p and "\x00" not in p for p in parts)
    assert parts[0] != META_DIRNAME


_pieces = st.sampled_from(["a", "b", ".", "..", "", "/", "\\", "\x00", "\n", "é", " "])


@given(st.lists(st.lists(_pieces, max_size=4).map("".join), min_size=1, max_size=6))
def test_traversal_shaped_keys_never_escape(segments: list[str]) -> None:
    key = "/".join(segments)
    try:
        parts = key_parts(key)
    except RefusedKey:
        return
    normalized = posixpath.normpath("/root/" + "/".join(parts))
    assert normalized.startswith("/root/")
    assert normalized == "/root/" + key


@given(st.text(min_size=1, max_size=40))
def test_directory_prefix_never_matches_siblings(key: str) -> None:
    assume(not key.endswith("/"))
    prefix = directory_prefix(key)
    assert prefix.endswith("/")
    assert not (key + "0").startswith(prefix)
    assert not (key + ".txt").startswith(prefix)


def _checked_character_by_character(key: str, is_dir: bool) -> tuple[str, ...] | str:
    """key_parts as it was before its printable-ASCII shortcut: every segment
    through every check (the parts, or the refusal's reason)."""
    try:
        body = key[:-1] if is_dir and key.endswith("/") else key
        if key and not key.startswith("/") and (is_dir or not key.endswith("/")):
            for segment in body.split("/"):
                _check_segment(segment)
        return key_parts(key, is_dir_marker=is_dir)
    except RefusedKey as exc:
        return str(exc)


_ascii_pieces = st.sampled_from(["a", ".", "..", "", "/", "\\", "\x7f", "\x1f", "é", "\u202e"])


@given(
    st.one_of(
        st.lists(_ascii_pieces, max_size=8).map("".join),
        st.text(max_size=30),
        st.integers(250, 260).map(lambda n: "d/" + "x" * n),
    ),
    st.booleans(),
)
def test_the_printable_ascii_shortcut_decides_as_every_check_does(key: str, is_dir: bool) -> None:
    try:
        quick: tuple[str, ...] | str = key_parts(key, is_dir_marker=is_dir)
    except RefusedKey as exc:
        quick = str(exc)
    assert quick == _checked_character_by_character(key, is_dir)
