"""Where refresh grants and single-use tokens live: a capped memory store or Redis.

Keys are ``<kind>:<id>`` (``refresh:<jti>``, ``password-reset:<sha256>``...). An entry may join a
group (the outstanding tokens of one account for one purpose), so that all of them can be
dropped at once. Every operation on one key is atomic (one Redis command, a lock in memory).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from secmw.errors import StoreUnavailable
from secmw.stores.redis import REDIS_ERRORS, async_client, sync_client

T = TypeVar("T")


class TokenStoreError(StoreUnavailable):
    """A store could not be reached; callers answer 503 and issue nothing.

    Raised around :class:`secmw.tokens.SingleUseTokens` and the issuer's store calls, whatever
    the backend (the Redis store raises nothing else). It is a
    :class:`secmw.errors.StoreUnavailable`, so one ``except StoreUnavailable`` covers the token
    and session stores alike.
    """


# A store backed by redis-py (a revocation store, say) fails with redis-py's errors; a stale
# revocation mirror whose policy refuses raises a StoreUnavailable of its own.
STORE_ERRORS: tuple[type[Exception], ...] = (StoreUnavailable, *REDIS_ERRORS)
"""Exceptions that mean "a store is unavailable" (answer 503, never 500)."""


class SingleUseStore(Protocol):
    """Entries with a time to live, consumed at most once, optionally in a group."""

    def put(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds, as a member of ``group``."""

    def consume(self, key: str) -> str | None:
        """Remove and return the value; None when absent or expired (atomically)."""

    def replace(self, key: str, value: str) -> str | None:
        """Swap the value of a live entry, keeping its expiry; return the old value, or None
        (and store nothing) when the entry is absent or expired (atomically)."""

    def discard_group(self, group: str) -> None:
        """Remove every entry of ``group``."""

    async def aput(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """Async twin of :meth:`put`."""

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume`."""

    async def areplace(self, key: str, value: str) -> str | None:
        """Async twin of :meth:`replace`."""

    async def adiscard_group(self, group: str) -> None:
        """Async twin of :meth:`discard_group`."""


class _Kind:
    """The entries of one kind with their own cap, and the groups among them."""

    def __init__(self) -> None:
        self.entries: OrderedDict[str, tuple[str, float, str | None]] = OrderedDict()
        self.groups: dict[str, set[str]] = {}

    def drop(self, key: str) -> tuple[str, float, str | None] | None:
        entry = self.entries.pop(key, None)
        if entry is not None and entry[2] is not None:
            members = self.groups.get(entry[2])
            if members is not None:
                members.discard(key)
                if not members:
                    del self.groups[entry[2]]
        return entry


class MemorySingleUseStore:
    """A per-process store, each kind of entry capped on its own (oldest dropped first).

    The kind is the key's text before its first ``:``: refresh grants, each single-use purpose
    and the decoys of unknown accounts each hold up to ``max_entries``, so a flood of one kind
    (reset requests, say) never evicts another (the refresh grants of signed-in users).
    Dropping an entry early only makes a token fail (closed): size the cap above the number of
    live tokens of a kind, and use Redis across processes.
    """

    def __init__(self, max_entries: int = 100_000, clock: Callable[[], float] = time.time) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._kinds: dict[str, _Kind] = {}
        self._max = max_entries
        self._clock = clock
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return sum(len(kind.entries) for kind in self._kinds.values())

    def keys(self) -> list[str]:
        """Every stored key (hashes and ids, never a token)."""
        return [key for kind in self._kinds.values() for key in kind.entries]

    def _kind(self, key: str) -> _Kind:
        name = key.partition(":")[0]
        kind = self._kinds.get(name)
        if kind is None:  # kinds are named by code (purposes), never by a client
            kind = self._kinds[name] = _Kind()
        return kind

    def put(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds, as a member of ``group``."""
        with self._lock:
            kind = self._kind(key)
            kind.drop(key)
            kind.entries[key] = (value, self._clock() + ttl, group)
            if group is not None:
                kind.groups.setdefault(group, set()).add(key)
            while len(kind.entries) > self._max:
                kind.drop(next(iter(kind.entries)))

    def consume(self, key: str) -> str | None:
        """Remove and return the value; None when absent or expired."""
        with self._lock:
            entry = self._kind(key).drop(key)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def replace(self, key: str, value: str) -> str | None:
        """Swap a live entry's value, keeping its expiry and group; the old value, or None."""
        with self._lock:
            kind = self._kind(key)
            entry = kind.entries.get(key)
            if entry is None or entry[1] <= self._clock():
                return None
            kind.entries[key] = (value, entry[1], entry[2])
            return entry[0]

    def discard_group(self, group: str) -> None:
        """Remove every entry of ``group``."""
        with self._lock:
            kind = self._kind(group)
            for key in list(kind.groups.get(group, ())):
                kind.drop(key)

    async def aput(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """Async twin of :meth:`put` (no I/O)."""
        self.put(key, value, ttl, group=group)

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume` (no I/O)."""
        return self.consume(key)

    async def areplace(self, key: str, value: str) -> str | None:
        """Async twin of :meth:`replace` (no I/O)."""
        return self.replace(key, value)

    async def adiscard_group(self, group: str) -> None:
        """Async twin of :meth:`discard_group` (no I/O)."""
        self.discard_group(group)


# A group is a set on one key: adding a member and moving its expiry, or reading and dropping
# it, is one script on that key (one hash slot in a Cluster), atomic on every deployment.
_JOIN = """
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
_POP = """
local members = redis.call('SMEMBERS', KEYS[1])
redis.call('DEL', KEYS[1])
return members
"""


class RedisSingleUseStore:
    """A store in Redis (>= 6.2 for ``GETDEL``; Valkey works), shared by every process.

    A group is a Redis set of its members' keys, expiring with its newest member; a member that
    expired before it stays listed until then (deleting it later is a no-op), so a group holds
    at most the tokens issued to one account within one lifetime.

    Args:
        url: A store URL (``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
            ``redis+sentinel://``, ``valkey://``: :mod:`secmw.stores.redis`).
        prefix: Key prefix, so the store can share a database.
        timeout: Connect and socket timeout in seconds: a stalled Redis fails the request (503),
            it never hangs it.
    """

    def __init__(self, url: str, *, prefix: str = "secmw:once:", timeout: float = 1.0) -> None:
        self.url = url
        self.prefix = prefix
        self.timeout = timeout
        self._sync = sync_client(url, timeout, "tokens.storage_uri")
        self._join, self._pop = (self._sync.register_script(lua) for lua in (_JOIN, _POP))
        self._async: Any = None

    def _aclient(self) -> Any:
        if self._async is None:  # created on first use, inside the serving event loop
            self._async = async_client(self.url, self.timeout, "tokens.storage_uri")
            self._ajoin, self._apop = (self._async.register_script(lua) for lua in (_JOIN, _POP))
        return self._async

    def put(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """``SET key value PX ttl``; with a group, ``SADD`` and ``PEXPIRE`` on the group first.

        The group and its members live in different hash slots (a token's key comes from the
        token alone), so the two steps are not one transaction, and their order keeps it safe:
        if the group cannot be written nothing is issued; a group naming a token whose ``SET``
        then failed only names a key that does not exist.
        """
        if group is not None:  # the group first: see above
            keys, args = [self.prefix + group], [key, _millis(ttl)]
            self._call(lambda: self._join(keys=keys, args=args))
        self._call(lambda: self._sync.set(self.prefix + key, value, px=_millis(ttl)))

    def consume(self, key: str) -> str | None:
        """``GETDEL key``: one atomic step, so a token is honoured once."""
        return _text(self._call(lambda: self._sync.getdel(self.prefix + key)))

    def replace(self, key: str, value: str) -> str | None:
        """``SET key value XX GET KEEPTTL``: one atomic step."""
        return _text(
            self._call(
                lambda: self._sync.set(self.prefix + key, value, xx=True, get=True, keepttl=True)
            )
        )

    def discard_group(self, group: str) -> None:
        """Read and delete the group's set in one transaction, then delete its members.

        Two round trips (the first a script on the group's key alone, so that it runs in one
        hash slot): a member consumed between them was used before the group was dropped
        (the same outcome as a use just before the call); a member added after it stays. In a
        Cluster the members' ``DEL`` is split by hash slot.
        """
        members = self._call(lambda: self._pop(keys=[self.prefix + group]))
        if members:
            self._call(lambda: self._sync.delete(*_keys(self.prefix, members)))

    async def aput(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        """Async twin of :meth:`put`."""
        client = self._aclient()
        if group is not None:
            await self._acall(self._ajoin(keys=[self.prefix + group], args=[key, _millis(ttl)]))
        await self._acall(client.set(self.prefix + key, value, px=_millis(ttl)))

    async def aconsume(self, key: str) -> str | None:
        """Async twin of :meth:`consume`."""
        return _text(await self._acall(self._aclient().getdel(self.prefix + key)))

    async def areplace(self, key: str, value: str) -> str | None:
        """Async twin of :meth:`replace`."""
        client = self._aclient()
        reply = client.set(self.prefix + key, value, xx=True, get=True, keepttl=True)
        return _text(await self._acall(reply))

    async def adiscard_group(self, group: str) -> None:
        """Async twin of :meth:`discard_group`."""
        client = self._aclient()
        members = await self._acall(self._apop(keys=[self.prefix + group]))
        if members:
            await self._acall(client.delete(*_keys(self.prefix, members)))

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
        try:
            return func()
        except REDIS_ERRORS as exc:
            raise TokenStoreError(f"redis unavailable ({type(exc).__name__})") from None

    @staticmethod
    async def _acall(awaitable: Awaitable[T]) -> T:
        try:
            return await awaitable
        except REDIS_ERRORS as exc:
            raise TokenStoreError(f"redis unavailable ({type(exc).__name__})") from None


def _millis(ttl: float) -> int:
    return max(1, int(ttl * 1000))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _keys(prefix: str, members: Any) -> list[str]:
    return [prefix + (m.decode() if isinstance(m, bytes) else str(m)) for m in members]


def build_store(uri: str, *, max_entries: int = 100_000, timeout: float = 1.0) -> SingleUseStore:
    """A store for ``tokens.storage_uri``: ``memory://`` or a Redis URL."""
    if uri == "memory://":
        return MemorySingleUseStore(max_entries)
    return RedisSingleUseStore(uri, timeout=timeout)


__all__ = [
    "STORE_ERRORS",
    "MemorySingleUseStore",
    "RedisSingleUseStore",
    "SingleUseStore",
    "TokenStoreError",
    "build_store",
]
