"""One Redis client factory for every store: the denylist, sessions, TOTP replay and single-use
tokens work on a real Redis Cluster (keys spread over slots), through Sentinel, and with the
valkey:// scheme, sync and async alike."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from secmw.auth.totp import RedisReplayStore
from secmw.errors import ConfigurationError
from secmw.stores.redis import async_client, is_cluster, parse_url, sync_client
from secmw.stores.revocation import RedisRevocationStore
from secmw.stores.sessions import RedisSessionStore
from secmw.tokens import RedisSingleUseStore, SingleUseTokens, TokenIssuer
from tests.redis_support import RedisServer, cluster_url
from tests.support import SECRET

pytestmark = pytest.mark.server


@pytest.fixture(scope="module")
def cluster(redis_cluster: list[RedisServer]) -> str:
    return cluster_url(redis_cluster)


@pytest.fixture
def prefix() -> str:
    return f"t{uuid.uuid4().hex[:8]}:"


def test_the_factory_builds_a_cluster_client(cluster: str) -> None:
    """redis+cluster:// gives RedisCluster clients on both sides."""
    sync = sync_client(cluster, 2.0)
    try:
        assert is_cluster(sync)
        assert sync.ping()
    finally:
        sync.close()

    async def run() -> bool:
        client = async_client(cluster, 2.0)
        try:
            return is_cluster(client) and bool(await client.ping())
        finally:
            await client.aclose()

    assert asyncio.run(run())


def test_revocation_on_a_cluster(cluster: str, prefix: str) -> None:
    """A jti and a family in different slots: one lookup answers for both, sync and async."""
    store = RedisRevocationStore.from_url(cluster, timeout=2.0, prefix=prefix)
    ids = [f"jti-{n}" for n in range(8)]  # spread over slots
    store.revoke(ids[3], until=4_102_444_800)
    assert store.is_revoked(*ids)
    assert not store.is_revoked(*ids[:3])

    async def run() -> tuple[bool, bool]:
        try:
            await store.arevoke("fam-x", until=4_102_444_800)
            return await store.ais_revoked("other", "fam-x"), await store.ais_revoked("a", "b")
        finally:
            await store._async.aclose()

    assert asyncio.run(run()) == (True, False)


def test_sessions_on_a_cluster(cluster: str, prefix: str) -> None:
    """Session values are written, read and deleted on the node of their slot."""
    store = RedisSessionStore.from_url(cluster, timeout=2.0, prefix=prefix)
    for n in range(5):
        store.set(f"s{n}", b"v%d" % n, 60)
    assert [store.get(f"s{n}") for n in range(5)] == [b"v%d" % n for n in range(5)]
    store.delete("s1")
    assert store.get("s1") is None

    async def run() -> bytes | None:
        try:
            await store.aset("a", b"x", 60)
            return await store.aget("a")
        finally:
            await store._async.aclose()

    assert asyncio.run(run()) == b"x"


def test_totp_replay_on_a_cluster(cluster: str, prefix: str) -> None:
    """The replay script runs on the node of the subject's key: a code works once."""
    store = RedisReplayStore.from_url(cluster, timeout=2.0, prefix=prefix)
    assert [store.use(f"user-{n}", 100, 60) for n in range(4)] == [True] * 4
    assert not store.use("user-2", 100, 60)

    async def run() -> list[bool]:
        try:
            return [await store.ause("alice", 7, 60), await store.ause("alice", 7, 60)]
        finally:
            await store._ascript.registered_client.aclose()

    assert asyncio.run(run()) == [True, False]


def test_single_use_tokens_and_groups_on_a_cluster(cluster: str, prefix: str) -> None:
    """Reset links of one user live in many slots; dropping the user's group ends them all."""
    store = RedisSingleUseStore(cluster, prefix=prefix, timeout=2.0)
    tokens = SingleUseTokens(store, purpose="password-reset", ttl=600)
    links = [tokens.issue("alice") for _ in range(6)]
    assert tokens.consume(links[0]) == "alice"
    assert tokens.consume(links[0]) is None
    store.discard_group("password-reset:" + _group_suffix(tokens, "alice"))
    assert [tokens.consume(link) for link in links[1:]] == [None] * 5

    async def run() -> list[Any]:
        try:
            link = await tokens.aissue("bob")
            return [await tokens.aconsume(link), await tokens.aconsume(link)]
        finally:
            await store.aclose()

    assert asyncio.run(run()) == ["bob", None]
    store.close()


def _group_suffix(tokens: SingleUseTokens, subject: str) -> str:
    from secmw.tokens.onetime import subject_group

    return subject_group(tokens.purpose, subject).removeprefix("password-reset:")


def test_refresh_rotation_on_a_cluster(cluster: str, prefix: str) -> None:
    """Refresh grants on a cluster: a refresh token works once; its reuse is refused."""
    issuer = TokenIssuer(jwt={"secret": SECRET}, tokens={"storage_uri": cluster})
    issued = issuer.issue(issuer_account())
    first = issuer.refresh(issued.refresh_token or "")
    again = issuer.refresh(issued.refresh_token or "")
    assert getattr(first, "refresh_token", None)
    assert getattr(again, "error", None) == "invalid_grant"


def issuer_account() -> Any:
    from secmw.tokens import Account

    return Account.create("alice", scopes=["items:read"])


def test_sentinel_finds_the_master(redis_sentinel: str, prefix: str) -> None:
    """redis+sentinel:// asks the Sentinel for the master and stores there."""
    store = RedisRevocationStore.from_url(redis_sentinel, timeout=2.0, prefix=prefix)
    store.revoke("jti", until=4_102_444_800)
    assert store.is_revoked("jti")


@pytest.fixture
def valkey_url(redis_url: str) -> str:
    return redis_url.replace("redis://", "valkey://", 1)


def test_valkey_scheme(valkey_url: str, prefix: str) -> None:
    """valkey:// speaks the Redis protocol through the same client."""
    store = RedisSessionStore.from_url(valkey_url, timeout=2.0, prefix=prefix)
    store.set("k", b"v", 60)
    assert store.get("k") == b"v"


@pytest.mark.parametrize(
    "url",
    ["http://user:hunter2@host", "redis+cluster://user:hunter2@", "redis+sentinel://h:1"],
    ids=["scheme", "no-nodes", "no-service"],
)
def test_bad_urls_are_configuration_errors_without_the_password(url: str) -> None:
    """A URL the factory cannot use fails at start and never echoes its password."""
    with pytest.raises(ConfigurationError) as raised:
        parse_url(url, "tokens.storage_uri")
    assert "hunter2" not in str(raised.value)
