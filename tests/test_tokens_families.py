"""Token families: logout and refresh-token reuse end every token of a login, on every request
(cached or not), in memory and in a real Redis; an evicted grant is never taken for a reused one."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
import redis

from secmw import audit
from secmw.auth.base import Credential
from secmw.auth.jwt import JWTAuthenticator
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.stores.revocation import MemoryRevocationStore, RedisRevocationStore
from secmw.tokens import (
    Account,
    IssuedTokens,
    MemorySingleUseStore,
    OAuthError,
    RedisSingleUseStore,
    TokenIssuer,
    family_key,
)
from tests.support import SECRET

ALICE = Account.create("alice", scopes=["items:read"])
BOB = Account.create("bob", scopes=["items:read"])


def issued(result: IssuedTokens | OAuthError) -> IssuedTokens:
    assert isinstance(result, IssuedTokens), result
    return result


def refused(result: Principal | Deny) -> bool:
    return isinstance(result, Deny) and (result.status, result.detail) == (401, "token revoked")


def bearer(token: str) -> Credential:
    return Credential("bearer", token)


@pytest.fixture
def reused_events() -> Iterator[list[audit.AuditEvent]]:
    """`token.refresh_reused` events emitted during the test."""
    seen: list[audit.AuditEvent] = []

    def hook(event: audit.AuditEvent) -> None:
        if event.name == "token.refresh_reused":
            seen.append(event)

    audit.add_hook(hook)
    yield seen
    audit.remove_hook(hook)


# -- logout --------------------------------------------------------------------------------------


def test_logout_with_the_access_token_ends_the_refresh_family() -> None:
    """`revoke(access_token)` refuses that access token, the refresh token of the same login, and
    the access tokens of the family minted earlier."""
    store = MemoryRevocationStore()
    service = TokenIssuer(jwt={"secret": SECRET}, revocation=store)
    auth = JWTAuthenticator(SECRET, revocation=store)
    login = service.issue(ALICE)
    newer = issued(service.refresh(login.refresh_token or ""))
    assert isinstance(auth.verify(bearer(login.access_token)), Principal)
    assert service.revoke(newer.access_token)
    assert service.refresh(newer.refresh_token or "") == OAuthError(
        "invalid_grant", "refresh token revoked"
    )
    assert refused(auth.verify(bearer(newer.access_token)))
    assert refused(auth.verify(bearer(login.access_token)))
    other = service.issue(ALICE)  # another login of the same user is untouched
    assert isinstance(auth.verify(bearer(other.access_token)), Principal)
    assert isinstance(service.refresh(other.refresh_token or ""), IssuedTokens)


def test_async_logout_ends_the_family() -> None:
    """`arevoke(access_token)` does what `revoke` does."""
    store = MemoryRevocationStore()
    service = TokenIssuer(jwt={"secret": SECRET}, revocation=store)

    async def scenario() -> tuple[Any, Principal | Deny]:
        login = await service.aissue(ALICE)
        assert await service.arevoke(login.access_token)
        auth = JWTAuthenticator(SECRET, revocation=store)
        return await service.arefresh(login.refresh_token or ""), await auth.averify(
            bearer(login.access_token)
        )

    after, verdict = asyncio.run(scenario())
    assert isinstance(after, OAuthError)
    assert refused(verdict)


def test_access_tokens_carry_their_family_and_standalone_ones_none() -> None:
    """Access and refresh tokens of one login share `fam`; `refresh=False` tokens have none,
    and an account claim never smuggles one in."""
    service = TokenIssuer(jwt={"secret": SECRET})
    login = service.issue(ALICE)
    access = jwt.decode(login.access_token, SECRET, algorithms=["HS256"])
    refresh = jwt.decode(login.refresh_token or "", SECRET, algorithms=["HS256"])
    assert access["fam"] == refresh["fam"]
    lone = service.issue(Account.create("carol", claims={"fam": "chosen"}), refresh=False)
    assert "fam" not in jwt.decode(lone.access_token, SECRET, algorithms=["HS256"])


# -- reuse ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", ["wsgi", "asgi"])
def test_reuse_refuses_the_familys_cached_access_tokens(side: str) -> None:
    """After a replayed refresh token, the family's access tokens are refused at once, although
    the authenticator holds them in its verified-token cache."""
    store = MemoryRevocationStore()
    service = TokenIssuer(jwt={"secret": SECRET}, revocation=store)
    auth = JWTAuthenticator(SECRET, revocation=store)

    def check(token: str) -> Principal | Deny:
        if side == "wsgi":
            return auth.verify(bearer(token))
        return asyncio.run(auth.averify(bearer(token)))

    login = service.issue(ALICE)
    thief = issued(service.refresh(login.refresh_token or ""))  # the attacker refreshed first
    assert isinstance(check(thief.access_token), Principal)
    assert len(auth.cache) == 1
    assert isinstance(service.refresh(login.refresh_token or ""), OAuthError)  # the user's turn
    assert refused(check(thief.access_token))
    assert refused(check(login.access_token))


def test_a_store_written_for_one_jti_per_call_still_refuses_families() -> None:
    """A custom denylist whose `is_revoked` takes one id is asked for the jti, then the family."""

    class OneAtATime:
        def __init__(self) -> None:
            self.asked: list[str] = []
            self.revoked: set[str] = set()

        def revoke(self, jti: str, until: float) -> None:
            self.revoked.add(jti)

        def is_revoked(self, jti: str) -> bool:
            self.asked.append(jti)
            return jti in self.revoked

    store = OneAtATime()
    service = TokenIssuer(jwt={"secret": SECRET}, revocation=store)
    login = service.issue(ALICE)
    family = jwt.decode(login.access_token, SECRET, algorithms=["HS256"])["fam"]
    auth = JWTAuthenticator(SECRET, revocation=store)
    assert isinstance(auth.verify(bearer(login.access_token)), Principal)
    store.revoke(family_key(family), 0)
    assert refused(auth.verify(bearer(login.access_token)))
    assert store.asked[-1] == family_key(family)


# -- eviction is not reuse -----------------------------------------------------------------------


def test_reset_requests_never_evict_refresh_grants() -> None:
    """A flood of reset tokens fills the reset tokens' own cap; the refresh grant survives."""
    service = TokenIssuer(jwt={"secret": SECRET}, store=MemorySingleUseStore(max_entries=2))
    login = service.issue(ALICE)
    reset = service.password_reset_tokens()
    for _ in range(10):
        reset.request("bob@example.test", {"bob@example.test": "bob"}.get, lambda to, t: None)
        reset.request("nobody@example.test", {}.get, lambda to, t: None)
    assert isinstance(service.refresh(login.refresh_token or ""), IssuedTokens)


