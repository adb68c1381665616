"""What is already on disk, looked at before a listing page's objects are queued.

For each object to fetch: is it there, unchanged since icanhazmodel wrote
it (skip), changed by someone (keep, and say so), or to download; and which
temp files an earlier run left could be resumed (the transfer adopts one
just before fetching, see ``_resume``), the others cleared away. Blocking
(the manifest, ``lstat``): run it in a worker thread.
"""

from __future__ import annotations

import os

from ._files import Tree
from ._jobs import FileJob
from ._manifest import Manifest, PartialRecord
from ._models import Action
from ._plan import LocalFile, decide
from ._resume import clear
from ._transfer import SMALL_OBJECT, Transfers


def inspect(
    jobs: list[FileJob],
    manifest: Manifest | None,
    transfers: Transfers,
    *,
    force: bool,
    dry_run: bool,
    remember: bool = False,
) -> list[Action]:
    """Each job's action; resumable temp files noted on the jobs to download.
    *remember*: a skipped job keeps what the manifest recorded when it
    landed (its version id, which a listing never names; how it was
    checked), for a lock."""
    keys = [job.obj.key for job in jobs]
    records = manifest.files(keys) if manifest else {}
    # A dry run only looks: it neither resumes nor clears temp files.
    partials = manifest.partials(keys) if manifest and not dry_run else {}
    tree = transfers.tree
    actions = []
    for job in jobs:
        record = records.get(job.obj.key)
        local = _local_file(tree.path_str(job.parts)) if record else None
        action = decide(job.obj, record, local, force=force)
        if remember and action is Action.SKIP:
            job.recorded = record
        if action is Action.DOWNLOAD or partials.get(job.obj.key):
            candidates = partials.get(job.obj.key, [])
            _resumable(transfers, tree, job, candidates, use=action is Action.DOWNLOAD)
        actions.append(action)
    return actions


def _resumable(
    transfers: Transfers, tree: Tree, job: FileJob, candidates: list[PartialRecord], *, use: bool
) -> None:
    """Note the temp files an earlier run left that could be resumed (the
    transfer adopts one just before fetching); clear away the others."""
    wanted = []
    for record in sorted(candidates, key=lambda r: -len(r.ranges)):
        parts = tree.temp_parts(record.tmp_name)
        if (
            parts is not None
            and parts[:-1] == job.parts[:-1]  # beside its file, or not ours
            and use
            and job.obj.size > SMALL_OBJECT
            and record.part_size < job.obj.size
            and (record.etag, record.size) == (job.obj.etag, job.obj.size)
        ):
            wanted.append(record)
        else:
            clear(transfers, record)
    job.resume_candidates = tuple(wanted)


def _local_file(path: str | os.PathLike[str]) -> LocalFile | None:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return LocalFile(st.st_size, st.st_mtime_ns)
