"""The attack suite: each test is named after the attack it replays, and shows that it fails.

JWT forgeries are replayed against the core authenticator and through the ASGI middleware; key
headers (``jwk``, ``jku``, ``x5u``, ``x5c``) are pointed at an attacker's loopback server that
must never be asked for anything. Timing checks compare medians of interleaved samples with a
generous bound, never a wall-clock budget.
"""

from __future__ import annotations

import asyncio
import base64
import datetime
import hashlib
import hmac
import json
import statistics
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
from pwdlib.hashers.bcrypt import BcryptHasher

from secmw.asgi import AuthenticationMiddleware
from secmw.asgi.ipfilter import IPFilterMiddleware
from secmw.asgi.stack import SecurityStack
from secmw.auth import (
    APIKeyAuthenticator,
    APIKeyRecord,
    AuthChain,
    BasicAuthenticator,
    BasicUser,
    Credential,
    JWTAuthenticator,
    hash_api_key,
)
from secmw.auth.jwks import JWKSKeySource
from secmw.auth.passwords import hash_password
from secmw.auth.throttle import FailureBudgets, failure_plan
from secmw.core.deny import Deny
from secmw.core.fields import Headers
from secmw.core.paths import PathSet
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.errors import ConfigurationError
from secmw.ratelimit.policy import RateLimitPolicy
from secmw.ratelimit.settings import RateLimitSettings
from tests.support import SECRET, Recorder, empty_receive, http_scope, run_asgi

PROBLEM = "application/problem+json"


# -- keys, tokens, servers --------------------------------------------------------------------


@dataclass(frozen=True)
class Keys:
    """The issuer's keys and the attacker's."""

    rsa_key: rsa.RSAPrivateKey
    ec_key: ec.EllipticCurvePrivateKey
    attacker_key: rsa.RSAPrivateKey

    @property
    def rsa_pem(self) -> bytes:
        return public_pem(self.rsa_key)

    @property
    def ec_pem(self) -> bytes:
        return public_pem(self.ec_key)


def public_pem(key: Any) -> bytes:
    public: Any = key.public_key()
    pem: bytes = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem


@pytest.fixture(scope="module")
def keys() -> Keys:
    return Keys(
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
    )


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**extra: Any) -> dict[str, Any]:
    """Valid claims: subject ``user-1``, expiring in a minute, plus ``extra``."""
    return {"sub": "user-1", "exp": int(time.time()) + 3600, **extra}


def compact(header: dict[str, Any] | bytes, payload: dict[str, Any] | bytes, sign: Any) -> str:
    """A compact JWS built by hand (PyJWT refuses to encode most forgeries).

    ``sign`` is None (empty signature), bytes (an HMAC secret), or a private key whose type
    picks RS256 or ES256.
    """
    raw_header = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw_payload = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signing_input = f"{b64url(raw_header)}.{b64url(raw_payload)}".encode()
    if sign is None:
        signature = b""
    elif isinstance(sign, bytes):
        signature = hmac.new(sign, signing_input, hashlib.sha256).digest()
    else:
        name = "RS256" if isinstance(sign, rsa.RSAPrivateKey) else "ES256"
        signature = jwt.get_algorithm_by_name(name).sign(signing_input, sign)
    return f"{signing_input.decode()}.{b64url(signature)}"


def verify(auth: JWTAuthenticator, token: str) -> Principal | Deny:
    return auth.verify(Credential("bearer", token))


def assert_refused(auth: JWTAuthenticator, token: str) -> None:
    """401 from the core, and 401 problem+json with a bearer challenge through the middleware."""
    result = verify(auth, token)
    assert isinstance(result, Deny), result
    assert result.status == 401
    assert result.code == "invalid_token"
    recorder = run_asgi(
        AuthenticationMiddleware(never_called, chain=AuthChain([auth])),
        http_scope("/", headers=[("authorization", f"Bearer {token}")]),
    )
    assert recorder.status == 401
    assert recorder.header_values("content-type") == [PROBLEM]
    assert 'error="invalid_token"' in recorder.header_values("www-authenticate")[0]
    assert token not in recorder.body.decode()


