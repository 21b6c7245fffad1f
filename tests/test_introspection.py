"""Introspection configuration, token-shape dispatch, and how the chain places it."""

from __future__ import annotations

import pytest

from secmw.auth.build import build_chain
from secmw.auth.introspection import (
    BearerDispatcher,
    IntrospectionAuthenticator,
    looks_like_jwt,
)
from secmw.auth.jwt import JWTAuthenticator
from secmw.config.settings import SecuritySettings
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from tests.support import SECRET, make_token

URL = "http://127.0.0.1:9/introspect"


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        (make_token(), True),
        ("eyJhbGciOiJIUzI1NiJ9.e30.sig", True),
        ("2YotnFZFEjr1zCsicMWpAA", False),
        ("ory_at_abc.def", False),
        ("a.b.c", False),
        ("eyJ0eXAiOiJKV1QifQ.e30.sig", False),
        ("W10.e30.sig", False),
    ],
    ids=["jwt", "minimal-jws", "opaque", "one-dot", "not-base64-json", "no-alg", "array-header"],
)
def test_looks_like_jwt(token: str, expected: bool) -> None:
    """Only three segments with a JSON object header naming an alg count as a JWT."""
    assert looks_like_jwt(token) is expected


def _opaque() -> IntrospectionAuthenticator:
    return IntrospectionAuthenticator(URL, client_id="rs", client_secret="pw")


def test_dispatcher_routes_by_shape() -> None:
    """JWS-shaped tokens go to the JWT verifier, others to introspection (no call made here)."""
    dispatcher = BearerDispatcher(JWTAuthenticator(SECRET), _opaque())
    request = RequestView("GET", "/")
    jwt_credential = dispatcher.extract(request, make_token())
    opaque_credential = dispatcher.extract(request, "2YotnFZFEjr1zCsicMWpAA")
    assert getattr(jwt_credential, "scheme", None) == "bearer"
    assert getattr(opaque_credential, "scheme", None) == "introspection"
    assert dispatcher.challenge() == 'Bearer realm="api"'


@pytest.mark.parametrize(
    ("param", "status"),
    [("", 400), ("a b", 400), ("x" * 9000, 401)],
    ids=["empty", "two-tokens", "too-large"],
)
def test_malformed_bearer_parameters(param: str, status: int) -> None:
    """The same RFC 6750 rules as for JWTs, before any call."""
    result = _opaque().extract(RequestView("GET", "/"), param)
    assert getattr(result, "status", None) == status


def _settings(**sections: object) -> SecuritySettings:
    return SecuritySettings(**sections)


def test_chain_merges_jwt_and_introspection_into_one_bearer_slot() -> None:
    """Both configured and listed: one dispatcher at the first of the two places."""
    settings = _settings(
        jwt={"secret": SECRET},
        introspection={"url": URL, "client_id": "rs", "client_secret": "pw"},
        auth={"order": ["apikey", "introspection", "bearer", "basic"]},
    )
    chain = build_chain(settings)
    assert [type(a).__name__ for a in chain.authenticators] == ["BearerDispatcher"]


def test_chain_with_introspection_alone() -> None:
    """Without a JWT key, every bearer token is introspected."""
    settings = _settings(
        introspection={"url": URL, "client_id": "rs", "client_secret": "pw"},
        auth={"order": ["introspection"]},
    )
    (only,) = build_chain(settings).authenticators
    assert isinstance(only, IntrospectionAuthenticator)


@pytest.mark.parametrize(
    ("sections", "variable"),
    [
        ({"introspection": {"url": URL, "client_id": "rs", "client_secret": "pw"}}, "AUTH__ORDER"),
        (
            {"introspection": {"url": URL}, "auth": {"order": ["introspection"]}},
            "INTROSPECTION__CLIENT_ID",
        ),
        (
            {
                "introspection": {
                    "url": "http://idp.example/i",
                    "client_id": "a",
                    "client_secret": "b",
                },
                "auth": {"order": ["introspection"]},
            },
            "INTROSPECTION__URL",
        ),
        ({"auth": {"order": ["bearer", "kerberos"]}}, "AUTH__ORDER"),
    ],
    ids=["not-in-order", "no-credentials", "plain-http", "unknown-scheme"],
)
def test_bad_introspection_configuration(sections: dict[str, object], variable: str) -> None:
    """Mistakes fail at startup naming the SECMW_ variable."""
    with pytest.raises(ConfigurationError, match=f"SECMW_{variable}"):
        build_chain(_settings(**sections))


def test_client_secret_file(tmp_path: object) -> None:
    """The client secret can come from a file (SECMW_INTROSPECTION__CLIENT_SECRET_FILE)."""
    from pathlib import Path

    secret = Path(str(tmp_path)) / "secret"
    secret.write_text("from-file\n")
    settings = _settings(
        introspection={"url": URL, "client_id": "rs", "client_secret_file": str(secret)},
        auth={"order": ["introspection"]},
    )
    (only,) = build_chain(settings).authenticators
    assert isinstance(only, IntrospectionAuthenticator)
    assert "from-file" not in repr(only.__dict__.get("_form"))
    assert only._headers["Authorization"].startswith("Basic ")


def test_request_headers_never_carry_the_token() -> None:
    """The token travels in the form body only (RFC 7662 §2.1), never in a URL or header."""
    auth = _opaque()
    body = auth._body("opaque-token-value")
    assert b"token=opaque-token-value" in body
    assert b"token_type_hint=access_token" in body
    assert all("opaque-token-value" not in v for v in auth._headers.values())
