"""RFC 7662 introspection against a real loopback authorization server."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from secmw import audit
from secmw.asgi import AuthenticationMiddleware as ASGIAuth
from secmw.auth.base import Credential
from secmw.auth.introspection import IntrospectionAuthenticator
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.wsgi import AuthenticationMiddleware as WSGIAuth
from tests.identity_support import FakeClock, IdentityProvider
from tests.support import SECRET, make_token, uvicorn_server, werkzeug_server

pytestmark = pytest.mark.server

OPAQUE = "2YotnFZFEjr1zCsicMWpAA"
ISS = "https://as.example"


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        provider.state.answers[OPAQUE] = {
            "active": True,
            "sub": "alice",
            "scope": "items:read items:write",
            "username": "Alice",
            "exp": int(time.time()) + 3600,
            "iss": "https://as.example",
            "aud": ["api", "other"],
        }
        yield provider


def make(idp: IdentityProvider, **options: Any) -> IntrospectionAuthenticator:
    client_id, secret = idp.state.client
    return IntrospectionAuthenticator(
        f"{idp.url}/introspect", client_id=client_id, client_secret=secret, **options
    )


def check(auth: IntrospectionAuthenticator, token: str = OPAQUE) -> Principal | Deny:
    return auth.verify(Credential("introspection", token))


def acheck(auth: IntrospectionAuthenticator, token: str = OPAQUE) -> Principal | Deny:
    return asyncio.run(auth.averify(Credential("introspection", token)))


@pytest.mark.parametrize("run", [check, acheck], ids=["sync", "async"])
@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_active_token_gives_principal(idp: IdentityProvider, run: Any, method: str) -> None:
    """sub, scope and username become the principal; the client authenticates either way."""
    result = run(make(idp, auth_method=method))
    assert isinstance(result, Principal)
    assert (result.id, result.scheme, result.display_name) == ("alice", "introspection", "Alice")
    assert result.scopes == {"items:read", "items:write"}
    form = idp.state.forms[-1]
    assert form["token"] == [OPAQUE]
    assert form["token_type_hint"] == ["access_token"]
    assert ("client_secret" in form) is (method == "client_secret_post")


@pytest.mark.parametrize("run", [check, acheck], ids=["sync", "async"])
def test_inactive_token_is_401(idp: IdentityProvider, run: Any) -> None:
    """active: false (here: an unknown token) is a 401 invalid_token with a Bearer challenge."""
    result = run(make(idp), "unknown-token")
    assert isinstance(result, Deny)
    assert (result.status, result.detail, result.code) == (401, "token inactive", "invalid_token")
    assert dict(result.headers)["www-authenticate"].startswith('Bearer realm="api"')


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        ({"active": "true", "sub": "a"}, "token inactive"),
        ({"active": True, "sub": "a", "exp": 1}, "token expired"),
        ({"active": True, "sub": "a", "nbf": 2**40}, "token not yet valid"),
        ({"active": True, "sub": "a", "iss": "https://evil"}, "token issuer not accepted"),
        ({"active": True, "sub": "a", "iss": ISS, "aud": "x"}, "token audience not accepted"),
        ({"active": True, "iss": ISS, "aud": "api"}, "token subject invalid"),
    ],
    ids=["active-string", "expired", "nbf-future", "wrong-iss", "wrong-aud", "no-subject"],
)
def test_answers_we_do_not_trust(
    idp: IdentityProvider, answer: dict[str, Any], detail: str
) -> None:
    """Only a literal true, within its times, for our issuer and audience, admits."""
    idp.state.answers["t"] = answer
    result = check(make(idp, issuer="https://as.example", audience=["api"]), "t")
    assert isinstance(result, Deny)
    assert (result.status, result.detail) == (401, detail)


@pytest.mark.parametrize("run", [check, acheck], ids=["sync", "async"])
@pytest.mark.parametrize(
    ("breakage", "reason"),
    [
        ("down", "connection refused"),
        ("garbage", "answer is not JSON"),
        ("array", "answer is not a JSON object"),
        ("500", "HTTP 500"),
        ("bad-client", "HTTP 401"),
        ("forbidden", "HTTP 403"),
        ("400-invalid-client", "HTTP 400"),
        ("400-not-an-error", "HTTP 400"),
        ("oversized", "answer too large"),
        ("slow", "timed out"),
    ],
)
def test_server_trouble_is_503_and_logged_once(
    idp: IdentityProvider, events: list[audit.AuditEvent], run: Any, breakage: str, reason: str
) -> None:
    """Down, garbage, errors, refused client credentials, slowness: 503, never a pass or a 500;
    one log line per outage."""
    auth = make(idp, timeout=0.3)
    if breakage == "down":
        idp.stop()
    elif breakage == "garbage":
        idp.state.introspect_raw = b"{nope"
    elif breakage == "array":
        idp.state.introspect_raw = b"[]"
    elif breakage == "500":
        idp.state.introspect_status = 500
    elif breakage == "bad-client":
        idp.state.client = ("someone", "else")
    elif breakage == "forbidden":
        idp.state.introspect_status, idp.state.introspect_raw = 403, b"{}"
    elif breakage == "400-invalid-client":
        idp.state.introspect_status = 400
        idp.state.introspect_raw = b'{"error": "invalid_client"}'
    elif breakage == "400-not-an-error":
        idp.state.introspect_status, idp.state.introspect_raw = 400, b"<html>Bad Request</html>"
    elif breakage == "oversized":
        idp.state.introspect_raw = b'{"active": true, "sub": "a", "pad": "' + b"x" * 2**20 + b'"}'
    else:
        idp.state.delay = 2.0
    for _ in range(2):
        result = run(auth)
        assert isinstance(result, Deny)
        assert (result.status, result.code) == (503, "temporarily_unavailable")
        assert dict(result.headers)["retry-after"] == "5"
    assert [(e.name, e.reason) for e in events] == [("introspection.failed", reason)]


@pytest.mark.parametrize("run", [check, acheck], ids=["sync", "async"])
@pytest.mark.parametrize("error", ["unsupported_token_type", "invalid_request", "invalid_token"])
def test_an_error_about_the_token_is_401_not_an_outage(
    idp: IdentityProvider, events: list[audit.AuditEvent], run: Any, error: str
) -> None:
    """An RFC 6749 error in a 400 answers for the token: 401 invalid_token with the Bearer
    challenge, cached like an inactive answer, no outage logged; the description is not echoed."""
    idp.state.introspect_status = 400
    idp.state.introspect_raw = json.dumps(
        {"error": error, "error_description": "secret-ish server text"}
    ).encode()
    auth = make(idp)
    for _ in range(2):
        result = run(auth)
        assert isinstance(result, Deny)
        assert (result.status, result.code) == (401, "invalid_token")
        challenge = dict(result.headers)["www-authenticate"]
        assert challenge.startswith('Bearer realm="api", error="invalid_token"')
        assert "secret-ish" not in challenge + result.detail
    assert idp.state.hits["/introspect"] == 1
    assert events == []


def test_an_error_answer_ends_an_outage(
    idp: IdentityProvider, events: list[audit.AuditEvent]
) -> None:
    """An endpoint that answers with an RFC 6749 error is up again: recovery is logged."""
    auth = make(idp)
    idp.state.introspect_status = 500
    assert getattr(check(auth), "status", None) == 503
    idp.state.introspect_status, idp.state.introspect_raw = 400, b'{"error": "invalid_token"}'
    assert getattr(check(auth, "other"), "status", None) == 401
    assert [e.name for e in events] == ["introspection.failed", "introspection.recovered"]


UNUSABLE = [
    "eyJhbGciOiJSU0EtT0FFUCJ9.a.b.c.d",
    "to\x01ken",
    "to\x7fken",
    "to\x0bken",
    "tök\u00e9n",
    "to,ken",
    'to"ken',
    "=token",
]


@pytest.mark.parametrize(
    "token",
    UNUSABLE,
    ids=["five-segments", "control", "del", "vertical-tab", "non-ascii", "comma", "quote", "pad"],
)
def test_tokens_that_cannot_be_access_tokens_are_401_without_a_call(
    idp: IdentityProvider, token: str
) -> None:
    """More than three segments or characters outside RFC 6750's b64token: 401 at extraction."""
    result = make(idp).extract(RequestView("GET", "/"), token)
    assert isinstance(result, Deny)
    assert (result.status, result.code) == (401, "invalid_token")
    assert dict(result.headers)["www-authenticate"].startswith('Bearer realm="api"')
    assert idp.state.hits["/introspect"] == 0


