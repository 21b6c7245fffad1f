"""Framework reach: Falcon (ASGI and WSGI), Quart and Django (ASGI and WSGI) behind SecurityStack.

Every app serves the same four routes, reading the principal the way its framework hands over the
request (ASGI ``scope["state"]["principal"]`` and ``scope["user"]``, WSGI
``environ["secmw.principal"]``) and through ``secmw.current_principal()``:

- ``/me``: who is calling (authentication required by the stack);
- ``/admin``: the app refuses with 403 unless the principal holds ``admin:read``;
- ``/limited``: two requests a minute per client;
- ``/internal/status``: only from 10.0.0.0/8 (an IP rule), so loopback clients get 403.

Each app is driven in process (``httpx.ASGITransport`` / ``httpx.WSGITransport``) and once over
real HTTP (uvicorn for ASGI, werkzeug for WSGI).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import falcon
import falcon.asgi
import httpx
import pytest
from django.http import HttpRequest, JsonResponse
from django.urls import path
from quart import Quart
from quart import request as quart_request

import secmw
from secmw import asgi, wsgi
from secmw.core.principal import Principal
from tests.support import SECRET, make_token, uvicorn_server, werkzeug_server

SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "auth": {"required": ["/me", "/admin"]},
    "rate_limit": {"default": "", "rules": [{"path": "/limited", "limit": "2/minute"}]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
}
SECURITY_HEADERS = {
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'",
    "referrer-policy": "no-referrer",
}
READER = make_token(sub="reader-1", scope="items:read items:write")
ADMIN = make_token(sub="admin-1", scope="admin:read")


def describe(principal: Principal, user: Any = None) -> dict[str, Any]:
    """What ``/me`` answers: the framework's principal, the context variable's, Starlette's user."""
    body = {
        "id": principal.id,
        "scopes": sorted(principal.scopes),
        "context": secmw.current_principal().id,
    }
    if user is not None:
        body["user"] = user.id
    return body


def may_administer(principal: Principal) -> bool:
    """The app-side scope check of ``/admin``."""
    return principal.has_scopes("admin:read")


# -- Falcon ------------------------------------------------------------------------------


