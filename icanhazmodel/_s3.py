"""The S3 adapter: the only module the pipeline uses to reach S3.

It opens one session and one client per run, pages through listings, heads
and streams objects, and translates botocore's and aiohttp's exceptions into
ours in one place, so the rest of the package never sees a botocore type.
GETs go through the lighter path in ``_direct`` where it applies (same
errors, translated here), else through the botocore client.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar
from urllib.parse import urlsplit

import aiohttp
import anyio
import botocore.exceptions as boto_exc

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig

from ._checksums import CHECKSUM_ALGORITHMS, ChecksumMismatch
from ._contract import TokenChain, truncated_without_token
from ._direct import (
    DirectGets,
    DirectSource,
    FrozenCredentials,
    HandedCredentials,
    Route,
    head_result,
    usable_for,
)
from ._errors import (
    AccessDenied,
    BucketNotFound,
    CredentialsError,
    IcanhazmodelError,
    NothingToFetch,
    ProfileNotFound,
    S3Error,
    UsageError,
)
from ._fanout import fanned_out
from ._light import LightStart, light_start
from ._listxml import ListPage, cut_below
from ._models import ObjectHeaders, RemoteObject, encrypted_with_key
from ._objects import (
    CREDENTIAL_CODES,
    Body,
    DirectError,
    FallBack,
    HeadResult,
    NeedsBotocore,
    ObjectError,
    PartHead,
    TransientObjectError,
    answer_text,
    byte_range,
    checked,
    not_s3,
    posix_time,
    raise_for_answer,
    strip_quotes,
    transient,
    transient_answer,
)
from ._proxy import Proxies
from ._retry import RetryPolicy
from ._tls import Trust, resolve_trust

T = TypeVar("T")

_NO_CREDENTIALS_HINT = (
    "pass --profile, set AWS_PROFILE or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, "
    "or use --no-sign-request for a public bucket"
)


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


# -- errors -------------------------------------------------------------------


def _error_code(exc: boto_exc.ClientError | DirectError) -> tuple[str, int]:
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


def _answer_status(exc: BaseException | None) -> int:
    """The HTTP status of an S3 error answer; 0 for anything else."""
    if isinstance(exc, boto_exc.ClientError | DirectError):
        return _error_code(exc)[1]
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
    ConnectionError,
    # aiobotocore's StreamingBody lets some of aiohttp's errors through
    # unwrapped, e.g. ClientPayloadError for a body cut short.
    aiohttp.ClientError,
)


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
        raise CredentialsError(f"no AWS credentials found: {_NO_CREDENTIALS_HINT}") from exc
    if isinstance(exc, boto_exc.CredentialRetrievalError):
        raise CredentialsError(f"cannot get AWS credentials: {exc}") from exc
    if isinstance(exc, boto_exc.ConfigParseError):
        raise UsageError(f"cannot read the AWS config file '{_config_file()}': {exc}") from exc
    if isinstance(exc, boto_exc.ClientError):
        code, status = _error_code(exc)
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
            where = _effective_endpoint(options) or "the endpoint"
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
        code, status = _error_code(exc)
        if transient(status, code):
            raise transient_answer(code, status, _retry_after(exc)) from exc
        if isinstance(exc, DirectError):
            raise FallBack(f"{status} {code}") from exc
        _raise_run_error(exc, options, what)
    except _TRANSIENT_EXCEPTIONS as exc:
        raise TransientObjectError(f"{type(exc).__name__}: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        _raise_run_error(exc, options, what)


def _gave_up(what: str, exc: ObjectError) -> S3Error:
    """The run-level call the retry policy gave up on, in words."""
    cause = exc.__cause__.__cause__ if exc.__cause__ is not None else None
    unreachable = isinstance(
        cause,
        boto_exc.EndpointConnectionError | aiohttp.ClientConnectorError | ConnectionRefusedError,
    )
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
        code, status = _error_code(exc)
        raise_for_answer(key, code, status, exc, _retry_after(exc), _error_message(exc))
    except boto_exc.FlexibleChecksumError as exc:
        # botocore checks S3's checksum itself when a whole object is asked
        # for with ChecksumMode; its verdict is as good as ours.
        raise ChecksumMismatch(f"checksum mismatch: {exc}") from exc
    except _TRANSIENT_EXCEPTIONS as exc:
        raise TransientObjectError(f"{type(exc).__name__}: {exc}") from exc
    except boto_exc.CredentialRetrievalError as exc:
        raise CredentialsError(f"cannot refresh the AWS credentials: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        raise ObjectError(str(exc)) from exc


# -- the client ---------------------------------------------------------------


def _listed_object(item: Mapping[str, Any]) -> RemoteObject:
    return RemoteObject(
        key=item["Key"],
        size=int(item.get("Size", 0)),
        etag=strip_quotes(item.get("ETag", "")),
        last_modified=posix_time(item.get("LastModified")),
        checksum_algorithms=tuple(item.get("ChecksumAlgorithm", ())),
    )


def response_checksums(response: Mapping[str, Any]) -> dict[str, str]:
    """The base64 checksums S3 sent with a GetObject or HeadObject response."""
    found = {}
    for name in CHECKSUM_ALGORITHMS:
        value = response.get(f"Checksum{name}")
        if value:
            found[name] = str(value)
    return found


def _headers(response: Mapping[str, Any]) -> ObjectHeaders:
    """The fields icanhazmodel uses from a botocore GetObject/HeadObject answer."""
    length = response.get("ContentLength")
    return ObjectHeaders(
        etag=strip_quotes(response.get("ETag", "")),
        checksums=response_checksums(response),
        checksum_type=response.get("ChecksumType"),
        encrypted_with_key=encrypted_with_key(
            response.get("ServerSideEncryption"), response.get("SSECustomerAlgorithm")
        ),
        content_length=None if length is None else int(length),
        content_range=response.get("ContentRange"),
        parts_count=response.get("PartsCount"),
    )


def _head_result(key: str, response: Mapping[str, Any], version_id: str | None) -> HeadResult:
    headers = _headers(response)
    obj = RemoteObject(
        key=key,
        size=int(response.get("ContentLength", 0)),
        etag=headers.etag,
        last_modified=posix_time(response.get("LastModified")),
        checksum_algorithms=tuple(headers.checksums),
        version_id=response.get("VersionId") if version_id else None,
    )
    return HeadResult(obj, headers)


@dataclass(slots=True)
class _Botocore:
    """The botocore side of a run: opened at the start, or on first need."""

    client: Any
    exit: Any  # the client context's __aexit__
    credentials: Any  # botocore's (refreshing) credentials; None: unsigned


class S3:
    """The run's way to S3: the direct path, and one aioboto3 client shared
    by every worker for what only botocore can do."""

    def __init__(
        self,
        options: S3Options,
        trust: Trust,
        proxies: Proxies,
        *,
        botocore: _Botocore | None = None,
        light: LightStart | None = None,
    ) -> None:
        self._options = options
        self.trust = trust
        self.proxies = proxies
        self._boto = botocore
        self._boto_lock = anyio.Lock()
        self._light = light  # botocore not loaded until needed
        self.bucket = options.bucket
        self._direct: DirectGets | None = None
        self._direct_wanted = light is not None or (
            botocore is not None and usable_for(options.bucket)
        )
        # Listing and run-level HEADs go direct too, until an answer the
        # direct path cannot read sends them (not the GETs) to botocore.
        self._direct_lists = self._direct_wanted
        self._retired: list[DirectGets] = []
        self._direct_lock = anyio.Lock()
        self._denied_head: str | None = None  # a key whose HEAD got 403
        self._policy = RetryPolicy.from_retries(options.retries)

    async def aclose(self) -> None:
        for gets in [*self._retired, *([self._direct] if self._direct else [])]:
            await gets.aclose()
        if self._boto is not None:
            await self._boto.exit(None, None, None)

    async def _botocore(self) -> _Botocore:
        async with self._boto_lock:
            if self._boto is None:
                self._boto = await _open_botocore(self._options, self.trust, self.proxies)
            return self._boto

    async def _client(self) -> Any:
        return (await self._botocore()).client

    async def _direct_gets(self) -> DirectGets | None:
        """The lighter path, set up on first use: from the light start's
        route, else from botocore's view of the bucket (URL, signing region)."""
        if not self._direct_wanted:
            return None
        async with self._direct_lock:
            if self._direct is None and self._direct_wanted:
                settings: dict[str, Any] = {
                    "pool_size": self._options.pool_size,
                    "connect_timeout": self._options.connect_timeout,
                    "read_timeout": self._options.read_timeout,
                    "trust": self.trust,
                    "proxies": self.proxies,
                    "request_payer": self._options.request_payer,
                }
                if self._light is not None:
                    self._direct = DirectGets.for_route(
                        self._light.route, HandedCredentials(self._light.credentials), **settings
                    )
                else:
                    boto = await self._botocore()
                    with run_errors(self._options, "preparing downloads"):
                        self._direct = await DirectGets.create(
                            boto.client, boto.credentials, bucket=self.bucket, **settings
                        )
                self._direct_wanted = self._direct is not None
            return self._direct

    async def direct_route(self) -> Route | None:
        """The direct path's route, for worker processes; None where botocore
        must serve the run (proxies, access points, a fallback already seen)."""
        direct = await self._direct_gets()
        return direct.route if direct is not None and self._direct_wanted else None

    async def frozen_credentials(self) -> FrozenCredentials | None:
        """The keys in use right now (refreshed by botocore as they rotate)."""
        if self._boto is None:
            return self._light.credentials if self._light is not None else None
        if self._boto.credentials is None:
            return None
        with run_errors(self._options, "refreshing credentials"):
            frozen = await self._boto.credentials.get_frozen_credentials()
        return FrozenCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    def _extra(self) -> dict[str, str]:
        if self._options.request_payer:
            return {"RequestPayer": self._options.request_payer}
        return {}

    async def _direct_lister(self) -> DirectGets | None:
        return await self._direct_gets() if self._direct_lists else None

    def _list_through_botocore(self, first: bool) -> None:
        """The direct path could not read a listing or HEAD answer: botocore
        lists from here on. On the first request the resolved URL itself may
        be wrong (a bucket in another region than configured), so it is
        resolved afresh after botocore has followed S3's redirect."""
        self._direct_lists = False
        if first:
            self._light = None
            if self._direct is not None:
                self._retired.append(self._direct)
                self._direct = None

    async def _run_level(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """A run-level request (HEAD, a listing page), retried by the run's
        policy; giving up stops the run."""
        try:
            return await self._policy.call(attempt)
        except TransientObjectError:
            raise
        except ObjectError as exc:  # the policy gave up
            raise _gave_up(what, exc) from exc

    async def head(self, key: str, version_id: str | None = None) -> HeadResult | None:
        """HEAD one key; None if there is no such object."""
        what = f"looking up s3://{self.bucket}/{key}"
        try:
            return await self._run_level(what, lambda: self._head_once(key, version_id, what))
        except S3Error as exc:
            if version_id is None or _answer_status(exc.__cause__) != 400:
                raise
            raise NothingToFetch(
                f"no object s3://{self.bucket}/{key} with version '{version_id}' "
                "(--version-id needs the exact key of one object, and one of its versions)"
            ) from exc

    async def _head_once(self, key: str, version_id: str | None, what: str) -> HeadResult | None:
        direct = await self._direct_lister()
        if direct is not None:
            try:
                with run_errors(self._options, what):
                    try:
                        size, headers, modified = await direct.head(key, version_id)
                    except DirectError as exc:
                        if exc.status not in (403, 404):
                            raise
                        if exc.status == 403:
                            self._denied_head = key
                        return None
            except FallBack:
                self._list_through_botocore(first=True)
            else:
                if not headers.etag:
                    raise not_s3(f"HEAD s3://{self.bucket}/{key}")
                return head_result(key, version_id, size, headers, modified)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        with run_errors(self._options, what):
            try:
                response = await (await self._client()).head_object(**kwargs, **self._extra())
            except boto_exc.ClientError as exc:
                code, status = _error_code(exc)
                # 403 is what S3 answers for a missing key when the caller may not
                # list the bucket; the listing that follows gives the real verdict.
                if not (status in (403, 404) or code in ("NoSuchKey", "NotFound")):
                    raise
                if status == 403 or code == "AccessDenied":
                    self._denied_head = key
                return None
        if not response.get("ETag"):
            raise not_s3(f"HEAD s3://{self.bucket}/{key}")
        return _head_result(key, response, version_id)

    async def stat(self, obj: RemoteObject) -> HeadResult:
        """HEAD one object mid-run: its current version, checksums and encryption."""
        if (direct := await self._direct_gets()) is not None:
            with contextlib.suppress(NeedsBotocore):
                return await DirectSource(direct, self.bucket).stat(obj)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key, "ChecksumMode": "ENABLED"}
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        with object_errors(obj.key):
            response = await (await self._client()).head_object(**kwargs, **self._extra())
        if not response.get("ETag"):
            raise not_s3(f"HEAD s3://{self.bucket}/{obj.key}")
        return _head_result(obj.key, response, obj.version_id)

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        """HEAD one part of a multipart upload: its size and checksum (None if S3 cannot tell).

        Its ETag is not compared: stores differ on whether a part HEAD sends
        the part's or the object's, and every GET is pinned by If-Match anyway.
        """
        if (direct := await self._direct_gets()) is not None:
            with contextlib.suppress(NeedsBotocore):
                return await DirectSource(direct, self.bucket).part_head(obj, number)
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": obj.key,
            "PartNumber": number,
            "ChecksumMode": "ENABLED",
        }
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        try:
            with object_errors(obj.key):
                response = await (await self._client()).head_object(**kwargs, **self._extra())
        except TransientObjectError:
            raise
        except ObjectError:
            return None
        return PartHead.of(_headers(response))

    async def list_pages(self, prefix: str) -> AsyncGenerator[ListPage, None]:
        """Yield the objects under *prefix* one listing page at a time."""
        what = f"listing s3://{self.bucket}/{prefix}"
        if self._denied_head is not None and prefix == self._denied_head + "/":
            what = f"looking up s3://{self.bucket}/{self._denied_head}"
        chain = TokenChain()
        token: str | None = None
        while True:
            page = await self._list_page(prefix, token, what)
            yield page
            if (token := chain.follow(page.next_token)) is None:
                return

    def fanned_out(
        self, prefix: str, first_page: Sequence[str]
    ) -> AbstractAsyncContextManager[AsyncIterator[ListPage]]:
        """The rest of a big prefix after the keys of its *first_page*, listed
        in parallel, in key order (see _fanout)."""
        what = f"listing s3://{self.bucket}/{prefix}"

        async def page(
            sub: str,
            token: str | None,
            delimiter: str | None,
            after: str | None,
            below: str | None,
        ) -> ListPage:
            return await self._list_page(sub, token, what, delimiter, after, below, first=False)

        return fanned_out(page, prefix, first_page)

    async def _list_page(
        self,
        prefix: str,
        token: str | None,
        what: str,
        delimiter: str | None = None,
        start_after: str | None = None,
        below: str | None = None,
        *,
        first: bool | None = None,
    ) -> ListPage:
        return await self._run_level(
            what,
            lambda: self._list_page_once(
                prefix, token, what, delimiter, start_after, below, first=first
            ),
        )

    async def _list_page_once(
        self,
        prefix: str,
        token: str | None,
        what: str,
        delimiter: str | None,
        start_after: str | None,
        below: str | None,
        *,
        first: bool | None,
    ) -> ListPage:
        direct = await self._direct_lister()
        if direct is not None:
            try:
                with run_errors(self._options, what):
                    return await direct.list_page(prefix, token, delimiter, start_after, below)
            except FallBack:
                self._list_through_botocore(first=token is None if first is None else first)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **self._extra()}
        if token is not None:
            kwargs["ContinuationToken"] = token
        if delimiter is not None:
            kwargs["Delimiter"] = delimiter
        if start_after is not None:
            kwargs["StartAfter"] = start_after
        with run_errors(self._options, what):
            response = await (await self._client()).list_objects_v2(**kwargs)
        objects = [_listed_object(item) for item in response.get("Contents", ())]
        prefixes = [str(item["Prefix"]) for item in response.get("CommonPrefixes", ())]
        more = response.get("NextContinuationToken")
        if response.get("IsTruncated") and not more:
            raise truncated_without_token()
        return cut_below(ListPage(objects, str(more) if more else None, prefixes), below)

    async def open_body(
        self,
        obj: RemoteObject,
        *,
        start: int = 0,
        end: int | None = None,
        if_match: bool = True,
        want_checksum: bool = False,
    ) -> Body:
        """Start a GET of bytes [start, end) of *obj* and return its body.

        ``If-Match`` pins the request to the listed version, so a concurrent
        overwrite cannot splice two versions into one file.
        """
        if end is None:
            end = obj.size
        ranged = byte_range(obj, start, end)
        etag = f'"{obj.etag}"' if if_match and obj.etag else None
        direct = await self._direct_gets()
        if direct is not None:
            try:
                return await DirectSource(direct, self.bucket).open_body(
                    obj, start=start, end=end, if_match=if_match, want_checksum=want_checksum
                )
            except NeedsBotocore:
                self._direct_wanted = False  # botocore from here on
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key}
        if ranged:
            kwargs["Range"] = ranged
        if etag:
            kwargs["IfMatch"] = etag
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        if want_checksum:
            kwargs["ChecksumMode"] = "ENABLED"
        with object_errors(obj.key):
            response = await (await self._client()).get_object(**kwargs, **self._extra())
        body = Body(response["Body"], obj.key, _headers(response), object_errors)
        return checked(body, obj, start, end, ranged)