async def never_called(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("a forged request reached the app")


class _Recorder(BaseHTTPRequestHandler):
    """Serves ``routes`` and counts every request per path."""

    routes: dict[str, bytes] = {}
    hits: dict[str, int] = {}

    def do_GET(self) -> None:
        self.hits[self.path] = self.hits.get(self.path, 0) + 1
        body = self.routes.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Server:
    url: str
    routes: dict[str, bytes]
    hits: dict[str, int]


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[dict[str, bytes]], Server]]:
    """Start loopback HTTP servers that record the requests they get."""
    servers: list[ThreadingHTTPServer] = []

    def start(routes: dict[str, bytes]) -> Server:
        hits: dict[str, int] = {}
        handler = type("Handler", (_Recorder,), {"routes": routes, "hits": hits})
        httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return Server(f"http://127.0.0.1:{httpd.server_port}", routes, hits)

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def jwk(key: Any, kid: str, alg: str) -> dict[str, Any]:
    """The public JWK of ``key``."""
    if isinstance(key, rsa.RSAPrivateKey):
        data = jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key(), as_dict=True)
    else:
        data = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    data.pop("key_ops", None)
    return {**data, "kid": kid, "alg": alg, "use": "sig"}


@pytest.fixture(scope="module")
def issuer(keys: Keys, serve: Callable[[dict[str, bytes]], Server]) -> Server:
    """The legitimate issuer's JWKS: RSA key ``k1`` and EC key ``e1``."""
    document = {"keys": [jwk(keys.rsa_key, "k1", "RS256"), jwk(keys.ec_key, "e1", "ES256")]}
    return serve({"/jwks": json.dumps(document).encode()})


@pytest.fixture(scope="module")
def attacker(keys: Keys, serve: Callable[[dict[str, bytes]], Server]) -> Server:
    """The attacker's server: a JWKS with the attacker's key under ``k1``, and a certificate."""
    document = {"keys": [jwk(keys.attacker_key, "k1", "RS256")]}
    cert = self_signed(keys.attacker_key).public_bytes(serialization.Encoding.PEM)
    return serve({"/jwks": json.dumps(document).encode(), "/cert.pem": cert})


def self_signed(key: rsa.RSAPrivateKey) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "issuer.example")])
    now = datetime.datetime.now(datetime.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )


@pytest.fixture
def jwks_auth(issuer: Server) -> JWTAuthenticator:
    """A verifier taking its keys from the issuer's JWKS (fresh cache per test)."""
    source = JWKSKeySource(issuer.url + "/jwks", algorithms=["RS256", "ES256"], cooldown=60)
    source.prefetch()
    return JWTAuthenticator(key_source=source, algorithms=["RS256", "ES256"], cache_size=0)


