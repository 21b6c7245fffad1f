"""Authentication over real HTTP: uvicorn (ASGI) and werkzeug (WSGI) on loopback."""

from __future__ import annotations

import httpx
import pytest

from tests.support import uvicorn_server, werkzeug_server
from tests.test_auth_adapters import CREDENTIALS, flask_app, starlette_app

pytestmark = pytest.mark.server


@pytest.mark.parametrize("kind", ["uvicorn", "werkzeug"])
def test_every_scheme_and_every_refusal_over_http(kind: str) -> None:
    """Each scheme admits, bad input is refused with a problem body, never a 500."""
    server = uvicorn_server(starlette_app()) if kind == "uvicorn" else werkzeug_server(flask_app())
    with server as base, httpx.Client(base_url=base, timeout=10) as client:
        for scheme, headers in CREDENTIALS.items():
            response = client.get("/items", headers=headers)
            assert response.status_code == 200, scheme
        refusals = {
            "Bearer": 400,
            "Bearer a b": 400,
            "Bearer bad.token.x": 401,
            "Basic %%%": 400,
            "Negotiate abc": 401,
            "Bearer " + "a" * 20000: 400,
        }
        for authorization, status in refusals.items():
            response = client.get("/items", headers={"Authorization": authorization})
            assert response.status_code == status, authorization[:20]
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == status
            assert "Traceback" not in response.text
        anonymous = client.get("/me")
        assert anonymous.status_code == 401
        assert len(anonymous.headers.get_list("www-authenticate")) == 3
