"""The HTTP session botocore's client is given: the run's TLS and proxy policy.

aiobotocore 2.25 (what aioboto3 15 pins) builds its SSL context with
urllib3's ``create_urllib3_context()``, which leaves ``check_hostname`` off
because urllib3 checks names itself; aiohttp does not, so a certificate for
any name passed. Through a proxy it used no SSL context at all unless
``proxy_ca_bundle`` was set. (aiobotocore 3.9 checks host names, but aioboto3
cannot use it yet.)

So the client gets this session class through ``AioConfig(http_session_cls=...)``,
its public seam: every connection uses :meth:`Trust.context`, every request
is routed by :meth:`Proxies.for_url` (the rules the direct path uses), and a
TLS failure raises :class:`TlsError` at once. botocore does not retry an
exception that is not its own, so a bad certificate is one attempt, not six.
"""

from __future__ import annotations

from typing import Any

import aiohttp
import botocore.exceptions
from aiobotocore.httpsession import AIOHTTPSession
from botocore.httpsession import ProxyConfiguration

from ._proxy import Proxies
from ._tls import Trust, untrusted


def session_class(trust: Trust, proxies: Proxies) -> type[AIOHTTPSession]:
    """An aiobotocore HTTP session class bound to this run's policy."""

    class _Routing(ProxyConfiguration):  # type: ignore[misc]
        def proxy_url_for(self, url: str) -> str | None:
            return proxies.for_url(url)

    class TrustedSession(AIOHTTPSession):  # type: ignore[misc]
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            # botocore routed by its reading of the environment; the run's rules decide.
            self._proxy_config = _Routing(proxies_settings=kwargs.get("proxies_config"))

        def _create_connector(self, proxy_url: str | None) -> aiohttp.TCPConnector:
            return aiohttp.TCPConnector(
                limit=self._max_pool_connections,
                ssl=trust.context(),
                **self._connector_args,
            )

        async def send(self, request: Any) -> Any:
            try:
                return await super().send(request)
            except botocore.exceptions.SSLError as exc:
                raise untrusted(request.url, exc.kwargs.get("error"), trust) from exc
            except botocore.exceptions.ProxyConnectionError as exc:
                cause = exc.kwargs.get("error")
                if isinstance(cause, aiohttp.ClientSSLError):
                    raise untrusted(request.url, cause, trust) from exc
                raise

    return TrustedSession
