"""secmw.fastapi on a real FastAPI app behind SecurityStack: Security(principal, scopes=[...]),
roles, permissions, ownership, one problem+json format for every 401/403, no 422 before 401,
scope checks at definition and startup, and the OpenAPI document."""

import asyncio
import logging
import warnings
from typing import Annotated, Any

import pytest
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Security, WebSocket
from fastapi.security import OAuth2PasswordBearer
from pydantic import BaseModel

import secmw.fastapi
from secmw import ConfigurationError, Principal, SecuritySettings
from secmw.asgi import AuthenticationMiddleware, SecurityStack
from secmw.core.deny import PROBLEM_CONTENT_TYPE
from secmw.fastapi import SecurityBridge, install
from tests.support import SECRET, asgi_request, make_token

# No `from __future__ import annotations` here: FastAPI evaluates annotations naming locals.

SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": "sha256:" + "0" * 64, "id": "k"}]},
    "authz": {"roles": {"admin": ["users:*", "@staff"], "staff": ["reports:read"]}},
    "tokens": {"token_url": "/token", "password_grant": True, "scopes": {"items:read": "Read"}},
    "rate_limit": {"default": ""},
}
SETTINGS = SecuritySettings(**SECTIONS)
BRIDGE = SecurityBridge(settings=SETTINGS)


class NewItem(BaseModel):
    name: str


class Post(BaseModel):
    id: int
    owner_id: str


POSTS = {1: Post(id=1, owner_id="alice")}


def load_post(post_id: int) -> Post:
    if post_id not in POSTS:
        raise HTTPException(404, "no such post")
    return POSTS[post_id]


def api(settings: Any = SETTINGS) -> FastAPI:
    """A FastAPI app with secured routes, a nested router and an app-raised 401/403."""
    app = FastAPI()
    install(app, settings)
    Reader = Annotated[Principal, Security(BRIDGE.principal, scopes=["items:read"])]
    Writer = Annotated[Principal, Security(BRIDGE.principal, scopes=["items:write"])]

    @app.get("/items")
    def items(user: Reader) -> dict[str, str]:
        return {"id": user.id}

    @app.post("/items")
    async def create(item: NewItem, user: Writer) -> dict[str, str]:
        return {"name": item.name, "by": user.id}

    @app.get("/reports")
    def reports(user: Annotated[Principal, Security(BRIDGE.require_permissions("reports:read"))]):
        return {"id": user.id}

    @app.get("/admin")
    def admin(user: Annotated[Principal, Security(BRIDGE.require_roles("admin"), scopes=["x"])]):
        return {"id": user.id}

    @app.get("/posts/{post_id}")
    def post(found: Annotated[Post, Security(BRIDGE.require_owner(load_post, roles=["admin"]))]):
        return {"id": found.id}

    oauth2 = OAuth2PasswordBearer(tokenUrl="/token")

    @app.get("/fastapi-own")
    def own(token: Annotated[str, Depends(oauth2)]) -> dict[str, str]:
        return {"ok": "yes"}

    @app.get("/refuse")
    def refuse() -> None:
        raise HTTPException(403, "not today")

    @app.head("/refuse")
    def refuse_head() -> None:
        raise HTTPException(403, "not today")

    @app.get("/missing")
    def missing() -> None:
        raise HTTPException(404, "nothing here")

    sub = APIRouter()

    @sub.post("/nested")
    def nested(item: NewItem, user: Reader) -> dict[str, str]:
        return {"id": user.id}

    app.include_router(sub, prefix="/sub")
    return app


def bearer(sub: str = "user-1", **claims: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(sub=sub, **claims)}"}


call = asgi_request


APP = SecurityStack(api(), settings=SETTINGS)
CASES = [
    ("GET", "/items", {}, 401, "authentication_required"),
    ("GET", "/items", bearer(scope="items:read"), 200, None),
    ("GET", "/items", bearer(scope="items:write"), 403, "insufficient_scope"),
    ("GET", "/items", bearer(scope="items:*"), 200, None),  # a hierarchy: wildcards honoured
    ("GET", "/reports", bearer(roles=["staff"]), 200, None),
    ("GET", "/reports", bearer(roles=["admin"]), 200, None),
    ("GET", "/reports", bearer(roles=["guest"]), 403, "forbidden"),
    ("GET", "/reports", {}, 401, "authentication_required"),
    ("GET", "/admin", bearer(roles=["admin"], scope="x"), 200, None),
    ("GET", "/admin", bearer(roles=["admin"]), 403, "insufficient_scope"),  # outer scopes too
    ("GET", "/admin", bearer(roles=["staff"], scope="x"), 403, "forbidden"),
    ("GET", "/posts/1", bearer(sub="alice"), 200, None),
    ("GET", "/posts/1", bearer(sub="bob"), 403, "forbidden"),
    ("GET", "/posts/1", bearer(sub="bob", roles=["admin"]), 200, None),
    ("GET", "/posts/9", bearer(sub="alice"), 404, None),
    ("GET", "/posts/9", {}, 401, "authentication_required"),  # nothing learnt anonymously
    ("GET", "/fastapi-own", {}, 401, "authentication_required"),
    ("GET", "/refuse", {}, 403, "forbidden"),
]