def _client_config(options: S3Options, trust: Trust, proxies: Proxies) -> AioConfig:
    from aiobotocore.config import AioConfig
    from botocore import UNSIGNED

    from ._botohttp import session_class

    # SigV4 spelled out: what S3 requests use anyway, and what makes a
    # presigned URL (the direct path's probe) name its signing region.
    extra: dict[str, Any] = {"signature_version": UNSIGNED if options.unsigned else "s3v4"}
    return AioConfig(
        max_pool_connections=options.pool_size,
        # The run's TLS and proxy policy (see _botohttp), not aiobotocore's.
        http_session_cls=session_class(trust, proxies),
        # One attempt: icanhazmodel retries every request itself (see
        # _retry), so botocore's loop must not multiply it.
        retries={"mode": "standard", "total_max_attempts": 1},
        read_timeout=options.read_timeout,
        connect_timeout=options.connect_timeout,
        # icanhazmodel verifies bodies itself (and across ranged parts, which
        # botocore cannot), so botocore must not add checksum work of its own.
        response_checksum_validation="when_required",
        request_checksum_calculation="when_required",
        **extra,
    )


def _effective_endpoint(options: S3Options) -> str:
    return (
        options.endpoint_url
        or os.environ.get("AWS_ENDPOINT_URL_S3")
        or os.environ.get("AWS_ENDPOINT_URL")
        or ""
    )


