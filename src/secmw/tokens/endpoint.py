"""The token endpoint (RFC 6749 §4.4 client credentials, §4.3 password, §6 refresh): what
``TokenIssuer.exchange`` and ``aexchange`` run.

One decision for both: :func:`_decide` is a generator that yields each step needing I/O or CPU
(:class:`_Need`: charge the throttle, check a client secret, check a password, issue, refresh)
and receives its answer; :func:`exchange` answers with calls, :func:`aexchange` with awaits.

Client authentication (``client_secret_basic`` or ``client_secret_post``, see
:mod:`secmw.tokens.clients`) and the password grant are charged to the failed-attempt throttle
before the secret is checked and refunded when it was right (``secmw.auth.throttle``): concurrent
guesses never outnumber the budget. Every answer, a throttled one included, is an RFC 6749 §5.2
error body.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from secmw import audit
from secmw.auth.base import AsyncFailureThrottle, Credential, FailureThrottle
from secmw.core.context import current_request
from secmw.core.deny import Deny
from secmw.core.request import RequestView
from secmw.errors import MiddlewareNotInstalled
from secmw.tokens.clients import BASIC, Client, PresentedClient, check_secret, presented_client
from secmw.tokens.model import Account, IssuedTokens
from secmw.tokens.oauth import (
    ClientCredentialsRequest,
    OAuthError,
    PasswordRequest,
    RefreshRequest,
    grant_scopes,
    invalid_client,
    invalid_grant,
    parse_token_request,
    refused,
    temporarily_unavailable,
    unauthorized_client,
    unsupported_grant_type,
)
from secmw.tokens.onetime import STORE_ERRORS

if TYPE_CHECKING:
    from secmw.tokens.issuer import TokenIssuer


@dataclass(frozen=True, slots=True)
class _Need:
    """A step the decision waits on: ``kind`` names it, ``args`` are its inputs."""

    kind: str
    args: tuple[Any, ...]


Decision = Generator[_Need, Any, IssuedTokens | OAuthError]


def exchange(
    issuer: TokenIssuer,
    form: Mapping[str, Any],
    authenticate: Callable[[str, str], Account | None],
    throttle: FailureThrottle | None = None,
    request: RequestView | None = None,
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.exchange`."""

    def issue(account: Account, scopes: frozenset[str], refresh: bool) -> Any:
        try:
            return issuer.issue(account, scopes, refresh=refresh)
        except STORE_ERRORS:
            return temporarily_unavailable()

    steps: dict[str, Callable[..., Any]] = {
        "charge": lambda view, credential: (
            throttle.charge(view or current_request(), credential) if throttle else None
        ),
        "refund": lambda attempt: attempt.refund(),
        "client": check_secret,
        "password": authenticate,
        "issue": issue,
        "refresh": issuer.refresh,
    }
    decision = _decide(issuer, form, request)
    answer: Any = None
    try:
        while True:
            need = decision.send(answer)
            answer = steps[need.kind](*need.args)
    except StopIteration as done:
        result: IssuedTokens | OAuthError = done.value
        return result


async def aexchange(
    issuer: TokenIssuer,
    form: Mapping[str, Any],
    authenticate: Callable[[str, str], Any],
    throttle: AsyncFailureThrottle | None = None,
    request: RequestView | None = None,
) -> IssuedTokens | OAuthError:
    """See :meth:`TokenIssuer.aexchange`."""

    async def charge(view: RequestView, credential: Credential) -> Any:
        return await throttle.charge(view or current_request(), credential) if throttle else None

    async def refund(attempt: Any) -> None:
        await attempt.refund()

    async def client(found: Client | None, secret: str) -> bool:
        # argon2 / bcrypt: off the event loop
        return await asyncio.to_thread(check_secret, found, secret)

    async def password(username: str, secret: str) -> Any:
        found = authenticate(username, secret)
        return await found if inspect.isawaitable(found) else found

    async def issue(account: Account, scopes: frozenset[str], refresh: bool) -> Any:
        try:
            return await issuer.aissue(account, scopes, refresh=refresh)
        except STORE_ERRORS:
            return temporarily_unavailable()

    steps: dict[str, Callable[..., Any]] = {
        "charge": charge,
        "refund": refund,
        "client": client,
        "password": password,
        "issue": issue,
        "refresh": issuer.arefresh,
    }
    decision = _decide(issuer, form, request)
    answer: Any = None
    try:
        while True:
            need = decision.send(answer)
            answer = await steps[need.kind](*need.args)
    except StopIteration as done:
        result: IssuedTokens | OAuthError = done.value
        return result