def test_an_evicted_grant_is_invalid_not_reuse(reused_events: list[audit.AuditEvent]) -> None:
    """A grant dropped by the cap is `invalid_grant`; no reuse event, and the family's access
    token still works."""
    store = MemoryRevocationStore()
    service = TokenIssuer(
        jwt={"secret": SECRET}, revocation=store, store=MemorySingleUseStore(max_entries=1)
    )
    auth = JWTAuthenticator(SECRET, revocation=store)
    alice = service.issue(ALICE)
    service.issue(BOB)  # evicts alice's grant
    result = service.refresh(alice.refresh_token or "")
    assert result == OAuthError("invalid_grant", "refresh token unknown or expired")
    assert reused_events == []
    assert isinstance(auth.verify(bearer(alice.access_token)), Principal)


def test_an_evicted_spent_marker_loses_only_the_reuse_signal(
    reused_events: list[audit.AuditEvent],
) -> None:
    """The spent marker itself dropped by the cap: the replay is still refused (invalid_grant),
    but it can no longer be told from an unknown grant, so the family lives on."""
    service = TokenIssuer(jwt={"secret": SECRET}, store=MemorySingleUseStore(max_entries=2))
    login = service.issue(ALICE)
    newer = issued(service.refresh(login.refresh_token or ""))  # marker + newer grant
    service.issue(BOB)  # evicts the marker
    assert isinstance(service.refresh(login.refresh_token or ""), OAuthError)
    assert reused_events == []
    assert isinstance(service.refresh(newer.refresh_token or ""), IssuedTokens)


