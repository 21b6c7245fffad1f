"""``AuthenticationMiddleware`` for WSGI apps."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from secmw import audit
from secmw.auth import AuthChain, Found
from secmw.auth.base import ChargedAttempt, FailureThrottle
from secmw.auth.build import build_chain, provider_pools
from secmw.auth.session import after_failure
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.core.context import principal_var, request_var
from secmw.core.deny import Deny
from secmw.core.principal import Principal
from secmw.core.request import RequestView
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore
from secmw.wsgi._util import (
    PRINCIPAL_KEY,
    Environ,
    ExcInfo,
    Headers,
    StartResponse,
    WSGIApp,
    refuse_malformed,
    respond_deny,
    with_challenges,
)


class AuthenticationMiddleware:
    """Authenticates every request before the app; PEP 3333 compliant.

    Use as ``app.wsgi_app = AuthenticationMiddleware(app.wsgi_app)`` in Flask. The principal is
    published as ``environ["secmw.principal"]`` and the ``secmw.current_principal()`` context
    variable (set while the app is called). Same arguments as ``secmw.asgi``'s twin.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        chain: AuthChain | None = None,
        throttle: FailureThrottle | None = None,
        revocation: RevocationStore | AsyncRevocationStore | None = None,
        **overrides: Any,
    ) -> None:
        self.app = app
        self.chain = chain or build_chain(
            resolve_settings(settings, overrides), revocation=revocation
        )
        self.throttle = throttle
        self._challenges = tuple(self.chain.challenge_headers())

    def close(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection)."""
        for pool in provider_pools(self.chain):
            pool.close()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        request = RequestView.from_environ(environ)
        malformed = refuse_malformed(request, start_response)
        if malformed is not None:
            return malformed
        result = self.admit(environ, request)
        if isinstance(result, Deny):
            return respond_deny(start_response, result, request.method)
        token = principal_var.set(result)
        request_token = request_var.set(request)
        try:
            if self._challenges:
                return self.app(environ, self._add_challenges(start_response))
            return self.app(environ, start_response)
        finally:
            request_var.reset(request_token)
            principal_var.reset(token)

    def admit(self, environ: Environ, request: RequestView) -> Principal | Deny:
        """Authenticate: the principal, published in ``request.state`` and the environ, or the
        denial, announced as ``auth.denied``."""
        result = self.authenticate(request)
        if isinstance(result, Deny):
            audit.emit("auth.denied", result.detail, request=request, status=result.status)
            return result
        request.state["principal"] = result  # later layers (rate limits, headers) read it here
        environ[PRINCIPAL_KEY] = result
        return result

    def authenticate(self, request: RequestView) -> Principal | Deny:
        """The request's principal or the reason to refuse it."""
        found = self.chain.find(request)
        if not isinstance(found, Found):
            return found
        throttle, credential = self.throttle, found.credential
        attempt: ChargedAttempt | None = None
        if throttle is not None and getattr(found.authenticator, "throttle_first", True):
            # Charged before the check and refunded unless it fails: guesses in flight never
            # outnumber the budget.
            charged = throttle.charge(request, credential)
            if isinstance(charged, Deny):
                return charged
            attempt = charged
        result = found.authenticator.verify(credential)
        failed = isinstance(result, Deny) and result.status == 401
        if attempt is not None:
            if not failed:
                attempt.refund()
        elif throttle is not None and failed and isinstance(result, Deny):
            # Counted after the fact; once over the budget, 429 as throttle-first schemes do.
            refused = throttle.charge(request, credential)
            if isinstance(refused, Deny):
                return after_failure(refused, result)
        return result

    def _add_challenges(self, start_response: StartResponse) -> StartResponse:
        challenges = self._challenges

        def start(
            status: str, headers: Headers, exc_info: ExcInfo | None = None
        ) -> Callable[[bytes], object]:
            return start_response(status, with_challenges(headers, status, challenges), exc_info)

        return start
