"""SecurityHeadersMiddleware on ASGI: every status, errors, streaming, HEAD, nonces, uvicorn."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import secmw
from secmw.asgi._util import Message, Receive, Scope, Send, send_deny
from secmw.asgi.auth import AuthenticationMiddleware
from secmw.asgi.headers import SecurityHeadersMiddleware
from secmw.core.deny import Deny
from secmw.headers.csp import NONCE
from secmw.headers.layer import SecurityHeaders
from tests.support import SECRET, Recorder, http_scope, make_token, run_asgi, uvicorn_server

API_CSP = "default-src 'none'; frame-ancestors 'none'"
NONCE_CSP = {"default-src": ["'none'"], "script-src": [NONCE]}


DOCUMENT_ONLY = (
    "permissions-policy",
    "cross-origin-opener-policy",
    "x-xss-protection",
    "x-permitted-cross-domain-policies",
)


def assert_protected(headers: list[tuple[str, str]] | httpx.Headers, *, document: bool) -> None:
    """The response carries the fields of both sets, each once, and the fields of the document
    set alone exactly when ``document`` (else it got the API set)."""
    pairs = list(headers.multi_items()) if isinstance(headers, httpx.Headers) else headers
    found: dict[str, list[str]] = {}
    for name, value in pairs:
        found.setdefault(name.lower(), []).append(value)
    assert found["content-security-policy"] == [API_CSP]
    assert found["x-frame-options"] == ["DENY"]
    assert found["x-content-type-options"] == ["nosniff"]
    assert found["referrer-policy"] == ["no-referrer"]
    assert found["cross-origin-resource-policy"] == ["same-origin"]
    for name in DOCUMENT_ONLY:
        assert len(found.get(name, [])) == document, name


def plain_app(status: int = 200, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    """A raw ASGI app answering ``status`` with a small body."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": status, "headers": headers or []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def denying_app(deny: Deny) -> Any:
    """A raw ASGI app answering as secmw's layers do (problem+json through ``send_deny``)."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        await send_deny(scope, send, deny)

    return app


# -- every status ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("app", "document"),
    [
        (plain_app(200), True),
        (denying_app(Deny(403, "address not allowed", "forbidden")), False),
        (denying_app(Deny(429, "too many", "rate_limited", (("retry-after", "7"),))), False),
    ],
    ids=["200-no-content-type", "403-deny", "429-deny"],
)
def test_headers_on_app_and_denial_responses(app: Any, document: bool) -> None:
    """A 200 and the 403/429 problem responses of inner layers all leave with the headers: the
    full set without a Content-Type, the API set on problem+json."""
    recorder = run_asgi(SecurityHeadersMiddleware(app), http_scope("/x"))
    assert_protected(recorder.headers, document=document)


def test_headers_on_401_from_the_authentication_layer() -> None:
    """The real authentication layer's 401 (inside) leaves with the headers and its challenge."""
    inner = AuthenticationMiddleware(
        plain_app(200), jwt={"secret": SECRET}, auth={"required": ["/private"]}
    )
    recorder = run_asgi(SecurityHeadersMiddleware(inner), http_scope("/private"))
    assert recorder.status == 401
    assert_protected(recorder.headers, document=False)
    assert recorder.header_values("www-authenticate")


def test_no_store_for_authenticated_requests_only() -> None:
    """The principal the inner authentication layer sets decides ``Cache-Control: no-store``."""
    inner = AuthenticationMiddleware(plain_app(200), jwt={"secret": SECRET})
    app = SecurityHeadersMiddleware(inner)
    token = make_token()
    authed = run_asgi(app, http_scope(headers=[("Authorization", f"Bearer {token}")]))
    assert authed.header_values("cache-control") == ["no-store"]
    assert run_asgi(app, http_scope()).header_values("cache-control") == []


