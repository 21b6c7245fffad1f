"""Bearer JWT authenticator: allowlists, claims, key confusion, malformed tokens."""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.claims import scopes_from_claims
from secmw.auth.jwt import JWTAuthenticator
from secmw.auth.settings import JWTSettings
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from tests.support import SECRET, make_token


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def pem(private: Any) -> str:
    return (
        private.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )


def verify(auth: JWTAuthenticator, token: str) -> Principal | Deny:
    found = auth.extract(RequestView("GET", "/"), token)
    assert isinstance(found, Credential)
    return auth.verify(found)


def b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_gives_principal_with_scopes_and_roles() -> None:
    """sub, scope and roles claims become the principal."""
    auth = JWTAuthenticator(SECRET)
    result = verify(auth, make_token(scope="items:read items:write", roles=["admin"], name="Al"))
    assert isinstance(result, Principal)
    assert result.id == "user-1"
    assert result.scheme == "bearer"
    assert result.scopes == {"items:read", "items:write"}
    assert result.roles == {"admin"}
    assert result.display_name == "Al"
    assert result.claims["sub"] == "user-1"


@pytest.mark.parametrize(
    ("claims", "expected"),
    [
        ({"scope": "a b"}, {"a", "b"}),
        ({"scopes": ["a", 1, "b"]}, {"a", "b"}),
        ({"scp": ["x"]}, {"x"}),
        ({}, set()),
        ({"scope": 5}, set()),
    ],
    ids=["scope-string", "scopes-list", "scp-list", "none", "wrong-type"],
)
def test_scopes_from_default_claims(claims: dict[str, Any], expected: set[str]) -> None:
    """scope (space separated), scopes and scp lists are all understood."""
    assert scopes_from_claims(claims, None) == expected


def test_custom_subject_and_scope_claims() -> None:
    """The guide's user_id subject and a custom scope claim work."""
    auth = JWTAuthenticator(SECRET, subject_claim="user_id", scopes_claim="perms")
    result = verify(auth, make_token(sub=None, user_id=42, perms=["p:1"]))
    assert isinstance(result, Principal)
    assert (result.id, result.scopes) == ("42", {"p:1"})


@pytest.mark.parametrize(
    ("claims", "options", "detail"),
    [
        ({"exp": int(time.time()) - 10}, {}, "token expired"),
        ({"exp": None}, {}, "token lacks a required claim"),
        # Computed when the tests are collected: a day ahead stays ahead however long the run.
        ({"nbf": int(time.time()) + 86_400}, {}, "token not yet valid"),
        ({"iss": "evil"}, {"issuer": "https://idp"}, "token issuer not accepted"),
        ({"aud": "other"}, {"audience": "api"}, "token audience not accepted"),
        ({}, {"audience": "api"}, "token lacks a required claim"),
        ({"sub": None}, {}, "token lacks a required claim"),
        ({"sub": ""}, {}, "token subject invalid"),
        ({"sub": True}, {}, "token subject invalid"),
    ],
    ids=[
        "expired",
        "no-exp",
        "nbf-future",
        "wrong-iss",
        "wrong-aud",
        "missing-aud",
        "no-sub",
        "empty-sub",
        "bool-sub",
    ],
)
def test_claim_failures_are_401_with_bearer_error(
    claims: dict[str, Any], options: dict[str, Any], detail: str
) -> None:
    """Each claim failure is a 401 invalid_token with a general description."""
    auth = JWTAuthenticator(SECRET, **options)
    result = verify(auth, make_token(**claims))
    assert isinstance(result, Deny)
    assert (result.status, result.detail, result.code) == (401, detail, "invalid_token")
    challenge = dict(result.headers)["www-authenticate"]
    assert challenge.startswith('Bearer realm="api", error="invalid_token"')


def test_leeway_admits_recently_expired_tokens() -> None:
    """Within the leeway an expired token still passes; beyond it, it does not."""
    auth = JWTAuthenticator(SECRET, leeway=30)
    assert isinstance(verify(auth, make_token(exp=int(time.time()) - 10)), Principal)
    assert isinstance(verify(auth, make_token(exp=int(time.time()) - 60)), Deny)


