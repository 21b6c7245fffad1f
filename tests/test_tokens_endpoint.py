"""The token endpoint helpers: password and refresh grants, RFC 6749 §5.2 errors."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pwdlib.hashers.bcrypt import BcryptHasher

from secmw import Principal, SecuritySettings, audit
from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.passwords import dummy_hash, verify_password
from secmw.auth.throttle import AsyncFailedAuthThrottle, FailedAuthThrottle
from secmw.core.request import RequestView
from secmw.tokens import Account, IssuedTokens, OAuthError, TokenIssuer, parse_token_request
from secmw.tokens.oauth import (
    grant_scopes,
    invalid_grant,
    invalid_request,
    invalid_scope,
    parse_scope,
    unsupported_grant_type,
)
from tests.support import SECRET

seed_hash = BcryptHasher(rounds=4).hash  # cheap on purpose: verify_password reads bcrypt too
USERS = {
    "alice": (seed_hash("alice-password"), {"items:read", "items:write", "admin:read"}),
    "bob": (seed_hash("bob-password"), {"items:read"}),
}
SETTINGS = SecuritySettings(
    jwt={"secret": SECRET},
    tokens={"scopes": ["items:read", "items:write", "admin:read"], "password_grant": True},
)


class Directory:
    """A user directory that counts password checks."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, username: str, password: str) -> Account | None:
        self.calls += 1
        stored, scopes = USERS.get(username, (dummy_hash(), set()))
        if not verify_password(password, stored) or username not in USERS:
            return None
        return Account.create(username, scopes=scopes)


@pytest.fixture(scope="module")
def service() -> TokenIssuer:
    """An issuer with three known scopes."""
    return TokenIssuer(SETTINGS)


def test_password_grant_issues_tokens_the_middleware_accepts(service: TokenIssuer) -> None:
    """grant_type=password with good credentials: a bearer token with the user's scopes."""
    result = service.exchange(
        {"grant_type": "password", "username": "bob", "password": "bob-password"}, Directory()
    )
    assert isinstance(result, IssuedTokens)
    body = result.body()
    assert (body["token_type"], body["scope"], body["expires_in"]) == ("bearer", "items:read", 900)
    authenticator = build_jwt_authenticator(SETTINGS.jwt)
    assert authenticator is not None
    principal = authenticator.verify(Credential("bearer", body["access_token"]))
    assert isinstance(principal, Principal)
    assert (principal.id, principal.scopes) == ("bob", {"items:read"})


def test_password_grant_narrows_scope(service: TokenIssuer) -> None:
    """A `scope` parameter narrows the user's scopes."""
    form = {
        "grant_type": "password",
        "username": "alice",
        "password": "alice-password",
        "scope": "items:read",
    }
    result = service.exchange(form, Directory())
    assert isinstance(result, IssuedTokens)
    assert result.scopes == {"items:read"}


@pytest.mark.parametrize(
    ("form", "error", "checks_password"),
    [
        ({"grant_type": "password", "username": "bob", "password": "wrong"}, "invalid_grant", 1),
        ({"grant_type": "password", "username": "nobody", "password": "x"}, "invalid_grant", 1),
        ({"grant_type": "client_credentials"}, "unsupported_grant_type", 0),
        ({"grant_type": "authorization_code", "code": "x"}, "unsupported_grant_type", 0),
        ({}, "invalid_request", 0),
        ({"grant_type": "password", "username": "bob"}, "invalid_request", 0),
        ({"grant_type": "password", "password": "bob-password"}, "invalid_request", 0),
        ({"grant_type": ["password", "password"]}, "invalid_request", 0),
        ({"grant_type": "refresh_token"}, "invalid_request", 0),
        ({"grant_type": "refresh_token", "refresh_token": "junk"}, "invalid_grant", 0),
        (
            {
                "grant_type": "password",
                "username": "bob",
                "password": "bob-password",
                "scope": "items:delete",
            },
            "invalid_scope",
            0,
        ),
        (
            {
                "grant_type": "password",
                "username": "bob",
                "password": "bob-password",
                "scope": "items:write",
            },
            "invalid_scope",
            1,
        ),
        (
            {
                "grant_type": "password",
                "username": "bob",
                "password": "bob-password",
                "scope": "items:\\read",
            },
            "invalid_scope",
            0,
        ),
    ],
    ids=[
        "wrong-password",
        "unknown-user",
        "client-credentials",
        "authorization-code",
        "no-grant-type",
        "no-password",
        "no-username",
        "repeated-parameter",
        "no-refresh-token",
        "bad-refresh-token",
        "unknown-scope",
        "scope-not-held",
        "malformed-scope",
    ],
)
def test_token_request_errors(
    service: TokenIssuer, form: dict[str, Any], error: str, checks_password: int
) -> None:
    """Every refusal is an RFC 6749 §5.2 error with status 400; unknown scopes cost no hash."""
    directory = Directory()
    result = service.exchange(form, directory)
    assert isinstance(result, OAuthError), result
    assert (result.error, result.status) == (error, 400)
    assert set(result.body()) <= {"error", "error_description"}
    assert directory.calls == checks_password


