"""Rotating the keys of issued tokens (``tokens.keys``): tokens carry a kid, the first key signs,
every listed key verifies, so a rotation logs nobody out; public keys are published as a JWKS
that other services verify with."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization

from secmw import Principal, SecuritySettings
from secmw.auth.base import Credential
from secmw.auth.build import build_chain, build_jwt_authenticator
from secmw.core.fields import Headers
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.tokens import Account, IssuedTokens, MemorySingleUseStore, TokenIssuer
from tests.identity_support import IdentityProvider, new_key
from tests.support import SECRET

OLD = {"kid": "2025-12", "secret": "o" * 32}
NEW = {"kid": "2026-01", "secret": "n" * 32}
ALICE = Account.create("alice", scopes=["items:read"])


def settings(*keys: dict[str, Any], **jwt_section: Any) -> SecuritySettings:
    return SecuritySettings(jwt=jwt_section, tokens={"keys": list(keys)})


def middleware_status(config: SecuritySettings, token: str) -> int:
    """What the authentication layer built from ``config`` answers for ``token``."""
    view = RequestView("GET", "/", headers=Headers([("authorization", f"Bearer {token}")]))
    result = build_chain(config).authenticate(view)
    return 200 if isinstance(result, Principal) and result.is_authenticated else result.status


def test_a_rotation_logs_nobody_out() -> None:
    """Tokens of the previous key work until it is removed; the new key works at once."""
    grants = MemorySingleUseStore()  # the refresh grants outlive the restart, as on Redis
    before = TokenIssuer(settings(OLD), store=grants).issue(ALICE)
    assert jwt.get_unverified_header(before.access_token)["kid"] == OLD["kid"]
    rotated = settings(NEW, OLD)
    issuer = TokenIssuer(rotated, store=grants)
    after = issuer.issue(ALICE)
    assert jwt.get_unverified_header(after.access_token)["kid"] == NEW["kid"]
    assert middleware_status(rotated, before.access_token) == 200
    assert middleware_status(rotated, after.access_token) == 200
    refreshed = issuer.refresh(before.refresh_token or "")
    assert isinstance(refreshed, IssuedTokens)
    assert jwt.get_unverified_header(refreshed.access_token)["kid"] == NEW["kid"]
    retired = settings(NEW)
    assert middleware_status(retired, before.access_token) == 401
    assert middleware_status(retired, after.access_token) == 200
    assert TokenIssuer(retired).codec.decode(before.access_token) is None


def test_moving_from_a_single_secret_to_a_ring() -> None:
    """Tokens signed with jwt.secret keep working when tokens.keys is added beside it."""
    single = SecuritySettings(jwt={"secret": SECRET})
    legacy = TokenIssuer(single).access_token(ALICE)
    assert "kid" in jwt.get_unverified_header(legacy)
    both = settings(NEW, secret=SECRET)
    assert middleware_status(both, legacy) == 200
    assert TokenIssuer(both).codec.decode(legacy) is not None
    assert middleware_status(both, TokenIssuer(both).access_token(ALICE)) == 200


def test_a_token_naming_an_unknown_key_is_refused() -> None:
    """A ring alone: a kid it does not list, or none, is checked against the active key only."""
    ring = settings(NEW)
    stranger = jwt.encode({"sub": "x", "exp": 2**40}, "x" * 32, headers={"kid": "nope"})
    assert middleware_status(ring, stranger) == 401
    unnamed = jwt.encode({"sub": "x", "exp": 2**40}, NEW["secret"])
    assert middleware_status(ring, unnamed) == 200  # no kid: the active key checks it


def pem(private: Any) -> str:
    return private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def test_published_jwks_verifies_with_a_jwks_client() -> None:
    """issuer.jwks() served on loopback: secmw's own JWKS authenticator accepts tokens of both
    keys, and, once the old key is unpublished, only the new one's."""
    old = {"kid": "ec-old", "private_key": pem(new_key("p256"))}
    new = {"kid": "ec-new", "private_key": pem(new_key("p256"))}
    earlier = TokenIssuer(settings(old)).access_token(ALICE)
    issuer = TokenIssuer(settings(new, old))
    current = issuer.access_token(ALICE)
    document = issuer.jwks()
    assert [k["kid"] for k in document["keys"]] == ["ec-new", "ec-old"]
    assert all("d" not in k for k in document["keys"])  # public members only
    with IdentityProvider() as idp:
        idp.state.jwks = document
        verifier = build_jwt_authenticator(
            SecuritySettings(jwt={"jwks_url": f"{idp.url}/jwks", "algorithms": ["ES256"]}).jwt
        )
        assert verifier is not None
        for token in (earlier, current):
            assert isinstance(verifier.verify(Credential("bearer", token)), Principal)


def test_hmac_keys_are_never_published() -> None:
    """jwks() refuses to publish a secret."""
    with pytest.raises(ConfigurationError, match="HMAC"):
        TokenIssuer(settings(NEW)).jwks()


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ([NEW, {**OLD, "kid": NEW["kid"]}], "own kid"),
        ([NEW, {"kid": "ec", "private_key": "junk"}], "not a PEM private key"),
        ([{"kid": "short", "secret": "x"}], "at least 32 bytes"),
    ],
    ids=["repeated-kid", "bad-pem", "short-secret"],
)
def test_bad_rings_fail_at_start(keys: list[dict[str, Any]], message: str) -> None:
    """A ring that cannot work is a ConfigurationError naming tokens.keys."""
    with pytest.raises(ConfigurationError, match=message):
        TokenIssuer(settings(*keys))


def test_mixed_algorithms_fail_at_start() -> None:
    """HMAC and public keys in one ring would reopen key confusion."""
    mixed = [NEW, {"kid": "ec", "private_key": pem(new_key("p256"))}]
    with pytest.raises(ConfigurationError, match="same algorithm"):
        TokenIssuer(settings(*mixed))


def test_a_kid_that_is_not_a_string_is_no_error() -> None:
    """A crafted header with a list as kid gets an answer, never an exception."""
    import base64
    import hashlib
    import hmac
    import json

    def part(doc: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(doc).encode()).rstrip(b"=").decode()

    signing_input = f"{part({'alg': 'HS256', 'kid': ['a']})}.{part({'sub': 'x', 'exp': 2**40})}"
    mac = hmac.new(NEW["secret"].encode(), signing_input.encode(), hashlib.sha256).digest()
    token = f"{signing_input}.{base64.urlsafe_b64encode(mac).rstrip(b'=').decode()}"
    assert middleware_status(settings(NEW), token) == 401  # PyJWT: a kid must be a string
    assert TokenIssuer(settings(NEW)).codec.decode(token) is None  # no jti: not one of ours
