"""``AuthenticationMiddleware`` for ASGI apps."""

from __future__ import annotations

from contextvars import Token
from typing import Any

from secmw import audit
from secmw.asgi._util import (
    CHALLENGES_KEY,
    FIELDS_KEY,
    ASGIApp,
    Message,
    Receive,
    Scope,
    Send,
    closing_on_shutdown,
    malformed,
    publish_principal,
    run_blocking,
    send_deny,
    with_challenges,
)
from secmw.auth import AuthChain, Authenticator, Found
from secmw.auth.base import AsyncChargedAttempt, AsyncFailureThrottle
from secmw.auth.build import build_chain, provider_pools
from secmw.auth.session import after_failure
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.context import principal_var, request_var
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore


class AuthenticationMiddleware:
    """Authenticates ``http`` and ``websocket`` requests before the router; pure ASGI.

    On success the principal is published as ``scope["state"]["principal"]``, ``scope["user"]``,
    ``scope["auth"]`` (Starlette's ``@requires`` works) and the ``secmw.current_principal()``
    context variable. A refused request is answered here (401/400 problem+json with
    ``WWW-Authenticate``); a websocket is refused before accept. ``lifespan`` passes through.
    When the app itself answers 401 without a challenge, the configured challenges are added.

    Args:
        app: The ASGI app to protect.
        settings: Settings to build from; default: the environment.
        chain: A ready authenticator chain (overrides ``settings``).
        throttle: Failed-authentication throttle, charged before ``verify`` (refunded unless
            it fails), or after a failure for ``throttle_first = False`` schemes.
        revocation: The JWT ``jti`` denylist (share it with ``secmw.tokens.TokenIssuer``).
        **overrides: Settings sections, for example ``jwt={"secret": "..."}``.
    """

    def __init__(
        self,
        app: ASGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        chain: AuthChain | None = None,
        throttle: AsyncFailureThrottle | None = None,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.chain = chain or build_chain(
            resolve_settings(settings, overrides), revocation=revocation
        )
        self.throttle = throttle
        self._pools = provider_pools(self.chain)
        self._modes = {id(a): _mode(a) for a in self.chain.authenticators}
        self._challenges = [
            (b"www-authenticate", c.encode("latin-1")) for c in self.chain.challenges
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            if scope["type"] == "lifespan" and self._pools:
                send = closing_on_shutdown(send, self.aclose)
            await self.app(scope, receive, send)
            return
        result = await self.resolve(scope)
        if isinstance(result, Deny):
            await send_deny(scope, send, result)
            return
        tokens = self.enter(scope, *result)
        try:
            await self.app(scope, receive, self.challenging(scope, send))
        finally:
            leave(tokens)

    async def aclose(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection). Done by
        itself when the app's lifespan shutdown completes."""
        for pool in self._pools:
            await pool.aclose()

    async def resolve(self, scope: Scope) -> tuple[RequestView, Principal] | Deny:
        """The request's principal, or the answer when it is refused (audited)."""
        request = RequestView.from_scope(scope)
        rejection = malformed(request)
        if rejection is not None:
            return rejection
        result = self.chain.find(request)
        if isinstance(result, Found):
            result = await self._verify(request, result)
        if isinstance(result, Deny):
            audit.emit("auth.denied", result.detail, request=request, status=result.status)
            return result
        return request, result

    def known(self, request: RequestView) -> Principal | None:
        """The principal of a token the verified-token cache answers for, without a coroutine;
        None when :meth:`resolve` must decide (and then gives what it would have given: this is
        the first thing ``AuthChain.find`` tries for such a request)."""
        if request.rejection is None and request.method != "OPTIONS":
            return self.chain.cached_principal(request)
        return None

    def enter(self, scope: Scope, request: RequestView, principal: Principal) -> Tokens:
        """Publish the principal to the app (undo the context variables with :func:`leave`).

        When the security headers layer runs outside (``FIELDS_KEY`` in the scope), it adds the
        challenges to an app's own 401; else the caller wraps ``send`` with :meth:`challenging`.
        """
        request.state["principal"] = principal  # later layers (rate limits, headers) read it here
        publish_principal(scope, principal)
        if FIELDS_KEY in scope:
            scope[CHALLENGES_KEY] = self._challenges
        return principal_var.set(principal), request_var.set(request)

    async def authenticate(self, request: RequestView) -> Principal | Deny:
        """The request's principal or the reason to refuse it (blocking checks run in a thread)."""
        found = self.chain.find(request)
        if not isinstance(found, Found):
            return found
        return await self._verify(request, found)

    async def _verify(self, request: RequestView, found: Found) -> Principal | Deny:
        authenticator, credential = found.authenticator, found.credential
        throttle = self.throttle
        throttle_first, averify, blocking = self._modes.get(id(authenticator)) or _mode(
            authenticator
        )
        attempt: AsyncChargedAttempt | None = None
        if throttle is not None and throttle_first:
            # Charged before the check and refunded unless it fails: guesses in flight never
            # outnumber the budget.
            charged = await throttle.charge(request, credential)
            if isinstance(charged, Deny):
                return charged
            attempt = charged
        if averify is not None:  # network I/O (JWKS, introspection, an async denylist)
            result: Principal | Deny = await averify(credential)
        elif blocking:
            result = await run_blocking(authenticator.verify, credential)
        else:
            result = authenticator.verify(credential)
        failed = isinstance(result, Deny) and result.status == 401
        if attempt is not None:
            if not failed:
                await attempt.refund()
        elif throttle is not None and failed and isinstance(result, Deny):
            # Counted after the fact; once over the budget, 429 as throttle-first schemes do.
            refused = await throttle.charge(request, credential)
            if isinstance(refused, Deny):
                return after_failure(refused, result)
        return result

    def challenging(self, scope: Scope, send: Send) -> Send:
        """The ``send`` that adds the challenges to an app's own 401 (``send`` itself when the
        headers layer outside does it, or for a websocket)."""
        if scope["type"] != "http" or not self._challenges or FIELDS_KEY in scope:
            return send
        challenges = self._challenges

        async def send_with_challenges(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] == 401:
                headers = list(message.get("headers", ()))
                added = with_challenges(headers, challenges)
                if added is not headers:
                    message = {**message, "headers": added}
            await send(message)

        return send_with_challenges


Tokens = tuple[Token[Principal], Token[RequestView]]


def leave(tokens: Tokens) -> None:
    """Undo :meth:`AuthenticationMiddleware.enter` once the app has answered."""
    principal_token, request_token = tokens
    request_var.reset(request_token)
    principal_var.reset(principal_token)


def _mode(authenticator: Authenticator) -> tuple[bool, Any, bool]:
    """How to run an authenticator: (throttle first, ``averify`` to await or None, blocking)."""
    averify = getattr(authenticator, "averify", None)
    if not getattr(authenticator, "needs_io", True):
        averify = None  # configured without network I/O: ``verify``, no coroutine
    return getattr(authenticator, "throttle_first", True), averify, authenticator.blocking
