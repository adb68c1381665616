"""The direct path's HTTP client: the wire format as pure functions (with
property tests: a server's bytes are adversarial input), and the client
against scripted servers on 127.0.0.1 that answer with exact bytes, for what
S3 stores never do on purpose: chunked and close-delimited bodies, answers
cut short, idle connections closed under us, silence."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from icanhazmodel._http import CannotConnect, Client, HttpError
from icanhazmodel._httpwire import (
    ChunkedDecoder,
    Headers,
    ProtocolError,
    parse_head,
    request_bytes,
)

# -- the wire, pure -------------------------------------------------------------------------


def chunked(payload: bytes, sizes: list[int]) -> bytes:
    """*payload* in chunked coding, cut at *sizes* (cycled), with a trailer."""
    out, pos, turn = [], 0, 0
    while pos < len(payload):
        size = max(1, sizes[turn % len(sizes)]) if sizes else len(payload)
        piece = payload[pos : pos + size]
        out.append(b"%x;ext=1\r\n%s\r\n" % (len(piece), piece))
        pos += len(piece)
        turn += 1
    out.append(b"0\r\nx-amz-trailer: 1\r\n\r\n")
    return b"".join(out)


def feed_in_cuts(decoder: ChunkedDecoder, data: bytes, cuts: list[int]) -> tuple[bytes, bytes]:
    pieces, rest, pos = [], b"", 0
    for cut in [*sorted(c % (len(data) + 1) for c in cuts), len(data)]:
        got, extra = decoder.feed(data[pos:cut])
        pieces += got
        rest += extra
        pos = max(pos, cut)
    return b"".join(pieces), rest


@given(
    payload=st.binary(max_size=3000),
    sizes=st.lists(st.integers(1, 700), max_size=5),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
    after=st.binary(max_size=20),
)
def test_chunked_decoding_gives_the_payload_back_however_the_stream_is_cut(
    payload: bytes, sizes: list[int], cuts: list[int], after: bytes
) -> None:
    decoder = ChunkedDecoder()
    body, rest = feed_in_cuts(decoder, chunked(payload, sizes) + after, cuts)
    assert decoder.done
    assert body == payload
    assert rest == after


@given(garbage=st.binary(min_size=1, max_size=200), cuts=st.lists(st.integers(0, 300)))
def test_chunked_decoding_of_garbage_fails_or_waits_but_never_invents_bytes(
    garbage: bytes, cuts: list[int]
) -> None:
    decoder = ChunkedDecoder()
    try:
        body, _ = feed_in_cuts(decoder, garbage, cuts)
    except ProtocolError:
        return
    # Whatever came out was framed by sizes the garbage spelled out: never
    # more than it held.
    assert len(body) <= len(garbage)


@pytest.mark.parametrize(
    "bad",
    [
        b"zz\r\n",  # not hex
        b"0x5\r\nhello\r\n",  # a prefix int() would take
        b"+5\r\nhello\r\n",
        b"5\r\nhello!\r\n",  # longer than its size
        b"5\nhello\r\n",  # LF alone
        b"1" * 9000,  # a size line that never ends
    ],
)
def test_bad_chunked_framing_is_refused(bad: bytes) -> None:
    with pytest.raises(ProtocolError):
        ChunkedDecoder().feed(bad)


def test_a_response_head_is_read_with_headers_in_any_case() -> None:
    head = parse_head(
        b'HTTP/1.1 206 Partial Content\r\nETag: "abc"\r\nx-amz-meta-a: 1\r\nX-Amz-Meta-A: 2'
    )
    assert head.status == 206
    assert head.headers.get("etag") == '"abc"'
    assert head.headers["ETAG"] == '"abc"'
    assert head.headers.get("x-amz-meta-a") == "1, 2"
    assert head.keep_alive


@pytest.mark.parametrize(
    ("head", "framing"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12", 12),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 12, 12", 12),
        (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3", "chunked"),
        (b"HTTP/1.1 200 OK", "close"),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9", 0),
    ],
)
def test_a_body_is_framed_as_the_head_says(head: bytes, framing: int | str) -> None:
    assert parse_head(head).framing("GET") == framing


@pytest.mark.parametrize(
    "head",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 12, 13",
        b"HTTP/1.1 200 OK\r\nContent-Length: -1",
        b"HTTP/1.1 200 OK\r\nContent-Length: 0x10",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked",
    ],
)
def test_a_body_framing_that_could_be_misread_is_refused(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(head).framing("GET")


@pytest.mark.parametrize(
    "head",
    [b"HTTP/2 200", b"ICY 200 OK", b"HTTP/1.1 20 OK", b"HTTP/1.1 200 OK\r\nno colon here"],
)
def test_what_is_not_an_http11_head_is_refused(head: bytes) -> None:
    with pytest.raises(ProtocolError):
        parse_head(head)


def test_http10_and_connection_close_are_not_kept_alive() -> None:
    assert not parse_head(b"HTTP/1.0 200 OK\r\nContent-Length: 1").keep_alive
    assert parse_head(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive").keep_alive
    assert not parse_head(b"HTTP/1.1 200 OK\r\nConnection: close").keep_alive


@given(value=st.text(min_size=1, max_size=30))
def test_a_header_value_never_writes_another_header(value: str) -> None:
    try:
        data = request_bytes("GET", "/b/k", {"If-Match": value})
    except ValueError:
        assert any(c in value for c in "\r\n\x00") or not value.isascii()
        return
    assert data.count(b"\r\n") == 3  # request line, one header, blank line


def test_headers_mapping() -> None:
    headers = Headers({"etag": "x"})
    assert "ETag" in headers
    assert dict(headers) == {"etag": "x"}


# -- the client, against scripted servers ---------------------------------------------------

Script = Callable[["Recorder", int], None]


@contextlib.contextmanager
def scripted(script: Script) -> Iterator[tuple[str, list[bytes]]]:
    """A server on 127.0.0.1 that runs *script* on each connection it
    accepts (with the connection's number); yields its URL and the
    requests' heads as they came."""
    listener = socket.create_server(("127.0.0.1", 0))
    requests: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        number = 0
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return

            def one(conn: socket.socket, number: int) -> None:
                with conn:
                    script(Recorder(conn, requests), number)

            threading.Thread(target=one, args=(conn, number), daemon=True).start()
            number += 1

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}", requests
    finally:
        stop.set()
        thread.join()
        listener.close()


