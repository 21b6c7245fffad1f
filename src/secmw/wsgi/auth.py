"""``AuthenticationMiddleware`` for WSGI apps."""

from __future__ import annotations

from secmw.middleware import AuthenticationLayer
from secmw.wsgi.driver import Driver


class AuthenticationMiddleware(Driver, AuthenticationLayer):
    """Authenticates every request before the app; PEP 3333 compliant.

    Use as ``app.wsgi_app = AuthenticationMiddleware(app.wsgi_app)`` in Flask. The principal is
    published as ``environ["secmw.principal"]`` and the ``secmw.current_principal()`` context
    variable (set while the app is called). Same arguments as ``secmw.asgi``'s twin.
    """

    def close(self) -> None:
        """Close the connection pools to the identity providers (JWKS, introspection)."""
        for pool in self._pools:
            pool.close()
