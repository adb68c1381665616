"""Fetching one object, without botocore: the errors a download can meet,
the body it reads, and the checks every answer must pass.

Both request paths build on this module: the botocore client (``_s3``) and
the direct path (``_direct``), which is all a worker process loads.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol

from ._checksums import ChecksumMismatch
from ._errors import CredentialsError, S3Error
from ._models import ObjectHeaders, RemoteObject


class ObjectError(Exception):
    """A per-object failure; the run records it and goes on."""

    transient = False


class TransientObjectError(ObjectError):
    """Worth another attempt: a dropped connection, a timeout, a 5xx.

    *throttled*: the store asked for fewer requests (503 SlowDown, 429), and
    *retry_after* is how long it asked to wait, if it said (see ``_retry``).
    """

    transient = True

    def __init__(
        self, message: str, *, throttled: bool = False, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.throttled = throttled
        self.retry_after = retry_after


class ObjectChanged(ObjectError):
    """The object was overwritten in S3 while we were reading it (412)."""


class RangeIgnored(ObjectError):
    """The server answered a ranged GET with other bytes than asked for."""


class ObjectGone(ObjectError):
    """The object was deleted between listing and download (404)."""


class NeedsBotocore(ObjectError):
    """A worker process's direct path cannot serve this object: the parent,
    which has botocore, fetches it instead."""


class FallBack(Exception):
    """This request (and the rest of the run) should go through botocore."""


class DirectError(Exception):
    """An S3 error answer to a direct request: its status, code and message."""

    def __init__(
        self, status: int, code: str, message: str, retry_after: str | None = None
    ) -> None:
        super().__init__(answer_text(code, status, message))
        self.status = status
        self.code = code
        self.message = message
        self.retry_after = retry_after


def answer_text(code: str, status: int, message: str, during: str = "") -> str:
    """An S3 error answer in one line: its code (or status), what we were
    doing, and the store's own message where it gave one."""
    what = f"S3 error {code or status}" + (f" while {during}" if during else "")
    return f"{what}: {message}" if message else what


CREDENTIAL_CODES = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "InvalidToken",
     "TokenRefreshRequired"}
)  # fmt: skip

# What a body read or a request may raise that is worth another attempt
# (the direct path's HttpError is a ConnectionError).
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, ConnectionError)
# S3 asks for fewer requests with 503 SlowDown; other stores and AWS services
# with 429 or these codes.
THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
     "TooManyRequests", "TooManyRequestsException", "RequestThrottled"}
)  # fmt: skip
# Worth another attempt, as botocore's standard mode has it.
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "InternalError"})


def throttled(status: int, code: str) -> bool:
    return code in THROTTLE_CODES or status in (429, 503)


def transient(status: int, code: str) -> bool:
    """Whether an error answer is worth another attempt (throttling included)."""
    return status >= 500 or throttled(status, code) or code in TRANSIENT_CODES


