"""Authentication middleware on ASGI and WSGI: real Starlette and Flask apps, in process."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
from flask import Flask, jsonify
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

import secmw
from secmw import hash_api_key, hash_password
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.errors import MiddlewareNotInstalled
from secmw.flask import get_principal, require_scopes
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.support import SECRET, http_scope, make_token, run_asgi

API_KEY = "demo-key-0001"
CONFIG: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(API_KEY), "id": "svc", "scopes": ["items:read"]}]},
    "basic": {"users": {"alice": {"password_hash": hash_password("pw"), "scopes": ["items:read"]}}},
}


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


CREDENTIALS = {
    "bearer": {"Authorization": f"Bearer {make_token(scope='items:read', exp=2**31)}"},
    "apikey": {"X-API-Key": API_KEY},
    "basic": {"Authorization": basic("alice", "pw")},
}


@requires("items:read")
async def items(request: Request) -> Response:
    return JSONResponse(
        {
            "id": request.user.identity,
            "scheme": request.state.principal.scheme,
            "ctx": secmw.current_principal().id,
        }
    )


async def me(request: Request) -> Response:
    if not request.user.is_authenticated:
        return PlainTextResponse("who are you", status_code=401)
    return JSONResponse({"id": request.user.display_name})


async def ws_endpoint(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text(websocket.user.identity)
    await websocket.close()


def starlette_app() -> Starlette:
    app = Starlette(
        routes=[Route("/items", items), Route("/me", me), WebSocketRoute("/ws", ws_endpoint)]
    )
    app.add_middleware(ASGIAuth, **CONFIG)
    return app


def flask_app() -> Flask:
    app = Flask(__name__)

    @app.get("/items")
    @require_scopes("items:read")
    def flask_items() -> Any:
        return jsonify(id=get_principal().id, ctx=secmw.current_principal().id)

    @app.get("/me")
    def flask_me() -> Any:
        if not get_principal().is_authenticated:
            return "who are you", 401
        return jsonify(id=get_principal().id)

    app.wsgi_app = WSGIAuth(app.wsgi_app, **CONFIG)  # type: ignore[method-assign]
    return app


async def asgi_get(path: str, headers: dict[str, str]) -> httpx.Response:
    transport = httpx.ASGITransport(app=starlette_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        return await client.get(path, headers=headers)


@pytest.mark.parametrize("scheme", sorted(CREDENTIALS))
def test_starlette_requires_works_with_every_scheme(scheme: str) -> None:
    """@requires sees the scopes from bearer, API key and Basic; the context var agrees."""
    response = asyncio.run(asgi_get("/items", CREDENTIALS[scheme]))
    assert response.status_code == 200
    body = response.json()
    assert body["scheme"] == scheme
    assert body["id"] == body["ctx"]


@pytest.mark.parametrize("scheme", sorted(CREDENTIALS))
def test_flask_decorator_works_with_every_scheme(scheme: str) -> None:
    """require_scopes admits each scheme's principal."""
    response = flask_app().test_client().get("/items", headers=CREDENTIALS[scheme])
    assert response.status_code == 200
    assert response.json is not None
    assert response.json["id"] == response.json["ctx"]


def test_flask_decorator_denies() -> None:
    """Anonymous gets 401 with challenges; a missing scope gets 403."""
    client = flask_app().test_client()
    anonymous = client.get("/items")
    assert anonymous.status_code == 401
    assert anonymous.content_type == "application/problem+json"
    assert len(anonymous.headers.getlist("WWW-Authenticate")) == 3
    weak = make_token(scope="other")
    forbidden = client.get("/items", headers={"Authorization": f"Bearer {weak}"})
    assert forbidden.status_code == 403
    assert forbidden.json == {
        "type": "about:blank",
        "title": "Forbidden",
        "status": 403,
        "detail": "insufficient scope",
        "code": "insufficient_scope",
    }


def test_starlette_requires_denies_missing_scope() -> None:
    """A valid principal without the scope gets Starlette's 403."""
    response = asyncio.run(asgi_get("/items", {"Authorization": f"Bearer {make_token()}"}))
    assert response.status_code == 403


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_invalid_credentials_answered_by_middleware(side: str) -> None:
    """A bad token is a 401 problem with an RFC 6750 challenge, on both sides."""
    headers = {"Authorization": "Bearer not.a.jwt"}
    if side == "asgi":
        response: Any = asyncio.run(asgi_get("/items", headers))
        content_type = response.headers["content-type"]
        challenges = response.headers.get_list("www-authenticate")
        body = response.json()
    else:
        response = flask_app().test_client().get("/items", headers=headers)
        content_type = response.content_type
        challenges = response.headers.getlist("WWW-Authenticate")
        body = response.json
    assert response.status_code == 401
    assert content_type == "application/problem+json"
    assert challenges == [
        'Bearer realm="api", error="invalid_token", error_description="malformed token"'
    ]
    assert body["detail"] == "malformed token"


