"""Running one fetch: the model directory, the manifest, the store, the run,
and the lock written at its end. The library entry points (``_api``) and
the command line (``_cli``) both come here with a checked :class:`FetchConfig`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ._config import FetchConfig
from ._errors import DestinationError
from ._models import FetchResult, PlannedObject
from ._progress import Notes, Reporter

if TYPE_CHECKING:
    from ._files import Tree
    from ._launch import ForkServer
    from ._ledger import Watcher
    from ._manifest import Manifest
    from ._pipeline import Run


def fork_server_for(config: FetchConfig) -> ForkServer | None:
    """A fork server, started now, if the run *config* describes may use
    worker processes.

    Start it as early as possible: its imports then overlap the run's own
    and the first listing page, so workers, if the run wants them, start warm.
    """
    from ._launch import ForkServer
    from ._limits import fit_open_files, may_use_processes, usable_cpus

    if config.dry_run or not may_use_processes(config.processes, usable_cpus()):
        return None
    # Workers inherit the open-file limit from the server, when it starts:
    # raise it first (the run asks again, and says what it could not get).
    fit_open_files(config.ceiling)
    return ForkServer.start()


async def run(
    config: FetchConfig,
    reporter: Reporter,
    watcher: Watcher | None = None,
    plan_sink: Callable[[PlannedObject], None] | None = None,
    started: ForkServer | None = None,
) -> FetchResult:
    """Run one fetch described by *config*, reporting to *reporter*.

    *started*: the run's fork server, if the caller started it (see
    :func:`fork_server_for`); else one is started here if the run may need it.
    Either way it is closed when the run ends.

    Nothing is created on disk until the first file or folder needs it.
    """
    forks = started if started is not None else fork_server_for(config)
    try:
        return await _run(config, reporter, watcher, plan_sink, forks)
    finally:
        if forks is not None:
            forks.close()


async def _run(
    config: FetchConfig,
    reporter: Reporter,
    watcher: Watcher | None,
    plan_sink: Callable[[PlannedObject], None] | None,
    forks: ForkServer | None,
) -> FetchResult:
    # Imported here, not at the top: aioboto3 and botocore take most of a
    # second to import, which `import icanhazmodel`, `--help` and
    # `--version` should not pay.
    from anyio.to_thread import run_sync

    from ._files import Tree, check_model_dir
    from ._limits import fit_open_files
    from ._pipeline import Run
    from ._s3 import S3Options, open_s3
    from ._tls import INSECURE_WARNING

    root = await run_sync(check_model_dir, config.dest)
    ceiling, note = fit_open_files(config.ceiling)
    # -j auto fits its search to the limit quietly while streams keep their share.
    if note and (not config.adaptive or ceiling < config.auto_streams):
        reporter.message(note)
    if config.adaptive:
        config = replace(config, auto_ceiling=ceiling)
    else:
        config = replace(config, concurrency=ceiling)
    options = S3Options(
        bucket=config.bucket,
        profile=config.profile,
        endpoint_url=config.endpoint_url,
        region=config.region,
        # A few spare connections for the listing and HEAD requests, so they
        # never queue behind the workers' GETs.
        pool_size=config.ceiling + 4,
        retries=config.retries,
        read_timeout=config.stall_timeout,
        unsigned=config.unsigned,
        request_payer=config.request_payer,
        verify_ssl=config.verify_ssl,
        ca_bundle=config.ca_bundle,
    )
    if not config.verify_ssl:
        reporter.message(INSECURE_WARNING)
    notes = Notes()
    tree = Tree(root)
    try:
        manifest = await run_sync(_open_manifest, tree, config.dry_run, notes)
        tree.keep_temp = manifest.partial_names
        try:
            async with open_s3(options) as s3:
                fetching = Run(
                    config, s3, tree, manifest, reporter, notes, watcher, plan_sink, forks
                )
                result = await fetching.execute()
            if config.lock is not None:
                _write_lock(config, config.lock, fetching, result, reporter)
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


def _write_lock(
    config: FetchConfig, path: Path, fetching: Run, result: FetchResult, reporter: Reporter
) -> None:
    """Write the run's lock, if it stands for every object it listed."""
    from ._asof import rfc3339
    from ._lock import Lock, now_rfc3339, write_lock

    book = fetching.ledger.lock
    assert book is not None
    missing = result.refused + result.failed + result.kept_local
    if missing:
        what = "object" if missing == 1 else "objects"
        reporter.message(
            f"warning: the lock '{path}' was not written: {missing} {what} did not land"
        )
        return
    shard = config.shard
    write_lock(
        path,
        Lock(
            bucket=config.bucket,
            key=config.key,
            prefix=fetching.prefix,
            files=book.files(),
            endpoint_url=config.endpoint_url,
            include=config.filters.include,
            exclude=config.filters.exclude,
            shard=str(shard) if shard.count > 1 else None,
            created=now_rfc3339(),
            at=rfc3339(config.at) if config.at is not None else None,
        ),
    )


def _open_manifest(tree: Tree, read_only: bool, notes: Notes) -> Manifest:
    import sqlite3

    from ._manifest import Manifest

    try:
        return Manifest(tree, read_only=read_only, notice=notes.add)
    except (OSError, sqlite3.Error) as exc:
        if isinstance(exc, DestinationError):
            raise
        raise DestinationError(f"cannot keep records under '{tree.root}': {exc}") from exc
