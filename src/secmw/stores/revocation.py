"""Revocation denylist: token ids (``jti``) and token families refused until their own expiry.

The JWT authenticator consults the store on every request, cached token or not, with one lookup
that covers the token's ``jti`` and, when it carries one, its family (the ``fam`` claim: every
token of one login, so a logout or a detected refresh-token replay refuses them all). Entries expire
when the token would have expired anyway, so the store never grows past the live tokens. Two
stores: :class:`MemoryRevocationStore` (one process) and :class:`RedisRevocationStore` (shared by
every process and machine; each entry is a key whose Redis TTL is the token's remaining life, and
each revocation is also published, so that a :class:`secmw.stores.mirror.RevocationMirror` in
every process hears of it at once). A store that cannot answer raises; the authenticator then
refuses with 503 (fail closed).
"""

from __future__ import annotations

import inspect
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from secmw.stores.redis import client_pair, is_cluster

if TYPE_CHECKING:
    import redis
    import redis.asyncio

DEFAULT_PREFIX = "secmw:revoked:"
CHANNEL_SUFFIX = "events"
"""The pub/sub channel of a prefix is ``prefix + "events"`` (a channel, not a key: SCAN never
meets it)."""
FAMILY_CLAIM = "fam"
"""The family of a token issued by :class:`secmw.tokens.TokenIssuer`: one id for the access and
refresh tokens of one login, revoked as a whole (logout, or a spent refresh token replayed)."""


def family_key(family: str) -> str:
    """The denylist entry of a revoked token family."""
    return f"family:{family}"


def denylist_ids(claims: Mapping[str, Any]) -> tuple[str, ...]:
    """The denylist entries that refuse a token: its ``jti``, then its family when it has one.

    Empty for a token without a ``jti`` (it cannot be revoked one by one).
    """
    jti = claims.get("jti")
    if not isinstance(jti, str):
        return ()
    family = claims.get(FAMILY_CLAIM)
    return (jti, family_key(family)) if isinstance(family, str) else (jti,)


def any_of(lookup: Callable[..., Any]) -> Callable[..., Any]:
    """``lookup`` as a function of several ids: itself when it takes ``*ids``, else a loop.

    A store written for one ``jti`` per call keeps working (one call per id); the stores here
    answer for several ids at once (one Redis round trip).
    """
    try:
        parameters = inspect.signature(lookup).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature: call it id by id
        parameters = ()  # type: ignore[assignment]
    if any(p.kind is inspect.Parameter.VAR_POSITIONAL for p in parameters):
        return lookup
    if inspect.iscoroutinefunction(lookup):

        async def each_async(*ids: str) -> bool:
            for one in ids:
                if await lookup(one):
                    return True
            return False

        return each_async

    def each(*ids: str) -> Any:
        return any(lookup(one) for one in ids)

    return each