@pytest.mark.parametrize("side", ["asgi", "wsgi"])
def test_app_401_gets_challenges(side: str) -> None:
    """An app's own 401 without WWW-Authenticate leaves with the configured challenges."""
    if side == "asgi":
        response: Any = asyncio.run(asgi_get("/me", {}))
        challenges = response.headers.get_list("www-authenticate")
    else:
        response = flask_app().test_client().get("/me")
        challenges = response.headers.getlist("WWW-Authenticate")
    assert response.status_code == 401
    assert [c.split()[0] for c in challenges] == ["Bearer", "APIKey", "Basic"]


def test_app_401_with_own_challenge_is_untouched() -> None:
    """An app that sends its own challenge keeps it alone."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"WWW-Authenticate", b"Custom")],
            }
        )
        await send({"type": "http.response.body", "body": b""})

    recorder = run_asgi(ASGIAuth(app, **CONFIG), http_scope())
    assert recorder.header_values("www-authenticate") == ["Custom"]


def test_lifespan_passes_through_untouched() -> None:
    """Lifespan scopes reach the app as they are."""
    seen: list[Any] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope)

    scope = {"type": "lifespan", "asgi": {"version": "3.0"}}
    run_asgi(ASGIAuth(app, **CONFIG), scope)
    assert seen == [scope]
    assert "secmw.request" not in scope


def run_websocket(headers: dict[str, str]) -> list[Any]:
    """Drive a websocket handshake through the Starlette app; return what it sent."""
    sent: list[Any] = []
    incoming = iter([{"type": "websocket.connect"}, {"type": "websocket.disconnect"}])

    async def receive() -> Any:
        return next(incoming)

    async def send(message: Any) -> None:
        sent.append(message)

    scope = http_scope("/ws", type="websocket", headers=list(headers.items()))
    asyncio.run(starlette_app()(scope, receive, send))
    return sent


def test_websocket_authenticated_and_refused() -> None:
    """A websocket with a good token connects; a bad one is refused before accept (1008)."""
    accepted = run_websocket(CREDENTIALS["bearer"])
    assert [m["type"] for m in accepted][:2] == ["websocket.accept", "websocket.send"]
    assert accepted[1]["text"] == "user-1"
    refused = run_websocket({"Authorization": "Bearer bad"})
    assert refused == [{"type": "websocket.close", "code": 1008, "reason": "malformed token"}]


def test_websocket_denial_response_extension() -> None:
    """With the websocket.http.response extension the refusal is a real 401 response."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("app must not run")

    scope = http_scope(
        type="websocket",
        headers=[("Authorization", "Bearer bad")],
        extensions={"websocket.http.response": {}},
    )
    recorder = run_asgi(ASGIAuth(app, **CONFIG), scope)
    assert recorder.messages[0]["type"] == "websocket.http.response.start"
    assert recorder.status == 401
    assert json.loads(recorder.body)["status"] == 401


def test_wsgi_is_pep3333_compliant() -> None:
    """The WSGI middleware passes wsgiref.validate for allowed and denied requests."""
    from werkzeug.test import Client

    client = Client(validator(flask_app()))
    statuses = []
    for headers in (CREDENTIALS["apikey"], {"X-API-Key": "bad"}, {}):
        response = client.get("/items", headers=headers)
        statuses.append(response.status_code)
        response.close()
    assert statuses == [200, 401, 401]


def test_context_variable_is_reset_after_request() -> None:
    """Outside a request current_principal() refuses to guess."""
    asyncio.run(asgi_get("/items", CREDENTIALS["apikey"]))
    flask_app().test_client().get("/items", headers=CREDENTIALS["apikey"])
    with pytest.raises(MiddlewareNotInstalled):
        secmw.current_principal()


def test_flask_helper_without_middleware_is_loud() -> None:
    """get_principal() without the middleware raises instead of returning anonymous."""
    app = Flask(__name__)

    @app.get("/")
    @require_scopes("x")
    def index() -> str:
        return "never"

    app.config["PROPAGATE_EXCEPTIONS"] = True
    with pytest.raises(MiddlewareNotInstalled):
        app.test_client().get("/")


def test_denials_are_audited_without_secrets(caplog: pytest.LogCaptureFixture) -> None:
    """A refused credential is logged as an event that holds no credential."""
    token = make_token("t" * 32)
    with caplog.at_level(logging.INFO, logger="secmw.audit"):
        asyncio.run(asgi_get("/items", {"Authorization": f"Bearer {token}"}))
        flask_app().test_client().get("/items", headers={"X-API-Key": "leaky-key"})
    events = [r for r in caplog.records if r.name == "secmw.audit"]
    assert [r.getMessage() for r in events] == [
        "auth.denied: signature invalid",
        "auth.denied: API key invalid",
    ]
    dumped = caplog.text + repr([r.__dict__ for r in events])
    assert token not in dumped
    assert "leaky-key" not in dumped


def test_middleware_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no arguments the middleware reads SECMW_* variables."""
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    monkeypatch.setenv("SECMW_AUTH__REQUIRED", "/*")
    monkeypatch.setenv("SECMW_AUTH__PUBLIC", "/health")

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = ASGIAuth(app)
    assert run_asgi(middleware, http_scope("/x")).status == 401
    assert run_asgi(middleware, http_scope("/health")).status == 204
    token = make_token()
    good = http_scope("/x", headers=[("authorization", f"Bearer {token}")])
    assert run_asgi(middleware, good).status == 204
