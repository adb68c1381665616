"""The file layer: temp names, containment, records from the manifest."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest

from icanhazmodel._files import (
    DIR_CACHE_SIZE,
    PARTIAL_SUFFIX,
    EscapesModelDir,
    PartialFile,
    Tree,
    UnusableTemp,
    temp_path,
    try_remove_unlocked,
    write_whole,
)


def test_temp_names_are_hidden_unique_and_short_enough(tmp_path: Path) -> None:
    final = tmp_path / ("x" * 255)
    names = {temp_path(final).name for _ in range(100)}
    assert len(names) == 100
    for name in names:
        assert name.startswith(".")
        assert name.endswith(PARTIAL_SUFFIX)
        assert len(name.encode()) <= 255


@pytest.mark.parametrize(
    "recorded",
    [
        "../outside/.f.abc" + PARTIAL_SUFFIX,
        "/etc/.passwd" + PARTIAL_SUFFIX,
        "a/../../.f" + PARTIAL_SUFFIX,
        "a/model.bin",  # a real file, not a temp file
        "a//.f" + PARTIAL_SUFFIX,
    ],
)
def test_a_manifest_record_cannot_point_outside_or_at_real_files(
    tmp_path: Path, recorded: str
) -> None:
    assert Tree(tmp_path).temp_parts(recorded) is None


def test_a_symlinked_directory_is_never_walked_through(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    (root / "inner").symlink_to(root / "a")  # even one that stays inside
    tree = Tree(root)
    with tree.opened(("a",)) as fd:
        assert os.path.samestat(os.fstat(fd), os.stat(root / "a"))
    for link in ("link", "inner"):
        with pytest.raises(EscapesModelDir, match="is a symlink"):
            tree.directory((link, "sub"))
    assert list((tmp_path / "elsewhere").iterdir()) == []
    tree.close()


def test_a_directory_swapped_for_a_symlink_after_its_first_use_is_not_followed(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = Tree(root)
    write_whole(tree, ("d", "one"), [b"1"], 0.0)
    for depth in range(DIR_CACHE_SIZE + 1):  # push 'd' out of the fd cache
        tree.ensure_dir((f"x{depth}",))
    shutil.rmtree(root / "d")
    (root / "d").symlink_to(outside)
    with pytest.raises(EscapesModelDir):
        write_whole(tree, ("d", "two"), [b"2"], 0.0)
    assert list(outside.iterdir()) == []
    tree.close()


def test_a_cached_directory_renamed_away_keeps_writes_in_the_original_folder(
    tmp_path: Path,
) -> None:
    """Held by fd, the folder is the same inode even if a symlink replaces its name."""
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    outside.mkdir()
    tree = Tree(root)
    partial = PartialFile(tree, ("d", "big"), 4)
    (root / "d").rename(root / "moved")
    (root / "d").symlink_to(outside)
    partial.write(0, [b"abcd"])
    partial.commit(0.0)
    assert list(outside.iterdir()) == []
    assert (root / "moved" / "big").read_bytes() == b"abcd"
    tree.close()


def _planted(root: Path, name: str, target: Path) -> str:
    (root / "d").mkdir(parents=True, exist_ok=True)
    (root / "d" / name).symlink_to(target)
    return name


def test_resume_never_follows_a_symlink_planted_at_a_temp_name(tmp_path: Path) -> None:
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * 8)
    name = _planted(root, ".big.abc" + PARTIAL_SUFFIX, victim)
    tree = Tree(root)
    with pytest.raises(UnusableTemp, match="symlink"):
        PartialFile(tree, ("d", "big"), 8, resume=name)
    assert victim.read_bytes() == b"x" * 8
    tree.close()


def test_resume_refuses_a_temp_file_with_other_links_or_another_owner(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    linked = root / "d" / (".big.abc" + PARTIAL_SUFFIX)
    linked.write_bytes(b"x" * 8)
    os.link(linked, tmp_path / "other-link")
    tree = Tree(root)
    with pytest.raises(UnusableTemp, match="other hard links"):
        PartialFile(tree, ("d", "big"), 8, resume=linked.name)
    if os.geteuid() == 0:
        foreign = root / "d" / (".big.def" + PARTIAL_SUFFIX)
        foreign.write_bytes(b"y" * 8)
        os.chown(foreign, 65534, 65534)
        with pytest.raises(UnusableTemp, match=f"another user.*{foreign.name}"):
            PartialFile(tree, ("d", "big"), 8, resume=foreign.name)
    tree.close()


def test_a_joined_temp_file_is_written_only_while_its_owner_holds_it(tmp_path: Path) -> None:
    """A range fetched for another worker process goes into that process's
    temp file, and only while it is open there: never one it let go of,
    never a link, never a file it would have to create."""
    root = tmp_path / "root"
    tree = Tree(root)
    owner = PartialFile(tree, ("d", "big"), 8)
    helper = PartialFile(tree, ("d", "big"), 8, join=owner.tmp_name)
    helper.write(4, [b"efgh"])
    helper.keep()
    owner.write(0, [b"abcd"])
    owner.commit(0.0)
    assert (root / "d" / "big").read_bytes() == b"abcdefgh"

    let_go = PartialFile(tree, ("d", "other"), 8)
    let_go.keep()  # the owner died or stopped: its lock is gone
    with pytest.raises(UnusableTemp, match="no process of this run is writing it"):
        PartialFile(tree, ("d", "other"), 8, join=let_go.tmp_name)
    victim = tmp_path / "victim"
    victim.write_bytes(b"x" * 8)
    planted = _planted(root, ".big.abc" + PARTIAL_SUFFIX, victim)
    with pytest.raises(UnusableTemp, match="symlink"):
        PartialFile(tree, ("d", "big"), 8, join=planted)
    with pytest.raises(UnusableTemp, match="not a temp file"):
        PartialFile(tree, ("d", "big"), 8, join="../../victim")
    with pytest.raises(FileNotFoundError):
        PartialFile(tree, ("d", "big"), 8, join=".gone.abc" + PARTIAL_SUFFIX)
    with pytest.raises(FileNotFoundError):  # nor a folder
        PartialFile(tree, ("new", "big"), 8, join=".big.abc" + PARTIAL_SUFFIX)
    assert not (root / "new").exists()
    assert victim.read_bytes() == b"x" * 8
    tree.close()


def test_removing_a_stale_temp_name_removes_a_planted_link_not_its_target(
    tmp_path: Path,
) -> None:
    root = tmp_path / "root"
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    name = _planted(root, ".f.abc" + PARTIAL_SUFFIX, victim)
    tree = Tree(root)
    assert try_remove_unlocked(tree, ("d", name))
    assert victim.read_bytes() == b"keep me"
    assert not (root / "d" / name).is_symlink()
    (root / "d" / name).mkdir()
    with pytest.raises(UnusableTemp, match=name):
        try_remove_unlocked(tree, ("d", name))
    tree.close()


def test_a_sweep_removes_only_unlocked_unkept_temp_files_of_ours(tmp_path: Path) -> None:
    root = tmp_path / "root"
    folder = root / "d"
    folder.mkdir(parents=True)
    stale, kept, busy = (folder / f".f.{t}{PARTIAL_SUFFIX}" for t in ("aa", "bb", "cc"))
    for path in (stale, kept, busy):
        path.write_bytes(b"leftover")
    (folder / "real.bin").write_bytes(b"real")
    tree = Tree(root)
    tree.keep_temp = lambda: {f"d/{kept.name}"}
    with open(busy, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        write_whole(tree, ("d", "new"), [b"new"], 0.0)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [kept.name, busy.name, "real.bin", "new"]
    )
    tree.close()


@pytest.mark.parametrize("root", [".", "", "/", "ptms", "./ptms/", "/tmp/m d", "a//b/", "~"])
def test_a_paths_string_is_made_as_pathlib_would_spell_it(root: str) -> None:
    tree = Tree(Path(root))
    for parts in [("a",), ("a", "b.bin"), ("a", "c"), ("x", "y", "z"), ("a", "b.bin")]:
        assert tree.path_str(parts) == str(tree.path(parts)) == str(Path(root).joinpath(*parts))