@pytest.fixture
def rs256(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(keys.rsa_pem.decode(), algorithms=["RS256"], cache_size=0)


@pytest.fixture
def es256(keys: Keys) -> JWTAuthenticator:
    return JWTAuthenticator(keys.ec_pem.decode(), algorithms=["ES256"], cache_size=0)


@pytest.fixture
def hs256() -> JWTAuthenticator:
    return JWTAuthenticator(SECRET, cache_size=0)


# -- JWT: algorithm attacks -------------------------------------------------------------------

NONE_VARIANTS = ["none", "None", "NONE", "nOnE", "NoNe", "none "]


@pytest.mark.parametrize("alg", NONE_VARIANTS)
@pytest.mark.parametrize("signature", ["", "c2ln"], ids=["unsigned", "junk-signature"])
@pytest.mark.parametrize("verifier", ["hs256", "rs256"])
def test_jwt_alg_none_is_refused(
    alg: str, signature: str, verifier: str, request: pytest.FixtureRequest
) -> None:
    """``alg: none`` in any case, signed or not, never admits."""
    auth = request.getfixturevalue(verifier)
    unsigned = compact({"alg": alg, "typ": "JWT"}, claims(), None)
    assert_refused(auth, unsigned + signature)


def confusion_secrets(pem: bytes) -> dict[str, bytes]:
    """The public key as an attacker would feed it to HMAC, in every common serialization."""
    return {
        "pem": pem,
        "pem-no-newline": pem.rstrip(b"\n"),
        "pem-crlf": pem.replace(b"\n", b"\r\n"),
        "der": serialization.load_pem_public_key(pem).public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    }


@pytest.mark.parametrize("form", ["pem", "pem-no-newline", "pem-crlf", "der"])
@pytest.mark.parametrize("alg", ["HS256", "HS384", "HS512"])
def test_jwt_hs_rs_key_confusion_is_refused(
    keys: Keys, rs256: JWTAuthenticator, form: str, alg: str
) -> None:
    """A token MACed with the RSA public key's bytes is refused by an RS256 verifier."""
    secret = confusion_secrets(keys.rsa_pem)[form]
    token = compact({"alg": alg, "typ": "JWT"}, claims(), secret)
    if alg != "HS256":  # re-MAC with the right hash so only the algorithm check can stop it
        digest = {"HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
        head, body, _ = token.split(".")
        mac = hmac.new(secret, f"{head}.{body}".encode(), digest).digest()
        token = f"{head}.{body}.{b64url(mac)}"
    assert_refused(rs256, token)


@pytest.mark.parametrize("form", ["pem", "pem-no-newline", "der"])
def test_jwt_hs_ec_key_confusion_is_refused(keys: Keys, es256: JWTAuthenticator, form: str) -> None:
    """A token MACed with the EC public key's bytes is refused by an ES256 verifier."""
    secret = confusion_secrets(keys.ec_pem)[form]
    assert_refused(es256, compact({"alg": "HS256"}, claims(), secret))


@pytest.mark.server
def test_jwt_hs_rs_key_confusion_against_jwks_is_refused(
    keys: Keys, jwks_auth: JWTAuthenticator
) -> None:
    """With JWKS keys, an HS256 token MACed with the published key names ``k1`` in vain."""
    token = compact({"alg": "HS256", "kid": "k1"}, claims(), keys.rsa_pem)
    assert_refused(jwks_auth, token)


@pytest.mark.parametrize(
    "algorithms", [["HS256"], ["RS256", "HS256"]], ids=["hmac-only", "mixed-families"]
)
def test_jwt_key_confusion_cannot_be_configured(keys: Keys, algorithms: list[str]) -> None:
    """A PEM key as an HMAC secret, or HMAC next to RSA, is refused when the app starts."""
    with pytest.raises(ConfigurationError, match="SECMW_JWT"):
        JWTAuthenticator(keys.rsa_pem.decode(), algorithms=algorithms)


# -- JWT: key headers -------------------------------------------------------------------------


def test_jwt_jwk_header_injection_is_refused(keys: Keys, rs256: JWTAuthenticator) -> None:
    """A token carrying the attacker's public key in ``jwk`` and signed with it is refused."""
    header = {"alg": "RS256", "jwk": jwk(keys.attacker_key, "evil", "RS256")}
    assert_refused(rs256, compact(header, claims(), keys.attacker_key))


def test_jwt_jwk_oct_header_injection_is_refused(hs256: JWTAuthenticator) -> None:
    """An HMAC secret offered in a ``jwk`` header (kty oct) is never used."""
    secret = b"attacker-secret-attacker-secret!"
    header = {"alg": "HS256", "jwk": {"kty": "oct", "k": b64url(secret)}}
    assert_refused(hs256, compact(header, claims(), secret))


@pytest.mark.server
def test_jwt_jwk_header_injection_against_jwks_is_refused(
    keys: Keys, jwks_auth: JWTAuthenticator
) -> None:
    """The JWKS verifier ignores an attacker ``jwk`` even under the issuer's ``kid``."""
    header = {"alg": "RS256", "kid": "k1", "jwk": jwk(keys.attacker_key, "k1", "RS256")}
    assert_refused(jwks_auth, compact(header, claims(), keys.attacker_key))


@pytest.mark.server
@pytest.mark.parametrize(("member", "path"), [("jku", "/jwks"), ("x5u", "/cert.pem")])
@pytest.mark.parametrize("verifier", ["rs256", "jwks_auth"])
def test_jwt_jku_x5u_header_injection_fetches_nothing(
    keys: Keys,
    attacker: Server,
    member: str,
    path: str,
    verifier: str,
    request: pytest.FixtureRequest,
) -> None:
    """A ``jku``/``x5u`` pointing at the attacker's keys is refused, and never fetched."""
    auth = request.getfixturevalue(verifier)
    header = {"alg": "RS256", "kid": "k1", member: attacker.url + path}
    assert_refused(auth, compact(header, claims(), keys.attacker_key))
    assert attacker.hits == {}


@pytest.mark.parametrize("verifier", ["rs256", pytest.param("jwks_auth", marks=pytest.mark.server)])
def test_jwt_x5c_header_injection_is_refused(
    keys: Keys, verifier: str, request: pytest.FixtureRequest
) -> None:
    """A self-signed certificate chain for the attacker's key in ``x5c`` is never trusted."""
    auth = request.getfixturevalue(verifier)
    cert = self_signed(keys.attacker_key).public_bytes(serialization.Encoding.DER)
    header = {"alg": "RS256", "kid": "k1", "x5c": [base64.b64encode(cert).decode()]}
    assert_refused(auth, compact(header, claims(), keys.attacker_key))


KIDS = [
    pytest.param("../../../../../../dev/null", id="traversal-dev-null"),
    pytest.param("/etc/passwd", id="absolute-path"),
    pytest.param("k1/../k1", id="traversal-to-k1"),
    pytest.param("k1' OR '1'='1", id="sql-or"),
    pytest.param("x'; DROP TABLE keys; --", id="sql-drop"),
    pytest.param("k1\x00", id="nul"),
    pytest.param("K1", id="case"),
    pytest.param(" k1", id="space"),
    pytest.param("", id="empty"),
    pytest.param("k" * 300, id="long"),
    pytest.param(1, id="number"),
    pytest.param(["k1"], id="list"),
    pytest.param({"$ne": ""}, id="nosql-object"),
    pytest.param(None, id="null"),
]


@pytest.mark.server
@pytest.mark.parametrize("kid", KIDS)
def test_jwt_kid_path_traversal_and_sql_select_no_key(
    keys: Keys, jwks_auth: JWTAuthenticator, kid: Any
) -> None:
    """Odd ``kid`` values, even on a token the issuer really signed, name no key: 401."""
    assert_refused(jwks_auth, compact({"alg": "RS256", "kid": kid}, claims(), keys.rsa_key))
    assert isinstance(verify(jwks_auth, jwt.encode(claims(), keys.rsa_key, "RS256", {"kid": "k1"})),
                      Principal)  # fmt: skip


@pytest.mark.parametrize("kid", KIDS)
def test_jwt_kid_values_do_not_change_the_configured_key(
    keys: Keys, rs256: JWTAuthenticator, kid: Any
) -> None:
    """With a configured key, ``kid`` picks nothing: the issuer's token passes (PyJWT refuses a
    non-string or null ``kid`` outright), a forgery fails."""
    genuine = verify(rs256, compact({"alg": "RS256", "kid": kid}, claims(), keys.rsa_key))
    assert isinstance(genuine, Principal) == isinstance(kid, str)
    assert_refused(rs256, compact({"alg": "RS256", "kid": kid}, claims(), keys.attacker_key))


@pytest.mark.server
def test_jwt_unknown_kid_flood_fetches_at_most_once_per_cooldown(
    keys: Keys, issuer: Server, jwks_auth: JWTAuthenticator
) -> None:
    """Fifty made-up ``kid`` values cost at most one extra JWKS fetch within the cooldown."""
    before = issuer.hits.get("/jwks", 0)
    assert before >= 1  # the verifier's own prefetch went through this counter
    for index in range(50):
        token = compact({"alg": "RS256", "kid": f"made-up-{index}"}, claims(), keys.rsa_key)
        assert isinstance(verify(jwks_auth, token), Deny)
    assert issuer.hits.get("/jwks", 0) - before <= 1


# -- JWT: header and claim tricks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "header",
    [
        {"alg": "HS256", "crit": ["exp-ext"], "exp-ext": 1},
        {"alg": "HS256", "crit": ["b64"], "b64": False},
        {"alg": "HS256", "crit": ["b64"]},
        {"alg": "HS256", "crit": []},
        {"alg": "HS256", "crit": "exp-ext"},
        {"alg": "HS256", "crit": [1]},
    ],
    ids=["unknown-extension", "b64-false", "b64-absent", "empty", "not-a-list", "not-a-string"],
)
def test_jwt_crit_with_unknown_extensions_is_refused(
    hs256: JWTAuthenticator, header: dict[str, Any]
) -> None:
    """``crit`` naming an extension secmw does not implement refuses (RFC 7515 §4.1.11)."""
    assert_refused(hs256, compact(header, claims(), SECRET.encode()))


def test_jwt_duplicate_alg_header_keys_are_read_once(hs256: JWTAuthenticator) -> None:
    """Duplicate ``alg`` members: the last wins everywhere, so ``none`` last stays refused."""
    unsigned = compact(b'{"alg":"HS256","alg":"none"}', claims(), None)
    assert_refused(hs256, unsigned)
    signed = compact(b'{"alg":"none","alg":"HS256"}', claims(), SECRET.encode())
    assert isinstance(verify(hs256, signed), Principal)  # HS256 checked, HS256 signed


@pytest.mark.parametrize(
    ("payload", "admitted"),
    [
        (b'{"sub":"admin","sub":"user-1","aud":"api","exp":%d}', "user-1"),
        (b'{"sub":"user-1","aud":"api","exp":%d,"exp":1}', None),
        (b'{"sub":"user-1","aud":"api","exp":1,"exp":%d}', "user-1"),
        (b'{"sub":"user-1","aud":"api","aud":"other","exp":%d}', None),
        (b'{"sub":"user-1","aud":"other","aud":"api","exp":%d}', "user-1"),
    ],
    ids=["sub-last-used", "exp-last-expired", "exp-last-valid", "aud-last-wrong", "aud-last-right"],
)
def test_jwt_duplicate_claim_keys_are_checked_as_used(payload: bytes, admitted: str | None) -> None:
    """Duplicate claims: the value checked is the value used (one parse, last key wins)."""
    auth = JWTAuthenticator(SECRET, audience="api", cache_size=0)
    token = compact({"alg": "HS256"}, payload % (int(time.time()) + 60), SECRET.encode())
    result = verify(auth, token)
    if admitted is None:
        assert_refused(auth, token)
    else:
        assert isinstance(result, Principal)
        assert result.id == admitted
        assert result.claims.get("exp", 0) > time.time()


@pytest.mark.parametrize(
    ("offsets", "admitted"),
    [
        ({"exp": -10}, True),
        ({"exp": -120}, False),
        ({"nbf": 10}, True),
        ({"nbf": 120}, False),
        ({"iat": 10}, True),
        ({"iat": 120}, False),
    ],
    ids=[
        "expired-within-leeway",
        "expired-beyond-leeway",
        "not-yet-valid-within-leeway",
        "not-yet-valid-beyond-leeway",
        "issued-in-future-within-leeway",
        "issued-in-future-beyond-leeway",
    ],
)
def test_jwt_expired_and_not_yet_valid_against_leeway(
    offsets: dict[str, int], admitted: bool
) -> None:
    """30 s of leeway admits 10 s of skew and refuses 120 s, for exp, nbf and iat."""
    auth = JWTAuthenticator(SECRET, leeway=30, cache_size=0)
    now = int(time.time())
    token = jwt.encode(claims(**{k: now + v for k, v in offsets.items()}), SECRET, "HS256")
    if admitted:
        assert isinstance(verify(auth, token), Principal)
    else:
        assert_refused(auth, token)


@pytest.mark.parametrize("shape", ["empty-signature", "no-signature", "other-token-signature"])
@pytest.mark.parametrize("verifier", ["hs256", "rs256"])
def test_jwt_signature_stripping_is_refused(
    keys: Keys, shape: str, verifier: str, request: pytest.FixtureRequest
) -> None:
    """``header.payload.``, ``header.payload`` and a borrowed signature are refused."""
    auth = request.getfixturevalue(verifier)
    key: Any = SECRET.encode() if verifier == "hs256" else keys.rsa_key
    alg = "HS256" if verifier == "hs256" else "RS256"
    head, body, _ = compact({"alg": alg}, claims(sub="admin"), key).split(".")
    borrowed = compact({"alg": alg}, claims(), key).split(".")[2]
    token = {
        "empty-signature": f"{head}.{body}.",
        "no-signature": f"{head}.{body}",
        "other-token-signature": f"{head}.{body}.{borrowed}",
    }[shape]
    assert_refused(auth, token)


@pytest.mark.parametrize(
    "extra",
    [
        {"aud": "other-api", "iss": "https://issuer.example"},
        {"aud": ["other-api"], "iss": "https://issuer.example"},
        {"iss": "https://issuer.example"},
        {"aud": "api", "iss": "https://evil.example"},
        {"aud": "api", "iss": "https://issuer.example.evil"},
        {"aud": "api"},
    ],
    ids=["audience-other", "audience-list-other", "audience-missing", "issuer-other",
         "issuer-suffix", "issuer-missing"],
)  # fmt: skip
def test_jwt_valid_token_for_another_audience_or_issuer_is_refused(extra: dict[str, Any]) -> None:
    """A genuinely signed token minted for another audience or by another issuer is refused."""
    auth = JWTAuthenticator(SECRET, audience="api", issuer="https://issuer.example", cache_size=0)
    assert_refused(auth, jwt.encode(claims(**extra), SECRET, "HS256"))
    good = jwt.encode(claims(aud=["x", "api"], iss="https://issuer.example"), SECRET, "HS256")
    assert isinstance(verify(auth, good), Principal)


# -- X-Forwarded-For spoofing -------------------------------------------------------------------


async def echo_client(scope: Any, receive: Any, send: Any) -> None:
    """An app answering 200 with the client address it was given."""
    body = json.dumps(scope["client"]).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


BEHIND_PROXY = {"trusted_proxies": ["10.0.0.0/8"], "allow": ["198.51.100.0/24"]}


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("x-forwarded-for", "198.51.100.7"),
        ("x-forwarded-for", "198.51.100.7, 10.0.0.1"),
        ("forwarded", "for=198.51.100.7"),
        ("forwarded", 'for="198.51.100.7:443";proto=https'),
        ("x-real-ip", "198.51.100.7"),
    ],
    ids=["xff", "xff-with-proxy-hop", "forwarded", "forwarded-quoted", "x-real-ip"],
)
@pytest.mark.parametrize("proxy_header", ["x-forwarded-for", "forwarded"])
def test_xff_spoofing_from_an_untrusted_peer_is_ignored(
    header: str, value: str, proxy_header: str
) -> None:
    """A peer outside the trusted proxies cannot claim an allowed address in any header."""
    app = IPFilterMiddleware(echo_client, ip={**BEHIND_PROXY, "proxy_header": proxy_header})
    scope = http_scope("/", headers=[(header, value)], client=("203.0.113.5", 4000))
    recorder = run_asgi(app, scope)
    assert recorder.status == 403
    assert recorder.header_values("content-type") == [PROBLEM]
    assert RequestView.from_scope(scope).client == "203.0.113.5"


