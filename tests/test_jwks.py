"""JWKS parsing and key selection: provider-shaped documents, skipped keys, other JOSE libraries."""

from __future__ import annotations

import base64
import datetime
import warnings
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from secmw.auth.base import Credential
from secmw.auth.build import build_jwt_authenticator
from secmw.auth.jwks import JWKSError, JWKSKeySource, _max_age, load_jwk, parse_jwks
from secmw.auth.jwt import JWTAuthenticator
from secmw.auth.settings import JWTSettings
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.errors import ConfigurationError
from tests.identity_support import IdentityProvider, new_key, public_jwk, sign

ALL = ("RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "ES512", "EdDSA")


@pytest.fixture(scope="module")
def rsa_a() -> rsa.RSAPrivateKey:
    return new_key("rsa")  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def rsa_b() -> rsa.RSAPrivateKey:
    return new_key("rsa")  # type: ignore[no-any-return]


def x5c(private: Any) -> list[str]:
    """A one-certificate chain for the key, as providers publish it (standard base64 DER)."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "idp")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(private, hashes.SHA256())
    )
    return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


def keycloak(sig: Any, enc: Any, ec_key: Any) -> dict[str, Any]:
    """Keycloak's realm certs: RS256 sig + RSA-OAEP enc key, both with x5c/x5t, plus an EC key."""
    return {
        "keys": [
            public_jwk(enc, "kc-enc", use="enc", alg="RSA-OAEP", x5c=x5c(enc), x5t="AAAA"),
            public_jwk(sig, "kc-sig", use="sig", alg="RS256", x5c=x5c(sig), **{"x5t#S256": "B"}),
            public_jwk(ec_key, "kc-ec", use="sig", alg="ES256", x5c=x5c(ec_key)),
        ]
    }


def auth0(first: Any, second: Any) -> dict[str, Any]:
    """Auth0's /.well-known/jwks.json: two RS256 signing keys with x5c (current and next)."""
    return {
        "keys": [
            public_jwk(k, kid, use="sig", alg="RS256", x5c=x5c(k), x5t="CCCC")
            for k, kid in ((first, "a0-current"), (second, "a0-next"))
        ]
    }


def google(first: Any, second: Any) -> dict[str, Any]:
    """Google's oauth2/v3/certs: two RS256 keys, no x5c."""
    return {"keys": [public_jwk(first, "g-1", use="sig", alg="RS256"), public_jwk(second, "g-2")]}


def test_keycloak_document_loads_signing_keys_only(rsa_a: Any, rsa_b: Any) -> None:
    """The enc key is skipped; the RS256 and ES256 signing keys load, each for its own alg."""
    keys = parse_jwks(keycloak(rsa_a, rsa_b, new_key("p256")), ALL)
    assert keys.kids == {"kc-sig", "kc-ec"}
    assert keys.find("kc-sig", "RS256") is not None
    assert keys.find("kc-sig", "PS256") is None  # alg pinned to RS256
    assert keys.find("kc-ec", "ES256") is not None
    assert keys.find("kc-enc", "RS256") is None


def test_auth0_and_google_documents_load(rsa_a: Any, rsa_b: Any) -> None:
    """Both keys of each document load; an unpinned Google key admits every RSA algorithm."""
    assert parse_jwks(auth0(rsa_a, rsa_b), ALL).kids == {"a0-current", "a0-next"}
    keys = parse_jwks(google(rsa_a, rsa_b), ALL)
    assert keys.kids == {"g-1", "g-2"}
    second = keys.find("g-2", "PS256")
    assert second is not None
    assert second.algorithms == {"RS256", "RS384", "RS512", "PS256"}


def test_x5c_alone_supplies_the_key(rsa_a: Any) -> None:
    """A JWK with only x5c (no n/e), as some ADFS servers publish, loads from the certificate."""
    jwk = {"kty": "RSA", "kid": "cert-only", "use": "sig", "x5c": x5c(rsa_a)}
    key = load_jwk(jwk, ALL)
    assert key is not None
    assert key.key.public_numbers() == rsa_a.public_key().public_numbers()


def _weak_rsa() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.mark.parametrize(
    ("make", "members"),
    [
        (lambda: new_key("rsa"), {"use": "enc"}),
        (lambda: new_key("rsa"), {"alg": "RSA-OAEP"}),
        (lambda: new_key("rsa"), {"alg": "HS256"}),
        (lambda: new_key("rsa"), {"key_ops": ["encrypt"]}),
        (lambda: new_key("p256"), {"alg": "ES384"}),
        (lambda: new_key("rsa"), {"d": "AAAA"}),
        (_weak_rsa, {}),
        (lambda: new_key("rsa"), {"n": "!!!"}),
        (lambda: new_key("p256"), {"crv": "P-999"}),
        (lambda: new_key("rsa"), {"x-kid": 7}),
    ],
    ids=[
        "use-enc",
        "enc-alg",
        "hmac-alg",
        "key-ops-encrypt",
        "curve-alg-mismatch",
        "private-member",
        "rsa-1024",
        "garbage-modulus",
        "unknown-curve",
        "non-string-kid",
    ],
)
def test_unusable_keys_are_skipped(make: Any, members: dict[str, Any]) -> None:
    """Keys that must not verify signatures are left out of the set."""
    jwk = public_jwk(make(), "k", **members)
    if "x-kid" in jwk:
        jwk["kid"] = jwk.pop("x-kid")
    assert load_jwk(jwk, ALL) is None


@pytest.mark.parametrize(
    ("document", "reason"),
    [
        (b"{not json", "invalid JSON"),
        (b'{"keys": {}}', "no 'keys' list"),
        (b"[]", "no 'keys' list"),
        (b'{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}', "no usable signing keys"),
        (b'{"keys": [1, "x", null]}', "no usable signing keys"),
    ],
    ids=["not-json", "keys-not-list", "array", "only-oct", "junk-entries"],
)
def test_unusable_documents_raise(document: bytes, reason: str) -> None:
    """A document without a single usable key is an error, never an empty key set."""
    with pytest.raises(JWKSError, match=reason):
        parse_jwks(document, ALL)


def test_allowlist_narrows_key_algorithms(rsa_a: Any) -> None:
    """With only RS256 allowed, an unpinned RSA key cannot verify PS256."""
    keys = parse_jwks({"keys": [public_jwk(rsa_a, "r")]}, ["RS256"])
    assert keys.find("r", "RS256") is not None
    assert keys.find("r", "PS256") is None


def test_token_without_kid_needs_exactly_one_fitting_key(rsa_a: Any, rsa_b: Any) -> None:
    """No kid: one fitting key is used, two are ambiguous (never tried one after the other)."""
    one = parse_jwks({"keys": [public_jwk(rsa_a, "a"), public_jwk(new_key("p256"), "e")]}, ALL)
    assert one.find(None, "RS256") is not None
    two = parse_jwks(google(rsa_a, rsa_b), ALL)
    assert two.find(None, "RS256") is None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("public, max-age=600", 600.0),
        ('max-age="60", must-revalidate', 60.0),
        ("no-store", 0.0),
        ("private, no-cache", 0.0),
        ("max-age=abc", None),
        ("max-age=-5", 0.0),
    ],
    ids=["absent", "max-age", "quoted", "no-store", "no-cache", "garbage", "negative"],
)
def test_cache_control_max_age(header: str | None, expected: float | None) -> None:
    """max-age is read per RFC 9111; no-store and no-cache mean the shortest allowed TTL."""
    assert _max_age(header) == expected


