"""The verified-token cache: bounded, never past exp, short negative TTL, denylist on every hit."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secmw.auth.base import Credential
from secmw.auth.cache import TokenCache
from secmw.auth.jwt import JWTAuthenticator
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.stores.revocation import MemoryRevocationStore
from tests.identity_support import FakeClock
from tests.support import SECRET, make_token

ALICE = Principal("alice", "bearer")
BAD = Deny(401, "signature invalid", "invalid_token")


def test_hit_until_exp_then_miss() -> None:
    """A success is served until the token's exp, and not one moment after."""
    clock = FakeClock(1000)
    cache = TokenCache(clock=clock)
    cache.put("t", ALICE, expires_at=1060)
    clock.advance(59.9)
    assert cache.get("t") is ALICE
    clock.advance(0.1)
    assert cache.get("t") is None
    assert len(cache) == 0


@pytest.mark.parametrize(
    ("expires_at", "cached"),
    [(None, False), (999.0, False), (1000.0, False), (1001.0, True)],
    ids=["no-exp", "already-expired", "expires-now", "future"],
)
def test_only_unexpired_successes_are_cached(expires_at: float | None, cached: bool) -> None:
    """Without an exp, or with one already past, nothing is kept."""
    cache = TokenCache(clock=FakeClock(1000))
    cache.put("t", ALICE, expires_at=expires_at)
    assert (cache.get("t") is not None) is cached


def test_failure_kept_only_for_negative_ttl() -> None:
    """A 401 is remembered for negative_ttl seconds, whatever the token claims."""
    clock = FakeClock()
    cache = TokenCache(negative_ttl=5, clock=clock)
    cache.put("bad", BAD, expires_at=None)
    clock.advance(4.9)
    assert cache.get("bad") == BAD
    clock.advance(0.1)
    assert cache.get("bad") is None


@pytest.mark.parametrize(
    "deny",
    [Deny(503, "signing keys unavailable"), Deny(400, "bearer token missing"), Deny(429, "slow")],
    ids=["503", "400", "429"],
)
def test_non_401_denials_are_never_cached(deny: Deny) -> None:
    """An outage or a throttle says nothing about the token: not remembered."""
    cache = TokenCache(clock=FakeClock())
    cache.put("t", deny, expires_at=None)
    assert cache.get("t") is None


def test_generation_change_voids_entries() -> None:
    """Entries checked against an older key set are misses (key rotation)."""
    cache = TokenCache(clock=FakeClock())
    cache.put("t", ALICE, expires_at=2000, generation=1)
    assert cache.get("t", generation=1) is ALICE
    assert cache.get("t", generation=2) is None


def test_lru_is_bounded_and_keeps_recent_entries() -> None:
    """Past max_entries the least recently used success goes first."""
    cache = TokenCache(3, clock=FakeClock())
    for name in "abc":
        cache.put(name, ALICE, expires_at=9999)
    assert cache.get("a") is ALICE  # a is now the most recent
    cache.put("d", ALICE, expires_at=9999)
    assert [cache.get(n) is not None for n in "abcd"] == [True, False, True, True]


def test_failures_cannot_evict_successes() -> None:
    """A flood of distinct bad tokens fills only the (smaller) failure LRU."""
    cache = TokenCache(100, clock=FakeClock())
    cache.put("good", ALICE, expires_at=9999)
    for n in range(10_000):
        cache.put(f"junk-{n}", BAD, expires_at=None)
    assert cache.get("good") is ALICE
    assert len(cache) == 1 + cache.max_negative
    assert cache.max_negative == 16


def test_size_zero_disables_the_cache() -> None:
    """max_entries=0 stores nothing."""
    cache = TokenCache(0, clock=FakeClock())
    cache.put("t", ALICE, expires_at=9999)
    assert (cache.enabled, cache.get("t")) == (False, None)


def test_tokens_are_not_kept_in_clear() -> None:
    """The cache holds digests, not token text."""
    cache = TokenCache(clock=FakeClock())
    token = make_token()
    cache.put(token, ALICE, expires_at=9999)
    keys = list(cache._ok)
    assert len(keys) == 1
    assert isinstance(keys[0], bytes)
    assert len(keys[0]) == 16
    assert token.encode() not in keys[0]
    assert keys[0] not in token.encode()
    cache.discard(token)
    assert cache.get(token) is None


# -- wired into the JWT authenticator -----------------------------------------------------------


