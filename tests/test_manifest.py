"""The manifest: records survive, CRC64 values fit, and the skip decision."""

from __future__ import annotations

from pathlib import Path

from icanhazmodel._files import Tree
from icanhazmodel._manifest import FileRecord, Manifest, PartialRecord
from icanhazmodel._models import RemoteObject
from icanhazmodel._plan import Action, LocalFile, decide


def open_manifest(root: Path, *, read_only: bool = False) -> Manifest:
    return Manifest(Tree(root), read_only=read_only)


def test_records_round_trip(tmp_path: Path) -> None:
    manifest = open_manifest(tmp_path)
    record = FileRecord("a/b", 10, "etag", None, "crc32", 10, 123456789)
    manifest.add_file(record)
    partial = PartialRecord(".b.x.icanhazmodel-partial", "a/c", "e2", 100, 40, "CRC64NVME")
    manifest.add_range(partial, 0, 40, (1 << 64) - 1)  # the largest CRC64
    manifest.add_range(partial, 40, 80, 5)
    manifest.close()

    reopened = open_manifest(tmp_path, read_only=True)
    assert reopened.files(["a/b", "nope"]) == {"a/b": record}
    [found] = reopened.partials(["a/c"])["a/c"]
    assert found.ranges == ((0, 40, (1 << 64) - 1), (40, 80, 5))
    reopened.close()


def test_dropping_a_partial_forgets_its_ranges(tmp_path: Path) -> None:
    manifest = open_manifest(tmp_path)
    partial = PartialRecord("t", "k", "e", 100, 40, "CRC32")
    manifest.add_range(partial, 0, 40, 1)
    manifest.flush()
    manifest.drop_partial("t")
    manifest.flush()
    assert manifest.partials(["k"]) == {}
    manifest.close()


def test_a_read_only_look_at_a_missing_manifest_creates_nothing(tmp_path: Path) -> None:
    manifest = open_manifest(tmp_path, read_only=True)
    assert manifest.files(["x"]) == {}
    manifest.close()
    assert list(tmp_path.iterdir()) == []


OBJ = RemoteObject("k", 10, "etag1", 0.0)
REC = FileRecord("k", 10, "etag1", None, "crc32", 10, 1000)


def test_unchanged_and_untouched_is_skipped() -> None:
    assert decide(OBJ, REC, LocalFile(10, 1000), force=False) is Action.SKIP


def test_no_record_or_no_file_means_download() -> None:
    assert decide(OBJ, None, LocalFile(10, 1000), force=False) is Action.DOWNLOAD
    assert decide(OBJ, REC, None, force=False) is Action.DOWNLOAD


def test_a_new_version_in_s3_means_download() -> None:
    changed = RemoteObject("k", 10, "etag2", 0.0)
    assert decide(changed, REC, LocalFile(10, 1000), force=False) is Action.DOWNLOAD


def test_a_local_edit_is_kept_unless_forced() -> None:
    assert decide(OBJ, REC, LocalFile(10, 2000), force=False) is Action.KEEP_LOCAL
    assert decide(OBJ, REC, LocalFile(11, 1000), force=False) is Action.KEEP_LOCAL
    assert decide(OBJ, REC, LocalFile(10, 2000), force=True) is Action.DOWNLOAD