@pytest.mark.parametrize(
    ("value", "client"),
    [
        ("198.51.100.7, 203.0.113.5", "203.0.113.5"),
        ("198.51.100.7, 203.0.113.5, 10.0.0.2", "203.0.113.5"),
        ("198.51.100.7, unknown", None),
        ("198.51.100.7, garbage", None),
    ],
    ids=["spoofed-leftmost", "spoofed-behind-two-proxies", "unknown-hop", "garbage-hop"],
)
def test_xff_spoofed_leftmost_entry_behind_a_trusted_proxy_is_ignored(
    value: str, client: str | None
) -> None:
    """Behind a trusted proxy the right-most untrusted hop is the client, not what it typed."""
    app = IPFilterMiddleware(echo_client, ip=BEHIND_PROXY)
    scope = http_scope("/", headers=[("x-forwarded-for", value)], client=("10.0.0.1", 4000))
    assert run_asgi(app, scope).status == 403
    assert RequestView.from_scope(scope).client == client


def test_xff_from_a_trusted_proxy_is_believed() -> None:
    """Control: the same header through a trusted proxy admits the allowed client."""
    app = IPFilterMiddleware(echo_client, ip=BEHIND_PROXY)
    scope = http_scope("/", headers=[("x-forwarded-for", "198.51.100.7")], client=("10.0.0.1", 1))
    recorder = run_asgi(app, scope)
    assert recorder.status == 200
    assert json.loads(recorder.body) == ["198.51.100.7", 0]


