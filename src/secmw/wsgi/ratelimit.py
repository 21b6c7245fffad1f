"""``RateLimitMiddleware`` for WSGI apps."""

from __future__ import annotations

from secmw.middleware import RateLimitLayer
from secmw.wsgi.driver import Driver


class RateLimitMiddleware(Driver, RateLimitLayer):
    """Rate limits every request before the app; PEP 3333 compliant.

    Same arguments and behaviour as ``secmw.asgi.RateLimitMiddleware``: 429 problem+json with
    ``Retry-After`` over a limit, rate-limit fields added at ``start_response`` on every response
    under a limit. Use as ``app.wsgi_app = RateLimitMiddleware(app.wsgi_app)`` in Flask, after
    the authentication layer so limits can key on the principal.
    """

    def close(self) -> None:
        """Close the Redis client, if any."""
        self.limiter.close()
