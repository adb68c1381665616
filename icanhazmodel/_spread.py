"""A run's objects spread over worker processes: whether to, and what the
run does with what the workers report (the pool's owner).

The run keeps planning and its own in-process transfers; this object holds
the pool, hands rotated credentials down, and gives back the objects the
direct path could not serve, for the run to fetch through botocore.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import anyio

from ._direct import FrozenCredentials
from ._launch import ForkServer, launch
from ._limits import processes_for, usable_cpus
from ._manifest import Manifest, PartialRecord
from ._messages import Landed, WorkerSettings
from ._models import RemoteObject
from ._pool import Pool
from ._progress import Reporter
from ._transfer import FileJob

if TYPE_CHECKING:
    from ._config import FetchConfig
    from ._files import Tree
    from ._s3 import S3

# How often rotated credentials are looked for, to hand down to workers.
CREDENTIALS_CHECK_SECONDS = 2.0
CONNECT_TIMEOUT = 10.0


class RunOutcomes(Protocol):
    reporter: Reporter
    manifest: Manifest | None

    def record_landed(
        self,
        obj: RemoteObject,
        path: Path,
        level: str,
        size: int,
        mtime_ns: int,
        new_bytes: int,
        unverified: str = "",
    ) -> None: ...

    def failed(self, job: FileJob, reason: str) -> None: ...


class Spread:
    """The worker processes of one run, if it has any."""

    def __init__(self, run: RunOutcomes, s3: S3, forks: ForkServer | None = None) -> None:
        self._run = run
        self._s3 = s3
        self._forks = forks
        self.pool: Pool | None = None
        self.decided = False
        self.needs_botocore: list[FileJob] = []  # sent back by workers
        self._credentials: FrozenCredentials | None = None

    @property
    def active(self) -> bool:
        """New objects go to workers (none yet came back needing botocore)."""
        return self.pool is not None and not self.needs_botocore

    @property
    def size(self) -> int:
        return self.pool.size if self.pool is not None else 1

    async def maybe_start(
        self, config: FetchConfig, tree: Tree, downloads: list[FileJob], more: bool
    ) -> None:
        """Start worker processes if the first page (*more*: and the pages
        still to come) has work enough for them."""
        self.decided = True
        count = processes_for(
            config.processes,
            len(downloads),
            sum(job.obj.size for job in downloads),
            usable_cpus(),
            more_listed=more,
        )
        route = await self._s3.direct_route() if count > 1 else None
        if route is None:  # one process: few files, or botocore must serve the run
            if self._forks is not None:
                self._forks.close()  # its ~40 MiB, now rather than at the end
            return
        self._credentials = await self._s3.frozen_credentials()
        manifest = self._run.manifest
        settings = WorkerSettings(
            root=str(tree.root),
            bucket=self._s3.bucket,
            route=route,
            credentials=self._credentials,
            concurrency=config.concurrency,
            retries=config.retries,
            verify=config.verify,
            read_timeout=config.stall_timeout,
            connect_timeout=CONNECT_TIMEOUT,
            trust=self._s3.trust,
            proxies=self._s3.proxies,
            request_payer=config.request_payer,
            keep_temp=frozenset(manifest.partial_names() if manifest else ()),
        )
        # In a thread: a fork waits for the server to finish its imports.
        started = await anyio.to_thread.run_sync(launch, count, settings, self._forks)
        self.pool = Pool(self, settings, started)

    async def submit(self, job: FileJob) -> None:
        assert self.pool is not None
        await self.pool.submit(job, job.resume_candidates)

    async def finish(self) -> None:
        if self.pool is not None:
            await self.pool.finish()

    def abort(self) -> None:
        if self.pool is not None:
            self.pool.abort()

    async def share_credentials(self) -> None:
        """Hand rotated credentials down to the workers, for the whole run."""
        while True:
            await anyio.sleep(CREDENTIALS_CHECK_SECONDS)
            if self.pool is None:
                continue
            fresh = await self._s3.frozen_credentials()
            if fresh is not None and fresh != self._credentials:
                self._credentials = fresh
                await self.pool.share_credentials(fresh)

    # -- what workers report (PoolOwner) --------------------------------------------

    def progress(self, job: FileJob, nbytes: int) -> None:
        self._run.reporter.advanced(job.obj.key, nbytes)

    def landed_remote(self, job: FileJob, result: Landed) -> None:
        self._run.record_landed(
            job.obj,
            job.final,
            result.level,
            result.size,
            result.mtime_ns,
            result.new_bytes,
            result.unverified,
        )

    def failed_remote(self, job: FileJob, reason: str, needs_botocore: bool) -> None:
        if needs_botocore:
            self.needs_botocore.append(job)  # and the rest of the run stays in the parent
        else:
            self._run.failed(job, reason)

    def add_range(self, partial: PartialRecord, start: int, end: int, crc: int) -> None:
        if self._run.manifest is not None:
            self._run.manifest.add_range(partial, start, end, crc)

    def drop_partial(self, tmp_name: str) -> None:
        if self._run.manifest is not None:
            self._run.manifest.drop_partial(tmp_name)

    def note(self, text: str) -> None:
        self._run.reporter.message(text)
