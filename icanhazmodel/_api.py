"""The library entry points: :func:`fetch` and :func:`plan`."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import DEFAULT_CONCURRENCY, FetchConfig, parse_processes
from ._errors import DestinationError
from ._models import FetchResult, Plan
from ._progress import Notes, NullReporter, Reporter, TqdmReporter
from ._select import Filters, Shard, parse_shard

if TYPE_CHECKING:
    from ._files import Tree
    from ._manifest import Manifest


async def fetch(
    *,
    bucket: str,
    key: str,
    dest: str | os.PathLike[str] = "ptms",
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    processes: int | str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard: str | Shard | None = None,
    dry_run: bool = False,
    verify: bool = True,
    force: bool = False,
    no_sign_request: bool = False,
    request_payer: str | None = None,
    version_id: str | None = None,
    ignore_space: bool = False,
    retries: int = 5,
    stall_timeout: float = 30.0,
    progress: bool | Reporter = False,
) -> FetchResult:
    """Mirror ``s3://bucket/key`` (one object, or everything under it) to *dest*.

    Each object lands at ``dest/<its key>``, checked against S3's checksum
    (or MD5 ETag) before it is renamed into place. Objects that cannot be
    mirrored safely or fail to download are listed in the result, not raised;
    whole-run failures raise a subclass of :class:`icanhazmodel.IcanhazmodelError`.

    *include*/*exclude* are globs on the key relative to *key* (``*`` crosses
    '/'; the base name is tried too; an exclude always wins). *shard* is
    ``"K/N"``, ``"auto"`` (from torchrun, MPI, Slurm or Kubernetes variables)
    or a :class:`Shard`. With *dry_run*, nothing is written and the result's
    ``plan`` says what would happen. Nothing is printed unless *progress* is
    true (tqdm bars on stderr) or a :class:`Reporter`. *processes* is how many
    worker processes share the downloads: ``"auto"`` (one per usable CPU but
    one, when the listing has work enough for them), or a count; ``1`` keeps
    everything in this process; None (the default) reads ICANHAZMODEL_PROCESSES,
    else auto. *concurrency* is requests in flight per process.
    """
    config = FetchConfig(
        bucket=bucket,
        key=key,
        dest=Path(dest),
        profile=profile,
        endpoint_url=endpoint_url,
        region=region,
        concurrency=concurrency,
        processes=parse_processes(processes),
        retries=retries,
        stall_timeout=stall_timeout,
        verify=verify,
        force=force,
        filters=Filters(tuple(include), tuple(exclude)),
        shard=parse_shard(shard) if isinstance(shard, str) else shard or Shard(),
        dry_run=dry_run,
        unsigned=no_sign_request,
        request_payer=request_payer,
        version_id=version_id,
        ignore_space=ignore_space,
    )
    reporter = _reporter(progress)
    try:
        return await run(config, reporter)
    finally:
        reporter.close()


async def plan(
    *,
    bucket: str,
    key: str,
    dest: str | os.PathLike[str] = "ptms",
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard: str | Shard | None = None,
    force: bool = False,
    no_sign_request: bool = False,
    request_payer: str | None = None,
    version_id: str | None = None,
    processes: int | str | None = None,
) -> Plan:
    """What :func:`fetch` with the same arguments would do; writes nothing.

    Each listed object that passes the filters and belongs to this shard
    comes back as a :class:`PlannedObject`: its key, size, path on disk and
    action (download, skip as unchanged, keep a local edit, refuse, folder).
    """
    result = await fetch(
        bucket=bucket,
        key=key,
        dest=dest,
        profile=profile,
        endpoint_url=endpoint_url,
        region=region,
        include=include,
        exclude=exclude,
        shard=shard,
        force=force,
        no_sign_request=no_sign_request,
        request_payer=request_payer,
        version_id=version_id,
        processes=processes,
        dry_run=True,
    )
    assert result.plan is not None  # a dry run always has one
    return result.plan


def _reporter(progress: bool | Reporter) -> Reporter:
    if progress is True:
        return TqdmReporter()
    if progress is False:
        return NullReporter()
    return progress


async def run(config: FetchConfig, reporter: Reporter) -> FetchResult:
    """Run one fetch described by *config*, reporting to *reporter*.

    Nothing is created on disk until the first file or folder needs it.
    """
    # Imported here, not at the top: aioboto3 and botocore take most of a
    # second to import, which `import icanhazmodel`, `--help` and
    # `--version` should not pay.
    from anyio.to_thread import run_sync

    from ._files import Tree, check_model_dir
    from ._limits import fit_open_files
    from ._pipeline import Run
    from ._s3 import S3Options, open_s3

    root = await run_sync(check_model_dir, config.dest)
    concurrency, note = fit_open_files(config.concurrency)
    if note:
        reporter.message(note)
    config = replace(config, concurrency=concurrency)
    options = S3Options(
        bucket=config.bucket,
        profile=config.profile,
        endpoint_url=config.endpoint_url,
        region=config.region,
        # A few spare connections for the listing and HEAD requests, so they
        # never queue behind the workers' GETs.
        pool_size=config.concurrency + 4,
        retries=config.retries,
        read_timeout=config.stall_timeout,
        unsigned=config.unsigned,
        request_payer=config.request_payer,
    )
    notes = Notes()
    tree = Tree(root)
    try:
        manifest = await run_sync(_open_manifest, tree, config.dry_run, notes)
        tree.keep_temp = manifest.partial_names
        try:
            async with open_s3(options) as s3:
                result = await Run(config, s3, tree, manifest, reporter, notes).execute()
        finally:
            # Synchronous: also runs when the run is cancelled (Ctrl-C). It
            # never raises, so it cannot hide the error that ended the run.
            manifest.close()
            notes.say(reporter)
        if manifest.write_error:
            result = replace(result, manifest_error=manifest.write_error)
        return result
    finally:
        tree.close()


def _open_manifest(tree: Tree, read_only: bool, notes: Notes) -> Manifest:
    import sqlite3

    from ._manifest import Manifest

    try:
        return Manifest(tree, read_only=read_only, notice=notes.add)
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, DestinationError):
            raise
        raise DestinationError(f"cannot keep records under '{tree.root}': {exc}") from exc
