"""The demo contract over real HTTP: uvicorn for Starlette and FastAPI, werkzeug for Flask."""

from __future__ import annotations

import re
import socket
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
import redis
from werkzeug.serving import make_server

from secmw.demo import DEMO_API_KEY, UVICORN_OPTIONS, Demo, build, request_handler
from secmw.demo.common import banner
from tests.redis_support import clients_after_closing, connected_clients
from tests.support import SECRET, make_token, uvicorn_server, werkzeug_server

pytestmark = pytest.mark.server
FRAMEWORKS = ["starlette", "fastapi", "flask"]
ASGI = ("starlette", "fastapi")


@contextmanager
def demo_server(framework: str) -> Iterator[httpx.Client]:
    """The demo served; its stack's Redis connections closed when the server stops (by the ASGI
    stack itself when the lifespan shuts down, by ``close()`` on Flask's ``wsgi_app``)."""
    app: Any = build(framework)
    server = uvicorn_server(app, lifespan="on") if framework in ASGI else werkzeug_server(app)
    try:
        with server as base, httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        if framework == "flask":
            app.wsgi_app.close()


def login(client: httpx.Client, user: str, password: str, **extra: str) -> httpx.Response:
    form = {"grant_type": "password", "username": user, "password": password, **extra}
    return client.post("/token", data=form)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_demo_contract(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Users, API key, token endpoint, scopes, logout and the loopback-only route."""
    monkeypatch.setenv("SECMW_IP__TRUSTED_PROXIES", "127.0.0.1")
    with demo_server(framework) as client:
        check_contract(client)


def test_fastapi_demo_contract_with_fastapis_testclient(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same contract through FastAPI's own TestClient (in process, lifespan run)."""
    with warnings.catch_warnings():
        # Starlette 1.x warns that its TestClient will move from httpx to httpx2: not ours.
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient

    monkeypatch.setenv("SECMW_IP__TRUSTED_PROXIES", "127.0.0.1")
    with TestClient(build("fastapi"), client=("127.0.0.1", 50000)) as client:
        check_contract(client)


def check_contract(client: Any) -> None:
    """The demo contract every framework passes: statuses, bodies, challenges."""
    assert client.get("/health").json() == {"status": "ok"}

    issued = login(client, "alice", "alice-password")
    assert issued.status_code == 200
    body = issued.json()
    assert body["token_type"] == "bearer"
    assert set(body) >= {"access_token", "expires_in", "refresh_token", "scope"}
    assert set(body["scope"].split()) == {"items:read", "items:write", "admin:read"}
    assert issued.headers["cache-control"] == "no-store"
    alice = bearer(body["access_token"])

    me = client.get("/me", headers=alice).json()
    assert me == {"id": "alice", "scheme": "bearer", "scopes": sorted(me["scopes"])}
    assert client.get("/admin/stats", headers=alice).status_code == 200
    created = client.post("/items", json={"name": "new"}, headers=alice)
    assert created.status_code == 201

    bob = ("bob", "bob-password")
    assert client.get("/me", auth=bob).json() == {
        "id": "bob",
        "scheme": "basic",
        "scopes": ["items:read"],
    }
    assert client.get("/items", auth=bob).status_code == 200
    assert client.post("/items", json={"name": "x"}, auth=bob).status_code == 403
    assert client.get("/admin/stats", auth=bob).status_code == 403

    svc = client.get("/me", headers={"X-API-Key": DEMO_API_KEY}).json()
    assert svc == {"id": "svc-reporting", "scheme": "apikey", "scopes": ["items:read"]}
    assert client.get("/items").status_code == 401
    assert client.get("/items", headers={"X-API-Key": "wrong"}).status_code == 401

    narrowed = login(client, "alice", "alice-password", scope="items:read").json()
    assert narrowed["scope"] == "items:read"
    narrow = bearer(narrowed["access_token"])
    assert client.post("/items", json={"name": "x"}, headers=narrow).status_code == 403

    refreshed = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert refreshed.status_code == 200
    again = client.post(
        "/token", data={"grant_type": "refresh_token", "refresh_token": body["refresh_token"]}
    )
    assert again.json()["error"] == "invalid_grant"
    # The replay ended the login: its access tokens are refused too, not only at their exp.
    assert client.get("/me", headers=alice).status_code == 401
    minted = bearer(refreshed.json()["access_token"])
    assert client.get("/me", headers=minted).status_code == 401

    # Logout with the access token ends the login's refresh token as well.
    session = login(client, "alice", "alice-password").json()
    fresh = bearer(session["access_token"])
    assert client.post("/logout", headers=fresh).json() == {"revoked": True}
    assert client.get("/me", headers=fresh).status_code == 401
    form = {"grant_type": "refresh_token", "refresh_token": session["refresh_token"]}
    after = client.post("/token", data=form)
    assert (after.status_code, after.json()["error"]) == (400, "invalid_grant")

    assert client.get("/internal/status").json()["client"] == "127.0.0.1"
    proxied = client.get("/internal/status", headers={"X-Forwarded-For": "203.0.113.9"})
    assert proxied.status_code == 403
    assert proxied.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_token_endpoint_errors(framework: str) -> None:
    """RFC 6749 errors: invalid_grant, invalid_scope, unsupported_grant_type."""
    with demo_server(framework) as client:
        wrong = login(client, "alice", "nope")
        assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")
        unknown = login(client, "mallory", "x")
        assert unknown.json() == wrong.json()
        scope = login(client, "bob", "bob-password", scope="admin:read")
        assert scope.json()["error"] == "invalid_scope"
        grant = client.post("/token", data={"grant_type": "authorization_code", "code": "x"})
        assert (grant.status_code, grant.json()["error"]) == (400, "unsupported_grant_type")
        anonymous = client.post("/token", data={"grant_type": "client_credentials"})
        assert (anonymous.status_code, anonymous.json()["error"]) == (400, "invalid_client")


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_environment_changes_behaviour(framework: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """SECMW_JWT__SECRET, rate limits and the failed-login throttle come from the environment."""
    monkeypatch.setenv("SECMW_JWT__SECRET", SECRET)
    monkeypatch.setenv("SECMW_RATE_LIMIT__DEFAULT", "3/minute")
    monkeypatch.setenv("SECMW_RATE_LIMIT__AUTH_FAILURES", "2/minute")
    with demo_server(framework) as client:
        token = make_token(sub="minted-elsewhere", scope="items:read")
        statuses = [client.get("/items", headers=bearer(token)).status_code for _ in range(4)]
        assert statuses == [200, 200, 200, 429]
        assert all(client.get("/health").status_code == 200 for _ in range(5))
        failures = [login(client, "bob", "wrong").status_code for _ in range(3)]
        assert failures == [400, 400, 429]
        locked = login(client, "bob", "bob-password")
        assert locked.status_code == 429
        assert int(locked.headers["retry-after"]) > 0


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_an_oauth_client_sees_a_throttled_login_as_an_error(
    framework: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Authlib's OAuth2Session raises an OAuthError for a throttled login (the answer is an RFC
    6749 §5.2 body with no-store and Retry-After), and never stores it as its token."""
    from authlib.integrations.requests_client import OAuth2Session, OAuthError

    monkeypatch.setenv("SECMW_RATE_LIMIT__AUTH_FAILURES", "2/minute")
    with demo_server(framework) as client:
        url = str(client.base_url.join("/token"))
        with OAuth2Session() as session:
            for _ in range(2):
                with pytest.raises(OAuthError) as wrong:
                    session.fetch_token(url, username="bob", password="wrong")
                assert wrong.value.error == "invalid_grant"
            with pytest.raises(OAuthError) as throttled:
                session.fetch_token(url, username="bob", password="bob-password")
            assert throttled.value.error == "temporarily_unavailable"
            assert not session.token
        answer = login(client, "bob", "bob-password")
        assert answer.status_code == 429
        assert answer.headers["cache-control"] == "no-store"
        assert int(answer.headers["retry-after"]) > 0


@pytest.mark.redis
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_rate_limits_on_redis(
    framework: str, monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """SECMW_RATE_LIMIT__STORAGE_URI=redis://... puts the counters in Redis."""
    monkeypatch.setenv("SECMW_RATE_LIMIT__STORAGE_URI", redis_url)
    monkeypatch.setenv("SECMW_RATE_LIMIT__DEFAULT", "2/minute")
    with redis.Redis.from_url(redis_url) as client_redis:
        client_redis.flushall()
        before = connected_clients(client_redis)
        with demo_server(framework) as client:
            statuses = [
                client.get("/me", auth=("bob", "bob-password")).status_code for _ in range(3)
            ]
            assert statuses == [200, 200, 429]
            assert connected_clients(client_redis) > before
        assert client_redis.dbsize() > 0
        assert clients_after_closing(client_redis, before) == before  # the demo closed them


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_docs_pages_and_headers(framework: str) -> None:
    """/docs, its Swagger UI files and /openapi.json load from the demo itself; the docs get
    their own CSP (this origin and a nonce, no CDN), the API the strict one."""
    with demo_server(framework) as client:
        docs = client.get("/docs")
        assert docs.status_code == 200
        policy = docs.headers["content-security-policy"]
        nonce = re.search(r"'nonce-([^']+)'", policy)
        assert nonce
        assert f'nonce="{nonce.group(1)}"' in docs.text
        assert "script-src 'self'" in policy
        assert "cdn" not in policy
        for name, kind in (("swagger-ui-bundle.js", "javascript"), ("swagger-ui.css", "css")):
            served = client.get(f"/docs/assets/{name}")
            assert served.status_code == 200
            assert kind in served.headers["content-type"]
            assert f"/docs/assets/{name}" in docs.text
        assert client.get("/docs/assets/index.html").status_code == 404  # only js, css, png
        if framework != "fastapi":  # FastOpenAPI's ReDoc page (FastAPI's is off in the demo)
            assert client.get("/redoc").status_code == 200
        spec = client.get("/openapi.json").json()
        assert "/items" in spec["paths"]
        api = client.get("/health")
        assert api.headers["content-security-policy"].startswith("default-src 'none'")
        assert api.headers["x-content-type-options"] == "nosniff"


def test_banner_lists_address_users_and_curl_lines() -> None:
    """The start-up text shows the address, both users, the key, the client and four curl
    lines."""
    demo: Any = Demo.create()
    text = banner(demo, "starlette", "127.0.0.1", 8000)
    assert "http://127.0.0.1:8000" in text
    assert "alice / alice-password" in text
    assert "bob / bob-password" in text
    assert DEMO_API_KEY in text
    assert "demo-client / demo-client-secret" in text
    assert text.count("curl ") == 4
    assert "SECMW_JWT__SECRET is unset" in text


def raw_fields(base: str, path: str) -> list[tuple[str, str]]:
    """The response fields exactly as the server wrote them (one HTTP/1.1 request, raw)."""
    address = httpx.URL(base)
    with socket.create_connection((address.host, address.port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head = raw.partition(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")[1:]
    return [(name.lower(), value.strip()) for name, _, value in (f.partition(":") for f in head)]


@contextmanager
def demo_served(framework: str, app: Any) -> Iterator[str]:
    """The demo on the server ``secmw demo`` runs it with (and that server's settings)."""
    if framework in ASGI:
        with uvicorn_server(app, lifespan="on", **UVICORN_OPTIONS) as base:
            yield base
        return
    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=request_handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()
        app.wsgi_app.close()


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize("configured", [None, "demo-api", ""])
def test_server_field_names_no_version_and_appears_once(
    framework: str, configured: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No server or Python version on the wire; SECMW_HEADERS__SERVER_HEADER is sent once."""
    if configured is not None:
        monkeypatch.setenv("SECMW_HEADERS__SERVER_HEADER", configured)
    with demo_served(framework, build(framework)) as base:
        for path in ("/health", "/me", "/no-such-page"):
            fields = raw_fields(base, path)
            servers = [value for name, value in fields if name == "server"]
            assert servers == ([configured] if configured else []), path
            assert not any("Python/" in value or "Werkzeug/" in value for _, value in fields)
