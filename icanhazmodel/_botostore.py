"""The store through botocore: aioboto3's client, for what only it can do.

:class:`BotocoreStore` answers every request a run makes (HEADs, listing
pages, GETs) the way botocore does: it follows S3's redirects, speaks every
addressing style and credential scheme, and is what the router (``_s3``)
falls back to when the direct path cannot read an answer. This module also
opens the session and client, with their failures in our words, and maps
botocore's answers onto our models.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import botocore.exceptions as boto_exc

if TYPE_CHECKING:
    import aioboto3
    from aiobotocore.config import AioConfig

from ._asof import Entry, merged
from ._checksums import CHECKSUM_ALGORITHMS
from ._config import S3Options
from ._contract import truncated_without_token
from ._errors import CredentialsError, ProfileNotFound, S3Error, UsageError
from ._listxml import ListPage, cut_below
from ._models import ObjectHeaders, RemoteObject, encrypted_with_key
from ._objects import (
    Body,
    HeadResult,
    ObjectError,
    PartHead,
    TransientObjectError,
    byte_range,
    checked,
    not_s3,
    posix_time,
    strip_quotes,
)
from ._proxy import Proxies
from ._storeerrors import NO_CREDENTIALS_HINT, config_file, object_errors
from ._tls import Trust


class BotocoreStore:
    """One bucket through botocore's client (opened by :func:`open_botocore`)."""

    def __init__(self, client: Any, exit: Any, credentials: Any, options: S3Options) -> None:
        self.client = client
        self._exit = exit  # the client context's __aexit__
        self.credentials = credentials  # botocore's (refreshing) credentials; None: unsigned
        self.bucket = options.bucket
        self._extra = {"RequestPayer": options.request_payer} if options.request_payer else {}

    def _object(self, obj: RemoteObject, **more: Any) -> dict[str, Any]:
        """The parameters naming *obj* (its version, if listed with one)."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": obj.key, **more, **self._extra}
        if obj.version_id:
            kwargs["VersionId"] = obj.version_id
        return kwargs

    # -- run-level requests: raw answers, translated by the router -----------------

    async def lookup(self, key: str, version_id: str | None) -> HeadResult:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": key, "ChecksumMode": "ENABLED"}
        if version_id:
            kwargs["VersionId"] = version_id
        response = await self.client.head_object(**kwargs, **self._extra)
        return _head_result(key, response, version_id)

    async def list_page(
        self,
        prefix: str,
        token: str | None,
        delimiter: str | None = None,
        start_after: str | None = None,
        below: str | None = None,
    ) -> ListPage:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **self._extra}
        if token is not None:
            kwargs["ContinuationToken"] = token
        if delimiter is not None:
            kwargs["Delimiter"] = delimiter
        if start_after is not None:
            kwargs["StartAfter"] = start_after
        response = await self.client.list_objects_v2(**kwargs)
        objects = [_listed_object(item) for item in response.get("Contents", ())]
        prefixes = [str(item["Prefix"]) for item in response.get("CommonPrefixes", ())]
        more = response.get("NextContinuationToken")
        if response.get("IsTruncated") and not more:
            raise truncated_without_token()
        return cut_below(ListPage(objects, str(more) if more else None, prefixes), below)

    async def versioning(self) -> str | None:
        """The bucket's versioning status ("Enabled", "Suspended"), None if never on."""
        response = await self.client.get_bucket_versioning(Bucket=self.bucket)
        status = response.get("Status")
        return str(status) if status else None

    async def versions_page(
        self, prefix: str, key_marker: str | None, version_marker: str | None
    ) -> tuple[list[Entry], tuple[str, str | None] | None]:
        """One page of ListObjectVersions, in listing order, and where the next
        starts (None: the last). Only botocore lists versions: the direct path
        has no reader for this answer, and a run lists them once."""
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, **self._extra}
        if key_marker is not None:
            kwargs["KeyMarker"] = key_marker
            if version_marker is not None:
                kwargs["VersionIdMarker"] = version_marker
        response = await self.client.list_object_versions(**kwargs)
        versions = [
            Entry(replace(_listed_object(item), version_id=str(item["VersionId"])))
            for item in response.get("Versions", ())
        ]
        markers = [
            Entry(
                RemoteObject(
                    key=item["Key"],
                    size=0,
                    etag="",
                    last_modified=posix_time(item.get("LastModified")),
                    version_id=str(item["VersionId"]),
                ),
                deleted=True,
            )
            for item in response.get("DeleteMarkers", ())
        ]
        following = None
        if response.get("IsTruncated"):
            next_key = response.get("NextKeyMarker")
            if not next_key:
                raise truncated_without_token()
            following = (str(next_key), response.get("NextVersionIdMarker"))
        return merged(versions, markers), following

    # -- one object's requests (ObjectSource) ----------------------------------------

    async def open_body(
        self,
        obj: RemoteObject,
        *,
        start: int = 0,
        end: int | None = None,
        if_match: bool = True,
        want_checksum: bool = False,
    ) -> Body:
        end = obj.size if end is None else end
        ranged = byte_range(obj, start, end)
        kwargs = self._object(obj)
        if ranged:
            kwargs["Range"] = ranged
        if if_match and obj.etag:
            kwargs["IfMatch"] = f'"{obj.etag}"'
        if want_checksum:
            kwargs["ChecksumMode"] = "ENABLED"
        with object_errors(obj.key):
            response = await self.client.get_object(**kwargs)
        body = Body(response["Body"], obj.key, _headers(response), object_errors)
        return checked(body, obj, start, end, ranged)

    async def stat(self, obj: RemoteObject) -> HeadResult:
        with object_errors(obj.key):
            response = await self.client.head_object(**self._object(obj, ChecksumMode="ENABLED"))
        if not response.get("ETag"):
            raise not_s3(f"HEAD s3://{self.bucket}/{obj.key}")
        return _head_result(obj.key, response, obj.version_id)

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        """Its ETag is not compared: stores differ on whether a part HEAD sends
        the part's or the object's, and every GET is pinned by If-Match anyway."""
        kwargs = self._object(obj, PartNumber=number, ChecksumMode="ENABLED")
        try:
            with object_errors(obj.key):
                response = await self.client.head_object(**kwargs)
        except TransientObjectError:
            raise
        except ObjectError:
            return None
        return PartHead.of(_headers(response))

    async def aclose(self) -> None:
        await self._exit(None, None, None)