def counting(auth: JWTAuthenticator) -> list[int]:
    """Count signature checks by wrapping PyJWT's decode."""
    calls = [0]
    original = auth._decoder.decode

    def decode(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return original(*args, **kwargs)

    auth._decoder.decode = decode  # type: ignore[method-assign]
    return calls


def verify(auth: JWTAuthenticator, token: str) -> Principal | Deny:
    return auth.verify(Credential("bearer", token))


def test_same_token_pays_the_signature_check_once() -> None:
    """100 requests with one token: one decode; a second token: one more."""
    auth = JWTAuthenticator(SECRET)
    calls = counting(auth)
    token = make_token(scope="a b")
    results = [verify(auth, token) for _ in range(100)]
    assert calls[0] == 1
    assert all(isinstance(r, Principal) and r.scopes == {"a", "b"} for r in results)
    verify(auth, make_token(sub="other"))
    assert calls[0] == 2


def test_bad_token_is_rechecked_after_the_negative_ttl() -> None:
    """A refused token costs one decode per negative_ttl, and stays refused."""
    clock = FakeClock(0)
    auth = JWTAuthenticator(SECRET, negative_ttl=5, clock=clock)
    calls = counting(auth)
    forged = make_token("x" * 32)
    for _ in range(10):
        assert isinstance(verify(auth, forged), Deny)
    assert calls[0] == 1
    clock.advance(5)
    assert isinstance(verify(auth, forged), Deny)
    assert calls[0] == 2


def test_cache_size_zero_checks_every_time() -> None:
    """With the cache off every request pays the check."""
    auth = JWTAuthenticator(SECRET, cache_size=0)
    calls = counting(auth)
    token = make_token()
    for _ in range(3):
        verify(auth, token)
    assert calls[0] == 3


def test_revocation_is_consulted_on_every_cached_request() -> None:
    """Revoking a jti refuses the next request even though the token is cached."""
    store = MemoryRevocationStore()
    auth = JWTAuthenticator(SECRET, revocation=store)
    token = make_token(jti="t-1")
    assert isinstance(verify(auth, token), Principal)
    store.revoke("t-1", until=2**31)
    result = verify(auth, token)
    assert isinstance(result, Deny)
    assert (result.status, result.detail) == (401, "token revoked")
    assert isinstance(verify(auth, make_token(jti="t-2")), Principal)


def test_async_path_caches_and_checks_revocation() -> None:
    """averify shares the cache and uses the store's async twin."""
    store = MemoryRevocationStore()
    auth = JWTAuthenticator(SECRET, revocation=store)
    calls = counting(auth)
    token = make_token(jti="a-1")

    async def run() -> list[Principal | Deny]:
        first = await auth.averify(Credential("bearer", token))
        await store.arevoke("a-1", 2**31)
        second = await auth.averify(Credential("bearer", token))
        return [first, second]

    first, second = asyncio.run(run())
    assert isinstance(first, Principal)
    assert isinstance(second, Deny)
    assert second.detail == "token revoked"
    assert calls[0] == 1


class _BrokenStore:
    def revoke(self, jti: str, until: float) -> None:
        raise ConnectionError("down")

    async def arevoke(self, jti: str, until: float) -> None:
        raise ConnectionError("down")

    def is_revoked(self, jti: str) -> bool:
        raise ConnectionError("down")

    async def ais_revoked(self, jti: str) -> bool:
        raise ConnectionError("down")


def test_unreachable_denylist_is_503_not_a_pass() -> None:
    """A store that cannot answer refuses the token with 503 (fail closed), sync and async."""
    auth = JWTAuthenticator(SECRET, revocation=_BrokenStore())
    token = make_token(jti="j")
    sync = verify(auth, token)
    asynchronous = asyncio.run(auth.averify(Credential("bearer", token)))
    for result in (sync, asynchronous):
        assert isinstance(result, Deny)
        assert (result.status, result.code) == (503, "temporarily_unavailable")


def test_tokens_without_jti_skip_the_denylist_unless_required() -> None:
    """No jti, nothing to look up; require=("exp", "jti") refuses such tokens instead."""
    auth = JWTAuthenticator(SECRET, revocation=_BrokenStore())
    assert isinstance(verify(auth, make_token()), Principal)
    strict = JWTAuthenticator(SECRET, revocation=MemoryRevocationStore(), require=("exp", "jti"))
    result = verify(strict, make_token())
    assert isinstance(result, Deny)
    assert result.detail == "token lacks a required claim"
