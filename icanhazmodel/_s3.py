"""The run's way to S3: two stores behind one port, and the rule between them.

The pipeline and the transfers talk to :class:`S3` only. Behind it are two
complete stores with the same methods (the port, :class:`Store`): the direct
path (``_directstore``: aiohttp and our SigV4, light on CPU) and botocore's
client (``_botostore``: follows redirects, speaks every addressing and
credential scheme). The rule between them lives here, once: **direct until
it cannot, then botocore**, per lane. A lane is a kind of request: run-level
(HEAD of the named key, listing pages) or per object (GET, a fresh HEAD, a
part's HEAD). The first answer on a lane that the direct path cannot read
sends that lane to botocore for the rest of the run; if it was the run's
very first request, the direct route itself is resolved afresh through
botocore (the bucket may live in another region than configured).

Run-level requests are retried by the run's one policy (``_retry``) here;
per-object ones by the transfers (``Retrying``). Every failure is
translated by the one error table (``_storeerrors``).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from enum import Enum
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import anyio
import botocore.exceptions as boto_exc

if TYPE_CHECKING:
    import aioboto3

from ._asof import AsOf
from ._botostore import BotocoreStore, open_botocore, open_session
from ._config import S3Options, effective_endpoint, plain_http
from ._contract import BrokenListing, TokenChain
from ._direct import DirectGets, FrozenCredentials, HandedCredentials, Route, usable_for
from ._directstore import DirectStore
from ._errors import NothingToFetch, S3Error, UsageError
from ._fanout import fanned_out
from ._light import LightStart, light_start
from ._listxml import ListPage
from ._models import RemoteObject
from ._objects import (
    Body,
    DirectError,
    FallBack,
    HeadResult,
    ObjectError,
    ObjectSource,
    PartHead,
    TransientObjectError,
    not_s3,
)
from ._proxy import Proxies
from ._retry import RetryPolicy
from ._storeerrors import (
    answer_status,
    config_file,
    error_code,
    gave_up,
    run_errors,
)
from ._tls import Trust, resolve_trust

__all__ = ["S3", "S3Options", "Store", "open_s3"]

T = TypeVar("T")


class Store(ObjectSource, Protocol):
    """The port: one way to a bucket, complete. Run-level requests answer raw
    (the router translates them); per-object ones in our errors. The direct
    store raises FallBack for an answer it cannot read."""

    async def lookup(self, key: str, version_id: str | None) -> HeadResult: ...

    async def list_page(
        self,
        prefix: str,
        token: str | None,
        delimiter: str | None = None,
        start_after: str | None = None,
        below: str | None = None,
    ) -> ListPage: ...

    async def aclose(self) -> None: ...


class Lane(Enum):
    """A kind of request, for the fallback rule."""

    RUN = "run-level"  # the named key's HEAD, listing pages
    OBJECT = "object"  # GETs, fresh HEADs, part HEADs


class S3:
    """The run's stores and the rule between them."""

    def __init__(
        self,
        options: S3Options,
        trust: Trust,
        proxies: Proxies,
        *,
        botocore: BotocoreStore | None = None,
        light: LightStart | None = None,
    ) -> None:
        self._options = options
        self.trust = trust
        self.proxies = proxies
        self.bucket = options.bucket
        self._boto = botocore
        self._boto_lock = anyio.Lock()
        self._light = light  # botocore not loaded until needed
        self._direct: DirectStore | None = None
        self._direct_lock = anyio.Lock()
        self._retired: list[DirectStore] = []
        wanted = light is not None or (botocore is not None and usable_for(options.bucket))
        self._lanes = {lane: wanted for lane in Lane}  # which lanes still go direct
        self._resolvable = wanted  # the direct route can (still) be set up
        self._denied_head: str | None = None  # a key whose HEAD got 403
        self._policy = RetryPolicy.from_retries(options.retries)

    async def aclose(self) -> None:
        for store in [*self._retired, *([self._direct] if self._direct else [])]:
            await store.aclose()
        if self._boto is not None:
            await self._boto.aclose()

    # -- the two stores ---------------------------------------------------------------

    async def _botocore(self) -> BotocoreStore:
        async with self._boto_lock:
            if self._boto is None:
                self._boto = await open_botocore(self._options, self.trust, self.proxies)
            return self._boto

    async def _direct_store(self) -> DirectStore | None:
        """The direct path, set up on first use: from the light start's route,
        else from botocore's view of the bucket (URL, signing region)."""
        if self._direct is not None or not self._resolvable:
            return self._direct  # every request asks: no lock once it is set up
        async with self._direct_lock:
            if self._direct is None and self._resolvable:
                settings: dict[str, Any] = {
                    "pool_size": self._options.pool_size,
                    "connect_timeout": self._options.connect_timeout,
                    "read_timeout": self._options.read_timeout,
                    "trust": self.trust,
                    "proxies": self.proxies,
                    "request_payer": self._options.request_payer,
                }
                gets: DirectGets | None
                if self._light is not None:
                    gets = DirectGets.for_route(
                        self._light.route, HandedCredentials(self._light.credentials), **settings
                    )
                else:
                    boto = await self._botocore()
                    with run_errors(self._options, "preparing downloads"):
                        gets = await DirectGets.create(
                            boto.client, boto.credentials, bucket=self.bucket, **settings
                        )
                if gets is None:
                    self._resolvable = False
                else:
                    self._direct = DirectStore(gets, self.bucket)
            return self._direct

    async def _store_for(self, lane: Lane) -> DirectStore | None:
        return await self._direct_store() if self._lanes[lane] else None

    def _fall_back(self, lane: Lane, *, first: bool) -> None:
        """The direct path could not read an answer on *lane*: botocore serves
        it from here on. On the run's first request the resolved route itself
        may be wrong: it is resolved afresh, through botocore."""
        self._lanes[lane] = False
        if first:
            self._light = None
            if self._direct is not None:
                self._retired.append(self._direct)
                self._direct = None

    async def _either(
        self, lane: Lane, call: Callable[[Store], Awaitable[T]], *, first: bool = False
    ) -> T:
        """*call* on the direct store while *lane* goes direct, else on botocore's."""
        direct = await self._store_for(lane)
        if direct is not None:
            try:
                return await call(direct)
            except FallBack:
                self._fall_back(lane, first=first)
        return await call(await self._botocore())

    async def direct_route(self) -> Route | None:
        """The direct path's route, for worker processes; None where botocore
        must serve the run (proxies, access points, a fallback already seen)."""
        direct = await self._direct_store()
        if direct is None or not self._lanes[Lane.OBJECT]:
            return None
        return direct.gets.route

    async def frozen_credentials(self) -> FrozenCredentials | None:
        """The keys in use right now (refreshed by botocore as they rotate)."""
        if self._boto is None:
            return self._light.credentials if self._light is not None else None
        if self._boto.credentials is None:
            return None
        with run_errors(self._options, "refreshing credentials"):
            frozen = await self._boto.credentials.get_frozen_credentials()
        return FrozenCredentials(frozen.access_key, frozen.secret_key, frozen.token)

    # -- run-level requests ------------------------------------------------------------

    async def _run_level(self, what: str, attempt: Callable[[], Awaitable[T]]) -> T:
        """A run-level request, retried by the run's policy; giving up stops the run."""
        try:
            return await self._policy.call(attempt)
        except TransientObjectError:
            raise
        except ObjectError as exc:  # the policy gave up
            raise gave_up(what, exc) from exc

    async def head(self, key: str, version_id: str | None = None) -> HeadResult | None:
        """HEAD one key; None if there is no such object."""
        what = f"looking up s3://{self.bucket}/{key}"

        async def once(store: Store) -> HeadResult | None:
            return await self._lookup(store, key, version_id, what)

        try:
            return await self._run_level(what, lambda: self._either(Lane.RUN, once, first=True))
        except S3Error as exc:
            if version_id is None or answer_status(exc.__cause__) != 400:
                raise
            raise NothingToFetch(
                f"no object s3://{self.bucket}/{key} with version '{version_id}' "
                "(--version-id needs the exact key of one object, and one of its versions)"
            ) from exc

    async def exact(self, key: str, version_id: str | None) -> RemoteObject | None:
        """The object named exactly by *key* (a prefix names none), if there is one."""
        if not key or key.endswith("/"):
            return None
        head = await self.head(key, version_id)
        if head is None and version_id:
            raise NothingToFetch(f"no version '{version_id}' of s3://{self.bucket}/{key}")
        return head.obj if head else None

    async def _lookup(
        self, store: Store, key: str, version_id: str | None, what: str
    ) -> HeadResult | None:
        with run_errors(self._options, what):
            try:
                found = await store.lookup(key, version_id)
            except (boto_exc.ClientError, DirectError) as exc:
                code, status = error_code(exc)
                # 403 is what S3 answers for a missing key when the caller may not
                # list the bucket; the listing that follows gives the real verdict.
                if not (status in (403, 404) or code in ("NoSuchKey", "NotFound")):
                    raise
                if status == 403 or code == "AccessDenied":
                    self._denied_head = key
                return None
        if not found.headers.etag:
            raise not_s3(f"HEAD s3://{self.bucket}/{key}")
        return found

    async def list_pages(self, prefix: str) -> AsyncGenerator[ListPage, None]:
        """Yield the objects under *prefix* one listing page at a time."""
        what = f"listing s3://{self.bucket}/{prefix}"
        if self._denied_head is not None and prefix == self._denied_head + "/":
            what = f"looking up s3://{self.bucket}/{self._denied_head}"
        chain = TokenChain()
        token: str | None = None
        while True:
            page = await self._list_page(prefix, token, what, first=token is None)
            yield page
            if (token := chain.follow(page.next_token)) is None:
                return

    async def versions_at(self, prefix: str, at: float) -> AsyncGenerator[list[RemoteObject], None]:
        """The objects under *prefix* as they were at *at* (POSIX seconds), a
        ListObjectVersions page at a time, each with its version id (see
        ``_asof``). Through botocore: it alone reads these answers."""
        store = await self._botocore()
        where = f"s3://{self.bucket}/{prefix}"
        status = await self._botocore_call(
            f"asking whether {where} keeps versions", store.versioning
        )
        if status is None:
            raise UsageError(
                f"--at needs a bucket that keeps versions: s3://{self.bucket} never had "
                "versioning turned on, so S3 holds only the objects as they are now"
            )
        what = f"listing the versions under {where}"
        pick = AsOf(at)
        chain = TokenChain()
        marker: tuple[str | None, str | None] = (None, None)
        while True:
            entries, following = await self._botocore_call(
                what, partial(store.versions_page, prefix, *marker)
            )
            yield list(pick.feed(entries))
            if following is None:
                return
            try:
                chain.follow(f"{following[0]}\0{following[1] or ''}")
            except BrokenListing as exc:
                raise S3Error(
                    f"the store broke the listing of versions under {where}: it {exc}"
                ) from None
            marker = following

    async def _botocore_call(self, what: str, call: Callable[[], Awaitable[T]]) -> T:
        """A run-level request only botocore serves, retried by the run's policy
        (its errors read by the one table, inside each attempt)."""

        async def once() -> T:
            with run_errors(self._options, what):
                return await call()

        return await self._run_level(what, once)

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
            return await self._list_page(sub, token, what, delimiter, after, below)

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
        first: bool = False,
    ) -> ListPage:
        async def once(store: Store) -> ListPage:
            with run_errors(self._options, what):
                return await store.list_page(prefix, token, delimiter, start_after, below)

        return await self._run_level(what, lambda: self._either(Lane.RUN, once, first=first))

    # -- one object's requests (ObjectSource, for the transfers) -------------------------

    async def stat(self, obj: RemoteObject) -> HeadResult:
        """HEAD one object mid-run: its current version, checksums and encryption."""
        return await self._either(Lane.OBJECT, lambda store: store.stat(obj))

    async def part_head(self, obj: RemoteObject, number: int) -> PartHead | None:
        """HEAD one part of a multipart upload: its size and checksum (None if S3 cannot tell)."""
        return await self._either(Lane.OBJECT, lambda store: store.part_head(obj, number))

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
        return await self._either(
            Lane.OBJECT,
            lambda store: store.open_body(
                obj, start=start, end=end, if_match=if_match, want_checksum=want_checksum
            ),
        )


# -- opening ---------------------------------------------------------------------------


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
    endpoint = effective_endpoint(options.endpoint_url)
    proxy = proxies.for_url(endpoint) if endpoint else proxies.https
    if plain_http(endpoint) and not (proxy or "").startswith("https:"):
        return
    trust.context()


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
            trust = _trust(options, open_session(options))
        except boto_exc.ConfigParseError as exc:
            raise UsageError(f"cannot read the AWS config file '{config_file()}': {exc}") from exc
        _check_trust(trust, options, proxies)
        s3 = S3(options, trust, proxies, botocore=await open_botocore(options, trust, proxies))
    try:
        yield s3
    finally:
        await s3.aclose()
