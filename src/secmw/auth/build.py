"""Build the authenticator chain from ``SecuritySettings``."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from secmw.auth._http import ProviderClient
from secmw.auth.apikey import APIKeyAuthenticator, APIKeyRecord
from secmw.auth.base import AuthChain, Authenticator
from secmw.auth.basic import BasicAuthenticator, BasicUser
from secmw.auth.introspection import (
    BearerDispatcher,
    IntrospectionAuthenticator,
    IntrospectionSettings,
)
from secmw.auth.jwks import DEFAULT_ALGORITHMS, JWKSKeySource
from secmw.auth.jwt import JWTAuthenticator
from secmw.auth.keyring import load_ring, ring_entries
from secmw.auth.reload import WatchedFile
from secmw.auth.scopes import ScopeRules
from secmw.auth.session import SessionAuthenticator, Sessions
from secmw.auth.settings import APIKeyEntry, BasicUserEntry, JWTSettings
from secmw.core.paths import PathSet
from secmw.core.section import read_json_file, read_secret_file
from secmw.errors import ConfigurationError
from secmw.stores.mirror import RevocationMirror
from secmw.stores.revocation import AsyncRevocationStore, RedisRevocationStore, RevocationStore

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings


def build_jwt_authenticator(
    jwt: JWTSettings,
    realm: str = "api",
    *,
    revocation: RevocationStore | AsyncRevocationStore | None = None,
    keys: Mapping[str, str] | None = None,
) -> JWTAuthenticator | None:
    """The JWT authenticator the settings describe, or None when no key is configured.

    ``revocation`` overrides the Redis denylist ``jwt.revocation_url`` would build. ``keys``
    (``kid`` -> secret or PEM public key, the active one first, from :func:`verification_keys`)
    are the keys of tokens the app issues itself; without ``jwt.secret`` or ``jwt.public_key``
    the active one is the key of tokens without a known ``kid``.
    """
    secret = jwt.secret.get_secret_value() if jwt.secret else None
    if jwt.secret_file:
        secret = read_secret_file(jwt.secret_file, "jwt.secret_file")
    public_key = jwt.public_key
    if jwt.public_key_file:
        public_key = read_secret_file(jwt.public_key_file, "jwt.public_key_file")
    if secret and public_key:
        raise ConfigurationError(
            "jwt.secret: set either a secret or a public key, not both (key confusion)"
        )
    key = secret or public_key
    ring = dict(keys or {})
    if ring and source_configured(jwt):
        raise ConfigurationError(
            "tokens.keys: the identity provider issues the tokens, not this app"
        )
    if ring and not key:
        key = next(iter(ring.values()))
        secret = None if key.startswith("-----BEGIN") else key
    source = _jwks_source(jwt)
    if source is not None and key:
        raise ConfigurationError(
            "jwt.jwks_url: a JWKS cannot be combined with a secret or a public key"
        )
    if source is not None:
        algorithms = list(jwt.algorithms or DEFAULT_ALGORITHMS)
    elif key:
        algorithms = jwt.algorithms or (["HS256"] if secret else _infer_algorithms(key))
    else:
        return None
    if revocation is None and jwt.revocation_url:
        revocation = revocation_store(jwt, jwt.revocation_url)
    return JWTAuthenticator(
        key or None,
        key_source=source,
        cache_size=jwt.cache_size,
        negative_ttl=jwt.negative_ttl,
        revocation=revocation,
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
        typ=jwt.typ,
        verification_keys=ring,
    )


def revocation_store(jwt: JWTSettings, url: str) -> RedisRevocationStore | RevocationMirror:
    """The Redis denylist at ``url``, mirrored in this process unless ``jwt.revocation_mirror``
    is off. A bad URL names ``jwt.revocation_url``."""
    store: RedisRevocationStore = _redis_store(RedisRevocationStore, url, "jwt.revocation_url")
    if not jwt.revocation_mirror:
        return store
    return RevocationMirror(
        store,
        max_staleness=jwt.revocation_max_staleness,
        stale_policy=jwt.revocation_stale_policy,
        resync_interval=jwt.revocation_resync_interval,
        max_entries=jwt.revocation_max_entries,
        margin=jwt.leeway + jwt.revocation_clock_skew,
    )


def source_configured(jwt: JWTSettings) -> bool:
    """Whether keys come from a JWKS URL or discovery."""
    return bool(jwt.jwks_url or jwt.discovery)


def verification_keys(settings: SecuritySettings) -> dict[str, str]:
    """``kid`` -> secret or PEM public key of ``tokens.keys`` and ``tokens.keys_file``."""
    tokens = settings.tokens
    ring = load_ring(ring_entries(tokens.keys, tokens.keys_file))
    return {key.kid: key.verification_text() for key in ring}


def _jwks_source(jwt: JWTSettings) -> JWKSKeySource | None:
    if not source_configured(jwt):
        return None
    return JWKSKeySource(
        jwt.jwks_url,
        issuer=jwt.issuer,
        discovery=jwt.discovery,
        algorithms=jwt.algorithms or DEFAULT_ALGORITHMS,
        cache_ttl=jwt.jwks_cache_ttl,
        cooldown=jwt.jwks_cooldown,
        max_ttl=jwt.jwks_max_ttl,
        timeout=jwt.jwks_timeout,
        allow_http=jwt.jwks_allow_http,
        http=jwt.jwks_http,
    )


def _redis_store(kind: Any, url: str, variable: str) -> Any:
    """``kind.from_url(url)``; a bad URL or a missing redis package names the variable."""
    try:
        return kind.from_url(url)
    except ImportError:
        raise ConfigurationError(
            f"{variable}: Redis support needs the redis extra (pip install 'secmw[redis]')"
        ) from None
    except ValueError:
        raise ConfigurationError(f"{variable}: not a Redis URL") from None


def build_introspection_authenticator(
    settings: IntrospectionSettings, realm: str = "api"
) -> IntrospectionAuthenticator | None:
    """The introspection authenticator the settings describe, or None without a URL."""
    if not settings.url:
        return None
    secret = settings.client_secret.get_secret_value() if settings.client_secret else None
    if settings.client_secret_file:
        secret = read_secret_file(settings.client_secret_file, "introspection.client_secret_file")
    certified = settings.auth_method == "tls_client_auth"
    if not settings.client_id or not (secret or certified):
        raise ConfigurationError(
            "introspection.client_id: introspection needs a client id and a client secret"
            " (or a client certificate with tls_client_auth)"
        )
    if certified and secret:
        raise ConfigurationError(
            "introspection.client_secret: tls_client_auth sends no secret; remove it"
        )
    return IntrospectionAuthenticator(
        settings.url,
        client_id=settings.client_id,
        client_secret=secret,
        auth_method=settings.auth_method,
        cache_ttl=settings.cache_ttl,
        cache_size=settings.cache_size,
        negative_ttl=settings.negative_ttl,
        timeout=settings.timeout,
        issuer=settings.issuer,
        audience=settings.audience,
        realm=realm,
        allow_http=settings.allow_http,
        http=settings.http,
    )


def provider_pools(chain: AuthChain) -> list[ProviderClient | RevocationMirror]:
    """The connections the chain holds and its middleware closes at shutdown: the identity
    providers' pools (JWKS, introspection) and the revocation mirror (its thread and Redis)."""
    pools: list[ProviderClient | RevocationMirror] = []
    for authenticator in chain.authenticators:
        for part in (authenticator, getattr(authenticator, "jwt", None)):
            mirror = getattr(part, "revocation", None)
            if isinstance(mirror, RevocationMirror) and mirror not in pools:
                pools.append(mirror)
            part = getattr(part, "opaque", part)  # a BearerDispatcher's introspection side
            for owner in (part, getattr(part, "key_source", None)):
                pool = getattr(owner, "http", None)
                if isinstance(pool, ProviderClient) and pool not in pools:
                    pools.append(pool)
    return pools


