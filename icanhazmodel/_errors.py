"""The exceptions icanhazmodel raises for whole-run failures.

Per-object trouble (one key refused, one download failed) never raises: it is
recorded in the :class:`~icanhazmodel.FetchResult` and the run goes on. These
exceptions are for runs that cannot start or cannot go on at all::

    IcanhazmodelError
    ├── UsageError (ValueError)              a bad option value            exit 2
    ├── CredentialsError                     no usable AWS credentials     exit 2
    │   └── ProfileNotFound                  --profile names no profile    exit 2
    ├── BucketNotFound (FileNotFoundError)   the bucket does not exist     exit 2
    ├── DestinationError (OSError)           model_dir unusable            exit 2
    ├── TlsError                             the endpoint failed the TLS   exit 2
    │                                        check (certificate, no TLS)
    ├── AccessDenied (PermissionError)       S3 said 403                   exit 1
    ├── NothingToFetch (FileNotFoundError)   no object under the key       exit 1
    ├── NotEnoughSpace (OSError)             listed bytes exceed free disk exit 1
    └── S3Error                              any other S3 or network error exit 1

Each message names the thing at fault (profile, bucket, key, path) and, where
there is one, what to do about it. ``exit_code`` is what the CLI exits with.
"""

from __future__ import annotations

from asyncio import CancelledError


class IcanhazmodelError(Exception):
    """Base class of every whole-run failure raised by icanhazmodel."""

    exit_code: int = 1


class UsageError(IcanhazmodelError, ValueError):
    """An option has a value icanhazmodel cannot use."""

    exit_code = 2


class CredentialsError(IcanhazmodelError):
    """No usable AWS credentials were found."""

    exit_code = 2


class ProfileNotFound(CredentialsError):
    """The named AWS profile is not in ~/.aws/credentials or ~/.aws/config."""


class BucketNotFound(IcanhazmodelError, FileNotFoundError):
    """The bucket does not exist (or the endpoint does not serve it)."""

    exit_code = 2


class DestinationError(IcanhazmodelError, OSError):
    """The model directory cannot be created or written."""

    exit_code = 2


class TlsError(IcanhazmodelError):
    """The endpoint's TLS certificate failed the check, or it spoke no TLS.

    Never retried and never worked around by another request path: whoever
    answered may not be the store, and a model file is often code.
    """

    exit_code = 2


class AccessDenied(IcanhazmodelError, PermissionError):
    """S3 refused the credentials for this bucket or key."""


class NothingToFetch(IcanhazmodelError, FileNotFoundError):
    """No object exists at the key or under it."""


class NotEnoughSpace(IcanhazmodelError, OSError):
    """The listed objects do not fit in the free space under model_dir."""


class S3Error(IcanhazmodelError):
    """S3 or the network failed in a way that stops the whole run."""


def most_telling(error: BaseException) -> BaseException:
    """The one failure worth reporting, out of a task group's failures.

    One task's error cancels the others, so there is usually one error and
    some cancellations: an interrupt wins, then one of our own errors, then
    anything that is not a cancellation the others caused.
    """
    flat: list[BaseException] = []
    pending: list[BaseException] = [error]
    while pending:
        exc = pending.pop()
        if isinstance(exc, BaseExceptionGroup):
            pending.extend(reversed(exc.exceptions))
        else:
            flat.append(exc)
    for kind in (KeyboardInterrupt, IcanhazmodelError):
        for exc in flat:
            if isinstance(exc, kind):
                return exc
    # (The runs' event loop is asyncio's, under anyio or not.)
    return next((exc for exc in flat if not isinstance(exc, CancelledError)), flat[0])