# -- rate-limit evasion -------------------------------------------------------------------------

LOGIN_RULE = {"path": "/login", "limit": "5/minute"}


def plan_keys(policy: RateLimitPolicy, view: RequestView) -> list[str]:
    """The storage keys a request would be charged to."""
    plan = policy.plan(view)
    assert plan is not None
    assert not isinstance(plan, Deny)
    return [hit.key for hit in plan.hits]


@pytest.mark.parametrize("per_path", [False, True], ids=["per-rule", "per-path"])
@pytest.mark.parametrize(
    "spelling",
    [
        "/LOGIN",
        "/Login",
        "/login/",
        "//login",
        "/./login",
        "/login/.",
        "/x/../login",
        unquote("/%6c%6F%67%69%6e"),  # percent-encoding, decoded by the server as uvicorn does
        unquote("/%2flogin"),
    ],
    ids=["upper", "mixed-case", "trailing-slash", "double-slash", "dot", "trailing-dot",
         "dot-dot", "percent-encoded", "encoded-slash"],
)  # fmt: skip
def test_rate_limit_evasion_by_path_variants_shares_one_budget(
    spelling: str, per_path: bool
) -> None:
    """Every spelling of /login is charged to the same keys as /login itself."""
    policy = RateLimitPolicy(RateLimitSettings(rules=[{**LOGIN_RULE, "per_path": per_path}]))
    expected = plan_keys(policy, RequestView("POST", "/login", peer="203.0.113.5"))
    assert any(":r:" in key for key in expected)  # the /login rule applies at all
    assert plan_keys(policy, RequestView("POST", spelling, peer="203.0.113.5")) == expected


