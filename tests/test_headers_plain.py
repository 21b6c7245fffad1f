"""The headers layer's view-free pass: a plain policy's fields merged without building the view,
the same fields as the full pass, and the full pass wherever the view is needed."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from secmw.asgi import SecurityHeadersMiddleware, SecurityStack
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.core.request import ASGI_KEY, RequestView
from secmw.headers.gate import HeadersGate
from secmw.headers.layer import SecurityHeaders
from secmw.headers.settings import HeadersSettings
from secmw.ip.gate import IPGate
from tests.support import SECRET, Recorder, empty_receive, http_scope, make_token, run_asgi

NONCED = {"/page/*": {"csp": {"default-src": ["'none'"], "script-src": ["'nonce'"]}}}
PATHS = {"/docs/*": "swagger-ui", **NONCED}


def app_with(*fields: tuple[bytes, bytes], seen: list[bool] | None = None) -> Any:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if seen is not None:
            seen.append(ASGI_KEY in scope)
        await send({"type": "http.response.start", "status": 200, "headers": list(fields)})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


def both_ways(app: Any, scope: dict[str, Any]) -> tuple[Any, Any]:
    """The answer to ``scope`` without a view, then with one built beforehand (the full pass)."""
    plain = run_asgi(app, dict(scope))
    full_scope = dict(scope)
    RequestView.from_scope(full_scope)
    return plain, run_asgi(app, full_scope)


@pytest.mark.parametrize("scheme", ["http", "https"])
@pytest.mark.parametrize("path", ["/", "/a/b", "/docs/x"])
@pytest.mark.parametrize(
    "fields",
    [(), ((b"x-frame-options", b"SAMEORIGIN"), (b"content-type", b"text/plain"))],
)
def test_the_view_free_pass_sends_what_the_full_pass_sends(
    scheme: str, path: str, fields: tuple[tuple[bytes, bytes], ...]
) -> None:
    seen: list[bool] = []
    app = SecurityHeadersMiddleware(app_with(*fields, seen=seen), headers={"paths": PATHS})
    plain, full = both_ways(app, http_scope(path, scheme=scheme))
    assert seen == [False, True]  # no view on the plain pass
    assert plain.messages == full.messages
    assert (b"x-content-type-options", b"nosniff") in plain.messages[0]["headers"]
    hsts = any(name == b"strict-transport-security" for name, _ in plain.messages[0]["headers"])
    assert hsts == (scheme == "https")
    if fields:
        assert (b"x-frame-options", b"SAMEORIGIN") in plain.messages[0]["headers"]


def test_an_apps_error_gets_the_same_500_on_the_view_free_pass() -> None:
    async def boom(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    app = SecurityHeadersMiddleware(boom)
    answers = []
    for built in (False, True):
        scope = http_scope("/a")
        if built:
            RequestView.from_scope(scope)
        recorder = Recorder()
        with pytest.raises(RuntimeError, match="boom"):
            asyncio.run(app(scope, empty_receive, recorder))
        answers.append(recorder.messages)
    assert answers[0] == answers[1]
    assert answers[0][0]["status"] == 500
    assert (b"x-content-type-options", b"nosniff") in answers[0][0]["headers"]


@pytest.mark.parametrize("path", ["/page/x", "/a//b", "/a/./b"])
def test_a_path_that_needs_the_view_still_gets_it(path: str) -> None:
    """A nonce-making path policy, and a path to normalize, take the full pass."""
    seen: list[bool] = []
    app = SecurityHeadersMiddleware(app_with(seen=seen), headers={"paths": NONCED})
    headers = dict(run_asgi(app, http_scope(path)).messages[0]["headers"])
    assert seen == [True]
    assert (b"'nonce-" in headers[b"content-security-policy"]) == (path == "/page/x")


def test_a_principal_found_inside_still_gets_cache_control() -> None:
    """An authenticating stack inside the headers layer records its principal in the view it
    builds: the view-free pass outside reads it when the response starts."""
    inner = SecurityStack(app_with(), jwt={"secret": SECRET}, headers={"enabled": False})
    app = SecurityHeadersMiddleware(inner)
    token = make_token()
    scope = http_scope("/a", headers=[("authorization", f"Bearer {token}")])
    headers = run_asgi(app, scope).messages[0]["headers"]
    assert (b"cache-control", b"no-store") in headers
    anonymous = run_asgi(app, http_scope("/public")).messages[0]["headers"]
    assert not any(name == b"cache-control" for name, _ in anonymous)


def test_behind_an_admitting_ip_layer_the_headers_need_no_view() -> None:
    seen: list[bool] = []
    app = IPFilterMiddleware(
        SecurityHeadersMiddleware(app_with(seen=seen)), ip={"allow": ["127.0.0.0/8"]}
    )
    for _ in range(2):
        headers = run_asgi(app, http_scope("/a")).messages[0]["headers"]
        assert (b"x-content-type-options", b"nosniff") in headers
    assert run_asgi(app, http_scope("/a", client=("10.0.0.1", 1))).status == 403
    assert seen == [True, False]  # the first peer resolved through the view, then remembered
    assert isinstance(app.gates[-1], HeadersGate)
    assert isinstance(app.gates[-2], IPGate)


@pytest.mark.parametrize("raw", [True, False])
@pytest.mark.parametrize("scheme", ["http", "https"])
def test_merge_plain_gives_the_fields_of_the_full_pass_on_both_sides(
    raw: bool, scheme: str
) -> None:
    gate = HeadersGate(SecurityHeaders(HeadersSettings(paths=PATHS)), raw=raw)
    name = b"x-frame-options" if raw else "X-Frame-Options"
    value = b"SAMEORIGIN" if raw else "SAMEORIGIN"
    for path in ("/", "/docs/x"):
        view = RequestView.from_scope(http_scope(path, scheme=scheme))
        gate.check(view)
        policy = gate.plain_fields(path)
        assert policy is not None
        for given in ([], [(name, value)]):
            full = gate.fields(view, 200, list(given))
            assert gate.merge_plain(policy, scheme, view.state, list(given)) == full
            assert gate.merge_plain(policy, scheme, None, list(given)) == full
    assert gate.plain_fields("/page/x") is None