class RevocationStore(Protocol):
    """Where revoked token ids live (sync side; WSGI and helpers)."""

    def revoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until the UNIX time ``until`` (the token's ``exp``)."""

    def is_revoked(self, *ids: str) -> bool:
        """True while any of ``ids`` is on the denylist (a ``jti``, a :func:`family_key`)."""


class AsyncRevocationStore(Protocol):
    """The async twin of :class:`RevocationStore` (ASGI side)."""

    async def arevoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until the UNIX time ``until``."""

    async def ais_revoked(self, *ids: str) -> bool:
        """True while any of ``ids`` is on the denylist."""


class MemoryRevocationStore:
    """A per-process denylist with a size cap (oldest entries dropped first past ``max_entries``).

    Dropping an entry early re-admits a revoked token, so size the cap above the number of tokens
    you expect to revoke within one access-token lifetime; use Redis across processes.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        self._entries: OrderedDict[str, float] = OrderedDict()
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def revoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until ``until``."""
        with self._lock:
            self._entries[jti] = until
            self._entries.move_to_end(jti)
            while len(self._entries) > self._max:
                self._entries.popitem(last=False)

    def is_revoked(self, *ids: str) -> bool:
        """True while any of ``ids`` is on the denylist (expired entries are dropped on sight)."""
        return any(self._listed(one) for one in ids)

    def _listed(self, key: str) -> bool:
        until = self._entries.get(key)
        if until is None:
            return False
        if until <= self._clock():
            with self._lock:
                self._entries.pop(key, None)
            return False
        return True

    async def arevoke(self, jti: str, until: float) -> None:
        """Async twin of :meth:`revoke` (no I/O)."""
        self.revoke(jti, until)

    async def ais_revoked(self, *ids: str) -> bool:
        """Async twin of :meth:`is_revoked` (no I/O)."""
        return self.is_revoked(*ids)


class RedisRevocationStore:
    """The denylist in Redis: one key per revoked ``jti`` or family, expiring with the token.

    Give a sync client (redis-py, for WSGI), an async client (``redis.asyncio``, for ASGI), or
    both; :meth:`from_url` builds both with short timeouts, so a Redis outage turns into a quick
    503 rather than a hung request. Redis errors propagate: the authenticator refuses the token.

    Every revocation is written and published in one round trip (``SET`` with the remaining
    life in milliseconds, ``PUBLISH`` of ``"<milliseconds> <id>"`` on :attr:`channel`): the
    message carries a duration, not a time, so processes whose clocks disagree still agree on
    how long an entry lasts.

    Args:
        client: A ``redis.Redis`` (sync methods).
        async_client: A ``redis.asyncio.Redis`` (async methods).
        prefix: Key prefix (``secmw:revoked:``).
        clock: UNIX time source for the TTL computation.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        async_client: redis.asyncio.Redis | None = None,
        *,
        prefix: str = DEFAULT_PREFIX,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if client is None and async_client is None:
            raise ValueError("RedisRevocationStore needs a sync or an async Redis client")
        self._client = client
        self._async = async_client
        self.prefix = prefix
        self.channel = prefix + CHANNEL_SUFFIX
        self._clock = clock

    @classmethod
    def from_url(
        cls, url: str, *, timeout: float = 0.5, prefix: str = DEFAULT_PREFIX
    ) -> RedisRevocationStore:
        """Both clients for ``url`` (any scheme of :mod:`secmw.stores.redis`), bounded timeouts."""
        return cls(*client_pair(url, timeout), prefix=prefix)

    @property
    def has_async(self) -> bool:
        """Whether an async client is configured (the async methods work)."""
        return self._async is not None

    def _ttl_ms(self, until: float) -> int:
        return math.ceil((until - self._clock()) * 1000)

    def revoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until ``until`` (nothing to store when that is already past)."""
        ttl = self._ttl_ms(until)
        if ttl <= 0:
            return
        client = self._sync()
        key, message = self.prefix + jti, announcement(jti, ttl)
        if is_cluster(client):  # a keyless PUBLISH has no slot to share with the key
            client.set(key, b"1", px=ttl)
            client.publish(self.channel, message)
            return
        pipe = client.pipeline(transaction=False)
        pipe.set(key, b"1", px=ttl)
        pipe.publish(self.channel, message)
        pipe.execute()

    def is_revoked(self, *ids: str) -> bool:
        """True while any of ``ids`` is on the denylist: one ``EXISTS`` for all of them."""
        return bool(self._sync().exists(*(self.prefix + one for one in ids)))

    async def arevoke(self, jti: str, until: float) -> None:
        """Async twin of :meth:`revoke`."""
        ttl = self._ttl_ms(until)
        if ttl <= 0:
            return
        client = self._asynchronous()
        key, message = self.prefix + jti, announcement(jti, ttl)
        if is_cluster(client):
            await client.set(key, b"1", px=ttl)
            await client.publish(self.channel, message)
            return
        pipe = client.pipeline(transaction=False)
        pipe.set(key, b"1", px=ttl)
        pipe.publish(self.channel, message)
        await pipe.execute()

    async def ais_revoked(self, *ids: str) -> bool:
        """Async twin of :meth:`is_revoked`."""
        return bool(await self._asynchronous().exists(*(self.prefix + one for one in ids)))

    def subscription(self) -> Any:
        """A redis-py ``PubSub`` on the sync client, not yet subscribed to :attr:`channel`."""
        return self._sync().pubsub()

    def entries(self, batch: int = 1000) -> dict[str, float]:
        """Every entry with its remaining life in seconds (``SCAN`` then ``PTTL`` by batches):
        what a mirror loads when it (re)connects."""
        client = self._sync()
        found: dict[str, float] = {}
        keys: list[bytes] = []
        for key in client.scan_iter(match=_glob_escape(self.prefix) + "*", count=batch):
            keys.append(key)
            if len(keys) >= batch:
                found.update(self._remaining(client, keys))
                keys = []
        if keys:
            found.update(self._remaining(client, keys))
        return found

    def _remaining(self, client: Any, keys: list[bytes]) -> dict[str, float]:
        pipe = client.pipeline(transaction=False)
        for key in keys:
            pipe.pttl(key)
        start = len(self.prefix)
        return {
            key.decode()[start:]: ttl / 1000
            for key, ttl in zip(keys, pipe.execute(), strict=True)
            if isinstance(ttl, int) and ttl > 0  # -2: expired meanwhile; -1: never written so
        }

    def close(self) -> None:
        """Disconnect the sync client's connections."""
        if self._client is not None:
            self._client.close()

    async def aclose(self) -> None:
        """Close the async client (and the sync one)."""
        if self._async is not None:
            await self._async.aclose()
        self.close()

    def _sync(self) -> redis.Redis:
        if self._client is None:
            raise RuntimeError("no synchronous Redis client configured")
        return self._client

    def _asynchronous(self) -> redis.asyncio.Redis:
        if self._async is None:
            raise RuntimeError("no asynchronous Redis client configured")
        return self._async


def announcement(key: str, ttl_ms: int) -> str:
    """The pub/sub message of a revocation: its remaining life in milliseconds, then the id."""
    return f"{ttl_ms} {key}"


def read_announcement(data: bytes | str) -> tuple[str, float] | None:
    """``(id, remaining seconds)`` of a message, None for one that is not an announcement."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    ttl, _, key = text.partition(" ")
    if not key or not ttl.isdigit():
        return None
    return key, int(ttl) / 1000


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
