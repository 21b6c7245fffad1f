"""Revocation stores: the memory store's API and the Redis store's configuration."""

from __future__ import annotations

import asyncio

import pytest

from secmw.auth.build import build_jwt_authenticator
from secmw.auth.settings import JWTSettings
from secmw.errors import ConfigurationError
from secmw.stores.revocation import MemoryRevocationStore, RedisRevocationStore
from tests.identity_support import FakeClock
from tests.support import SECRET


def test_memory_store_forgets_entries_at_their_expiry() -> None:
    """An entry lasts until the token's exp and is dropped when seen after it."""
    clock = FakeClock(100)
    store = MemoryRevocationStore(clock=clock)
    store.revoke("j", until=160)
    assert store.is_revoked("j")
    clock.advance(60)
    assert not store.is_revoked("j")
    assert "j" not in store._entries


def test_memory_store_is_bounded() -> None:
    """Past max_entries the oldest revocation is dropped."""
    store = MemoryRevocationStore(max_entries=2, clock=FakeClock(0))
    for jti in ("a", "b", "c"):
        store.revoke(jti, until=100)
    assert [store.is_revoked(j) for j in "abc"] == [False, True, True]


def test_memory_store_async_twins() -> None:
    """arevoke and ais_revoked share the same entries."""
    store = MemoryRevocationStore(clock=FakeClock(0))

    async def run() -> tuple[bool, bool]:
        await store.arevoke("x", 50)
        return await store.ais_revoked("x"), await store.ais_revoked("y")

    assert asyncio.run(run()) == (True, False)
    assert store.is_revoked("x")


def test_redis_store_needs_a_client() -> None:
    """A Redis store with no client at all is a programming error caught at construction."""
    with pytest.raises(ValueError, match="needs a sync or an async Redis client"):
        RedisRevocationStore()


def test_bad_revocation_url_names_the_variable() -> None:
    """A URL redis-py cannot read fails at startup naming SECMW_JWT__REVOCATION_URL."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__REVOCATION_URL"):
        build_jwt_authenticator(JWTSettings(secret=SECRET, revocation_url="http://nope"))


def test_revocation_store_without_lookup_methods_is_refused() -> None:
    """An object that cannot answer is_revoked/ais_revoked is refused when the verifier is built."""
    from secmw.auth.jwt import JWTAuthenticator

    with pytest.raises(ConfigurationError, match="SECMW_JWT__REVOCATION_URL"):
        JWTAuthenticator(SECRET, revocation=object())  # type: ignore[arg-type]
