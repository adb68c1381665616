"""The direct path's HTTP client: keep-alive HTTP/1.1 connections to one
origin, for body-less GET and HEAD requests.

Why our own and not aiohttp's: a GET of a 16 KiB object cost about 0.26 ms
of CPU in aiohttp's request and response machinery (tracing hooks, cookie
jar, URL objects, middlewares) against 0.12 ms here, and importing aiohttp
took 0.11-0.25 s of every run's start. For a run of small files that is a
fifth of the CPU. botocore's path still uses aiohttp (through aiobotocore);
only this one does not.

What it speaks: bodies framed by Content-Length, chunked coding, or the
connection's close; TLS with the run's one context (``_tls``); the run's
proxy (``_proxy``): plain-http requests in absolute form through it, https
through a CONNECT tunnel with TLS end to end, to an ``http://`` or
``https://`` proxy, with the URL's user and password as Proxy-Authorization.
No redirects, cookies, compression or request bodies: S3 GETs need none.

Errors: a broken exchange raises :class:`HttpError` (a ConnectionError: the
retry policy's to retry); a failed TLS handshake raises :class:`TlsFailure`,
which is not, since it is never worth another try (see ``_tls``).
"""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import ssl
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from ._httpwire import (
    MAX_HEAD,
    ChunkedDecoder,
    Head,
    Headers,
    ProtocolError,
    parse_head,
    request_bytes,
)
from ._proxy import DEFAULT_PORTS

# Unread body bytes a connection holds before it stops reading the socket,
# and where it starts again. Each stop and start is an epoll change (~30 us
# of Python and a syscall each way), and a reader slower than the socket
# (writing and hashing) cycles once per HIGH - LOW bytes: with aiohttp's
# 512/256 KiB, 4 x 128 MiB spent 14% of the loop's time there. A 512 KiB
# swing halves the cycles; a 768 KiB one (tried) saved no more that could
# be measured, for 256 KiB more held per stream (see _budget).
HIGH_WATER = 768 * 1024
LOW_WATER = 256 * 1024
# An idle connection older than this is not reused: servers close theirs
# (S3 after about 20 s), and a request sent into a closing one is lost.
KEEPALIVE_S = 15.0


class HttpError(ConnectionError):
    """An exchange that broke: a dropped connection, a timeout, bytes that
    are not HTTP. Worth another attempt."""


class CannotConnect(HttpError):
    """No connection could be made to the server or its proxy."""


class TlsFailure(Exception):
    """A TLS handshake failed with *host*:*port* (the endpoint, or an
    https:// proxy); ``os_error`` is the ssl module's own error."""

    def __init__(self, host: str, port: int, error: BaseException) -> None:
        super().__init__(f"TLS with {host}:{port} failed: {error}")
        self.host = host
        self.port = port
        self.os_error = error


@dataclass(frozen=True, slots=True)
class _Hop:
    """Where a connection goes first: the origin itself, or its proxy."""

    host: str
    port: int
    tls: bool
    authorization: str | None = None  # Proxy-Authorization, for a proxy

    @classmethod
    def of(cls, url: str) -> _Hop:
        parts = urlsplit(url)
        if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {url!r}")
        authorization = None
        if parts.username is not None:
            pair = f"{unquote(parts.username)}:{unquote(parts.password or '')}"
            authorization = "Basic " + base64.b64encode(pair.encode()).decode()
        port = parts.port or DEFAULT_PORTS[parts.scheme]
        return cls(parts.hostname, port, parts.scheme == "https", authorization)