def test_500_when_a_raw_app_raises_before_responding() -> None:
    """The layer answers 500 problem+json with the headers, then re-raises for the server log."""

    async def broken(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom: secret detail")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="boom"):
        asyncio.run(
            SecurityHeadersMiddleware(broken)(http_scope(), _receive, recorder),
        )
    assert recorder.status == 500
    assert_protected(recorder.headers, document=False)
    assert recorder.header_values("content-type") == ["application/problem+json"]
    assert json.loads(recorder.body)["status"] == 500
    assert b"secret detail" not in recorder.body


def test_no_error_after_the_response_started() -> None:
    """An app failing mid-body gets no second response start: the error propagates as is."""

    async def half(scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        raise RuntimeError("mid-stream")

    recorder = Recorder()
    with pytest.raises(RuntimeError, match="mid-stream"):
        asyncio.run(SecurityHeadersMiddleware(half)(http_scope(), _receive, recorder))
    starts = [m for m in recorder.messages if m["type"] == "http.response.start"]
    assert len(starts) == 1
    assert starts[0]["status"] == 200


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def _receive_once() -> Receive:
    """A ``receive`` that gives the request once, then waits (a client that stays connected)."""
    messages = [{"type": "http.request", "body": b"", "more_body": False}]

    async def receive() -> Message:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")

    return receive


# -- a real Starlette app ------------------------------------------------------------------------


async def page(request: Request) -> Response:
    nonce = request.state.csp_nonce
    return HTMLResponse(
        f"<script nonce='{nonce}'>1</script><p id='ctx'>{secmw.current_csp_nonce()}</p>"
    )


async def boom(request: Request) -> Response:
    raise RuntimeError("endpoint failed")


@requires("admin")
async def admin(request: Request) -> Response:
    return JSONResponse({"ok": True})


async def stream(request: Request) -> Response:
    async def chunks() -> AsyncIterator[bytes]:
        for index in range(3):
            yield f"chunk{index};".encode()

    return StreamingResponse(chunks(), media_type="text/plain")


async def framed(request: Request) -> Response:
    return JSONResponse(
        {}, headers={"X-Frame-Options": "SAMEORIGIN", "x-frame-options": "SAMEORIGIN"}
    )


def starlette_app() -> Starlette:
    """A Starlette app behind the authentication layer (inside) and the headers layer."""
    app = Starlette(
        routes=[
            Route("/page", page),
            Route("/boom", boom),
            Route("/admin", admin),
            Route("/stream", stream),
            Route("/framed", framed),
            Route("/ok", lambda request: JSONResponse({"ok": True}), methods=["GET", "HEAD"]),
        ]
    )
    return app


def stack(**headers: Any) -> Any:
    """The Starlette app wrapped as the docs recommend: headers outermost."""
    inner = AuthenticationMiddleware(starlette_app(), jwt={"secret": SECRET})
    return SecurityHeadersMiddleware(inner, headers=headers)


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """One request through ``httpx.ASGITransport`` (server errors returned, not raised)."""

    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_headers_on_403_from_starlette_requires() -> None:
    """Starlette's ``@requires`` 403 gets the headers."""
    response = call(stack(), "GET", "/admin", headers={"Authorization": f"Bearer {make_token()}"})
    assert response.status_code == 403
    assert_protected(response.headers, document=False)


def test_headers_on_500_from_a_starlette_endpoint_that_raised() -> None:
    """Starlette's own 500 gets the headers, starts once, and the error still reaches the server."""
    recorder = Recorder()
    with pytest.raises(RuntimeError, match="endpoint failed"):
        asyncio.run(stack()(http_scope("/boom"), _receive, recorder))
    starts = [m for m in recorder.messages if m["type"] == "http.response.start"]
    assert [m["status"] for m in starts] == [500]
    assert_protected(recorder.headers, document=False)  # Starlette's plain-text 500
    assert call(stack(), "GET", "/boom").status_code == 500


def test_nonce_reaches_request_state_and_context_variable() -> None:
    """``request.state.csp_nonce`` and ``current_csp_nonce()`` equal the nonce in the header."""
    response = call(stack(csp=NONCE_CSP), "GET", "/page")
    nonce = response.headers["content-security-policy"].split("'nonce-")[1].split("'")[0]
    assert f"<script nonce='{nonce}'>" in response.text
    assert f"<p id='ctx'>{nonce}</p>" in response.text
    assert call(stack(csp=NONCE_CSP), "GET", "/page").text != response.text


def test_streaming_response_passes_through_unbuffered() -> None:
    """Body messages are forwarded one by one, untouched; only the start message changes."""
    recorder = Recorder()

    async def go() -> None:
        await stack()(http_scope("/stream"), _receive_once(), recorder)

    asyncio.run(go())
    bodies = [m for m in recorder.messages if m["type"] == "http.response.body"]
    assert b"".join(m.get("body", b"") for m in bodies) == b"chunk0;chunk1;chunk2;"
    assert len([m for m in bodies if m.get("body")]) == 3
    assert_protected(recorder.headers, document=False)


def test_head_request_keeps_length_and_gets_headers() -> None:
    """HEAD: same headers as GET (content-length included), no body."""
    get = call(stack(), "GET", "/ok")
    head = call(stack(), "HEAD", "/ok")
    assert head.content == b""
    assert head.headers["content-length"] == get.headers["content-length"]
    assert_protected(head.headers, document=False)
    assert head.headers.get_list("cache-control") == ["no-store"]


def test_app_duplicates_in_odd_casing_leave_once() -> None:
    """The app's two X-Frame-Options in different casings leave as one, the app's value."""
    response = call(stack(), "GET", "/framed")
    assert response.headers.get_list("x-frame-options") == ["SAMEORIGIN"]


def test_lifespan_and_websocket_pass_through() -> None:
    """Only http scopes are touched; other scope types reach the app as they came."""
    seen: list[str] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope["type"])
        await send({"type": "probe"})

    recorder = Recorder()
    middleware = SecurityHeadersMiddleware(app)
    for scope_type in ("lifespan", "websocket"):
        asyncio.run(middleware({"type": scope_type, "headers": []}, _receive, recorder))
    assert seen == ["lifespan", "websocket"]
    assert recorder.messages == [{"type": "probe"}, {"type": "probe"}]


def test_disabled_layer_sends_nothing_extra() -> None:
    """``enabled=False`` passes responses through untouched."""
    recorder = run_asgi(
        SecurityHeadersMiddleware(plain_app(), headers={"enabled": False}), http_scope()
    )
    assert recorder.headers == []


def test_ready_policy_object_is_used() -> None:
    """A prebuilt ``SecurityHeaders`` can be shared between middlewares."""
    policy = SecurityHeaders()
    middleware = SecurityHeadersMiddleware(plain_app(), policy=policy)
    assert middleware.policy is policy
    assert_protected(run_asgi(middleware, http_scope()).headers, document=True)


# -- a real server -------------------------------------------------------------------------------


@pytest.mark.server
def test_real_uvicorn_server_every_status() -> None:
    """Through uvicorn on 127.0.0.1: 200, 401, 403, 500, HEAD and streaming carry the headers."""
    inner = AuthenticationMiddleware(
        starlette_app(), jwt={"secret": SECRET}, auth={"required": ["/admin"]}
    )
    app = SecurityHeadersMiddleware(inner)
    token = make_token()
    with uvicorn_server(app) as url, httpx.Client(base_url=url) as client:
        expected = {
            ("GET", "/ok", False): 200,
            ("HEAD", "/ok", False): 200,
            ("GET", "/stream", False): 200,
            ("GET", "/admin", False): 401,
            ("GET", "/admin", True): 403,
            ("GET", "/boom", False): 500,
        }
        for (method, path, authed), status in expected.items():
            headers = {"Authorization": f"Bearer {token}"} if authed else {}
            response = client.request(method, path, headers=headers)
            assert response.status_code == status, (method, path)
            assert_protected(response.headers, document=False)
        assert client.get("/stream").text == "chunk0;chunk1;chunk2;"
