"""CORS beside SecurityStack: Starlette's ``CORSMiddleware`` outside and inside, flask-cors inside.

A browser sends a preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``)
without credentials before a cross-origin request that carries ``Authorization`` (Fetch standard
§3.2.2, §4.8). The stack must let the preflight reach the CORS layer wherever it sits: no 401 on
a path that requires authentication, and no 429 however many preflights arrive. The actual
request then carries both the CORS and the security headers.

flask-cors is a Flask extension (``after_request`` hooks), so it always runs inside
``app.wsgi_app``, that is inside the stack: there is no "outside" arrangement to test for it.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify
from flask_cors import CORS
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from secmw import asgi, current_principal, wsgi
from tests.support import SECRET, make_token

ORIGIN = "https://app.example"
LIMIT = 2
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "auth": {"required": ["/items"]},
    "rate_limit": {"default": f"{LIMIT}/minute"},
}
PREFLIGHT = {
    "origin": ORIGIN,
    "access-control-request-method": "GET",
    "access-control-request-headers": "authorization",
}
TOKEN = make_token(sub="reader-1", scope="items:read")


async def items(request: Request) -> JSONResponse:
    return JSONResponse({"id": request.state.principal.id})


async def news(request: Request) -> JSONResponse:
    return JSONResponse({"news": []})


def starlette_app(cors: str) -> Any:
    """A Starlette app with CORSMiddleware ``outside`` or ``inside`` the stack."""
    stack = Middleware(asgi.SecurityStack, **SECTIONS)
    cors_layer = Middleware(
        CORSMiddleware,
        allow_origins=[ORIGIN],
        allow_methods=["GET"],
        allow_headers=["authorization"],
    )
    middleware = (
        [cors_layer, stack] if cors == "outside" else [stack, cors_layer]
    )  # outermost first
    return Starlette(routes=[Route("/items", items), Route("/news", news)], middleware=middleware)


def flask_app() -> Flask:
    """A Flask app with flask-cors, behind the WSGI stack."""
    app = Flask(__name__)
    CORS(app, origins=[ORIGIN], allow_headers=["Authorization"])

    @app.get("/items")
    def flask_items() -> Any:
        return jsonify(id=current_principal().id)

    @app.get("/news")
    def flask_news() -> Any:
        return jsonify(news=[])

    app.wsgi_app = wsgi.SecurityStack(app.wsgi_app, **SECTIONS)  # type: ignore[method-assign]
    return app


VARIANTS = ["starlette-outside", "starlette-inside", "flask-cors-inside"]


def send(
    variant: str, requests: list[tuple[str, dict[str, str]]], path: str = "/items"
) -> list[httpx.Response]:
    """Send ``(method, headers)`` requests to ``path`` of a fresh app, in order."""
    base = "http://api.example"
    if variant.startswith("flask"):
        transport = httpx.WSGITransport(app=flask_app())
        with httpx.Client(transport=transport, base_url=base) as client:
            return [client.request(m, path, headers=h) for m, h in requests]

    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=starlette_app(variant.removeprefix("starlette-")))
        async with httpx.AsyncClient(transport=transport, base_url=base) as client:
            return [await client.request(m, path, headers=h) for m, h in requests]

    return asyncio.run(run())


@pytest.mark.parametrize("variant", VARIANTS)
def test_preflights_are_never_refused(variant: str) -> None:
    """Preflights beyond the rate limit all get the CORS answer; none is a 401 or a 429."""
    count = LIMIT + 3
    responses = send(variant, [("OPTIONS", PREFLIGHT)] * count)
    assert [r.status_code for r in responses] == [200] * count
    for response in responses:
        assert response.headers["access-control-allow-origin"] == ORIGIN
        assert "authorization" in response.headers["access-control-allow-headers"].lower()
        assert "www-authenticate" not in response.headers


@pytest.mark.parametrize("variant", VARIANTS)
def test_preflights_leave_the_budget_alone(variant: str) -> None:
    """After many preflights an anonymous client still has its whole per-address budget."""
    actual = ("GET", {"origin": ORIGIN})
    responses = send(
        variant, [("OPTIONS", PREFLIGHT)] * (LIMIT + 1) + [actual] * (LIMIT + 1), path="/news"
    )
    assert [r.status_code for r in responses[LIMIT + 1 :]] == [200] * LIMIT + [429]


@pytest.mark.parametrize("variant", VARIANTS)
def test_cross_origin_request_with_token(variant: str) -> None:
    """The actual request is authenticated and carries CORS and security headers."""
    (response,) = send(variant, [("GET", {"origin": ORIGIN, "authorization": f"Bearer {TOKEN}"})])
    assert response.status_code == 200
    assert response.json() == {"id": "reader-1"}
    assert response.headers["access-control-allow-origin"] == ORIGIN
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize(
    ("variant", "readable"),
    [("starlette-outside", True), ("starlette-inside", False), ("flask-cors-inside", False)],
)
def test_stack_refusals_and_cors_headers(variant: str, readable: bool) -> None:
    """Only a CORS layer outside the stack adds CORS headers to the stack's own 401."""
    (response,) = send(variant, [("GET", {"origin": ORIGIN, "authorization": "Bearer nope"})])
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert ("access-control-allow-origin" in response.headers) is readable