class Connection(asyncio.Protocol):
    """One connection: one exchange at a time, its response read as it arrives."""

    def __init__(self, read_timeout: float) -> None:
        self.transport: asyncio.Transport | None = None
        self._read_timeout = read_timeout
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        self.closed = False
        self.idle_since = 0.0
        self._begin("GET")

    def _begin(self, method: str) -> None:
        self._method = method
        self._head_bytes = bytearray()
        self.head: Head | None = None
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._left = 0  # body bytes still to come, framed by length
        self._framing: int | str = 0
        self._decoder: ChunkedDecoder | None = None
        self.eof = False
        self.reusable = True
        self.answered = False  # any byte of this exchange's response came
        self._paused = False

    # -- asyncio's side ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.reusable = False
        if self.head is not None and self._framing == "close" and exc is None:
            self.eof = True
        elif not self.eof and self._error is None:
            self._error = HttpError(
                "the connection closed before the answer was complete"
                + (f" ({exc})" if exc else "")
            )
        self._wake()

    def data_received(self, data: bytes) -> None:
        self.answered = True
        try:
            if self.head is None:
                self._take_head(data)
            elif not self.eof:
                self._take_body(data)
            else:
                self.reusable = False  # bytes nobody asked for
        except ProtocolError as exc:
            self._fail(HttpError(f"the server's answer is not HTTP/1.1: {exc}"))
        self._wake()

    def eof_received(self) -> bool:
        return False  # close the transport: connection_lost follows

    def _take_head(self, data: bytes) -> None:
        buffer = self._head_bytes
        buffer += data
        end = buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(buffer) > MAX_HEAD:
                raise ProtocolError("a response head over 64 KiB")
            return
        head = parse_head(bytes(buffer[:end]))
        rest = bytes(buffer[end + 4 :])
        buffer.clear()
        if 100 <= head.status < 200:
            if rest:
                self._take_head(rest)  # an interim answer; the real one follows
            return
        self.head = head
        self.reusable = head.keep_alive
        self._framing = head.framing(self._method)
        if self._framing == "chunked":
            self._decoder = ChunkedDecoder()
        elif self._framing == "close":
            self.reusable = False
        else:
            self._left = int(self._framing)
            self.eof = self._left == 0
        if rest:
            self._take_body(rest)

    def _take_body(self, data: bytes) -> None:
        if self._decoder is not None:
            pieces, extra = self._decoder.feed(data)
            self.eof = self._decoder.done
        elif self._framing == "close":
            pieces, extra = [data], b""
        else:
            take = min(self._left, len(data))
            pieces, extra = [data if take == len(data) else data[:take]], data[take:]
            self._left -= take
            self.eof = self._left == 0
        if extra:
            self.reusable = False
        for piece in pieces:
            if piece:
                self._chunks.append(piece)
                self._buffered += len(piece)
        if self._buffered > HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()

    def _fail(self, error: BaseException) -> None:
        self._error = error
        self.abort()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    # -- the client's side ------------------------------------------------------------------

    def send(self, method: str, data: bytes) -> None:
        self._begin(method)
        if self.closed or self.transport is None:
            self._error = self._error or HttpError("the connection was closed")
            return
        self.transport.write(data)

    async def read_head(self) -> Head:
        while self.head is None:
            await self._wait()
        return self.head

    async def read(self, max_bytes: int) -> bytes:
        """Up to *max_bytes* of the body; b"" once it is all read."""
        while not self._chunks:
            if self.eof:
                return b""
            await self._wait()
        data = self._chunks.popleft()
        if len(data) > max_bytes:
            self._chunks.appendleft(data[max_bytes:])
            data = data[:max_bytes]
        self._buffered -= len(data)
        if self._paused and self._buffered <= LOW_WATER and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return data

    async def _wait(self) -> None:
        if self._error is not None:
            raise self._error
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(self._read_timeout, self._time_out, waiter)
        try:
            await waiter
        finally:
            timer.cancel()
            self._waiter = None
        if self._error is not None:
            raise self._error

    def _time_out(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            self._fail(HttpError(f"no data from the server for {self._read_timeout:g} s"))
            waiter.set_result(None)

    def abort(self) -> None:
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()


class Response:
    """One answer: its status, headers and body, read as it arrives."""

    __slots__ = ("_client", "_connection", "headers", "status")

    def __init__(self, client: Client, connection: Connection, head: Head) -> None:
        self._client = client
        self._connection: Connection | None = connection
        self.status = head.status
        self.headers: Headers = head.headers

    async def read(self, max_bytes: int) -> bytes:
        if self._connection is None:
            return b""
        return await self._connection.read(max_bytes)

    async def read_all(self) -> bytes:
        """The whole body (for error answers and list pages: small)."""
        chunks = []
        while chunk := await self.read(1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)

    def release(self) -> None:
        """Done with the answer: a fully read one's connection is kept for
        the next request, any other closed (its unread rest would be read as
        the next answer)."""
        connection, self._connection = self._connection, None
        if connection is not None:
            self._client.put_back(connection)


class Client:
    """Keep-alive connections to one origin, at most *limit* at a time."""

    def __init__(
        self,
        origin: str,
        *,
        limit: int,
        connect_timeout: float,
        read_timeout: float,
        tls: ssl.SSLContext | None,
        proxy: str | None,
        headers: Mapping[str, str],
    ) -> None:
        self._origin = _Hop.of(origin)
        self._proxy = _Hop.of(proxy) if proxy else None
        self._first = self._proxy or self._origin  # the hop every connection dials
        self._limit = max(1, limit)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._tls = tls
        self._headers = dict(headers)
        # Plain http through a proxy: every request names the whole URL.
        self._absolute = origin if self._proxy is not None and not self._origin.tls else ""
        if self._absolute and self._proxy is not None and self._proxy.authorization:
            self._headers = {**headers, "Proxy-Authorization": self._proxy.authorization}
        self._idle: list[Connection] = []
        self._open = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    async def request(self, method: str, target: str, headers: Mapping[str, str]) -> Response:
        """Send a request for *target* (path and query, as signed) and read
        its answer's head."""
        data = request_bytes(method, self._absolute + target, {**self._headers, **headers})
        while True:
            connection, reused = await self._acquire()
            try:
                connection.send(method, data)
                head = await connection.read_head()
            except HttpError:
                self._discard(connection)
                # A kept-alive connection the server closed as we sent: the
                # request never reached it. Once more, on a fresh one.
                if reused and not connection.answered:
                    continue
                raise
            except BaseException:
                self._discard(connection)
                raise
            return Response(self, connection, head)

    def put_back(self, connection: Connection) -> None:
        if self._closed or not connection.reusable or not connection.eof or connection.closed:
            self._discard(connection)
            return
        connection.idle_since = asyncio.get_running_loop().time()
        self._idle.append(connection)
        self._wake_one()

    async def aclose(self) -> None:
        self._closed = True
        while self._idle:
            self._discard(self._idle.pop())

    # -- the pool -----------------------------------------------------------------------------

    async def _acquire(self) -> tuple[Connection, bool]:
        loop = asyncio.get_running_loop()
        while True:
            stale = loop.time() - KEEPALIVE_S
            while self._idle:
                connection = self._idle.pop()
                if not connection.closed and connection.idle_since > stale:
                    return connection, True
                self._discard(connection)
            if self._open < self._limit:
                break
            waiter = loop.create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self._wake_one()  # the turn it was given goes to the next
                elif waiter in self._waiters:  # _wake_one may have dropped it
                    self._waiters.remove(waiter)
                raise
        self._open += 1
        try:
            return await self._connect(), False
        except BaseException:
            self._open -= 1
            self._wake_one()
            raise

    def _discard(self, connection: Connection) -> None:
        connection.abort()
        self._open -= 1
        self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # -- making a connection ------------------------------------------------------------------

    async def _connect(self) -> Connection:
        first = self._first
        where = f"{first.host}:{first.port}" + (" (the proxy)" if self._proxy else "")
        try:
            return await asyncio.wait_for(self._open_connection(), self._connect_timeout)
        except TimeoutError:
            raise CannotConnect(
                f"no connection to {where} within {self._connect_timeout:g} s"
            ) from None
        except (TlsFailure, HttpError):
            raise
        except OSError as exc:
            raise CannotConnect(f"cannot connect to {where}: {exc.strerror or exc}") from exc

    async def _open_connection(self) -> Connection:
        loop = asyncio.get_running_loop()
        first = self._first
        with _handshake(first):
            _, connection = await loop.create_connection(
                lambda: Connection(self._read_timeout),
                first.host,
                first.port,
                ssl=self._tls if first.tls else None,
                server_hostname=first.host if first.tls else None,
            )
        if self._proxy is not None and self._origin.tls:
            try:
                await self._tunnel(connection)
            except BaseException:
                connection.abort()
                raise
        return connection

    async def _tunnel(self, connection: Connection) -> None:
        """CONNECT through the proxy, then TLS with the origin inside it."""
        origin = self._origin
        authority = f"[{origin.host}]" if ":" in origin.host else origin.host
        authority += f":{origin.port}"
        headers = {"Host": authority}
        if self._proxy is not None and self._proxy.authorization:
            headers["Proxy-Authorization"] = self._proxy.authorization
        connection.send("CONNECT", request_bytes("CONNECT", authority, headers))
        head = await connection.read_head()
        if head.status != 200:
            connection.abort()
            raise CannotConnect(f"the proxy answered {head.status} to CONNECT {authority}")
        plain, tls = connection.transport, self._tls
        if plain is None or tls is None:  # an https origin always has a context
            raise CannotConnect(f"no TLS context for {authority}")
        with _handshake(origin):
            secured = await asyncio.get_running_loop().start_tls(
                plain, connection, tls, server_hostname=origin.host
            )
        if secured is None:
            raise CannotConnect(f"the tunnel to {authority} closed during the TLS handshake")
        connection.transport = secured


@contextlib.contextmanager
def _handshake(hop: _Hop) -> Iterator[None]:
    """TLS errors while connecting to *hop*, as a TlsFailure naming it."""
    try:
        yield
    except (ssl.SSLError, ssl.CertificateError) as exc:
        raise TlsFailure(hop.host, hop.port, exc) from exc
