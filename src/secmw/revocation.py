"""Revocation denylist: token ids (``jti``) refused until their own expiry.

The JWT authenticator consults the store on every request, cached token or not. Entries expire
when the token would have expired anyway, so the store never grows past the live tokens.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol


class RevocationStore(Protocol):
    """Where revoked token ids live (sync side; WSGI and helpers)."""

    def revoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until the UNIX time ``until`` (the token's ``exp``)."""

    def is_revoked(self, jti: str) -> bool:
        """True while ``jti`` is on the denylist."""


class AsyncRevocationStore(Protocol):
    """The async twin of :class:`RevocationStore` (ASGI side)."""

    async def arevoke(self, jti: str, until: float) -> None:
        """Refuse ``jti`` until the UNIX time ``until``."""

    async def ais_revoked(self, jti: str) -> bool:
        """True while ``jti`` is on the denylist."""


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

    def is_revoked(self, jti: str) -> bool:
        """True while ``jti`` is on the denylist (expired entries are dropped on sight)."""
        until = self._entries.get(jti)
        if until is None:
            return False
        if until <= self._clock():
            with self._lock:
                self._entries.pop(jti, None)
            return False
        return True

    async def arevoke(self, jti: str, until: float) -> None:
        """Async twin of :meth:`revoke` (no I/O)."""
        self.revoke(jti, until)

    async def ais_revoked(self, jti: str) -> bool:
        """Async twin of :meth:`is_revoked` (no I/O)."""
        return self.is_revoked(jti)