def retry_after_seconds(value: str | None) -> float | None:
    """A Retry-After header's delay in seconds (a date is not sent by S3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def transient_answer(
    code: str, status: int, retry_after: str | None = None
) -> TransientObjectError:
    return TransientObjectError(
        answer_text(code, status, ""),
        throttled=throttled(status, code),
        retry_after=retry_after_seconds(retry_after),
    )


def raise_for_answer(
    key: str,
    code: str,
    status: int,
    exc: BaseException,
    retry_after: str | None = None,
    message: str = "",
) -> None:
    """Turn an S3 error answer while fetching *key* (*message*: the store's
    own words) into the right exception."""
    if code in CREDENTIAL_CODES:
        # Every later request would be refused too: stop once, not per object.
        raise CredentialsError(
            f"S3 rejected the credentials ({code}) while downloading '{key}': "
            "they may have expired; check the profile or keys and run again"
        ) from exc
    if status == 412 or code == "PreconditionFailed":
        raise ObjectChanged(f"'{key}' changed in S3 during the download") from exc
    if status == 404 or code in ("NoSuchKey", "404"):
        raise ObjectGone(f"'{key}' was deleted from S3 during the run") from exc
    if transient(status, code):
        raise transient_answer(code, status, retry_after) from exc
    if status == 403 or code == "AccessDenied":
        named = f"403 {code}" if code and code != "403" else "403"
        raise ObjectError(
            f"access denied ({named}): the credentials in use may not read this key "
            "(check the bucket policy, or try another --profile)"
        ) from exc
    raise ObjectError(answer_text(code, status, message)) from exc


@contextlib.contextmanager
def direct_errors(key: str) -> Iterator[None]:
    """Translate what the direct path raises while fetching *key*."""
    try:
        yield
    except (ObjectError, FallBack, ChecksumMismatch):
        raise
    except DirectError as exc:
        raise_for_answer(key, exc.code, exc.status, exc, exc.retry_after, exc.message)
    except TRANSIENT_ERRORS as exc:
        raise TransientObjectError(f"{type(exc).__name__}: {exc}") from exc


def not_s3(what: str) -> S3Error:
    """The endpoint answered like a web server, not like S3 (no ETag)."""
    return S3Error(
        f"the endpoint answered {what} without an ETag, so it is not S3: check "
        "--endpoint-url (host and port) and any proxy or captive portal in the way"
    )


# An ETag is sent back in If-Match: only characters a header value may hold.
_ETAG_CHARS = re.compile(r"^[\x21\x23-\x7e]*$")


def etag_problem(etag: str) -> str | None:
    """Why an ETag cannot be used to pin a download, or None if it can."""
    if _ETAG_CHARS.match(etag):
        return None
    return f"S3 gave it the ETag {etag!r}, which cannot be sent back in a request header"


def strip_quotes(etag: str) -> str:
    """An ETag as S3 sends it ('"abc"') without its quotes."""
    return etag[1:-1] if len(etag) >= 2 and etag[0] == etag[-1] == '"' else etag


def posix_time(value: Any) -> float:
    """LastModified as POSIX seconds, from the raw text S3 sent.

    The listing's ISO 8601 ("2026-11-28T06:00:00.000Z") and HEAD's RFC 1123
    ("Sat, 28 Nov 2026 06:00:00 GMT") are both parsed here, in microseconds,
    instead of by dateutil in botocore (~80 us per listed object).
    """
    if isinstance(value, datetime):
        return value.timestamp()
    if not isinstance(value, str) or not value:
        return 0.0
    try:
        if value[0].isdigit():
            return datetime.fromisoformat(value).timestamp()
        return parsedate_to_datetime(value).timestamp()
    except (ValueError, TypeError):
        return 0.0


@dataclass(frozen=True, slots=True)
class PartHead:
    """One part of a multipart upload, as a HEAD with its part number tells.

    Taken as the store sent it, on either path; ``_parts`` judges whether it
    is the part (its Content-Range, the parts count) or the whole object (a
    store that ignores partNumber).
    """

    size: int
    checksums: dict[str, str]  # base64 by algorithm; a store may send the object's instead
    content_range: str | None = None  # "bytes a-b/total", where the store says
    parts_count: int | None = None

    @classmethod
    def of(cls, headers: ObjectHeaders) -> PartHead | None:
        if headers.content_length is None:
            return None
        return cls(
            headers.content_length,
            dict(headers.checksums),
            headers.content_range,
            headers.parts_count,
        )


@dataclass(frozen=True, slots=True)
class HeadResult:
    obj: RemoteObject
    headers: ObjectHeaders


class Body:
    """The streaming body of one GET, with what its headers said.

    Wraps either botocore's body or the direct path's; reads are translated
    to ObjectError subclasses by *errors*, the path's own translator.
    """

    def __init__(
        self,
        stream: Any,
        key: str,
        headers: ObjectHeaders,
        errors: Callable[[str], contextlib.AbstractContextManager[None]] = direct_errors,
    ) -> None:
        self._stream = stream
        self._key = key
        self._errors = errors
        self.headers = headers

    async def read(self, max_bytes: int) -> bytes:
        with self._errors(self._key):
            chunk: bytes = await self._stream.read(max_bytes)
            return chunk

    def close(self) -> None:
        self._stream.close()


class ObjectSource(Protocol):
    """What a transfer needs from S3: one object's body, and a fresh HEAD."""

    bucket: str

    async def open_body(
        self,
        obj: RemoteObject,
        *,
        start: int = 0,
        end: int | None = None,
        if_match: bool = True,
        want_checksum: bool = False,
    ) -> Body: ...

    async def stat(self, obj: RemoteObject) -> HeadResult: ...

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        """Part *number* of a multipart upload; None if S3 cannot tell."""


def byte_range(obj: RemoteObject, start: int, end: int) -> str | None:
    """The Range header for [start, end) of *obj*; None for the whole object."""
    return f"bytes={start}-{end - 1}" if start > 0 or end < obj.size else None


def checked(body: Body, obj: RemoteObject, start: int, end: int, ranged: str | None) -> Body:
    """Refuse a body that is not the bytes asked for.

    A server (or proxy) that ignores Range answers 200 with the whole
    object; written at the range's offset, those bytes would be wrong. The
    object then starts over as one plain GET. An answer without an ETag is
    not from S3 at all (a captive portal, the wrong port): that stops the
    run. One with another ETag than listed is another version (a store that
    ignores If-Match): that starts the object over.
    """
    headers = body.headers
    if not headers.etag:
        body.close()
        raise not_s3(f"the GET of '{obj.key}'")
    if obj.etag and headers.etag != obj.etag:
        body.close()
        raise ObjectChanged(f"'{obj.key}' changed in S3 since it was listed (another ETag)")
    expected_range = f"bytes {start}-{end - 1}/"
    wrong = (
        ranged is not None and not (headers.content_range or "").startswith(expected_range)
    ) or headers.content_length not in (None, end - start)
    if wrong:
        body.close()
        raise RangeIgnored(
            f"the server answered {headers.content_length} bytes "
            f"({headers.content_range or 'no Content-Range'}) to a request for {start}-{end - 1}"
        )
    return body
