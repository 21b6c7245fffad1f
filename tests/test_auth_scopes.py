"""SECMW_AUTH__SCOPES: per-route scope requirements, the same answers on ASGI and WSGI, a
cached token checked like a fresh one, and the insufficient_scope challenge of RFC 6750."""

from __future__ import annotations

from typing import Any

import pytest
from werkzeug.test import Client

from secmw.asgi import SecurityStack as ASGIStack
from secmw.auth.scopes import ScopeRules, insufficient_scope
from secmw.auth.settings import ScopeRule
from secmw.errors import ConfigurationError
from secmw.wsgi import SecurityStack as WSGIStack
from tests.support import SECRET, http_scope, make_token, run_asgi

RULES = [
    {"path": "/items/{id}", "methods": ["GET"], "scopes": ["items:read"]},
    {"path": "/items/{id}", "methods": ["DELETE"], "scopes": ["items:write", "admin"]},
    {"path": "/me"},
]
SECTIONS: dict[str, Any] = {
    "jwt": {"secret": SECRET},
    "auth": {"scopes": RULES, "public": ["/items/public"]},
    "rate_limit": {"enabled": False},
}


async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def wsgi_app(environ: Any, start_response: Any) -> list[bytes]:
    start_response("200 OK", [])
    return [b"ok"]


def asgi(method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
    stack = ASGIStack(asgi_app, **SECTIONS)
    recorder = None
    for _ in range(2):  # the second time from the verified-token cache
        recorder = run_asgi(stack, http_scope(path, method=method, headers=list(headers.items())))
    assert recorder is not None
    values = recorder.header_values("www-authenticate")
    return recorder.status, values[0] if values else None


def wsgi(method: str, path: str, headers: dict[str, str]) -> tuple[int, str | None]:
    client = Client(WSGIStack(wsgi_app, **SECTIONS))
    response = None
    for _ in range(2):
        response = client.open(
            path, method=method, headers=headers, environ_overrides={"REMOTE_ADDR": "127.0.0.1"}
        )
    assert response is not None
    return response.status_code, response.headers.get("www-authenticate")


def bearer(scope: str) -> dict[str, str]:
    return {"authorization": f"Bearer {make_token(SECRET, scope=scope)}"}


CHALLENGE = 'Bearer realm="api", error="insufficient_scope", scope="items:read"'
CASES = [
    ("GET", "/items/1", {}, 401, 'Bearer realm="api"'),
    ("GET", "/items/1", bearer("other"), 403, CHALLENGE),
    ("GET", "/items/1", bearer("items:read"), 200, None),
    ("HEAD", "/items/1", {}, 200, None),  # the rule names GET only
    ("DELETE", "/items/1", bearer("items:write"), 403, None),
    ("DELETE", "/items/1", bearer("items:write admin"), 200, None),
    ("GET", "/items/public", {}, 200, None),
    ("POST", "/me", {}, 401, 'Bearer realm="api"'),
    ("POST", "/me", bearer(""), 200, None),
    ("GET", "/other", {}, 200, None),
]


@pytest.mark.parametrize("side", [asgi, wsgi], ids=["asgi", "wsgi"])
@pytest.mark.parametrize(
    ("method", "path", "headers", "status", "challenge"),
    CASES,
    ids=[f"{m}-{p}-{s}" for m, p, _, s, _ in CASES],
)
def test_scope_rules(
    side: Any, method: str, path: str, headers: dict[str, str], status: int, challenge: str | None
) -> None:
    """The first matching rule decides; public paths and unmatched ones are left alone."""
    got_status, got_challenge = side(method, path, headers)
    assert got_status == status
    if challenge is not None:
        assert got_challenge == challenge
    elif status == 403:
        assert got_challenge is not None
        assert 'error="insufficient_scope"' in got_challenge


def test_preflight_is_not_checked() -> None:
    """A CORS preflight carries no credential: it goes to the app's CORS handling."""
    headers = [("origin", "https://app.example"), ("access-control-request-method", "GET")]
    stack = ASGIStack(asgi_app, **SECTIONS)
    assert run_asgi(stack, http_scope("/items/1", method="OPTIONS", headers=headers)).status == 200


def test_insufficient_scope_without_bearer_has_no_challenge() -> None:
    """API keys only: RFC 6750's challenge would name a scheme the API does not take."""
    deny = insufficient_scope(["a", "b"], None, challenge=False)
    assert (deny.status, deny.code, deny.headers) == (403, "insufficient_scope", ())
    assert insufficient_scope(["a", "b"]).headers == (
        ("www-authenticate", 'Bearer error="insufficient_scope", scope="a b"'),
    )
    assert insufficient_scope(["a", "b"], 'r"x').headers == (
        ("www-authenticate", 'Bearer realm="r\\"x", error="insufficient_scope", scope="a b"'),
    )


@pytest.mark.parametrize("scope", ["a b", "a\x00", "", 'a"b'])
def test_bad_scope_in_a_rule_is_a_configuration_error(scope: str) -> None:
    """A scope with a space, a control character or a quote cannot be a scope token."""
    with pytest.raises(ConfigurationError, match="SECMW_AUTH__SCOPES"):
        ASGIStack(
            asgi_app, jwt={"secret": SECRET}, auth={"scopes": [{"path": "/", "scopes": [scope]}]}
        )


def test_rules_match_methods_and_first_wins() -> None:
    """``required`` returns the first matching rule's scopes, per method."""
    rules = ScopeRules([ScopeRule(**rule) for rule in RULES])
    assert rules.required("GET", "/items/1") == ("items:read",)
    assert rules.required("DELETE", "/items/1") == ("items:write", "admin")
    assert rules.required("PUT", "/items/1") is None
    assert rules.required("PUT", "/me") == ()
