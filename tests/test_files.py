"""The file layer: temp names, containment, records from the manifest."""

from __future__ import annotations

from pathlib import Path

import pytest

from icanhazmodel._files import PARTIAL_SUFFIX, Tree, temp_path


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
    assert Tree(tmp_path).temp_file(recorded) is None


def test_a_symlinked_directory_out_of_the_tree_is_not_trusted(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    (root / "link").symlink_to(tmp_path / "elsewhere")
    tree = Tree(root)
    name = ".f.abc" + PARTIAL_SUFFIX
    assert tree.temp_file(f"a/{name}") == root / "a" / name
    assert tree.temp_file(f"link/{name}") is None
