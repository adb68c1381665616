"""The download pipeline: one producer, a bounded stream, a pool of workers.

The producer pages through the listing, decides for each object whether it
must be fetched (refused, unchanged, edited locally, resumable), and turns
each one to fetch into byte ranges sent into a memory object stream of
bounded size: the listing is never held whole and downloading starts with
the first page. Each worker takes one range at a time; the worker that
completes an object's last range lands the file. The worker count is the
run's whole request budget, shared by big files and small ones alike.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import anyio
from anyio.to_thread import run_sync

from . import _sources as sources
from ._asof import rfc3339
from ._config import FetchConfig
from ._dryrun import PlanBook
from ._engine import Engine
from ._errors import IcanhazmodelError, NothingToFetch, most_telling
from ._files import Tree, describe_os_error
from ._jobs import FileJob
from ._keys import RefusedKey, directory_prefix, is_dir_marker, key_parts
from ._launch import ForkServer
from ._ledger import Ledger, Watcher
from ._lock import LockBook
from ._manifest import Manifest
from ._models import (
    Action,
    FetchResult,
    PlannedObject,
    RemoteObject,
    Status,
)
from ._objects import etag_problem
from ._ondisk import inspect
from ._plan import ConflictTracker, part_size_for
from ._progress import Notes, Reporter
from ._s3 import S3
from ._select import relative_key
from ._space import SpaceCheck
from ._spread import Spread
from ._transfer import SMALL_OBJECT, Transfers, load_crt_for
from ._window import Window
from ._writer import Writer

MANIFEST_FLUSH_SECONDS = 1.0
_EDITED = (
    "'{}' was changed since icanhazmodel wrote it; kept (delete it to fetch S3's copy, "
    "or --force to download every file again)"
)


def _conflict_reason(parts: tuple[str, ...], clash: str) -> str:
    if clash.endswith("/"):
        return f"its path is a folder already, holding the keys under '{clash}'"
    if clash == "/".join(parts):
        return f"the folder it names is already the file of key '{clash}'"
    return f"'{clash}' is already the file of key '{clash}', so it cannot also be a folder"


class Run:
    """One fetch: owns the tally, the producer and the workers."""

    def __init__(
        self,
        config: FetchConfig,
        s3: S3,
        tree: Tree,
        manifest: Manifest | None,
        reporter: Reporter,
        notes: Notes | None = None,
        watcher: Watcher | None = None,
        plan_sink: Callable[[PlannedObject], None] | None = None,
        forks: ForkServer | None = None,
    ) -> None:
        self.config = config
        self.watcher = watcher
        self.notes = notes or Notes()
        self.s3 = s3
        self.tree = tree
        self.manifest = manifest
        self.reporter = reporter
        self.ledger = Ledger(manifest, reporter, watcher, LockBook() if config.lock else None)
        self.tally = self.ledger.tally
        self.writer = Writer()
        self.window = Window(config.ceiling, adaptive=config.adaptive)
        self.window.on_change = partial(self.ledger.in_flight, 0)
        self.transfers = Transfers(
            s3,
            tree,
            self.ledger,
            self.writer,
            retries=config.retries,
            verify=config.verify,
            notes=self.notes,
            window=self.window,
            pinned=config.pinned,
        )
        self.engine = Engine(self.transfers, self.window, config.streams)
        self._conflicts = ConflictTracker()
        self._prefix = ""
        self._told_listing_done = False
        self._book = PlanBook(plan_sink) if config.dry_run else None
        self._space = SpaceCheck(tree.root, enforce=not (config.ignore_space or config.dry_run))
        self.spread = Spread(self.ledger, s3, forks)

    # -- the whole run --------------------------------------------------------------

    async def execute(self) -> FetchResult:
        started = time.monotonic()
        batches = await self._source()
        if self.config.dry_run:
            await self._produce(batches, None)
            return self._result(started)
        try:
            async with anyio.create_task_group() as outer:
                if self.manifest is not None:
                    outer.start_soon(self._flush_periodically, self.manifest)
                outer.start_soon(self.spread.share_credentials)
                async with self.engine.running() as engine:
                    await self._produce(batches, engine)
                    await self.spread.finish()
                    await self._take_back(engine)
                outer.cancel_scope.cancel()
        except BaseException as exc:
            telling = most_telling(exc)
            self.spread.abort()
            # Interrupted or cancelled: keep big temp files for the next run
            # to resume. Stopped by an error of ours (disk full, say): tidy up.
            self.transfers.temp_files.abandon(
                keep_resumable=not isinstance(telling, IcanhazmodelError)
            )
            if telling is exc:
                raise
            raise telling from None
        finally:
            self.writer.close()
        return self._result(started)

    def _result(self, started: float) -> FetchResult:
        result = replace(self.tally.result(time.monotonic() - started), processes=self.spread.size)
        if self._book is not None:
            plan = self._book.plan(
                excluded=self.tally.excluded,
                other_shards=self.tally.other_shards,
                free_bytes=self._space.free,
            )
            result = replace(result, plan=plan)
        return result

    async def _flush_periodically(self, manifest: Manifest) -> None:
        while True:
            await anyio.sleep(MANIFEST_FLUSH_SECONDS)
            if manifest.pending():
                await run_sync(manifest.flush)
            self.notes.say(self.reporter)

    # -- producer -------------------------------------------------------------------

    async def _source(self) -> AsyncGenerator[sources.Batch, None]:
        """Where this run's objects come from (the one choice, see ``_sources``);
        a key that names one object is looked up now, before anything starts."""
        config = self.config
        self._prefix = directory_prefix(config.key)  # until a batch says otherwise
        if config.from_lock is not None:
            self._prefix = config.from_lock.prefix
            return sources.locked(config.from_lock)
        if config.at is not None:
            return sources.as_of(self.s3, config.key, config.at)
        exact = await self.s3.exact(config.key, config.version_id)
        if exact is not None:
            return sources.exactly(exact)
        return sources.listed(self.s3, config.key)

    async def _produce(
        self, batches: AsyncGenerator[sources.Batch, None], engine: Engine | None
    ) -> None:
        """List, select and decide; send ranges to the workers (None: plan only)."""
        async with sources.ahead(batches) as listed:
            async for batch in listed:
                self._prefix = batch.prefix
                await self._plan_page(batch.objects, engine, more=batch.more, last=batch.last)
        self._listing_done()
        self._check_something_selected()

    def _listing_done(self) -> None:
        """Tell the reporter the totals are whole (once): as soon as the last
        page is planned, not once its work is queued, which waits on workers."""
        if self._told_listing_done:
            return
        self._told_listing_done = True
        if (listing_done := getattr(self.reporter, "listing_done", None)) is not None:
            listing_done()

    @property
    def prefix(self) -> str:
        """What --include/--exclude were relative to (once the run has begun)."""
        return self._prefix

    def _check_something_selected(self) -> None:
        where = f"s3://{self.s3.bucket}/{self._prefix}"
        if self.tally.listed == 0:
            then = f" as of {rfc3339(self.config.at)}" if self.config.at is not None else ""
            raise NothingToFetch(
                f"nothing at s3://{self.s3.bucket}/{self.config.key} or under {where}{then}"
                + (" (keys rarely start with '/')" if self.config.key.startswith("/") else "")
            )
        if self.tally.excluded == self.tally.listed:
            raise NothingToFetch(
                f"none of the {self.tally.listed} objects under {where} matches --include/--exclude"
            )

    async def _plan_page(
        self,
        page: list[RemoteObject],
        engine: Engine | None,
        more: bool = False,
        last: bool = False,
    ) -> None:
        """Plan one listing page (*more*: further pages are coming; *last*:
        this page ends the whole listing)."""
        if self.watcher is not None:
            await self.watcher.room()
        jobs: list[FileJob] = []
        for obj in page:
            self.tally.listed += 1
            if not self.config.filters.selects(relative_key(obj.key, self._prefix)):
                self.tally.excluded += 1
                continue
            owned = self.config.shard.owns(obj.key)
            if is_dir_marker(obj.key, obj.size):
                await self._folder(obj, owned)
            elif (job := self._job_for(obj, owned)) is not None:
                jobs.append(job)
        if not jobs:
            return
        actions = await run_sync(
            partial(
                inspect,
                jobs,
                self.manifest,
                self.transfers,
                force=self.config.force,
                dry_run=self.config.dry_run,
                remember=self.config.lock is not None,
            )
        )
        self.notes.say(self.reporter)
        downloads = []
        for job, action in zip(jobs, actions, strict=True):
            if action is Action.DOWNLOAD:
                downloads.append(job)
            elif action is Action.SKIP:
                self.tally.skipped += 1
                self.ledger.stands_for(job)
                if self.watcher is not None:  # else no Path is needed
                    self.ledger.tell(job.obj, job.final, Status.SKIPPED)
            else:
                self.ledger.report(
                    job.obj, Status.LOCALLY_MODIFIED, _EDITED.format(job.final), job.final
                )
            if self.config.dry_run:
                self._planned(job.obj, self.tree.path_str(job.parts), action)
                if action is Action.DOWNLOAD:
                    self.ledger.stands_for(job)
        to_fetch = sum(job.obj.size - job.state.written for job in downloads)
        self._space.need(to_fetch)
        if engine is None:
            return
        self.reporter.listed(len(downloads), to_fetch)
        if last:
            self._listing_done()
        if not self.spread.decided and downloads:
            await self.spread.maybe_start(self.config, self.tree, downloads, more)
        if not self.spread.active:  # else workers compute the CRCs, with awscrt preloaded
            load_crt_for(downloads, self.config.verify, more)
        for job in downloads:
            await self._enqueue(job, engine)

    def _planned(
        self, obj: RemoteObject, path: Path | str, action: Action, reason: str = ""
    ) -> None:
        if self._book is not None:
            self._book.add(obj, path, action, reason)

    async def _enqueue(self, job: FileJob, engine: Engine) -> None:
        if self.watcher is not None:
            await self.watcher.room()
        self.reporter.file_started(job.obj.key, job.obj.size)
        if self.spread.active:
            await self.spread.submit(job)
            return
        await self._take_back(engine)
        await engine.add(job)

    async def _take_back(self, engine: Engine) -> None:
        """Fetch here, through botocore, what worker processes could not."""
        while self.spread.needs_botocore:
            job = self.spread.needs_botocore.pop()
            fresh = FileJob(obj=job.obj, parts=job.parts, tree=job.tree, part_size=job.part_size)
            await engine.add(fresh)

    def _safe_parts(
        self, obj: RemoteObject, owned: bool, *, is_dir: bool
    ) -> tuple[str, ...] | None:
        """The key's path, or None after refusing it (reported by its owner shard).

        Every shard tracks every key's path, so all shards agree on conflicts.
        """
        try:
            parts = key_parts(obj.key, is_dir_marker=is_dir)
        except RefusedKey as exc:
            reason = f"key {exc}"
        else:
            clash = self._conflicts.add(parts, is_dir=is_dir)
            if clash is None:
                if not owned:
                    self.tally.other_shards += 1
                    return None
                return parts
            reason = _conflict_reason(parts, clash)
        if owned:
            self.ledger.report(obj, Status.REFUSED, reason)
            self._planned(obj, self.tree.root, Action.REFUSED, reason)
        else:
            self.tally.other_shards += 1
        return None

    def _job_for(self, obj: RemoteObject, owned: bool) -> FileJob | None:
        parts = self._safe_parts(obj, owned, is_dir=False)
        if parts is None:
            return None
        if problem := etag_problem(obj.etag):
            # Fails alone, before any request: it would break every GET of it.
            self.ledger.report(obj, Status.FAILED, problem, self.tree.path(parts))
            self._planned(obj, self.tree.path(parts), Action.REFUSED, problem)
            return None
        part_size = (
            part_size_for(obj.size, self.config.streams)
            if obj.size > SMALL_OBJECT
            else max(obj.size, 1)
        )
        return FileJob(obj=obj, parts=parts, tree=self.tree, part_size=part_size)

    async def _folder(self, obj: RemoteObject, owned: bool) -> None:
        parts = self._safe_parts(obj, owned, is_dir=True)
        if parts is None:
            return
        if self.config.dry_run:
            self._planned(obj, self.tree.path(parts), Action.FOLDER)
            return
        try:
            await self.writer.call(self.tree.ensure_dir, parts)
        except OSError as exc:
            self.transfers.check_fatal(exc)
            self.ledger.report(obj, Status.FAILED, describe_os_error(exc), self.tree.path(parts))
            return
        self.tally.folders += 1
        self.ledger.tell(obj, self.tree.path(parts), Status.FOLDER)
