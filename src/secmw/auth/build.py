"""Build the authenticator chain from ``SecuritySettings``."""

from __future__ import annotations

from typing import Any

from secmw._config import read_json_file, read_secret_file
from secmw.auth.apikey import APIKeyAuthenticator, APIKeyRecord
from secmw.auth.base import AuthChain, Authenticator
from secmw.auth.basic import BasicAuthenticator, BasicUser
from secmw.auth.jwt import JWTAuthenticator
from secmw.errors import ConfigurationError
from secmw.paths import PathSet
from secmw.settings import APIKeyEntry, BasicUserEntry, JWTSettings, SecuritySettings


def build_jwt_authenticator(jwt: JWTSettings, realm: str = "api") -> JWTAuthenticator | None:
    """The JWT authenticator the settings describe, or None when no key is configured."""
    secret = jwt.secret.get_secret_value() if jwt.secret else None
    if jwt.secret_file:
        secret = read_secret_file(jwt.secret_file, "SECMW_JWT__SECRET_FILE")
    public_key = jwt.public_key
    if jwt.public_key_file:
        public_key = read_secret_file(jwt.public_key_file, "SECMW_JWT__PUBLIC_KEY_FILE")
    if secret and public_key:
        raise ConfigurationError(
            "SECMW_JWT__SECRET: set either a secret or a public key, not both (key confusion)"
        )
    key = secret or public_key
    if not key:
        return None
    algorithms = jwt.algorithms or (["HS256"] if secret else _infer_algorithms(key))
    return JWTAuthenticator(
        key,
        algorithms=algorithms,
        issuer=jwt.issuer,
        audience=jwt.audience,
        leeway=jwt.leeway,
        require=("exp",) if jwt.require_exp else (),
        subject_claim=jwt.subject_claim,
        scopes_claim=jwt.scopes_claim,
        roles_claim=jwt.roles_claim,
        realm=realm,
        max_token_bytes=jwt.max_token_bytes,
    )


def _infer_algorithms(pem: str) -> list[str]:
    """One algorithm matching the key type, so a public key never admits a family it isn't for."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key: Any = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigurationError("SECMW_JWT__PUBLIC_KEY: not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256"]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ["EdDSA"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return [by_curve[key.curve.name]]
    raise ConfigurationError(
        "SECMW_JWT__PUBLIC_KEY: unsupported key type; set SECMW_JWT__ALGORITHMS explicitly"
    )


def _api_key_records(settings: SecuritySettings) -> list[APIKeyRecord]:
    entries = list(settings.api_keys.keys)
    if settings.api_keys.file:
        raw = read_json_file(settings.api_keys.file, "SECMW_API_KEYS__FILE")
        try:
            entries += [APIKeyEntry.model_validate(item) for item in raw]
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"SECMW_API_KEYS__FILE: invalid key list ({exc})") from None
    return [
        APIKeyRecord(e.hash, e.id, frozenset(e.scopes), frozenset(e.roles), e.name) for e in entries
    ]


def _basic_users(settings: SecuritySettings) -> list[BasicUser]:
    users = dict(settings.basic.users)
    if settings.basic.users_file:
        raw = read_json_file(settings.basic.users_file, "SECMW_BASIC__USERS_FILE")
        try:
            users.update({k: BasicUserEntry.model_validate(v) for k, v in dict(raw).items()})
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(f"SECMW_BASIC__USERS_FILE: invalid users ({exc})") from None
    return [
        BasicUser(name, u.password_hash, frozenset(u.scopes), frozenset(u.roles))
        for name, u in users.items()
    ]


def build_chain(settings: SecuritySettings) -> AuthChain:
    """The authenticator chain the settings describe; unconfigured schemes are left out."""
    realm = settings.auth.realm
    available: dict[str, Authenticator] = {}
    jwt = build_jwt_authenticator(settings.jwt, realm)
    if jwt:
        available["bearer"] = jwt
    records = _api_key_records(settings)
    if records:
        available["apikey"] = APIKeyAuthenticator(
            records,
            header=settings.api_keys.header,
            query_param=settings.api_keys.query_param,
            realm=realm,
        )
    users = _basic_users(settings)
    if users:
        available["basic"] = BasicAuthenticator(users, realm=realm)
    chain = [available[name] for name in settings.auth.order if name in available]
    return AuthChain(
        chain,
        required=PathSet(settings.auth.required, setting="SECMW_AUTH__REQUIRED"),
        public=PathSet(settings.auth.public, setting="SECMW_AUTH__PUBLIC"),
        preflight_anonymous=settings.auth.cors_preflight_anonymous,
    )
