"""The HTTP client of identity-provider endpoints (JWKS, discovery, introspection), on httpx.

One :class:`ProviderClient` per provider (per authenticator, per key set) holds its connection
pools: an ``httpx.Client`` for WSGI workers and background threads, and an ``httpx.AsyncClient``
for ASGI (the event loop never blocks). Connections are kept alive and reused, proxies come from
the environment (``HTTPS_PROXY``, ``HTTP_PROXY``, ``ALL_PROXY``, ``NO_PROXY``; httpx makes no
exception for loopback hosts), and the TLS context can trust a private CA and present a client
certificate (mutual TLS, RFC 8705). What stays closed:

- A total deadline covers the pool wait, connect, TLS, send and the whole answer, headers and
  body: a per-read timeout alone would let a server that dribbles one byte a second hold a worker
  forever (:mod:`secmw.auth._deadline` for threads, ``asyncio.wait_for`` on the event loop).
- Answers are size-capped while streaming: reading stops past the cap.
- Redirects are not followed: an identity endpoint that moves is a configuration change, not
  something to chase. Compressed answers are not accepted (no decompression bomb).
- ``https`` verifies certificates with the system trust store (or the configured CA bundle);
  plain ``http`` is refused unless allowed explicitly or the host is a loopback address.

Every failure reaches callers as :class:`FetchError` with secmw's own short reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import ssl
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import Field

from secmw.auth._deadline import Timeouts, bound_sockets, deadline
from secmw.core.section import Section
from secmw.errors import ConfigurationError

T = TypeVar("T")


class FetchError(Exception):
    """The endpoint could not be reached or gave an unusable answer.

    The message is written by secmw (``"timed out"``, ``"HTTP 500"``) and never holds a secret.
    """


class ProviderHTTPSettings(Section):
    """How secmw talks to one identity-provider endpoint: trust, client certificate, proxies."""

    ca_bundle: Path | None = Field(
        None, description="PEM file of the CAs to trust instead of the system trust store."
    )
    client_cert: Path | None = Field(
        None, description="PEM client certificate for mutual TLS (RFC 8705)."
    )
    client_key: Path | None = Field(
        None, description="PEM key of `client_cert`, when the certificate file does not hold it."
    )
    trust_env: bool = Field(
        True, description="Use the HTTPS_PROXY / HTTP_PROXY / ALL_PROXY / NO_PROXY variables."
    )


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A parsed ``http(s)`` URL."""

    url: str
    secure: bool
    host: str
    port: int
    target: str


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


