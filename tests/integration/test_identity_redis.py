"""Sessions, the JWT denylist and TOTP replay protection on a real redis-server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pyotp
import pytest
import redis
import redis.asyncio

from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.asgi.stepup import StepUpMiddleware as ASGIStepUp
from secmw.auth.base import AuthChain, Credential
from secmw.auth.build import build_chain
from secmw.auth.jwt import JWTAuthenticator
from secmw.auth.session import SessionAuthenticator, Sessions
from secmw.auth.totp import RedisReplayStore, StepUp, replay_store_from_settings
from secmw.config.settings import SecuritySettings
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.stores.mirror import RevocationMirror
from secmw.stores.revocation import RedisRevocationStore
from secmw.stores.sessions import RedisSessionStore
from tests.identity_support import FakeClock
from tests.redis_support import RedisServer
from tests.support import SECRET, http_scope, make_token

pytestmark = pytest.mark.redis

T = TypeVar("T")
ALICE = Principal.create("alice", "password", scopes=["items:read"])


@pytest.fixture
def prefix() -> str:
    """A key prefix of this test's own: other tests share the server."""
    return f"test:{uuid.uuid4().hex}:"


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url, socket_timeout=2) as sync_client:
        yield sync_client


def with_async(url: str, body: Callable[[redis.asyncio.Redis], Awaitable[T]]) -> T:
    """Run ``body`` with an async client created and closed on the same event loop."""

    async def run() -> T:
        async_client = redis.asyncio.Redis.from_url(url, socket_timeout=2)
        try:
            return await body(async_client)
        finally:
            await async_client.aclose()

    return asyncio.run(run())


# -- revocation denylist ------------------------------------------------------------------------


def test_denylist_entries_expire_with_the_token(client: redis.Redis, prefix: str) -> None:
    """A revoked jti is a key whose TTL is the token's remaining life; past tokens store nothing."""
    clock = FakeClock(1_000_000)
    store = RedisRevocationStore(client, prefix=prefix, clock=clock)
    store.revoke("j1", until=1_000_090)
    store.revoke("j-old", until=999_999)
    assert store.is_revoked("j1")
    assert not store.is_revoked("j-old")
    assert not store.is_revoked("j2")
    assert 85 <= client.ttl(prefix + "j1") <= 90
    assert client.exists(prefix + "j-old") == 0


def test_denylist_shared_by_sync_and_async_sides(redis_url: str, prefix: str) -> None:
    """What a WSGI process revokes, an ASGI process refuses, on every request, cached or not."""
    with redis.Redis.from_url(redis_url) as sync_client:
        wsgi_side = JWTAuthenticator(
            SECRET, revocation=RedisRevocationStore(sync_client, prefix=prefix)
        )
        token = make_token(jti="shared-1")

        async def asgi_side(async_client: redis.asyncio.Redis) -> list[Principal | Deny]:
            store = RedisRevocationStore(async_client=async_client, prefix=prefix)
            auth = JWTAuthenticator(SECRET, revocation=store)
            first = await auth.averify(Credential("bearer", token))
            RedisRevocationStore(sync_client, prefix=prefix).revoke("shared-1", 2**31)
            second = await auth.averify(Credential("bearer", token))
            return [first, second]

        first, second = with_async(redis_url, asgi_side)
        assert isinstance(first, Principal)
        assert isinstance(second, Deny)
        assert second.detail == "token revoked"
        assert isinstance(wsgi_side.verify(Credential("bearer", token)), Deny)


def test_denylist_outage_is_503(redis_process: RedisServer, prefix: str) -> None:
    """Redis killed: the cached token is refused with 503, not let through; it passes again once
    Redis is back."""
    redis_process.start()
    store = RedisRevocationStore.from_url(redis_process.url, timeout=0.3, prefix=prefix)
    auth = JWTAuthenticator(SECRET, revocation=store)
    token = make_token(jti="j")
    assert isinstance(auth.verify(Credential("bearer", token)), Principal)
    redis_process.kill()
    down = auth.verify(Credential("bearer", token))
    assert isinstance(down, Deny)
    assert (down.status, down.detail) == (503, "revocation list unavailable")
    redis_process.start()
    assert isinstance(auth.verify(Credential("bearer", token)), Principal)