def test_rate_limit_evasion_by_rotating_unknown_api_keys_shares_one_budget() -> None:
    """Unknown API keys authenticate nobody: each one is charged to the client's address, for
    requests and for failed authentications alike."""
    policy = RateLimitPolicy(RateLimitSettings(key="apikey"))
    keys, failures = set(), set()
    for index in range(20):
        view = RequestView("GET", "/", peer="203.0.113.5",
                           headers=Headers([("x-api-key", f"guess-{index}")]))  # fmt: skip
        keys.add(tuple(plan_keys(policy, view)))
        failure = failure_plan(
            policy, FailureBudgets.for_authentication(policy.settings), view, None
        )
        assert failure is not None
        failures.add(tuple(hit.key for hit in failure.hits))
    assert len(keys) == 1
    assert len(failures) == 1
    assert not any("guess" in key for key in [*next(iter(keys)), *next(iter(failures))])


@pytest.mark.parametrize(
    ("prefix", "other", "shared"),
    [
        (None, "2001:db8:1:2:ffff:ffff:ffff:fffe", True),
        (None, "2001:db8:1:3::1", False),
        (56, "2001:db8:1:ff::1", True),
        (128, "2001:db8:1:2::2", False),
    ],
    ids=["same-64", "next-64", "same-56", "prefix-128-per-address"],
)
def test_rate_limit_evasion_by_ipv6_addresses_in_one_64(
    prefix: int | None, other: str, shared: bool
) -> None:
    """IPv6 clients are keyed by prefix (/64 by default), so rotating addresses gains nothing."""
    settings = RateLimitSettings() if prefix is None else RateLimitSettings(ipv6_prefix=prefix)
    policy = RateLimitPolicy(settings)
    first = plan_keys(policy, RequestView("GET", "/", peer="2001:db8:1:2::1"))
    assert (plan_keys(policy, RequestView("GET", "/", peer=other)) == first) is shared


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def statuses(app: Any, scopes: list[dict[str, Any]]) -> list[int]:
    """Send the requests in order on one event loop; their statuses."""

    async def send_all() -> list[int]:
        codes = []
        for scope in scopes:
            recorder = Recorder()
            await app(scope, empty_receive, recorder)
            codes.append(recorder.status)
        return codes

    return asyncio.run(send_all())


