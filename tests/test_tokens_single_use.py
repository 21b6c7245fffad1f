"""Single-use tokens (password reset, email verification) in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import hashlib
import threading
from collections.abc import Iterator

import pytest
import redis

from secmw.tokens import (
    REQUEST_ACCEPTED,
    Account,
    IssuedTokens,
    MemorySingleUseStore,
    OAuthError,
    RedisSingleUseStore,
    SingleUseTokens,
    TokenIssuer,
    TokenStoreError,
)
from secmw.tokens.onetime import build_store
from tests.redis_support import free_port
from tests.support import SECRET


class Clock:
    """A settable UNIX clock."""

    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_token_works_exactly_once() -> None:
    """Issue, consume once (the subject comes back), then never again."""
    reset = SingleUseTokens(MemorySingleUseStore(), purpose="password-reset", ttl=3600)
    token = reset.issue("alice")
    assert len(token) >= 43  # 32 random bytes
    assert reset.consume(token) == "alice"
    assert reset.consume(token) is None


def test_only_a_hash_is_stored() -> None:
    """The store holds the SHA-256 of the token under its purpose, never the token."""
    store = MemorySingleUseStore()
    token = SingleUseTokens(store, purpose="email-verification", ttl=60).issue("bob")
    assert store.keys() == [f"email-verification:{hashlib.sha256(token.encode()).hexdigest()}"]
    assert token not in repr(store._kinds["email-verification"].entries)


def test_purposes_do_not_mix() -> None:
    """A verification token is no reset token, even in the same store."""
    store = MemorySingleUseStore()
    verify = SingleUseTokens(store, purpose="email-verification", ttl=60)
    reset = SingleUseTokens(store, purpose="password-reset", ttl=60)
    token = verify.issue("bob")
    assert reset.consume(token) is None
    assert verify.consume(token) == "bob"


def test_tokens_expire() -> None:
    """Past its ttl (injected clock) a token is refused."""
    clock = Clock()
    reset = SingleUseTokens(MemorySingleUseStore(clock=clock), purpose="r", ttl=3600)
    token = reset.issue("alice")
    clock.now += 3600
    assert reset.consume(token) is None


def test_memory_store_is_capped() -> None:
    """Past `max_entries` the oldest token is dropped (it then simply fails)."""
    store = MemorySingleUseStore(max_entries=2)
    reset = SingleUseTokens(store, purpose="r", ttl=60)
    first, second, third = (reset.issue(name) for name in ("a", "b", "c"))
    assert len(store) == 2
    assert reset.consume(first) is None
    assert (reset.consume(second), reset.consume(third)) == ("b", "c")


@pytest.mark.parametrize("token", ["", "x" * 129, "not-issued"], ids=["empty", "long", "unknown"])
def test_implausible_tokens_are_refused(token: str) -> None:
    """Empty, oversized and unknown tokens are None, not errors."""
    reset = SingleUseTokens(MemorySingleUseStore(), purpose="r", ttl=60)
    assert reset.consume(token) is None
    assert asyncio.run(reset.aconsume(token)) is None


def test_concurrent_consumers_get_one_success() -> None:
    """Twenty threads race one token in memory: exactly one gets the subject."""
    reset = SingleUseTokens(MemorySingleUseStore(), purpose="r", ttl=60)
    token = reset.issue("alice")
    barrier = threading.Barrier(20, timeout=10)
    results: list[str | None] = []

    def race() -> None:
        barrier.wait()
        results.append(reset.consume(token))

    threads = [threading.Thread(target=race) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results.count("alice") == 1
    assert results.count(None) == 19


def test_request_flow_answers_the_same_either_way() -> None:
    """Known and unknown accounts get the same answer; only a known one gets a message."""
    reset = SingleUseTokens(MemorySingleUseStore(), purpose="password-reset", ttl=3600)
    accounts = {"alice@example.test": "alice"}
    outbox: list[tuple[str, str]] = []

    def deliver(address: str, token: str) -> None:
        outbox.append((address, token))

    known = reset.request("alice@example.test", accounts.get, deliver)
    unknown = reset.request("mallory@example.test", accounts.get, deliver)
    assert known == unknown == REQUEST_ACCEPTED
    assert [address for address, _ in outbox] == ["alice@example.test"]
    assert reset.consume(outbox[0][1]) == "alice"


def test_async_request_flow_with_async_callbacks() -> None:
    """`arequest` awaits async `find` and `deliver`; the token then works once."""
    reset = SingleUseTokens(MemorySingleUseStore(), purpose="password-reset", ttl=3600)
    outbox: list[str] = []

    async def find(address: str) -> str | None:
        return {"alice@example.test": "alice"}.get(address)

    async def deliver(address: str, token: str) -> None:
        outbox.append(token)

    async def scenario() -> None:
        assert await reset.arequest("nobody@example.test", find, deliver) == REQUEST_ACCEPTED
        assert await reset.arequest("alice@example.test", find, deliver) == REQUEST_ACCEPTED
        assert len(outbox) == 1
        assert await reset.aconsume(outbox[0]) == "alice"
        assert await reset.aconsume(outbox[0]) is None

    asyncio.run(scenario())


def test_issuer_provides_reset_and_verification_tokens() -> None:
    """The issuer's reset and verification tokens use its store and configured lifetimes."""
    issuer = TokenIssuer(jwt={"secret": SECRET}, tokens={"reset_ttl": 600})
    reset, verification = issuer.password_reset_tokens(), issuer.verification_tokens()
    assert (reset.ttl, verification.ttl) == (600, 86_400)
    assert reset.store is issuer.store is verification.store
    assert reset.consume(verification.issue("x")) is None


