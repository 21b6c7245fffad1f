"""The FastOpenAPI bridge on real fastopenapi Starlette and Flask routers behind secmw's
middleware: 401/403, wildcards, thread pools, no principal leaking across concurrent requests."""

import asyncio
import concurrent.futures
import contextvars
import logging
from typing import Annotated, Any

import httpx
import pytest
from fastopenapi import Depends, Security
from fastopenapi.routers import FlaskRouter, StarletteRouter
from flask import Flask
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from werkzeug.test import Client

from secmw import ConfigurationError, MiddlewareNotInstalled, Principal, SecuritySettings
from secmw import asgi as secmw_asgi
from secmw import fastopenapi as bridge_module
from secmw import wsgi as secmw_wsgi
from secmw.authz import Authorizer
from secmw.core.context import current_principal
from secmw.fastopenapi import (
    SecurityBridge,
    describe_security,
    security_scheme,
    security_schemes,
)
from tests.support import SECRET, make_token, uvicorn_server, werkzeug_server

# No `from __future__ import annotations` here: FastOpenAPI reads annotations at run time.

SETTINGS = SecuritySettings(
    jwt={"secret": SECRET},
    authz={"roles": {"admin": ["users:*", "@staff"], "staff": ["reports:read"]}},
    tokens={
        "token_url": "/token",
        "password_grant": True,
        "scopes": {"items:read": "Read items"},
    },
)
BRIDGE = SecurityBridge(settings=SETTINGS)
CONCURRENCY = 50

ItemsReader = Annotated[Principal, Security(BRIDGE.principal, scopes=["items:read"])]
ReportsReader = Annotated[Principal, Depends(BRIDGE.require_permissions("reports:read"))]


def bearer(sub: str = "user-1", **claims: Any) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(sub=sub, **claims)}"}


def identity(user: Principal) -> dict[str, Any]:
    return {"id": user.id, "scopes": sorted(user.scopes)}


def starlette_app(gate: "Gate | None" = None, *, middleware: bool = True) -> Any:
    """A fastopenapi Starlette router app with sync and async secured routes."""
    app = Starlette()
    router = StarletteRouter(app=app, security_scheme=security_scheme(SETTINGS))

    @router.get("/sync-items")
    def sync_items(user: ItemsReader):
        return identity(user)

    @router.get("/async-items")
    async def async_items(user: ItemsReader):
        return identity(user)

    @router.get("/reports")
    async def reports(user: ReportsReader):
        return identity(user)

    @router.get("/both-roles")
    def both_roles(user: Annotated[Principal, Depends(BRIDGE.require_all_roles("admin", "staff"))]):
        return identity(user)

    @router.get("/concurrent")
    async def concurrent_view(user: ItemsReader):
        assert gate is not None
        await gate.wait()  # every request is in flight before any reads its principal again
        return {
            "dependency": user.id,
            "context": current_principal().id,
            "to_thread": (await asyncio.to_thread(current_principal)).id,
            "threadpool": (await run_in_threadpool(current_principal)).id,
        }

    return secmw_asgi.AuthenticationMiddleware(app, settings=SETTINGS) if middleware else app


def flask_app(barrier: Any = None, *, middleware: bool = True) -> Flask:
    """A fastopenapi Flask router app with secured routes."""
    app = Flask(__name__)
    router = FlaskRouter(app=app, security_scheme=security_scheme(SETTINGS))
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=4)

    @router.get("/sync-items")
    def sync_items(user: ItemsReader):
        return identity(user)

    @router.get("/reports")
    def reports(user: ReportsReader):
        return identity(user)

    @router.get("/concurrent")
    def concurrent_view(user: ItemsReader):
        barrier.wait()  # every request thread is inside before any reads its principal again
        copied = pool.submit(contextvars.copy_context().run, current_principal).result()
        bare = pool.submit(_principal_or_none).result()
        return {
            "dependency": user.id,
            "context": current_principal().id,
            "copied": copied.id,
            "bare": bare,
        }

    if middleware:
        app.wsgi_app = secmw_wsgi.AuthenticationMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, settings=SETTINGS
        )
    return app


def _principal_or_none() -> str | None:
    try:
        return current_principal().id
    except MiddlewareNotInstalled:
        return None


