"""The path rules match under a root path: ``route_path`` and the stack, on odd root paths."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from secmw import asgi, wsgi
from secmw.core.request import RequestView, route_path
from tests.support import http_scope, run_asgi

SECTIONS: dict[str, Any] = {"ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}}}


@pytest.mark.parametrize(
    ("root_path", "path", "routed"),
    [
        pytest.param("", "/internal/status", "/internal/status", id="no-root-path"),
        pytest.param("/api", "/api/internal/status", "/internal/status", id="prefix"),
        pytest.param("/api", "/api", "/", id="the-mount-point"),
        pytest.param("/api", "/api/", "/", id="the-mount-point-slash"),
        pytest.param("/api", "/internal/status", "/internal/status", id="not-a-prefix"),
        pytest.param("/api", "/apix/internal", "/apix/internal", id="prefix-inside-a-segment"),
        pytest.param("/api/", "/api/internal", "/api/internal", id="root-path-with-slash"),
        pytest.param("/a/b", "/a/b/internal/status", "/internal/status", id="nested-mounts"),
    ],
)
def test_route_path(root_path: str, path: str, routed: str) -> None:
    """The root path comes off only where it ends at a segment boundary (the router's rule)."""
    scope = http_scope(path)
    scope["root_path"] = root_path
    assert route_path(scope) == routed
    assert RequestView.from_scope(scope).path == routed


@pytest.mark.parametrize(
    ("root_path", "path", "raw_path", "status"),
    [
        pytest.param("/api", "/api/internal/status", None, 403, id="prefix"),
        pytest.param("", "/internal/status", None, 403, id="empty-root-path"),
        pytest.param("/api", "/internal/status", None, 403, id="not-a-prefix"),
        pytest.param("/api", "/api//internal/status", None, 403, id="double-slash-after"),
        pytest.param("/api", "/api/%2e%2e/internal", None, 200, id="encoded-dots-stay-text"),
        pytest.param("/api", "/api/../internal/status", None, 400, id="dot-segment-after"),
        # The server decodes ``path``; the router compares the decoded forms, so does secmw.
        pytest.param("/api", "/api/internal/status", b"/%61pi/internal/status", 403, id="raw"),
        pytest.param("/api", "/apix/internal/status", None, 200, id="prefix-inside-a-segment"),
        pytest.param("/api", "/api/public", None, 200, id="other-route"),
    ],
)
def test_asgi_stack_under_root_path(
    root_path: str, path: str, raw_path: bytes | None, status: int
) -> None:
    """A rule for ``/internal/*`` holds whatever the root path; a bad one is never a 500."""
    scope = http_scope(path)
    scope["root_path"] = root_path
    if raw_path is not None:
        scope["raw_path"] = raw_path

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    assert run_asgi(asgi.SecurityStack(app, **SECTIONS), scope).status == status


def test_wsgi_rules_match_path_info_under_script_name() -> None:
    """WSGI servers route ``PATH_INFO``; ``SCRIPT_NAME`` never reaches the rules."""

    def app(environ: Any, start_response: Any) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"ok"]

    client = Client(wsgi.SecurityStack(app, **SECTIONS))
    for script_name, path, status in [
        ("/api", "/internal/status", 403),
        ("/internal", "/status", 200),  # the prefix is the app's mount point, not a route
        ("", "/internal/status", 403),
    ]:
        response = client.get(
            path, environ_overrides={"SCRIPT_NAME": script_name, "REMOTE_ADDR": "127.0.0.1"}
        )
        assert response.status_code == status, (script_name, path)


LAYER_SETTINGS: dict[str, Any] = {
    "jwt": {"secret": "s" * 32},
    "auth": {"required": ["/private/*"]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "", "rules": [{"path": "/limited", "limit": "1/minute"}]},
    "headers": {"paths": {"/page": {"frame_options": "SAMEORIGIN"}}},
}


@pytest.mark.parametrize(
    ("layer", "path", "status", "frame_options"),
    [
        ("IPFilterMiddleware", "/internal/status", 403, None),
        ("AuthenticationMiddleware", "/private/x", 401, None),
        ("RateLimitMiddleware", "/limited", 429, None),
        ("SecurityHeadersMiddleware", "/page", 200, "SAMEORIGIN"),
    ],
)
def test_each_asgi_layer_matches_the_routed_path(
    layer: str, path: str, status: int, frame_options: str | None
) -> None:
    """Every single-layer middleware reads the path without the root path, as the stack does."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    middleware = getattr(asgi, layer)(app, **LAYER_SETTINGS)
    for _ in range(2 if status == 429 else 1):
        scope = http_scope("/api" + path)
        scope["root_path"] = "/api"
        answer = run_asgi(middleware, scope)
    assert answer.status == status
    if frame_options is not None:
        assert answer.header_values("x-frame-options") == [frame_options]
