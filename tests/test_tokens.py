"""TokenIssuer: tokens the configured verifier accepts, refresh rotation, reuse detection,
revocation."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from secmw import ConfigurationError, Principal, SecuritySettings, audit
from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.jwt import JWTAuthenticator
from secmw.core.deny import Deny
from secmw.stores.revocation import MemoryRevocationStore
from secmw.tokens import (
    Account,
    IssuedTokens,
    MemorySingleUseStore,
    OAuthError,
    TokenIssuer,
    TokenStoreError,
    family_key,
    mint_access_token,
)
from tests.support import SECRET, make_token

ALICE = Account.create(
    "alice", scopes=["items:read", "items:write"], roles=["admin"], claims={"name": "Alice"}
)


class Clock:
    """A settable UNIX clock."""

    def __init__(self, now: float = 1_900_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def issuer(**sections: Any) -> TokenIssuer:
    sections.setdefault("jwt", {"secret": SECRET})
    return TokenIssuer(**sections)


def verify(settings: SecuritySettings, token: str) -> Principal | Deny:
    authenticator = build_jwt_authenticator(settings.jwt)
    assert authenticator is not None
    return authenticator.verify(Credential("bearer", token))


def tokens(result: IssuedTokens | OAuthError) -> IssuedTokens:
    assert isinstance(result, IssuedTokens), result
    return result


def es256_pair() -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public


@pytest.mark.parametrize(
    "jwt_settings",
    [
        {"secret": SECRET},
        {"secret": SECRET, "issuer": "https://auth.test", "audience": ["api", "other"]},
        {"secret": SECRET, "audience": ["api"]},
        {"secret": SECRET, "scopes_claim": "scp"},
        {"secret": SECRET, "subject_claim": "user_id"},
        {"secret": "x" * 64, "algorithms": ["HS512"]},
    ],
    ids=["plain", "issuer-audiences", "one-audience", "scp-claim", "user-id-subject", "hs512"],
)
def test_access_tokens_pass_the_configured_verifier(jwt_settings: dict[str, Any]) -> None:
    """Whatever the JWT settings, the verifier built from them admits the issued token."""
    settings = SecuritySettings(jwt=jwt_settings)
    token = TokenIssuer(settings).access_token(ALICE)
    principal = verify(settings, token)
    assert isinstance(principal, Principal), principal
    assert principal.id == "alice"
    assert principal.scopes == {"items:read", "items:write"}
    assert principal.roles == {"admin"}
    assert principal.name == "Alice"


def test_access_token_claims_and_header() -> None:
    """Access tokens carry jti, token_use=access, typ at+jwt and a 900 s lifetime by default."""
    clock = Clock()
    first = issuer(clock=clock).access_token(ALICE)
    second = issuer(clock=clock).access_token(ALICE, ["items:read"], ttl=60)
    unchecked = {"verify_exp": False, "verify_iat": False}
    claims = jwt.decode(first, SECRET, algorithms=["HS256"], options=unchecked)
    assert jwt.get_unverified_header(first)["typ"] == "at+jwt"
    assert claims["token_use"] == "access"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["scope"] == "items:read items:write"
    narrowed = jwt.decode(second, SECRET, algorithms=["HS256"], options=unchecked)
    assert narrowed["scope"] == "items:read"
    assert narrowed["exp"] - narrowed["iat"] == 60
    assert narrowed["jti"] != claims["jti"]


def test_account_claims_never_override_registered_claims() -> None:
    """An account claim named like a registered one loses to the issuer's value."""
    sneaky = Account.create("bob", claims={"sub": "alice", "token_use": "refresh", "exp": 1})
    claims = jwt.decode(issuer().access_token(sneaky), SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["token_use"]) == ("bob", "access")


def test_public_key_settings_sign_with_the_matching_private_key() -> None:
    """ES256: the private key signs, the configured public key verifies."""
    private, public = es256_pair()
    settings = SecuritySettings(jwt={"public_key": public}, tokens={"private_key": private})
    principal = verify(settings, TokenIssuer(settings).access_token(ALICE))
    assert isinstance(principal, Principal)
    assert principal.id == "alice"


