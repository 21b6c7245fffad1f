"""Bearer JWT authentication with PyJWT (RFC 6750 challenges, RFC 7519 claims).

Security choices, each closed by default:

- The algorithm allowlist is explicit and never contains ``none``; one key serves either HMAC or
  public-key algorithms, never both (the classic RS256-to-HS256 key-confusion attack needs both).
- HMAC secrets shorter than the hash output are refused (RFC 7518 §3.2).
- ``exp`` is required unless switched off; ``iss`` and ``aud`` are checked when configured.
- Keys come only from configuration: ``jwk``, ``jku``, ``x5u`` and ``x5c`` token headers are ignored
  (PyJWT never reads them for verification).
- Tokens longer than ``max_token_bytes`` are refused before any decoding.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jwt as pyjwt

from secmw.auth.base import Credential
from secmw.errors import ConfigurationError
from secmw.principal import Principal
from secmw.problems import Deny, quote_param
from secmw.request import RequestView

HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
PUBLIC_KEY_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES256K", "ES384", "ES512",
     "EdDSA"}
)  # fmt: skip


def check_algorithms(algorithms: Sequence[str], *, setting: str) -> tuple[str, ...]:
    """Validate an algorithm allowlist; raise ConfigurationError naming ``setting``."""
    algs = tuple(algorithms)
    if not algs:
        raise ConfigurationError(f"{setting}: at least one algorithm is required")
    unknown = [a for a in algs if a not in HMAC_ALGORITHMS and a not in PUBLIC_KEY_ALGORITHMS]
    if unknown:
        raise ConfigurationError(
            f"{setting}: unsupported algorithm(s) {', '.join(map(repr, unknown))}"
            " ('none' is never allowed)"
        )
    hmac = [a for a in algs if a in HMAC_ALGORITHMS]
    if hmac and len(hmac) != len(algs):
        raise ConfigurationError(
            f"{setting}: HMAC and public-key algorithms cannot share one key (key confusion)"
        )
    return algs


def scopes_from_claims(claims: Mapping[str, Any], claim: str | None) -> frozenset[str]:
    """Scopes from a claim: a space-separated string (OAuth2 ``scope``) or a list of strings.

    With ``claim`` None, ``scope``, then ``scopes``, then ``scp`` are tried.
    """
    names = (claim,) if claim else ("scope", "scopes", "scp")
    for name in names:
        value = claims.get(name)
        if value is None:
            continue
        if isinstance(value, str):
            return frozenset(value.split())
        if isinstance(value, list | tuple):
            return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def _roles(claims: Mapping[str, Any], claim: str | None) -> frozenset[str]:
    if not claim:
        return frozenset()
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (pyjwt.ExpiredSignatureError, "token expired"),
    (pyjwt.ImmatureSignatureError, "token not yet valid"),
    (pyjwt.InvalidAudienceError, "token audience not accepted"),
    (pyjwt.InvalidIssuerError, "token issuer not accepted"),
    (pyjwt.MissingRequiredClaimError, "token lacks a required claim"),
    (pyjwt.InvalidSignatureError, "signature invalid"),
    (pyjwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (pyjwt.DecodeError, "malformed token"),
)


class JWTAuthenticator:
    """Verifies ``Authorization: Bearer <JWT>`` with a configured key.

    Args:
        key: HMAC secret (str or bytes) or a PEM public key.
        algorithms: Allowlist; must not mix HMAC and public-key algorithms.
        issuer: Required ``iss`` when set.
        audience: Accepted ``aud`` value(s) when set (``aud`` then becomes required).
        leeway: Seconds of clock skew tolerated for ``exp``, ``nbf`` and ``iat``.
        require: Claims that must be present (``exp`` by default).
        subject_claim: Claim holding the principal id (``sub``; some apps use ``user_id``).
        scopes_claim: Claim holding scopes; None tries ``scope``, ``scopes``, ``scp``.
        roles_claim: Claim holding roles (``roles``), None for none.
        realm: ``realm`` of the challenge.
        max_token_bytes: Longer tokens are refused before decoding.
    """

    scheme = "bearer"
    authorization_scheme = "bearer"
    blocking = False

    def __init__(
        self,
        key: str | bytes,
        *,
        algorithms: Sequence[str] = ("HS256",),
        issuer: str | None = None,
        audience: str | Iterable[str] | None = None,
        leeway: float = 0,
        require: Sequence[str] = ("exp",),
        subject_claim: str = "sub",
        scopes_claim: str | None = None,
        roles_claim: str | None = "roles",
        realm: str = "api",
        max_token_bytes: int = 8192,
        setting: str = "SECMW_JWT",
    ) -> None:
        self.algorithms = check_algorithms(algorithms, setting=f"{setting}__ALGORITHMS")
        self._key = self._load_key(key, setting)
        self.issuer = issuer
        self.audience = audience if isinstance(audience, str | None) else list(audience)
        self.leeway = leeway
        self.subject_claim = subject_claim
        self.scopes_claim = scopes_claim
        self.roles_claim = roles_claim
        self.realm = realm
        self.max_token_bytes = max_token_bytes
        self._required = list(dict.fromkeys([*require, subject_claim]))
        self._decoder = pyjwt.PyJWT(options={"require": self._required})

    def _load_key(self, key: str | bytes, setting: str) -> Any:
        if self.algorithms[0] in HMAC_ALGORITHMS:
            raw = key.encode() if isinstance(key, str) else key
            if b"-----BEGIN" in raw:
                raise ConfigurationError(
                    f"{setting}__SECRET: a PEM key cannot be an HMAC secret (key confusion)"
                )
            needed = max(HMAC_ALGORITHMS[a] for a in self.algorithms)
            if len(raw) < needed:
                raise ConfigurationError(
                    f"{setting}__SECRET: HMAC secret must be at least {needed} bytes for"
                    f" {', '.join(self.algorithms)} (got {len(raw)})"
                )
            return raw
        algorithm = pyjwt.get_algorithm_by_name(self.algorithms[0])
        try:
            loaded = algorithm.prepare_key(key)
            for name in self.algorithms[1:]:
                pyjwt.get_algorithm_by_name(name).prepare_key(key)
        except (pyjwt.InvalidKeyError, ValueError, TypeError) as exc:
            raise ConfigurationError(
                f"{setting}__PUBLIC_KEY: not a usable public key for {', '.join(self.algorithms)}"
                f" ({type(exc).__name__})"
            ) from None
        return loaded

    def extract(self, request: RequestView, authorization: str | None) -> Credential | Deny | None:
        """The bearer token from the ``Authorization`` parameter the chain handed over."""
        if authorization is None:
            return None
        if not authorization:
            return self._deny(400, "bearer token missing", "invalid_request")
        if " " in authorization or "\t" in authorization:
            return self._deny(400, "bearer credentials must be a single token", "invalid_request")
        if len(authorization) > self.max_token_bytes:
            return self._deny(401, "token too large", "invalid_token")
        return Credential(self.scheme, authorization)

    def verify(self, credential: Credential) -> Principal | Deny:
        """Check signature and claims; build the principal from the payload."""
        try:
            claims = self._decoder.decode(
                credential.secret,
                self._key,
                algorithms=list(self.algorithms),
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
            )
        except pyjwt.PyJWTError as exc:
            return self._deny(401, _describe(exc), "invalid_token")
        return self.principal_from_claims(claims)

    def principal_from_claims(self, claims: Mapping[str, Any]) -> Principal | Deny:
        """The principal for verified claims (the subject must be a non-empty string or int)."""
        subject = claims.get(self.subject_claim)
        if isinstance(subject, bool) or not isinstance(subject, str | int) or subject == "":
            return self._deny(401, "token subject invalid", "invalid_token")
        name = claims.get("name")
        return Principal(
            str(subject),
            self.scheme,
            scopes_from_claims(claims, self.scopes_claim),
            _roles(claims, self.roles_claim),
            claims,
            name if isinstance(name, str) else None,
        )

    def challenge(self, error: str | None = None, description: str | None = None) -> str:
        """``Bearer realm="..."`` with RFC 6750 ``error`` parameters when given."""
        text = f"Bearer realm={quote_param(self.realm)}"
        if error:
            text += f", error={quote_param(error)}"
        if description:
            text += f", error_description={quote_param(description)}"
        return text

    def _deny(self, status: int, detail: str, code: str) -> Deny:
        return Deny(status, detail, code, (("www-authenticate", self.challenge(code, detail)),))


def _describe(exc: Exception) -> str:
    for kind, text in _ERRORS:
        if isinstance(exc, kind):
            return text
    return "token invalid"


__all__ = ["JWTAuthenticator", "check_algorithms", "scopes_from_claims"]