@pytest.mark.parametrize(("method", "path", "headers", "status", "code"), CASES)
def test_statuses_and_one_problem_format(
    method: str, path: str, headers: dict[str, str], status: int, code: str | None
) -> None:
    """Every 401/403 (secmw's dependencies, FastAPI's own OAuth2PasswordBearer, the app's
    HTTPException) is problem+json with its code; 401 carries the stack's challenges."""
    response = call(APP, method, path, headers=headers)
    assert response.status_code == status
    if code is None:
        return
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert (body["status"], body["code"], body["type"]) == (status, code, "about:blank")
    if status == 401:
        assert response.headers.get_list("www-authenticate")


def test_missing_scope_names_the_required_scopes_in_the_challenge() -> None:
    """403 insufficient_scope carries RFC 6750 §3.1's challenge with the needed scope."""
    response = call(APP, "POST", "/items", json={"name": "x"}, headers=bearer(scope="items:read"))
    assert response.status_code == 403
    assert response.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="items:write"'
    )


def test_other_http_exceptions_keep_fastapis_format() -> None:
    """A 404 the app raises is not a security answer: FastAPI's own body."""
    response = call(APP, "GET", "/missing")
    assert (response.status_code, response.json()) == (404, {"detail": "nothing here"})


@pytest.mark.parametrize("path", ["/items", "/sub/nested"])
@pytest.mark.parametrize("body", [b"{broken", b'{"name": 5}', b"[]"])
def test_no_422_before_401(path: str, body: bytes) -> None:
    """An anonymous POST with a broken or invalid JSON body is 401, not 422; a caller without
    the scope is 403; an authorized one gets the 422 (included routers too)."""
    headers = {"content-type": "application/json"}
    anonymous = call(APP, "POST", path, content=body, headers=headers)
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == PROBLEM_CONTENT_TYPE
    if path == "/items":
        narrow = call(APP, "POST", path, content=body, headers={**headers, **bearer()})
        assert narrow.status_code == 403
    scopes = "items:read items:write"
    allowed = call(APP, "POST", path, content=body, headers={**headers, **bearer(scope=scopes)})
    assert allowed.status_code == 422


def test_head_answer_has_no_body() -> None:
    """A refused HEAD gets the GET's fields, Content-Length included, and no body."""
    head, get = call(APP, "HEAD", "/refuse"), call(APP, "GET", "/refuse")
    assert head.status_code == get.status_code == 403
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content))


@pytest.mark.parametrize("scope", ["items read", "items\x00", "", 'a"b'])
def test_invalid_scope_fails_at_install(scope: str) -> None:
    """A scope with a space, a control character or a quote is refused when installing."""
    app = FastAPI()

    @app.get("/x")
    def x(user: Annotated[Principal, Security(BRIDGE.principal, scopes=[scope])]) -> None: ...

    with pytest.raises(ConfigurationError, match="invalid scope"):
        install(app, SETTINGS)


def test_invalid_scope_on_a_later_route_fails_at_startup() -> None:
    """A route added after install is checked when the app starts (lifespan)."""
    app = FastAPI()
    install(app, SETTINGS)

    @app.get("/x")
    def x(user: Annotated[Principal, Security(BRIDGE.principal, scopes=["a b"])]) -> None: ...

    async def start() -> None:
        async with app.router.lifespan_context(app):
            pass

    with pytest.raises(ConfigurationError, match="invalid scope 'a b'"):
        asyncio.run(start())


def test_without_middleware_answers_500_and_says_why(caplog: pytest.LogCaptureFixture) -> None:
    """No principal: a logged 500, never an anonymous pass."""
    with caplog.at_level(logging.ERROR, logger="secmw"):
        response = call(api(), "GET", "/items", headers=bearer(scope="items:read"))
    assert response.status_code == 500
    assert "SecurityStack" in caplog.text


def test_authentication_middleware_alone_is_enough() -> None:
    """The single-layer AuthenticationMiddleware sets the principal the dependencies read."""
    app = AuthenticationMiddleware(api(), jwt={"secret": SECRET})
    assert call(app, "GET", "/items", headers=bearer(scope="items:read")).status_code == 200


