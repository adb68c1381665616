"""The one validated, frozen description of a fetch run."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from ._errors import UsageError
from ._lock import Lock
from ._select import Filters, Shard
from ._window import AUTO_CEILING, AUTO_STREAMS, AUTO_TLS_STREAMS

# Requests in flight: by default found as the run goes (see _window), from
# 32 up to AUTO_CEILING per process; -j N fixes it.
DEFAULT_CONCURRENCY = "auto"
MAX_CONCURRENCY = 512
MAX_PROCESSES = 256

# Legacy bucket names allow upper case and underscores, so this only rules
# out what no bucket name can hold: a slash, whitespace, or nothing at all.
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")
# botocore's own rule for region names.
_REGION = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9-]{0,62}$")


_NO_BUCKET = (
    "--bucket (-b) or set ICANHAZMODEL_BUCKET, or give bucket and key at once as -k s3://BUCKET/KEY"
)


@dataclass(frozen=True, kw_only=True)
class FetchConfig:
    """Everything one run needs; built by the CLI or by :func:`fetch`."""

    bucket: str
    key: str
    dest: Path = Path("ptms")
    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    concurrency: int | None = None  # requests in flight per process; None: found (auto)
    retries: int = 5
    stall_timeout: float = 30.0
    verify: bool = True
    verify_ssl: bool = True  # False: --no-verify-ssl (TLS certificates unchecked)
    ca_bundle: str | None = None  # --ca-bundle: CAs trusted for TLS
    force: bool = False
    filters: Filters = field(default_factory=Filters)
    shard: Shard = field(default_factory=Shard)
    dry_run: bool = False
    unsigned: bool = False
    request_payer: str | None = None
    version_id: str | None = None
    ignore_space: bool = False
    processes: int | None = None  # worker processes; None: auto
    # The most an automatic level may reach (fewer where open files are scarce).
    auto_ceiling: int = AUTO_CEILING
    lock: Path | None = None  # --lock: write what the run stands for here
    from_lock: Lock | None = None  # --from-lock: fetch exactly these objects
    at: float | None = None  # --at: the prefix as it was then (POSIX seconds)

    def __post_init__(self) -> None:
        if not self.bucket:
            raise UsageError(f"no bucket given: pass {_NO_BUCKET}")
        if not _BUCKET.match(self.bucket):
            raise UsageError(
                f"bucket name '{self.bucket}' is not valid "
                "(letters, digits, '.', '-' and '_' only; give the key with --model_key)"
            )
        if self.at is not None and (self.version_id or self.from_lock is not None):
            raise UsageError(
                "--at picks each object's version itself: not with "
                + ("--version-id" if self.version_id else "--from-lock")
            )
        if self.from_lock is not None and self.version_id:
            raise UsageError("--from-lock fetches the versions its lock names: drop --version-id")
        if not self.key and self.version_id:
            raise UsageError("--version-id needs the exact key of one object")
        if self.key.endswith("/") and self.version_id:
            raise UsageError(
                f"--version-id needs the exact key of one object, not the folder '{self.key}'"
            )
        if self.endpoint_url is not None:
            _check_endpoint(self.endpoint_url)
        if self.region is not None and not _REGION.match(self.region):
            raise UsageError(f"--region '{self.region}' is not a region name (e.g. eu-west-1)")
        if self.request_payer not in (None, "requester"):
            raise UsageError(f"--request-payer must be 'requester', not '{self.request_payer}'")
        if self.concurrency is not None and not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(
                f"--concurrency must be 'auto' or between 1 and {MAX_CONCURRENCY}, "
                f"not {self.concurrency}"
            )
        if self.processes is not None and not 1 <= self.processes <= MAX_PROCESSES:
            raise UsageError(
                f"--processes must be 'auto' or between 1 and {MAX_PROCESSES}, not {self.processes}"
            )
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, not {self.retries}")
        if self.stall_timeout <= 0:
            raise UsageError(f"--stall-timeout must be positive, not {self.stall_timeout}")
        if self.lock is not None:
            _check_lock_path(self.lock)

    @property
    def pinned(self) -> bool:
        """Each object must land as named (--from-lock): never a newer one."""
        return self.from_lock is not None

    @property
    def adaptive(self) -> bool:
        """Whether the run finds its level of requests in flight (-j auto)."""
        return self.concurrency is None

    @property
    def ceiling(self) -> int:
        """The most requests in flight per process: -j N, or auto's ceiling."""
        return self.auto_ceiling if self.concurrency is None else self.concurrency

    @property
    def auto_streams(self) -> int:
        """Ranges streamed at once that -j auto budgets memory for (fewer over TLS)."""
        plain = plain_http(effective_endpoint(self.endpoint_url))
        return AUTO_STREAMS if plain else AUTO_TLS_STREAMS

    @property
    def streams(self) -> int:
        """The most ranges streamed at once per process (what memory is
        budgeted for): -j N, or auto's share of its ceiling."""
        if self.concurrency is not None:
            return self.concurrency
        return min(self.auto_streams, self.ceiling)


