"""One total deadline for a blocking httpx call: pool wait, connect, TLS, send, headers, body.

httpx's timeouts are per operation: a read times out only when *no* byte arrives for that long,
so a server that dribbles its status line one byte a second holds the calling thread for as
long as it likes (httpcore looks the read timeout up once before reading the headers, then
reads until they are complete). The async twin wraps the call in ``asyncio.wait_for``; a thread
has no such tool, so the sync client's sockets are wrapped instead: every read, write, connect
and TLS handshake waits at most until the deadline of the call running in that thread.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import httpcore
import httpx

MIN_WAIT = 0.001  # what a wait is bounded to once the deadline has passed: fail at once

_deadline: ContextVar[float | None] = ContextVar("secmw_http_deadline", default=None)


def _bounded(timeout: float | None) -> float:
    deadline = _deadline.get()
    if deadline is None:  # pragma: no cover - every call runs under ``deadline``
        return MIN_WAIT if timeout is None else timeout
    left = max(deadline - time.monotonic(), MIN_WAIT)
    return left if timeout is None else min(timeout, left)


@contextmanager
def deadline(at: float) -> Iterator[None]:
    """Bound the sync client's socket waits in this thread (and context) to ``at``."""
    token = _deadline.set(at)
    try:
        yield
    finally:
        _deadline.reset(token)


class Timeouts(dict[str, float]):
    """httpcore's ``timeout`` request extension, answering the time left before ``at`` on every
    lookup (httpcore looks up ``pool`` before waiting for a connection from the pool)."""

    def __init__(self, at: float) -> None:
        super().__init__(connect=0.0, read=0.0, write=0.0, pool=0.0)
        self.at = at

    def get(self, key: str, default: Any = None) -> float:
        return max(self.at - time.monotonic(), MIN_WAIT)

    def __getitem__(self, key: str) -> float:
        return self.get(key)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self._inner = inner

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, _bounded(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, _bounded(timeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, _bounded(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class _Backend(httpcore.NetworkBackend):
    def __init__(self, inner: httpcore.NetworkBackend) -> None:
        self._inner = inner

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        inner = self._inner.connect_tcp(
            host, port, _bounded(timeout), local_address, socket_options
        )
        return _Stream(inner)

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        return _Stream(self._inner.connect_unix_socket(path, _bounded(timeout), socket_options))

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def bound_sockets(client: httpx.Client) -> httpx.Client:
    """Wrap the network backend of every pool of ``client`` (direct and through proxies).

    httpx exposes no network backend option, so this reaches into its transports; a version
    where that is no longer possible fails here, at startup, rather than leaving calls without
    their deadline.
    """
    transports = [client._transport, *client._mounts.values()]
    for transport in transports:
        if transport is None:
            continue  # a NO_PROXY entry: requests go through the default transport
        pool = getattr(transport, "_pool", None)
        backend = getattr(pool, "_network_backend", None)
        if not isinstance(backend, httpcore.NetworkBackend):
            raise RuntimeError("this httpx version cannot bound a call with one deadline")
        if not isinstance(backend, _Backend):
            pool._network_backend = _Backend(backend)  # type: ignore[union-attr]
    return client