# -- botocore's answers as our models ------------------------------------------------


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
        version_id=response.get("VersionId"),
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


# -- opening the client ---------------------------------------------------------------


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
    return ProfileNotFound(f"{named} not found in {credentials} or {config_file()}")


def open_session(options: S3Options) -> aioboto3.Session:
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


async def open_botocore(options: S3Options, trust: Trust, proxies: Proxies) -> BotocoreStore:
    """The session, client and credentials, with their failures in our words."""
    try:
        session = open_session(options)
    except boto_exc.ConfigParseError as exc:
        raise UsageError(f"cannot read the AWS config file '{config_file()}': {exc}") from exc
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
        raise UsageError(f"cannot read the AWS config file '{config_file()}': {exc}") from exc
    except boto_exc.CredentialRetrievalError as exc:
        raise CredentialsError(f"cannot get credentials{_profile_words(options)}: {exc}") from exc
    except boto_exc.BotoCoreError as exc:
        raise S3Error(f"cannot create the S3 client: {exc}") from exc
    if credentials is None and not options.unsigned:
        await client_cm.__aexit__(None, None, None)
        raise CredentialsError(_no_credentials(options))
    return BotocoreStore(client, client_cm.__aexit__, credentials, options)


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
    return f"no AWS credentials found: {NO_CREDENTIALS_HINT}"