class Gate:
    """Opens when `expected` requests are waiting (or after a timeout, failing the test)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.waiting = 0
        self.event = asyncio.Event()

    async def wait(self) -> None:
        self.waiting += 1
        if self.waiting >= self.expected:
            self.event.set()
        await asyncio.wait_for(self.event.wait(), timeout=10)


CASES = [
    ("/sync-items", {}, 401),
    ("/sync-items", bearer(scope="items:read"), 200),
    ("/sync-items", bearer(scope="items:write"), 403),
    ("/sync-items", bearer(scope="items:*"), 200),  # wildcard: a hierarchy is configured
    ("/sync-items", bearer(scope="*"), 200),
    ("/reports", bearer(roles=["staff"]), 200),
    ("/reports", bearer(roles=["admin"]), 200),  # admin includes staff
    ("/reports", bearer(roles=["guest"]), 403),
    ("/reports", {}, 401),
]
CASE_IDS = [
    "anonymous",
    "scope",
    "wrong-scope",
    "wildcard-scope",
    "star-scope",
    "permission",
    "inherited-permission",
    "no-permission",
    "anonymous-permission",
]


@pytest.mark.parametrize(("path", "headers", "status"), CASES, ids=CASE_IDS)
def test_starlette_router_statuses(path: str, headers: dict[str, str], status: int) -> None:
    """401 anonymous, 403 missing scope or permission, 200 otherwise (Starlette router)."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(starlette_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get(path, headers=headers)

    response = asyncio.run(call())
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'
        assert response.json()["error"]["type"] == "authentication_error"
    if status == 403:
        assert response.json()["error"]["type"] == "authorization_error"


@pytest.mark.parametrize(("path", "headers", "status"), CASES, ids=CASE_IDS)
def test_flask_router_statuses(path: str, headers: dict[str, str], status: int) -> None:
    """The same table through fastopenapi's Flask router and the WSGI middleware."""
    response = Client(flask_app()).get(path, headers=headers)
    assert response.status_code == status
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="api"'


