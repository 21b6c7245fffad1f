"""Token helpers for apps that issue their own tokens: login, OAuth2 password grant, refresh,
revocation, and single-use tokens for password reset and email verification."""

from __future__ import annotations

from secmw.tokens.issuer import TokenIssuer, family_key, mint_access_token
from secmw.tokens.model import ACCESS, REFRESH, TOKEN_USE_CLAIM, Account, IssuedTokens
from secmw.tokens.oauth import (
    ClientCredentialsRequest,
    OAuthError,
    invalid_client,
    invalid_grant,
    invalid_request,
    invalid_scope,
    parse_token_request,
    unauthorized_client,
    unsupported_grant_type,
)
from secmw.tokens.onetime import (
    REQUEST_ACCEPTED,
    MemorySingleUseStore,
    RedisSingleUseStore,
    SingleUseStore,
    SingleUseTokens,
    TokenStoreError,
)
from secmw.tokens.settings import TokenSettings

__all__ = [
    "ACCESS",
    "REFRESH",
    "REQUEST_ACCEPTED",
    "TOKEN_USE_CLAIM",
    "Account",
    "ClientCredentialsRequest",
    "IssuedTokens",
    "MemorySingleUseStore",
    "OAuthError",
    "RedisSingleUseStore",
    "SingleUseStore",
    "SingleUseTokens",
    "TokenIssuer",
    "TokenSettings",
    "TokenStoreError",
    "family_key",
    "invalid_client",
    "invalid_grant",
    "invalid_request",
    "invalid_scope",
    "mint_access_token",
    "parse_token_request",
    "unauthorized_client",
    "unsupported_grant_type",
]
