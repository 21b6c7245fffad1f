"""secmw.flask.SecMW: settings from app.config over the environment, one problem+json format
for every 401 and 403 (the stack's, require_scopes', Flask's own abort), init_app twice, a
replaced wsgi_app, and the Redis clients closed at process exit."""

from __future__ import annotations

import atexit
import logging
from typing import Any

import pytest
import redis
from flask import Flask, abort

from secmw.errors import ConfigurationError
from secmw.flask import SecMW, get_principal, require_scopes
from tests.redis_support import clients_after_closing, connected_clients
from tests.support import SECRET, make_token

OTHER_SECRET = "o" * 40


def make_app(**config: Any) -> Flask:
    app = Flask("ext")
    app.config.update(config)

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"id": get_principal().id}

    @app.get("/items")
    @require_scopes("items:read")
    def items() -> dict[str, Any]:
        return {"items": []}

    @app.get("/abort/<int:status>")
    def aborting(status: int) -> str:
        abort(status)

    return app


def get(app: Flask, path: str, token: str | None = None) -> Any:
    headers = {"authorization": f"Bearer {token}"} if token else {}
    return app.test_client().get(
        path, headers=headers, environ_overrides={"REMOTE_ADDR": "127.0.0.1"}
    )


def test_app_config_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """``SECMW_JWT__SECRET`` from app.config is the key; the environment fills in the rest."""
    monkeypatch.setenv("SECMW_JWT__SECRET", OTHER_SECRET)
    monkeypatch.setenv("SECMW_RATE_LIMIT__DEFAULT", "2/minute")
    app = make_app(SECMW_JWT__SECRET=SECRET)
    SecMW(app)
    token = make_token(SECRET, sub="alice")
    assert get(app, "/me", token).json == {"id": "alice"}
    assert get(app, "/me", make_token(OTHER_SECRET)).status_code == 401
    assert get(app, "/me", token).status_code == 200
    assert get(app, "/me", token).status_code == 429  # the environment's default limit


def test_bad_config_value_names_the_key() -> None:
    """A bad value in app.config fails at init_app, naming the SECMW_* key."""
    with pytest.raises(ConfigurationError, match="SECMW_RATE_LIMIT__DEFAULT"):
        SecMW(make_app(SECMW_JWT__SECRET=SECRET, SECMW_RATE_LIMIT__DEFAULT="often"))


def test_init_app_twice_is_refused_and_one_extension_serves_many_apps() -> None:
    """Twice on one app: ConfigurationError; one extension on two apps (a factory): fine."""
    extension = SecMW()
    first, second = make_app(SECMW_JWT__SECRET=SECRET), make_app(SECMW_JWT__SECRET=SECRET)
    extension.init_app(first)
    extension.init_app(second)
    with pytest.raises(ConfigurationError, match="already installed"):
        extension.init_app(first)
    assert SecMW.stack(first) is not SecMW.stack(second)
    token = make_token(SECRET)
    assert get(first, "/me", token).status_code == get(second, "/me", token).status_code == 200


@pytest.mark.parametrize(
    ("path", "token_scope", "status", "code", "challenge"),
    [
        ("/items", None, 401, "authentication_required", 'Bearer realm="api"'),
        ("/items", "other", 403, "insufficient_scope", 'error="insufficient_scope"'),
        ("/abort/401", None, 401, "authentication_required", 'Bearer realm="api"'),
        ("/abort/403", "other", 403, "forbidden", None),
        ("/me", "bad", 401, "invalid_token", 'error="invalid_token"'),
    ],
    ids=["require_scopes-401", "require_scopes-403", "abort-401", "abort-403", "stack-401"],
)
def test_every_refusal_is_problem_json(
    path: str, token_scope: str | None, status: int, code: str, challenge: str | None
) -> None:
    """The views' refusals, Flask's abort and the stack's answer in one format, with challenge."""
    app = make_app(SECMW_JWT__SECRET=SECRET)
    SecMW(app)
    token = None
    if token_scope == "bad":
        token = make_token(OTHER_SECRET)
    elif token_scope is not None:
        token = make_token(SECRET, scope=token_scope)
    response = get(app, path, token)
    assert response.status_code == status
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json["code"] == code
    assert response.json["status"] == status
    values = response.headers.getlist("www-authenticate")
    if challenge is None:
        assert values == []
    else:
        assert any(challenge in value for value in values)
    if code == "insufficient_scope":
        assert 'scope="items:read"' in values[0]


def test_replaced_wsgi_app_fails_closed(caplog: pytest.LogCaptureFixture) -> None:
    """``app.wsgi_app`` replaced after SecMW: views are not served (503) and an error is logged."""
    app = make_app(SECMW_JWT__SECRET=SECRET)
    SecMW(app)
    app.wsgi_app = Flask.wsgi_app.__get__(app)  # type: ignore[method-assign]
    with caplog.at_level(logging.ERROR, logger="secmw.flask"):
        response = get(app, "/me", make_token(SECRET))
    assert response.status_code == 503
    assert response.json["code"] == "security_layer_missing"
    assert "replaced" in caplog.text


def test_wrapping_after_the_extension_is_fine() -> None:
    """Wrapping (not replacing) the installed wsgi_app keeps the stack in front."""
    app = make_app(SECMW_JWT__SECRET=SECRET)
    SecMW(app)
    inner = app.wsgi_app
    app.wsgi_app = lambda environ, start: inner(environ, start)  # type: ignore[method-assign]
    assert get(app, "/me", make_token(SECRET, sub="bob")).json == {"id": "bob"}


def test_redis_clients_closed_at_process_exit(
    monkeypatch: pytest.MonkeyPatch, redis_url: str
) -> None:
    """The extension registers closing with atexit; requests open Redis connections, the
    registered call closes them."""
    registered: list[Any] = []
    monkeypatch.setattr(atexit, "register", registered.append)
    app = make_app(SECMW_JWT__SECRET=SECRET, SECMW_RATE_LIMIT__STORAGE_URI=redis_url)
    SecMW(app)
    (close,) = registered
    with redis.Redis.from_url(redis_url) as probe:
        before = connected_clients(probe)
        assert get(app, "/me").status_code == 200
        assert get(app, "/me", make_token(OTHER_SECRET)).status_code == 401
        assert connected_clients(probe) >= before + 2  # the rate limiter's and the throttle's
        close()
        assert clients_after_closing(probe, before) == before
