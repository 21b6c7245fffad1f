"""docs/routes.md runs as written: each Python block builds an app that behaves as the guide
says."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support import make_token

DOC = Path(__file__).resolve().parents[1] / "docs" / "routes.md"
SECRET = "doc-secret-with-at-least-32-bytes!!"
NEEDLES = {
    "starlette": 'Mount("/api", app=api)',
    "fastapi": "from fastapi import",
    "flask": "from secmw.flask import SecMW",
}


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.DOTALL)


def load(name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """Set the guide's environment (its ``bash`` block), run the named block, return ``app``."""
    for line in blocks("bash")[0].splitlines():
        variable, _, value = line.removeprefix("export ").partition("=")
        monkeypatch.setenv(variable, SECRET if value.startswith('"$(') else value.strip("'"))
    (code,) = [c for c in blocks("python") if NEEDLES[name] in c]
    namespace: dict[str, Any] = {"__name__": f"routes_guide_{name}"}
    exec(compile(code, str(DOC), "exec", dont_inherit=True), namespace)
    return namespace["app"]


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(SECRET, sub='alice', scope=scope)}"}


def asgi(app: Any, *requests: tuple[str, str, dict[str, str]]) -> list[httpx.Response]:
    async def run() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
        async with httpx.AsyncClient(transport=transport, base_url="http://api.example") as c:
            return [await c.request(m, p, headers=h) for m, p, h in requests]

    return asyncio.run(run())


def test_every_block_is_exercised() -> None:
    """Each Python block is named by exactly one needle."""
    found = [[n for n, needle in NEEDLES.items() if needle in c] for c in blocks("python")]
    assert sorted(n for names in found for n in names) == sorted(NEEDLES)
    assert all(len(names) == 1 for names in found)


def test_starlette(monkeypatch: pytest.MonkeyPatch) -> None:
    """public, limit, requires (under the mount), headers and requires_auth as described."""
    app = load("starlette", monkeypatch)
    health, anonymous, missing, ok, other = asgi(
        app,
        ("GET", "/health", {}),
        ("GET", "/api/items/7", {}),
        ("GET", "/api/items/7", bearer("other")),
        ("GET", "/api/items/7", bearer("items:read")),
        ("GET", "/elsewhere", {}),
    )
    assert health.status_code == 200
    assert (anonymous.status_code, anonymous.headers["content-type"]) == (
        401,
        "application/problem+json",
    )
    assert missing.status_code == 403
    assert missing.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", scope="items:read"'
    )
    assert ok.json() == {"id": 7, "for": "alice"}
    assert other.status_code == 401  # auth.required "/**"
    logins = asgi(app, *[("GET", "/login", {})] * 6)
    assert [r.status_code for r in logins] == [200] * 5 + [429]
    page, refused = asgi(app, ("GET", "/dashboard", bearer("")), ("GET", "/dashboard", {}))
    assert page.headers["content-security-policy"].startswith("default-src 'self'; img-src")
    assert refused.status_code == 401


def test_fastapi(monkeypatch: pytest.MonkeyPatch) -> None:
    """Routes of an included router; cost 2 against ten a minute allows five; exempt health."""
    app = load("fastapi", monkeypatch)
    read, missing, health = asgi(
        app,
        ("GET", "/items/3", bearer("items:read")),
        ("GET", "/items/3", bearer("items:write")),
        ("GET", "/health", {}),
    )
    assert read.json() == {"id": 3}
    assert missing.status_code == 403
    assert health.status_code == 200
    assert "ratelimit" not in health.headers
    created = asgi(app, *[("POST", "/items/", bearer("items:write"))] * 6)
    assert [r.status_code for r in created] == [200] * 5 + [429]


def test_flask(monkeypatch: pytest.MonkeyPatch) -> None:
    """The extension with app.config: public health, requires on the item route."""
    app = load("flask", monkeypatch)
    client = app.test_client()
    environ = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/health", environ_overrides=environ).status_code == 200
    anonymous = client.get("/items/4", environ_overrides=environ)
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    missing = client.get("/items/4", headers=bearer("x"), environ_overrides=environ)
    assert missing.json["code"] == "insufficient_scope"
    ok = client.get("/items/4", headers=bearer("items:read"), environ_overrides=environ)
    assert ok.json == {"id": 4, "for": "alice"}
