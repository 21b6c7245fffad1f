"""Session cookies read one way: repeated and oversized Cookie fields, the logout helper's
reading, and the cookie clearing kept on a throttled answer; ASGI and WSGI."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.requests import Request
from werkzeug.test import Client
from werkzeug.wrappers import Request as WerkzeugRequest

from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.asgi import SecurityStack as ASGIStack
from secmw.auth.base import AuthChain
from secmw.auth.session import SessionAuthenticator, Sessions
from secmw.auth.throttle import AsyncFailedAuthThrottle, FailedAuthThrottle
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.stores.sessions import MemorySessionStore
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from secmw.wsgi import SecurityStack as WSGIStack
from tests.identity_support import FakeClock
from tests.support import http_scope, run_asgi

ALICE = Principal.create("alice", "password", scopes=["items:read"])
FILLER = "; ".join(f"pref{n}={'v' * 90}" for n in range(100))  # 9.5 KB of other cookies
CROSS_SITE = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}


def _asgi_app(scope: Any, receive: Any, send: Any) -> Any:
    async def app() -> None:
        user = scope["user"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": f"{user.scheme}:{user.id}".encode()})

    return app()


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    user = environ["secmw.principal"]
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"{user.scheme}:{user.id}".encode()]


def _sessions() -> tuple[Sessions, str]:
    clock = FakeClock(1_000_000)
    sessions = Sessions(MemorySessionStore(clock=clock), clock=clock)
    return sessions, sessions.create(ALICE).id


def _asgi(app: Any, method: str, cookies: list[str], **headers: str) -> Any:
    pairs = [("host", "app.example"), *(("cookie", line) for line in cookies), *headers.items()]
    return run_asgi(app, http_scope(method=method, headers=pairs))


def _wsgi(app: Any, method: str, cookie: str, **headers: str) -> Any:
    environ = {"HTTP_HOST": "app.example", "HTTP_COOKIE": cookie, "REMOTE_ADDR": "10.0.0.1"}
    environ.update({"HTTP_" + k.upper().replace("-", "_"): v for k, v in headers.items()})
    return Client(app, use_cookies=False).open("/", method=method, environ_base=environ)


# -- one session cookie, or a refusal ---------------------------------------------------------


@pytest.mark.parametrize(
    "lines",
    [
        ["__Host-session={a}; __Host-session={b}"],
        ["__Host-session={a}", "__Host-session={b}"],
        ["theme=dark; __Host-session={a}", "x=1; __Host-session={b}"],
    ],
    ids=["one-field", "two-fields", "among-others"],
)
def test_asgi_repeated_session_cookie_is_400(lines: list[str]) -> None:
    """The same session cookie twice, in one Cookie field or across several, is a 400 problem:
    the app's parser may pick the other value than the middleware authenticated."""
    sessions, a = _sessions()
    b = sessions.create(ALICE).id
    app = ASGIAuth(_asgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    sent = _asgi(app, "GET", [line.format(a=a, b=b) for line in lines])
    assert sent.status == 400
    assert sent.header_values("content-type") == ["application/problem+json"]
    assert json.loads(sent.body)["code"] == "invalid_request"
    assert sent.header_values("set-cookie") == []  # the planted twin would survive a clearing


@pytest.mark.parametrize(
    "cookie",
    ["__Host-session={a}; __Host-session={b}", "__Host-session={a},__Host-session={b}"],
    ids=["one-field", "fields-joined-by-the-server"],
)
def test_wsgi_repeated_session_cookie_is_400(cookie: str) -> None:
    """The WSGI twin; servers join repeated Cookie fields with a comma, which counts too."""
    sessions, a = _sessions()
    b = sessions.create(ALICE).id
    app = WSGIAuth(_wsgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    answer = _wsgi(app, "GET", cookie.format(a=a, b=b))
    assert answer.status_code == 400
    assert answer.headers["content-type"] == "application/problem+json"
    assert answer.json["code"] == "invalid_request"


# -- cookies past the first 8 KB -------------------------------------------------------------


def test_asgi_cross_site_post_after_9kb_of_cookies_is_refused() -> None:
    """9 KB of planted cookies ahead of the session cookie do not hide it: a cross-site POST
    is refused, a same-origin one is authenticated."""
    sessions, sid = _sessions()
    app = ASGIAuth(_asgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    cookie = f"{FILLER}; __Host-session={sid}"
    refused = _asgi(app, "POST", [cookie], **CROSS_SITE)
    assert refused.status == 403
    assert json.loads(refused.body)["code"] == "cross_site"
    same = _asgi(app, "POST", [cookie], origin="https://app.example")
    assert (same.status, same.body) == (200, b"session:alice")


def test_wsgi_cross_site_post_after_9kb_of_cookies_is_refused() -> None:
    """The WSGI twin."""
    sessions, sid = _sessions()
    app = WSGIAuth(_wsgi_app, chain=AuthChain([SessionAuthenticator(sessions)]))
    cookie = f"{FILLER}; __Host-session={sid}"
    refused = _wsgi(app, "POST", cookie, **CROSS_SITE)
    assert refused.status_code == 403
    assert refused.json["code"] == "cross_site"
    same = _wsgi(app, "POST", cookie, sec_fetch_site="same-origin")
    assert (same.status_code, same.text) == (200, "session:alice")


def test_cookie_fields_too_large_to_read_are_431_not_anonymous() -> None:
    """Past the bound the cookies are not read, and the request is refused (431) rather than
    treated as cookie-less, on both sides."""
    sessions, sid = _sessions()
    chain = AuthChain([SessionAuthenticator(sessions)])
    cookie = "; ".join(f"p{n}={'v' * 1000}" for n in range(70)) + f"; __Host-session={sid}"
    sent = _asgi(ASGIAuth(_asgi_app, chain=chain), "POST", [cookie], **CROSS_SITE)
    assert sent.status == 431
    assert json.loads(sent.body)["code"] == "cookies_too_large"
    answer = _wsgi(WSGIAuth(_wsgi_app, chain=chain), "POST", cookie, **CROSS_SITE)
    assert answer.status_code == 431


# -- the logout helper reads what the middleware read ----------------------------------------


def test_session_id_reads_the_request_as_the_middleware_does() -> None:
    """Starlette and werkzeug requests, scopes, environs and views give the id the middleware
    authenticates, also after 9 KB of cookies; a repeated cookie gives none."""
    sessions, sid = _sessions()
    cookie = f"{FILLER}; __Host-session={sid}"
    scope = http_scope(headers=[("cookie", cookie)])
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "HTTP_COOKIE": cookie}
    for request in (Request(scope), scope, WerkzeugRequest(environ), environ):
        assert sessions.session_id(request) == sid
    assert RequestView.from_scope(scope) is scope["secmw.request"]  # the middleware's own view
    twice = http_scope(headers=[("cookie", f"__Host-session={sid}; __Host-session={'b' * 43}")])
    assert sessions.session_id(Request(twice)) is None


def test_session_id_refuses_a_framework_cookie_mapping() -> None:
    """A framework's cookie dict cannot tell a repeated cookie apart: a TypeError says to pass
    the request instead."""
    sessions, sid = _sessions()
    with pytest.raises(TypeError, match="not a cookie mapping"):
        sessions.session_id({"__Host-session": sid})


# -- a throttled answer still clears a stale cookie ------------------------------------------

THROTTLE: dict[str, Any] = {"rate_limit": {"auth_failures": "2/minute"}}


def test_asgi_throttled_stale_cookie_is_still_cleared() -> None:
    """Once the failure throttle answers 429, the answer keeps the 401's Set-Cookie that
    clears the stale session cookie (else the browser resends it and stays throttled)."""
    sessions, _ = _sessions()
    throttle = AsyncFailedAuthThrottle(**THROTTLE)
    chain = AuthChain([SessionAuthenticator(sessions)])
    app = ASGIAuth(_asgi_app, chain=chain, throttle=throttle)
    stale = [f"__Host-session={'s' * 43}"]
    answers = [_asgi(app, "GET", stale) for _ in range(3)]
    assert [a.status for a in answers] == [401, 401, 429]
    for answer in answers:
        assert answer.header_values("set-cookie") == [sessions.clear_cookie()]
    assert answers[2].header_values("retry-after")


def test_wsgi_throttled_stale_cookie_is_still_cleared() -> None:
    """The WSGI twin."""
    sessions, _ = _sessions()
    chain = AuthChain([SessionAuthenticator(sessions)])
    app = WSGIAuth(_wsgi_app, chain=chain, throttle=FailedAuthThrottle(**THROTTLE))
    answers = [_wsgi(app, "GET", f"__Host-session={'s' * 43}") for _ in range(3)]
    assert [a.status_code for a in answers] == [401, 401, 429]
    for answer in answers:
        assert answer.headers.getlist("set-cookie") == [sessions.clear_cookie()]
    assert "retry-after" in answers[2].headers


def test_security_stacks_keep_the_clearing_on_a_throttled_answer() -> None:
    """Through the full stacks (headers, throttle, authentication, rate limits) on both sides:
    the throttled answer to a stale session cookie clears it."""
    sections: dict[str, Any] = {
        "auth": {"order": ["session"]},
        "rate_limit": {"default": "100/minute", "auth_failures": "2/minute"},
    }
    clear = Sessions(MemorySessionStore()).clear_cookie()
    stale = f"__Host-session={'s' * 43}"
    asgi = ASGIStack(_asgi_app, **sections)
    sent = [_asgi(asgi, "GET", [stale]) for _ in range(3)]
    assert [(s.status, s.header_values("set-cookie")) for s in sent] == [
        (401, [clear]),
        (401, [clear]),
        (429, [clear]),
    ]
    wsgi = WSGIStack(_wsgi_app, **sections)
    answers = [_wsgi(wsgi, "GET", stale) for _ in range(3)]
    assert [(a.status_code, a.headers.getlist("set-cookie")) for a in answers] == [
        (401, [clear]),
        (401, [clear]),
        (429, [clear]),
    ]