def tls_context(settings: ProviderHTTPSettings, setting: str) -> ssl.SSLContext:
    """The TLS context of one provider; ConfigurationError naming ``setting`` when a file is bad.

    The system trust store is the default (as for the rest of the host), not certifi's bundle:
    a company CA installed on the machine keeps working.
    """
    try:
        context = ssl.create_default_context(
            cafile=str(settings.ca_bundle) if settings.ca_bundle else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise ConfigurationError(
            f"{setting}.ca_bundle: cannot load {settings.ca_bundle} ({type(exc).__name__})"
        ) from None
    if settings.client_key and not settings.client_cert:
        raise ConfigurationError(f"{setting}.client_key: needs {setting}.client_cert")
    if settings.client_cert:
        try:
            context.load_cert_chain(settings.client_cert, settings.client_key)
        except (OSError, ssl.SSLError) as exc:  # the message may quote the file: not echoed
            raise ConfigurationError(
                f"{setting}.client_cert: cannot load the certificate and key ({type(exc).__name__})"
            ) from None
    return context


class ProviderClient:
    """The connection pools of one identity provider, sync and async, sharing one TLS context.

    Args:
        settings: CA bundle, client certificate and proxy use.
        setting: Prefix of the variables named in configuration errors.
    """

    def __init__(self, settings: ProviderHTTPSettings | None = None, *, setting: str) -> None:
        settings = settings or ProviderHTTPSettings()
        self._options: dict[str, Any] = {
            "verify": tls_context(settings, setting),
            "trust_env": settings.trust_env,
            "follow_redirects": False,
            "headers": {"User-Agent": "secmw", "Accept-Encoding": "identity"},
        }
        self._setting = setting
        self._sync = self._sync_client()
        self._async: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        reset_after_fork(self, ProviderClient._after_fork)

    def _sync_client(self) -> httpx.Client:
        return bound_sockets(self._build(httpx.Client))

    def _build(self, kind: Any) -> Any:
        try:
            return kind(**self._options)
        except (ImportError, ValueError) as exc:  # an ALL_PROXY=socks5:// without socksio...
            raise ConfigurationError(
                f"{self._setting}.trust_env: the proxy from the environment cannot be used"
                f" ({type(exc).__name__}); fix it or set {self._setting}.trust_env=false"
            ) from None

    def fetch(
        self,
        endpoint: Endpoint,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        timeout: float,
        max_bytes: int,
    ) -> Response:
        """Send one request and read the whole answer within ``timeout`` seconds (blocking)."""
        at = time.monotonic() + timeout
        request = self._request(self._sync, endpoint, method, headers, body, at)
        with _translated(), deadline(at):
            response = self._sync.send(request, stream=True)
            try:
                size, chunks = _check_head(response, max_bytes), []
                for chunk in response.iter_raw():
                    size += len(chunk)
                    _check_chunk(size, max_bytes)
                    chunks.append(chunk)
            finally:
                response.close()
        return _response(response, chunks)

    async def afetch(
        self,
        endpoint: Endpoint,
        method: str = "GET",
        headers: Mapping[str, str] | None = None,
        body: bytes = b"",
        *,
        timeout: float,
        max_bytes: int,
    ) -> Response:
        """Async twin of :meth:`fetch` (the same deadline, also enforced by the event loop)."""
        client = self._async_client()
        request = self._request(client, endpoint, method, headers, body, time.monotonic() + timeout)
        # wait_for rather than asyncio.timeout: the same line on every supported Python.
        with _translated():
            return await asyncio.wait_for(self._exchange(client, request, max_bytes), timeout)

    async def _exchange(
        self, client: httpx.AsyncClient, request: httpx.Request, max_bytes: int
    ) -> Response:
        response = await client.send(request, stream=True)
        try:
            size, chunks = _check_head(response, max_bytes), []
            async for chunk in response.aiter_raw():
                size += len(chunk)
                _check_chunk(size, max_bytes)
                chunks.append(chunk)
        finally:
            await response.aclose()
        return _response(response, chunks)

    def _async_client(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._async is None or self._loop is not loop:
            # A connection belongs to the loop that opened it; a new loop gets its own pool.
            self._async, self._loop = self._build(httpx.AsyncClient), loop
        return self._async

    @staticmethod
    def _request(
        client: httpx.Client | httpx.AsyncClient,
        endpoint: Endpoint,
        method: str,
        headers: Mapping[str, str] | None,
        body: bytes,
        at: float,
    ) -> httpx.Request:
        return client.build_request(
            method,
            endpoint.url,
            headers=headers,
            content=body if body or method == "POST" else None,
            extensions={"timeout": Timeouts(at)},
        )

    def close(self) -> None:
        """Close the sync pool's connections (it stays usable: new ones open on demand)."""
        self._sync.close()
        self._sync = self._sync_client()

    async def aclose(self) -> None:
        """Close the async pool of the running loop, then the sync pool."""
        client, self._async = self._async, None
        if client is not None and self._loop is asyncio.get_running_loop():
            await client.aclose()
        self.close()

    def _after_fork(self) -> None:
        # The parent's connections are not ours: forget them without closing (a TLS close
        # would end the parent's sessions too).
        self._sync = self._sync_client()
        self._async = self._loop = None


def _check_head(response: httpx.Response, max_bytes: int) -> int:
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        raise FetchError("compressed answer")
    length = response.headers.get("content-length", "0").strip()
    if length.isdigit() and int(length) > max_bytes:
        raise FetchError("answer too large")
    return 0


def _check_chunk(size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise FetchError("answer too large")


def _response(response: httpx.Response, chunks: list[bytes]) -> Response:
    return Response(response.status_code, dict(response.headers.items()), b"".join(chunks))


@contextlib.contextmanager
def _translated() -> Iterator[None]:
    """httpx's and asyncio's exceptions as FetchError with secmw's own reason."""
    try:
        yield
    except FetchError:
        raise
    except (httpx.TimeoutException, asyncio.TimeoutError, TimeoutError):
        raise FetchError("timed out") from None
    except (httpx.HTTPError, OSError) as exc:
        raise FetchError(_describe(exc)) from None


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: BaseException | None = exc
    for _ in range(8):  # httpx wraps httpcore wraps the OSError: a short chain
        if seen is None:
            return
        yield seen
        seen = seen.__cause__ or seen.__context__


def _describe(exc: BaseException) -> str:
    for cause in _causes(exc):
        if isinstance(cause, ssl.SSLError):
            return "TLS failure"
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and type(cause).__name__ == "gaierror":
            return "name resolution failed"
    if isinstance(exc, httpx.ProxyError):
        return "proxy failed"
    if isinstance(exc, httpx.RemoteProtocolError | httpx.DecodingError):
        return "not an HTTP answer"
    return "connection failed"


def reset_after_fork(target: T, reset: Callable[[T], None]) -> None:
    """Run ``reset(target)`` in a forked child while ``target`` lives: the parent's threads,
    locks and connections do not belong to the child."""
    if not hasattr(os, "register_at_fork"):  # pragma: no cover - Windows
        return
    ref = weakref.ref(target)

    def child() -> None:
        alive = ref()
        if alive is not None:
            reset(alive)

    os.register_at_fork(after_in_child=child)
