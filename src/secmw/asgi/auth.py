"""``AuthenticationMiddleware`` for ASGI apps."""

from __future__ import annotations

from typing import Any

from secmw.asgi._util import ASGIApp
from secmw.asgi.driver import Driver
from secmw.auth import AuthChain
from secmw.auth.base import AsyncFailureThrottle
from secmw.auth.build import build_chain, provider_pools
from secmw.auth.gate import AuthGate
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore


class AuthenticationMiddleware(Driver):
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
        self.chain = chain or build_chain(
            resolve_settings(settings, overrides), revocation=revocation
        )
        self.throttle = throttle
        self._pools = provider_pools(self.chain)
        gate = AuthGate(self.chain, throttle, raw=True)
        super().__init__(app, [gate], closes=bool(self._pools))

    async def aclose(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection). Done by
        itself when the app's lifespan shutdown completes."""
        for pool in self._pools:
            await pool.aclose()
