"""A fault-injecting HTTP proxy on 127.0.0.1, between the client and moto.

It speaks just enough HTTP/1.1 to know where each response body starts, so a
test can say "cut the 2nd GET of this key after 100 KiB", "stall it", "flip
one byte of it" or "answer the next 3 requests with 503 SlowDown". One
request per client connection (it answers ``Connection: close``); the
client under test reconnects as it would to a real, flaky S3.

Nothing here touches the code under test: the client only sees a different
``endpoint_url``.
"""

from __future__ import annotations

import itertools
import random
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


@dataclass
class Fault:
    """What to do to matching requests, and how many times."""

    method: str = "GET"
    key_contains: str = ""
    times: int = 1
    cut_after: int | None = None  # close the connection after this many body bytes
    stall_after: int | None = None  # stop sending after this many body bytes...
    stall_seconds: float = 0.0  # ...for this long
    flip_at: int | None = None  # invert one body byte at this offset
    status_503: bool = False  # answer 503 SlowDown without asking upstream
    throttle: float | None = None  # bytes per second for the body
    before_cut: Callable[[], None] | None = None  # e.g. overwrite the object in S3
    drop_range: bool = False  # forward without the Range header, as a naive server would
    probability: float = 1.0  # of hitting a matching request (the soak test's dice)
    exact_path: str | None = None  # only this path, e.g. "/bucket" for its listings
    error: tuple[int, str] | None = None  # answer (status, S3 error code) without asking upstream
    once_per_path: bool = False  # never hit the same object twice
    query_contains: str = ""  # e.g. "partNumber=2"
    drop_query: bool = False  # forward without the query, as a store that ignores it
    add_headers: dict[str, str] = field(default_factory=dict)  # added to the answer
    applied: int = 0
    hit_paths: set[str] = field(default_factory=set)

    def matches(self, method: str, path: str, dice: random.Random, query: str = "") -> bool:
        hit = (
            self.applied < self.times
            and method == self.method
            and self.key_contains in path
            and self.query_contains in query
            and (self.exact_path is None or path == self.exact_path)
            and not (self.once_per_path and path in self.hit_paths)
            and (self.probability >= 1.0 or dice.random() < self.probability)
        )
        if hit:
            self.hit_paths.add(path)
        return hit


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    fault: Fault | None
    query: str = ""
    at: float = field(default_factory=time.monotonic)


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    faults: list[Fault] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    port: int = 0  # to listen on; 0 picks a free one
    # A busy store: requests admitted per second over all connections (a
    # bucket of a tenth of a second's worth); the rest get 503 SlowDown.
    admit_per_second: float | None = None
    throttled: int = 0  # requests answered 503 SlowDown for the rate

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        # Requests being answered and answered, e.g. ("GET /bucket/key", start, end).
        self._open: dict[int, tuple[str, float]] = {}
        self._ids = itertools.count()
        self._answered: list[tuple[str, float, float]] = []
        self._dice = random.Random(1234)
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self.port = self._listener.getsockname()[1]
        self._closed = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add(self, fault: Fault) -> Fault:
        with self._lock:
            self.faults.append(fault)
        return fault

    def requests(self, method: str, key_contains: str = "") -> list[Seen]:
        with self._lock:
            return [s for s in self.seen if s.method == method and key_contains in s.path]

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    # -- internals --------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _pick_fault(
        self, method: str, path: str, headers: dict[str, str], query: str = ""
    ) -> Fault | None:
        with self._lock:
            chosen = None
            for fault in self.faults:
                if fault.matches(method, path, self._dice, query):
                    fault.applied += 1
                    chosen = fault
                    break
            self.seen.append(Seen(method, path, headers, chosen, query))
            return chosen

    def in_flight(self, request: str, *, for_at_least: float = 0.0) -> int:
        """Requests like "GET /bucket/key" being answered for *for_at_least* seconds now."""
        since = time.monotonic() - for_at_least
        with self._lock:
            return sum(1 for r, start in self._open.values() if r == request and start <= since)

    def most_at_once(self, request: str) -> int:
        """The most answers to *request* that overlapped, each counted at the
        middle of another: a request starting as another one's last bytes
        leave does not count."""
        with self._lock:
            spans = [(start, end) for r, start, end in self._answered if r == request]
        middles = [(start + end) / 2 for start, end in spans]
        return max((sum(1 for s, e in spans if s <= m <= e) for m in middles), default=0)

    @contextmanager
    def _timed(self, request: str) -> Iterator[None]:
        key, start = next(self._ids), time.monotonic()
        with self._lock:
            self._open[key] = (request, start)
        try:
            yield
        finally:
            with self._lock:
                del self._open[key]
                self._answered.append((request, start, time.monotonic()))

    def _serve(self, client: socket.socket) -> None:
        try:
            with client:
                head, rest = _read_head(client)
                if head is None:
                    return
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = dict(
                    (name.strip().lower(), value.strip())
                    for name, value in (line.split(":", 1) for line in lines[1:] if ":" in line)
                )
                body = rest
                length = int(headers.get("content-length", "0"))
                while len(body) < length:
                    more = client.recv(65536)
                    if not more:
                        return
                    body += more
                path = unquote(urlsplit(target).path)
                if not self._admitted():
                    _send_error(client, 503, _SLOWDOWN_BODY)
                    return
                fault = self._pick_fault(method, path, headers, urlsplit(target).query)
                if fault is not None and fault.status_503:
                    _send_error(client, 503, _SLOWDOWN_BODY, fault.add_headers)
                    return
                if fault is not None and fault.error is not None:
                    status, code = fault.error
                    _send_error(
                        client,
                        status,
                        f"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>{code}</Code>"
                        "<Message>injected by the fault proxy</Message></Error>".encode(),
                        fault.add_headers,
                    )
                    return
                if fault is not None and fault.drop_query:
                    request_line, _, headers_rest = head.partition(b"\r\n")
                    verb, target_bytes, version = request_line.split(b" ", 2)
                    head = b" ".join((verb, target_bytes.split(b"?")[0], version))
                    head += b"\r\n" + headers_rest
                if fault is not None and fault.drop_range:
                    head = b"\r\n".join(
                        line
                        for line in head.split(b"\r\n")
                        if not line.lower().startswith(b"range:")
                    )
                with self._timed(f"{method} {path}"):
                    self._relay(client, head, body, fault)
        except OSError:
            return

    def _admitted(self) -> bool:
        if self.admit_per_second is None:
            return True
        with self._lock:
            now = time.monotonic()
            room = self.admit_per_second / 10
            self._tokens = min(room, self._tokens + (now - self._refilled) * self.admit_per_second)
            self._refilled = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            self.throttled += 1
            return False

    def _relay(self, client: socket.socket, head: bytes, body: bytes, fault: Fault | None) -> None:
        request_lines = [
            line for line in head.split(b"\r\n") if not line.lower().startswith(b"connection:")
        ]
        request = b"\r\n".join(request_lines) + b"\r\nConnection: close\r\n\r\n" + body
        with socket.create_connection(self.upstream) as upstream:
            upstream.sendall(request)
            response_head, rest = _read_head(upstream)
            if response_head is None:
                return
            lines = [
                line
                for line in response_head.split(b"\r\n")
                if not line.lower().startswith(b"connection:")
            ]
            if fault is not None:
                lines += [f"{name}: {value}".encode() for name, value in fault.add_headers.items()]
            client.sendall(b"\r\n".join(lines) + b"\r\nConnection: close\r\n\r\n")
            sent = 0
            chunk = rest
            while True:
                if chunk:
                    sent = self._send_body(client, chunk, sent, fault)
                    if sent < 0:
                        return  # the fault cut the connection
                chunk = upstream.recv(65536)
                if not chunk:
                    return

    def _send_body(
        self, client: socket.socket, chunk: bytes, sent: int, fault: Fault | None
    ) -> int:
        if fault is None:
            client.sendall(chunk)
            return sent + len(chunk)
        data = bytearray(chunk)
        if fault.flip_at is not None and sent <= fault.flip_at < sent + len(data):
            data[fault.flip_at - sent] ^= 0xFF
        if fault.cut_after is not None and sent + len(data) >= fault.cut_after:
            client.sendall(bytes(data[: fault.cut_after - sent]))
            if fault.before_cut is not None:
                fault.before_cut()
            client.shutdown(socket.SHUT_RDWR)
            return -1
        if fault.stall_after is not None and sent <= fault.stall_after < sent + len(data):
            split = fault.stall_after - sent
            client.sendall(bytes(data[:split]))
            time.sleep(fault.stall_seconds)
            data = data[split:]
        if fault.throttle:
            for i in range(0, len(data), 16384):
                client.sendall(bytes(data[i : i + 16384]))
                time.sleep(16384 / fault.throttle)
        else:
            client.sendall(bytes(data))
        return sent + len(chunk)


def _send_error(
    client: socket.socket, status: int, body: bytes, headers: dict[str, str] | None = None
) -> None:
    extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
    client.sendall(
        f"HTTP/1.1 {status} Injected\r\nContent-Type: application/xml\r\n{extra}".encode()
        + f"Content-Length: {len(body)}\r\n".encode()
        + b"Connection: close\r\n\r\n"
        + body
    )


def _read_head(sock: socket.socket) -> tuple[bytes | None, bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        more = sock.recv(65536)
        if not more:
            return None, b""
        buffer += more
    head, _, rest = buffer.partition(b"\r\n\r\n")
    return head, rest


@contextmanager
def fault_proxy(endpoint: str) -> Iterator[FaultProxy]:
    split = urlsplit(endpoint)
    proxy = FaultProxy((split.hostname or "127.0.0.1", split.port or 80))
    try:
        yield proxy
    finally:
        proxy.close()
