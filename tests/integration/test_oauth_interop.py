"""A standard OAuth 2.0 client (Authlib's ``OAuth2Session``) against the demos on real servers:
client_secret_basic and client_secret_post, client credentials, password and refresh grants,
and the RFC 6749 §5.2 errors it raises."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import pytest
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session

from secmw.demo import build
from secmw.demo.common import DEMO_CLIENT
from tests.support import uvicorn_server, werkzeug_server

pytestmark = pytest.mark.server
CLIENT_ID, CLIENT_SECRET = DEMO_CLIENT


@pytest.fixture(scope="module", params=["starlette", "flask"])
def base(request: pytest.FixtureRequest) -> Iterator[str]:
    """A demo served by uvicorn (Starlette) or werkzeug (Flask)."""
    with _served(request.param) as url:
        yield url


@contextmanager
def _served(framework: str) -> Iterator[str]:
    app: Any = build(framework)
    if framework == "starlette":
        server = uvicorn_server(app, lifespan="on")
    else:
        server = werkzeug_server(app)
    try:
        with server as url:
            yield url
    finally:
        if framework == "flask":
            app.wsgi_app.close()


def session(method: str, secret: str = CLIENT_SECRET, client_id: str = CLIENT_ID) -> OAuth2Session:
    return OAuth2Session(client_id, secret, token_endpoint_auth_method=method)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_client_credentials_grant(base: str, method: str) -> None:
    """The confidential demo client gets a token either way and calls the API with it."""
    with session(method) as client:
        token = client.fetch_token(f"{base}/token", grant_type="client_credentials")
        assert token["scope"] == "items:read"
        assert "refresh_token" not in token
        me = client.get(f"{base}/me").json()
        assert me == {"id": CLIENT_ID, "scheme": "bearer", "scopes": ["items:read"]}
        assert client.get(f"{base}/items").status_code == 200
        assert client.post(f"{base}/items", json={"name": "x"}).status_code == 403


def test_password_grant_and_refresh(base: str) -> None:
    """A public client (no secret) logs a user in and refreshes the token."""
    with OAuth2Session("swagger-ui", token_endpoint_auth_method="none") as client:
        token = client.fetch_token(
            f"{base}/token", username="alice", password="alice-password", scope="items:read"
        )
        assert client.get(f"{base}/me").json()["id"] == "alice"
        renewed = client.refresh_token(f"{base}/token")
        assert renewed["refresh_token"] != token["refresh_token"]
        assert client.get(f"{base}/items").status_code == 200


@pytest.mark.parametrize(
    ("method", "secret", "client_id", "grant", "error"),
    [
        ("client_secret_basic", "wrong", CLIENT_ID, {}, "invalid_client"),
        ("client_secret_post", "wrong", CLIENT_ID, {}, "invalid_client"),
        ("client_secret_basic", "x", "nobody", {}, "invalid_client"),
        ("client_secret_basic", CLIENT_SECRET, CLIENT_ID, {"scope": "admin:read"}, "invalid_scope"),
        (
            "client_secret_basic",
            CLIENT_SECRET,
            CLIENT_ID,
            {"grant_type": "password", "username": "alice", "password": "alice-password"},
            "unauthorized_client",
        ),
    ],
    ids=["wrong-secret-basic", "wrong-secret-post", "unknown-client", "scope", "grant"],
)
def test_errors_an_oauth_client_raises(
    base: str, method: str, secret: str, client_id: str, grant: dict[str, str], error: str
) -> None:
    """Each refusal reaches Authlib as the RFC 6749 §5.2 error it names."""
    with session(method, secret, client_id) as client:
        params = {"grant_type": "client_credentials", **grant}
        with pytest.raises(OAuthError) as raised:
            client.fetch_token(f"{base}/token", **params)
        assert raised.value.error == error


def test_wrong_basic_secret_is_401_with_a_basic_challenge(base: str) -> None:
    """RFC 6749 §5.2: a client that used Authorization gets 401 and WWW-Authenticate: Basic."""
    answer = httpx.post(
        f"{base}/token",
        data={"grant_type": "client_credentials"},
        auth=(CLIENT_ID, "wrong"),
    )
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"].startswith("Basic ")
    assert answer.json()["error"] == "invalid_client"
