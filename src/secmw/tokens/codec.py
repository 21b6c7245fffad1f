"""Signing and reading secmw's own tokens with the configured JWT key and claim names (no I/O)."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt as pyjwt

from secmw.auth.claims import token_type
from secmw.tokens.keys import signing_keys
from secmw.tokens.model import (
    ACCESS,
    FAMILY_CLAIM,
    GRANT_CLAIM,
    REFRESH,
    TOKEN_USE_CLAIM,
    Account,
)
from secmw.tokens.oauth import OAuthError, format_scope, grant_scopes, invalid_grant, parse_scope

if TYPE_CHECKING:
    from secmw.config.settings import SecuritySettings

ACCESS_TYP = "at+jwt"
"""The ``typ`` header of access tokens (RFC 9068 §2.1)."""


@dataclass(frozen=True, slots=True)
class RefreshGrant:
    """What a valid refresh token grants, with the scopes a refresh request asked for."""

    account: Account
    scopes: frozenset[str]
    jti: str
    family: str


class TokenCodec:
    """Encodes access and refresh tokens and decodes the ones it signed.

    Args:
        settings: ``SecuritySettings``: ``jwt`` gives key, algorithm, issuer, audience and claim
            names; ``tokens`` the private key for public-key algorithms.
        clock: UNIX time for ``iat``/``exp`` and for expiry checks.
    """

    def __init__(self, settings: SecuritySettings, clock: Callable[[], float]) -> None:
        jwt = settings.jwt
        self.keys = signing_keys(settings)
        self.algorithm = self.keys.algorithm
        self.issuer = jwt.issuer
        audience = list(jwt.audience or ())
        self.audience: str | list[str] | None = (
            (audience[0] if len(audience) == 1 else audience) if audience else None
        )
        self.leeway = jwt.leeway
        self.subject_claim = jwt.subject_claim
        self.scopes_claim = jwt.scopes_claim or "scope"
        self.roles_claim = jwt.roles_claim
        self.max_token_bytes = jwt.max_token_bytes
        self.clock = clock

    def access_token(
        self, account: Account, scopes: frozenset[str], ttl: int, family: str | None = None
    ) -> str:
        """A signed access token (RFC 9068 ``typ: at+jwt``), of ``family`` when given."""
        claims = self._base_claims(account, ACCESS, ttl)
        if family is not None:
            claims[FAMILY_CLAIM] = family
        else:
            claims.pop(FAMILY_CLAIM, None)  # never a family copied from the account's claims
        if scopes:
            # OAuth2 ``scope`` is one space-delimited string (RFC 8693 §4.2); other claims a list.
            claims[self.scopes_claim] = (
                format_scope(scopes) if self.scopes_claim == "scope" else sorted(scopes)
            )
        if self.roles_claim and account.roles:
            claims[self.roles_claim] = sorted(account.roles)
        return self._encode(claims, {"typ": ACCESS_TYP})

    def refresh_token(
        self, account: Account, scopes: frozenset[str], family: str, ttl: int
    ) -> tuple[str, str]:
        """``(jti, token)`` of a refresh token of ``family``; its grant sits under ``grant``."""
        claims = self._base_claims(account, REFRESH, ttl)
        for name in (self.scopes_claim, "scope", "scopes", "scp", self.roles_claim):
            if name:
                claims.pop(name, None)  # nothing an authenticator could read as a grant
        claims[FAMILY_CLAIM] = family
        claims[GRANT_CLAIM] = {
            "scope": format_scope(scopes),
            "roles": sorted(account.roles),
            "claims": dict(account.claims),
        }
        return claims["jti"], self._encode(claims, {})

    def decode(self, token: str) -> dict[str, Any] | None:
        """Verified claims of a token signed here that has not expired, else None."""
        if not isinstance(token, str) or len(token) > self.max_token_bytes:
            return None
        try:
            key = self.keys.verification_key(pyjwt.get_unverified_header(token).get("kid"))
            if key is None:
                return None
            decoded = pyjwt.decode_complete(
                token,
                key,
                algorithms=[self.algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=self.leeway,
                # exp is checked against the injectable clock below
                options={"verify_exp": False, "require": ["exp", "jti", self.subject_claim]},
            )
        except pyjwt.PyJWTError:
            return None
        claims: dict[str, Any] = decoded["payload"]
        # RFC 9068 §4: an access token says so in its header, and only an access token does.
        is_access = token_type(decoded["header"].get("typ")) == ACCESS_TYP
        if is_access != (claims.get(TOKEN_USE_CLAIM) == ACCESS):
            return None
        exp = claims.get("exp")
        if not isinstance(exp, int | float) or exp + self.leeway <= self.clock():
            return None
        if not isinstance(claims.get("jti"), str):
            return None
        if claims.get(TOKEN_USE_CLAIM) == REFRESH and not isinstance(claims.get(FAMILY_CLAIM), str):
            return None
        return claims

    def read_refresh(self, token: str, scope: str | None) -> RefreshGrant | OAuthError:
        """The grant of a refresh token, narrowed to ``scope`` (never widened, RFC 6749 §6)."""
        claims = self.decode(token)
        grant = claims.get(GRANT_CLAIM) if claims else None
        if claims is None or claims.get(TOKEN_USE_CLAIM) != REFRESH or not isinstance(grant, dict):
            return invalid_grant("refresh token invalid or expired")
        original = frozenset(str(grant.get("scope", "")).split())
        extra = grant.get("claims")
        account = Account.create(
            str(claims[self.subject_claim]),
            scopes=original,
            roles=[r for r in grant.get("roles", ()) if isinstance(r, str)],
            claims=extra if isinstance(extra, dict) else None,
        )
        requested = parse_scope(scope)
        if isinstance(requested, OAuthError):
            return requested
        scopes = grant_scopes(requested, original)
        if isinstance(scopes, OAuthError):
            return scopes
        return RefreshGrant(account, scopes, claims["jti"], claims[FAMILY_CLAIM])

    def _base_claims(self, account: Account, use: str, ttl: int) -> dict[str, Any]:
        now = int(self.clock())
        claims = dict(account.claims)  # extra claims first: the registered ones below win
        claims.update(
            {
                self.subject_claim: account.subject,
                "iat": now,
                "exp": now + ttl,
                "jti": secrets.token_urlsafe(16),
                TOKEN_USE_CLAIM: use,
            }
        )
        if self.issuer:
            claims["iss"] = self.issuer
        if self.audience:
            claims["aud"] = self.audience
        return claims

    def _encode(self, claims: dict[str, Any], headers: dict[str, Any]) -> str:
        return pyjwt.encode(
            claims,
            self.keys.signing,
            algorithm=self.algorithm,
            headers={**headers, "kid": self.keys.kid},
        )
