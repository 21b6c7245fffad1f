"""The IP filter over real HTTP: uvicorn (ASGI) and werkzeug (WSGI) on 127.0.0.1 and ::1."""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import httpx
import pytest
from flask import Flask, jsonify
from flask import request as flask_request
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from secmw.asgi.ipfilter import IPFilterMiddleware as ASGIIPFilter
from secmw.wsgi.ipfilter import IPFilterMiddleware as WSGIIPFilter
from tests.support import uvicorn_server, werkzeug_server

pytestmark = pytest.mark.server

OTHER = {"127.0.0.1": "::1", "::1": "127.0.0.1"}
PATHS = ["/public", "/internal/status", "/elsewhere/x", "/open/x"]


def starlette_app(ip: dict[str, Any]) -> Any:
    """A Starlette app answering every path with the client it sees, behind the filter."""

    async def whoami(request: Request) -> JSONResponse:
        return JSONResponse({"client": request.client.host if request.client else None})

    app = Starlette(routes=[Route(path, whoami) for path in PATHS])
    return ASGIIPFilter(app, ip=ip)


def flask_app(ip: dict[str, Any]) -> Flask:
    """A Flask app answering every path with its ``remote_addr``, behind the filter."""
    app = Flask(__name__)

    def whoami() -> Any:
        return jsonify(client=flask_request.remote_addr)

    for path in PATHS:
        app.add_url_rule(path, path, whoami)
    app.wsgi_app = WSGIIPFilter(app.wsgi_app, ip=ip)  # type: ignore[method-assign]
    return app


def serve(kind: str, ip: dict[str, Any], host: str) -> AbstractContextManager[str]:
    """Start the server; uvicorn's own proxy-header handling is off (secmw resolves)."""
    if kind == "uvicorn":
        return uvicorn_server(starlette_app(ip), host=host, proxy_headers=False)
    return werkzeug_server(flask_app(ip), host=host)


def refused(response: httpx.Response) -> bool:
    """A 403 problem document that names no network."""
    return (
        response.status_code == 403
        and response.headers["content-type"] == "application/problem+json"
        and response.json()["status"] == 403
        and "0." not in response.text
        and "::" not in response.text
    )


HOSTS = [pytest.param("127.0.0.1", id="ipv4"), pytest.param("::1", id="ipv6")]
KINDS = ["uvicorn", "werkzeug"]


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("kind", KINDS)
def test_loopback_proxy_rules_and_deny(kind: str, host: str) -> None:
    """Behind a trusted loopback proxy: per-path allow rules, the deny list and the resolved
    client, as the app sees it."""
    ip = {
        "trusted_proxies": [host],
        "deny": ["203.0.113.0/24"],
        "rules": {"/internal/*": {"allow": [host]}, "/elsewhere/*": {"allow": [OTHER[host]]}},
    }
    with serve(kind, ip, host) as base, httpx.Client(base_url=base, trust_env=False) as client:
        direct = client.get("/public")
        assert direct.status_code == 200
        assert direct.json() == {"client": host}
        assert client.get("/internal/status").status_code == 200
        assert refused(client.get("/elsewhere/x"))

        forwarded = client.get("/public", headers={"X-Forwarded-For": "1.1.1.1, 198.51.100.7"})
        assert forwarded.json() == {"client": "198.51.100.7"}
        assert refused(client.get("/public", headers={"X-Forwarded-For": "203.0.113.9"}))
        assert refused(client.get("/internal/status", headers={"X-Forwarded-For": "198.51.100.7"}))

        garbage = client.get("/public", headers={"X-Forwarded-For": "abc"})
        assert garbage.json() == {"client": None if kind == "uvicorn" else ""}  # unknown
        assert refused(client.get("/internal/status", headers={"X-Forwarded-For": "abc"}))
        huge = client.get("/public", headers={"X-Forwarded-For": ",".join(["9.9.9.9"] * 1000)})
        assert huge.json() == {"client": "9.9.9.9"}


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("kind", KINDS)
def test_allow_list_and_ignored_spoof(kind: str, host: str) -> None:
    """A global allow list refuses loopback whatever X-Forwarded-For says (no trusted proxy);
    an open rule and an allow list naming the host let it in."""
    ip = {
        "allow": ["192.0.2.0/24"],
        "rules": {"/open/*": {"allow": []}, "/internal/*": {"allow": [host]}},
    }
    with serve(kind, ip, host) as base, httpx.Client(base_url=base, trust_env=False) as client:
        assert refused(client.get("/public"))
        assert refused(client.get("/public", headers={"X-Forwarded-For": "192.0.2.1"}))
        assert refused(client.get("/public", headers={"Forwarded": "for=192.0.2.1"}))
        opened = client.get("/open/x", headers={"X-Forwarded-For": "192.0.2.1"})
        assert opened.status_code == 200
        assert opened.json() == {"client": host}
        assert client.get("/internal/status").status_code == 200
