"""The library entry points: :func:`fetch`, :func:`plan`, :func:`stream` and
:func:`iter_files`."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, TypeVar, Unpack

from ._asof import parse_at
from ._config import (
    DEFAULT_CONCURRENCY,
    FetchConfig,
    library_words,
    locked_source,
    parse_concurrency,
    parse_processes,
)
from ._errors import UsageError
from ._lock import Lock, read_lock
from ._models import FetchResult, LandedFile, Plan
from ._progress import NullReporter, Reporter, TqdmReporter
from ._runner import run
from ._select import Filters, Shard, parse_shard
from ._stream import UNFINISHED, FileStream, PlanStream, RecordStream

RecordStreamT = TypeVar("RecordStreamT", bound=RecordStream[Any])

if TYPE_CHECKING:
    pass

# Records a stream holds unread before the listing waits for the consumer.
DEFAULT_BUFFER = 256


class FetchOptions(TypedDict, total=False):
    """The keywords :func:`stream` and :func:`iter_files` share with :func:`fetch`."""

    dest: str | os.PathLike[str]
    profile: str | None
    endpoint_url: str | None
    region: str | None
    concurrency: int | str
    processes: int | str | None
    include: Sequence[str]
    exclude: Sequence[str]
    shard: str | Shard | None
    verify: bool
    verify_ssl: bool
    ca_bundle: str | None
    force: bool
    no_sign_request: bool
    request_payer: str | None
    version_id: str | None
    ignore_space: bool
    retries: int
    stall_timeout: float
    progress: bool | Reporter
    lock: str | os.PathLike[str] | None
    from_lock: str | os.PathLike[str] | Lock | None
    at: str | datetime | None


async def fetch(
    *,
    bucket: str | None = None,
    key: str | None = None,
    dest: str | os.PathLike[str] = "ptms",
    profile: str | None = None,
    endpoint_url: str | None = None,
    region: str | None = None,
    concurrency: int | str = DEFAULT_CONCURRENCY,
    processes: int | str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    shard: str | Shard | None = None,
    dry_run: bool = False,
    verify: bool = True,
    verify_ssl: bool = True,
    ca_bundle: str | None = None,
    force: bool = False,
    no_sign_request: bool = False,
    request_payer: str | None = None,
    version_id: str | None = None,
    ignore_space: bool = False,
    retries: int = 5,
    stall_timeout: float = 30.0,
    progress: bool | Reporter = False,
    on_file: Callable[[LandedFile], Awaitable[Any] | Any] | None = None,
    lock: str | os.PathLike[str] | None = None,
    from_lock: str | os.PathLike[str] | Lock | None = None,
    at: str | datetime | None = None,
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
    else auto. *concurrency* is requests in flight per process: ``"auto"``
    (the default: found as the run goes, 32 to 256; at most 48 big-file ranges
    at once, 32 over HTTPS; backing off on throttling) or a fixed count.

    *verify* checks each file's bytes against S3's checksum; TLS is separate:
    every certificate and host name is checked against *ca_bundle* (a PEM
    file), else AWS_CA_BUNDLE, the profile's ``ca_bundle``, else certifi's
    bundle, unless *verify_ssl* is false (insecure: anyone on the network
    path could then serve the files).

    *lock* (a path) writes a lock file of what the run stands for once every
    object is on disk; *from_lock* (its path, or a :class:`Lock`) fetches
    exactly those objects, by version id or ETag, failing each S3 no longer
    holds so; *at* (RFC 3339, a date, or a datetime) takes the key as it was
    then, from a versioned bucket. See README, "Reproducible runs".

    *on_file* (a function or a coroutine function) is called with each
    object's :class:`LandedFile` as soon as it is known, as :func:`stream`
    yields them; if it raises, the run stops and the exception propagates.
    """
    options = FetchOptions(
        dest=dest,
        profile=profile,
        endpoint_url=endpoint_url,
        region=region,
        concurrency=concurrency,
        processes=processes,
        include=include,
        exclude=exclude,
        shard=shard,
        verify=verify,
        verify_ssl=verify_ssl,
        ca_bundle=ca_bundle,
        force=force,
        no_sign_request=no_sign_request,
        request_payer=request_payer,
        version_id=version_id,
        ignore_space=ignore_space,
        retries=retries,
        stall_timeout=stall_timeout,
        lock=lock,
        from_lock=from_lock,
        at=at,
    )
    config = replace(_config(bucket, key, options), dry_run=dry_run)
    if on_file is not None and dry_run:
        raise UsageError("on_file is called as files land; a dry run lands none (use plan())")
    if on_file is not None:
        return await _fetch_calling(config, progress, on_file)
    reporter = _reporter(progress)
    try:
        return await run(config, reporter)
    finally:
        reporter.close()