PRIVATE, PUBLIC = es256_pair()
OTHER_PRIVATE, _ = es256_pair()


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({}, "SECMW_JWT__SECRET"),
        ({"jwt": {"public_key": PUBLIC}}, "SECMW_TOKENS__PRIVATE_KEY: required"),
        (
            {"jwt": {"public_key": PUBLIC}, "tokens": {"private_key": OTHER_PRIVATE}},
            "does not match",
        ),
        ({"jwt": {"public_key": PUBLIC}, "tokens": {"private_key": "junk"}}, "not a usable"),
        ({"jwt": {"public_key": PUBLIC}, "tokens": {"private_key": PUBLIC}}, "public key"),
    ],
    ids=["no-key", "no-private-key", "mismatch", "junk", "public-as-private"],
)
def test_unusable_keys_fail_at_construction(sections: dict[str, Any], fragment: str) -> None:
    """Missing, malformed or mismatched signing keys raise ConfigurationError at start."""
    with pytest.raises(ConfigurationError, match=fragment) as info:
        TokenIssuer(SecuritySettings(**sections))
    assert "PRIVATE KEY" not in str(info.value)


def test_refresh_rotates_and_the_old_token_is_refused() -> None:
    """A refresh token works once; the new pair works; the spent one gets invalid_grant."""
    service = issuer()
    first = service.issue(ALICE)
    second = tokens(service.refresh(first.refresh_token or ""))
    assert second.refresh_token != first.refresh_token
    assert second.scopes == ALICE.scopes
    claims = jwt.decode(second.access_token, SECRET, algorithms=["HS256"])
    assert (claims["sub"], claims["roles"], claims["name"]) == ("alice", ["admin"], "Alice")
    spent = service.refresh(first.refresh_token or "")
    assert spent == OAuthError("invalid_grant", "refresh token revoked")
    assert spent.status == 400


def test_reusing_a_spent_refresh_token_revokes_the_family() -> None:
    """Reuse detection: after a spent token returns, even the newest refresh token is refused."""
    events: list[audit.AuditEvent] = []
    audit.add_hook(events.append)
    try:
        service = issuer()
        first = service.issue(ALICE)
        second = tokens(service.refresh(first.refresh_token or ""))
        assert isinstance(service.refresh(first.refresh_token or ""), OAuthError)  # the thief
        assert isinstance(service.refresh(second.refresh_token or ""), OAuthError)  # the user
    finally:
        audit.remove_hook(events.append)
    assert [e.name for e in events] == ["token.refresh_reused"]
    assert events[0].principal == "alice"
    other = service.issue(ALICE)  # a new login starts a new family
    assert isinstance(service.refresh(other.refresh_token or ""), IssuedTokens)


