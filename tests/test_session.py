"""Cookie sessions: cookie attributes, timeouts, rotation, CSRF defence, both adapters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from werkzeug.test import Client

from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth.base import AuthChain
from secmw.auth.build import build_chain
from secmw.auth.csrf import cross_site_reason
from secmw.auth.session import (
    SessionAuthenticator,
    SessionRecord,
    Sessions,
    SessionSettings,
)
from secmw.config.settings import SecuritySettings
from secmw.core.fields import Headers
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.stores.sessions import MemorySessionStore
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.identity_support import FakeClock
from tests.support import http_scope, run_asgi

ALICE = Principal.create("alice", "password", scopes=["items:read"], roles=["user"], name="Al")


def make(clock: FakeClock | None = None, **options: Any) -> Sessions:
    clock = clock or FakeClock()
    return Sessions(MemorySessionStore(clock=clock), clock=clock, **options)


def test_cookie_attributes_are_closed_by_default() -> None:
    """__Host- prefix, Secure, HttpOnly, SameSite=Lax, Path=/, no Domain; clearing: Max-Age=0."""
    sessions = make()
    issued = sessions.create(ALICE)
    assert issued.set_cookie == (
        f"__Host-session={issued.id}; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=43200"
    )
    assert "Domain" not in issued.set_cookie
    assert sessions.clear_cookie() == (
        "__Host-session=; Path=/; Secure; HttpOnly; SameSite=Lax; Max-Age=0"
    )
    assert len(issued.id) == 43
    assert issued.id not in repr(issued)


def test_round_trip_and_hashed_store_keys() -> None:
    """The principal comes back whole; the store never sees the session id itself."""
    store = MemorySessionStore()
    sessions = Sessions(store)
    issued = sessions.create(ALICE, {"tenant": "t1"})
    record = sessions.load(issued.id)
    assert record is not None
    principal = record.principal()
    assert (principal.id, principal.scheme, principal.display_name) == ("alice", "session", "Al")
    assert principal.scopes == {"items:read"}
    assert principal.roles == {"user"}
    assert principal.claims["tenant"] == "t1"
    assert issued.id not in store._entries
    assert all(len(key) == 64 for key in store._entries)


def test_idle_timeout_and_sliding_renewal() -> None:
    """Activity keeps a session alive; idle_timeout seconds of silence end it."""
    clock = FakeClock()
    sessions = make(clock, idle_timeout=1800)
    session_id = sessions.create(ALICE).id
    for _ in range(5):
        clock.advance(1000)
        assert sessions.load(session_id) is not None
    clock.advance(1800)
    assert sessions.load(session_id) is None


def test_absolute_timeout_ends_even_an_active_session() -> None:
    """However busy, a session ends absolute_timeout seconds after login."""
    clock = FakeClock()
    sessions = make(clock, idle_timeout=1800, absolute_timeout=7200)
    session_id = sessions.create(ALICE).id
    for _ in range(7):
        clock.advance(1000)
        assert sessions.load(session_id) is not None
    clock.advance(200)
    assert sessions.load(session_id) is None


def test_rotation_issues_a_new_id_and_keeps_the_login_time() -> None:
    """The old id stops working, the new one carries the new privileges, and the absolute
    timeout still counts from the first login."""
    clock = FakeClock()
    sessions = make(clock, absolute_timeout=3600)
    old = sessions.create(ALICE).id
    clock.advance(1000)
    admin = Principal.create("alice", "password", scopes=["admin"], name="Al")
    rotated = sessions.rotate(old, admin)
    assert rotated is not None
    assert rotated.id != old
    assert sessions.load(old) is None
    record = sessions.load(rotated.id)
    assert record is not None
    assert record.scopes == {"admin"}
    clock.advance(2600)
    assert sessions.load(rotated.id) is None
    assert sessions.rotate("x" * 43) is None


def test_destroy_ends_the_session() -> None:
    """Logout deletes the session and returns the clearing cookie."""
    sessions = make()
    session_id = sessions.create(ALICE).id
    assert sessions.destroy(session_id).endswith("Max-Age=0")
    assert sessions.load(session_id) is None


def test_async_helpers() -> None:
    """acreate, aload, arotate and adestroy behave as their sync twins."""
    sessions = make()

    async def run() -> tuple[Any, ...]:
        first = await sessions.acreate(ALICE)
        loaded = await sessions.aload(first.id)
        second = await sessions.arotate(first.id)
        assert second is not None
        gone = await sessions.aload(first.id)
        await sessions.adestroy(second.id)
        return loaded, gone, await sessions.aload(second.id)

    loaded, gone, after_logout = asyncio.run(run())
    assert isinstance(loaded, SessionRecord)
    assert loaded.subject == "alice"
    assert (gone, after_logout) == (None, None)


def test_memory_store_is_bounded() -> None:
    """Past max_entries the least recently used session is dropped."""
    store = MemorySessionStore(max_entries=2)
    sessions = Sessions(store)
    ids = [sessions.create(ALICE).id for _ in range(3)]
    assert len(store) == 2
    assert sessions.load(ids[0]) is None
    assert sessions.load(ids[2]) is not None


def test_corrupt_record_is_no_session() -> None:
    """A value that is not a session record is deleted and treated as absent."""
    store = MemorySessionStore()
    sessions = Sessions(store)
    session_id = sessions.create(ALICE).id
    (key,) = store._entries
    store.set(key, b"{not json", 60)
    assert sessions.load(session_id) is None
    assert len(store) == 0


@pytest.mark.parametrize(
    ("options", "variable"),
    [
        ({"secure": False}, "SECMW_SESSION__SECURE"),
        ({"cookie_name": "__Secure-sid", "secure": False}, "SECMW_SESSION__SECURE"),
        ({"cookie_name": "sid", "secure": False, "same_site": "none"}, "SECMW_SESSION__SAME_SITE"),
    ],
    ids=["host-prefix-insecure", "secure-prefix-insecure", "samesite-none-insecure"],
)
def test_insecure_cookie_configurations_are_refused(options: dict[str, Any], variable: str) -> None:
    """Cookie prefixes and SameSite=None need Secure."""
    with pytest.raises(ConfigurationError, match=variable):
        make(**options)


def test_plain_cookie_without_secure_when_asked() -> None:
    """A non-prefixed cookie may drop Secure (local development over http)."""
    sessions = make(cookie_name="sid", secure=False)
    assert "Secure" not in sessions.create(ALICE).set_cookie


@pytest.mark.parametrize(
    ("settings", "variable"),
    [
        ({"session": {"cookie_name": "bad name"}}, "SECMW_SESSION__COOKIE_NAME"),
        ({"session": {"idle_timeout": 5}}, "SECMW_SESSION__IDLE_TIMEOUT"),
    ],
    ids=["cookie-name", "idle-too-short"],
)
def test_invalid_settings_name_the_variable(settings: dict[str, Any], variable: str) -> None:
    """Settings validation names the SECMW_SESSION__ variable."""
    with pytest.raises(ConfigurationError, match=variable):
        SecuritySettings(**settings)


def test_untrusted_origin_setting_is_refused() -> None:
    """trusted_origins entries must be scheme://host origins."""
    settings = SecuritySettings(
        auth={"order": ["session"]},
        session={"trusted_origins": ["app.example/path"]},
    )
    with pytest.raises(ConfigurationError, match="SECMW_SESSION__TRUSTED_ORIGINS"):
        build_chain(settings)


