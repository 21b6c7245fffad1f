"""Single-use tokens (password reset, email verification).

A token is 32 random bytes handed to the user once; the store keeps only its SHA-256 (a leaked
store yields no usable token: the tokens have 256 bits of entropy, so a fast hash suffices) with
the subject it was issued for and an expiry. Consuming is atomic (one ``GETDEL`` in Redis, a
lock in memory), so two concurrent requests with the same token cannot both succeed. Using a
token drops the subject's other outstanding tokens of its purpose: after a reset with the newest
link, an older link in the same mailbox no longer sets the password.

A request for an unknown account does the same work as one for an existing account (a token is
drawn, hashed and written with the same commands) under a key no token ever maps to, so neither
the time taken nor a store outage tells the two apart.
"""

from __future__ import annotations

import hashlib
import inspect
import secrets
from collections.abc import Callable
from typing import Any

from secmw.tokens.stores import (
    STORE_ERRORS,
    MemorySingleUseStore,
    RedisSingleUseStore,
    SingleUseStore,
    TokenStoreError,
    build_store,
)

MAX_TOKEN_CHARS = 128  # longer input is refused before hashing
REQUEST_ACCEPTED = {"message": "If the account exists, a message has been sent to it."}
"""The one answer of a reset or verification request, whether or not the account exists."""
DECOY = "decoy:"
"""Key prefix of the entries written for unknown accounts: no token's key starts with it."""


def subject_group(purpose: str, subject: str) -> str:
    """The group of a subject's outstanding tokens of one purpose (the subject hashed)."""
    return f"{purpose}:subject:{hashlib.sha256(subject.encode()).hexdigest()}"


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

    def group(self, subject: str) -> str:
        """The store group of ``subject``'s outstanding tokens of this purpose."""
        return subject_group(self.purpose, subject)

    def issue(self, subject: str) -> str:
        """A new token for ``subject`` (send it to the user; it is not kept).

        Raises:
            TokenStoreError: the store is down.
        """
        token = secrets.token_urlsafe(32)
        self.store.put(self.key(token), subject, self.ttl, group=self.group(subject))
        return token

    def consume(self, token: str) -> str | None:
        """The subject the token was issued for, once; None when unknown, used or expired.

        A token that works drops the subject's other outstanding tokens of this purpose.

        Raises:
            TokenStoreError: the store is down.
        """
        if not _plausible(token):
            return None
        subject = self.store.consume(self.key(token))
        if subject is not None:
            self.store.discard_group(self.group(subject))
        return subject

    def revoke_all(self, subject: str) -> None:
        """Drop every outstanding token of this purpose for ``subject`` (on a password change,
        say: a reset link mailed before it must not set the password after it).

        Raises:
            TokenStoreError: the store is down.
        """
        self.store.discard_group(self.group(subject))

    async def aissue(self, subject: str) -> str:
        """Async twin of :meth:`issue`."""
        token = secrets.token_urlsafe(32)
        await self.store.aput(self.key(token), subject, self.ttl, group=self.group(subject))
        return token

    async def aconsume(self, token: str) -> str | None:
        """Async twin of :meth:`consume`."""
        if not _plausible(token):
            return None
        subject = await self.store.aconsume(self.key(token))
        if subject is not None:
            await self.store.adiscard_group(self.group(subject))
        return subject

    async def arevoke_all(self, subject: str) -> None:
        """Async twin of :meth:`revoke_all`."""
        await self.store.adiscard_group(self.group(subject))

    def _decoy(self, identifier: str) -> tuple[str, str]:
        # What issue() writes, under keys no token maps to: an unknown account costs the same
        # time and fails the same way when the store is down.
        key = DECOY + self.key(secrets.token_urlsafe(32))
        return key, DECOY + self.group(identifier)

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
            :data:`REQUEST_ACCEPTED`, for an existing account and an unknown one alike.

        Raises:
            TokenStoreError: the store is down, for an existing account and an unknown one
                alike (answer 503 to both).
        """
        subject = find(identifier)
        if subject is None:
            key, group = self._decoy(identifier)
            self.store.put(key, "", self.ttl, group=group)
        else:
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
        if subject is None:
            key, group = self._decoy(identifier)
            await self.store.aput(key, "", self.ttl, group=group)
        else:
            await _maybe_await(deliver(identifier, await self.aissue(subject)))
        return dict(REQUEST_ACCEPTED)


def _plausible(token: str) -> bool:
    return isinstance(token, str) and 0 < len(token) <= MAX_TOKEN_CHARS


async def _maybe_await(value: Any) -> Any:
    return await value if inspect.isawaitable(value) else value


__all__ = [
    "DECOY",
    "REQUEST_ACCEPTED",
    "STORE_ERRORS",
    "MemorySingleUseStore",
    "RedisSingleUseStore",
    "SingleUseStore",
    "SingleUseTokens",
    "TokenStoreError",
    "build_store",
    "subject_group",
]
