"""docs/fastopenapi.md runs as written: its blocks, executed top to bottom, make a working app."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from werkzeug.test import Client

DOC = Path(__file__).resolve().parents[1] / "docs" / "fastopenapi.md"
SECRET = "doc-secret-with-at-least-32-bytes!!"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def doc_app() -> dict[str, Any]:
    """The doc's environment, then every Python block in one namespace."""
    with pytest.MonkeyPatch.context() as env:
        for line in blocks("bash")[0].splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env.setenv(name, SECRET if value.startswith('"$(') else value.strip("'"))
        namespace: dict[str, Any] = {"__name__": "fastopenapi_doc"}
        for code in blocks("python"):
            exec(compile(code, str(DOC), "exec", dont_inherit=True), namespace)
    return namespace


def bearer(sub: str = "alice", **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "exp": int(time.time()) + 3600, **claims}
    return {"authorization": f"Bearer {jwt.encode(payload, SECRET)}"}


def call(app: Any, method: str, path: str, **kwargs: Any) -> httpx.Response:
    async def send() -> httpx.Response:
        transport = httpx.ASGITransport(app)
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(send())


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/items", {}, 401),
        ("GET", "/items", bearer(scope="items:read"), 200),
        ("GET", "/items", bearer(scope="items:*"), 200),
        ("GET", "/admin/stats", bearer(scope="items:read"), 403),
        ("GET", "/profile", bearer(scope="items:read"), 200),
        ("GET", "/profile", bearer("bob", scope="items:read"), 401),
        ("GET", "/admin/users", bearer(roles=["admin"]), 200),
        ("GET", "/moderator/reports", bearer(roles=["moderator"]), 200),
        ("GET", "/moderator/reports", bearer(roles=["viewer"]), 403),
        ("DELETE", "/users/7", bearer(roles=["admin"]), 200),
        ("DELETE", "/users/7", bearer(roles=["editor"]), 403),
        ("POST", "/posts", bearer(roles=["editor"]), 200),
        ("POST", "/posts", bearer(roles=["viewer"]), 403),
    ],
    ids=[
        "anonymous",
        "scope",
        "wildcard-scope",
        "missing-scope",
        "chained",
        "chained-unknown-user",
        "role",
        "any-role",
        "no-role",
        "permission-wildcard",
        "no-permission",
        "included-permission",
        "viewer-cannot-write",
    ],
)
def test_doc_routes(
    doc_app: dict[str, Any], method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """Each documented route answers as the page says."""
    assert call(doc_app["application"], method, path, headers=headers).status_code == status


def test_doc_ownership(doc_app: dict[str, Any]) -> None:
    """Owner or admin may update; others 403; anonymous 401 even for a missing post."""
    app = doc_app["application"]
    body = {"json": {"title": "x"}}
    assert call(app, "PUT", "/posts/1", headers=bearer("alice"), **body).status_code == 200
    assert call(app, "PUT", "/posts/2", headers=bearer("alice"), **body).status_code == 403
    assert (
        call(app, "PUT", "/posts/2", headers=bearer("eve", roles=["admin"]), **body).status_code
        == 200
    )
    assert call(app, "PUT", "/posts/99", **body).status_code == 401


def test_doc_login_token_and_reset(doc_app: dict[str, Any]) -> None:
    """Login, the OAuth2 password grant, refresh rotation and the password reset, as written."""
    app = doc_app["application"]
    login = call(app, "POST", "/login", json={"username": "alice", "password": "alice-password"})
    token = login.json()["access_token"]
    assert (
        call(app, "GET", "/admin/stats", headers={"authorization": f"Bearer {token}"}).status_code
        == 200
    )
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-password",
        "scope": "items:read",
    }
    issued = call(app, "POST", "/token", data=form).json()
    assert issued["scope"] == "items:read"
    refresh = {"grant_type": "refresh_token", "refresh_token": issued["refresh_token"]}
    assert call(app, "POST", "/token", data=refresh).status_code == 200
    assert call(app, "POST", "/token", data=refresh).json()["error"] == "invalid_grant"
    assert (
        call(app, "POST", "/token", data={**form, "scope": "nope"}).json()["error"]
        == "invalid_scope"
    )
    same = [
        call(app, "POST", "/password-reset-request", json={"email": e}).json()
        for e in ("alice@example.test", "nobody@example.test")
    ]
    assert same[0] == same[1]
    reset = {"token": doc_app["OUTBOX"][-1][1], "new_password": "changed"}
    assert call(app, "POST", "/password-reset", json=reset).status_code == 200
    assert call(app, "POST", "/password-reset", json=reset).status_code == 401


def test_doc_flask_and_openapi(doc_app: dict[str, Any]) -> None:
    """The Flask block works; /openapi.json shows the password flow with the known scopes."""
    client = Client(doc_app["flask_app"])
    anonymous = client.get("/items")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"] == "application/problem+json"
    assert client.get("/items", headers=bearer(scope="items:read")).status_code == 200
    schema = call(doc_app["application"], "GET", "/openapi.json").json()
    flow = schema["components"]["securitySchemes"]["OAuth2"]["flows"]["password"]
    assert flow["tokenUrl"] == "/token"
    assert set(flow["scopes"]) == {"items:read", "items:write", "admin:read"}