async def _fetch_calling(
    config: FetchConfig,
    progress: bool | Reporter,
    on_file: Callable[[LandedFile], Awaitable[Any] | Any],
) -> FetchResult:
    async with _stream(config, progress, lambda: FileStream(DEFAULT_BUFFER)) as files:
        async for record in files:
            outcome = on_file(record)
            if inspect.isawaitable(outcome):
                await outcome
    return files.result


@asynccontextmanager
async def stream(
    *,
    bucket: str | None = None,
    key: str | None = None,
    buffer: int = DEFAULT_BUFFER,
    folders: bool = False,
    **options: Unpack[FetchOptions],
) -> AsyncIterator[FileStream]:
    """Fetch as :func:`fetch` does, yielding each object as soon as it is known::

        async with icanhazmodel.stream(bucket="data", key="shards/") as files:
            async for f in files:  # in the order they land
                if f.ok:
                    tokenize(f.path)
        print(files.result.downloaded)

    Each :class:`LandedFile` says where the file is, its size, ETag, status
    (``downloaded`` once it is on disk and checked, ``skipped`` when already
    there, or ``failed``/``refused``/``locally-modified`` with the reason) and
    how it was verified. With *folders*, folder markers (keys ending in
    '/') come too, as ``folder`` once their directory exists.
    ``files.result`` is the :class:`FetchResult` once
    every record is read. A run-wide error (bad credentials, a full disk) is
    raised from the loop after the records before it.

    A slow consumer never stalls a download: records wait in memory, and
    once *buffer* of them are unread the listing pauses (downloads under
    way still finish). Leaving the ``async with`` early (``break``, an
    exception, cancellation) stops the run as Ctrl-C does: temp files are
    tidied or kept for resuming, worker processes stopped.
    """
    if options.get("dry_run"):
        raise UsageError("stream() downloads; use plan() to see what a run would do")
    config = _config(bucket, key, options)
    progress = options.get("progress", False)
    async with _stream(config, progress, lambda: FileStream(buffer, folders=folders)) as files:
        yield files


def iter_files(
    *,
    bucket: str | None = None,
    key: str | None = None,
    buffer: int = DEFAULT_BUFFER,
    folders: bool = False,
    **options: Unpack[FetchOptions],
) -> FileIterator:
    """:func:`stream` for code that is not async: a plain iterator of
    :class:`LandedFile`. The run's event loop lives in a thread of its own;
    closing the iterator (leaving its ``with`` block, or ``.close()``) stops
    the run. ``.result`` is the :class:`FetchResult` once it is exhausted.

        with icanhazmodel.iter_files(bucket="data", key="shards/") as files:
            for f in files:
                load(f.path)
    """
    if options.get("dry_run"):
        raise UsageError("iter_files() downloads; use plan() to see what a run would do")
    progress = options.get("progress", False)
    return FileIterator(_config(bucket, key, options), progress, buffer, folders)


class FileIterator:
    """The iterator :func:`iter_files` returns."""

    def __init__(
        self, config: FetchConfig, progress: bool | Reporter, buffer: int, folders: bool
    ) -> None:
        self._result: FetchResult | None = None
        self._records = self._run(config, progress, buffer, folders)

    @property
    def result(self) -> FetchResult:
        """The whole run's result, once every record has been read."""
        if self._result is None:
            raise RuntimeError(UNFINISHED)
        return self._result

    def _run(
        self, config: FetchConfig, progress: bool | Reporter, buffer: int, folders: bool
    ) -> Generator[LandedFile, None, None]:
        from anyio.from_thread import start_blocking_portal

        with (
            start_blocking_portal() as portal,
            portal.wrap_async_context_manager(
                _stream(config, progress, lambda: FileStream(buffer, folders=folders))
            ) as files,
        ):
            while True:
                try:
                    record = portal.call(files.__anext__)
                except StopAsyncIteration:
                    break
                yield record
            self._result = files.result

    def __iter__(self) -> FileIterator:
        return self

    def __next__(self) -> LandedFile:
        return next(self._records)

    def close(self) -> None:
        """Stop the run, if it is still going, and wait until it has stopped."""
        self._records.close()

    def __enter__(self) -> FileIterator:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


