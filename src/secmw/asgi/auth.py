"""``AuthenticationMiddleware`` for ASGI apps."""

from __future__ import annotations

from secmw.asgi.driver import Driver
from secmw.middleware import AuthenticationLayer


class AuthenticationMiddleware(Driver, AuthenticationLayer):
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

    async def aclose(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection). Done by
        itself when the app's lifespan shutdown completes."""
        for pool in self._pools:
            await pool.aclose()
