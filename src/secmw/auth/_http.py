"""A minimal HTTP client for identity-provider endpoints (JWKS, discovery, introspection).

Two twins share one request builder and one response parser: ``fetch`` (blocking sockets, for
WSGI and background threads) and ``afetch`` (asyncio streams, for ASGI; the event loop never
blocks). Deliberately small, and closed where general-purpose clients are open:

- One request per connection, HTTP/1.0 with ``Connection: close``: the answer ends at EOF and
  is never chunked (RFC 9112 §7.1 forbids chunked replies to HTTP/1.0 requests).
- A total deadline covers connect, send and the whole answer (a per-read timeout alone would let
  a server that dribbles one byte a second hold a worker forever), and answers are size-capped.
- Redirects are not followed and proxies are not used: an identity endpoint that moves is a
  configuration change, not something to chase.
- ``https`` verifies certificates with the system trust store; plain ``http`` is refused unless
  allowed explicitly or the host is a loopback address.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import socket
import ssl
import time
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import urlsplit

from secmw.errors import ConfigurationError

MAX_HEADER_BYTES = 64 * 1024


class FetchError(Exception):
    """The endpoint could not be reached or gave an unusable answer.

    The message is written by secmw (``"timed out"``, ``"HTTP 500"``) and never holds a secret.
    """


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed ``http(s)`` URL."""

    url: str
    secure: bool
    host: str
    port: int
    target: str

    @property
    def host_header(self) -> str:
        """The ``Host`` field (RFC 9110 §7.2): brackets around IPv6, default ports left out."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Response:
    """An HTTP answer: status, lower-cased headers (repeats joined with ", "), body."""

    status: int
    headers: Mapping[str, str]
    body: bytes


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback IP literals."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_endpoint(url: str, *, setting: str, allow_http: bool = False) -> Endpoint:
    """Validate an endpoint URL; raise ConfigurationError naming ``setting``."""
    if not url.isascii() or not url.isprintable() or " " in url:
        # Control characters would end up in the request line (header injection).
        raise ConfigurationError(f"{setting}: the URL must be printable ASCII without spaces")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        raise ConfigurationError(f"{setting}: not a valid URL") from None
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not host:
        raise ConfigurationError(f"{setting}: an http(s) URL with a host is required")
    if parts.username is not None or parts.password is not None:
        raise ConfigurationError(f"{setting}: credentials do not belong in the URL")
    secure = parts.scheme == "https"
    if not secure and not allow_http and not is_loopback(host):
        raise ConfigurationError(
            f"{setting}: plain http exposes keys and tokens to the network; use https"
        )
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Endpoint(url, secure, host, port or (443 if secure else 80), target)


def build_request(
    endpoint: Endpoint, method: str, headers: Mapping[str, str], body: bytes = b""
) -> bytes:
    """The request bytes (HTTP/1.0, one request per connection)."""
    lines = [f"{method} {endpoint.target} HTTP/1.0", f"Host: {endpoint.host_header}"]
    lines += ["Connection: close", "User-Agent: secmw", "Accept-Encoding: identity"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body or method == "POST":
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def parse_response(raw: bytes) -> Response:
    """Parse a complete answer read to EOF; FetchError when it is not HTTP."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    if not sep:
        raise FetchError("incomplete HTTP answer")
    lines = head.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not code.isdigit():
        raise FetchError("not an HTTP answer")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise FetchError("malformed HTTP header")
        key = name.strip().lower()
        value = value.strip()
        fields[key] = f"{fields[key]}, {value}" if key in fields else value
    if "chunked" in fields.get("transfer-encoding", "").lower():
        body = _dechunk(body)
    elif "content-length" in fields:
        try:
            length = int(fields["content-length"])
        except ValueError:
            raise FetchError("malformed Content-Length") from None
        if len(body) < length:
            raise FetchError("truncated HTTP answer")
        body = body[:length]
    return Response(int(code), fields, body)


def _dechunk(data: bytes) -> bytes:
    out = bytearray()
    while True:
        size_line, sep, data = data.partition(b"\r\n")
        try:
            size = int(size_line.split(b";")[0], 16)
        except ValueError:
            raise FetchError("malformed chunked body") from None
        if not sep or len(data) < size:
            raise FetchError("truncated chunked body")
        if size == 0:
            return bytes(out)
        out += data[:size]
        data = data[size + 2 :]


@lru_cache(maxsize=1)
def _tls_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def fetch(
    endpoint: Endpoint,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    timeout: float,
    max_bytes: int,
) -> Response:
    """Send one request and read the whole answer within ``timeout`` seconds (blocking)."""
    request = build_request(endpoint, method, headers or {}, body)
    deadline = time.monotonic() + timeout
    limit = max_bytes + MAX_HEADER_BYTES
    chunks: list[bytes] = []
    size = 0
    try:
        with socket.create_connection((endpoint.host, endpoint.port), timeout=timeout) as raw:
            sock: socket.socket = raw
            if endpoint.secure:
                sock = _tls_context().wrap_socket(raw, server_hostname=endpoint.host)
            with sock:
                sock.sendall(request)
                while True:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise FetchError("timed out")
                    sock.settimeout(remaining)
                    data = sock.recv(65536)
                    if not data:
                        break
                    size += len(data)
                    if size > limit:
                        raise FetchError("answer too large")
                    chunks.append(data)
    except TimeoutError:
        raise FetchError("timed out") from None
    except OSError as exc:
        raise FetchError(_describe(exc)) from None
    return parse_response(b"".join(chunks))


async def afetch(
    endpoint: Endpoint,
    method: str = "GET",
    headers: Mapping[str, str] | None = None,
    body: bytes = b"",
    *,
    timeout: float,
    max_bytes: int,
) -> Response:
    """Async twin of :func:`fetch` on asyncio streams."""
    request = build_request(endpoint, method, headers or {}, body)
    try:
        raw = await asyncio.wait_for(
            _exchange(endpoint, request, max_bytes + MAX_HEADER_BYTES), timeout
        )
    except asyncio.TimeoutError:
        raise FetchError("timed out") from None
    except OSError as exc:
        raise FetchError(_describe(exc)) from None
    return parse_response(raw)


async def _exchange(endpoint: Endpoint, request: bytes, limit: int) -> bytes:
    reader, writer = await asyncio.open_connection(
        endpoint.host,
        endpoint.port,
        ssl=_tls_context() if endpoint.secure else None,
        server_hostname=endpoint.host if endpoint.secure else None,
    )
    try:
        writer.write(request)
        await writer.drain()
        chunks: list[bytes] = []
        size = 0
        while True:
            data = await reader.read(65536)
            if not data:
                return b"".join(chunks)
            size += len(data)
            if size > limit:
                raise FetchError("answer too large")
            chunks.append(data)
    finally:
        writer.close()
        # Bounded: a peer that never completes the TLS close must not hold the caller.
        with contextlib.suppress(OSError, asyncio.TimeoutError):
            await asyncio.wait_for(writer.wait_closed(), 1.0)


def _describe(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return "TLS failure"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "name resolution failed"
    return "connection failed"