@pytest.mark.parametrize(
    ("kwargs", "variable"),
    [
        ({"url": "https://idp.example/jwks", "algorithms": ["HS256"]}, "ALGORITHMS"),
        ({"url": "http://idp.example/jwks"}, "JWKS_URL"),
        ({"url": "ftp://idp.example/jwks"}, "JWKS_URL"),
        ({"url": "https://user:pw@idp.example/jwks"}, "JWKS_URL"),
        ({"url": "https://idp.example/jwks\r\nX-Injected: 1"}, "JWKS_URL"),
        ({}, "JWKS_URL"),
        ({"url": "https://idp.example/jwks", "discovery": True, "issuer": "https://x"}, "JWKS_URL"),
        ({"discovery": True}, "ISSUER"),
        ({"url": "https://idp.example/jwks", "cache_ttl": 600, "max_ttl": 60}, "JWKS_CACHE_TTL"),
    ],
    ids=[
        "hmac",
        "plain-http",
        "ftp",
        "credentials",
        "crlf",
        "nothing",
        "url-and-discovery",
        "discovery-no-issuer",
        "ttl-above-max",
    ],
)
def test_bad_key_source_configuration(kwargs: dict[str, Any], variable: str) -> None:
    """Each mistake is a ConfigurationError naming the SECMW_JWT__ variable."""
    url = kwargs.pop("url", None)
    with pytest.raises(ConfigurationError, match=f"SECMW_JWT__{variable}"):
        JWKSKeySource(url, **kwargs)


def test_plain_http_is_allowed_on_loopback_or_when_asked() -> None:
    """Loopback needs no opt-in (tests, sidecars); another host needs jwks_allow_http."""
    assert JWKSKeySource("http://127.0.0.1:9/jwks").keys is None
    assert JWKSKeySource("http://idp.internal/jwks", allow_http=True).keys is None


