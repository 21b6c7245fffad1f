"""What tokens are issued for and what an issue returns; the claim names secmw writes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from secmw.stores.revocation import FAMILY_CLAIM as FAMILY_CLAIM  # where it was defined before
from secmw.tokens.oauth import NO_STORE, format_scope

TOKEN_USE_CLAIM = "token_use"
"""Claim telling access tokens (``"access"``) from refresh tokens (``"refresh"``)."""
ACCESS = "access"
REFRESH = "refresh"
# FAMILY_CLAIM ("fam", from secmw.stores.revocation): the login a token belongs to, in its refresh
# tokens and their access tokens alike; revoking the family refuses them all.
GRANT_CLAIM = "grant"
"""Refresh tokens: scopes, roles and extra claims, kept where no authenticator reads a grant."""


@dataclass(frozen=True, slots=True)
class Account:
    """Who tokens are issued for: what ``authenticate`` returns for valid credentials.

    ``claims`` are extra claims copied into every access token (``name``...); the registered and
    secmw claims always win over them.
    """

    subject: str
    scopes: frozenset[str] = frozenset()
    roles: frozenset[str] = frozenset()
    claims: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        subject: str,
        *,
        scopes: Iterable[str] = (),
        roles: Iterable[str] = (),
        claims: Mapping[str, Any] | None = None,
    ) -> Account:
        """Build an account from any iterables."""
        return cls(subject, frozenset(scopes), frozenset(roles), dict(claims or {}))


@dataclass(frozen=True, slots=True)
class IssuedTokens:
    """A successful token response (RFC 6749 §5.1). Tokens are never in ``repr``."""

    access_token: str = field(repr=False)
    expires_in: int
    scopes: frozenset[str]
    refresh_token: str | None = field(default=None, repr=False)

    def body(self) -> dict[str, Any]:
        """``access_token``, ``token_type``, ``expires_in``, ``scope`` and ``refresh_token``."""
        doc: dict[str, Any] = {
            "access_token": self.access_token,
            "token_type": "bearer",
            "expires_in": self.expires_in,
            "scope": format_scope(self.scopes),
        }
        if self.refresh_token is not None:
            doc["refresh_token"] = self.refresh_token
        return doc

    @property
    def headers(self) -> tuple[tuple[str, str], ...]:
        """``Cache-Control: no-store`` and ``Pragma: no-cache`` (RFC 6749 §5.1)."""
        return NO_STORE