def test_revocation_url_setting_builds_the_redis_store(redis_url: str) -> None:
    """SECMW_JWT__REVOCATION_URL gives the bearer scheme a Redis denylist, mirrored in the
    process by default, asked directly with SECMW_JWT__REVOCATION_MIRROR=false."""
    settings = SecuritySettings(jwt={"secret": SECRET, "revocation_url": redis_url})
    (auth,) = build_chain(settings).authenticators
    assert isinstance(auth, JWTAuthenticator)
    assert isinstance(auth.revocation, RevocationMirror)
    auth.revocation.close()
    assert isinstance(auth.revocation.store, RedisRevocationStore)
    direct = SecuritySettings(
        jwt={"secret": SECRET, "revocation_url": redis_url, "revocation_mirror": False}
    )
    (auth,) = build_chain(direct).authenticators
    assert isinstance(auth, JWTAuthenticator)
    assert isinstance(auth.revocation, RedisRevocationStore)


# -- sessions ---------------------------------------------------------------------------------


def test_sessions_in_redis_with_ttl(client: redis.Redis, prefix: str) -> None:
    """Create, load, rotate, destroy; the key's TTL is min(idle, absolute remaining); a second
    process (another Sessions on the same Redis) sees the same sessions."""
    clock = FakeClock(1_000_000)
    store = RedisSessionStore(client, prefix=prefix)
    sessions = Sessions(store, idle_timeout=600, absolute_timeout=900, clock=clock)
    issued = sessions.create(ALICE)
    (key,) = client.keys(prefix + "*")
    assert 599_000 <= client.pttl(key) <= 600_000
    assert issued.id.encode() not in key
    other_process = Sessions(RedisSessionStore(client, prefix=prefix), clock=clock)
    record = other_process.load(issued.id)
    assert record is not None
    assert record.subject == "alice"
    clock.advance(500)
    rotated = sessions.rotate(issued.id)
    assert rotated is not None
    assert sessions.load(issued.id) is None
    (key,) = client.keys(prefix + "*")
    assert 399_000 <= client.pttl(key) <= 400_000  # 900 s absolute - 500 s elapsed
    sessions.destroy(rotated.id)
    assert client.keys(prefix + "*") == []