@asynccontextmanager
async def _stream(
    config: FetchConfig, progress: bool | Reporter, make: Callable[[], RecordStreamT]
) -> AsyncIterator[RecordStreamT]:
    """Run *config* in a task, its records read from the stream *make* makes
    (made here: its events belong to this event loop)."""
    import anyio

    records = make()
    reporter = _reporter(progress)

    async def drive() -> None:
        try:
            if isinstance(records, PlanStream):
                result = await run(config, reporter, records.pacer(), records.put)
            else:
                result = await run(config, reporter, records)
        except Exception as exc:  # handed to the consumer, after the records before it
            records.finish(error=exc)
        else:
            records.finish(result=result)
        finally:
            reporter.close()

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(drive)
            try:
                yield records
            finally:
                # Left early: stop the run (a no-op once it has finished).
                tg.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        # The consumer's own exception, not wrapped in the task group's.
        if len(group.exceptions) == 1:
            raise group.exceptions[0] from None
        raise


def _config(bucket: str | None, key: str | None, options: FetchOptions) -> FetchConfig:
    try:
        return _checked_config(bucket, key, options)
    except UsageError as exc:
        raise UsageError(library_words(str(exc))) from None


def _checked_config(bucket: str | None, key: str | None, options: FetchOptions) -> FetchConfig:
    from_lock = options.get("from_lock")
    lock = read_lock(from_lock) if isinstance(from_lock, str | os.PathLike) else from_lock
    if lock is not None:
        bucket, key = locked_source(lock, bucket, key)
    elif key is None:
        raise UsageError('no key given: pass key= ("" for the whole bucket) or from_lock=')
    lock_path = options.get("lock")
    return FetchConfig(
        bucket=bucket or "",
        key=key,
        dest=Path(options.get("dest", "ptms")),
        profile=options.get("profile"),
        endpoint_url=options.get("endpoint_url"),
        region=options.get("region"),
        concurrency=parse_concurrency(options.get("concurrency", DEFAULT_CONCURRENCY)),
        processes=parse_processes(options.get("processes")),
        retries=options.get("retries", 5),
        stall_timeout=options.get("stall_timeout", 30.0),
        verify=options.get("verify", True),
        verify_ssl=options.get("verify_ssl", True),
        ca_bundle=options.get("ca_bundle"),
        force=options.get("force", False),
        filters=Filters(tuple(options.get("include", ())), tuple(options.get("exclude", ()))),
        shard=_shard(options.get("shard")),
        unsigned=options.get("no_sign_request", False),
        request_payer=options.get("request_payer"),
        version_id=options.get("version_id"),
        ignore_space=options.get("ignore_space", False),
        lock=Path(lock_path) if lock_path is not None else None,
        from_lock=lock,
        at=_at(options.get("at")),
    )


def _at(at: str | datetime | None) -> float | None:
    if at is None:
        return None
    if isinstance(at, datetime):
        return (at if at.tzinfo else at.replace(tzinfo=UTC)).timestamp()
    return parse_at(at)


def _shard(shard: str | Shard | None) -> Shard:
    return parse_shard(shard) if isinstance(shard, str) else shard or Shard()


async def plan(
    *,
    bucket: str | None = None,
    key: str | None = None,
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
    verify_ssl: bool = True,
    ca_bundle: str | None = None,
    lock: str | os.PathLike[str] | None = None,
    from_lock: str | os.PathLike[str] | Lock | None = None,
    at: str | datetime | None = None,
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
        verify_ssl=verify_ssl,
        ca_bundle=ca_bundle,
        dry_run=True,
        lock=lock,
        from_lock=from_lock,
        at=at,
    )
    assert result.plan is not None  # a dry run always has one
    return result.plan


@asynccontextmanager
async def plan_stream(
    *,
    bucket: str | None = None,
    key: str | None = None,
    buffer: int = DEFAULT_BUFFER,
    **options: Unpack[FetchOptions],
) -> AsyncIterator[PlanStream]:
    """:func:`plan`, one object at a time, for prefixes too big to hold::

        async with icanhazmodel.plan_stream(bucket="data", key="shards/") as plans:
            async for o in plans:  # a listing page at a time
                if o.action is icanhazmodel.Action.DOWNLOAD:
                    total += o.size
        print(plans.plan.count(icanhazmodel.Action.SKIP))

    Each :class:`PlannedObject` comes as soon as it is decided, in the
    order :func:`plan` holds them (a listing page at a time: its refusals and
    folders, then its other objects); ``plans.plan`` has the totals (its ``objects`` are empty) once
    every one is read. Nothing is written. The listing pauses while *buffer*
    objects are unread, so memory stays bounded whatever the prefix holds.
    A run-wide error is raised from the loop after the objects before it;
    leaving the ``async with`` early stops the listing.
    """
    config = replace(_config(bucket, key, options), dry_run=True)
    progress = options.get("progress", False)
    async with _stream(config, progress, lambda: PlanStream(buffer)) as plans:
        yield plans


def _reporter(progress: bool | Reporter) -> Reporter:
    if progress is True:
        return TqdmReporter()
    if progress is False:
        return NullReporter()
    return progress