def test_rate_limit_evasion_by_path_variants_through_the_stack() -> None:
    """Through the whole stack, four spellings of /login share its budget of three, and a
    spelling with dot segments is refused outright."""
    rule = {**LOGIN_RULE, "limit": "3/minute"}
    app = SecurityStack(ok_app, rate_limit={"default": "", "rules": [rule]})
    spellings = ["/login", "/LOGIN/", "//login", unquote("/%6cogin"), "/./login", "/x/../login"]
    scopes = [http_scope(path, method="POST", client=("203.0.113.5", 1)) for path in spellings]
    assert statuses(app, scopes) == [200, 200, 200, 429, 400, 400]


def test_rate_limit_evasion_by_rotating_unknown_api_keys_through_the_stack() -> None:
    """Through the whole stack, a client guessing API keys is throttled after 3 failures, and a
    fresh guess does not reset it."""
    app = SecurityStack(
        ok_app,
        api_keys={"keys": [{"hash": hash_api_key("sk-" + "7" * 40), "id": "svc"}]},
        rate_limit={"auth_failures": "3/minute"},
    )
    scopes = [
        http_scope("/", headers=[("x-api-key", f"guess-{i}")], client=("203.0.113.5", 1))
        for i in range(5)
    ]
    assert statuses(app, scopes) == [401, 401, 401, 429, 429]


def test_rate_limit_evasion_by_ipv6_addresses_in_one_64_through_the_stack() -> None:
    """Through the whole stack, rotating addresses inside one /64 shares one budget; the next
    /64 has its own."""
    app = SecurityStack(ok_app, rate_limit={"default": "3/minute"})
    peers = ["2001:db8:1:2::1", "2001:db8:1:2::2", "2001:db8:1:2:a::3", "2001:db8:1:2:b::4"]
    peers.append("2001:db8:1:3::1")
    scopes = [http_scope("/", client=(peer, 1)) for peer in peers]
    assert statuses(app, scopes) == [200, 200, 200, 429, 200]


