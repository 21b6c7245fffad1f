"""``HEAD`` answers from secmw carry no body (RFC 9110 §9.3.2), from every layer, both sides.

The status and fields are those of a ``GET``, ``Content-Length`` included.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any
from urllib.parse import urlsplit

import pytest
from werkzeug.test import Client

from secmw import asgi, wsgi
from tests.support import Recorder, empty_receive, http_scope, werkzeug_server

SETTINGS: dict[str, Any] = {
    "jwt": {"secret": "s" * 32},
    "auth": {"required": ["/me"]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
    "rate_limit": {"default": "", "rules": [{"path": "/limited", "limit": "1/minute"}]},
}
LAYERS = {
    # layer name: (path, status, requests sent before the one looked at)
    "AuthenticationMiddleware": ("/me", 401, 0),
    "IPFilterMiddleware": ("/internal/status", 403, 0),
    "RateLimitMiddleware": ("/limited", 429, 1),
    "SecurityHeadersMiddleware": ("/boom", 500, 0),
    "SecurityStack": ("/me", 401, 0),
}


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    if environ["PATH_INFO"] == "/boom":
        raise RuntimeError("the app failed")
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"ok"]


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["path"] == "/boom":
        raise RuntimeError("the app failed")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


@pytest.mark.parametrize("layer", LAYERS)
def test_wsgi_refusal_to_head_has_no_body(layer: str) -> None:
    """Same status and fields as GET, no body."""
    path, status, prime = LAYERS[layer]
    client = Client(getattr(wsgi, layer)(wsgi_app, **SETTINGS))
    remote = {"REMOTE_ADDR": "127.0.0.1"}
    for _ in range(prime):
        client.get(path, environ_overrides=remote)
    get = client.get(path, environ_overrides=remote)
    for _ in range(prime):
        client.head(path, environ_overrides=remote)
    head = client.head(path, environ_overrides=remote)
    assert (get.status_code, head.status_code) == (status, status)
    assert get.get_data()
    assert head.get_data() == b""
    assert head.headers == get.headers  # Content-Length stays the GET length


def call_asgi(app: Any, path: str, method: str) -> Recorder:
    recorder = Recorder()
    with contextlib.suppress(RuntimeError):  # the app's error, re-raised after the 500 went out
        asyncio.run(app(http_scope(path, method=method), empty_receive, recorder))
    return recorder


@pytest.mark.parametrize("layer", LAYERS)
def test_asgi_refusal_to_head_has_no_body(layer: str) -> None:
    """The ASGI twin sends no body either (not every server drops one)."""
    path, status, prime = LAYERS[layer]
    app = getattr(asgi, layer)(asgi_app, **SETTINGS)
    for _ in range(prime):
        call_asgi(app, path, "GET")
    get = call_asgi(app, path, "GET")
    for _ in range(prime):
        call_asgi(app, path, "HEAD")
    head = call_asgi(app, path, "HEAD")
    assert (get.status, head.status) == (status, status)
    assert get.body
    assert head.body == b""
    assert head.headers == get.headers


def test_werkzeug_server_sends_no_body_to_head() -> None:
    """Over the wire: HEAD /me with a bad token is a 401 whose body is empty."""
    with werkzeug_server(wsgi.SecurityStack(wsgi_app, **SETTINGS)) as url:
        address = urlsplit(url)
        with socket.create_connection((address.hostname, address.port), timeout=5) as sock:
            sock.sendall(
                b"HEAD /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bad\r\n"
                b"Connection: close\r\n\r\n"
            )
            raw = b""
            while chunk := sock.recv(65536):
                raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 401")
    assert b"content-length: " in head.lower()
    assert body == b""
