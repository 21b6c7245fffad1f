"""``RateLimitMiddleware`` for WSGI apps."""

from __future__ import annotations

from typing import Any

from secmw.config.settings import SecuritySettings, resolve_settings
from secmw.ratelimit.gate import rate_limit_gate
from secmw.ratelimit.policy import KeyFunc
from secmw.ratelimit.storage import Limiter
from secmw.wsgi._util import WSGIApp
from secmw.wsgi.driver import Driver


class RateLimitMiddleware(Driver):
    """Rate limits every request before the app; PEP 3333 compliant.

    Same arguments and behaviour as ``secmw.asgi.RateLimitMiddleware``: 429 problem+json with
    ``Retry-After`` over a limit, rate-limit fields added at ``start_response`` on every response
    under a limit. Use as ``app.wsgi_app = RateLimitMiddleware(app.wsgi_app)`` in Flask, after
    the authentication layer so limits can key on the principal.
    """

    def __init__(
        self,
        app: WSGIApp,
        /,
        *,
        settings: SecuritySettings | None = None,
        key_func: KeyFunc | None = None,
        **overrides: Any,
    ) -> None:
        resolved = resolve_settings(settings, overrides)
        self.settings = resolved.rate_limit
        gate = rate_limit_gate(
            self.settings, resolved.api_keys, key_func=key_func, limiter=Limiter, raw=False
        )
        self.policy, self.limiter = gate.policy, gate.limiter
        enabled = self.settings.enabled
        super().__init__(app, [gate] if enabled else [])

    def close(self) -> None:
        """Close the Redis client, if any."""
        self.limiter.close()
