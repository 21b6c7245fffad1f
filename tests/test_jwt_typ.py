"""RFC 9068 §4 ``typ``: with ``jwt.typ`` set only access tokens pass, so an ID token cannot be
replayed as one; secmw's own tokens are read back only with the type they were issued with."""

from __future__ import annotations

import time
from typing import Any

import jwt
import pytest

from secmw import Principal, SecuritySettings
from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.config.check import risky_choices
from secmw.core.deny import Deny
from secmw.tokens import Account, TokenIssuer
from tests.support import SECRET


def signed(typ: Any, **claims: Any) -> str:
    payload = {"sub": "alice", "exp": int(time.time()) + 600, **claims}
    headers = {"typ": typ} if typ is not None else {}
    # PyJWT writes typ JWT unless told otherwise; None removes the header member
    return jwt.encode(payload, SECRET, headers=headers or {"typ": None})


def answer(typ_setting: list[str], token: str) -> int:
    verifier = build_jwt_authenticator(
        SecuritySettings(jwt={"secret": SECRET, "typ": typ_setting}).jwt
    )
    assert verifier is not None
    result = verifier.verify(Credential("bearer", token))
    return 200 if isinstance(result, Principal) else result.status


@pytest.mark.parametrize(
    ("setting", "typ", "status"),
    [
        (["at+jwt"], "at+jwt", 200),
        (["at+jwt"], "application/at+jwt", 200),
        (["at+jwt"], "AT+JWT", 200),
        (["at+jwt"], "JWT", 401),
        (["at+jwt"], None, 401),
        (["at+jwt"], 7, 401),
        (["at+jwt"], "application/at+jwt/x", 401),
        (["application/AT+JWT"], "at+jwt", 200),
        ([], "JWT", 200),
        ([], None, 200),
    ],
    ids=[
        "at+jwt",
        "media-type",
        "upper-case",
        "id-token-typ",
        "no-typ",
        "not-a-string",
        "not-a-media-type",
        "setting-as-media-type",
        "unchecked-jwt",
        "unchecked-none",
    ],
)
def test_typ_truth_table(setting: list[str], typ: Any, status: int) -> None:
    """jwt.typ lists the accepted types; empty checks nothing (the default)."""
    assert answer(setting, signed(typ)) == status


def test_refusal_names_the_reason() -> None:
    """The 401 says the type was not accepted, with an RFC 6750 invalid_token challenge."""
    verifier = build_jwt_authenticator(
        SecuritySettings(jwt={"secret": SECRET, "typ": "at+jwt"}).jwt
    )
    assert verifier is not None
    result = verifier.verify(Credential("bearer", signed("JWT")))
    assert isinstance(result, Deny)
    assert result.detail == "token type not accepted"
    assert 'error="invalid_token"' in dict(result.headers)["www-authenticate"]


def test_issued_tokens_pass_a_typ_checking_verifier() -> None:
    """secmw's access tokens say at+jwt, so jwt.typ=at+jwt admits them."""
    settings = SecuritySettings(jwt={"secret": SECRET, "typ": ["at+jwt"]})
    token = TokenIssuer(settings).access_token(Account.create("alice"))
    assert answer(["at+jwt"], token) == 200


def test_own_verification_checks_the_type() -> None:
    """An access token without typ at+jwt, signed with the issuer's key, is not read as one."""
    issuer = TokenIssuer(jwt={"secret": SECRET})
    forged = signed("JWT", jti="x", token_use="access")
    assert issuer.codec.decode(forged) is None
    assert issuer.revoke(forged) is False
    genuine = issuer.access_token(Account.create("alice"))
    assert issuer.codec.decode(genuine) is not None


def test_config_check_suggests_typ_for_a_provider() -> None:
    """`secmw config` suggests jwt.typ when keys come from a JWKS or discovery."""
    provider = SecuritySettings(jwt={"jwks_url": "https://idp.example/jwks"})
    assert any("SECMW_JWT__TYP" in w for w in risky_choices(provider))
    checked = SecuritySettings(jwt={"jwks_url": "https://idp.example/jwks", "typ": "at+jwt"})
    assert not any("SECMW_JWT__TYP" in w for w in risky_choices(checked))
    local = SecuritySettings(jwt={"secret": SECRET})
    assert not any("SECMW_JWT__TYP" in w for w in risky_choices(local))
