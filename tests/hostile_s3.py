"""A small, misbehaving S3 endpoint on 127.0.0.1, for answers moto never gives.

It serves ListObjectsV2, HeadObject and GetObject (path style, with Range)
from a dict, and can be told to misbehave the ways real servers in the way
do: answer every request with a web page (a captive portal, the wrong port),
list an ETag S3 would never send, send a longer body than listed with no
Content-Length (a store that ignores If-Match, streaming a newer version), or
page its listing in ways that break ListObjectsV2's contract (see ``lie``).
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, quote, unquote, urlsplit
from xml.sax.saxutils import escape

PORTAL_PAGE = b"<html><body><h1>Welcome! Please log in to use the network.</h1></body></html>"


@dataclass
class HostileS3:
    bucket: str = "hostile"
    objects: dict[str, bytes] = field(default_factory=dict)
    etags: dict[str, str] = field(default_factory=dict)  # listed ETag, if not the MD5
    served: dict[str, bytes] = field(default_factory=dict)  # GET sends this instead
    portal: bool = False
    port: int = 0
    page_size: int = 1000
    # How its listing lies: "no-token" (a truncated page without a token),
    # "repeat-last" (each page starts with the previous page's last key),
    # "ignore-start-after", "token-cycle" (page 3's token leads back to page 2),
    # "unsorted" (a page's first two keys swapped); "" for none.
    lie: str = ""
    encoding: str = "UTF-8"  # the listing's declared (and used) encoding

    def etag(self, key: str) -> str:
        return self.etags.get(key) or hashlib.md5(self.objects[key]).hexdigest()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _handler(s3: HostileS3) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # HTTP/1.0: one request per connection, a body without a length ends at close.
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _portal(self, body: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(PORTAL_PAGE)))
            self.end_headers()
            if body:
                self.wfile.write(PORTAL_PAGE)

        def _key(self) -> tuple[str, dict[str, list[str]]]:
            parts = urlsplit(self.path)
            path = unquote(parts.path).lstrip("/")
            _, _, key = path.partition("/")
            return key, parse_qs(parts.query)

        def _object_headers(self, key: str, length: int) -> None:
            self.send_header("ETag", f'"{s3.etag(key)}"')
            self.send_header("Last-Modified", formatdate(usegmt=True))
            self.send_header("Content-Length", str(length))

        def do_HEAD(self) -> None:
            if s3.portal:
                return self._portal(False)
            key, _ = self._key()
            if key not in s3.objects:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self._object_headers(key, len(s3.objects[key]))
            self.end_headers()

        def do_GET(self) -> None:
            if s3.portal:
                return self._portal(True)
            key, query = self._key()
            if not key and "list-type" in query:
                return self._list(query)
            if key not in s3.objects:
                self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            if key in s3.served:  # no length: the body ends when the connection does
                self.send_response(200)
                self.send_header("ETag", f'"{s3.etag(key)}"')
                self.end_headers()
                self.wfile.write(s3.served[key])
                return
            data = s3.objects[key]
            ranged = self.headers.get("Range")
            if ranged:
                first, _, last = ranged.removeprefix("bytes=").partition("-")
                start, end = int(first), min(int(last) + 1, len(data))
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{end - 1}/{len(data)}")
                data = data[start:end]
            else:
                self.send_response(200)
            self._object_headers(key, len(data))
            self.end_headers()
            self.wfile.write(data)

        def _list(self, query: dict[str, list[str]]) -> None:
            """ListObjectsV2, a page of s3.page_size at a time, told as s3.lie says."""
            prefix = query.get("prefix", [""])[0]
            after = query.get("start-after", [""])[0]
            token = query.get("continuation-token", [None])[0]
            keys = [k for k in sorted(s3.objects) if k.startswith(prefix)]
            if delimiter := query.get("delimiter", [""])[0]:  # folders as one entry each
                keys = sorted(
                    {
                        prefix + k[len(prefix) :].split(delimiter, 1)[0] + delimiter
                        if delimiter in k[len(prefix) :]
                        else k
                        for k in keys
                    }
                )
            everything = keys
            if after and s3.lie != "ignore-start-after":
                keys = [k for k in keys if k > after]
            page_number = 0
            if token is not None:
                page_number, _, last = token.partition(":")
                keys = [k for k in keys if k > last or (s3.lie == "repeat-last" and k == last)]
            page, rest = keys[: s3.page_size], keys[s3.page_size :]
            number = int(page_number) + 1
            if s3.lie == "unsorted" and len(page) > 2:
                page[0], page[1] = page[1], page[0]
            next_token = f"{number}:{page[-1]}" if rest and page else None
            if s3.lie == "token-cycle" and number == 3:
                next_token = f"1:{everything[s3.page_size - 1]}"  # page 1's token again
            self._send_listing(prefix, page, next_token, query)

        def _send_listing(
            self, prefix: str, page: list[str], token: str | None, query: dict[str, list[str]]
        ) -> None:
            encode = query.get("encoding-type") == ["url"]
            contents = "".join(
                f"<Contents><Key>{quote(key) if encode else escape(key)}</Key>"
                f"<Size>{len(s3.objects[key])}</Size>"
                f"<ETag>&quot;{_xml_text(s3.etag(key))}&quot;</ETag>"
                "<LastModified>2026-11-28T06:00:00.000Z</LastModified></Contents>"
                for key in page
                if key in s3.objects
            ) + "".join(
                f"<CommonPrefixes><Prefix>{quote(key) if encode else escape(key)}</Prefix>"
                "</CommonPrefixes>"
                for key in page
                if key not in s3.objects
            )
            truncated = token is not None or (s3.lie == "no-token" and len(page) == s3.page_size)
            if s3.lie == "no-token":
                token = None
            body = (
                f'<?xml version="1.0" encoding="{s3.encoding}"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{s3.bucket}</Name><Prefix>{escape(prefix)}</Prefix>"
                f"<KeyCount>{len(page)}</KeyCount><MaxKeys>{s3.page_size}</MaxKeys>"
                + ("<EncodingType>url</EncodingType>" if encode else "")
                + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
                + (
                    f"<NextContinuationToken>{escape(token)}</NextContinuationToken>"
                    if token
                    else ""
                )
                + f"{contents}</ListBucketResult>"
            ).encode(s3.encoding)
            self.send_response(200)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return Handler


def _xml_text(text: str) -> str:
    """Escape for XML, writing control characters as character references."""
    return "".join(c if c.isprintable() else f"&#{ord(c)};" for c in escape(text))


@contextmanager
def hostile_s3(**settings: object) -> Iterator[HostileS3]:
    s3 = HostileS3(**settings)  # type: ignore[arg-type]
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(s3))
    server.daemon_threads = True
    s3.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield s3
    finally:
        server.shutdown()
        server.server_close()
