"""How many requests a run can keep in flight within the open-file limit.

Each request in flight holds up to four descriptors: a socket on each GET
path (the direct one and botocore's, after a fallback), the temp file, and
its directory. At macOS's default soft limit of 256 and ``-j 200``, most
objects would fail with "Too many open files"; so the soft limit is raised
toward the hard one first, and ``-j`` shrinks to what still fits.
"""

from __future__ import annotations

import resource

from ._files import DIR_CACHE_SIZE

FDS_PER_REQUEST = 4
# The directory cache, the manifest (database, WAL, shared memory, folder),
# the interpreter's own files, listing and HEAD connections.
FD_RESERVE = DIR_CACHE_SIZE + 64


def fit_open_files(concurrency: int) -> tuple[int, str | None]:
    """Raise RLIMIT_NOFILE for *concurrency* requests; (concurrency to use, note)."""
    want = concurrency * FDS_PER_REQUEST + FD_RESERVE
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= want:
        return concurrency, None
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    for limit in (target, min(target, 10240)):  # macOS caps at OPEN_MAX
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))
        except (ValueError, OSError):
            continue
        soft = limit
        break
    if soft >= want:
        return concurrency, None
    fitted = max(1, (soft - FD_RESERVE) // FDS_PER_REQUEST)
    return fitted, (
        f"note: the open-file limit is {soft} (ulimit -n): {fitted} requests in flight "
        f"instead of {concurrency}"
    )
