"""A Redis session store that cannot answer: one documented exception for the login view's
helpers, 503 with Retry-After from the middleware (a real redis-server, stopped)."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest
from werkzeug.test import Client

from secmw import StoreUnavailable
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth.base import AuthChain
from secmw.auth.session import SessionAuthenticator, Sessions, _store_key
from secmw.core.principal import Principal
from secmw.stores.sessions import RedisSessionStore
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.redis_support import RedisServer
from tests.support import http_scope, run_asgi

pytestmark = pytest.mark.redis

ALICE = Principal.create("alice", "password", scopes=["items:read"])


def _sessions(url: str) -> Sessions:
    prefix = f"test:{uuid.uuid4().hex}:"
    return Sessions(RedisSessionStore.from_url(url, timeout=0.3, prefix=prefix))


def _never(*args: Any) -> Any:
    raise AssertionError("the app must not run when the session store is down")


def test_login_helpers_raise_store_unavailable(redis_process: RedisServer) -> None:
    """Redis stopped: create, load, rotate and destroy raise StoreUnavailable (sync and async),
    not the client library's ConnectionError, so a login view can answer 503."""
    redis_process.start()
    sessions = _sessions(redis_process.url)
    session_id = sessions.create(ALICE).id
    redis_process.stop()
    calls = [
        lambda: sessions.create(ALICE),
        lambda: sessions.load(session_id),
        lambda: sessions.rotate(session_id),
        lambda: sessions.destroy(session_id),
        lambda: asyncio.run(sessions.acreate(ALICE)),
        lambda: asyncio.run(sessions.adestroy(session_id)),
    ]
    for call in calls:
        with pytest.raises(StoreUnavailable, match="session store unavailable") as caught:
            call()
        assert session_id not in str(caught.value)


def test_error_reply_is_store_unavailable(redis_url: str) -> None:
    """An error reply (a key of the wrong type) is the same documented exception."""
    sessions = _sessions(redis_url)
    session_id = "s" * 43
    store = sessions.store
    assert store._client is not None
    store._client.rpush(store.prefix + _store_key(session_id), "x")
    try:
        with pytest.raises(StoreUnavailable, match="ResponseError"):
            sessions.load(session_id)
        asyncio.run(_aload_closing(sessions, session_id))
    finally:
        store._client.delete(store.prefix + _store_key(session_id))


async def _aload_closing(sessions: Sessions, session_id: str) -> None:
    try:
        with pytest.raises(StoreUnavailable, match="ResponseError"):
            await sessions.aload(session_id)
    finally:  # on the loop that opened the connection
        await sessions.store._async.aclose()


def test_middlewares_answer_503_with_retry_after(redis_process: RedisServer) -> None:
    """With the store down, a request carrying a session cookie gets a 503 problem with
    Retry-After from both middlewares: not anonymous, not a 500."""
    redis_process.start()
    sessions = _sessions(redis_process.url)
    cookie = f"__Host-session={sessions.create(ALICE).id}"
    redis_process.stop()
    chain = AuthChain([SessionAuthenticator(sessions)])
    sent = run_asgi(ASGIAuth(_never, chain=chain), http_scope(headers=[("cookie", cookie)]))
    assert sent.status == 503
    assert sent.header_values("retry-after") == ["5"]
    assert sent.header_values("content-type") == ["application/problem+json"]
    assert json.loads(sent.body)["code"] == "temporarily_unavailable"
    client = Client(WSGIAuth(_never, chain=chain), use_cookies=False)
    answer = client.get("/", environ_base={"HTTP_COOKIE": cookie})
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "5"
    assert answer.json["code"] == "temporarily_unavailable"
