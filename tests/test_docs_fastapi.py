"""docs/fastapi.md runs as written: its blocks, executed top to bottom, make a working app."""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import jwt
import pytest

from tests.support import asgi_request

DOC = Path(__file__).resolve().parents[1] / "docs" / "fastapi.md"
SECRET = "doc-secret-with-at-least-32-bytes!!"
PROBLEM = "application/problem+json"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


@pytest.fixture(scope="module")
def app() -> Any:
    """The doc's environment, then every Python block in one namespace; its ``app``."""
    with pytest.MonkeyPatch.context() as env:
        for line in blocks("bash")[0].splitlines():
            name, _, value = line.removeprefix("export ").partition("=")
            env.setenv(name, SECRET if value.startswith('"$(') else value.strip("'"))
        namespace: dict[str, Any] = {"__name__": "fastapi_doc"}
        for code in blocks("python"):
            exec(compile(code, str(DOC), "exec", dont_inherit=True), namespace)
    return namespace["app"]


def bearer(sub: str = "alice", **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "exp": int(time.time()) + 3600, **claims}
    return {"authorization": f"Bearer {jwt.encode(payload, SECRET)}"}


call = asgi_request


@pytest.mark.parametrize(
    ("method", "path", "headers", "status"),
    [
        ("GET", "/items", {}, 401),
        ("GET", "/items", bearer(scope="items:read"), 200),
        ("GET", "/items", bearer(scope="items:*"), 200),  # a hierarchy: wildcards honoured
        ("GET", "/items", bearer(scope="other"), 403),
        ("GET", "/admin/users", bearer(roles=["admin"]), 200),
        ("GET", "/admin/users", bearer(roles=["editor"]), 403),
        ("DELETE", "/posts/2", bearer("alice"), 403),
        ("DELETE", "/posts/2", bearer("bob"), 204),
        ("DELETE", "/posts/1", bearer("carol", roles=["admin"]), 204),
        ("DELETE", "/posts/9", bearer("alice"), 404),
        ("DELETE", "/posts/9", {}, 401),
    ],
)
def test_guide_statuses(
    app: Any, method: str, path: str, headers: dict[str, str], status: int
) -> None:
    """Scopes, roles and ownership as the guide says; refusals are problem+json."""
    response = call(app, method, path, headers=headers)
    assert response.status_code == status
    if status in (401, 403):
        assert response.headers["content-type"] == PROBLEM


def test_guide_missing_scope_and_broken_body(app: Any) -> None:
    """The challenge names the scope; an anonymous broken body is 401, not 422."""
    json_type = {"content-type": "application/json"}
    narrow = call(app, "POST", "/items", json={"name": "x"}, headers=bearer(scope="items:read"))
    assert narrow.status_code == 403
    assert narrow.headers["www-authenticate"] == (
        'Bearer error="insufficient_scope", scope="items:write"'
    )
    broken = call(app, "POST", "/items", content=b"{", headers=json_type)
    assert broken.status_code == 401
    assert broken.headers["www-authenticate"].startswith("Bearer")
    created = call(app, "POST", "/items", json={"name": "x"}, headers=bearer(scope="items:write"))
    assert (created.status_code, created.json()) == (201, {"name": "x", "owner": "alice"})


def test_guide_openapi(app: Any) -> None:
    """/openapi.json: the bearer scheme, secured operations, the stack's answers."""
    document = call(app, "GET", "/openapi.json").json()
    assert document["components"]["securitySchemes"] == {
        "BearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    listing = document["paths"]["/items"]["get"]
    assert listing["security"] == [{"BearerAuth": []}]
    assert {"400", "401", "403", "429"} <= set(listing["responses"])
    assert "Problem" in document["components"]["schemas"]