def test_sessions_async_side_and_middleware(redis_url: str, prefix: str) -> None:
    """An ASGI stack on Redis sessions: login via acreate, authenticated GET, cross-site POST
    refused, logout via adestroy."""

    async def body(async_client: redis.asyncio.Redis) -> list[int]:
        sessions = Sessions(RedisSessionStore(async_client=async_client, prefix=prefix))
        issued = await sessions.acreate(ALICE)
        app = ASGIAuth(_asgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
        cookie = ("cookie", f"__Host-session={issued.id}")
        statuses = [
            await _call(app, http_scope(headers=[("host", "a.example"), cookie])),
            await _call(
                app,
                http_scope(
                    method="POST",
                    headers=[("host", "a.example"), cookie, ("sec-fetch-site", "cross-site")],
                ),
            ),
        ]
        await sessions.adestroy(issued.id)
        statuses.append(await _call(app, http_scope(headers=[("host", "a.example"), cookie])))
        return statuses

    assert with_async(redis_url, body) == [200, 403, 401]


def test_session_store_outage_is_503(redis_process: RedisServer, prefix: str) -> None:
    """Redis down: a request with a session cookie gets 503, not anonymous and not 500."""
    redis_process.start()
    store = RedisSessionStore.from_url(redis_process.url, timeout=0.3, prefix=prefix)
    sessions = Sessions(store)
    session_id = sessions.create(ALICE).id
    redis_process.kill()
    auth = SessionAuthenticator(sessions)
    result = auth.verify(Credential("session", session_id))
    assert isinstance(result, Deny)
    assert (result.status, result.detail) == (503, "session store unavailable")


def test_session_redis_url_setting(redis_url: str) -> None:
    """SECMW_SESSION__REDIS_URL puts sessions in Redis."""
    sessions = Sessions.from_settings(SecuritySettings(session={"redis_url": redis_url}).session)
    assert isinstance(sessions.store, RedisSessionStore)
    issued = sessions.create(ALICE)
    assert sessions.load(issued.id) is not None
    sessions.destroy(issued.id)


# -- TOTP replay ----------------------------------------------------------------------------


def test_replay_store_is_shared_and_forward_only(client: redis.Redis, prefix: str) -> None:
    """Two processes share the last used step; a used or older step is refused; TTL bounded."""
    first = RedisReplayStore(client, prefix=prefix)
    second = RedisReplayStore(client, prefix=prefix)
    assert first.use("alice", 100, 120)
    assert not second.use("alice", 100, 120)
    assert not second.use("alice", 99, 120)
    assert second.use("alice", 101, 120)
    (key,) = client.keys(prefix + "*")
    assert b"alice" not in key
    assert 0 < client.ttl(key) <= 120


def test_replay_store_is_atomic_under_concurrency(redis_url: str, prefix: str) -> None:
    """Twenty concurrent uses of one step: exactly one wins."""

    async def body(async_client: redis.asyncio.Redis) -> list[bool]:
        store = RedisReplayStore(async_client=async_client, prefix=prefix)
        return list(await asyncio.gather(*(store.ause("bob", 7, 60) for _ in range(20))))

    assert sorted(with_async(redis_url, body)) == [False] * 19 + [True]


def test_step_up_middleware_with_redis_replay(redis_url: str, prefix: str) -> None:
    """A code accepted by one ASGI process is refused by another sharing Redis."""
    secret = pyotp.random_base32()
    clock = FakeClock(1_700_000_010)
    code = pyotp.TOTP(secret).at(clock.now)
    token = make_token(sub="carol")

    async def body(async_client: redis.asyncio.Redis) -> list[int]:
        statuses = []
        for _ in range(2):  # two processes, one Redis
            step_up = ASGIStepUp(
                _asgi_app,
                secret_for=lambda principal: secret,
                step_up=StepUp(paths=["/admin"], clock=clock),
                replay=RedisReplayStore(async_client=async_client, prefix=prefix),
            )
            app = ASGIAuth(step_up, jwt={"secret": SECRET})
            headers = [("Authorization", f"Bearer {token}"), ("X-TOTP-Code", code)]
            statuses.append(await _call(app, http_scope("/admin", headers=headers)))
        return statuses

    assert with_async(redis_url, body) == [200, 401]


def test_replay_outage_is_503(redis_process: RedisServer) -> None:
    """Redis down during a step-up: 503, never an accepted (possibly replayed) code."""
    redis_process.start()
    secret = pyotp.random_base32()
    clock = FakeClock(1_700_000_010)
    store = RedisReplayStore(redis.Redis.from_url(redis_process.url, socket_timeout=0.3))
    redis_process.kill()
    from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
    from secmw.wsgi.stepup import StepUpMiddleware as WSGIStepUp

    app = WSGIAuth(
        WSGIStepUp(
            _wsgi_app,
            secret_for=lambda principal: secret,
            step_up=StepUp(paths=["/admin"], clock=clock),
            replay=store,
        ),
        jwt={"secret": SECRET},
    )
    from werkzeug.test import Client

    response = Client(app).get(
        "/admin",
        headers={
            "Authorization": f"Bearer {make_token()}",
            "X-TOTP-Code": pyotp.TOTP(secret).at(clock.now),
        },
    )
    assert response.status_code == 503
    assert response.json is not None
    assert response.json["code"] == "temporarily_unavailable"


def test_totp_redis_url_setting(redis_url: str) -> None:
    """SECMW_TOTP__REDIS_URL selects the Redis replay store."""
    settings = SecuritySettings(totp={"redis_url": redis_url})
    store = replay_store_from_settings(settings.totp)
    assert isinstance(store, RedisReplayStore)
    name = f"settings-{uuid.uuid4().hex}"
    assert store.use(name, 1, 5)
    assert not store.use(name, 1, 5)


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


async def _call(app: Any, scope: dict[str, Any]) -> int:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    await app(scope, receive, send)
    return int(sent[0]["status"])
