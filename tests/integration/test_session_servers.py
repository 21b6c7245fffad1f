"""The documented login/logout views behind real servers (uvicorn, werkzeug): the logout ends
the session the middleware authenticated, and cookies planted ahead of the session cookie do
not let a cross-site POST through."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from secmw import Principal, SecuritySettings
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth.build import build_chain
from secmw.auth.session import Sessions
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.support import uvicorn_server, werkzeug_server

ALICE = Principal.create("alice", "password", scopes=["items:read"])
SETTINGS = SecuritySettings(auth={"order": ["session"]})
# Cookies a sibling subdomain can plant with Path=/logout, ahead of the session cookie.
FILLER = "; ".join(f"pref{n}={'v' * 90}" for n in range(100))
CROSS_SITE = {"origin": "https://evil.example", "sec-fetch-site": "cross-site"}
SAME_SITE = {"sec-fetch-site": "same-origin"}


def starlette_app(sessions: Sessions) -> Any:
    """The logout view of docs/identity.md."""

    async def logout(request: Request) -> JSONResponse:
        response = JSONResponse({"ok": True})
        session_id = sessions.session_id(request)
        if session_id:
            response.headers.append("set-cookie", await sessions.adestroy(session_id))
        return response

    app = Starlette(routes=[Route("/logout", logout, methods=["POST"])])
    return ASGIAuth(app, chain=build_chain(SETTINGS, sessions=sessions))


def flask_app(sessions: Sessions) -> Any:
    """Its Flask twin."""
    app = flask.Flask(__name__)

    @app.post("/logout")
    def logout() -> flask.Response:
        response = flask.jsonify(ok=True)
        session_id = sessions.session_id(flask.request)
        if session_id:
            response.headers.add("set-cookie", sessions.destroy(session_id))
        return response

    app.wsgi_app = WSGIAuth(app.wsgi_app, chain=build_chain(SETTINGS, sessions=sessions))  # type: ignore[method-assign]
    return app


@pytest.fixture(params=["uvicorn", "werkzeug"])
def served(request: pytest.FixtureRequest) -> Iterator[tuple[str, Sessions]]:
    """A base URL and the Sessions behind it."""
    sessions = Sessions.from_settings(SETTINGS.session)
    if request.param == "uvicorn":
        server = uvicorn_server(starlette_app(sessions))
    else:
        server = werkzeug_server(flask_app(sessions))
    with server as url:
        yield url, sessions


def _logout(url: str, cookie: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"{url}/logout", headers={"cookie": cookie, **headers}, timeout=5)


def test_cross_site_logout_after_9kb_of_cookies_is_refused(served: tuple[str, Sessions]) -> None:
    """9 KB of planted cookies, then the session cookie, on a cross-site POST: 403, and the
    session lives on; the same request from the site itself logs out."""
    url, sessions = served
    session_id = sessions.create(ALICE).id
    cookie = f"{FILLER}; __Host-session={session_id}"
    refused = _logout(url, cookie, CROSS_SITE)
    assert refused.status_code == 403
    assert refused.json()["code"] == "cross_site"
    assert sessions.load(session_id) is not None
    done = _logout(url, cookie, SAME_SITE)
    assert done.status_code == 200
    assert done.headers["set-cookie"] == sessions.clear_cookie()
    assert sessions.load(session_id) is None


def test_logout_with_two_session_cookies_is_refused(served: tuple[str, Sessions]) -> None:
    """Two session cookies: 400 and neither ended (the app's parser would have picked the
    other one than the middleware authenticated); one cookie: exactly that session ends."""
    url, sessions = served
    first, second = sessions.create(ALICE).id, sessions.create(ALICE).id
    refused = _logout(url, f"__Host-session={first}; __Host-session={second}", SAME_SITE)
    assert refused.status_code == 400
    assert refused.json()["code"] == "invalid_request"
    assert sessions.load(first) is not None
    assert sessions.load(second) is not None
    assert _logout(url, f"__Host-session={first}", SAME_SITE).status_code == 200
    assert sessions.load(first) is None
    assert sessions.load(second) is not None