def test_concurrent_refreshes_with_one_token_yield_one_success() -> None:
    """Twenty threads race one refresh token: exactly one pair is issued."""
    service = issuer()
    token = service.issue(ALICE).refresh_token or ""
    barrier = threading.Barrier(20, timeout=10)
    results: list[IssuedTokens | OAuthError] = []

    def race() -> None:
        barrier.wait()
        results.append(service.refresh(token))

    threads = [threading.Thread(target=race) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sum(isinstance(r, IssuedTokens) for r in results) == 1
    assert len(results) == 20


@pytest.mark.parametrize(
    ("scope", "expected"),
    [
        (None, {"items:read", "items:write"}),
        ("items:read", {"items:read"}),
        ("items:read admin:all", "invalid_scope"),
        ('items"read', "invalid_scope"),
    ],
    ids=["same", "narrower", "wider", "malformed"],
)
def test_refresh_may_narrow_but_never_widen(scope: str | None, expected: Any) -> None:
    """RFC 6749 §6: a refresh may ask for less scope; asking for more spends nothing."""
    service = issuer()
    refresh_token = service.issue(ALICE).refresh_token or ""
    result = service.refresh(refresh_token, scope)
    if expected == "invalid_scope":
        assert isinstance(result, OAuthError)
        assert result.error == "invalid_scope"
        assert isinstance(service.refresh(refresh_token), IssuedTokens)  # still usable
    else:
        assert tokens(result).scopes == expected


def test_expired_refresh_token_is_refused() -> None:
    """Past its lifetime (injected clock) a refresh token gets invalid_grant."""
    clock = Clock(1_700_000_000)
    service = issuer(clock=clock, tokens={"refresh_ttl": 3600})
    token = service.issue(ALICE).refresh_token or ""
    clock.now += 3601
    result = service.refresh(token)
    assert result == OAuthError("invalid_grant", "refresh token invalid or expired")


@pytest.mark.parametrize(
    "make",
    [
        lambda service: service.issue(ALICE).access_token,
        lambda service: make_token(sub="alice", jti="x", fam="f", token_use="refresh"),
        lambda service: make_token(secret="o" * 32, sub="alice", jti="x", token_use="refresh"),
        lambda service: "not-a-token",
        lambda service: "x" * 10_000,
    ],
    ids=["access-token", "no-grant-claim", "foreign-key", "garbage", "oversized"],
)
def test_refresh_refuses_what_is_not_one_of_its_refresh_tokens(
    make: Callable[[TokenIssuer], str],
) -> None:
    """Access tokens, foreign or malformed tokens are invalid_grant, never a new pair."""
    service = issuer()
    result = service.refresh(make(service))
    assert isinstance(result, OAuthError)
    assert result.error == "invalid_grant"


def test_refresh_token_carries_no_grant_an_authenticator_would_read() -> None:
    """Scopes and roles of a refresh token live under `grant`, out of the verifier's sight."""
    settings = SecuritySettings(jwt={"secret": SECRET})
    refresh_token = TokenIssuer(settings).issue(ALICE).refresh_token or ""
    claims = jwt.decode(refresh_token, SECRET, algorithms=["HS256"])
    assert claims["token_use"] == "refresh"
    assert not {"scope", "scopes", "scp", "roles"} & set(claims)
    result = verify(settings, refresh_token)
    assert not isinstance(result, Principal) or (not result.scopes and not result.roles)


def test_refresh_token_is_not_accepted_as_an_access_token() -> None:
    """The JWT authenticator refuses a refresh token presented as a bearer token."""
    settings = SecuritySettings(jwt={"secret": SECRET})
    refresh_token = TokenIssuer(settings).issue(ALICE).refresh_token or ""
    assert isinstance(verify(settings, refresh_token), Deny)


def test_revoked_access_token_is_refused_by_the_authenticator() -> None:
    """`revoke` puts the jti on the denylist the JWT authenticator consults."""
    store = MemoryRevocationStore()
    service = issuer(revocation=store)
    token = service.access_token(ALICE)
    authenticator = JWTAuthenticator(SECRET, revocation=store)
    assert isinstance(authenticator.verify(Credential("bearer", token)), Principal)
    assert service.revoke(token) is True
    refused = authenticator.verify(Credential("bearer", token))
    assert isinstance(refused, Deny)
    assert (refused.status, refused.detail) == (401, "token revoked")
    assert not service.revoke("garbage")


def test_revoking_a_refresh_token_ends_its_family() -> None:
    """Logout with the refresh token: it and every later token of its family are refused."""
    store = MemoryRevocationStore()
    service = issuer(revocation=store)
    first = service.issue(ALICE)
    second = tokens(service.refresh(first.refresh_token or ""))
    assert service.revoke(second.refresh_token or "")
    assert isinstance(service.refresh(second.refresh_token or ""), OAuthError)
    family = jwt.decode(second.refresh_token or "", SECRET, algorithms=["HS256"])["fam"]
    assert store.is_revoked(family_key(family))


class BrokenStore(MemorySingleUseStore):
    """A single-use store whose backend is down."""

    def put(self, key: str, value: str, ttl: float, *, group: str | None = None) -> None:
        raise TokenStoreError("down")

    def consume(self, key: str) -> str | None:
        raise TokenStoreError("down")

    def replace(self, key: str, value: str) -> str | None:
        raise TokenStoreError("down")

    async def aconsume(self, key: str) -> str | None:
        raise TokenStoreError("down")

    async def areplace(self, key: str, value: str) -> str | None:
        raise TokenStoreError("down")


def test_store_outage_answers_503_and_issues_nothing() -> None:
    """A refresh during a store outage is `temporarily_unavailable` (503), never a new pair."""
    token = issuer().issue(ALICE).refresh_token or ""
    service = issuer(store=BrokenStore())
    result = service.refresh(token)
    assert isinstance(result, OAuthError)
    assert (result.status, result.error) == (503, "temporarily_unavailable")
    assert asyncio.run(service.arefresh(token)) == result
    with pytest.raises(TokenStoreError):
        service.issue(ALICE)


def test_async_twins_behave_like_the_sync_methods() -> None:
    """aissue / arefresh / arevoke: rotation, reuse detection and revocation."""
    store = MemoryRevocationStore()
    service = issuer(revocation=store)

    async def scenario() -> None:
        first = await service.aissue(ALICE, ["items:read"])
        assert first.scopes == {"items:read"}
        second = tokens(await service.arefresh(first.refresh_token or ""))
        assert isinstance(await service.arefresh(first.refresh_token or ""), OAuthError)
        assert isinstance(await service.arefresh(second.refresh_token or ""), OAuthError)
        assert await service.arevoke(second.access_token)
        jti = jwt.decode(second.access_token, SECRET, algorithms=["HS256"])["jti"]
        assert await store.ais_revoked(jti)
        third = await service.aissue(ALICE)
        assert await service.arevoke(third.refresh_token or "")
        assert isinstance(await service.arefresh(third.refresh_token or ""), OAuthError)
        assert (await service.aissue(ALICE, refresh=False)).refresh_token is None

    asyncio.run(scenario())


def test_issued_tokens_body_and_headers_follow_rfc6749() -> None:
    """The token response body and its no-store headers (RFC 6749 §5.1); no token in repr."""
    issued = issuer().issue(ALICE, ["items:read"])
    body = issued.body()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope", "refresh_token"}
    assert (body["token_type"], body["expires_in"], body["scope"]) == ("bearer", 900, "items:read")
    assert ("cache-control", "no-store") in issued.headers
    assert issued.access_token not in repr(issued)
    assert "refresh_token" not in issuer().issue(ALICE, refresh=False).body()


def test_mint_access_token_for_the_command_line() -> None:
    """`mint_access_token` signs with the configured key and the requested lifetime."""
    settings = SecuritySettings(jwt={"secret": SECRET})
    token = mint_access_token(settings, "svc", scopes=["a"], ttl=120, claims={"team": "x"})
    principal = verify(settings, token)
    assert isinstance(principal, Principal)
    assert (principal.id, principal.scopes, principal.claims["team"]) == ("svc", {"a"}, "x")
    assert principal.claims["exp"] - principal.claims["iat"] == 120


@pytest.mark.parametrize(
    ("env", "value", "fragment"),
    [
        ("SECMW_TOKENS__STORAGE_URI", "memcached://x", "SECMW_TOKENS__STORAGE_URI"),
        ("SECMW_TOKENS__ACCESS_TTL", "0", "SECMW_TOKENS__ACCESS_TTL"),
        ("SECMW_TOKENS__REFRESH_TTL", "10", "SECMW_TOKENS__REFRESH_TTL"),
        ("SECMW_TOKENS__SCOPES", "{not json", "SECMW_TOKENS__SCOPES"),
    ],
    ids=["storage", "access-ttl", "refresh-ttl", "scopes-json"],
)
def test_bad_token_settings_name_the_variable(
    monkeypatch: pytest.MonkeyPatch, env: str, value: str, fragment: str
) -> None:
    """Invalid token settings raise ConfigurationError naming the variable."""
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigurationError, match=fragment):
        SecuritySettings()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("items:read,items:write", {"items:read": "", "items:write": ""}),
        ('["items:read"]', {"items:read": ""}),
        ('{"items:read": "Read items"}', {"items:read": "Read items"}),
    ],
    ids=["comma", "json-list", "json-object"],
)
def test_known_scopes_setting_forms(
    monkeypatch: pytest.MonkeyPatch, value: str, expected: dict[str, str]
) -> None:
    """`SECMW_TOKENS__SCOPES` takes a list (comma or JSON) or a JSON object of descriptions."""
    monkeypatch.setenv("SECMW_TOKENS__SCOPES", value)
    assert SecuritySettings().tokens.scopes == expected