def test_failed_password_grant_is_an_audit_event(service: TokenIssuer) -> None:
    """Wrong credentials emit `auth.failed`, with no password in the event."""
    events: list[audit.AuditEvent] = []
    audit.add_hook(events.append)
    try:
        service.exchange(
            {"grant_type": "password", "username": "bob", "password": "hunter2"}, Directory()
        )
    finally:
        audit.remove_hook(events.append)
    assert [e.name for e in events] == ["auth.failed"]
    assert "hunter2" not in repr(events[0])


def test_refresh_grant_through_exchange(service: TokenIssuer) -> None:
    """grant_type=refresh_token rotates; the spent token is invalid_grant."""
    first = service.exchange(
        {"grant_type": "password", "username": "alice", "password": "alice-password"},
        Directory(),
    )
    assert isinstance(first, IssuedTokens)
    form = {"grant_type": "refresh_token", "refresh_token": first.refresh_token}
    second = service.exchange(form, Directory())
    assert isinstance(second, IssuedTokens)
    assert second.scopes == first.scopes
    again = service.exchange(form, Directory())
    assert isinstance(again, OAuthError)
    assert again.error == "invalid_grant"


def test_aexchange_accepts_async_and_sync_authenticate(service: TokenIssuer) -> None:
    """The async twin awaits an async `authenticate` and calls a sync one."""
    directory = Directory()

    async def check(username: str, password: str) -> Account | None:
        return await asyncio.to_thread(directory, username, password)

    async def scenario() -> None:
        good = {"grant_type": "password", "username": "bob", "password": "bob-password"}
        issued = await service.aexchange(good, check)
        assert isinstance(issued, IssuedTokens)
        refreshed = await service.aexchange(
            {"grant_type": "refresh_token", "refresh_token": issued.refresh_token}, directory
        )
        assert isinstance(refreshed, IssuedTokens)
        bad = await service.aexchange({**good, "password": "nope"}, directory)
        assert isinstance(bad, OAuthError)
        assert bad.error == "invalid_grant"
        unsupported = await service.aexchange({"grant_type": "implicit"}, directory)
        assert isinstance(unsupported, OAuthError)
        assert unsupported.error == "unsupported_grant_type"

    asyncio.run(scenario())
    assert directory.calls == 2


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            invalid_grant(),
            {"error": "invalid_grant", "error_description": "invalid credentials or grant"},
        ),
        (invalid_scope("x"), {"error": "invalid_scope", "error_description": "x"}),
        (
            unsupported_grant_type(),
            {"error": "unsupported_grant_type", "error_description": "grant type not supported"},
        ),
        (invalid_request(""), {"error": "invalid_request"}),
    ],
    ids=["invalid_grant", "invalid_scope", "unsupported_grant_type", "invalid_request"],
)
def test_error_bodies(error: OAuthError, expected: dict[str, str]) -> None:
    """Error helpers produce the RFC 6749 §5.2 JSON object, status 400, no-store headers."""
    assert error.body() == expected
    assert error.status == 400
    assert error.json().startswith(b'{"error":')
    assert ("cache-control", "no-store") in error.headers


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, frozenset()),
        ("", frozenset()),
        ("  a  b ", frozenset({"a", "b"})),
        ("a\tb", "invalid_scope"),
        ('a"b', "invalid_scope"),
        ("é", "invalid_scope"),
    ],
    ids=["absent", "empty", "spaces", "tab", "quote", "non-ascii"],
)
def test_parse_scope_follows_rfc6749_syntax(value: str | None, expected: Any) -> None:
    """Scopes are space-delimited %x21 / %x23-5B / %x5D-7E tokens (RFC 6749 §3.3)."""
    result = parse_scope(value)
    if isinstance(expected, str):
        assert isinstance(result, OAuthError)
        assert result.error == expected
    else:
        assert result == expected