def _trust(options: S3Options, session: aioboto3.Session | None) -> Trust:
    """The run's Trust (see _tls), from the options, the environment and, once
    botocore is loaded, the profile's ca_bundle and proxy_ca_bundle."""
    profile_bundle = proxy_bundle = None
    if session is not None:
        try:
            core = session._session
            profile_bundle = core.get_scoped_config().get("ca_bundle")
            proxy_bundle = (core.get_config_variable("proxies_config") or {}).get("proxy_ca_bundle")
        except boto_exc.ConfigParseError:
            raise
        except boto_exc.ProfileNotFound:
            pass  # reported when the client is made
        except Exception:  # a private attribute: be ready for it to move
            pass
    return resolve_trust(
        verify=options.verify_ssl,
        ca_bundle=options.ca_bundle,
        environ_bundle=os.environ.get("AWS_CA_BUNDLE"),
        profile_bundle=profile_bundle if isinstance(profile_bundle, str) else None,
        profile=options.profile or os.environ.get("AWS_PROFILE"),
        proxy_ca_bundle=proxy_bundle if isinstance(proxy_bundle, str) else None,
    )


def _check_trust(trust: Trust, options: S3Options, proxies: Proxies) -> None:
    """Build the SSL context now if the run will speak TLS: a CA bundle that
    is not one is then one line before any request (not a traceback at the
    first), and no connection waits for it. A plain-HTTP endpoint with no
    https:// proxy speaks none, and skips its ~35 ms."""
    endpoint = _effective_endpoint(options)
    proxy = proxies.for_url(endpoint) if endpoint else proxies.https
    if endpoint.lower().startswith("http://") and not (proxy or "").startswith("https:"):
        return
    trust.context()


