"""Per-path rules under a root path: uvicorn ``--root-path``, Starlette ``Mount`` (also nested)
and FastAPI's ``root_path=``, each served by a real uvicorn and called over HTTP.

The router strips the root path before routing, so the rules must too: ``/internal/*`` (an IP
rule), ``/private/*`` (authentication required), ``/limited`` (a rate limit) and ``/page`` (a
per-path header policy) must apply to the routes they name however the app is mounted.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route

from secmw.asgi import SecurityStack
from tests.support import SECRET, uvicorn_server

SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "auth": {"required": ["/private/*"]},
    "rate_limit": {"default": "", "rules": [{"path": "/limited", "limit": "1/minute"}]},
    "ip": {"rules": {"/internal/*": {"allow": ["10.0.0.0/8"]}}},
    "headers": {"paths": {"/page": {"frame_options": "SAMEORIGIN"}}},
}
ROUTES = ("/internal/status", "/private/x", "/limited", "/page", "/public")


async def _ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse(request.url.path)


def _routes() -> list[Route]:
    return [Route(path, _ok) for path in ROUTES]


def _served_under_root_path() -> tuple[Any, dict[str, Any], list[str]]:
    return SecurityStack(Starlette(routes=_routes()), **SECTIONS), {"root_path": "/api"}, [""]


def _mounted() -> tuple[Any, dict[str, Any], list[str]]:
    stack = SecurityStack(Starlette(routes=_routes()), **SECTIONS)
    return Starlette(routes=[Mount("/api", app=stack)]), {}, ["/api"]


def _mounted_twice() -> tuple[Any, dict[str, Any], list[str]]:
    stack = SecurityStack(Starlette(routes=_routes()), **SECTIONS)
    return Starlette(routes=[Mount("/v1", routes=[Mount("/api", app=stack)])]), {}, ["/v1/api"]


def _fastapi_root_path() -> tuple[Any, dict[str, Any], list[str]]:
    with warnings.catch_warnings():  # the argument is deprecated, and still in use
        warnings.simplefilter("ignore")
        app = FastAPI(root_path="/api")
    for path in ROUTES:
        app.add_api_route(path, _ok)
    app.add_middleware(SecurityStack, **SECTIONS)
    # A proxy that strips the prefix and one that keeps it: FastAPI routes both.
    return app, {}, ["/api", ""]


SHAPES: dict[str, Callable[[], tuple[Any, dict[str, Any], list[str]]]] = {
    "uvicorn-root-path": _served_under_root_path,
    "mount": _mounted,
    "mount-in-mount": _mounted_twice,
    "fastapi-root-path": _fastapi_root_path,
}


@pytest.mark.parametrize("shape", SHAPES)
def test_rules_match_the_routed_path(shape: str) -> None:
    """Each per-path rule applies to its route under the root path; other routes answer 200."""
    app, config, prefixes = SHAPES[shape]()
    with uvicorn_server(app, **config) as url, httpx.Client(base_url=url) as client:
        for prefix in prefixes:
            assert client.get(prefix + "/public").status_code == 200
            assert client.get(prefix + "/internal/status").status_code == 403
            assert client.get(prefix + "/private/x").status_code == 401
            page = client.get(prefix + "/page")
            assert (page.status_code, page.headers["x-frame-options"]) == (200, "SAMEORIGIN")
        first, second = (client.get(prefixes[0] + "/limited") for _ in range(2))
        assert (first.status_code, second.status_code) == (200, 429)
