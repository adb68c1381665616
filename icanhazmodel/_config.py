"""The one validated, frozen description of a fetch run."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ._errors import UsageError

# Enough requests in flight to hide S3's per-request latency (tens of ms) on
# a fast link, few enough that their buffers stay well inside the memory
# budget (each in-flight request holds at most about 1 MiB).
DEFAULT_CONCURRENCY = 16
MAX_CONCURRENCY = 512

# Legacy bucket names allow upper case and underscores, so this only rules
# out what no bucket name can hold: a slash, whitespace, or nothing at all.
_BUCKET = re.compile(r"^[A-Za-z0-9._-]{1,255}$")


@dataclass(frozen=True, kw_only=True)
class FetchConfig:
    """Everything one run needs; built by the CLI or by :func:`fetch`."""

    bucket: str
    key: str
    dest: Path = Path("ptms")
    profile: str | None = None
    endpoint_url: str | None = None
    region: str | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    retries: int = 5
    stall_timeout: float = 30.0
    verify: bool = True
    force: bool = False

    def __post_init__(self) -> None:
        if not self.bucket:
            raise UsageError("no bucket given: pass --bucket (-b) or set ICANHAZMODEL_BUCKET")
        if not _BUCKET.match(self.bucket):
            raise UsageError(
                f"bucket name '{self.bucket}' is not valid "
                "(letters, digits, '.', '-' and '_' only; give the key with --model_key)"
            )
        if not self.key:
            raise UsageError("--model_key must not be empty")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            raise UsageError(
                f"--concurrency must be between 1 and {MAX_CONCURRENCY}, not {self.concurrency}"
            )
        if self.retries < 0:
            raise UsageError(f"--retries must be 0 or more, not {self.retries}")
        if self.stall_timeout <= 0:
            raise UsageError(f"--stall-timeout must be positive, not {self.stall_timeout}")
