"""The token endpoint (RFC 6749 §4.3 password grant, §6 refresh): what ``TokenIssuer.exchange``
runs."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from secmw import audit
from secmw.tokens.model import Account, IssuedTokens
from secmw.tokens.oauth import (
    OAuthError,
    PasswordRequest,
    RefreshRequest,
    grant_scopes,
    invalid_grant,
    parse_token_request,
    temporarily_unavailable,
)
from secmw.tokens.onetime import STORE_ERRORS

if TYPE_CHECKING:
    from secmw.tokens.issuer import TokenIssuer


def exchange(
    issuer: TokenIssuer,
    form: Mapping[str, Any],
    authenticate: Callable[[str, str], Account | None],
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.exchange`."""
    request = parse_token_request(form, issuer.known_scopes)
    if isinstance(request, OAuthError):
        return request
    if isinstance(request, RefreshRequest):
        return issuer.refresh(request.refresh_token, request.scope)
    granted = _password_grant(issuer, request, authenticate(request.username, request.password))
    if isinstance(granted, OAuthError):
        return granted
    try:
        return issuer.issue(*granted)
    except STORE_ERRORS:
        return temporarily_unavailable()


async def aexchange(
    issuer: TokenIssuer, form: Mapping[str, Any], authenticate: Callable[[str, str], Any]
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.aexchange`."""
    request = parse_token_request(form, issuer.known_scopes)
    if isinstance(request, OAuthError):
        return request
    if isinstance(request, RefreshRequest):
        return await issuer.arefresh(request.refresh_token, request.scope)
    found = authenticate(request.username, request.password)
    if inspect.isawaitable(found):
        found = await found
    granted = _password_grant(issuer, request, found)
    if isinstance(granted, OAuthError):
        return granted
    try:
        return await issuer.aissue(*granted)
    except STORE_ERRORS:
        return temporarily_unavailable()


def _password_grant(
    issuer: TokenIssuer, request: PasswordRequest, found: object
) -> tuple[Account, frozenset[str]] | OAuthError:
    """The account and scopes to issue for, or why not (the password was checked already)."""
    if not isinstance(found, Account):
        audit.emit("auth.failed", "invalid credentials at the token endpoint")
        return invalid_grant("invalid username or password")
    scopes = grant_scopes(request.scopes, found.scopes, issuer.known_scopes)
    if isinstance(scopes, OAuthError):
        return scopes
    return found, scopes
