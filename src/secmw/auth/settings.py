"""The authentication sections of the settings: the layer, JWT, API keys and HTTP Basic."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from secmw.auth._http import ProviderHTTPSettings
from secmw.core.section import Section, StrList


class JWTSettings(Section):
    """Bearer JWT verification (``jwt.*``).

    Enabled when a secret, a public key, a JWKS URL or discovery (with ``issuer``) is set.
    """

    secret: SecretStr | None = Field(None, description="HMAC secret (at least 32 bytes for HS256).")
    secret_file: Path | None = Field(None, description="File holding the HMAC secret.")
    public_key: str | None = Field(None, description="PEM public key for RS/PS/ES/EdDSA tokens.")
    public_key_file: Path | None = Field(None, description="File holding the PEM public key.")
    algorithms: StrList | None = Field(
        None,
        description="Allowed algorithms; default HS256 with a secret, inferred from a public key.",
    )
    typ: StrList = Field(
        default_factory=list,
        description="Accepted `typ` headers, e.g. `at+jwt` (RFC 9068 access tokens only, so an ID"
        " token cannot be replayed); empty: not checked. `application/at+jwt` counts as `at+jwt`.",
    )
    issuer: str | None = Field(None, description="Required `iss` claim.")
    audience: StrList | None = Field(None, description="Accepted `aud` values.")
    leeway: float = Field(0, ge=0, le=300, description="Clock skew tolerated, in seconds.")
    require_exp: bool = Field(True, description="Refuse tokens without an `exp` claim.")
    subject_claim: str = Field("sub", min_length=1, description="Claim holding the principal id.")
    scopes_claim: str | None = Field(
        None, description="Claim holding scopes; default tries `scope`, `scopes`, `scp`."
    )
    roles_claim: str | None = Field("roles", description="Claim holding roles.")
    max_token_bytes: int = Field(8192, ge=256, description="Longer tokens are refused unread.")
    jwks_url: str | None = Field(None, description="JWKS URL of the identity provider.")
    discovery: bool = Field(
        False, description="Find the JWKS URL from `issuer` + /.well-known/openid-configuration."
    )
    jwks_cache_ttl: float = Field(
        300, gt=0, le=86400, description="Seconds JWKS keys are kept without a `max-age`."
    )
    jwks_max_ttl: float = Field(
        3600, gt=0, le=86400, description="Upper bound on the JWKS `Cache-Control: max-age`."
    )
    jwks_cooldown: float = Field(
        30, gt=0, le=3600, description="Minimum seconds between JWKS fetches (unknown `kid`)."
    )
    jwks_timeout: float = Field(5, gt=0, le=60, description="Total seconds one fetch may take.")
    jwks_allow_http: bool = Field(
        False, description="Accept a plain-http JWKS or issuer URL on a non-loopback host."
    )
    jwks_http: ProviderHTTPSettings = Field(
        default_factory=ProviderHTTPSettings,
        description="CA bundle, client certificate and proxies for the JWKS and discovery URLs.",
    )
    cache_size: int = Field(
        10_000, ge=0, le=1_000_000, description="Verified tokens remembered; 0 turns it off."
    )
    negative_ttl: float = Field(5, ge=0, le=60, description="Seconds a refused token is cached.")
    revocation_url: str | None = Field(
        None,
        description="Redis URL of the `jti` denylist (redis://, rediss://, unix://,"
        " redis+cluster://, redis+sentinel://, valkey://).",
    )
    revocation_mirror: bool = Field(
        True,
        description="Keep a copy of the Redis denylist in each process, updated by pub/sub: no"
        " Redis call per request, and known revocations still refused while Redis is down.",
    )
    revocation_max_staleness: float = Field(
        30,
        gt=0,
        le=86400,
        description="Seconds the mirror may go without confirming its subscription before"
        " `revocation_stale_policy` applies.",
    )
    revocation_stale_policy: Literal["serve", "refuse"] = Field(
        "serve",
        description="Past the staleness bound: `serve` (admit tokens not known revoked, emit a"
        " `revocation.stale` audit event) or `refuse` (503).",
    )
    revocation_resync_interval: float = Field(
        60, ge=1, le=86400, description="Seconds between two full reloads of the mirror."
    )
    revocation_max_entries: int = Field(
        1_000_000, ge=1, le=100_000_000, description="Cap on the revoked ids one mirror holds."
    )
    revocation_clock_skew: float = Field(
        30,
        ge=0,
        le=3600,
        description="Seconds a revocation outlives its token beyond `leeway`, so processes whose"
        " clocks disagree by up to that much still refuse it.",
    )


class APIKeyEntry(Section):
    """One API key: its stored hash and what it grants."""

    hash: str = Field(description="`sha256:<hex>` from `secmw hash-key`.")
    id: str = Field(min_length=1, description="Principal id of the key's owner.")
    scopes: StrList = Field(default_factory=list)
    roles: StrList = Field(default_factory=list)
    name: str | None = None


class APIKeySettings(Section):
    """API keys (``api_keys.*``). Enabled when any key is configured."""

    header: str | None = Field("X-API-Key", description="Header carrying the key; empty for none.")
    query_param: str | None = Field(
        "api_key", description="Query parameter carrying the key; empty for none."
    )
    keys: list[APIKeyEntry] = Field(default_factory=list, description="Keys as a JSON list.")
    file: Path | None = Field(
        None, description="JSON file with a list of keys, re-read when it changes."
    )

    @field_validator("header", "query_param", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value


class BasicUserEntry(Section):
    """One HTTP Basic user."""

    password_hash: str = Field(description="argon2id or bcrypt hash from `secmw hash-password`.")
    scopes: StrList = Field(default_factory=list)
    roles: StrList = Field(default_factory=list)


class BasicSettings(Section):
    """HTTP Basic (``basic.*``). Enabled when any user is configured."""

    users: dict[str, BasicUserEntry] = Field(
        default_factory=dict, description="JSON object: user name to {password_hash, scopes}."
    )
    users_file: Path | None = Field(
        None, description="JSON file with the same object, re-read when it changes."
    )


class ScopeRule(Section):
    """One per-route requirement (an item of ``auth.scopes``): anonymous callers get 401 with the
    challenges, callers lacking a scope 403 ``insufficient_scope``."""

    path: str = Field(description="Path pattern (secmw.core.paths syntax): `/items/{id}`.")
    methods: StrList = Field(default_factory=list, description="Methods; empty for all.")
    scopes: StrList = Field(
        default_factory=list, description="Scopes the caller must hold; empty: authenticated."
    )

    @field_validator("methods")
    @classmethod
    def _upper(cls, value: list[str]) -> list[str]:
        return [method.upper() for method in value]

    @field_validator("scopes")
    @classmethod
    def _scope_tokens(cls, value: list[str]) -> list[str]:
        for scope in value:
            # RFC 6749 section 3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
            if not scope or any(c in '"\\' or not "!" <= c <= "~" for c in scope):
                raise ValueError(f"invalid scope {scope!r} (RFC 6749 section 3.3)")
        return value


class AuthSettings(Section):
    """The authentication layer as a whole (``auth.*``)."""

    enabled: bool = Field(True, description="Run the authentication layer.")
    realm: str = Field("api", description="`realm` of every challenge.")
    order: StrList = Field(
        default_factory=lambda: ["bearer", "apikey", "basic"],
        description="Order in which schemes are tried.",
    )
    required: StrList = Field(
        default_factory=list, description="Path patterns where anonymous requests get 401."
    )
    public: StrList = Field(
        default_factory=list, description="Path patterns exempt from `required` and `scopes`."
    )
    scopes: list[ScopeRule] = Field(
        default_factory=list,
        description='JSON list of `{"path", "methods", "scopes"}`: per-route requirements;'
        " the first matching rule applies.",
    )
    cors_preflight_anonymous: bool = Field(
        True, description="Let CORS preflight requests through unauthenticated."
    )

    @field_validator("order")
    @classmethod
    def _known_schemes(cls, value: list[str]) -> list[str]:
        unknown = set(value) - {"bearer", "apikey", "basic", "introspection", "session"}
        if unknown:
            raise ValueError(f"unknown scheme(s): {', '.join(sorted(unknown))}")
        return value
