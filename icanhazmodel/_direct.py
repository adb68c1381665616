"""A lighter request path for GetObject: SigV4-signed GETs sent straight
through our own HTTP client (``_http``), for the one request per object that
dominates a run.

botocore spends about 0.8 ms of CPU on each request: S3's endpoint rules are
evaluated afresh for every key (the key is a rule parameter, so the cache
never hits), a dozen event hooks fire, and the response headers are parsed
(dates through dateutil). For a 16 KiB object that is several times the
cost of the download itself. This path spends about 0.17 ms.

It does not re-implement S3 addressing. botocore resolves the bucket's URL
and signing region once per run (from a presigned URL for a probe key); each
GET is signed with SigV4 (``_sigv4``, checked against botocore's signer in
the tests) using the session's credentials, refreshed as botocore refreshes
them. The path is used only
where that single resolution holds for every key: a plain bucket name (no
ARN, access point or S3 Express directory bucket), SigV4 or unsigned. Proxies
and TLS follow the run's one policy (``_proxy``, ``_tls``), as botocore's
client does. Any answer this path does not expect (a redirect, an
authorization error) falls back to the botocore client for the rest of the
run; a TLS failure never does (see ``_tls``). ``ICANHAZMODEL_DIRECT_GETS=0``
turns it off.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit
from xml.etree import ElementTree

from ._checksums import CHECKSUM_ALGORITHMS
from ._http import Client, Response, TlsFailure
from ._listxml import ListPage, NotAListing, parse_list_page
from ._models import ObjectHeaders, encrypted_with_key
from ._objects import (
    DirectError,
    FallBack,
    transient,
)
from ._proxy import Proxies
from ._sigv4 import canonical_query, sign
from ._tls import Trust, untrusted
from ._version import __version__

PROBE_KEY = "icanhazmodel-probe/key"
USER_AGENT = f"icanhazmodel/{__version__} (direct GET)"


def usable_for(bucket: str) -> bool:
    """Whether one URL resolution can serve every key of this bucket."""
    if os.environ.get("ICANHAZMODEL_DIRECT_GETS", "1") == "0":
        return False
    return not (bucket.startswith("arn:") or bucket.endswith(("--x-s3", "--op-s3", "--ol-s3")))


class DirectBody:
    """The streaming body of one direct GET, shaped like the botocore one."""

    def __init__(self, response: Response) -> None:
        self._response = response
        self.headers = self.parse_headers(response.headers)

    @staticmethod
    def parse_headers(headers: Mapping[str, str]) -> ObjectHeaders:
        length = headers.get("Content-Length")
        return ObjectHeaders(
            etag=headers.get("ETag", "").strip('"'),
            checksums={
                name: value
                for name in CHECKSUM_ALGORITHMS
                if (value := headers.get(f"x-amz-checksum-{name.lower()}"))
            },
            checksum_type=headers.get("x-amz-checksum-type"),
            encrypted_with_key=encrypted_with_key(
                headers.get("x-amz-server-side-encryption"),
                headers.get("x-amz-server-side-encryption-customer-algorithm"),
            ),
            content_length=int(length) if length is not None else None,
            content_range=headers.get("Content-Range"),
            parts_count=_int_or_none(headers.get("x-amz-mp-parts-count")),
            version_id=headers.get("x-amz-version-id"),
        )

    async def read(self, max_bytes: int) -> bytes:
        return await self._response.read(max_bytes)

    def close(self) -> None:
        # Read to the end: the connection goes back to the pool. Stopped
        # early: dropped, or the unread rest would be read as the next reply.
        self._response.release()


@dataclass(frozen=True, slots=True)
class Route:
    """Where and how to send one bucket's requests: resolved once, by botocore."""

    scheme: str
    origin: str  # scheme://host[:port]
    host: str  # as sent in the Host header, and signed
    base_path: str  # the path before the quoted key
    region: str | None  # None: unsigned requests