def test_a_spent_grant_is_reuse_in_memory(reused_events: list[audit.AuditEvent]) -> None:
    """A grant known to be spent is reuse: one event, the family revoked."""
    service = TokenIssuer(jwt={"secret": SECRET})
    login = service.issue(ALICE)
    issued(service.refresh(login.refresh_token or ""))
    assert isinstance(service.refresh(login.refresh_token or ""), OAuthError)
    assert [e.principal for e in reused_events] == ["alice"]


# -- a real Redis --------------------------------------------------------------------------------


def _exists_calls(client: redis.Redis) -> int:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return int(stats.get("cmdstat_exists", {}).get("calls", 0))


@pytest.mark.redis
def test_redis_family_revocation_one_lookup_per_request(redis_url: str) -> None:
    """On Redis: after reuse, the cached access token is refused, sync and async, each request
    checking jti and family with a single EXISTS."""
    prefix = f"test:{uuid.uuid4().hex}:"
    with redis.Redis.from_url(redis_url) as client:
        denylist = RedisRevocationStore(client, prefix=prefix)
        grants = RedisSingleUseStore(redis_url, prefix=prefix + "once:")
        service = TokenIssuer(jwt={"secret": SECRET}, revocation=denylist, store=grants)
        auth = JWTAuthenticator(SECRET, revocation=denylist)
        login = service.issue(ALICE)
        thief = issued(service.refresh(login.refresh_token or ""))
        before = _exists_calls(client)
        assert isinstance(auth.verify(bearer(thief.access_token)), Principal)
        assert _exists_calls(client) - before == 1
        assert isinstance(service.refresh(login.refresh_token or ""), OAuthError)
        assert refused(auth.verify(bearer(thief.access_token)))

        async def asgi_side() -> Principal | Deny:
            async_client = redis.asyncio.Redis.from_url(redis_url)
            try:
                store = RedisRevocationStore(async_client=async_client, prefix=prefix)
                return await JWTAuthenticator(SECRET, revocation=store).averify(
                    bearer(login.access_token)
                )
            finally:
                await async_client.aclose()

        assert refused(asyncio.run(asgi_side()))
        grants.close()


@pytest.mark.redis
def test_redis_unknown_grant_is_invalid_not_reuse(
    redis_url: str, reused_events: list[audit.AuditEvent]
) -> None:
    """On Redis: a grant gone from the store (deleted, as by eviction) is `invalid_grant` without
    revoking the family; a spent one is reuse."""
    prefix = f"test:{uuid.uuid4().hex}:"
    grants = RedisSingleUseStore(redis_url, prefix=prefix)
    service = TokenIssuer(jwt={"secret": SECRET}, store=grants)
    login = service.issue(ALICE)
    jti = jwt.decode(login.refresh_token or "", SECRET, algorithms=["HS256"])["jti"]
    with redis.Redis.from_url(redis_url) as client:
        assert client.delete(f"{prefix}refresh:{jti}") == 1
    assert service.refresh(login.refresh_token or "") == OAuthError(
        "invalid_grant", "refresh token unknown or expired"
    )
    assert reused_events == []
    second = service.issue(ALICE)

    async def replay() -> list[IssuedTokens | OAuthError]:
        results = [await service.arefresh(second.refresh_token or "") for _ in range(2)]
        await grants.aclose()
        return results

    first_use, replayed = asyncio.run(replay())
    issued(first_use)
    assert isinstance(replayed, OAuthError)
    assert len(reused_events) == 1
    grants.close()
