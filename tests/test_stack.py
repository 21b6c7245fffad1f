"""SecurityStack: one order, one parse, layers switched off by setting, CORS preflights."""

from __future__ import annotations

import asyncio
import json
from typing import Any
from wsgiref.validate import validator

import httpx
import pytest
from werkzeug.test import Client

from secmw import hash_api_key
from secmw.asgi import AuthenticationMiddleware, IPFilterMiddleware, RateLimitMiddleware
from secmw.asgi import SecurityStack as ASGIStack
from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.wsgi import SecurityStack as WSGIStack
from tests.support import SECRET, http_scope, make_token, run_asgi

KEY = "stack-key-" + "0" * 30
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "api_keys": {"keys": [{"hash": hash_api_key(KEY), "id": "svc", "scopes": ["r"]}]},
    "ip": {"rules": {"/internal/*": {"allow": ["127.0.0.1"]}}},
    "rate_limit": {"default": "3/minute", "auth_failures": "2/minute"},
}


async def asgi_ok(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_ok(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]


def asgi_statuses(app: Any, scopes: list[dict[str, Any]]) -> list[tuple[int, dict[str, str]]]:
    out = []
    for scope in scopes:
        recorder = run_asgi(app, scope)
        out.append((recorder.status, {k.lower(): v for k, v in recorder.headers}))
    return out


def test_only_a_plain_single_layer_middleware_is_taken_in_by_the_one_around_it() -> None:
    """A stack, or a subclass with its own ``__call__``, inside a middleware is still called
    (its entry may measure or decide more); a plain single-layer middleware is run by the outer
    driver, whose gates then come first."""
    calls: list[str] = []

    class Counting(RateLimitMiddleware):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            calls.append("counting")
            await super().__call__(scope, receive, send)

    for inner in (ASGIStack(asgi_ok, **SECTIONS), Counting(asgi_ok, **SECTIONS)):
        outer = IPFilterMiddleware(inner, **SECTIONS)
        assert outer.app is inner
    counted = IPFilterMiddleware(Counting(asgi_ok, **SECTIONS), **SECTIONS)
    assert run_asgi(counted, http_scope()).status == 200
    assert calls == ["counting"]
    plain = RateLimitMiddleware(asgi_ok, **SECTIONS)
    outer = AuthenticationMiddleware(plain, **SECTIONS)
    assert outer.app is asgi_ok
    assert outer.own_gates[0] in outer.gates
    assert outer.gates.index(outer.own_gates[0]) < outer.gates.index(plain.own_gates[0])


def test_every_refusal_carries_the_security_headers() -> None:
    """401 (auth), 403 (IP), 429 (rate limit) and 200 all leave with the header block."""
    app = ASGIStack(asgi_ok, **SECTIONS)
    token = make_token()
    scopes = [
        http_scope("/x", headers=[("authorization", f"Bearer {token}")]),
        http_scope("/x", headers=[("authorization", "Bearer bad")]),
        http_scope("/internal/a", client=("203.0.113.1", 1)),
        *[http_scope("/x", client=("198.51.100.1", 1)) for _ in range(4)],
    ]
    results = asgi_statuses(app, scopes)
    assert [status for status, _ in results] == [200, 401, 403, 200, 200, 200, 429]
    for _, headers in results:
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"].startswith("default-src 'none'")
    assert "ratelimit" in results[3][1]


def test_the_request_is_parsed_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer shares one RequestView per request, and its headers are decoded once."""
    parsed: list[object] = []
    views: list[RequestView] = []
    original_parse = Headers.from_raw.__func__  # type: ignore[attr-defined]
    original_view = RequestView.from_scope.__func__  # type: ignore[attr-defined]

    def counting_parse(cls: type[Headers], raw: Any) -> Headers:
        parsed.append(raw)
        return original_parse(cls, raw)  # type: ignore[no-any-return]

    def counting_view(cls: type[RequestView], scope: Any) -> RequestView:
        view = original_view(cls, scope)
        views.append(view)
        return view  # type: ignore[no-any-return]

    monkeypatch.setattr(Headers, "from_raw", classmethod(counting_parse))
    monkeypatch.setattr(RequestView, "from_scope", classmethod(counting_view))
    app = ASGIStack(asgi_ok, **SECTIONS)
    assert run_asgi(app, http_scope("/x", headers=[("x-api-key", KEY)])).status == 200
    assert (len(parsed), len(views)) == (1, 1)
    # The single-layer middlewares composed: the outermost runs the inner ones' gates too.
    parsed.clear(), views.clear()
    composed: Any = asgi_ok
    for layer in (RateLimitMiddleware, AuthenticationMiddleware, IPFilterMiddleware):
        composed = layer(composed, **SECTIONS)
    assert run_asgi(composed, http_scope("/x", headers=[("x-api-key", KEY)])).status == 200
    assert (len(parsed), len(views)) == (1, 1)


@pytest.mark.parametrize("layer", ["headers", "ip", "auth", "rate_limit"])
def test_each_layer_can_be_switched_off(layer: str) -> None:
    """enabled=false removes exactly that layer's effect."""
    sections = {**SECTIONS, layer: {**SECTIONS.get(layer, {}), "enabled": False}}
    app = ASGIStack(asgi_ok, **sections)
    bad_token = http_scope("/x", headers=[("authorization", "Bearer bad")])
    outsider = http_scope("/internal/a", client=("203.0.113.1", 1))
    flood = [http_scope("/y", client=("198.51.100.2", 1)) for _ in range(4)]
    results = asgi_statuses(app, [bad_token, outsider, *flood])
    statuses = [status for status, _ in results]
    assert (statuses[0] == 401) is (layer != "auth")
    assert (statuses[1] == 403) is (layer != "ip")
    assert (statuses[-1] == 429) is (layer != "rate_limit")
    assert ("x-content-type-options" in results[0][1]) is (layer != "headers")


def test_cors_preflight_is_neither_authenticated_nor_limited() -> None:
    """Many preflights with a bad token: never 401, never 429."""
    app = ASGIStack(asgi_ok, **{**SECTIONS, "auth": {"required": ["/*"]}})
    preflight = [
        http_scope(
            "/x",
            method="OPTIONS",
            headers=[("origin", "https://app.example"), ("access-control-request-method", "PUT")],
            client=("198.51.100.3", 1),
        )
        for _ in range(6)
    ]
    assert [status for status, _ in asgi_statuses(app, preflight)] == [200] * 6


def test_failed_logins_are_throttled_in_the_stack() -> None:
    """Two bad API keys, then 429 even for more guesses."""
    app = ASGIStack(asgi_ok, **SECTIONS)
    guesses = [
        http_scope("/x", headers=[("x-api-key", f"guess-{i}")], client=("198.51.100.4", 1))
        for i in range(4)
    ]
    assert [s for s, _ in asgi_statuses(app, guesses)] == [401, 401, 429, 429]


def test_wsgi_stack_matches_the_asgi_stack() -> None:
    """Same settings, same answers, PEP 3333 compliant."""
    client = Client(validator(WSGIStack(wsgi_ok, **SECTIONS)))
    token = make_token()
    answers = []
    for path, headers, remote in [
        ("/x", {"Authorization": f"Bearer {token}"}, "198.51.100.5"),
        ("/x", {"Authorization": "Bearer bad"}, "198.51.100.5"),
        ("/internal/a", {}, "203.0.113.1"),
    ]:
        response = client.get(path, headers=headers, environ_base={"REMOTE_ADDR": remote})
        answers.append((response.status_code, response.headers.get("X-Content-Type-Options")))
        response.close()
    assert answers == [(200, "nosniff"), (401, "nosniff"), (403, "nosniff")]


def test_starlette_add_middleware_form() -> None:
    """app.add_middleware(SecurityStack, ...) works and publishes the principal."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"id": request.user.identity, "scheme": request.state.principal.scheme})

    app = Starlette(routes=[Route("/me", me)])
    app.add_middleware(ASGIStack, **SECTIONS)

    async def call() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/me", headers={"X-API-Key": KEY})

    response = asyncio.run(call())
    assert json.loads(response.text) == {"id": "svc", "scheme": "apikey"}
