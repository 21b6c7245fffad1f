"""Route decorators on every framework: Starlette, FastAPI, FastOpenAPI (Starlette and Flask
routers) and Flask, at the root, under a mount and under a root path, on memory and on a real
Redis. The stack runs before the router and enforces what the decorators say."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Mount
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.test import Client
from werkzeug.wrappers import Response as WerkzeugResponse

from secmw.asgi import SecurityStack as ASGIStack
from secmw.flask import SecMW
from secmw.wsgi import SecurityStack as WSGIStack
from tests import route_apps
from tests.support import SECRET, make_token

Send = Callable[[str, dict[str, str]], tuple[int, dict[str, str], bytes]]
PLACES = ("root", "mount", "root_path")
PREFIX = {"root": "", "mount": "/api", "root_path": "/prefix"}


@pytest.fixture(params=["memory", "redis"])
def storage(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    url: str = request.getfixturevalue("redis_url")
    return url


def _asgi_sender(framework: str, place: str, storage: str) -> Send:
    sections = route_apps.settings(storage, uuid.uuid4().hex[:12])
    app: Any = route_apps.BUILDERS[framework]()
    root_path = ""
    if place == "mount":
        app = Starlette(routes=[Mount("/api", app=app)])
    elif place == "root_path":
        root_path = "/prefix"
    if framework == "fastapi" and place == "root":
        app.add_middleware(ASGIStack, **sections)  # the stack inside FastAPI's own stack
        stack = app
    else:
        stack = ASGIStack(app, **sections)
    transport = httpx.ASGITransport(app=stack, client=("127.0.0.1", 50000), root_path=root_path)

    def send(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        async def run() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                return await client.get(PREFIX[place] + path, headers=headers)

        response = asyncio.run(run())
        return response.status_code, dict(response.headers), response.content

    return send


def _flask_config(storage: str) -> dict[str, Any]:
    """The same settings as ``SECMW_*`` keys of ``app.config`` (strings, as from a file)."""
    return {
        "SECMW_JWT__SECRET": SECRET,
        "SECMW_AUTH__REQUIRED": "/**",
        "SECMW_RATE_LIMIT__STORAGE_URI": storage,
        "SECMW_RATE_LIMIT__DEFAULT": "50/minute",
        "SECMW_RATE_LIMIT__KEY_PREFIX": uuid.uuid4().hex[:12],
    }


def _wsgi_sender(framework: str, place: str, storage: str) -> Send:
    app = route_apps.BUILDERS[framework]()
    if framework == "flask":
        app.config.update(_flask_config(storage))
        SecMW(app)
    else:  # the plain wrapping keeps working, and reads the routes too
        sections = route_apps.settings(storage, uuid.uuid4().hex[:12])
        app.wsgi_app = WSGIStack(app.wsgi_app, **sections)  # type: ignore[method-assign]
    served: Any = app
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    if place == "mount":
        served = DispatcherMiddleware(WerkzeugResponse("outside", 404), {"/api": app})
    elif place == "root_path":  # a server mounting the app under a prefix
        environ["SCRIPT_NAME"] = "/prefix"
    client = Client(served)

    def send(path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        url = PREFIX[place] + path if place == "mount" else path
        response = client.get(url, headers=headers, environ_overrides=environ)
        return (
            response.status_code,
            {k.lower(): v for k, v in response.headers.items()},
            response.get_data(),
        )

    return send


def _bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(SECRET, scope=scope)}"}


@pytest.mark.parametrize("place", PLACES)
@pytest.mark.parametrize("framework", [*route_apps.ASGI_FRAMEWORKS, *route_apps.WSGI_FRAMEWORKS])
def test_route_decorators(framework: str, place: str, storage: str) -> None:
    """public, requires (401 / 403 insufficient_scope / 200), limit (429 on the third), headers
    and exempt, as the decorators say, wherever the app sits."""
    if framework in route_apps.ASGI_FRAMEWORKS:
        send = _asgi_sender(framework, place, storage)
    else:
        send = _wsgi_sender(framework, place, storage)
    token = _bearer("other")

    status, _, body = send("/health", {})
    assert (status, b"health" in body) == (200, True)

    status, headers, _ = send("/plain", {})
    assert status == 401  # auth.required "/**" from the settings still applies

    status, headers, body = send("/items/7", {})
    assert status == 401
    assert headers["content-type"] == "application/problem+json"
    assert headers["www-authenticate"].startswith('Bearer realm="api"')

    status, headers, body = send("/items/7", token)
    assert (status, headers["content-type"]) == (403, "application/problem+json")
    assert b'"code":"insufficient_scope"' in body
    assert 'error="insufficient_scope"' in headers["www-authenticate"]
    assert 'scope="items:read"' in headers["www-authenticate"]

    status, _, body = send("/items/7", _bearer("items:read"))
    assert (status, b"items" in body) == (200, True)

    statuses = [send("/limited", token)[0] for _ in range(3)]
    assert statuses == [200, 200, 429]

    status, headers, _ = send("/page", token)
    assert status == 200
    assert "img-src 'self' data:" in headers["content-security-policy"]
    assert not any(name.lower().startswith("ratelimit") for name in headers)  # exempt

    status, headers, _ = send("/plain", token)
    assert status == 200
    assert "default-src 'none'" in headers["content-security-policy"]  # the default policy
    assert any(name.lower() == "ratelimit-policy" for name in headers)
