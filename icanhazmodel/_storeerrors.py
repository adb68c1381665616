"""The one error table: what S3's answers and the transport's failures mean.

Both stores (botocore's, ``_botostore``; the direct path's, ``_directstore``)
and the router (``_s3``) translate through here, so an answer means the same
whichever path it came by: a transient one is retried by the run's policy
(``_retry``), one that stops the run becomes one of our errors with a
message a user can act on, and one about a single object fails that object.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from typing import NoReturn
from urllib.parse import urlsplit

import botocore.exceptions as boto_exc

from ._checksums import ChecksumMismatch
from ._config import S3Options, effective_endpoint
from ._errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsError,
    IcanhazmodelError,
    S3Error,
    UsageError,
)
from ._http import CannotConnect
from ._objects import (
    CREDENTIAL_CODES,
    DirectError,
    FallBack,
    ObjectError,
    TransientObjectError,
    answer_text,
    raise_for_answer,
    transient,
    transient_answer,
)

NO_CREDENTIALS_HINT = (
    "pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "or use --no-sign-request for a public bucket"
)


def error_code(exc: boto_exc.ClientError | DirectError) -> tuple[str, int]:
    if isinstance(exc, DirectError):
        return exc.code, exc.status
    error = exc.response.get("Error", {})
    status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
    return str(error.get("Code", "")), int(status or 0)


def _error_message(exc: boto_exc.ClientError | DirectError) -> str:
    """The store's own words in an error answer (botocore's text around them
    would add "reached max retries: 0": its retries are off, see _retry)."""
    if isinstance(exc, DirectError):
        return exc.message
    return str(exc.response.get("Error", {}).get("Message", "") or "")


def answer_status(exc: BaseException | None) -> int:
    """The HTTP status of an S3 error answer; 0 for anything else."""
    if isinstance(exc, boto_exc.ClientError | DirectError):
        return error_code(exc)[1]
    return 0


def _retry_after(exc: boto_exc.ClientError | DirectError) -> str | None:
    if isinstance(exc, DirectError):
        return exc.retry_after
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    value = headers.get("retry-after")
    return str(value) if value is not None else None


_CREDENTIAL_CODES = CREDENTIAL_CODES

_TRANSIENT_EXCEPTIONS: tuple[type[BaseException], ...] = (
    boto_exc.ConnectionError,  # includes EndpointConnectionError, timeouts
    boto_exc.HTTPClientError,  # includes ResponseStreamingError
    boto_exc.IncompleteReadError,
    boto_exc.ReadTimeoutError,
    TimeoutError,
    ConnectionError,  # the direct path's HttpError among them
)


def _transient_exceptions() -> tuple[type[BaseException], ...]:
    """What is worth another attempt. aiobotocore's StreamingBody lets some
    of aiohttp's errors through unwrapped (ClientPayloadError for a body cut
    short); aiohttp is loaded only with botocore, so only then are they asked for."""
    aiohttp = sys.modules.get("aiohttp")
    return _TRANSIENT_EXCEPTIONS + ((aiohttp.ClientError,) if aiohttp is not None else ())


def _bucket_in_host(options: S3Options) -> str:
    """A hint when --endpoint-url names the bucket in its host already (a
    virtual-hosted URL): the bucket is then asked for twice, and S3 answers
    NoSuchKey or NoSuchBucket."""
    url = options.endpoint_url or ""
    host = (urlsplit(url).hostname or "").lower()
    if not host.startswith(options.bucket.lower() + "."):
        return ""
    return (
        f"; --endpoint-url '{url}' already names bucket '{options.bucket}' in its host: "
        "give the endpoint without the bucket (e.g. https://s3.REGION.amazonaws.com)"
    )


def _raise_run_error(exc: BaseException, options: S3Options, what: str) -> NoReturn:
    """Translate an exception that stops the whole run."""
    bucket = options.bucket
    if isinstance(exc, boto_exc.NoCredentialsError | boto_exc.PartialCredentialsError):
        raise CredentialsError(f"no AWS credentials found: {NO_CREDENTIALS_HINT}") from exc
    if isinstance(exc, boto_exc.CredentialRetrievalError):
        raise CredentialsError(f"cannot get AWS credentials: {exc}") from exc
    if isinstance(exc, boto_exc.ConfigParseError):
        raise UsageError(f"cannot read the AWS config file '{config_file()}': {exc}") from exc
    if isinstance(exc, boto_exc.ClientError):
        code, status = error_code(exc)
        if code == "NoSuchBucket":
            raise BucketNotFound(
                f"bucket '{bucket}' does not exist{_bucket_in_host(options)}"
            ) from exc
        if code in _CREDENTIAL_CODES:
            raise CredentialsError(
                f"S3 rejected the credentials ({code}) while {what}: check the profile or keys"
            ) from exc
        if code in ("AccessDenied", "403", "AllAccessDisabled") or status == 403:
            raise AccessDenied(
                f"access denied while {what}: the credentials in use may not read "
                f"bucket '{bucket}' (try another --profile)"
            ) from exc
        hint = _bucket_in_host(options) if code == "NoSuchKey" else ""
        if (not code or code == str(status)) and exc.operation_name != "HeadObject":
            # An answer with no S3 error in it (which a HEAD's never has):
            # a web server, a proxy's page.
            where = effective_endpoint(options.endpoint_url) or "the endpoint"
            raise S3Error(
                f"{where} answered HTTP {status} with no S3 error while {what}: is it an S3 "
                f"endpoint? (check --endpoint-url){hint}"
            ) from exc
        said = answer_text(code, status, _error_message(exc), during=what)
        raise S3Error(f"{said}{hint}") from exc
    if isinstance(exc, boto_exc.EndpointConnectionError):
        raise S3Error(f"cannot reach the S3 endpoint while {what}: {exc}") from exc
    if isinstance(exc, boto_exc.BotoCoreError):
        raise S3Error(f"{exc} (while {what})") from exc
    raise exc


@contextlib.contextmanager
def run_errors(options: S3Options, what: str) -> Iterator[None]:
    """Turn failures of a run-level call (listing, HEAD) into ours: a transient
    one into TransientObjectError, for the retry policy; the rest into the
    error that stops the run."""
    try:
        yield
    except (IcanhazmodelError, ObjectError):
        raise
    except (boto_exc.ClientError, DirectError) as exc:
        code, status = error_code(exc)
        if transient(status, code):
            raise transient_answer(code, status, _retry_after(exc)) from exc
        if isinstance(exc, DirectError):
            raise FallBack(f"{status} {code}") from exc
        _raise_run_error(exc, options, what)
    except _transient_exceptions() as exc:
        raise TransientObjectError(f"{type(exc).__name__}: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        _raise_run_error(exc, options, what)


def gave_up(what: str, exc: ObjectError) -> S3Error:
    """The run-level call the retry policy gave up on, in words."""
    cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
    aiohttp = sys.modules.get("aiohttp")
    unreachable = isinstance(
        cause, boto_exc.EndpointConnectionError | CannotConnect | ConnectionRefusedError
    ) or (aiohttp is not None and isinstance(cause, aiohttp.ClientConnectorError))
    reason = "cannot reach the S3 endpoint" if unreachable else "S3 kept failing"
    return S3Error(f"{reason} while {what} ({exc})")


@contextlib.contextmanager
def object_errors(key: str) -> Iterator[None]:
    """Turn failures while fetching one object into ObjectError subclasses."""
    try:
        yield
    except (ObjectError, FallBack):  # RangeIgnored included
        raise
    except (boto_exc.ClientError, DirectError) as exc:
        code, status = error_code(exc)
        raise_for_answer(key, code, status, exc, _retry_after(exc), _error_message(exc))
    except boto_exc.FlexibleChecksumError as exc:
        # botocore checks S3's checksum itself when a whole object is asked
        # for with ChecksumMode; its verdict is as good as ours.
        raise ChecksumMismatch(f"checksum mismatch: {exc}") from exc
    except _transient_exceptions() as exc:
        raise TransientObjectError(f"{type(exc).__name__}: {exc}") from exc
    except boto_exc.CredentialRetrievalError as exc:
        raise CredentialsError(f"cannot refresh the AWS credentials: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        raise ObjectError(str(exc)) from exc


def config_file() -> str:
    return os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"