def test_grant_scopes_truth_table() -> None:
    """Nothing requested grants all held scopes; unknown and unheld scopes are refused."""
    held = {"a", "b"}
    assert grant_scopes(frozenset(), held) == held
    assert grant_scopes(frozenset({"a"}), held) == {"a"}
    unheld = grant_scopes(frozenset({"c"}), held)
    assert isinstance(unheld, OAuthError)
    assert unheld.description == "requested scope exceeds the scope granted"
    unknown = grant_scopes(frozenset({"z"}), held, known={"a", "b", "c"})
    assert isinstance(unknown, OAuthError)
    assert unknown.description == "unknown scope requested"


def test_password_never_appears_in_a_parsed_request_repr() -> None:
    """The parsed password grant keeps the password out of its repr."""
    parsed = parse_token_request({"grant_type": "password", "username": "u", "password": "s3cr3t"})
    assert "s3cr3t" not in repr(parsed)


# -- the failed-attempt throttle at the token endpoint -----------------------------------------


def password_form(user: str, password: str) -> dict[str, str]:
    return {"grant_type": "password", "username": user, "password": password}


def from_address(address: str) -> RequestView:
    return RequestView("POST", "/token", peer=address)


def test_a_throttled_password_grant_is_an_oauth_error(service: TokenIssuer) -> None:
    """Past the budget the endpoint answers an RFC 6749 §5.2 body (``error``), 429, no-store and
    Retry-After, before the password is checked."""
    throttle = FailedAuthThrottle(rate_limit={"auth_failures": "2/minute"})
    directory, here = Directory(), from_address("198.51.100.1")
    for _ in range(2):
        wrong = service.exchange(
            password_form("bob", "nope"), directory, throttle=throttle, request=here
        )
        assert isinstance(wrong, OAuthError)
        assert wrong.error == "invalid_grant"
    refused = service.exchange(
        password_form("bob", "bob-password"), directory, throttle=throttle, request=here
    )
    assert isinstance(refused, OAuthError)
    assert (refused.status, refused.error) == (429, "temporarily_unavailable")
    headers = dict(refused.headers)
    assert headers["cache-control"] == "no-store"
    assert int(headers["retry-after"]) > 0
    assert set(refused.body()) == {"error", "error_description"}
    assert directory.calls == 2


def test_right_passwords_give_their_attempt_back(service: TokenIssuer) -> None:
    """Successful logins are refunded: more of them than the budget holds all get tokens."""
    throttle = FailedAuthThrottle(rate_limit={"auth_failures": "2/minute"})
    here = from_address("198.51.100.2")
    for _ in range(4):
        result = service.exchange(
            password_form("bob", "bob-password"), Directory(), throttle=throttle, request=here
        )
        assert isinstance(result, IssuedTokens)


def test_strangers_cannot_lock_a_user_out(service: TokenIssuer) -> None:
    """Twenty wrong passwords for bob from twenty addresses: bob still logs in from his own
    (the per-user ceiling defaults to 100 an hour)."""
    throttle = FailedAuthThrottle()
    for n in range(20):
        wrong = service.exchange(
            password_form("bob", "guess"),
            Directory(),
            throttle=throttle,
            request=from_address(f"203.0.113.{n}"),
        )
        assert isinstance(wrong, OAuthError)
        assert wrong.status == 400
    mine = service.exchange(
        password_form("bob", "bob-password"),
        Directory(),
        throttle=throttle,
        request=from_address("198.51.100.3"),
    )
    assert isinstance(mine, IssuedTokens)


def test_concurrent_guesses_at_the_async_endpoint_are_checked_at_most_budget_times(
    service: TokenIssuer,
) -> None:
    """Forty wrong passwords at once with a slow check and a budget of five: five checks."""
    throttle = AsyncFailedAuthThrottle(rate_limit={"auth_failures": "5/minute"})
    checks = 0

    async def slow(username: str, password: str) -> Account | None:
        nonlocal checks
        checks += 1
        await asyncio.sleep(0.05)
        return None

    async def burst() -> list[int]:
        answers = await asyncio.gather(
            *(
                service.aexchange(
                    password_form("alice", "guess"),
                    slow,
                    throttle=throttle,
                    request=from_address("198.51.100.4"),
                )
                for _ in range(40)
            )
        )
        return sorted(a.status for a in answers if isinstance(a, OAuthError))

    assert asyncio.run(burst()) == [400] * 5 + [429] * 35
    assert checks == 5