def test_issuer_and_audience_accepted_when_right() -> None:
    """Matching iss and aud pass."""
    auth = JWTAuthenticator(SECRET, issuer="https://idp", audience=["api", "other"])
    assert isinstance(verify(auth, make_token(iss="https://idp", aud="api")), Principal)


def test_exp_can_be_made_optional() -> None:
    """With require=() a token without exp passes."""
    auth = JWTAuthenticator(SECRET, require=())
    assert isinstance(verify(auth, make_token(exp=None)), Principal)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_is_refused(alg: str) -> None:
    """Unsigned tokens are refused whatever the case of 'none'."""
    token = f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64({'sub': 'x', 'exp': 2**31})}."
    result = verify(JWTAuthenticator(SECRET), token)
    assert isinstance(result, Deny)
    assert result.status == 401


def test_algorithm_outside_allowlist_is_refused() -> None:
    """An HS512 token is refused by an HS256-only verifier with the same secret."""
    result = verify(JWTAuthenticator(SECRET), make_token(SECRET * 2, "HS512"))
    assert isinstance(result, Deny)
    assert result.detail == "token algorithm not allowed"


def test_hs_rs_key_confusion_is_refused(rsa_key: rsa.RSAPrivateKey) -> None:
    """An HS256 token signed with the RSA public key as secret does not pass an RS256 verifier."""
    public = pem(rsa_key)
    auth = JWTAuthenticator(public, algorithms=["RS256"])
    forged = jwt.api_jws.PyJWS()
    header = b64({"alg": "HS256", "typ": "JWT"})
    payload = b64({"sub": "attacker", "exp": 2**31})
    import hashlib
    import hmac

    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(public.encode(), signing_input, hashlib.sha256).digest()
    token = f"{header}.{payload}." + base64.urlsafe_b64encode(sig).rstrip(b"=").decode()
    assert forged is not None
    result = verify(auth, token)
    assert isinstance(result, Deny)
    assert result.status == 401
    good = jwt.encode({"sub": "u", "exp": 2**31}, rsa_key, algorithm="RS256")
    assert isinstance(verify(auth, good), Principal)


def test_injected_key_headers_are_ignored(rsa_key: rsa.RSAPrivateKey) -> None:
    """jwk, jku and x5u headers never supply the verification key."""
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(attacker.public_key()))
    token = jwt.encode(
        {"sub": "attacker", "exp": 2**31},
        attacker,
        algorithm="RS256",
        headers={"jwk": jwk, "jku": "http://127.0.0.1:1/jwks", "x5u": "http://127.0.0.1:1/c"},
    )
    result = verify(JWTAuthenticator(pem(rsa_key), algorithms=["RS256"]), token)
    assert isinstance(result, Deny)
    assert result.detail == "signature invalid"


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a.b",
        "a.b.c.d",
        "!!!.###.$$$",
        b64({"alg": "HS256"}) + ".@@@." + "sig",
        "eyJ.eyJ.x",
    ],
    ids=["one-segment", "two-segments", "four-segments", "bad-b64", "bad-payload", "truncated"],
)
def test_malformed_tokens_are_401(token: str) -> None:
    """Tokens that are not JWTs are refused as malformed, never a crash."""
    result = verify(JWTAuthenticator(SECRET), token)
    assert isinstance(result, Deny)
    assert result.status == 401


def test_bad_signature() -> None:
    """A token signed with another secret has an invalid signature."""
    result = verify(JWTAuthenticator(SECRET), make_token("t" * 32))
    assert isinstance(result, Deny)
    assert result.detail == "signature invalid"


def test_huge_token_refused_before_decoding() -> None:
    """A 1 MiB token is refused by size."""
    auth = JWTAuthenticator(SECRET)
    result = auth.extract(RequestView("GET", "/"), "a" * (1 << 20))
    assert isinstance(result, Deny)
    assert (result.status, result.detail) == (401, "token too large")


