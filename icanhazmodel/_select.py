"""Which listed objects this run takes: --include/--exclude and --shard.

Pure functions of keys and patterns; no I/O besides reading the environment
variables that schedulers set, which happens once, at configuration time.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ._errors import UsageError


@dataclass(frozen=True)
class Filters:
    """--include/--exclude globs, matched against the key relative to the
    requested prefix and against its base name.

    ``*`` matches across '/', so ``models/*`` takes everything under models/
    and ``*.yaml`` takes every yaml at any depth (through the base name).
    An exclude always wins over an include, whatever the order given.
    """

    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    _include_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)
    _exclude_re: re.Pattern[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for pattern in (*self.include, *self.exclude):
            if not pattern:
                raise UsageError("--include/--exclude patterns must not be empty")
        object.__setattr__(self, "_include_re", _compile(self.include))
        object.__setattr__(self, "_exclude_re", _compile(self.exclude))

    @property
    def active(self) -> bool:
        return bool(self.include or self.exclude)

    def selects(self, relative_key: str) -> bool:
        if not self.active:  # the usual case, once per listed key
            return True
        name = relative_key.rstrip("/").rsplit("/", 1)[-1]
        candidates = (relative_key, name)
        if _matches(self._exclude_re, candidates):
            return False
        if self.include:
            return _matches(self._include_re, candidates)
        return True


def _compile(patterns: Sequence[str]) -> re.Pattern[str] | None:
    if not patterns:
        return None
    # fnmatch.translate: '*' becomes '.*', which crosses '/'; case-sensitive
    # like S3 keys (fnmatch.fnmatch would fold case on some systems).
    return re.compile("|".join(f"(?:{fnmatch.translate(p)})" for p in patterns))


def _matches(pattern: re.Pattern[str] | None, candidates: tuple[str, ...]) -> bool:
    return pattern is not None and any(pattern.match(c) for c in candidates if c)


def relative_key(key: str, prefix: str) -> str:
    """*key* relative to the requested prefix (the base name for an exact key)."""
    if prefix and key.startswith(prefix):
        return key[len(prefix) :]
    return key.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Shard:
    """This process's slice of the listing: shard *index* of *count* (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise UsageError(
                f"--shard {self.index}/{self.count} is out of range: use K/N with 0 <= K < N"
            )

    def owns(self, key: str) -> bool:
        """Whether this shard fetches *key*: the same answer on every machine."""
        if self.count == 1:
            return True
        digest = hashlib.blake2b(key.encode("utf-8", "surrogatepass"), digest_size=8).digest()
        return int.from_bytes(digest, "big") % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


# (index variable, count variable, offset of the first index) per scheduler.
_SCHEDULERS: tuple[tuple[str, str, str], ...] = (
    ("RANK", "WORLD_SIZE", ""),  # torchrun, torch.distributed
    ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", ""),  # Open MPI
    ("PMI_RANK", "PMI_SIZE", ""),  # MPICH, Intel MPI
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "SLURM_ARRAY_TASK_MIN"),  # Slurm arrays
    ("JOB_COMPLETION_INDEX", "ICANHAZMODEL_SHARD_COUNT", ""),  # Kubernetes Indexed Jobs
)


def parse_shard(text: str, environ: Mapping[str, str] | None = None) -> Shard:
    """``K/N``, or ``auto`` to read the index and count a scheduler set."""
    env = os.environ if environ is None else environ
    if text.strip().lower() == "auto":
        return _shard_from_env(env)
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not match:
        raise UsageError(f"--shard '{text}' is not K/N (e.g. 0/4) or 'auto'")
    return Shard(int(match.group(1)), int(match.group(2)))


def _shard_from_env(env: Mapping[str, str]) -> Shard:
    for index_var, count_var, offset_var in _SCHEDULERS:
        if index_var not in env:
            continue
        count = env.get(count_var) or env.get("ICANHAZMODEL_SHARD_COUNT")
        if not count:
            raise UsageError(
                f"--shard auto found {index_var} but no shard count: "
                f"set {count_var} or ICANHAZMODEL_SHARD_COUNT"
            )
        try:
            index = int(env[index_var]) - int(env.get(offset_var, "0") or 0)
            return Shard(index, int(count))
        except ValueError:
            raise UsageError(
                f"--shard auto: {index_var}={env[index_var]!r} and shard count "
                f"{count!r} must be whole numbers"
            ) from None
    names = ", ".join(index for index, _, _ in _SCHEDULERS)
    raise UsageError(f"--shard auto found no scheduler variable (looked for {names})")
