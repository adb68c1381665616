"""HTTP/1.1 on the wire, as pure functions: a request's bytes, a response
head, and the chunked transfer coding. No I/O: ``_http`` feeds these what
the socket gives it, cut anywhere.

Strict where leniency could hide a wrong byte (a body's framing: a bad
Content-Length or chunk size is an error, never a guess) and bounded where a
hostile server could make us hold memory (a head or a chunk line that never
ends).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

# A response head larger than this is refused: S3's are a few KiB (user
# metadata is capped at 2 KiB).
MAX_HEAD = 64 * 1024
# A chunk-size line, or a trailer line, longer than this is refused.
MAX_LINE = 8 * 1024
MAX_TRAILERS = 64 * 1024

_STATUS_LINE = re.compile(rb"HTTP/1\.([01]) ([1-9][0-9][0-9])(?: [^\r\n]*)?")
_TOKEN = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_DIGITS = re.compile(rb"[0-9]{1,19}")
_CHUNK_SIZE = re.compile(rb"([0-9A-Fa-f]{1,15})[ \t]*(?:;[^\r\n]*)?")
_FORBIDDEN_IN_VALUES = re.compile(r"[\r\n\x00]")


class ProtocolError(ValueError):
    """The server's bytes are not HTTP/1.1 as this client reads it."""


class Headers(Mapping[str, str]):
    """Response headers, looked up by name in any case; a repeated header's
    values are joined with ', ' (RFC 9110, 5.3)."""

    __slots__ = ("_items",)

    def __init__(self, items: dict[str, str]) -> None:
        self._items = items  # lower-case names

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(frozen=True, slots=True)
class Head:
    """A response's status line and headers."""

    status: int
    headers: Headers
    keep_alive: bool  # what the version and Connection header allow

    def framing(self, method: str) -> int | str:
        """How the body is delimited: its length, 'chunked', or 'close'
        (until the server closes the connection)."""
        if method in ("HEAD", "CONNECT") or self.status in (204, 304):
            return 0
        coding = self.headers.get("transfer-encoding")
        if coding is not None:
            # Anything but plain chunked (gzip, chunked) would hand us bytes
            # that are not the object's.
            if coding.strip().lower() != "chunked":
                raise ProtocolError(f"unsupported Transfer-Encoding {coding!r}")
            return "chunked"
        length = self.headers.get("content-length")
        if length is None:
            return "close"
        # "5, 5" (a repeated header) is one length said twice; "5, 6" is not.
        values = {value.strip() for value in length.split(",")}
        if len(values) != 1 or not _DIGITS.fullmatch(value := values.pop().encode()):
            raise ProtocolError(f"bad Content-Length {length!r}")
        return int(value)


def parse_head(head: bytes) -> Head:
    """A response head, without its final blank line."""
    lines = head.split(b"\r\n")
    match = _STATUS_LINE.fullmatch(lines[0])
    if match is None:
        raise ProtocolError(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
    items: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon or not _TOKEN.fullmatch(name):
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.decode("ascii").lower()
        text = value.strip(b" \t").decode("latin-1")
        items[key] = f"{items[key]}, {text}" if key in items else text
    headers = Headers(items)
    connection = {t.strip() for t in headers.get("connection", "").lower().split(",")}
    keep_alive = "keep-alive" in connection if match[1] == b"0" else "close" not in connection
    return Head(int(match[2]), headers, keep_alive)


def request_bytes(method: str, target: str, headers: Mapping[str, str]) -> bytes:
    """A body-less request. A header value or target that could end its line
    early (CR, LF, NUL) is refused: it would let a key or an ETag write
    headers of its own."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{n}: {v}" for n, v in headers.items()), "\r\n"]
    text = "\r\n".join(lines)
    # Every CR and LF must be one of ours (one pair per line): counted in C,
    # then looked for one by one only to name the culprit.
    if text.count("\n") != len(lines) or text.count("\r") != len(lines) or "\x00" in text:
        for line in lines[:-1]:
            if _FORBIDDEN_IN_VALUES.search(line):
                raise ValueError(f"a request line holds a line break: {line!r}")
    if " " in target:
        raise ValueError(f"a request target holds a space: {target!r}")
    try:
        return text.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"a request header that is not ASCII: {text!r}") from None


_SIZE, _DATA, _DATA_END, _TRAILERS = range(4)


class ChunkedDecoder:
    """Undoes the chunked transfer coding, fed the stream cut anywhere."""

    __slots__ = ("_left", "_line", "_state", "_trailer_bytes", "done")

    def __init__(self) -> None:
        self._line = bytearray()  # a control line still arriving
        self._left = 0  # data bytes left in the current chunk
        self._state = _SIZE
        self._trailer_bytes = 0
        self.done = False

    def feed(self, data: bytes) -> tuple[list[bytes], bytes]:
        """The payload pieces in *data*, and any bytes after the coding's end."""
        pieces: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state == _DATA:
                take = min(self._left, end - pos)
                pieces.append(data if pos == 0 and take == end else data[pos : pos + take])
                pos += take
                self._left -= take
                if self._left == 0:
                    self._state = _DATA_END
                continue
            newline = data.find(b"\n", pos)
            if newline < 0:
                self._line += data[pos:]
                self._check_length()
                pos = end
                break
            self._line += data[pos:newline]
            pos = newline + 1
            self._check_length()
            if not self._line.endswith(b"\r"):
                raise ProtocolError("a chunk line not ended by CRLF")
            line = bytes(self._line[:-1])
            self._line.clear()
            self._control(line)
        return pieces, data[pos:]

    def _check_length(self) -> None:
        if len(self._line) > MAX_LINE:
            raise ProtocolError("a chunk line over 8 KiB")

    def _control(self, line: bytes) -> None:
        if self._state == _SIZE:
            match = _CHUNK_SIZE.fullmatch(line)
            if match is None:
                raise ProtocolError(f"bad chunk size line {line[:40]!r}")
            self._left = int(match[1], 16)
            self._state = _DATA if self._left else _TRAILERS
        elif self._state == _DATA_END:
            if line:
                raise ProtocolError("a chunk longer than its size")
            self._state = _SIZE
        else:  # trailers: read and dropped, up to the blank line
            self._trailer_bytes += len(line)
            if self._trailer_bytes > MAX_TRAILERS:
                raise ProtocolError("trailers over 64 KiB")
            self.done = not line