# -- CSRF ------------------------------------------------------------------------------------


def _request(method: str = "POST", **headers: str) -> RequestView:
    pairs = [("host", "app.example")] + [(k.replace("_", "-"), v) for k, v in headers.items()]
    return RequestView(method, "/items", headers=Headers(pairs))


TRUSTED = frozenset({"https://admin.example"})


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"sec_fetch_site": "same-origin"}, False),
        ({"sec_fetch_site": "none"}, False),
        ({"sec_fetch_site": "same-site"}, True),
        ({"sec_fetch_site": "cross-site"}, True),
        ({"sec_fetch_site": "cross-site", "origin": "https://admin.example"}, False),
        ({"origin": "https://app.example"}, False),
        ({"origin": "http://APP.example"}, False),
        ({"origin": "https://evil.example"}, True),
        ({"origin": "https://app.example.evil.example"}, True),
        ({"origin": "null"}, True),
        ({"origin": "https://admin.example"}, False),
        ({}, True),
        ({"referer": "https://app.example/form"}, True),
    ],
    ids=[
        "fetch-same-origin",
        "fetch-none",
        "fetch-same-site",
        "fetch-cross-site",
        "fetch-cross-site-trusted-origin",
        "origin-same-host",
        "origin-case-and-scheme",
        "origin-other-host",
        "origin-suffix-trick",
        "origin-null",
        "origin-trusted",
        "no-headers",
        "referer-only",
    ],
)
def test_cross_site_truth_table(headers: dict[str, str], refused: bool) -> None:
    """Sec-Fetch-Site first, then Origin against Host; trusted origins pass; nothing is refused."""
    assert (cross_site_reason(_request(**headers), TRUSTED) is not None) is refused


