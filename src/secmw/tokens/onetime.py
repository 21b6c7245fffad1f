"""Single-use tokens (password reset, email verification) and the stores behind them.

A token is 32 random bytes handed to the user once; the store keeps only its SHA-256 (a leaked
store yields no usable token: the tokens have 256 bits of entropy, so a fast hash suffices) with
the subject it was issued for and an expiry. Consuming is atomic (one ``GETDEL`` in Redis, a
lock in memory), so two concurrent requests with the same token cannot both succeed.

The same stores hold refresh-token grants for :class:`secmw.tokens.TokenIssuer`.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from secmw.errors import StoreUnavailable

T = TypeVar("T")

MAX_TOKEN_CHARS = 128  # longer input is refused before hashing
REQUEST_ACCEPTED = {"message": "If the account exists, a message has been sent to it."}
"""The one answer of a reset or verification request, whether or not the account exists."""


class TokenStoreError(StoreUnavailable):
    """A store could not be reached; callers answer 503 and issue nothing."""


try:  # a store backed by redis-py (a revocation store, say) fails with redis-py's errors
    from redis import RedisError as _RedisError

    STORE_ERRORS: tuple[type[Exception], ...] = (TokenStoreError, OSError, _RedisError)
except ImportError:  # pragma: no cover - redis is an optional extra
    STORE_ERRORS = (TokenStoreError, OSError)
"""Exceptions that mean "a store is unavailable" (answer 503, never 500)."""


class SingleUseStore(Protocol):
    """Where single-use entries live: ``put`` with a time to live, ``consume`` at most once."""

    def put(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds."""

    def consume(self, key: str) -> str | None:
        """Remove and return the value; None when absent or expired (atomically)."""

    async def aput(self, key: str, value: str, ttl: float) -> None:
        """Async twin of :meth:`put`."""

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume`."""


class MemorySingleUseStore:
    """A per-process store with a size cap (oldest entries dropped first past ``max_entries``).

    Dropping an entry early only makes a token fail (closed): size the cap above the number of
    live tokens, and use Redis across processes.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._entries: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def put(self, key: str, value: str, ttl: float) -> None:
        """Store ``value`` for ``ttl`` seconds."""
        with self._lock:
            self._entries[key] = (value, self._clock() + ttl)
            self._entries.move_to_end(key)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def consume(self, key: str) -> str | None:
        """Remove and return the value; None when absent or expired."""
        with self._lock:
            entry = self._entries.pop(key, None)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    async def aput(self, key: str, value: str, ttl: float) -> None:
        """Async twin of :meth:`put` (no I/O)."""
        self.put(key, value, ttl)

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume` (no I/O)."""
        return self.consume(key)


class RedisSingleUseStore:
    """A store in Redis (>= 6.2 for ``GETDEL``; Valkey works), shared by every process.

    Args:
        url: ``redis://``, ``rediss://`` or ``unix://`` URL.
        prefix: Key prefix, so the store can share a database.
        timeout: Connect and socket timeout in seconds: a stalled Redis fails the request (503),
            it never hangs it.
    """

    def __init__(self, url: str, *, prefix: str = "secmw:once:", timeout: float = 1.0) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._sync = redis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._async: Any = None

    def _aclient(self) -> Any:
        if self._async is None:  # created on first use, inside the serving event loop
            import redis.asyncio

            self._async = redis.asyncio.Redis.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return self._async

    def put(self, key: str, value: str, ttl: float) -> None:
        """``SET key value PX ttl``."""
        self._call(lambda: self._sync.set(self.prefix + key, value, px=_millis(ttl)))

    def consume(self, key: str) -> str | None:
        """``GETDEL key``: one atomic step, so a token is honoured once."""
        return _text(self._call(lambda: self._sync.getdel(self.prefix + key)))

    async def aput(self, key: str, value: str, ttl: float) -> None:
        """Async twin of :meth:`put`."""
        await self._acall(self._aclient().set(self.prefix + key, value, px=_millis(ttl)))

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume`."""
        return _text(await self._acall(self._aclient().getdel(self.prefix + key)))

    def close(self) -> None:
        """Release the sync connection pool."""
        self._sync.close()

    async def aclose(self) -> None:
        """Release the async connection pool."""
        if self._async is not None:
            await self._async.aclose()
            self._async = None

    @staticmethod
    def _call(func: Callable[[], T]) -> T:
        import redis

        try:
            return func()
        except (redis.RedisError, OSError) as exc:
            raise TokenStoreError(f"redis unavailable ({type(exc).__name__})") from None

    @staticmethod
    async def _acall(awaitable: Awaitable[T]) -> T:
        import redis

        try:
            return await awaitable
        except (redis.RedisError, OSError) as exc:
            raise TokenStoreError(f"redis unavailable ({type(exc).__name__})") from None


