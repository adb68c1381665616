"""TLS in front of a plain-HTTP S3 server, and a CONNECT proxy, on 127.0.0.1.

:class:`TlsFront` terminates TLS with whatever certificate a test gives it
(a trusted one, one for another name, an expired one, one from an unknown
CA) and pipes the bytes to moto; it also keeps the start of what each client
sent, decrypted, so a test can see which request path (User-Agent) spoke.
:class:`ConnectProxy` is a forward proxy: CONNECT tunnels (how HTTPS goes
through a corporate proxy) and absolute-URI requests for plain HTTP.

Nothing here touches the code under test: it only sees an ``https://``
endpoint and the usual proxy variables.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

_CHUNK = 1 << 16
_HEAD_KEPT = 4096  # bytes of each client stream kept, to read request heads


def _close(*socks: socket.socket) -> None:
    """Shut down and close *socks*: the other end sees the stream end."""
    for sock in socks:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sock.close()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy *source* to *sink* until either side ends, then close both (plain
    sockets: one thread a direction is safe)."""
    try:
        while data := source.recv(_CHUNK):
            sink.sendall(data)
    except OSError:
        pass
    finally:
        _close(source, sink)


def _duplex(tls: ssl.SSLSocket, plain: socket.socket, kept: bytearray) -> None:
    """Copy both ways between a TLS client and its plain upstream, in one
    thread, until either side ends; then close both. An SSL socket must not
    be read in one thread while another writes it (OpenSSL's SSL objects are
    not thread-safe): with a pump thread per direction, a TLS 1.3 session
    ticket written during a read broke a stream now and then."""
    try:
        while True:
            # Bytes already decrypted wait in the SSL object, not the socket.
            ready = [tls] if tls.pending() else select.select([tls, plain], [], [])[0]
            if tls in ready:
                data = tls.recv(_CHUNK)
                if not data:
                    return
                if len(kept) < _HEAD_KEPT:
                    kept += data[: _HEAD_KEPT - len(kept)]
                plain.sendall(data)
            if plain in ready:
                data = plain.recv(_CHUNK)
                if not data:
                    return
                tls.sendall(data)
    except OSError:
        pass
    finally:
        _close(tls, plain)


def _start(target: object, *args: object) -> None:
    threading.Thread(target=target, args=args, daemon=True).start()


@dataclass
class _Server:
    """A listening socket on 127.0.0.1 and a thread accepting on it."""

    listener: socket.socket = field(init=False)
    port: int = field(init=False)

    def _listen(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        _start(self._accept)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            _start(self._serve, client)

    def _serve(self, client: socket.socket) -> None:
        raise NotImplementedError

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.listener.close()


@dataclass
class TlsFront(_Server):
    """https://127.0.0.1:port in front of *upstream* (host, port), with *context*'s certificate."""

    upstream: tuple[str, int]
    context: ssl.SSLContext
    handshakes: int = 0  # that completed
    refused: int = 0  # that the client broke off (it did not trust the certificate)
    heads: list[bytearray] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._listen()

    @property
    def endpoint(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    def user_agents(self) -> list[str]:
        """The User-Agent of the first request on each connection."""
        agents = []
        for head in self.heads:
            for line in bytes(head).split(b"\r\n"):
                if line.lower().startswith(b"user-agent:"):
                    agents.append(line.split(b":", 1)[1].strip().decode("latin-1"))
                    break
        return agents

    def _serve(self, client: socket.socket) -> None:
        client.settimeout(10)
        try:
            tls = self.context.wrap_socket(client, server_side=True)
        except (ssl.SSLError, OSError):
            self.refused += 1
            client.close()
            return
        self.handshakes += 1
        tls.settimeout(None)
        try:
            upstream = socket.create_connection(self.upstream)
        except OSError:
            tls.close()
            return
        kept = bytearray()
        self.heads.append(kept)
        _duplex(tls, upstream, kept)


@dataclass
class ConnectProxy(_Server):
    """http://127.0.0.1:port: CONNECT tunnels, and plain-HTTP requests forwarded."""

    tunnels: list[str] = field(default_factory=list)  # host:port of each CONNECT
    forwarded: list[str] = field(default_factory=list)  # request lines of plain HTTP

    def __post_init__(self) -> None:
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _serve(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            data = client.recv(_CHUNK)
            if not data:
                client.close()
                return
            head += data
        head, _, rest = head.partition(b"\r\n\r\n")
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        if method == "CONNECT":
            host, _, port = target.rpartition(":")
            self.tunnels.append(target)
            upstream = socket.create_connection((host.strip("[]"), int(port)))
            client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        elif "://" not in target:
            # Not a proxy request (a stray client of a server that had this
            # port before): refuse it, as a proxy would, and stay up.
            client.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            client.close()
            return
        else:  # http://host:port/path: send it on in origin form
            self.forwarded.append(request_line)
            address, _, path = target.partition("://")[2].partition("/")
            host, _, port = address.rpartition(":")
            upstream = socket.create_connection((host, int(port or 80)))
            # One request per connection: the upstream closes after its answer,
            # so a client's next request (absolute-form again) comes here anew.
            kept = [h for h in header_lines if not h.lower().startswith("connection:")]
            lines = [f"{method} /{path} {version}", *kept, "Connection: close"]
            upstream.sendall("\r\n".join(lines).encode("latin-1") + b"\r\n\r\n" + rest)
        _start(_pump, upstream, client)
        _pump(client, upstream)


@contextlib.contextmanager
def tls_front(upstream: str, context: ssl.SSLContext) -> Iterator[TlsFront]:
    """A TlsFront for the plain-HTTP endpoint *upstream* (http://127.0.0.1:port)."""
    host, _, port = upstream.removeprefix("http://").partition(":")
    front = TlsFront((host, int(port)), context)
    try:
        yield front
    finally:
        front.close()


@contextlib.contextmanager
def connect_proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    try:
        yield proxy
    finally:
        proxy.close()
