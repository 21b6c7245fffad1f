"""The verified-token cache: a signature and claim check paid once per token, not once per request.

A client that sends the same bearer token on every request should pay for the signature check
once. The cache maps a token (by its 128-bit BLAKE2b digest, so no token text is held) to what the
check decided:

- a success (a :class:`Principal`) is kept until the token's own ``exp`` and never past it; a
  token without ``exp`` is not cached at all;
- a failure (a 401 :class:`Deny`) is kept only ``negative_ttl`` seconds, so a flood of one bad
  token costs one check per few seconds, while nothing wrong is remembered for long.

Successes and failures live in two separate LRUs: random garbage tokens sent by an attacker can
only evict other failures, never the entries of well-behaved clients. Each entry records the key
set generation it was checked against; when the key set changes (rotation), older entries are
misses. The revocation denylist is not part of the cache: the authenticator consults it on every
request, hit or miss.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from secmw import metrics
from secmw.core.deny import Deny
from secmw.core.principal import Principal

Entry = tuple[float, int, Principal | Deny]  # (expires_at, generation, result)


def _touch(table: OrderedDict[bytes, Entry], key: bytes) -> None:
    """Mark ``key`` as recently used (no lock: single dict operations are atomic)."""
    try:  # noqa: SIM105 (contextlib.suppress costs an object per hit)
        table.move_to_end(key)
    except KeyError:  # evicted by another thread in between: the answer read is still valid
        pass


def _digest(token: str | bytes) -> bytes:
    # 128 bits: finding a token with the digest of another client's token is a second preimage
    # (2**128 work), not a birthday collision; BLAKE2b is the quickest such hash in hashlib.
    # A token's octets as received and its UTF-8 text give one digest whenever the token is
    # ASCII, as every token that verifies is.
    # (The first 16 bytes of the 64-byte digest: parsing ``digest_size=16`` costs more per call
    # than the slice.)
    if isinstance(token, str):
        token = token.encode("utf-8", "surrogatepass")
    return hashlib.blake2b(token).digest()[:16]


class TokenCache:
    """A bounded, thread-safe LRU of verification results.

    Args:
        max_entries: Cap on cached successes (0 disables the cache).
        negative_ttl: Seconds a failure is remembered (0: failures are not cached).
        max_negative: Cap on cached failures; default an eighth of ``max_entries`` (at least 16).
        clock: UNIX time source; the same one the ``exp`` values are compared with.
        name: The cache's label in metrics (``jwt``, ``introspection``).
    """

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        negative_ttl: float = 5.0,
        max_negative: int | None = None,
        clock: Callable[[], float] = time.time,
        name: str = "jwt",
    ) -> None:
        self.name = name
        self.max_entries = max(0, max_entries)
        self.negative_ttl = max(0.0, negative_ttl)
        self.max_negative = (
            max(16, self.max_entries // 8) if max_negative is None else max(0, max_negative)
        )
        self._clock = clock
        self._ok: OrderedDict[bytes, Entry] = OrderedDict()
        self._failed: OrderedDict[bytes, Entry] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._ok) + len(self._failed)

    @property
    def enabled(self) -> bool:
        """False when the cache was configured with ``max_entries=0``."""
        return self.max_entries > 0

    def get(self, token: str, generation: int = 0) -> Principal | Deny | None:
        """The cached result for ``token`` checked against key set ``generation``, else None."""
        if not self.max_entries:
            return None
        result = self._lookup(token, generation)
        metrics.count_token_cache(result is not None, self.name)
        return result

    def principal(self, token: str | bytes) -> Principal | None:
        """The cached success for ``token`` (key set generation 0), else None; only hits are
        counted, so a caller that goes on to :meth:`get` on a miss counts it once. ``token`` may
        be the octets as received: an ASCII token has the same digest either way, and no other
        kind is ever cached as a success."""
        if not self.max_entries:
            return None
        key = _digest(token)
        entry = self._ok.get(key)
        if entry is None or entry[1] or entry[0] <= self._clock():
            return None  # absent, of another key set, or expired: ``get`` decides and cleans up
        _touch(self._ok, key)
        metrics.count_token_cache(True, self.name)
        return entry[2]  # type: ignore[return-value]

    def _lookup(self, token: str, generation: int) -> Principal | Deny | None:
        key = _digest(token)
        table = self._ok
        entry = table.get(key)  # single dict operations are atomic: no lock on the hit path
        if entry is None:
            table = self._failed
            entry = table.get(key)
            if entry is None:
                return None
        expires_at, entry_generation, result = entry
        if expires_at <= self._clock() or entry_generation != generation:
            with self._lock:
                if table.get(key) == entry:  # not replaced meanwhile
                    del table[key]
            return None
        _touch(table, key)
        return result

    def put(
        self,
        token: str,
        result: Principal | Deny,
        *,
        expires_at: float | None,
        generation: int = 0,
    ) -> None:
        """Remember a result.

        Args:
            token: The token as presented.
            result: A principal, or a 401 denial (other denials, such as 503, are never cached:
                they say nothing about the token).
            expires_at: For a principal, the UNIX time after which the token is no longer valid
                (its ``exp``, or earlier); None means "do not cache". Ignored for denials.
            generation: The key set generation the token was checked against.
        """
        if not self.max_entries:
            return
        now = self._clock()
        if isinstance(result, Principal):
            if expires_at is None or expires_at <= now:
                return
            table, cap, until = self._ok, self.max_entries, expires_at
        else:
            if result.status != 401 or not self.negative_ttl or not self.max_negative:
                return
            table, cap, until = self._failed, self.max_negative, now + self.negative_ttl
        key = _digest(token)
        with self._lock:
            table[key] = (until, generation, result)
            table.move_to_end(key)
            while len(table) > cap:
                table.popitem(last=False)

    def discard(self, token: str) -> None:
        """Forget ``token`` (both successes and failures)."""
        key = _digest(token)
        with self._lock:
            self._ok.pop(key, None)
            self._failed.pop(key, None)

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._ok.clear()
            self._failed.clear()


__all__ = ["TokenCache"]
