"""The README's Python examples run as written."""

from __future__ import annotations

import re
import sys
import time
import types
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from flask.testing import FlaskClient

README = Path(__file__).resolve().parents[1] / "README.md"
SECRET = "change-me-to-32-bytes-or-more-please"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)


def block_defining(name: str) -> dict[str, Any]:
    """Run the first README block containing ``name`` as a module (libraries that resolve
    annotations look the module up in sys.modules, as they would for a real file)."""
    for index, code in enumerate(python_blocks()):
        if name in code:
            module = types.ModuleType(f"readme_example_{index}")
            sys.modules[module.__name__] = module
            exec(compile(code, str(README), "exec", dont_inherit=True), module.__dict__)
            return module.__dict__
    raise AssertionError(f"no README block mentions {name}")


def bearer(scope: str) -> dict[str, str]:
    token = jwt.encode({"sub": "u1", "scope": scope, "exp": time.time() + 60}, SECRET)
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.anyio
async def test_starlette_quickstart() -> None:
    """The Starlette quickstart's stack admits the scope, refuses without it, adds the headers and
    rate-limit fields, and keeps other addresses out of ``/internal/*``."""
    app = block_defining("from starlette.applications import Starlette")["app"]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        ok = await client.get("/items", headers=bearer("items:read"))
        assert ok.json() == {"id": "u1", "scopes": ["items:read"]}
        assert ok.headers["x-content-type-options"] == "nosniff"
        assert "ratelimit" in ok.headers
        assert (await client.get("/items", headers=bearer("other"))).status_code == 403
        assert (
            await client.get("/items", headers={"Authorization": "Bearer x"})
        ).status_code == 401
    outside = httpx.ASGITransport(app=app, client=("192.0.2.7", 1))
    async with httpx.AsyncClient(transport=outside, base_url="http://t") as client:
        refused = await client.get("/internal/status", headers=bearer("items:read"))
        assert (refused.status_code, refused.json()["code"]) == (403, "ip_not_allowed")


def test_flask_quickstart() -> None:
    """The Flask quickstart's stack admits the scope, refuses without it, adds the headers."""
    app = block_defining("from flask import Flask")["app"]
    client: FlaskClient = app.test_client()
    ok = client.get("/items", headers=bearer("items:read"))
    assert ok.json == {"id": "u1"}
    assert ok.headers["x-content-type-options"] == "nosniff"
    assert client.get("/items", headers=bearer("other")).status_code == 403
    assert client.get("/items").status_code == 401


@pytest.mark.anyio
async def test_fastopenapi_example() -> None:
    """The FastOpenAPI example answers 200 with the scope, 403 without, 401 anonymous."""
    app = block_defining("from secmw.fastopenapi import SecurityBridge")["application"]
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 1))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/items", headers=bearer("items:read"))).json() == {"for": "u1"}
        assert (await client.get("/items", headers=bearer("other"))).status_code == 403
        assert (await client.get("/items")).status_code == 401