def _decide(issuer: TokenIssuer, form: Mapping[str, Any], request: RequestView | None) -> Decision:
    """The whole token request, from the form to the tokens or the error to send."""
    parsed = parse_token_request(form, issuer.known_scopes)
    if isinstance(parsed, OAuthError):
        return parsed
    if isinstance(parsed, ClientCredentialsRequest) and not issuer.clients:
        return unsupported_grant_type("no clients are registered (tokens.clients)")
    view = request if request is not None else _current()
    presented = presented_client(view, form)
    if isinstance(presented, OAuthError):
        return presented
    client: Client | None = None
    if presented is not None and (presented.secret is not None or presented.id in issuer.clients):
        found = yield from _authenticate_client(issuer, view, presented)
        if isinstance(found, OAuthError):
            return found
        client = found
    grant = _grant_type(parsed)
    if client is not None and grant not in client.grants:
        return unauthorized_client(f"client may not use the {grant} grant")
    if isinstance(parsed, ClientCredentialsRequest):
        if client is None:
            return invalid_client("client authentication required")
        scopes = grant_scopes(parsed.scopes, client.scopes, issuer.known_scopes)
        if isinstance(scopes, OAuthError):
            return scopes
        account = Account.create(client.id, scopes=scopes, claims={"client_id": client.id})
        issued: IssuedTokens | OAuthError = yield _Need("issue", (account, scopes, False))
        return issued
    if isinstance(parsed, RefreshRequest):
        bound = _bound_client(issuer, parsed)
        if bound is not None and (client is None or client.id != bound):
            # RFC 6749 §6 / §10.4: a refresh token works only for the client it was issued to.
            return invalid_grant("refresh token was issued to another client")
        refreshed: IssuedTokens | OAuthError = yield _Need(
            "refresh", (parsed.refresh_token, parsed.scope)
        )
        return refreshed
    if not issuer.password_grant:
        return unsupported_grant_type("the password grant is not enabled")
    return (yield from _password(issuer, view, parsed, client))


def _authenticate_client(
    issuer: TokenIssuer, view: RequestView | None, presented: PresentedClient
) -> Generator[_Need, Any, Client | OAuthError]:
    """The registered client whose secret was presented, or ``invalid_client``."""
    attempt = yield _Need("charge", (view, Credential("client", "", presented.id)))
    if isinstance(attempt, Deny):
        return _refused(attempt)
    client = issuer.clients.get(presented.id)
    matched = presented.secret is not None and (yield _Need("client", (client, presented.secret)))
    if not matched or client is None:
        audit.emit("auth.failed", "client authentication failed at the token endpoint")
        # RFC 6749 §5.2: 401 with a challenge when the client used the Authorization field.
        challenge = f'Basic realm="{issuer.realm}"' if presented.method == BASIC else None
        return invalid_client("client authentication failed", challenge)
    if attempt is not None:
        yield _Need("refund", (attempt,))  # only a wrong secret stays counted
    return client


def _password(
    issuer: TokenIssuer, view: RequestView | None, request: PasswordRequest, client: Client | None
) -> Decision:
    """A password grant: charged, checked, refunded when right, issued."""
    attempt = yield _Need("charge", (view, Credential("password", "", request.username)))
    if isinstance(attempt, Deny):
        return _refused(attempt)
    found = yield _Need("password", (request.username, request.password))
    if attempt is not None and isinstance(found, Account):
        yield _Need("refund", (attempt,))  # only a wrong password stays counted
    if not isinstance(found, Account):
        audit.emit("auth.failed", "invalid credentials at the token endpoint")
        return invalid_grant("invalid username or password")
    scopes = grant_scopes(request.scopes, found.scopes, issuer.known_scopes)
    if isinstance(scopes, OAuthError):
        return scopes
    if client is not None:  # RFC 9068 §2.2 client_id; it binds the refresh token too
        found = replace(found, claims={**found.claims, "client_id": client.id})
    issued: IssuedTokens | OAuthError = yield _Need("issue", (found, scopes, True))
    return issued


def _bound_client(issuer: TokenIssuer, request: RefreshRequest) -> str | None:
    """The client a refresh token was issued to, if any (an invalid token: the refresh says)."""
    grant = issuer.codec.read_refresh(request.refresh_token, request.scope)
    if isinstance(grant, OAuthError):
        return None
    bound = grant.account.claims.get("client_id")
    return bound if isinstance(bound, str) else None


def _grant_type(parsed: PasswordRequest | RefreshRequest | ClientCredentialsRequest) -> str:
    if isinstance(parsed, ClientCredentialsRequest):
        return "client_credentials"
    return "refresh_token" if isinstance(parsed, RefreshRequest) else "password"


def _current() -> RequestView | None:
    try:
        return current_request()
    except MiddlewareNotInstalled:
        return None  # no Authorization to read; a throttle then asks again and says why


def _refused(deny: Deny) -> OAuthError:
    """The throttle's 429 (or 503) as the OAuth error the endpoint answers."""
    retry_after = next((value for name, value in deny.headers if name == "retry-after"), None)
    return refused(deny.status, retry_after)