def _millis(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def build_store(uri: str, *, max_entries: int = 100_000, timeout: float = 1.0) -> SingleUseStore:
    """A store for ``SECMW_TOKENS__STORAGE_URI``: ``memory://`` or a Redis URL."""
    if uri == "memory://":
        return MemorySingleUseStore(max_entries)
    return RedisSingleUseStore(uri, timeout=timeout)


class SingleUseTokens:
    """Tokens for one purpose (``"password-reset"``, ``"email-verification"``) that work once.

    Args:
        store: Where the token hashes live.
        purpose: Part of every key, so a token of one purpose never works for another.
        ttl: Lifetime in seconds.
    """

    def __init__(self, store: SingleUseStore, *, purpose: str, ttl: float) -> None:
        if not purpose or ttl <= 0:
            raise ValueError("purpose must be non-empty and ttl positive")
        self.store = store
        self.purpose = purpose
        self.ttl = ttl

    def key(self, token: str) -> str:
        """The store key of a token: its purpose and SHA-256, never the token itself."""
        return f"{self.purpose}:{hashlib.sha256(token.encode()).hexdigest()}"

    def issue(self, subject: str) -> str:
        """A new token for ``subject`` (send it to the user; it is not kept)."""
        token = secrets.token_urlsafe(32)
        self.store.put(self.key(token), subject, self.ttl)
        return token

    def consume(self, token: str) -> str | None:
        """The subject the token was issued for, once; None when unknown, used or expired."""
        if not _plausible(token):
            return None
        return self.store.consume(self.key(token))

    async def aissue(self, subject: str) -> str:
        """Async twin of :meth:`issue`."""
        token = secrets.token_urlsafe(32)
        await self.store.aput(self.key(token), subject, self.ttl)
        return token

    async def aconsume(self, token: str) -> str | None:
        """Async twin of :meth:`consume`."""
        if not _plausible(token):
            return None
        return await self.store.aconsume(self.key(token))

    def request(
        self,
        identifier: str,
        find: Callable[[str], str | None],
        deliver: Callable[[str, str], object],
    ) -> dict[str, str]:
        """Start a reset or verification: the same answer whether or not the account exists.

        Args:
            identifier: What the user typed (an email address).
            find: Maps the identifier to the account's subject, None when there is none.
            deliver: Called as ``deliver(identifier, token)`` for an existing account only. It
                should enqueue the message, not send it inline: a slow send would make the
                answer slower for existing accounts, and timing would tell them apart.

        Returns:
            :data:`REQUEST_ACCEPTED`, always.
        """
        subject = find(identifier)
        if subject is not None:
            deliver(identifier, self.issue(subject))
        return dict(REQUEST_ACCEPTED)

    async def arequest(
        self,
        identifier: str,
        find: Callable[[str], Any],
        deliver: Callable[[str, str], Any],
    ) -> dict[str, str]:
        """Async twin of :meth:`request`; ``find`` and ``deliver`` may be sync or async."""
        subject = await _maybe_await(find(identifier))
        if subject is not None:
            await _maybe_await(deliver(identifier, await self.aissue(subject)))
        return dict(REQUEST_ACCEPTED)


def _plausible(token: str) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


__all__ = [
    "REQUEST_ACCEPTED",
    "STORE_ERRORS",
    "MemorySingleUseStore",
    "RedisSingleUseStore",
    "SingleUseStore",
    "SingleUseTokens",
    "TokenStoreError",
    "build_store",
]