# -- through the middlewares -----------------------------------------------------------------


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    user = scope["user"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{user.scheme}:{user.id}".encode()})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    user = environ["secmw.principal"]
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"{user.scheme}:{user.id}".encode()]


def _asgi(sessions: Sessions, method: str, cookie: str, **headers: str) -> Any:
    app = ASGIAuth(_asgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    pairs = [("host", "app.example"), ("cookie", cookie)]
    pairs += [(k.replace("_", "-"), v) for k, v in headers.items()]
    if method == "WEBSOCKET":
        return run_asgi(app, http_scope(headers=pairs, type="websocket"))
    return run_asgi(app, http_scope(method=method, headers=pairs))


def test_asgi_cookie_session_flow() -> None:
    """GET with the cookie: the session principal; cross-site POST: 403 problem; same-origin
    POST: allowed; expired: 401 that clears the cookie; junk cookie: 401."""
    clock = FakeClock(1_000_000)
    sessions = make(clock)
    cookie = f"__Host-session={sessions.create(ALICE).id}"
    ok = _asgi(sessions, "GET", cookie)
    assert (ok.status, ok.body) == (200, b"session:alice")
    csrf = _asgi(sessions, "POST", cookie, sec_fetch_site="cross-site")
    assert csrf.status == 403
    assert b'"code":"cross_site"' in csrf.body
    same = _asgi(sessions, "POST", cookie, origin="https://app.example")
    assert same.status == 200
    junk = _asgi(sessions, "GET", "__Host-session=not-a-session")
    assert junk.status == 401
    clock.advance(1801)
    expired = _asgi(sessions, "GET", cookie)
    assert expired.status == 401
    assert expired.header_values("set-cookie") == [sessions.clear_cookie()]
    assert b"invalid_session" in expired.body


def test_asgi_cross_site_websocket_handshake_is_refused() -> None:
    """Cross-site websocket hijacking: a handshake from another origin is closed before accept."""
    sessions = make()
    cookie = f"__Host-session={sessions.create(ALICE).id}"
    sent = _asgi(sessions, "WEBSOCKET", cookie, origin="https://evil.example")
    assert sent.messages[0]["type"] == "websocket.close"


def test_wsgi_cookie_session_flow() -> None:
    """The WSGI twin: same answers."""
    sessions = make()
    issued = sessions.create(ALICE)
    app = WSGIAuth(_wsgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    client = Client(app, use_cookies=False)
    base = {"HTTP_HOST": "app.example", "HTTP_COOKIE": f"__Host-session={issued.id}"}
    ok = client.get("/", environ_base=base)
    assert (ok.status_code, ok.text) == (200, "session:alice")
    refused = client.post("/", environ_base={**base, "HTTP_ORIGIN": "https://evil.example"})
    assert refused.status_code == 403
    assert refused.headers["content-type"] == "application/problem+json"
    allowed = client.post("/", environ_base={**base, "HTTP_SEC_FETCH_SITE": "same-origin"})
    assert allowed.status_code == 200
    sessions.destroy(issued.id)
    gone = client.get("/", environ_base=base)
    assert gone.status_code == 401


class _DownStore:
    def get(self, key: str) -> bytes | None:
        raise ConnectionError("down")

    async def aget(self, key: str) -> bytes | None:
        raise ConnectionError("down")


def test_store_outage_is_503_not_anonymous() -> None:
    """A session store that cannot answer refuses with 503, sync and async."""
    sessions = Sessions(_DownStore())  # type: ignore[arg-type]
    auth = SessionAuthenticator(sessions)
    credential = auth.extract(
        RequestView("GET", "/", headers=Headers([("cookie", f"__Host-session={'a' * 43}")])), None
    )
    assert credential is not None
    assert not hasattr(credential, "status")
    for result in (auth.verify(credential), asyncio.run(auth.averify(credential))):
        assert getattr(result, "status", None) == 503


def test_settings_build_a_session_scheme_sharing_the_apps_sessions() -> None:
    """'session' in SECMW_AUTH__ORDER builds the authenticator; build_chain(sessions=...) makes
    the login view and the middleware share one store."""
    settings = SecuritySettings(
        auth={"order": ["session"]},
        session=SessionSettings(cookie_name="__Host-app", idle_timeout=600),
    )
    sessions = Sessions.from_settings(settings.session)
    (auth,) = build_chain(settings, sessions=sessions).authenticators
    assert isinstance(auth, SessionAuthenticator)
    assert auth.sessions is sessions
    assert sessions.cookie_name == "__Host-app"
    assert auth.challenge() == 'Session realm="api", cookie="__Host-app"'
