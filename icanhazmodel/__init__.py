"""icanhazmodel: mirror model artifacts and data from S3 to disk, key for path.

    result = asyncio.run(icanhazmodel.fetch(bucket="models", key="conduct/secrecy/en/version_1.2"))

writes every object under that key to ``ptms/<key>``.
"""

from ._api import FetchOptions, FileIterator, fetch, iter_files, plan, plan_stream, stream
from ._config import DEFAULT_CONCURRENCY, FetchConfig
from ._errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsError,
    DestinationError,
    IcanhazmodelError,
    NotEnoughSpace,
    NothingToFetch,
    ProfileNotFound,
    S3Error,
    UsageError,
)
from ._lock import Lock, LockedFile, LockError, read_lock
from ._models import (
    Action,
    FetchResult,
    LandedFile,
    ObjectReport,
    Plan,
    PlannedObject,
    Status,
    Verification,
)
from ._progress import Reporter
from ._select import Shard, parse_shard
from ._stream import FileStream, PlanStream
from ._version import __version__

__all__ = [
    "DEFAULT_CONCURRENCY",
    "AccessDenied",
    "Action",
    "BucketNotFound",
    "CredentialsError",
    "DestinationError",
    "FetchConfig",
    "FetchOptions",
    "FetchResult",
    "FileIterator",
    "FileStream",
    "IcanhazmodelError",
    "LandedFile",
    "Lock",
    "LockError",
    "LockedFile",
    "NotEnoughSpace",
    "NothingToFetch",
    "ObjectReport",
    "Plan",
    "PlanStream",
    "PlannedObject",
    "ProfileNotFound",
    "Reporter",
    "S3Error",
    "Shard",
    "Status",
    "UsageError",
    "Verification",
    "__version__",
    "fetch",
    "iter_files",
    "parse_shard",
    "plan",
    "plan_stream",
    "read_lock",
    "stream",
]