class FalconASGIResource:
    """Falcon ASGI responders reading ``req.scope``."""

    async def on_get_me(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = describe(req.scope["state"]["principal"], req.scope["user"])

    async def on_get_admin(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        if not may_administer(req.scope["state"]["principal"]):
            raise falcon.HTTPForbidden(description="admin:read required")
        resp.media = {"ok": True}

    async def on_get(self, req: falcon.asgi.Request, resp: falcon.asgi.Response) -> None:
        resp.media = {"ok": True}


class FalconWSGIResource:
    """Falcon WSGI responders reading ``req.env``."""

    def on_get_me(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = describe(req.env["secmw.principal"])

    def on_get_admin(self, req: falcon.Request, resp: falcon.Response) -> None:
        if not may_administer(req.env["secmw.principal"]):
            raise falcon.HTTPForbidden(description="admin:read required")
        resp.media = {"ok": True}

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"ok": True}


def falcon_routes(app: Any, resource: object) -> Any:
    """Mount the four routes on a Falcon app."""
    app.add_route("/me", resource, suffix="me")
    app.add_route("/admin", resource, suffix="admin")
    app.add_route("/limited", resource)
    app.add_route("/internal/status", resource)
    return app


def falcon_asgi_app() -> Any:
    """``falcon.asgi.App`` behind the ASGI stack."""
    return asgi.SecurityStack(falcon_routes(falcon.asgi.App(), FalconASGIResource()), **SECTIONS)


def falcon_wsgi_app() -> Any:
    """``falcon.App`` behind the WSGI stack."""
    return wsgi.SecurityStack(falcon_routes(falcon.App(), FalconWSGIResource()), **SECTIONS)


# -- Quart -------------------------------------------------------------------------------


def quart_app() -> Any:
    """A Quart app behind the ASGI stack, reading ``request.scope``."""
    app = Quart(__name__)

    @app.get("/me")
    async def me() -> dict[str, Any]:
        return describe(quart_request.scope["state"]["principal"], quart_request.scope["user"])

    @app.get("/admin")
    async def admin() -> tuple[dict[str, Any], int]:
        if not may_administer(quart_request.scope["state"]["principal"]):
            return {"detail": "admin:read required"}, 403
        return {"ok": True}, 200

    @app.get("/limited")
    @app.get("/internal/status")
    async def ok() -> dict[str, Any]:
        return {"ok": True}

    return asgi.SecurityStack(app, **SECTIONS)


# -- Django ------------------------------------------------------------------------------


def django_principal(request: HttpRequest) -> Principal:
    """ASGI requests carry the scope, WSGI requests the environ as ``META``."""
    scope = getattr(request, "scope", None)
    if scope is not None:
        principal: Principal = scope["state"]["principal"]
        assert scope["user"] is principal
        return principal
    wsgi_principal: Principal = request.META["secmw.principal"]
    return wsgi_principal


def django_me(request: HttpRequest) -> JsonResponse:
    """``/me`` as a plain (sync) Django view."""
    return JsonResponse(describe(django_principal(request)))


def django_admin(request: HttpRequest) -> JsonResponse:
    """``/admin``: 403 from the view without ``admin:read``."""
    if not may_administer(django_principal(request)):
        return JsonResponse({"detail": "admin:read required"}, status=403)
    return JsonResponse({"ok": True})


def django_ok(request: HttpRequest) -> JsonResponse:
    """``/limited`` and ``/internal/status``."""
    return JsonResponse({"ok": True})


urlpatterns = [
    path("me", django_me),
    path("admin", django_admin),
    path("limited", django_ok),
    path("internal/status", django_ok),
]


def configure_django() -> None:
    """Settings for an in-process Django: this module is the URLconf, nothing else installed."""
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            ROOT_URLCONF=__name__,
            ALLOWED_HOSTS=["testserver", "127.0.0.1"],
            SECRET_KEY="django-insecure-test-only-" + "k" * 40,
            INSTALLED_APPS=[],
            MIDDLEWARE=[],
            USE_TZ=True,
        )


def django_asgi_app() -> Any:
    """Django's ASGI handler behind the ASGI stack."""
    configure_django()
    from django.core.asgi import get_asgi_application

    return asgi.SecurityStack(get_asgi_application(), **SECTIONS)


def django_wsgi_app() -> Any:
    """Django's WSGI handler behind the WSGI stack."""
    configure_django()
    from django.core.wsgi import get_wsgi_application

    return wsgi.SecurityStack(get_wsgi_application(), **SECTIONS)


# -- driving the apps --------------------------------------------------------------------

FRAMEWORKS: dict[str, tuple[str, Callable[[], Any]]] = {
    "falcon-asgi": ("asgi", falcon_asgi_app),
    "falcon-wsgi": ("wsgi", falcon_wsgi_app),
    "quart": ("asgi", quart_app),
    "django-asgi": ("asgi", django_asgi_app),
    "django-wsgi": ("wsgi", django_wsgi_app),
}
Call = tuple[str, str | None]  # path, bearer token


def headers_for(token: str | None) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"} if token else {}


def in_process(name: str, requests: list[Call]) -> list[httpx.Response]:
    """Send ``requests`` in order to a fresh app, in process, from 127.0.0.1."""
    kind, build = FRAMEWORKS[name]
    app = build()
    base = "http://testserver"
    if kind == "wsgi":
        transport = httpx.WSGITransport(app=app)
        with httpx.Client(transport=transport, base_url=base) as client:
            return [client.get(p, headers=headers_for(t)) for p, t in requests]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return [await client.get(p, headers=headers_for(t)) for p, t in requests]

    return asyncio.run(run())


def over_http(name: str) -> AbstractContextManager[str]:
    """A fresh app on a real server: uvicorn for ASGI, werkzeug for WSGI."""
    kind, build = FRAMEWORKS[name]
    return uvicorn_server(build()) if kind == "asgi" else werkzeug_server(build())


def assert_security_headers(response: httpx.Response) -> None:
    for name, value in SECURITY_HEADERS.items():
        assert response.headers.get(name) == value, name


def expected_me(name: str, sub: str, scopes: list[str]) -> dict[str, Any]:
    body: dict[str, Any] = {"id": sub, "scopes": scopes, "context": sub}
    if name in ("falcon-asgi", "quart"):
        body["user"] = sub
    return body


CASES = [
    pytest.param("/me", READER, 200, "app", id="principal"),
    pytest.param("/me", None, 401, "authentication_required", id="no-credentials"),
    pytest.param("/me", "not-a-jwt", 401, "invalid_token", id="bad-token"),
    pytest.param("/me", make_token(secret="t" * 32), 401, "invalid_token", id="wrong-key"),
    pytest.param("/admin", READER, 403, "app", id="missing-scope"),
    pytest.param("/admin", ADMIN, 200, "app", id="scope-held"),
    pytest.param("/internal/status", ADMIN, 403, "ip_not_allowed", id="ip-rule"),
]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("path", "token", "status", "answered_by"), CASES)
def test_statuses(
    framework: str, path: str, token: str | None, status: int, answered_by: str
) -> None:
    """Each framework sees the stack's verdicts; refusals by the stack are problem+json."""
    (response,) = in_process(framework, [(path, token)])
    assert response.status_code == status
    assert_security_headers(response)
    if answered_by == "app":
        assert not response.headers["content-type"].startswith("application/problem+json")
    else:
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["code"] == answered_by
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_principal_and_scopes(framework: str) -> None:
    """The route reads the principal natively, via ``current_principal()`` and ``scope["user"]``."""
    responses = in_process(framework, [("/me", READER), ("/me", ADMIN)])
    assert [r.json() for r in responses] == [
        expected_me(framework, "reader-1", ["items:read", "items:write"]),
        expected_me(framework, "admin-1", ["admin:read"]),
    ]


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rate_limit(framework: str) -> None:
    """The third request in a minute is refused with 429, Retry-After and the security headers."""
    responses = in_process(framework, [("/limited", None)] * 3)
    assert [r.status_code for r in responses] == [200, 200, 429]
    refused = responses[-1]
    assert refused.json()["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) > 0
    assert_security_headers(refused)


@pytest.mark.server
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_over_real_http(framework: str) -> None:
    """Over a real server on 127.0.0.1 the same contract holds: 200, 401, 403 (app, IP), 429."""
    with over_http(framework) as url, httpx.Client(base_url=url) as client:
        me = client.get("/me", headers=headers_for(READER))
        bad = client.get("/me", headers=headers_for("not-a-jwt"))
        missing = client.get("/admin", headers=headers_for(READER))
        internal = client.get("/internal/status", headers=headers_for(ADMIN))
        limited = [client.get("/limited").status_code for _ in range(3)]
    assert me.json() == expected_me(framework, "reader-1", ["items:read", "items:write"])
    assert (bad.status_code, missing.status_code, internal.status_code) == (401, 403, 403)
    assert internal.json()["code"] == "ip_not_allowed"
    assert limited == [200, 200, 429]
    for response in (me, bad, missing, internal):
        assert_security_headers(response)
