"""A run's objects spread over worker processes: whether to start them,
and the pool while they run.

The run keeps planning and its own in-process transfers; this object starts
the pool (which replays what workers report into the run's ledger), hands
rotated credentials down, and gives back the objects the direct path could
not serve, for the run to fetch through botocore.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio

from ._direct import FrozenCredentials
from ._jobs import FileJob
from ._launch import ForkServer, launch
from ._limits import processes_for, usable_cpus

if TYPE_CHECKING:
    from ._config import FetchConfig
    from ._files import Tree
    from ._ledger import Ledger
    from ._pool import Pool
    from ._s3 import S3

# How often rotated credentials are looked for, to hand down to workers.
CREDENTIALS_CHECK_SECONDS = 2.0
CONNECT_TIMEOUT = 10.0


class Spread:
    """The worker processes of one run, if it has any."""

    def __init__(self, ledger: Ledger, s3: S3, forks: ForkServer | None = None) -> None:
        self._ledger = ledger  # where the workers' events are replayed
        self._s3 = s3
        self._forks = forks
        self.pool: Pool | None = None
        self.decided = False
        self._credentials: FrozenCredentials | None = None

    @property
    def needs_botocore(self) -> list[FileJob]:
        """Objects workers sent back: the direct path alone cannot serve them."""
        return self.pool.needs_botocore if self.pool is not None else []

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
        # Only now: most runs stay in one process, and the messages' classes
        # and the pool took ~13 ms of every run's start to import.
        from ._messages import WorkerSettings
        from ._pool import Pool

        self._credentials = await self._s3.frozen_credentials()
        manifest = self._ledger.manifest
        settings = WorkerSettings(
            root=str(tree.root),
            bucket=self._s3.bucket,
            route=route,
            credentials=self._credentials,
            concurrency=config.ceiling,
            streams=config.streams,
            adaptive=config.adaptive,
            pinned=config.pinned,
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
        self.pool = Pool(self._ledger, settings, started)

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