class Recorder:
    """The accepted socket, reading whole request heads."""

    def __init__(self, conn: socket.socket, requests: list[bytes]) -> None:
        self.conn = conn
        self.requests = requests
        self.buffer = b""

    def request(self) -> bytes:
        while b"\r\n\r\n" not in self.buffer:
            data = self.conn.recv(65536)
            if not data:
                return b""
            self.buffer += data
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        self.requests.append(head)
        return head

    def send(self, data: bytes) -> None:
        self.conn.sendall(data)


def plain_client(
    origin: str, *, limit: int = 4, read_timeout: float = 5, proxy: str | None = None
) -> Client:
    return Client(
        origin,
        limit=limit,
        connect_timeout=2,
        read_timeout=read_timeout,
        tls=None,
        proxy=proxy,
        headers={"Host": origin.split("//")[1]},
    )


async def get(client: Client, target: str = "/b/k") -> tuple[int, bytes]:
    """One GET, its body read whole and its connection given back."""
    response = await client.request("GET", target, {})
    try:
        return response.status, await response.read_all()
    finally:
        response.release()


def fetch(url: str, count: int = 1, read_timeout: float = 5) -> list[tuple[int, bytes]]:
    async def run() -> list[tuple[int, bytes]]:
        client = plain_client(url, read_timeout=read_timeout)
        try:
            return [await get(client) for _ in range(count)]
        finally:
            await client.aclose()

    return asyncio.run(run())


def keep_answering(body: bytes) -> Script:
    def script(conn: Recorder, _: int) -> None:
        while conn.request():
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))

    return script