def test_module_level_dependencies_read_the_configured_authorizer() -> None:
    """secmw.fastapi.principal follows configure()'s settings (wildcards with a hierarchy)."""
    secmw.fastapi.configure(SETTINGS)
    app = FastAPI()
    install(app, SETTINGS)

    @app.get("/x")
    def x(user: Annotated[Principal, Security(secmw.fastapi.principal, scopes=["a:b"])]):
        return {"id": user.id}

    wrapped = SecurityStack(app, settings=SETTINGS)
    assert call(wrapped, "GET", "/x", headers=bearer(scope="a:*")).status_code == 200
    assert call(wrapped, "GET", "/x", headers=bearer(scope="b")).status_code == 403


def openapi(settings: Any = SETTINGS) -> dict[str, Any]:
    return call(SecurityStack(api(settings), settings=settings), "GET", "/openapi.json").json()


def test_openapi_lists_every_configured_scheme() -> None:
    """OAuth2 password flow (token URL, scopes) and the API key: the Authorize button's
    entries; FastAPI's placeholder is gone."""
    document = openapi()
    schemes = document["components"]["securitySchemes"]
    assert set(schemes) == {"OAuth2", "ApiKeyAuth", "ApiKeyQuery", "OAuth2PasswordBearer"}
    assert schemes["OAuth2"]["flows"]["password"]["tokenUrl"] == "/token"
    assert schemes["ApiKeyAuth"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    assert "secmw" not in str(document["paths"])


def test_openapi_operations_say_what_the_stack_answers() -> None:
    """Secured operations: their scopes on the OAuth2 requirement, 400/401/403 problem+json
    with the challenge header; the Problem component; unsecured ones get no requirement."""
    document = openapi()
    create = document["paths"]["/items"]["post"]
    assert {"OAuth2": ["items:write"]} in create["security"]
    assert {"ApiKeyAuth": []} in create["security"]
    for status in ("400", "401", "403"):
        content = create["responses"][status]["content"]
        assert content == {
            PROBLEM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}
        }
    assert create["responses"]["401"]["headers"]["WWW-Authenticate"]["required"] is True
    assert "WWW-Authenticate" in create["responses"]["403"]["headers"]
    assert "422" in create["responses"]
    admin = document["paths"]["/admin"]["get"]
    assert {"OAuth2": ["x"]} in admin["security"]
    nested = document["paths"]["/sub/nested"]["post"]
    assert {"OAuth2": ["items:read"]} in nested["security"]
    assert "security" not in document["paths"]["/missing"]["get"]
    assert document["components"]["schemas"]["Problem"]["required"] == ["type", "title", "status"]


def test_openapi_429_and_503_follow_the_settings(redis_url: str) -> None:
    """Rate limiting on Redis: 429 with Retry-After and the RateLimit fields, and 503."""
    limits = {"default": "5/minute", "storage_uri": redis_url}
    settings = SecuritySettings(**{**SECTIONS, "rate_limit": limits})
    responses = openapi(settings)["paths"]["/items"]["get"]["responses"]
    assert set(responses["429"]["headers"]) == {"Retry-After", "RateLimit", "RateLimit-Policy"}
    assert responses["503"]["content"][PROBLEM_CONTENT_TYPE]
    assert "503" not in openapi()["paths"]["/items"]["get"]["responses"]


def test_websocket_handshake_is_refused_with_the_problem() -> None:
    """A websocket route's Security dependency refuses the anonymous handshake with the same
    problem+json, as Starlette's websocket denial response."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Starlette's TestClient: httpx to httpx2 notice
        from fastapi.testclient import TestClient
    from starlette.testclient import WebSocketDenialResponse

    app = FastAPI()
    install(app, SETTINGS)

    @app.websocket("/ws")
    async def ws(
        websocket: WebSocket,
        user: Annotated[Principal, Security(BRIDGE.principal, scopes=["items:read"])],
    ) -> None:
        await websocket.accept()
        await websocket.send_text(user.id)
        await websocket.close()

    client = TestClient(SecurityStack(app, settings=SETTINGS), client=("127.0.0.1", 1))
    with pytest.raises(WebSocketDenialResponse) as refused:
        client.websocket_connect("/ws").__enter__()
    assert refused.value.status_code == 401
    assert refused.value.headers["content-type"] == PROBLEM_CONTENT_TYPE
    with client.websocket_connect("/ws", headers=bearer(scope="items:read")) as accepted:
        assert accepted.receive_text() == "user-1"
