"""Session stores: bytes under a key, each with a time to live.

The session logic (timeouts, rotation) lives in :mod:`secmw.auth.session`; a store only keeps
opaque values and forgets them when their TTL runs out. Both stores also serve other short-lived
security state that needs the same shape.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from secmw.errors import StoreUnavailable
from secmw.stores.redis import REDIS_ERRORS, client_pair

if TYPE_CHECKING:
    import redis
    import redis.asyncio

_REDIS_ERRORS = REDIS_ERRORS


class SessionStore(Protocol):
    """Sync side (WSGI)."""

    def get(self, key: str) -> bytes | None:
        """The value, None when absent or expired."""

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""

    def delete(self, key: str) -> None:
        """Forget ``key``."""


class AsyncSessionStore(Protocol):
    """Async side (ASGI)."""

    async def aget(self, key: str) -> bytes | None:
        """The value, None when absent or expired."""

    async def aset(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""

    async def adelete(self, key: str) -> None:
        """Forget ``key``."""


class MemorySessionStore:
    """A per-process store with a cap: past ``max_entries``, the least recently used entry goes.

    Args:
        max_entries: The cap (a dropped session is a logged-out user: size it above the number
            of concurrent sessions).
        clock: UNIX time source (injected in tests).
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self.max_entries = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> bytes | None:
        """The value, None when absent or expired (expired entries are dropped on sight)."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds (nothing when ``ttl`` is not positive)."""
        with self._lock:
            if ttl <= 0:
                self._entries.pop(key, None)
                return
            self._entries[key] = (self._clock() + ttl, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        with self._lock:
            self._entries.pop(key, None)

    async def aget(self, key: str) -> bytes | None:
        """Async twin of :meth:`get` (no I/O)."""
        return self.get(key)

    async def aset(self, key: str, value: bytes, ttl: float) -> None:
        """Async twin of :meth:`set` (no I/O)."""
        self.set(key, value, ttl)

    async def adelete(self, key: str) -> None:
        """Async twin of :meth:`delete` (no I/O)."""
        self.delete(key)


class RedisSessionStore:
    """Values in Redis under ``prefix + key`` with a millisecond TTL (``SET ... PX``).

    Give a sync client (redis-py), an async client (``redis.asyncio``) or both; :meth:`from_url`
    builds both with short timeouts. Every call that Redis cannot answer (connection refused or
    lost, timeout, error reply) raises :class:`secmw.errors.StoreUnavailable`, whichever client
    library error caused it: the session authenticator answers it with a 503, a login view
    should too.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        *,
        prefix: str = "secmw:session:",
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("RedisSessionStore needs a sync or an async Redis client")
        self._client = client
        self._async = async_client
        self.prefix = prefix

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.5, prefix: str = "secmw:session:"
    ) -> RedisSessionStore:
        """Both clients for ``url``, with ``timeout`` on connect and on every call."""
        return cls(*client_pair(url, timeout), prefix=prefix)

    def get(self, key: str) -> bytes | None:
        """The value, None when absent (Redis expires it)."""
        with _unavailable():
            value: Any = self._sync().get(self.prefix + key)  # redis-py types vary by version
        return _as_bytes(value)

    def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        if ttl <= 0:
            self.delete(key)
            return
        with _unavailable():
            self._sync().set(self.prefix + key, value, px=_millis(ttl))

    def delete(self, key: str) -> None:
        """Forget ``key``."""
        with _unavailable():
            self._sync().delete(self.prefix + key)

    async def aget(self, key: str) -> bytes | None:
        """Async twin of :meth:`get`."""
        with _unavailable():
            value = await self._asynchronous().get(self.prefix + key)
        return _as_bytes(value)

    async def aset(self, key: str, value: bytes, ttl: float) -> None:
        """Async twin of :meth:`set`."""
        if ttl <= 0:
            await self.adelete(key)
            return
        with _unavailable():
            await self._asynchronous().set(self.prefix + key, value, px=_millis(ttl))

    async def adelete(self, key: str) -> None:
        """Async twin of :meth:`delete`."""
        with _unavailable():
            await self._asynchronous().delete(self.prefix + key)

    def _sync(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("no synchronous Redis client configured")
        return self._client

    def _asynchronous(self) -> redis.asyncio.Redis:
        if self._async is None:
            raise RuntimeError("no asynchronous Redis client configured")
        return self._async


@contextmanager
def _unavailable() -> Iterator[None]:
    try:
        yield
    except _REDIS_ERRORS as exc:  # the type only: a reply error may quote the command
        raise StoreUnavailable(f"session store unavailable ({type(exc).__name__})") from None


def _millis(ttl: float) -> int:
    return max(1, math.ceil(ttl * 1000))


def _as_bytes(value: bytes | str | None) -> bytes | None:
    # A client built with decode_responses=True hands back str.
    return value.encode() if isinstance(value, str) else value


__all__ = ["AsyncSessionStore", "MemorySessionStore", "RedisSessionStore", "SessionStore"]