def test_rate_limit_evasion_by_lowercase_method() -> None:
    """``post /login`` under WSGI is charged like ``POST /login``."""
    policy = RateLimitPolicy(
        RateLimitSettings(default="", rules=[{**LOGIN_RULE, "methods": ["POST"]}])
    )
    for method in ("POST", "post", "Post"):
        view = RequestView.from_environ(
            {"REQUEST_METHOD": method, "PATH_INFO": "/login", "REMOTE_ADDR": "203.0.113.5"}
        )
        assert policy.plan(view) is not None, method


def test_path_traversal_dodges_required_paths() -> None:
    """``/admin/users/../..`` cannot reach a protected ``/admin/{rest:path}`` route anonymously."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    async def admin(request: Any) -> PlainTextResponse:
        return PlainTextResponse("admin")

    chain = AuthChain([JWTAuthenticator(SECRET)], required=PathSet(["/admin/*"]))
    app = AuthenticationMiddleware(
        Starlette(routes=[Route("/admin/{rest:path}", admin)]), chain=chain
    )
    assert run_asgi(app, http_scope("/admin/users")).status == 401  # control
    assert run_asgi(app, http_scope("/admin/users/../..")).status != 200


# -- timing -------------------------------------------------------------------------------------


def median_costs(first: Callable[[], object], second: Callable[[], object], samples: int) -> float:
    """Median cost of ``second`` over median cost of ``first``, sampled alternately."""
    costs: tuple[list[float], list[float]] = ([], [])
    for index in range(samples * 2):
        which = index % 2 if index % 4 < 2 else 1 - index % 2  # ABBA order cancels drift
        call = (first, second)[which]
        started = time.perf_counter()
        call()
        costs[which].append(time.perf_counter() - started)
    return statistics.median(costs[1]) / statistics.median(costs[0])


def assert_ratio(first: Callable[[], object], second: Callable[[], object], samples: int,
                 low: float, high: float) -> None:  # fmt: skip
    """The median cost ratio lies in [low, high] in one of three tries."""
    ratios = []
    for _ in range(3):
        ratio = median_costs(first, second, samples)
        ratios.append(round(ratio, 2))
        if low <= ratio <= high:
            return
    pytest.fail(f"cost ratios {ratios} outside [{low}, {high}]")


def test_timing_api_key_unknown_and_known_but_wrong_cost_the_same() -> None:
    """A random unknown key and a near miss of a real key take the same time to refuse."""
    real = "sk-" + "7" * 40
    records = [APIKeyRecord(hash_api_key(f"sk-{i:040d}"), f"svc-{i}") for i in range(100)]
    auth = APIKeyAuthenticator([*records, APIKeyRecord(hash_api_key(real), "svc")])
    near_miss = Credential("apikey", real[:-1] + "8")
    unknown = Credential("apikey", "zz-" + "q" * 40)
    assert isinstance(auth.verify(near_miss), Deny)
    assert isinstance(auth.verify(unknown), Deny)
    assert_ratio(lambda: auth.verify(near_miss), lambda: auth.verify(unknown), 3000, 0.5, 2.0)


@pytest.fixture(scope="module")
def basic() -> BasicAuthenticator:
    """A Basic authenticator whose user has a default (argon2id) hash."""
    return BasicAuthenticator([BasicUser("alice", hash_password("alice-password"))])


def test_timing_basic_unknown_user_costs_a_full_hash_check(basic: BasicAuthenticator) -> None:
    """An unknown user costs as much as a known user's wrong password (both run argon2id)."""
    wrong = Credential("basic", "not-her-password", "alice")
    unknown = Credential("basic", "not-her-password", "mallory")
    assert isinstance(basic.verify(wrong), Deny)
    assert isinstance(basic.verify(unknown), Deny)
    assert_ratio(lambda: basic.verify(wrong), lambda: basic.verify(unknown), 4, 0.5, 2.0)


def test_timing_basic_unknown_user_matches_a_legacy_hash_user() -> None:
    """An unknown user costs as much as a user with a (cheap) legacy bcrypt hash."""
    auth = BasicAuthenticator([BasicUser("bob", BcryptHasher(rounds=4).hash("bob-password"))])
    wrong = Credential("basic", "not-his-password", "bob")
    unknown = Credential("basic", "not-his-password", "mallory")
    # Several interleaved samples: a single one of each is at the mercy of a busy machine.
    assert_ratio(lambda: auth.verify(wrong), lambda: auth.verify(unknown), 9, 0.5, 2.0)