def effective_endpoint(endpoint_url: str | None) -> str:
    """The endpoint a run talks to: --endpoint-url, else the one botocore
    reads from the environment; "" for AWS's own."""
    return (
        endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or ""
    )


def plain_http(endpoint: str) -> bool:
    """Whether requests to *endpoint* (see effective_endpoint) go out without
    TLS; AWS's own ("") never do."""
    return endpoint.lower().startswith("http://")


# A setting's name on the command line, and as fetch()'s keyword: the
# checks above speak the CLI's language, and a library caller gets theirs.
_KEYWORDS = {
    _NO_BUCKET: "bucket=",
    "--model_key": "key=",
    "--version-id": "version_id=",
    "--endpoint-url": "endpoint_url=",
    "--region": "region=",
    "--request-payer": "request_payer=",
    "--concurrency": "concurrency=",
    "--processes": "processes=",
    "--retries": "retries=",
    "--stall-timeout": "stall_timeout=",
    "--include/--exclude": "include=/exclude=",
    "--shard": "shard=",
    "--ca-bundle": "ca_bundle=",
    "--bucket": "bucket=",
    "--lock": "lock=",
    "--from-lock": "from_lock=",
    "--at": "at=",
}
_FLAG = re.compile("|".join(re.escape(flag) for flag in sorted(_KEYWORDS, key=len, reverse=True)))


def library_words(message: str) -> str:
    """*message* with each command-line flag named as fetch()'s keyword."""
    return _FLAG.sub(lambda m: _KEYWORDS[m.group(0)], message)


def _check_endpoint(url: str) -> None:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- raises ValueError for a port out of range
    except ValueError as exc:
        raise UsageError(f"--endpoint-url '{url}' is not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--endpoint-url '{url}' is not an http:// or https:// URL")
    if parts.port == 0:
        raise UsageError(f"--endpoint-url '{url}' has port 0")


def _check_lock_path(path: Path) -> None:
    """Say now, not after the downloads, that the lock could not be written."""
    if path.is_dir():
        raise UsageError(f"--lock '{path}' is a folder: name the lock file to write")
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"--lock '{path}': there is no folder '{folder}' to write it in")
    if not os.access(folder, os.W_OK):
        raise UsageError(f"--lock '{path}': the folder '{folder}' is not writable")


def locked_source(lock: Lock, bucket: str | None, key: str | None) -> tuple[str, str]:
    """The bucket and key of a --from-lock run: the lock's (a bucket or key
    given as well must be the lock's own)."""
    if bucket and bucket != lock.bucket:
        raise UsageError(f"--bucket '{bucket}' is not the lock's bucket '{lock.bucket}'")
    if key and key not in (lock.key, f"s3://{lock.bucket}/{lock.key}"):
        raise UsageError(
            f"--from-lock fetches the objects its lock names (under '{lock.key}'): "
            f"drop --model_key '{key}'"
        )
    return lock.bucket, lock.key


def parse_concurrency(value: str | int | None) -> int | None:
    """--concurrency: 'auto' (None: found as the run goes) or a fixed count."""
    return _auto_or_count(value, "--concurrency")


def parse_processes(text: str | int | None) -> int | None:
    """--processes: 'auto' (None) or a count; None asks ICANHAZMODEL_PROCESSES."""
    if text is None:
        text = os.environ.get("ICANHAZMODEL_PROCESSES", "auto")
    return _auto_or_count(text, "--processes")


def _auto_or_count(value: str | int | None, option: str) -> int | None:
    """'auto' (None) or a count, for *option*; the range is checked later."""
    if value is None or isinstance(value, int):
        return value
    if value.strip().lower() == "auto":
        return None
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"{option} must be 'auto' or a number, not '{value}'") from None


def split_s3_url(text: str) -> tuple[str, str] | None:
    """(bucket, key) from ``s3://bucket/key``; None if *text* is a plain key.

    ``s3://bucket`` and ``s3://bucket/`` name the whole bucket (key "").
    """
    if text[:5].lower() != "s3://":
        return None
    bucket, _, key = text[5:].partition("/")
    if not bucket:
        raise UsageError(f"'{text}' names no bucket: use s3://BUCKET/KEY")
    return bucket, key


@dataclass(frozen=True, slots=True)
class S3Options:
    """What the adapter needs to know to open a client."""

    bucket: str
    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    pool_size: int = 10
    retries: int = 5
    read_timeout: float = 60.0
    connect_timeout: float = 10.0
    unsigned: bool = False
    request_payer: str | None = None
    verify_ssl: bool = True  # False: --no-verify-ssl
    ca_bundle: str | None = None  # --ca-bundle