def _infer_algorithms(pem: str) -> list[str]:
    """One algorithm matching the key type, so a public key never admits a family it isn't for."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key: Any = load_pem_public_key(pem.encode())
    except (ValueError, TypeError):
        raise ConfigurationError("jwt.public_key: not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey):
        return ["RS256"]
    if isinstance(key, ed25519.Ed25519PublicKey):
        return ["EdDSA"]
    if isinstance(key, ec.EllipticCurvePublicKey):
        by_curve = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
        if key.curve.name in by_curve:
            return [by_curve[key.curve.name]]
    raise ConfigurationError("jwt.public_key: unsupported key type; set jwt.algorithms explicitly")


def _api_key_records(entries: Iterable[APIKeyEntry]) -> list[APIKeyRecord]:
    return [
        APIKeyRecord(e.hash, e.id, frozenset(e.scopes), frozenset(e.roles), e.name) for e in entries
    ]


def _api_key_file(path: Path) -> list[APIKeyRecord]:
    raw = read_json_file(path, "api_keys.file")
    try:
        records = _api_key_records(APIKeyEntry.model_validate(item) for item in raw)
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"api_keys.file: invalid key list ({exc})") from None
    APIKeyAuthenticator(records, setting="api_keys.file")  # every hash well-formed, or refused
    return records


def _basic_users(users: Mapping[str, BasicUserEntry]) -> list[BasicUser]:
    return [
        BasicUser(name, u.password_hash, frozenset(u.scopes), frozenset(u.roles))
        for name, u in users.items()
    ]


def _basic_users_file(path: Path) -> list[BasicUser]:
    raw = read_json_file(path, "basic.users_file")
    try:
        return _basic_users({k: BasicUserEntry.model_validate(v) for k, v in dict(raw).items()})
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"basic.users_file: invalid users ({exc})") from None


def build_chain(
    settings: SecuritySettings,
    *,
    sessions: Sessions | None = None,
    revocation: RevocationStore | AsyncRevocationStore | None = None,
) -> AuthChain:
    """The authenticator chain the settings describe; unconfigured schemes are left out.

    Args:
        settings: The settings.
        sessions: The app's :class:`Sessions` (the same object its login and logout views use);
            default: built from ``session.*`` when ``"session"`` is in the order.
        revocation: A denylist for JWTs, instead of the one ``jwt.revocation_url`` builds.

    ``"bearer"`` (JWT) and ``"introspection"`` both own the Bearer scheme: when both are
    configured and listed, one :class:`BearerDispatcher` takes the first of their places and sends
    JWS-shaped tokens to the JWT verifier, every other token to introspection.
    """
    realm = settings.auth.realm
    order = settings.auth.order
    available: dict[str, Authenticator] = {}
    jwt = build_jwt_authenticator(
        settings.jwt, realm, revocation=revocation, keys=verification_keys(settings)
    )
    opaque = build_introspection_authenticator(settings.introspection, realm)
    if opaque is not None and "introspection" not in order:
        raise ConfigurationError(
            "auth.order: introspection.url is set but 'introspection' is not in the order"
        )
    if jwt and opaque and "bearer" in order:
        first = min(order.index("bearer"), order.index("introspection"))
        available[order[first]] = BearerDispatcher(jwt, opaque)
    else:
        if jwt:
            available["bearer"] = jwt
        if opaque:
            available["introspection"] = opaque
    if "session" in order:
        available["session"] = SessionAuthenticator(
            sessions or Sessions.from_settings(settings.session),
            trusted_origins=settings.session.trusted_origins,
            realm=realm,
        )
    keys = settings.api_keys
    if keys.keys or keys.file:
        available["apikey"] = APIKeyAuthenticator(
            _api_key_records(keys.keys),
            header=keys.header,
            query_param=keys.query_param,
            realm=realm,
            watched=WatchedFile(keys.file, _api_key_file, setting="api_keys.file")
            if keys.file
            else None,
        )
    basic = settings.basic
    if basic.users or basic.users_file:
        available["basic"] = BasicAuthenticator(
            _basic_users(basic.users),
            realm=realm,
            watched=WatchedFile(basic.users_file, _basic_users_file, setting="basic.users_file")
            if basic.users_file
            else None,
        )
    chain = [available[name] for name in settings.auth.order if name in available]
    return AuthChain(
        chain,
        required=PathSet(settings.auth.required, setting="auth.required"),
        public=PathSet(settings.auth.public, setting="auth.public"),
        preflight_anonymous=settings.auth.cors_preflight_anonymous,
        scopes=ScopeRules(settings.auth.scopes),
        token_endpoint=PathSet(
            [settings.tokens.endpoint_path] if settings.tokens.endpoint_path else [],
            setting="tokens.endpoint_path",
        ),
    )