async def resolve_route(client: Any, credentials: Any, bucket: str) -> Route | None:
    """The bucket's URL and signing region, from a presigned URL for a probe
    key; None where one resolution cannot serve every key."""
    url = await client.generate_presigned_url(
        "get_object", Params={"Bucket": bucket, "Key": PROBE_KEY}, ExpiresIn=60
    )
    parts = urlsplit(url)
    quoted_probe = quote(PROBE_KEY, safe="/~")
    if not parts.path.endswith(quoted_probe) or parts.scheme not in ("http", "https"):
        return None
    query = parse_qs(parts.query)
    region = None
    if query:
        if query.get("X-Amz-Algorithm") != ["AWS4-HMAC-SHA256"] or credentials is None:
            return None
        scope = query.get("X-Amz-Credential", [""])[0].split("/")
        if len(scope) != 5 or scope[3] != "s3":
            return None
        region = scope[2]
    return Route(
        scheme=parts.scheme,
        origin=f"{parts.scheme}://{parts.netloc}",
        host=host_header(parts.scheme, parts.netloc),
        base_path=parts.path[: -len(quoted_probe)],
        region=region,
    )


@dataclass(frozen=True, slots=True)
class FrozenCredentials:
    """Keys as botocore's get_frozen_credentials() gives them, picklable."""

    access_key: str
    secret_key: str
    token: str | None = None


class HandedCredentials:
    """Credentials handed down by the parent process, replaced as they rotate."""

    def __init__(self, frozen: FrozenCredentials | None) -> None:
        self.frozen = frozen

    async def get_frozen_credentials(self) -> FrozenCredentials | None:
        return self.frozen


