"""Reset and verification links: a used link ends the older ones, `revoke_all` ends them all, and
a request tells nobody whether the account exists (same answer, same store writes, same failure
when the store is down), in memory and in a real Redis."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from secmw.tokens import (
    REQUEST_ACCEPTED,
    MemorySingleUseStore,
    RedisSingleUseStore,
    SingleUseTokens,
    TokenIssuer,
    TokenStoreError,
)
from tests.redis_support import free_port
from tests.support import SECRET

ACCOUNTS = {"alice@example.test": "alice"}
KNOWN, UNKNOWN = "alice@example.test", "mallory@example.test"


def no_mail(to: str, token: str) -> None:
    """A deliver callback that drops the message."""


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest) -> Iterator[Any]:
    """The memory store, or a Redis store with a prefix of its own."""
    if request.param == "memory":
        yield MemorySingleUseStore()
        return
    redis_store = RedisSingleUseStore(
        request.getfixturevalue("redis_url"), prefix=f"test:{uuid.uuid4().hex}:"
    )
    yield redis_store
    redis_store.close()


# -- old links -----------------------------------------------------------------------------------


def test_using_the_newer_link_ends_the_older_one(store: Any) -> None:
    """After a reset with the newer of two links, the older one sets nothing; another account's
    link still works."""
    reset = SingleUseTokens(store, purpose="password-reset", ttl=3600)
    older, newer, bobs = reset.issue("alice"), reset.issue("alice"), reset.issue("bob")
    assert reset.consume(newer) == "alice"
    assert reset.consume(older) is None
    assert reset.consume(bobs) == "bob"


def test_revoke_all_ends_every_outstanding_link_of_that_purpose(store: Any) -> None:
    """`revoke_all(subject)` (a password change) ends the subject's links of that purpose only."""
    reset = SingleUseTokens(store, purpose="password-reset", ttl=3600)
    verify = SingleUseTokens(store, purpose="email-verification", ttl=3600)
    links = [reset.issue("alice") for _ in range(3)]
    verification = verify.issue("alice")
    reset.revoke_all("alice")
    assert [reset.consume(link) for link in links] == [None, None, None]
    assert verify.consume(verification) == "alice"


def test_issuer_revoke_all_sync_and_async() -> None:
    """`TokenIssuer.revoke_all(subject, purpose)` and its async twin end the subject's links."""
    issuer = TokenIssuer(jwt={"secret": SECRET})
    reset = issuer.password_reset_tokens()
    first = reset.issue("alice")
    issuer.revoke_all("alice", "password-reset")
    assert reset.consume(first) is None

    async def scenario() -> list[str | None]:
        older, newer = await reset.aissue("alice"), await reset.aissue("alice")
        second = await reset.aissue("bob")
        await issuer.arevoke_all("bob")
        return [await reset.aconsume(token) for token in (newer, older, second)]

    assert asyncio.run(scenario()) == ["alice", None, None]


# -- no account probing --------------------------------------------------------------------------


def _commands(client: redis.Redis) -> dict[str, int]:
    stats: dict[str, Any] = client.info("commandstats")  # type: ignore[assignment]
    return {name: int(value["calls"]) for name, value in stats.items()}


def _written(store: Any, identifier: str) -> Any:
    """What one request for ``identifier`` does to the store: the keys added (memory) or the
    commands sent (Redis)."""
    reset = SingleUseTokens(store, purpose="password-reset", ttl=3600)
    if isinstance(store, MemorySingleUseStore):
        before = set(store.keys())
        assert reset.request(identifier, ACCOUNTS.get, no_mail) == REQUEST_ACCEPTED
        groups = {kind: len(table.groups) for kind, table in store._kinds.items()}
        return sorted(key.rpartition(":")[0] for key in set(store.keys()) - before), groups
    store.consume("warm-up:none")  # the connection's handshake is not part of a request
    with redis.Redis.from_url(store.url) as client:
        before = _commands(client)
        assert reset.request(identifier, ACCOUNTS.get, no_mail) == REQUEST_ACCEPTED
        after = _commands(client)
    return {name: calls - before.get(name, 0) for name, calls in after.items()} | {
        "cmdstat_info": 0
    }


def test_unknown_accounts_cost_the_same_store_writes(store: Any) -> None:
    """An unknown account writes as much as an existing one (the same commands in Redis), under
    keys no link maps to."""
    known, unknown = _written(store, KNOWN), _written(store, UNKNOWN)
    assert known
    assert unknown
    if isinstance(store, MemorySingleUseStore):
        assert known == (["password-reset"], {"password-reset": 1})
        assert unknown == (["decoy:password-reset"], {"password-reset": 1, "decoy": 1})
    else:
        assert known == unknown


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_store_down_fails_alike_for_known_and_unknown_accounts(asynchronous: bool) -> None:
    """With the store unreachable both requests raise TokenStoreError (an app's 503), never a
    200 for one and an error for the other."""
    store = RedisSingleUseStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.5)
    reset = SingleUseTokens(store, purpose="password-reset", ttl=3600)
    request: Callable[[str], Any] = (
        (lambda who: asyncio.run(reset.arequest(who, ACCOUNTS.get, no_mail)))
        if asynchronous
        else (lambda who: reset.request(who, ACCOUNTS.get, no_mail))
    )
    for identifier in (KNOWN, UNKNOWN):
        with pytest.raises(TokenStoreError, match="redis unavailable"):
            request(identifier)
    store.close()


def test_decoys_never_redeem_and_never_evict_real_links() -> None:
    """Requests for unknown accounts fill only their own cap; a real link still works after."""
    store = MemorySingleUseStore(max_entries=4)
    reset = SingleUseTokens(store, purpose="password-reset", ttl=3600)
    outbox: list[str] = []
    reset.request(KNOWN, ACCOUNTS.get, lambda to, token: outbox.append(token))
    for number in range(20):
        reset.request(f"nobody-{number}@example.test", ACCOUNTS.get, no_mail)
    assert reset.consume(outbox[0]) == "alice"
