"""The library entry point: :func:`fetch`."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from anyio.to_thread import run_sync

from ._config import DEFAULT_CONCURRENCY, FetchConfig
from ._errors import DestinationError
from ._files import Tree, prepare_model_dir
from ._manifest import Manifest
from ._models import FetchResult
from ._pipeline import Run
from ._progress import NullReporter, Reporter, TqdmReporter
from ._s3 import S3Options, open_s3


async def fetch(
    *,
    bucket: str,
    key: str,
    dest: str | os.PathLike[str] = "ptms",
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    retries: int = 5,
    stall_timeout: float = 30.0,
    verify: bool = True,
    force: bool = False,
    progress: bool | Reporter = False,
) -> FetchResult:
    """Mirror ``s3://bucket/key`` (one object, or everything under it) to *dest*.

    Each object lands at ``dest/<its key>``. Objects that cannot be mirrored
    safely or fail to download are listed in the result, not raised; whole-run
    failures raise a subclass of :class:`icanhazmodel.IcanhazmodelError`.
    Nothing is printed unless *progress* is true (tqdm bars on stderr) or a
    :class:`Reporter`.
    """
    config = FetchConfig(
        bucket=bucket,
        key=key,
        dest=Path(dest),
        profile=profile,
        endpoint_url=endpoint_url,
        region=region,
        concurrency=concurrency,
        retries=retries,
        stall_timeout=stall_timeout,
        verify=verify,
        force=force,
    )
    reporter = _reporter(progress)
    try:
        return await run(config, reporter)
    finally:
        reporter.close()


def _reporter(progress: bool | Reporter) -> Reporter:
    if progress is True:
        return TqdmReporter()
    if progress is False:
        return NullReporter()
    return progress


async def run(config: FetchConfig, reporter: Reporter) -> FetchResult:
    """Run one fetch described by *config*, reporting to *reporter*."""
    root = await run_sync(prepare_model_dir, config.dest)
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
    )
    manifest = await run_sync(_open_manifest, root)
    try:
        async with open_s3(options) as s3:
            return await Run(config, s3, Tree(root), manifest, reporter).execute()
    finally:
        # Synchronous: also runs when the run is cancelled (Ctrl-C).
        manifest.close()


def _open_manifest(root: Path) -> Manifest:
    try:
        return Manifest(root)
    except (OSError, sqlite3.Error) as exc:
        raise DestinationError(f"cannot keep records under '{root}': {exc}") from exc