@pytest.mark.parametrize(
    ("param", "detail"),
    [("", "bearer token missing"), ("a b", "bearer credentials must be a single token")],
    ids=["empty", "two-tokens"],
)
def test_malformed_bearer_credentials_are_400(param: str, detail: str) -> None:
    """RFC 6750 invalid_request is a 400."""
    result = JWTAuthenticator(SECRET).extract(RequestView("GET", "/"), param)
    assert isinstance(result, Deny)
    assert (result.status, result.detail, result.code) == (400, detail, "invalid_request")


def test_denials_never_echo_the_token() -> None:
    """No part of a bad token appears in the problem body or headers."""
    token = make_token("t" * 32, sub="secret-subject-value")
    result = verify(JWTAuthenticator(SECRET), token)
    assert isinstance(result, Deny)
    text = result.body().decode() + repr(result.headers)
    for part in token.split("."):
        assert part not in text
    assert "secret-subject-value" not in text


@pytest.mark.parametrize(
    ("key", "algorithms", "message"),
    [
        ("short", ["HS256"], "at least 32 bytes"),
        ("x" * 40, ["HS512"], "at least 64 bytes"),
        ("x" * 64, ["HS256", "RS256"], "cannot share one key"),
        ("x" * 64, ["none"], "unsupported algorithm"),
        ("x" * 64, [], "at least one algorithm"),
        ("not a pem", ["RS256"], "not a usable public key"),
        ("-----BEGIN PUBLIC KEY-----\nabc\n-----END PUBLIC KEY-----", ["HS256"], "PEM key"),
    ],
    ids=["short-hs256", "short-hs512", "mixed", "none", "empty", "bad-pem", "pem-as-secret"],
)
def test_bad_configuration_fails_at_startup(key: str, algorithms: list[str], message: str) -> None:
    """Invalid keys and allowlists raise ConfigurationError naming the variable."""
    with pytest.raises(ConfigurationError, match=message) as info:
        JWTAuthenticator(key, algorithms=algorithms)
    assert "SECMW_JWT__" in str(info.value)


@pytest.mark.parametrize(
    ("make_key", "algorithm"),
    [
        (lambda: rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256"),
        (lambda: ec.generate_private_key(ec.SECP256R1()), "ES256"),
        (lambda: ec.generate_private_key(ec.SECP384R1()), "ES384"),
        (lambda: ed25519.Ed25519PrivateKey.generate(), "EdDSA"),
    ],
    ids=["rsa", "p256", "p384", "ed25519"],
)
def test_settings_infer_the_algorithm_from_a_public_key(make_key: Any, algorithm: str) -> None:
    """A public key alone admits exactly the algorithm of its type."""
    private = make_key()
    auth = build_jwt_authenticator(JWTSettings(public_key=pem(private)))
    assert auth is not None
    assert auth.algorithms == (algorithm,)
    token = jwt.encode({"sub": "svc", "exp": 2**31}, private, algorithm=algorithm)
    assert isinstance(verify(auth, token), Principal)


def test_settings_refuse_secret_and_public_key_together(rsa_key: rsa.RSAPrivateKey) -> None:
    """One verifier, one kind of key."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__SECRET"):
        build_jwt_authenticator(JWTSettings(secret=SECRET, public_key=pem(rsa_key)))  # type: ignore[arg-type]


def test_settings_refuse_unsupported_key_type() -> None:
    """A P-256K (secp256k1) key needs an explicit algorithm."""
    private = ec.generate_private_key(ec.SECP256K1())
    with pytest.raises(ConfigurationError, match="SECMW_JWT__PUBLIC_KEY"):
        build_jwt_authenticator(JWTSettings(public_key=pem(private)))


def test_settings_refuse_garbage_public_key() -> None:
    """A public key that is not PEM fails at startup."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__PUBLIC_KEY"):
        build_jwt_authenticator(JWTSettings(public_key="garbage"))