@pytest.mark.parametrize("side", ["asgi-uvicorn", "wsgi-werkzeug"])
@pytest.mark.parametrize(
    ("token", "status", "error"),
    [("a.b.c.d.e", 401, "invalid_token"), ("to,ken", 400, "invalid_request")],
    ids=["five-segments", "comma"],
)
def test_unusable_token_never_reaches_the_server(
    idp: IdentityProvider, side: str, token: str, status: int, error: str
) -> None:
    """Over a real server, with JWT and introspection side by side: refused (a comma makes the
    field ambiguous, as two fields would: 400 before any scheme sees it), and no request at
    the introspection endpoint."""
    sections: dict[str, Any] = {
        "jwt": {"secret": SECRET},
        "introspection": {
            "url": f"{idp.url}/introspect",
            "client_id": idp.state.client[0],
            "client_secret": idp.state.client[1],
        },
        "auth": {"order": ["bearer", "introspection"]},
    }
    if side == "asgi-uvicorn":
        server = uvicorn_server(ASGIAuth(_asgi_app, **sections))
    else:
        server = werkzeug_server(WSGIAuth(_wsgi_app, **sections))
    with server as base, httpx.Client(base_url=base) as client:
        answer = client.get("/", headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == status
        assert answer.headers["content-type"] == "application/problem+json"
        assert answer.json()["code"] == error
        assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert idp.state.hits["/introspect"] == 0


def test_recovery_is_logged_and_nothing_failed_was_cached(
    idp: IdentityProvider, events: list[audit.AuditEvent]
) -> None:
    """After an outage the next request asks again and succeeds."""
    auth = make(idp)
    idp.state.introspect_status = 500
    assert isinstance(check(auth), Deny)
    idp.state.introspect_status = 200
    assert isinstance(check(auth), Principal)
    assert [e.name for e in events] == ["introspection.failed", "introspection.recovered"]


def test_answers_cached_until_exp_and_at_most_cache_ttl(idp: IdentityProvider) -> None:
    """An active answer is reused until min(exp, now + cache_ttl); inactive for negative_ttl."""
    now = time.time()
    clock = FakeClock(now)
    idp.state.answers["short"] = {"active": True, "sub": "s", "exp": int(now) + 10}
    auth = make(idp, cache_ttl=60, negative_ttl=5, clock=clock)
    for _ in range(5):
        check(auth), check(auth, "short"), check(auth, "nope")
    assert idp.state.hits["/introspect"] == 3
    clock.advance(11)  # past "short"'s exp, past the negative TTL
    check(auth), check(auth, "short"), check(auth, "nope")
    assert idp.state.hits["/introspect"] == 5
    clock.advance(50)  # past cache_ttl for the long-lived token
    check(auth)
    assert idp.state.hits["/introspect"] == 6


@pytest.mark.parametrize("side", ["asgi-uvicorn", "wsgi-werkzeug"])
def test_jwt_and_opaque_tokens_side_by_side_over_real_servers(
    idp: IdentityProvider, side: str
) -> None:
    """Settings with both schemes: JWTs verified locally, opaque tokens introspected, an outage
    of the introspection server is a 503 problem while JWTs keep working."""
    sections: dict[str, Any] = {
        "jwt": {"secret": SECRET},
        "introspection": {
            "url": f"{idp.url}/introspect",
            "client_id": idp.state.client[0],
            "client_secret": idp.state.client[1],
            "timeout": 1,
        },
        "auth": {"order": ["bearer", "introspection"]},
    }
    if side == "asgi-uvicorn":
        server = uvicorn_server(ASGIAuth(_asgi_app, **sections))
    else:
        server = werkzeug_server(WSGIAuth(_wsgi_app, **sections))
    with server as base, httpx.Client(base_url=base) as client:
        opaque = client.get("/", headers={"Authorization": f"Bearer {OPAQUE}"})
        assert (opaque.status_code, opaque.text) == (200, "introspection:alice")
        jwt = client.get("/", headers={"Authorization": f"Bearer {make_token()}"})
        assert (jwt.status_code, jwt.text) == (200, "bearer:user-1")
        inactive = client.get("/", headers={"Authorization": "Bearer revoked-token"})
        assert inactive.status_code == 401
        idp.stop()
        down = client.get("/", headers={"Authorization": "Bearer another-opaque-token"})
        assert down.status_code == 503
        assert down.headers["content-type"] == "application/problem+json"
        assert down.json()["detail"] == "token introspection unavailable"
        still = client.get("/", headers={"Authorization": f"Bearer {make_token(n=2)}"})
        assert still.status_code == 200
    assert idp.state.hits["/introspect"] == 2


async def _asgi_app(scope: Any, receive: Any, send: Any) -> None:
    user = scope["user"]
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": f"{user.scheme}:{user.id}".encode()})


def _wsgi_app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    user = environ["secmw.principal"]
    start_response("200 OK", [("content-type", "text/plain")])
    return [f"{user.scheme}:{user.id}".encode()]