def test_settings_refuse_jwks_with_a_static_key() -> None:
    """A JWKS URL and a secret together are refused (one key source)."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT__JWKS_URL"):
        build_jwt_authenticator(JWTSettings(jwks_url="https://idp.example/jwks", secret="s" * 32))


def test_settings_build_a_jwks_authenticator() -> None:
    """jwks_url alone builds a JWKS verifier with the public-key default allowlist."""
    auth = build_jwt_authenticator(JWTSettings(jwks_url="https://idp.example/jwks"))
    assert auth is not None
    assert auth.key_source is not None
    assert "RS256" in auth.algorithms
    assert not any(a.startswith("HS") for a in auth.algorithms)


# -- tokens from other JOSE libraries, verified through a loopback JWKS --------------------------


@pytest.fixture
def idp() -> Iterator[IdentityProvider]:
    with IdentityProvider() as provider:
        yield provider


def _verify(auth: JWTAuthenticator, token: str) -> Principal | Deny:
    return auth.verify(Credential("bearer", token))


def _joserfc_tokens() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from joserfc import jwt as jose_jwt
    from joserfc.jwk import ECKey, OKPKey, RSAKey

    claims = {"sub": "joserfc-user", "exp": 2**31}
    keys = [
        (RSAKey.generate_key(2048, parameters={"kid": "jr-rsa"}), "RS256"),
        (RSAKey.generate_key(2048, parameters={"kid": "jr-ps"}), "PS256"),
        (ECKey.generate_key("P-256", parameters={"kid": "jr-ec"}), "ES256"),
        (OKPKey.generate_key("Ed25519", parameters={"kid": "jr-ed"}), "EdDSA"),
    ]
    jwks, tokens = [], []
    for key, alg in keys:
        jwks.append(key.as_dict(private=False))
        with warnings.catch_warnings():  # joserfc flags EdDSA as superseded by RFC 9864
            warnings.simplefilter("ignore")
            token = jose_jwt.encode({"alg": alg, "kid": key.kid}, claims, key, algorithms=[alg])
        tokens.append((alg, token))
    return jwks, tokens


def _jwcrypto_tokens() -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    from jwcrypto import jwk as cjwk  # type: ignore[import-untyped]
    from jwcrypto import jwt as cjwt

    keys = [
        (cjwk.JWK.generate(kty="RSA", size=2048, kid="jc-rsa"), "RS384"),
        (cjwk.JWK.generate(kty="EC", crv="P-384", kid="jc-ec"), "ES384"),
        (cjwk.JWK.generate(kty="EC", crv="P-521", kid="jc-ec5"), "ES512"),
        (cjwk.JWK.generate(kty="OKP", crv="Ed25519", kid="jc-ed"), "EdDSA"),
    ]
    jwks, tokens = [], []
    for key, alg in keys:
        public = key.export_public(as_dict=True)
        jwks.append(public)
        token = cjwt.JWT(
            header={"alg": alg, "kid": public["kid"]},
            claims={"sub": "jwcrypto-user", "exp": 2**31},
        )
        token.make_signed_token(key)
        tokens.append((alg, token.serialize()))
    return jwks, tokens


@pytest.mark.server
@pytest.mark.parametrize("mint", [_joserfc_tokens, _jwcrypto_tokens], ids=["joserfc", "jwcrypto"])
def test_tokens_minted_by_other_libraries_verify(idp: IdentityProvider, mint: Any) -> None:
    """RSA, RSA-PSS, EC and Ed25519 tokens from joserfc and jwcrypto verify against their JWKS."""
    jwks, tokens = mint()
    idp.state.jwks = {"keys": jwks}
    auth = JWTAuthenticator(key_source=JWKSKeySource(f"{idp.url}/jwks"), algorithms=ALL)
    for alg, token in tokens:
        result = _verify(auth, token)
        assert isinstance(result, Principal), (alg, result)
        assert result.id.endswith("-user")
    assert idp.state.hits["/jwks"] == 1


@pytest.mark.server
def test_alg_must_fit_the_key_type(idp: IdentityProvider, rsa_a: Any) -> None:
    """An ES256 token naming an RSA key's kid is refused, and so is an alg outside the allowlist."""
    ec_key = new_key("p256")
    idp.state.jwks = {"keys": [public_jwk(rsa_a, "rsa"), public_jwk(ec_key, "ec")]}
    auth = JWTAuthenticator(
        key_source=JWKSKeySource(f"{idp.url}/jwks"), algorithms=["RS256", "ES256"]
    )
    assert isinstance(_verify(auth, sign(ec_key, "ES256", "ec")), Principal)
    crossed = _verify(auth, sign(ec_key, "ES256", "rsa"))
    assert isinstance(crossed, Deny)
    assert crossed.detail == "token signing key unknown"
    outside = _verify(auth, sign(rsa_a, "RS512", "rsa"))
    assert isinstance(outside, Deny)
    assert outside.detail == "token algorithm not allowed"


@pytest.mark.server
def test_hmac_token_against_a_jwks_is_refused(idp: IdentityProvider, rsa_a: Any) -> None:
    """HS256 signed with the public key's PEM never passes (key confusion) and costs no fetch."""
    import hashlib
    import hmac
    import json

    idp.state.jwks = {"keys": [public_jwk(rsa_a, "rsa")]}
    auth = JWTAuthenticator(key_source=JWKSKeySource(f"{idp.url}/jwks"), algorithms=["RS256"])
    pem = rsa_a.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "kid": "rsa"}).encode())
    body = b64(json.dumps({"sub": "attacker", "exp": 2**31}).encode())
    mac = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    result = _verify(auth, f"{head}.{body}.{b64(mac)}")
    assert isinstance(result, Deny)
    assert result.detail == "token algorithm not allowed"
    assert idp.state.hits["/jwks"] == 0
