"""``AuthenticationMiddleware`` for WSGI apps."""

from __future__ import annotations

from typing import Any

from secmw.auth import AuthChain
from secmw.auth.base import FailureThrottle
from secmw.auth.build import build_chain, provider_pools
from secmw.auth.gate import AuthGate
from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.stores.revocation import AsyncRevocationStore, RevocationStore
from secmw.wsgi._util import WSGIApp
from secmw.wsgi.driver import Driver


class AuthenticationMiddleware(Driver):
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
        self.chain = chain or build_chain(
            resolve_settings(settings, overrides), revocation=revocation
        )
        self.throttle = throttle
        self._pools = provider_pools(self.chain)
        gate = AuthGate(self.chain, throttle, raw=False)
        super().__init__(app, [gate])

    def close(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection)."""
        for pool in self._pools:
            pool.close()
