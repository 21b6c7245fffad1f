"""Route decorators over real servers: uvicorn (with ``--root-path``, the lifespan reading the
routes) and werkzeug serving a Flask app with the extension; a conflict stops uvicorn."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import httpx

from secmw.asgi import SecurityStack
from secmw.flask import SecMW
from tests import route_apps
from tests.support import SECRET, make_token, uvicorn_server, werkzeug_server


def _check(base: str) -> None:
    """The decorated app's contract, over the network."""
    token = {"authorization": f"Bearer {make_token(SECRET, scope='other')}"}
    with httpx.Client(base_url=base, timeout=10) as client:
        assert client.get("/health").status_code == 200
        anonymous = client.get("/items/3")
        assert anonymous.status_code == 401
        assert anonymous.headers["content-type"] == "application/problem+json"
        refused = client.get("/items/3", headers=token)
        assert refused.status_code == 403
        assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]
        assert [client.get("/limited", headers=token).status_code for _ in range(3)] == [
            200,
            200,
            429,
        ]


def test_uvicorn_with_root_path() -> None:
    """FastAPI under uvicorn ``--root-path /api``, lifespan on: the marks apply."""
    app = route_apps.fastapi_app()
    app.add_middleware(SecurityStack, **route_apps.settings("memory://", uuid.uuid4().hex[:8]))
    # A proxy strips /api and uvicorn puts it back as the root path the router strips again.
    with uvicorn_server(app, lifespan="on", root_path="/api") as base:
        _check(base)


CONFLICT_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from secmw import route
from secmw.asgi import SecurityStack


@route.public
async def item(request):
    return PlainTextResponse("never served")


app = SecurityStack(
    Starlette(routes=[Route("/items/{id}", item)]),
    jwt={"secret": "s" * 32},
    auth={"scopes": [{"path": "/items/*"}]},
)
"""


def test_uvicorn_refuses_to_start_on_a_conflict(tmp_path: Path) -> None:
    """A decorator conflicting with the settings: the lifespan startup fails and uvicorn exits
    with an error naming both, before serving anything."""
    (tmp_path / "conflict_app.py").write_text(CONFLICT_APP)
    command = [sys.executable, "-m", "uvicorn", "--app-dir", str(tmp_path), "--lifespan", "on"]
    command += ["--host", "127.0.0.1", "--port", "0", "conflict_app:app"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "@route.public conflicts with the SECMW_AUTH__SCOPES entry '/items/*'" in done.stderr
    assert "Application startup failed" in done.stderr


def test_werkzeug_flask_extension() -> None:
    """Flask with SecMW (settings in app.config) under werkzeug's threaded server."""
    app = route_apps.flask_app()
    app.config.update(
        SECMW_JWT__SECRET=SECRET,
        SECMW_AUTH__REQUIRED="/**",
        SECMW_RATE_LIMIT__DEFAULT="50/minute",
    )
    SecMW(app)
    with werkzeug_server(app) as base:
        _check(base)