class DirectGets:
    """Signs and sends GetObject (and HeadObject) requests for one bucket."""

    def __init__(
        self,
        http: Client,
        route: Route,
        credentials: Any,
        request_payer: str | None,
        trust: Trust,
    ) -> None:
        self._http = http
        self._trust = trust
        self.route = route
        self._origin = route.origin
        self._host = route.host
        self._base_path = route.base_path
        self._region = route.region  # None: unsigned requests
        self._credentials = credentials
        self._request_payer = request_payer

    @classmethod
    async def create(
        cls,
        client: Any,
        credentials: Any,
        *,
        bucket: str,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        trust: Trust,
        proxies: Proxies,
        request_payer: str | None,
    ) -> DirectGets | None:
        """Resolve the bucket's URL once through botocore; None if unsuitable."""
        route = await resolve_route(client, credentials, bucket)
        if route is None:
            return None
        return cls.for_route(
            route,
            credentials,
            pool_size=pool_size,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            trust=trust,
            proxies=proxies,
            request_payer=request_payer,
        )

    @classmethod
    def for_route(
        cls,
        route: Route,
        credentials: Any,
        *,
        pool_size: int,
        connect_timeout: float,
        read_timeout: float,
        trust: Trust,
        proxies: Proxies,
        request_payer: str | None,
    ) -> DirectGets:
        """A client for a route resolved before (in this process or the parent)."""
        proxy = proxies.for_url(route.origin + route.base_path)
        # A plain-http origin reached directly or through a plain-http proxy
        # makes no TLS connection: no context to build (~35 ms of start-up).
        tls = route.scheme == "https" or (proxy or "").startswith("https:")
        http = Client(
            route.origin,
            limit=pool_size,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tls=trust.context() if tls else None,
            proxy=proxy,
            headers={"Host": route.host, "User-Agent": USER_AGENT},
        )
        return cls(http, route, credentials, request_payer, trust)

    async def aclose(self) -> None:
        await self._http.aclose()

    @contextlib.contextmanager
    def _trusted(self) -> Iterator[None]:
        """A TLS failure ends the run (see ``_tls``): never retried, never
        handed to botocore, which would talk to the same server."""
        try:
            yield
        except TlsFailure as exc:
            raise untrusted(self._origin, exc, self._trust) from exc

    async def _signed_headers(
        self, path: str, query: dict[str, str], headers: dict[str, str], method: str = "GET"
    ) -> Mapping[str, str]:
        if self._region is None:
            return headers
        frozen = await self._credentials.get_frozen_credentials()
        return sign(
            host=self._host,
            path=path,
            query=query,
            headers=headers,
            access_key=frozen.access_key,
            secret_key=frozen.secret_key,
            token=frozen.token,
            region=self._region,
            now=datetime.now(UTC),
            method=method,
        )

    async def open(
        self,
        key: str,
        *,
        byte_range: str | None,
        if_match: str | None,
        version_id: str | None,
        want_checksum: bool,
    ) -> DirectBody:
        path = self._base_path + quote(key, safe="/~")
        query = {"versionId": version_id} if version_id else {}
        target = path + ("?" + canonical_query(query) if query else "")
        headers = {"Accept-Encoding": "identity"}
        if byte_range:
            headers["Range"] = byte_range
        if if_match:
            headers["If-Match"] = if_match
        if want_checksum:
            headers["x-amz-checksum-mode"] = "ENABLED"
        if self._request_payer:
            headers["x-amz-request-payer"] = self._request_payer
        signed = await self._signed_headers(path, query, headers)
        # The path goes out exactly as signed: S3 does not normalise it.
        with self._trusted():
            response = await self._http.request("GET", target, signed)
        if response.status in (200, 206):
            return DirectBody(response)
        try:
            body = await response.read_all()
        finally:
            response.release()
        code, message = _error_fields(body)
        if 300 <= response.status < 400 or code in _NOT_OURS:
            raise FallBack(f"{response.status} {code}")
        raise DirectError(response.status, code, message, response.headers.get("Retry-After"))

    async def list_page(
        self,
        prefix: str,
        token: str | None,
        delimiter: str | None = None,
        start_after: str | None = None,
        below: str | None = None,
    ) -> ListPage:
        """One ListObjectsV2 page (with *below*, cut before that key).

        A transient answer (5xx, throttling) raises DirectError and a broken
        connection aiohttp's error, for the run's retry policy; any other
        answer but a listing this path can read raises FallBack: botocore
        then lists from this page on."""
        path = self._base_path.rstrip("/") or "/"
        query = {"list-type": "2", "prefix": prefix, "encoding-type": "url"}
        if token is not None:
            query["continuation-token"] = token
        if delimiter is not None:
            query["delimiter"] = delimiter
        if start_after is not None:
            query["start-after"] = start_after
        headers: dict[str, str] = {"Accept-Encoding": "identity"}
        if self._request_payer:
            headers["x-amz-request-payer"] = self._request_payer
        signed = await self._signed_headers(path, query, headers)
        with self._trusted():
            response = await self._http.request("GET", path + "?" + canonical_query(query), signed)
        try:
            body = await response.read_all()
        finally:
            response.release()
        status = response.status
        retry_after = response.headers.get("Retry-After")
        if status != 200:
            code, message = _error_fields(body)
            if transient(status, code):
                raise DirectError(status, code, message, retry_after)
            raise FallBack(f"{status} {code} on a listing")
        try:
            return parse_list_page(body, below)
        except NotAListing as exc:
            raise FallBack(f"listing: {exc}") from exc

    async def head(
        self, key: str, version_id: str | None, part_number: int | None = None
    ) -> tuple[int, ObjectHeaders, str]:
        """HEAD one object (or one part of it): (size, headers, Last-Modified text)."""
        path = self._base_path + quote(key, safe="/~")
        query = {"versionId": version_id} if version_id else {}
        if part_number is not None:
            query["partNumber"] = str(part_number)
        target = path + ("?" + canonical_query(query) if query else "")
        headers = {"x-amz-checksum-mode": "ENABLED"}
        if self._request_payer:
            headers["x-amz-request-payer"] = self._request_payer
        signed = await self._signed_headers(path, query, headers, method="HEAD")
        with self._trusted():
            response = await self._http.request("HEAD", target, signed)
        try:
            # A part's HEAD may be 206 with its Content-Range (AWS, MinIO,
            # SeaweedFS), or 200 (moto); _parts checks what it says.
            if response.status != 200 and not (part_number and response.status == 206):
                # A HEAD answer has no body, so no error code: the status must do.
                if 300 <= response.status < 400 or response.status in (400, 401):
                    raise FallBack(f"{response.status} on HEAD")
                raise DirectError(response.status, "", "", response.headers.get("Retry-After"))
            parsed = DirectBody.parse_headers(response.headers)
            return (
                int(response.headers.get("Content-Length", "0")),
                parsed,
                response.headers.get("Last-Modified", ""),
            )
        finally:
            response.release()


# Answers that mean this path's one-off resolution (region, credentials
# scheme) does not fit: botocore knows how to follow or refresh them.
_NOT_OURS = {
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "TemporaryRedirect",
    "IllegalLocationConstraintException",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidToken",
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
}


def _int_or_none(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def host_header(scheme: str, netloc: str) -> str:
    """The Host header as aiohttp sends it (and botocore signs it): without
    the scheme's default port, so 'http://h:80' is signed as 'h'."""
    default = {"http": ":80", "https": ":443"}.get(scheme)
    if default and netloc.endswith(default):
        return netloc[: -len(default)]
    return netloc


def _error_fields(body: bytes) -> tuple[str, str]:
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return "", body[:200].decode("utf-8", "replace")
    return root.findtext("Code") or "", root.findtext("Message") or ""