def _profile_words(options: S3Options) -> str:
    profile = options.profile or os.environ.get("AWS_PROFILE")
    return f" for profile '{profile}'" if profile else ""


def _profile_not_found(options: S3Options) -> ProfileNotFound:
    """Name the profile, and where its name came from: AWS_PROFILE is easy
    to forget once it is set in a shell."""
    if options.profile:
        named = f"AWS profile '{options.profile}'"
    else:
        named = f"AWS profile '{os.environ.get('AWS_PROFILE', '')}' (from AWS_PROFILE)"
    credentials = os.environ.get("AWS_SHARED_CREDENTIALS_FILE") or "~/.aws/credentials"
    return ProfileNotFound(f"{named} not found in {credentials} or {_config_file()}")


def _session(options: S3Options) -> aioboto3.Session:
    import aioboto3  # ~0.13 s: only runs that need botocore pay for it

    try:
        session = aioboto3.Session(profile_name=options.profile)
    except boto_exc.ProfileNotFound as exc:
        raise _profile_not_found(options) from exc
    try:
        # Timestamps stay text; _posix_time parses the one field we use.
        factory = session._session.get_component("response_parser_factory")
        factory.set_parser_defaults(timestamp_parser=str)
    except Exception:  # a private attribute: without it, botocore parses dates itself
        pass
    return session