# -- a real Redis (`redis_url`: tests/redis_support.py) ------------------------------------------


@pytest.fixture
def redis_store(redis_url: str, request: pytest.FixtureRequest) -> Iterator[RedisSingleUseStore]:
    """A store with a per-test key prefix."""
    store = RedisSingleUseStore(redis_url, prefix=f"test:{request.node.name}:")
    yield store
    store.close()


@pytest.mark.redis
def test_redis_store_consumes_once_and_keeps_only_hashes(
    redis_store: RedisSingleUseStore, redis_url: str
) -> None:
    """In Redis: one hashed key with a TTL (and the account's group of hashes), consumed once by
    GETDEL."""
    reset = SingleUseTokens(redis_store, purpose="password-reset", ttl=3600)
    token = reset.issue("alice")
    client = redis.Redis.from_url(redis_url)
    keys = sorted(client.keys(redis_store.prefix + "*"))
    digest = hashlib.sha256(token.encode()).hexdigest()
    group = f"{redis_store.prefix}{reset.group('alice')}".encode()
    assert keys == sorted([f"{redis_store.prefix}password-reset:{digest}".encode(), group])
    assert b"alice" not in group
    assert token.encode() not in b"".join(client.smembers(group))
    assert all(0 < client.pttl(key) <= 3_600_000 for key in keys)
    assert reset.consume(token) == "alice"
    assert reset.consume(token) is None
    assert client.keys(redis_store.prefix + "*") == []
    client.close()


@pytest.mark.redis
def test_redis_consume_is_atomic_under_concurrency(redis_store: RedisSingleUseStore) -> None:
    """Twenty threads race one token in Redis: exactly one gets the subject."""
    reset = SingleUseTokens(redis_store, purpose="r", ttl=60)
    token = reset.issue("alice")
    barrier = threading.Barrier(20, timeout=10)
    results: list[str | None] = []

    def race() -> None:
        barrier.wait()
        results.append(reset.consume(token))

    threads = [threading.Thread(target=race) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert results.count("alice") == 1
    assert len(results) == 20


@pytest.mark.redis
def test_redis_async_twins_race_one_token(redis_url: str) -> None:
    """In one event loop, twenty `aconsume` calls on one token: one success."""

    async def scenario() -> list[str | None]:
        store = RedisSingleUseStore(redis_url, prefix="test:async:")
        reset = SingleUseTokens(store, purpose="r", ttl=60)
        token = await reset.aissue("bob")
        results = await asyncio.gather(*(reset.aconsume(token) for _ in range(20)))
        await store.aclose()
        store.close()
        return list(results)

    results = asyncio.run(scenario())
    assert results.count("bob") == 1


@pytest.mark.redis
def test_refresh_rotation_through_redis(redis_url: str) -> None:
    """Refresh grants in Redis rotate and detect reuse like in memory."""
    store = build_store(redis_url)
    issuer = TokenIssuer(jwt={"secret": SECRET}, store=store)
    first = issuer.issue(Account.create("alice", scopes=["a"]))
    second = issuer.refresh(first.refresh_token or "")
    assert isinstance(second, IssuedTokens)
    assert isinstance(issuer.refresh(first.refresh_token or ""), OAuthError)
    assert isinstance(issuer.refresh(second.refresh_token or ""), OAuthError)


def test_unreachable_redis_fails_fast_and_closed() -> None:
    """A Redis that refuses connections raises TokenStoreError (sync and async); a refresh then
    answers 503."""
    store = RedisSingleUseStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    reset = SingleUseTokens(store, purpose="r", ttl=60)
    with pytest.raises(TokenStoreError, match="redis unavailable"):
        reset.issue("alice")
    with pytest.raises(TokenStoreError):
        reset.consume("some-token")
    with pytest.raises(TokenStoreError):
        asyncio.run(reset.aconsume("some-token"))
    good = TokenIssuer(jwt={"secret": SECRET}).issue(Account.create("alice"))
    result = TokenIssuer(jwt={"secret": SECRET}, store=store).refresh(good.refresh_token or "")
    assert isinstance(result, OAuthError)
    assert result.status == 503
