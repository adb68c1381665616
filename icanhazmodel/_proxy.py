"""Which requests go through a proxy: HTTP(S)_PROXY and NO_PROXY, read once.

Both request paths (the direct one and botocore's, through the HTTP session
icanhazmodel gives it) and every worker process ask :meth:`Proxies.for_url`,
so a run never sends one path through a proxy and the other around it.

NO_PROXY is matched with the union of the rules botocore and requests use:
an entry matches the host or ``host:port`` itself or as a domain suffix
(``example.com`` and ``.example.com`` both match ``s3.example.com``), an IP
block (``10.0.0.0/8``) matches the IPs in it, and ``*`` matches everything.
As in botocore, ALL_PROXY is not read. Pure: no I/O, no global state.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True, slots=True)
class Proxies:
    """The proxy settings of one run (picklable: worker processes get them)."""

    http: str | None = None
    https: str | None = None
    no_proxy: tuple[str, ...] = ()  # normalised entries (see _entries)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Proxies:
        """HTTP_PROXY, HTTPS_PROXY and NO_PROXY, as urllib reads them: the
        lower-case name wins, and upper-case HTTP_PROXY is ignored in a CGI
        request (REQUEST_METHOD set), where a client's Proxy header lands."""

        def read(name: str) -> str | None:
            value = environ.get(name.lower())
            if value is None and not (name == "HTTP_PROXY" and "REQUEST_METHOD" in environ):
                value = environ.get(name)
            return value.strip() if value and value.strip() else None

        return cls(
            http=_with_scheme(read("HTTP_PROXY")),
            https=_with_scheme(read("HTTPS_PROXY")),
            no_proxy=_entries(read("NO_PROXY") or ""),
        )

    def for_url(self, url: str) -> str | None:
        """The proxy to send a request for *url* through; None: go direct."""
        parts = urlsplit(url)
        proxy = self.https if parts.scheme == "https" else self.http
        if proxy is None or parts.scheme not in DEFAULT_PORTS:
            return None
        try:
            port = parts.port or DEFAULT_PORTS[parts.scheme]
        except ValueError:
            return proxy
        return None if bypasses(self.no_proxy, parts.hostname or "", port) else proxy


def _with_scheme(proxy: str | None) -> str | None:
    """'proxy:3128' means http://proxy:3128, as botocore and curl read it."""
    if proxy is None or "://" in proxy:
        return proxy
    return "http://" + proxy


def _entries(no_proxy: str) -> tuple[str, ...]:
    """NO_PROXY's entries, lower case, without a leading '*.' or '.'."""
    entries = []
    for raw in no_proxy.replace(" ", ",").split(","):
        entry = raw.strip().lower()
        if entry.startswith("*."):
            entry = entry[2:]
        entry = entry.lstrip(".")
        if entry:
            entries.append(entry)
    return tuple(entries)


def _in_block(host: str, entry: str) -> bool:
    """Whether *host* is an IP inside the IP block (or equal to the IP) *entry*."""
    try:
        address = ipaddress.ip_address(host)
        network = ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return False
    return address in network


def bypasses(entries: tuple[str, ...], host: str, port: int) -> bool:
    """Whether NO_PROXY *entries* send requests to host:port around the proxy."""
    host = host.lower().strip("[]").rstrip(".")
    with_port = f"{host}:{port}"
    for entry in entries:
        if entry == "*" or entry in (host, with_port):
            return True
        if host.endswith("." + entry) or with_port.endswith("." + entry):
            return True
        if _in_block(host, entry):
            return True
    return False
