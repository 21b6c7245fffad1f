"""What a JWT may use and what it grants: the algorithms allowed, and the scopes and roles in
its claims."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import jwt as pyjwt

from secmw.errors import ConfigurationError

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


def roles_from_claims(claims: Mapping[str, Any], claim: str | None) -> frozenset[str]:
    if not claim:
        return frozenset()
    value = claims.get(claim)
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list | tuple):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()


def token_type(typ: object) -> str | None:
    """A JOSE ``typ`` header in the form it is compared in: lower case, without the
    ``application/`` prefix RFC 7515 §4.1.9 lets a media type drop (``application/at+jwt`` is
    ``at+jwt``); None when it is not a string."""
    if not isinstance(typ, str):
        return None
    lowered = typ.strip().lower()
    rest = lowered.removeprefix("application/")
    return rest if "/" not in rest else lowered


JWT_ERRORS: tuple[tuple[type[Exception], str], ...] = (
    (pyjwt.ExpiredSignatureError, "token expired"),
    (pyjwt.ImmatureSignatureError, "token not yet valid"),
    (pyjwt.InvalidAudienceError, "token audience not accepted"),
    (pyjwt.InvalidIssuerError, "token issuer not accepted"),
    (pyjwt.MissingRequiredClaimError, "token lacks a required claim"),
    (pyjwt.exceptions.InvalidSubjectError, "token subject invalid"),
    (pyjwt.InvalidSignatureError, "signature invalid"),
    (pyjwt.InvalidAlgorithmError, "token algorithm not allowed"),
    (pyjwt.DecodeError, "malformed token"),
)


def describe_error(exc: Exception) -> str:
    """The refusal text for a PyJWT error (never the token, never the library's message)."""
    for kind, text in JWT_ERRORS:
        if isinstance(exc, kind):
            return text
    return "token invalid"
