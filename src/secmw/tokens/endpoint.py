"""The token endpoint (RFC 6749 §4.3 password grant, §6 refresh): what ``TokenIssuer.exchange``
runs.

Given a failed-attempt throttle, a password grant is charged to it before the password is
checked and refunded when the password was right (``secmw.auth.throttle``): concurrent guesses never
outnumber the budget. Every answer, a throttled one included, is an RFC 6749 §5.2 error body.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from secmw import audit
from secmw.auth.base import (
    AsyncChargedAttempt,
    AsyncFailureThrottle,
    ChargedAttempt,
    Credential,
    FailureThrottle,
)
from secmw.core.context import current_request
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.tokens.model import Account, IssuedTokens
from secmw.tokens.oauth import (
    OAuthError,
    PasswordRequest,
    RefreshRequest,
    grant_scopes,
    invalid_grant,
    parse_token_request,
    refused,
    temporarily_unavailable,
)
from secmw.tokens.onetime import STORE_ERRORS

if TYPE_CHECKING:
    from secmw.tokens.issuer import TokenIssuer


def exchange(
    issuer: TokenIssuer,
    form: Mapping[str, Any],
    authenticate: Callable[[str, str], Account | None],
    throttle: FailureThrottle | None = None,
    request: RequestView | None = None,
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.exchange`."""
    parsed = parse_token_request(form, issuer.known_scopes)
    if isinstance(parsed, OAuthError):
        return parsed
    if isinstance(parsed, RefreshRequest):
        return issuer.refresh(parsed.refresh_token, parsed.scope)
    attempt: ChargedAttempt | None = None
    if throttle is not None:
        charged = throttle.charge(request or current_request(), _credential(parsed))
        if isinstance(charged, Deny):
            return _refused(charged)
        attempt = charged
    found = authenticate(parsed.username, parsed.password)
    if attempt is not None and isinstance(found, Account):
        attempt.refund()  # only a wrong password stays counted
    granted = _password_grant(issuer, parsed, found)
    if isinstance(granted, OAuthError):
        return granted
    try:
        return issuer.issue(*granted)
    except STORE_ERRORS:
        return temporarily_unavailable()


async def aexchange(
    issuer: TokenIssuer,
    form: Mapping[str, Any],
    authenticate: Callable[[str, str], Any],
    throttle: AsyncFailureThrottle | None = None,
    request: RequestView | None = None,
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.aexchange`."""
    parsed = parse_token_request(form, issuer.known_scopes)
    if isinstance(parsed, OAuthError):
        return parsed
    if isinstance(parsed, RefreshRequest):
        return await issuer.arefresh(parsed.refresh_token, parsed.scope)
    attempt: AsyncChargedAttempt | None = None
    if throttle is not None:
        charged = await throttle.charge(request or current_request(), _credential(parsed))
        if isinstance(charged, Deny):
            return _refused(charged)
        attempt = charged
    found = authenticate(parsed.username, parsed.password)
    if inspect.isawaitable(found):
        found = await found
    if attempt is not None and isinstance(found, Account):
        await attempt.refund()  # only a wrong password stays counted
    granted = _password_grant(issuer, parsed, found)
    if isinstance(granted, OAuthError):
        return granted
    try:
        return await issuer.aissue(*granted)
    except STORE_ERRORS:
        return temporarily_unavailable()


def _credential(request: PasswordRequest) -> Credential:
    """What the throttle keys on: the user name (the password is not passed on)."""
    return Credential("password", "", request.username)


def _refused(deny: Deny) -> OAuthError:
    """The throttle's 429 (or 503) as the OAuth error the endpoint answers."""
    retry_after = next((value for name, value in deny.headers if name == "retry-after"), None)
    return refused(deny.status, retry_after)


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