def test_sync_and_async_endpoints_see_the_principal() -> None:
    """Sync and async Starlette endpoints get the same principal from Security()."""

    async def call() -> list[dict[str, Any]]:
        transport = httpx.ASGITransport(starlette_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            headers = bearer("ann", scope="items:read extra")
            return [
                (await client.get(p, headers=headers)).json()
                for p in ("/sync-items", "/async-items")
            ]

    assert asyncio.run(call()) == [{"id": "ann", "scopes": ["extra", "items:read"]}] * 2


def test_all_roles_dependency() -> None:
    """`require_all_roles` needs every role (included ones count)."""
    client = httpx.ASGITransport(starlette_app())

    async def status(headers: dict[str, str]) -> int:
        async with httpx.AsyncClient(transport=client, base_url="http://app") as http:
            return (await http.get("/both-roles", headers=headers)).status_code

    assert asyncio.run(status(bearer(roles=["admin"]))) == 200
    assert asyncio.run(status(bearer(roles=["staff"]))) == 403


def test_no_principal_leaks_across_50_concurrent_asgi_requests() -> None:
    """Fifty interleaved requests with different tokens each see only their own principal,
    in the dependency, after awaiting, and in `to_thread` / `run_in_threadpool`."""

    async def scenario() -> list[dict[str, Any]]:
        app = starlette_app(Gate(CONCURRENCY))
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            responses = await asyncio.gather(
                *(
                    client.get("/concurrent", headers=bearer(f"user-{i}", scope="items:read"))
                    for i in range(CONCURRENCY)
                )
            )
        assert all(r.status_code == 200 for r in responses)
        return [r.json() for r in responses]

    for i, body in enumerate(asyncio.run(scenario())):
        assert set(body.values()) == {f"user-{i}"}


@pytest.mark.server
def test_no_principal_leaks_over_real_http_with_uvicorn() -> None:
    """The same over a real uvicorn server and HTTP connections."""
    with uvicorn_server(starlette_app(Gate(CONCURRENCY))) as url:

        async def scenario() -> list[httpx.Response]:
            limits = httpx.Limits(max_connections=CONCURRENCY)
            async with httpx.AsyncClient(base_url=url, limits=limits, timeout=20) as client:
                return await asyncio.gather(
                    *(
                        client.get("/concurrent", headers=bearer(f"u{i}", scope="items:read"))
                        for i in range(CONCURRENCY)
                    )
                )

        responses = asyncio.run(scenario())
    for i, response in enumerate(responses):
        assert response.status_code == 200
        assert set(response.json().values()) == {f"u{i}"}


@pytest.mark.server
def test_no_principal_leaks_across_threads_with_werkzeug() -> None:
    """Fifty simultaneous requests on werkzeug's threaded server: each thread sees its own
    principal; a pool thread sees it only through a copied context, and never another's."""
    import threading

    app = flask_app(threading.Barrier(CONCURRENCY, timeout=15))
    limits = httpx.Limits(max_connections=CONCURRENCY)
    with werkzeug_server(app) as url, httpx.Client(limits=limits, timeout=20) as client:

        def fetch(i: int) -> httpx.Response:
            headers = bearer(f"user-{i}", scope="items:read")
            return client.get(f"{url}/concurrent", headers=headers)

        with concurrent.futures.ThreadPoolExecutor(max_workers=CONCURRENCY) as pool:
            responses = list(pool.map(fetch, range(CONCURRENCY)))
    for i, response in enumerate(responses):
        assert response.status_code == 200
        body = response.json()
        assert (body["dependency"], body["context"], body["copied"]) == (f"user-{i}",) * 3
        assert body["bare"] is None


def test_without_middleware_starlette_answers_500_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """No middleware: never an anonymous pass, but a 500 and a log line naming the fix."""

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(starlette_app(middleware=False))
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.get("/sync-items", headers=bearer(scope="items:read"))

    with caplog.at_level(logging.ERROR):
        response = asyncio.run(call())
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "Internal server error"
    assert "secmw.asgi.AuthenticationMiddleware" in caplog.text


def test_without_middleware_flask_answers_500_and_says_why(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same for the Flask router."""
    with caplog.at_level(logging.ERROR):
        response = Client(flask_app(middleware=False)).get("/sync-items")
    assert response.status_code == 500
    assert "secmw.wsgi.AuthenticationMiddleware" in caplog.text


def test_openapi_describes_the_oauth2_password_flow() -> None:
    """/openapi.json: the password flow with tokenUrl and known scopes; per-route scopes."""

    async def call() -> dict[str, Any]:
        transport = httpx.ASGITransport(starlette_app())
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.get("/openapi.json")).json()

    schema = asyncio.run(call())
    flow = schema["components"]["securitySchemes"]["OAuth2"]["flows"]["password"]
    assert flow == {
        "tokenUrl": "/token",
        "refreshUrl": "/token",
        "scopes": {"items:read": "Read items"},
    }
    assert schema["paths"]["/sync-items"]["get"]["security"] == [{"OAuth2": ["items:read"]}]
    assert schema["paths"]["/reports"]["get"]["security"] == [{"OAuth2": []}]  # nested Security


API_KEYS = {"keys": [{"hash": "sha256:" + "0" * 64, "id": "svc"}]}
BASIC = {"users": {"ann": {"password_hash": "$argon2id$x"}}}


@pytest.mark.parametrize(
    ("sections", "kind", "expected"),
    [
        (
            {"jwt": {"secret": SECRET}},
            None,
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        ),
        (
            {"jwt": {"secret": SECRET}, "tokens": {"token_url": "/t", "password_grant": True}},
            None,
            {
                "type": "oauth2",
                "flows": {"password": {"tokenUrl": "/t", "refreshUrl": "/t", "scopes": {}}},
            },
        ),
        (
            {"jwt": {"secret": SECRET}, "tokens": {"token_url": "/t", "password_grant": True}},
            "bearer",
            {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"},
        ),
        (
            {"api_keys": {**API_KEYS, "header": "X-Key"}},
            None,
            {"type": "apiKey", "in": "header", "name": "X-Key"},
        ),
        (
            {"api_keys": {**API_KEYS, "header": ""}},
            None,
            {"type": "apiKey", "in": "query", "name": "api_key"},
        ),
        (
            {"api_keys": API_KEYS},
            "apikey-query",
            {"type": "apiKey", "in": "query", "name": "api_key"},
        ),
        ({"basic": BASIC}, None, {"type": "http", "scheme": "basic"}),
        (
            {"basic": BASIC, "jwt": {"secret": SECRET}, "auth": {"order": "basic,bearer"}},
            None,
            {"type": "http", "scheme": "basic"},
        ),
    ],
    ids=[
        "bearer",
        "oauth2",
        "forced-bearer",
        "apikey-header",
        "apikey-query-only",
        "forced-query",
        "basic",
        "order",
    ],
)
def test_security_scheme_follows_the_settings(
    sections: dict[str, Any], kind: Any, expected: dict[str, Any]
) -> None:
    """The router's scheme is what the middleware enforces, first in SECMW_AUTH__ORDER."""
    assert security_scheme(SecuritySettings(**sections), kind=kind) == expected


def test_security_scheme_refuses_what_is_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing configured, or a kind that is not: ConfigurationError."""
    with pytest.raises(ConfigurationError, match="no authentication configured"):
        security_scheme()
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    assert security_scheme()["scheme"] == "bearer"
    with pytest.raises(ConfigurationError, match="'basic' is not configured"):
        security_scheme(kind="basic")


def test_describe_security_lists_every_configured_scheme() -> None:
    """Several schemes on one router: each secured operation accepts any of them."""
    settings = SecuritySettings(
        jwt={"secret": SECRET},
        api_keys=API_KEYS,
        tokens={"token_url": "/token", "password_grant": True},
    )
    assert list(security_schemes(settings)) == ["oauth2", "bearer", "apikey", "apikey-query"]
    app = Starlette()
    router = StarletteRouter(app=app)
    describe_security(router, settings)

    @router.get("/x")
    def x(user: Annotated[Principal, Security(BRIDGE.principal, scopes=["a"])]):
        return {}

    schema = router.openapi
    assert set(schema["components"]["securitySchemes"]) == {"OAuth2", "ApiKeyAuth", "ApiKeyQuery"}
    assert schema["paths"]["/x"]["get"]["security"] == [
        {"OAuth2": ["a"]},
        {"ApiKeyAuth": []},
        {"ApiKeyQuery": []},
    ]


def test_module_level_bridge_reads_the_environment_or_configure(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`secmw.fastopenapi.principal` uses SECMW_AUTHZ__* (or `configure`) for wildcards."""
    app = Starlette()
    router = StarletteRouter(app=app)

    @router.get("/items")
    def items(user: Annotated[Principal, Security(bridge_module.principal, scopes=["items:read"])]):
        return identity(user)

    wrapped = secmw_asgi.AuthenticationMiddleware(app, jwt={"secret": SECRET})

    async def status() -> int:
        transport = httpx.ASGITransport(wrapped)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return (await client.get("/items", headers=bearer(scope="items:*"))).status_code

    try:
        bridge_module.configure(SecuritySettings())
        assert asyncio.run(status()) == 403  # no hierarchy: scopes compare exactly
        monkeypatch.setenv("SECMW_AUTHZ__SCOPE_WILDCARDS", "true")
        bridge_module.configure()
        assert bridge_module.bridge.authorizer.scope_wildcards
        assert asyncio.run(status()) == 200
    finally:
        bridge_module.configure(authorizer=Authorizer())


@pytest.mark.parametrize(
    "make",
    [
        lambda: BRIDGE.require_roles(),
        lambda: BRIDGE.require_permissions("users:*:x"),
        lambda: bridge_module.require_permissions(""),
    ],
    ids=["no-roles", "bad-wildcard", "empty-permission"],
)
def test_dependency_factories_refuse_bad_arguments(make: Any) -> None:
    """Bad role or permission arguments fail when the route is declared."""
    with pytest.raises(ConfigurationError):
        make()


def test_oauth2_flows_follow_the_token_endpoint() -> None:
    """The password flow only when the password grant is on; client credentials with clients."""
    clients = {"svc": {"secret_hash": "sha256:" + "0" * 64}}
    only_clients = SecuritySettings(
        jwt={"secret": SECRET}, tokens={"token_url": "/token", "clients": clients}
    )
    flows = security_schemes(only_clients)["oauth2"]["flows"]
    assert list(flows) == ["clientCredentials"]
    assert flows["clientCredentials"]["tokenUrl"] == "/token"
    nothing = SecuritySettings(jwt={"secret": SECRET}, tokens={"token_url": "/token"})
    assert "oauth2" not in security_schemes(nothing)