def _config_file() -> str:
    return os.environ.get("AWS_CONFIG_FILE") or "~/.aws/config"


async def _open_botocore(options: S3Options, trust: Trust, proxies: Proxies) -> _Botocore:
    """The session, client and credentials, with their failures in our words."""
    try:
        session = _session(options)
    except boto_exc.ConfigParseError as exc:
        raise UsageError(f"cannot read the AWS config file '{_config_file()}': {exc}") from exc
    try:
        client_cm = session.client(
            "s3",
            endpoint_url=options.endpoint_url,
            region_name=options.region,
            config=_client_config(options, trust, proxies),
            # What the session class's connections use is trust.context();
            # this keeps botocore's own idea of it the same.
            verify=trust.ca_bundle or trust.verify,
        )
        client = await client_cm.__aenter__()
        credentials = None if options.unsigned else await session.get_credentials()
    except boto_exc.ProfileNotFound as exc:
        raise _profile_not_found(options) from exc
    except ValueError as exc:  # botocore's word on an endpoint URL or region it refuses
        raise UsageError(f"botocore refused the client settings: {exc}") from exc
    except boto_exc.ConfigParseError as exc:
        raise UsageError(f"cannot read the AWS config file '{_config_file()}': {exc}") from exc
    except boto_exc.CredentialRetrievalError as exc:
        raise CredentialsError(f"cannot get credentials{_profile_words(options)}: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        raise S3Error(f"cannot create the S3 client: {exc}") from exc
    if credentials is None and not options.unsigned:
        await client_cm.__aexit__(None, None, None)
        raise CredentialsError(_no_credentials(options))
    return _Botocore(client, client_cm.__aexit__, credentials)


def _no_credentials(options: S3Options) -> str:
    """Why no credentials were found, in the words of what the user set."""
    env_keys = bool(os.environ.get("AWS_ACCESS_KEY_ID"))
    if options.profile:
        return (
            f"profile '{options.profile}' has no credentials (no keys, role, SSO or "
            "credential_process for it in ~/.aws/credentials or ~/.aws/config)"
            + (
                "; the keys in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY are not used when "
                "--profile names a profile: leave --profile out to use them"
                if env_keys
                else ""
            )
        )
    if profile := os.environ.get("AWS_PROFILE"):
        return (
            f"profile '{profile}' (named by AWS_PROFILE) has no credentials (no keys, role, "
            "SSO or credential_process for it in ~/.aws/credentials or ~/.aws/config)"
        )
    return f"no AWS credentials found: {_NO_CREDENTIALS_HINT}"


@contextlib.asynccontextmanager
async def open_s3(options: S3Options) -> AsyncIterator[S3]:
    """Open the run's way to S3: without botocore where it would decide
    nothing (see ``_light``), else with its client from the start."""
    proxies = Proxies.from_environ(os.environ)
    light = light_start(
        bucket=options.bucket,
        endpoint_url=options.endpoint_url,
        profile=options.profile,
        region=options.region,
        unsigned=options.unsigned,
        environ=os.environ,
    )
    if light is not None:
        trust = _trust(options, None)
        _check_trust(trust, options, proxies)
        s3 = S3(options, trust, proxies, light=light)
    else:
        try:
            trust = _trust(options, _session(options))
        except boto_exc.ConfigParseError as exc:
            raise UsageError(f"cannot read the AWS config file '{_config_file()}': {exc}") from exc
        _check_trust(trust, options, proxies)
        s3 = S3(options, trust, proxies, botocore=await _open_botocore(options, trust, proxies))
    try:
        yield s3
    finally:
        await s3.aclose()