def test_one_connection_serves_request_after_request() -> None:
    with scripted(keep_answering(b"hello")) as (url, requests):
        assert fetch(url, count=3) == [(200, b"hello")] * 3
    assert len(requests) == 3
    assert requests[0].startswith(b"GET /b/k HTTP/1.1\r\nHost: 127.0.0.1:")


def test_a_chunked_body_and_a_close_delimited_one_are_read_whole() -> None:
    def script(conn: Recorder, number: int) -> None:
        conn.request()
        if number == 0:
            conn.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            conn.send(b"3\r\nabc\r\n")
            conn.send(b"2\r\nde\r\n0\r\n\r\n")
            conn.request()  # kept alive: the next request comes on it
            conn.send(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil close")

    with scripted(script) as (url, requests):
        assert fetch(url, count=2) == [(200, b"abcde"), (200, b"until close")]
    assert len(requests) == 2


def test_a_body_cut_short_is_an_error_not_a_short_file() -> None:
    def script(conn: Recorder, _: int) -> None:
        conn.request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")

    with scripted(script) as (url, _), pytest.raises(HttpError, match="closed before"):
        fetch(url)


def test_a_kept_alive_connection_closed_by_the_server_is_replaced_once() -> None:
    def script(conn: Recorder, number: int) -> None:
        conn.request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        if number == 0:
            return  # closes the kept-alive connection, as S3 does after idling

        while conn.request():
            conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

    with scripted(script) as (url, requests):
        assert fetch(url, count=3) == [(200, b"ok")] * 3
    assert len(requests) == 3


def test_a_silent_server_times_out() -> None:
    def script(conn: Recorder, _: int) -> None:
        conn.request()
        conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        conn.conn.recv(1)  # holds the connection open, sending nothing

    with scripted(script) as (url, _), pytest.raises(HttpError, match="no data"):
        fetch(url, read_timeout=0.3)


def test_bytes_that_are_not_http_are_an_error() -> None:
    def script(conn: Recorder, _: int) -> None:
        conn.request()
        conn.send(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        conn.conn.recv(1)

    with scripted(script) as (url, _), pytest.raises(HttpError, match=r"not HTTP/1\.1"):
        fetch(url)


def test_no_server_is_cannot_connect() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(CannotConnect, match=f"127.0.0.1:{port}"):
        fetch(f"http://127.0.0.1:{port}")


def test_the_pool_holds_at_most_its_limit_of_connections() -> None:
    open_now, most = 0, 0
    lock = threading.Lock()

    def script(conn: Recorder, _: int) -> None:
        nonlocal open_now, most
        with lock:
            open_now += 1
            most = max(most, open_now)
        try:
            while conn.request():
                threading.Event().wait(0.01)
                conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")
        finally:
            with lock:
                open_now -= 1

    async def many(url: str) -> list[tuple[int, bytes]]:
        client = plain_client(url, limit=3)
        try:
            return await asyncio.gather(*(get(client) for _ in range(30)))
        finally:
            await client.aclose()

    with scripted(script) as (url, requests):
        assert asyncio.run(many(url)) == [(200, b"x")] * 30
    assert len(requests) == 30
    assert most == 3


def test_plain_http_through_a_proxy_names_the_whole_url_and_the_user() -> None:
    async def through(proxy: str) -> tuple[int, bytes]:
        client = plain_client("http://s3.example:9000", proxy=proxy)
        try:
            return await get(client, "/b/k%20x")
        finally:
            await client.aclose()

    with scripted(keep_answering(b"via")) as (url, requests):
        proxy = url.replace("http://", "http://us%40er:p%3Ass@")
        assert asyncio.run(through(proxy)) == (200, b"via")
    lines = requests[0].split(b"\r\n")
    assert lines[0] == b"GET http://s3.example:9000/b/k%20x HTTP/1.1"
    # base64 of "us@er:p:ss": the URL's escapes undone, as curl and requests do.
    assert b"Proxy-Authorization: Basic dXNAZXI6cDpzcw==" in lines
