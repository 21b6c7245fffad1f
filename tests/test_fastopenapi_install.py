"""secmw.fastopenapi.install on real FastOpenAPI Starlette and Flask routers behind the stack:
every 401/403 is problem+json with its challenge, no 422 before 401, a truthful document."""

import asyncio
import json
from typing import Annotated, Any

import httpx
import pytest
from fastopenapi import Security
from fastopenapi.errors import AuthorizationError
from fastopenapi.routers import FlaskRouter, StarletteRouter
from flask import Flask
from pydantic import BaseModel
from starlette.applications import Starlette
from werkzeug.test import Client

from secmw import ConfigurationError, Principal, SecuritySettings
from secmw import asgi as secmw_asgi
from secmw import wsgi as secmw_wsgi
from secmw.core.deny import PROBLEM_CONTENT_TYPE
from secmw.fastopenapi import SecurityBridge, install
from tests.support import SECRET, make_token

# No `from __future__ import annotations` here: FastOpenAPI reads annotations at run time.

SETTINGS = SecuritySettings(
    jwt={"secret": SECRET},
    tokens={"token_url": "/token", "password_grant": True, "scopes": {"items:read": "Read"}},
    rate_limit={"default": ""},
)
BRIDGE = SecurityBridge(settings=SETTINGS)
Writer = Annotated[Principal, Security(BRIDGE.principal, scopes=["items:write"])]


class NewItem(BaseModel):
    name: str


def routes(router: Any) -> None:
    @router.post("/items")
    def create(body: NewItem, user: Writer) -> dict[str, str]:
        return {"name": body.name}

    @router.get("/refuse")
    def refuse() -> None:
        raise AuthorizationError("not today")

    @router.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}


def starlette_app() -> Any:
    app = Starlette()
    router = StarletteRouter(app=app)
    routes(router)
    install(router, SETTINGS)
    return secmw_asgi.SecurityStack(app, settings=SETTINGS)


def flask_app() -> Any:
    app = Flask("t")
    router = FlaskRouter(app=app)
    routes(router)
    install(router, SETTINGS)
    app.wsgi_app = secmw_wsgi.SecurityStack(app.wsgi_app, settings=SETTINGS)  # type: ignore[method-assign]
    return app


def request(framework: str, method: str, path: str, **kwargs: Any) -> tuple[int, Any, bytes]:
    """(status, headers, body) through the framework's router and the stack."""
    if framework == "flask":
        headers = kwargs.pop("headers", {})
        response = Client(flask_app()).open(
            path,
            method=method,
            headers=headers,
            data=kwargs.get("content"),
            environ_base={"REMOTE_ADDR": "127.0.0.1"},
        )
        return response.status_code, response.headers, response.get_data()

    async def run() -> httpx.Response:
        transport = httpx.ASGITransport(starlette_app(), client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    answer = asyncio.run(run())
    return answer.status_code, answer.headers, answer.content


FRAMEWORKS = ["starlette", "flask"]
JSON = {"content-type": "application/json"}


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(scope=scope)}", **JSON}


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("body", [b'{"name": "x"}', b"{broken", b"[]"])
def test_anonymous_is_401_problem_before_the_body_is_read(framework: str, body: bytes) -> None:
    """No credential: 401 problem+json with the stack's challenge, whatever the body."""
    status, headers, content = request(framework, "POST", "/items", content=body, headers=JSON)
    assert status == 401
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert headers["www-authenticate"] == 'Bearer realm="api"'
    assert b'"code":"authentication_required"' in content


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("body", [b'{"name": "x"}', b"{broken"])
def test_missing_scope_is_403_insufficient_scope(framework: str, body: bytes) -> None:
    """A scope missing: 403 problem+json, RFC 6750 §3.1 challenge, before the body."""
    status, headers, content = request(
        framework, "POST", "/items", content=body, headers=bearer("items:read")
    )
    assert status == 403
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert headers["www-authenticate"] == ('Bearer error="insufficient_scope", scope="items:write"')
    assert b'"code":"insufficient_scope"' in content


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_authorized_caller_gets_the_route(framework: str) -> None:
    """The scope held: the route runs; a broken body is then the framework's own answer."""
    status, _, _ = request(
        framework, "POST", "/items", content=b'{"name": "x"}', headers=bearer("items:write")
    )
    assert status == 200
    status, _, _ = request(
        framework, "POST", "/items", content=b"{broken", headers=bearer("items:write")
    )
    assert status in (400, 422)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_the_apps_own_authorization_error_is_problem_json(framework: str) -> None:
    """FastOpenAPI's AuthorizationError raised by a route: the same format."""
    status, headers, content = request(framework, "GET", "/refuse")
    assert status == 403
    assert headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert b'"detail":"not today"' in content


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_openapi_tells_the_stacks_answers(framework: str) -> None:
    """Secured operation: OAuth2 requirement with its scope, problem+json 400/401/403 (no
    FastOpenAPI ErrorSchema left), 429 with its fields; the Problem component."""
    _, _, content = request(framework, "GET", "/openapi.json")
    document = json.loads(content)
    create = document["paths"]["/items"]["post"]
    assert create["security"] == [{"OAuth2": ["items:write"]}]
    for status in ("400", "401", "403", "429"):
        assert list(create["responses"][status]["content"]) == [PROBLEM_CONTENT_TYPE]
    assert "Retry-After" in create["responses"]["429"]["headers"]
    assert "WWW-Authenticate" in create["responses"]["401"]["headers"]
    assert "security" not in document["paths"]["/health"]["get"]
    assert "Problem" in document["components"]["schemas"]
    assert "OAuth2" in document["components"]["securitySchemes"]


@pytest.mark.parametrize("scope", ["items read", "items\x7f", 'a"b'])
def test_invalid_scope_fails_at_install(scope: str) -> None:
    """A scope with a space, a control character or a quote: ConfigurationError naming it."""
    router = StarletteRouter(app=Starlette())

    @router.get("/x")
    def x(user: Annotated[Principal, Security(BRIDGE.principal, scopes=[scope])]) -> None: ...

    with pytest.raises(ConfigurationError, match="invalid scope"):
        install(router, SETTINGS)
