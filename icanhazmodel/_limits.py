"""How many requests a run can keep in flight within the open-file limit.

Each request in flight holds up to four descriptors: a socket on each GET
path (the direct one and botocore's, after a fallback), the temp file, and
its directory. At macOS's default soft limit of 256 and ``-j 200``, most
objects would fail with "Too many open files"; so the soft limit is raised
toward the hard one first, and ``-j`` shrinks to what still fits.
"""

from __future__ import annotations

import math
import os
import resource

from ._files import DIR_CACHE_SIZE

# With --processes auto: a worker process costs ~0.2 s of CPU to start, so
# each should have at least this much to do (judged on the first page).
FILES_PER_PROCESS = 200
BYTES_PER_PROCESS = 64 << 20
MAX_AUTO_PROCESSES = 32

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


def usable_cpus() -> int:
    """CPUs this process may run on: its affinity, capped by a cgroup quota."""
    try:
        count = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        count = os.cpu_count() or 1
    quota = _cgroup_cpus()
    return max(1, min(count, quota) if quota else count)


def _cgroup_cpus() -> int | None:
    """cgroup v2's cpu.max ('200000 100000' is 2 CPUs); None without a quota."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as file:
            quota, period = file.read().split()[:2]
    except (OSError, ValueError):
        return None
    if quota == "max":
        return None
    return max(1, math.ceil(int(quota) / int(period)))


def may_use_processes(wanted: int | None, cpus: int) -> bool:
    """Whether a run could start worker processes, before anything is listed."""
    if wanted is not None:
        return wanted > 1
    return _most_auto(cpus) >= 2


def _most_auto(cpus: int) -> int:
    """The most processes auto picks: every CPU but the parent's, capped."""
    return min(cpus - 1, MAX_AUTO_PROCESSES)


def processes_for(
    wanted: int | None, files: int, nbytes: int, cpus: int, *, more_listed: bool = False
) -> int:
    """How many worker processes a run uses (1: everything in this process).

    *wanted* is --processes (None for auto). Auto leaves one CPU to the
    parent (listing, manifest, bars) and to the system, and starts no more
    processes than the first page of work can keep busy. A first page with
    *more_listed* behind it is a full page of objects to fetch (1,000 on S3)
    and as many again at least: work for every CPU.
    """
    if wanted is not None:
        return wanted
    if more_listed and files >= FILES_PER_PROCESS:
        return max(1, _most_auto(cpus))
    # Bytes count whatever the number of objects: a big object's ranges are
    # spread over every process (see _pool).
    by_work = max(files // FILES_PER_PROCESS, nbytes // BYTES_PER_PROCESS)
    count = min(_most_auto(cpus), by_work)
    return count if count >= 2 else 1
