"""A real network's ways between the benchmark's tools and its local S3 server.

A loopback server answers in microseconds, at any rate, on any number of
connections, and never says no. Real S3 differs in three ways that decide a
user's wall time, and this proxy adds them back, on 127.0.0.1 only:

- first-byte latency: each request's answer starts after ``request_delay``
  (``list_delay`` for a list page);
- a rate per connection: each connection's answers are paced to
  ``conn_rate`` bytes/s (S3 gives one connection ~50-100 MB/s, so a fast
  network needs many in flight);
- throttling: past ``admitted_rps`` requests/s (over every connection) the
  rest are answered ``503 SlowDown`` at once, as S3 answers a hot prefix.

Keep-alive is kept: one upstream connection per client connection, so a
client that reuses its connections pays the latency, not a new handshake.
It speaks just enough HTTP/1.1 for GET, HEAD and list requests (bodies by
Content-Length or chunked). Run ``python netem.py --upstream URL --profile
wan``: it prints its endpoint's URL, then serves until killed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

CHUNK = 64 * 1024


@dataclass(frozen=True)
class Profile:
    name: str
    request_delay: float = 0.0  # seconds before an answer starts
    list_delay: float = 0.0  # the same, for a list page
    conn_rate: float | None = None  # bytes/s per connection
    admitted_rps: float | None = None  # requests/s over all connections; the rest: 503

    def describe(self) -> str:
        bits = []
        if self.request_delay or self.list_delay:
            bits.append(
                f"{self.request_delay * 1000:.0f} ms first byte, "
                f"{self.list_delay * 1000:.0f} ms a list page"
            )
        if self.conn_rate:
            bits.append(f"{self.conn_rate / 1e6:.0f} MB/s a connection")
        if self.admitted_rps:
            bits.append(f"{self.admitted_rps:.0f} requests/s admitted, the rest 503 SlowDown")
        return "; ".join(bits) or "no delay, no limit"


PROFILES = {
    "loopback": Profile("loopback"),
    "wan": Profile("wan", request_delay=0.020, list_delay=0.050, conn_rate=20e6),
    "throttled": Profile("throttled", admitted_rps=400.0),
}

_SLOWDOWN_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class Admission:
    """A token bucket over every connection: *rps* a second, 0.1 s of burst."""

    def __init__(self, rps: float) -> None:
        self.rps = rps
        self.capacity = max(1.0, rps / 10)
        self.tokens = self.capacity
        self.at = time.monotonic()
        self.refused = 0

    def admit(self) -> bool:
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.at) * self.rps)
        self.at = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.refused += 1
        return False


class Pacer:
    """One connection's bytes, at most *rate* a second (from its first byte)."""

    def __init__(self, rate: float | None) -> None:
        self.rate = rate
        self.start = 0.0
        self.sent = 0

    async def sent_bytes(self, n: int) -> None:
        if not self.rate:
            return
        now = time.monotonic()
        if self.sent == 0 or now - (self.start + self.sent / self.rate) > 0.05:
            # A fresh (or idle) connection: pace from now, not from its past.
            self.start, self.sent = now, 0
        self.sent += n
        ahead = self.start + self.sent / self.rate - now
        if ahead > 0.001:
            await asyncio.sleep(ahead)


def _header(head: bytes, name: bytes) -> bytes | None:
    for line in head.split(b"\r\n")[1:]:
        key, _, value = line.partition(b":")
        if key.strip().lower() == name:
            return value.strip()
    return None


async def _copy_body(
    head: bytes,
    no_body: bool,
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    pacer: Pacer | None,
) -> bool:
    """Copy the body that follows *head*; False if the connection must close."""

    async def out(data: bytes) -> None:
        writer.write(data)
        await writer.drain()
        if pacer is not None:
            await pacer.sent_bytes(len(data))

    if no_body:
        return True
    length = _header(head, b"content-length")
    if length is not None:
        left = int(length)
        while left:
            data = await reader.read(min(CHUNK, left))
            if not data:
                return False
            left -= len(data)
            await out(data)
        return True
    if (_header(head, b"transfer-encoding") or b"").lower() == b"chunked":
        while True:
            size_line = await reader.readuntil(b"\r\n")
            size = int(size_line.split(b";")[0], 16)
            await out(size_line)
            data = await reader.readexactly(size + 2)
            await out(data)
            if size == 0:
                return True
    while data := await reader.read(CHUNK):  # to the end of the connection
        await out(data)
    return False


class Netem:
    def __init__(self, profile: Profile, upstream: str) -> None:
        self.profile = profile
        parts = urlsplit(upstream)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 80
        self.admission = Admission(profile.admitted_rps) if profile.admitted_rps else None

    async def serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        pacer = Pacer(self.profile.conn_rate)
        try:
            while True:
                try:
                    head = await client_r.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                method, target = head.split(b" ", 2)[:2]
                body = b""
                if (length := _header(head, b"content-length")) is not None:
                    body = await client_r.readexactly(int(length))
                if self.admission is not None and not self.admission.admit():
                    await self._slow_down(client_w, method == b"HEAD")
                    continue
                listing = method == b"GET" and b"list-type=" in target
                delay = self.profile.list_delay if listing else self.profile.request_delay
                if delay:
                    await asyncio.sleep(delay)
                for attempt in range(2):  # the upstream may have closed an idle connection
                    if upstream is None:
                        upstream = await asyncio.open_connection(self.host, self.port)
                    up_r, up_w = upstream
                    try:
                        up_w.write(head + body)
                        await up_w.drain()
                        answer = await up_r.readuntil(b"\r\n\r\n")
                        break
                    except (asyncio.IncompleteReadError, ConnectionError):
                        up_w.close()
                        upstream = None
                        if attempt:
                            return
                status = int(answer.split(b" ", 2)[1])
                client_w.write(answer)
                no_body = method == b"HEAD" or status in (204, 304) or status < 200
                keep = await _copy_body(answer, no_body, up_r, client_w, pacer)
                await client_w.drain()
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            if upstream is not None:
                upstream[1].close()
            client_w.close()

    async def _slow_down(self, client_w: asyncio.StreamWriter, head_only: bool) -> None:
        client_w.write(
            b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n"
            b"Content-Length: %d\r\nConnection: keep-alive\r\n\r\n"
            % len(_SLOWDOWN_BODY)
            + (b"" if head_only else _SLOWDOWN_BODY)
        )
        await client_w.drain()


async def _main(profile: Profile, upstream: str) -> None:
    netem = Netem(profile, upstream)
    server = await asyncio.start_server(netem.serve, "127.0.0.1", 0, backlog=1024)
    port = server.sockets[0].getsockname()[1]
    print(f"http://127.0.0.1:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="the S3 server's URL (127.0.0.1)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="wan")
    args = parser.parse_args()
    if urlsplit(args.upstream).hostname != "127.0.0.1":
        parser.error("--upstream must be on 127.0.0.1")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(PROFILES[args.profile], args.upstream))
    return 0


if __name__ == "__main__":
    sys.exit(main())
